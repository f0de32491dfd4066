//! A wrapper store whose calls can be made to go wrong on the way, as over a network:
//! heartbeats that vanish (a stall: the fencing test of a lost lease) or fail (a
//! partition), and a claim's answer lost after the store applied it (a connection cut
//! between the call and its reply).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use taskyard_core::{
    JobFilter, JobId, JobState, Lease, LeaseToken, NewJob, Outcome, QueueConfig, QueueName, Store,
};

/// A store whose calls go wrong on the way while a flag is set; everything else goes
/// through.
#[derive(Default)]
pub(super) struct Faults {
    /// Heartbeats vanish: they answer "held" without reaching the store (a stall).
    pub(super) stalled: Arc<AtomicBool>,
    /// Heartbeats fail with an error, as when the store cannot be reached (a partition).
    pub(super) failing: Arc<AtomicBool>,
    /// The next claim that takes jobs reaches the store but its answer is lost.
    pub(super) lose_claim: Arc<AtomicBool>,
}

/// A store with [`Faults`] on the way to it.
pub(super) struct Faulty {
    pub(super) inner: Arc<dyn Store>,
    pub(super) faults: Faults,
}

fn lost() -> taskyard_core::Error {
    taskyard_core::Error::Store("connection cut before the answer came (injected)".into())
}

#[async_trait::async_trait]
impl Store for Faulty {
    async fn enqueue_report(
        &self,
        queue: &QueueName,
        jobs: Vec<NewJob>,
    ) -> taskyard_core::Result<Vec<taskyard_core::Enqueued>> {
        self.inner.enqueue_report(queue, jobs).await
    }
    async fn claim(
        &self,
        queue: &QueueName,
        max: usize,
        lease: Duration,
        token: &LeaseToken,
    ) -> taskyard_core::Result<taskyard_core::Claim> {
        let claim = self.inner.claim(queue, max, lease, token).await?;
        if !claim.jobs.is_empty() && self.faults.lose_claim.swap(false, Ordering::SeqCst) {
            return Err(lost());
        }
        Ok(claim)
    }
    async fn wait(&self, queues: &[QueueName], timeout: Duration) -> taskyard_core::Result<()> {
        self.inner.wait(queues, timeout).await
    }
    async fn heartbeat(
        &self,
        leases: &[Lease],
        lease: Duration,
        progress: &[(Lease, bytes::Bytes)],
    ) -> taskyard_core::Result<taskyard_core::Beat> {
        if self.faults.stalled.load(Ordering::SeqCst) {
            return Ok(taskyard_core::Beat {
                held: vec![true; leases.len()],
                cancelled: Vec::new(),
            });
        }
        if self.faults.failing.load(Ordering::SeqCst) {
            return Err(taskyard_core::Error::Store(
                "the store cannot be reached (a partition, simulated)".into(),
            ));
        }
        self.inner.heartbeat(leases, lease, progress).await
    }
    async fn wait_cancel(
        &self,
        queues: &[QueueName],
        timeout: Duration,
    ) -> taskyard_core::Result<()> {
        self.inner.wait_cancel(queues, timeout).await
    }
    async fn wait_job(
        &self,
        queue: &QueueName,
        id: &JobId,
        timeout: Duration,
    ) -> taskyard_core::Result<()> {
        self.inner.wait_job(queue, id, timeout).await
    }
    async fn cancel(
        &self,
        queue: &QueueName,
        filter: &JobFilter,
        after: &taskyard_core::Cursor,
    ) -> taskyard_core::Result<taskyard_core::Step> {
        self.inner.cancel(queue, filter, after).await
    }
    async fn finish(&self, outcomes: &[(Lease, Outcome)]) -> taskyard_core::Result<Vec<bool>> {
        self.inner.finish(outcomes).await
    }
    async fn release(&self, leases: &[Lease]) -> taskyard_core::Result<Vec<bool>> {
        self.inner.release(leases).await
    }
    async fn maintain(
        &self,
        queue: &QueueName,
    ) -> taskyard_core::Result<taskyard_core::Maintenance> {
        self.inner.maintain(queue).await
    }
    async fn now_ms(&self) -> taskyard_core::Result<u64> {
        self.inner.now_ms().await
    }
    async fn queues(&self) -> taskyard_core::Result<Vec<QueueName>> {
        self.inner.queues().await
    }
    async fn stats(&self, queue: &QueueName) -> taskyard_core::Result<taskyard_core::QueueStats> {
        self.inner.stats(queue).await
    }
    async fn list(
        &self,
        queue: &QueueName,
        state: JobState,
        after: &taskyard_core::Cursor,
        limit: u64,
    ) -> taskyard_core::Result<taskyard_core::Page> {
        self.inner.list(queue, state, after, limit).await
    }
    async fn job(
        &self,
        queue: &QueueName,
        id: &JobId,
    ) -> taskyard_core::Result<Option<taskyard_core::JobInfo>> {
        self.inner.job(queue, id).await
    }
    async fn redrive(
        &self,
        queue: &QueueName,
        filter: &JobFilter,
        after: &taskyard_core::Cursor,
    ) -> taskyard_core::Result<taskyard_core::Step> {
        self.inner.redrive(queue, filter, after).await
    }
    async fn purge(
        &self,
        queue: &QueueName,
        filter: &JobFilter,
        after: &taskyard_core::Cursor,
    ) -> taskyard_core::Result<taskyard_core::Step> {
        self.inner.purge(queue, filter, after).await
    }
    async fn run_now(
        &self,
        queue: &QueueName,
        filter: &JobFilter,
        after: &taskyard_core::Cursor,
    ) -> taskyard_core::Result<taskyard_core::Step> {
        self.inner.run_now(queue, filter, after).await
    }
    async fn delete(
        &self,
        queue: &QueueName,
        filter: &JobFilter,
        after: &taskyard_core::Cursor,
    ) -> taskyard_core::Result<taskyard_core::Step> {
        self.inner.delete(queue, filter, after).await
    }
    async fn delete_queue(
        &self,
        queue: &QueueName,
        after: &taskyard_core::Cursor,
    ) -> taskyard_core::Result<taskyard_core::Step> {
        self.inner.delete_queue(queue, after).await
    }
    async fn set_paused(&self, queue: &QueueName, paused: bool) -> taskyard_core::Result<()> {
        self.inner.set_paused(queue, paused).await
    }
    async fn config(&self, queue: &QueueName) -> taskyard_core::Result<QueueConfig> {
        self.inner.config(queue).await
    }
    async fn configure(
        &self,
        queue: &QueueName,
        config: &QueueConfig,
    ) -> taskyard_core::Result<()> {
        self.inner.configure(queue, config).await
    }
    async fn schedules(
        &self,
        queue: &QueueName,
    ) -> taskyard_core::Result<Vec<taskyard_core::schedule::StoredSchedule>> {
        self.inner.schedules(queue).await
    }
    async fn put_schedule(
        &self,
        queue: &QueueName,
        schedule: &taskyard_core::schedule::StoredSchedule,
    ) -> taskyard_core::Result<bool> {
        self.inner.put_schedule(queue, schedule).await
    }
    async fn remove_schedule(&self, queue: &QueueName, name: &str) -> taskyard_core::Result<bool> {
        self.inner.remove_schedule(queue, name).await
    }
    async fn fire(
        &self,
        queue: &QueueName,
        name: &str,
        rev: u64,
        next_ms: u64,
        last_ms: Option<u64>,
        jobs: Vec<NewJob>,
    ) -> taskyard_core::Result<Option<Vec<taskyard_core::JobId>>> {
        self.inner
            .fire(queue, name, rev, next_ms, last_ms, jobs)
            .await
    }
}
