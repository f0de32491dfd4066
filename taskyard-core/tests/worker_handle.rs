//! A worker users can hold: `Worker::spawn` and its handle's `shutdown`, the stop signal
//! handlers see (`JobContext::stopped`) on shutdown and on a lost lease, and failures
//! inside the worker surfacing from `run` instead of vanishing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use taskyard_core::{
    Beat, Claim, Client, Cursor, Enqueued, Error, Job, JobContext, JobError, JobFilter, JobId,
    JobInfo, JobState, Lease, LeaseToken, Maintenance, NewJob, Outcome, Page, QueueConfig,
    QueueName, QueueStats, Result, Step, StopReason, Store, Worker,
};
use taskyard_sqlite::SqliteStore;
use tokio::sync::mpsc;

#[derive(Serialize, Deserialize)]
struct Ping {
    n: u32,
}

impl Job for Ping {
    const KIND: &'static str = "ping";
}

fn default_queue() -> QueueName {
    QueueName::new("default").unwrap()
}

/// A fresh embedded store in a directory removed with it.
async fn store() -> (SqliteStore, taskyard_conformance::TempDir) {
    let dir = taskyard_conformance::TempDir::new();
    let store = SqliteStore::open(dir.path().join("t.db")).await.unwrap();
    (store, dir)
}

async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_spawned_worker_runs_jobs_until_its_handle_shuts_it_down() {
    let (store, _dir) = store().await;
    let client = Client::new(store.clone());
    let handle = Worker::builder(store.clone())
        .handle(|_: Ping, _| async { Ok::<(), JobError>(()) })
        .build()
        .unwrap()
        .spawn();
    client
        .enqueue_many((0..50).map(|n| Ping { n }), Default::default())
        .await
        .unwrap();
    let counters = handle.counters();
    until("50 completions", async || counters.completed() == 50).await;
    assert!(!handle.is_finished());
    handle.shutdown().await.unwrap();

    // Stopped: a job enqueued now stays ready.
    client.enqueue(&Ping { n: 99 }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(client.stats(&default_queue()).await.unwrap().ready, 1);
}

#[tokio::test]
async fn shutdown_tells_running_handlers_and_one_that_stops_gives_its_job_back() {
    let (store, _dir) = store().await;
    let client = Client::new(store.clone());
    let (tx, mut reasons) = mpsc::unbounded_channel();
    let handle = Worker::builder(store.clone())
        .grace(Duration::from_secs(30))
        .handle(move |_: Ping, ctx: JobContext| {
            let tx = tx.clone();
            async move {
                let why = ctx.stopped().await;
                let _ = tx.send((why, ctx.stop_reason()));
                Err::<(), _>(JobError::retry("stopped for shutdown"))
            }
        })
        .build()
        .unwrap()
        .spawn();
    let id = client.enqueue(&Ping { n: 1 }).await.unwrap();
    let q = default_queue();
    until("the job running", async || {
        client.stats(&q).await.unwrap().running == 1
    })
    .await;

    let start = Instant::now();
    handle.shutdown().await.unwrap();
    // Told at once, not at the end of the 30 s grace period.
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    let (why, kept) = reasons.recv().await.unwrap();
    assert_eq!(
        (why, kept),
        (StopReason::Shutdown, Some(StopReason::Shutdown))
    );
    // Given back, not failed: ready again, the attempt not charged, no error recorded.
    let job = client.job(&q, &id).await.unwrap().unwrap();
    assert_eq!(
        (job.state, job.attempt, job.errors.len()),
        (JobState::Ready, 0, 0)
    );
}

/// A store whose heartbeats are all refused (as if every lease had expired), or whose
/// `finish` panics; everything else goes to the store inside.
struct Faulty {
    inner: SqliteStore,
    refuse_heartbeats: bool,
    panic_in_finish: Arc<AtomicBool>,
}

#[taskyard_core::async_trait]
impl Store for Faulty {
    async fn enqueue_report(&self, queue: &QueueName, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>> {
        self.inner.enqueue_report(queue, jobs).await
    }
    async fn claim(
        &self,
        queue: &QueueName,
        max: usize,
        lease: Duration,
        token: &LeaseToken,
    ) -> Result<Claim> {
        self.inner.claim(queue, max, lease, token).await
    }
    async fn wait(&self, queues: &[QueueName], timeout: Duration) -> Result<()> {
        self.inner.wait(queues, timeout).await
    }
    async fn heartbeat(
        &self,
        leases: &[Lease],
        lease: Duration,
        progress: &[(Lease, bytes::Bytes)],
    ) -> Result<Beat> {
        if self.refuse_heartbeats {
            return Ok(Beat {
                held: vec![false; leases.len()],
                cancelled: Vec::new(),
            });
        }
        self.inner.heartbeat(leases, lease, progress).await
    }
    async fn wait_cancel(&self, queues: &[QueueName], timeout: Duration) -> Result<()> {
        self.inner.wait_cancel(queues, timeout).await
    }
    async fn wait_job(&self, queue: &QueueName, id: &JobId, timeout: Duration) -> Result<()> {
        self.inner.wait_job(queue, id, timeout).await
    }
    async fn cancel(&self, queue: &QueueName, filter: &JobFilter, after: &Cursor) -> Result<Step> {
        self.inner.cancel(queue, filter, after).await
    }
    async fn finish(&self, outcomes: &[(Lease, Outcome)]) -> Result<Vec<bool>> {
        assert!(
            !self.panic_in_finish.load(Ordering::Relaxed),
            "finish broke"
        );
        self.inner.finish(outcomes).await
    }
    async fn release(&self, leases: &[Lease]) -> Result<Vec<bool>> {
        self.inner.release(leases).await
    }
    async fn maintain(&self, queue: &QueueName) -> Result<Maintenance> {
        self.inner.maintain(queue).await
    }
    async fn now_ms(&self) -> Result<u64> {
        self.inner.now_ms().await
    }
    async fn queues(&self) -> Result<Vec<QueueName>> {
        self.inner.queues().await
    }
    async fn stats(&self, queue: &QueueName) -> Result<QueueStats> {
        self.inner.stats(queue).await
    }
    async fn list(
        &self,
        queue: &QueueName,
        state: JobState,
        after: &Cursor,
        limit: u64,
    ) -> Result<Page> {
        self.inner.list(queue, state, after, limit).await
    }
    async fn job(&self, queue: &QueueName, id: &JobId) -> Result<Option<JobInfo>> {
        self.inner.job(queue, id).await
    }
    async fn redrive(&self, q: &QueueName, filter: &JobFilter, after: &Cursor) -> Result<Step> {
        self.inner.redrive(q, filter, after).await
    }
    async fn purge(&self, q: &QueueName, filter: &JobFilter, after: &Cursor) -> Result<Step> {
        self.inner.purge(q, filter, after).await
    }
    async fn run_now(&self, q: &QueueName, filter: &JobFilter, after: &Cursor) -> Result<Step> {
        self.inner.run_now(q, filter, after).await
    }
    async fn delete(&self, q: &QueueName, filter: &JobFilter, after: &Cursor) -> Result<Step> {
        self.inner.delete(q, filter, after).await
    }
    async fn delete_queue(&self, q: &QueueName, after: &Cursor) -> Result<Step> {
        Store::delete_queue(&self.inner, q, after).await
    }
    async fn set_paused(&self, queue: &QueueName, paused: bool) -> Result<()> {
        self.inner.set_paused(queue, paused).await
    }
    async fn config(&self, queue: &QueueName) -> Result<QueueConfig> {
        self.inner.config(queue).await
    }
    async fn configure(&self, queue: &QueueName, config: &QueueConfig) -> Result<()> {
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

#[tokio::test]
async fn a_handler_is_told_when_its_lease_is_lost() {
    let (inner, _dir) = store().await;
    let client = Client::new(inner.clone());
    let faulty = Faulty {
        inner,
        refuse_heartbeats: true,
        panic_in_finish: Arc::new(AtomicBool::new(false)),
    };
    let (tx, mut reasons) = mpsc::unbounded_channel();
    // Heartbeats every lease/3 = 100 ms; the first one is refused.
    let handle = Worker::builder(faulty)
        .lease(Duration::from_millis(300))
        .handle(move |_: Ping, ctx: JobContext| {
            let tx = tx.clone();
            async move {
                // The same signal as a token, for code that takes one.
                ctx.cancellation_token().cancelled().await;
                let _ = tx.send((ctx.stop_reason().unwrap(), ctx.lease_lost()));
                Ok::<(), JobError>(())
            }
        })
        .build()
        .unwrap()
        .spawn();
    client.enqueue(&Ping { n: 1 }).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), reasons.recv()).await;
    assert_eq!(got.unwrap().unwrap(), (StopReason::LeaseLost, true));
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_failure_inside_the_worker_is_returned_by_run_not_dropped() {
    let (inner, _dir) = store().await;
    let client = Client::new(inner.clone());
    let broken = Arc::new(AtomicBool::new(true));
    let faulty = Faulty {
        inner,
        refuse_heartbeats: false,
        panic_in_finish: broken.clone(),
    };
    let handle = Worker::builder(faulty)
        .handle(|_: Ping, _| async { Ok::<(), JobError>(()) })
        .build()
        .unwrap()
        .spawn();
    client.enqueue(&Ping { n: 1 }).await.unwrap();
    // The completer panics recording the outcome.
    let q = default_queue();
    until("the job ran", async || {
        client.stats(&q).await.unwrap().running == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let err = handle.shutdown().await.unwrap_err();
    assert!(
        matches!(&err, Error::Worker(m) if m.contains("completer") && m.contains("finish broke")),
        "{err}"
    );
}
