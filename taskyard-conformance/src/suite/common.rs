//! What the tests share: the job kinds they enqueue, short forms of the store calls they
//! make, handlers that record their runs, and a worker builder with fast maintenance.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use taskyard_core::{
    EnqueueOptions, Job, JobContext, JobError, JobId, LeaseToken, NewJob, QueueName, Store, Worker,
};

use crate::Subject;

pub(super) const LEASE: Duration = Duration::from_secs(30);
pub(super) const SOON: Duration = Duration::from_secs(10);

/// The job most tests enqueue.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Ping {
    /// A number to tell jobs apart.
    pub n: u64,
}

impl Job for Ping {
    const KIND: &'static str = "ping";
}

/// A second kind, for filters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pong {
    /// A number to tell jobs apart.
    pub n: u64,
}

impl Job for Pong {
    const KIND: &'static str = "pong";
}

pub(super) fn new_job(n: u64) -> NewJob {
    NewJob::from_job(&Ping { n }, &EnqueueOptions::default()).expect("valid job")
}

pub(super) fn new_job_with(n: u64, opts: EnqueueOptions) -> NewJob {
    NewJob::from_job(&Ping { n }, &opts).expect("valid job")
}

pub(super) async fn enqueue(
    store: &Arc<dyn Store>,
    q: &QueueName,
    jobs: Vec<NewJob>,
) -> Vec<JobId> {
    store.enqueue(q, jobs).await.expect("enqueue")
}

pub(super) async fn claim(
    store: &Arc<dyn Store>,
    q: &QueueName,
    n: usize,
    lease: Duration,
    owner: &str,
) -> Vec<taskyard_core::ClaimedJob> {
    let token = LeaseToken::mint(owner).expect("a valid owner");
    store.claim(q, n, lease, &token).await.expect("claim").jobs
}

pub(super) async fn stats(store: &Arc<dyn Store>, q: &QueueName) -> taskyard_core::QueueStats {
    store.stats(q).await.expect("stats")
}

pub(super) fn payload_n(payload: &[u8]) -> u64 {
    serde_json::from_slice::<Ping>(payload)
        .expect("ping payload")
        .n
}

/// Ids and attempts of the runs a handler saw.
pub(super) type Seen = Arc<Mutex<Vec<(u64, u32)>>>;

pub(super) fn recorder(
    seen: &Seen,
) -> impl Fn(Ping, JobContext) -> std::future::Ready<Result<(), JobError>> + Send + Sync + 'static {
    let seen = seen.clone();
    move |job: Ping, ctx: JobContext| {
        seen.lock().unwrap().push((job.n, ctx.attempt()));
        std::future::ready(Ok(()))
    }
}

pub(super) fn count(seen: &Seen) -> usize {
    seen.lock().unwrap().len()
}

pub(super) fn worker(s: &Subject, q: &QueueName) -> taskyard_core::WorkerBuilder {
    Worker::builder(s.store.clone())
        .queue(q.as_str())
        .maintenance_every(Duration::from_millis(100))
}
