//! `Client`: enqueue jobs and look at queues.

use std::sync::Arc;
use std::time::Duration;

use crate::store::support::STEP;
use crate::{
    Cursor, EnqueueOptions, Enqueued, IntoStore, Job, JobFilter, JobId, JobInfo, JobState, NewJob,
    Page, QueueConfig, QueueName, QueueStats, Result, Skipped, Step, Store,
};

/// The producer and admin side of taskyard: enqueue jobs, inspect queues, redrive the
/// dead. Cheap to clone; clones share the store.
///
/// ```no_run
/// # async fn example() -> taskyard_core::Result<()> {
/// use serde::{Deserialize, Serialize};
/// use taskyard_core::{Client, EnqueueOptions, Job};
///
/// #[derive(Serialize, Deserialize)]
/// struct Welcome { user_id: u64 }
/// impl Job for Welcome { const KIND: &'static str = "welcome"; }
///
/// let store = taskyard_redis::RedisStore::connect("redis://127.0.0.1:6379").await?;
/// let client = Client::new(store);
/// let id = client.enqueue(&Welcome { user_id: 7 }).await?;
/// let ids = client
///     .enqueue_many((0..100).map(|user_id| Welcome { user_id }), EnqueueOptions::default())
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    store: Arc<dyn Store>,
}

impl Client {
    /// A client over a store (a store, an `Arc<dyn Store>`, or an `AnyStore`).
    pub fn new(store: impl IntoStore) -> Self {
        Client {
            store: store.into_store(),
        }
    }

    /// The store under this client.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Enqueues one job on the queue `default`, ready at once.
    pub async fn enqueue<J: Job>(&self, job: &J) -> Result<JobId> {
        self.enqueue_with(job, EnqueueOptions::default()).await
    }

    /// Enqueues one job with options. A duplicate of a job holding its unique key answers
    /// with the holder's id; [`Client::enqueue_report`] tells the two apart.
    pub async fn enqueue_with<J: Job>(&self, job: &J, opts: EnqueueOptions) -> Result<JobId> {
        Ok(self.enqueue_report(job, opts).await?.id)
    }

    /// Enqueues one job with options and says whether it was a duplicate (see
    /// [`Store::enqueue_report`]).
    pub async fn enqueue_report<J: Job>(&self, job: &J, opts: EnqueueOptions) -> Result<Enqueued> {
        let queue = queue_of(&opts)?;
        let new = NewJob::from_job(job, &opts)?;
        let mut done = self.store.enqueue_report(&queue, vec![new]).await?;
        done.pop()
            .ok_or_else(|| crate::Error::Corrupt("enqueue returned no id".into()))
    }

    /// Enqueues many jobs of one kind in one store call: all or none are written.
    /// Returns their ids in input order.
    pub async fn enqueue_many<J: Job>(
        &self,
        jobs: impl IntoIterator<Item = J>,
        opts: EnqueueOptions,
    ) -> Result<Vec<JobId>> {
        let queue = queue_of(&opts)?;
        let batch = jobs
            .into_iter()
            .map(|job| NewJob::from_job(&job, &opts))
            .collect::<Result<Vec<_>>>()?;
        let done = self.enqueue_raw(&queue, batch).await?;
        Ok(done.into_iter().map(|e| e.id).collect())
    }

    /// Enqueues already encoded jobs, of any kinds, in one store call; says of each
    /// whether it was a duplicate (in a batch, the first of several jobs with one unique
    /// key wins and the others answer with its id).
    pub async fn enqueue_raw(&self, queue: &QueueName, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        self.store.enqueue_report(queue, jobs).await
    }

    /// The queues that have been used.
    pub async fn queues(&self) -> Result<Vec<QueueName>> {
        self.store.queues().await
    }

    /// Counts per state of a queue.
    pub async fn stats(&self, queue: &QueueName) -> Result<QueueStats> {
        self.store.stats(queue).await
    }

    /// A page of at most `limit` jobs of a queue in one state, after `after`
    /// ([`Cursor::start`] for the first page); `next` of the page gives the one after.
    pub async fn list(
        &self,
        queue: &QueueName,
        state: JobState,
        after: &Cursor,
        limit: u64,
    ) -> Result<Page> {
        self.store.list(queue, state, after, limit).await
    }

    /// One job by id, in a queue.
    pub async fn job(&self, queue: &QueueName, id: &JobId) -> Result<Option<JobInfo>> {
        self.store.job(queue, id).await
    }

    /// One job by its id alone, in whichever queue (see [`Store::find`]).
    pub async fn find(&self, id: &JobId) -> Result<Option<JobInfo>> {
        self.store.find(id).await
    }

    /// Moves dead jobs back to ready with fresh attempts. Returns how many moved.
    ///
    /// Works in bounded steps (at most [`STEP`] jobs each, a millisecond apart), so a
    /// redrive of a large dead set never holds the store for long.
    pub async fn redrive(&self, queue: &QueueName, filter: &JobFilter) -> Result<u64> {
        Ok(self.walk(queue, filter, Walk::Redrive).await?.done)
    }

    /// Deletes dead jobs, in bounded steps as [`Client::redrive`]. Returns how many.
    pub async fn purge(&self, queue: &QueueName, filter: &JobFilter) -> Result<u64> {
        Ok(self.walk(queue, filter, Walk::Purge).await?.done)
    }

    /// Makes scheduled jobs ready at once (a delayed job, a retry waiting out its
    /// backoff), in bounded steps as [`Client::redrive`]. Named jobs that are not
    /// scheduled come back in `skipped`, with where they are.
    pub async fn run_now(&self, queue: &QueueName, filter: &JobFilter) -> Result<Bulk> {
        self.walk(queue, filter, Walk::RunNow).await
    }

    /// Deletes ready and scheduled jobs, in bounded steps as [`Client::redrive`], freeing
    /// their unique keys. Named jobs in another state come back in `skipped` (a running
    /// job is not stopped; dead jobs are purged with [`Client::purge`]).
    pub async fn delete(&self, queue: &QueueName, filter: &JobFilter) -> Result<Bulk> {
        self.walk(queue, filter, Walk::Delete).await
    }

    /// Cancels jobs — one by id, by kind, or all of a queue — in bounded steps as
    /// [`Client::redrive`]: ready and scheduled jobs end `cancelled` at once; a running
    /// job ends `cancelled` in the store at once too, and its handler is told within a
    /// moment ([`StopReason::Cancelled`](crate::StopReason::Cancelled) through
    /// [`JobContext::stopped`](crate::JobContext::stopped) and its cancellation token).
    /// Once this returns, a cancelled job never completes, is never retried, and its
    /// unique key is free. Named jobs already finished come back in `skipped`, with
    /// their state.
    pub async fn cancel(&self, queue: &QueueName, filter: &JobFilter) -> Result<Bulk> {
        self.walk(queue, filter, Walk::Cancel).await
    }

    /// What became of a job: `None` while it is still to run (scheduled, ready,
    /// running); its result once completed (the value its handler returned, kept for
    /// the queue's result TTL), its last error once dead, or that it was cancelled.
    /// [`Error::UnknownJob`](crate::Error::UnknownJob) if no job has this id.
    pub async fn result(&self, id: &JobId) -> Result<Option<Finished>> {
        match self.store.find(id).await? {
            Some(job) => Ok(Finished::of(&job)),
            None => Err(crate::Error::UnknownJob(id.clone())),
        }
    }

    /// Waits until a job has finished and returns what became of it, as
    /// [`Client::result`]; [`Error::WaitTimedOut`](crate::Error::WaitTimedOut) if it
    /// has not within `timeout`. The wait is woken by the job's end (Redis: a message from
    /// the script that ended it; the embedded store: in the same process at once, from
    /// another process within 50 ms), not by polling the job.
    pub async fn wait_for(&self, id: &JobId, timeout: Duration) -> Result<Finished> {
        let started = std::time::Instant::now();
        let job = self
            .store
            .find(id)
            .await?
            .ok_or_else(|| crate::Error::UnknownJob(id.clone()))?;
        let queue = QueueName::new(job.queue.clone())?;
        let mut state = job.state;
        if let Some(done) = Finished::of(&job) {
            return Ok(done);
        }
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(crate::Error::WaitTimedOut {
                    id: id.clone(),
                    after: timeout,
                    state,
                });
            }
            self.store.wait_job(&queue, id, left).await?;
            // A job that vanished while waited on was deleted (a completion while the
            // wait is registered leaves its mark for the result TTL).
            let job = self
                .store
                .job(&queue, id)
                .await?
                .ok_or_else(|| crate::Error::UnknownJob(id.clone()))?;
            if let Some(done) = Finished::of(&job) {
                return Ok(done);
            }
            state = job.state;
        }
    }

    /// Deletes a whole queue: its jobs in every state, unique keys, settings and name, in
    /// bounded steps. Workers still running its jobs have their outcomes refused. Returns
    /// how many jobs went.
    pub async fn delete_queue(&self, queue: &QueueName) -> Result<u64> {
        let mut total = 0;
        let mut after = Cursor::start();
        loop {
            let step = self.store.delete_queue(queue, &after).await?;
            total += step.done;
            match step.next {
                Some(next) => after = next,
                None => return Ok(total),
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Runs a bulk operation to its end, step by step.
    async fn walk(&self, queue: &QueueName, filter: &JobFilter, walk: Walk) -> Result<Bulk> {
        // Ids go in chunks of STEP, each once: a job must never be moved twice.
        let filters: Vec<JobFilter> = match filter {
            JobFilter::Ids(ids) => {
                let mut unique = ids.clone();
                unique.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
                unique.dedup();
                unique
                    .chunks(STEP)
                    .map(|c| JobFilter::Ids(c.to_vec()))
                    .collect()
            }
            other => vec![other.clone()],
        };
        let mut total = Bulk::default();
        for filter in &filters {
            let mut after = Cursor::start();
            loop {
                let step: Step = match walk {
                    Walk::Redrive => self.store.redrive(queue, filter, &after).await?,
                    Walk::Purge => self.store.purge(queue, filter, &after).await?,
                    Walk::RunNow => self.store.run_now(queue, filter, &after).await?,
                    Walk::Delete => self.store.delete(queue, filter, &after).await?,
                    Walk::Cancel => self.store.cancel(queue, filter, &after).await?,
                };
                total.done += step.done;
                total.skipped.extend(step.skipped);
                match step.next {
                    Some(next) => after = next,
                    None => break,
                }
                // Let other clients in between steps.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        Ok(total)
    }

    /// Stops workers from claiming on a queue; enqueues still succeed.
    pub async fn pause(&self, queue: &QueueName) -> Result<()> {
        self.store.set_paused(queue, true).await
    }

    /// Lets workers claim on a queue again.
    pub async fn resume(&self, queue: &QueueName) -> Result<()> {
        self.store.set_paused(queue, false).await
    }

    /// A queue's settings (max length, retention).
    pub async fn config(&self, queue: &QueueName) -> Result<QueueConfig> {
        self.store.config(queue).await
    }

    /// Changes a queue's settings.
    pub async fn configure(&self, queue: &QueueName, config: &QueueConfig) -> Result<()> {
        self.store.configure(queue, config).await
    }
}

/// What a bulk operation did, walked to its end.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Bulk {
    /// Jobs acted on.
    pub done: u64,
    /// Jobs named by id that were not acted on, with why.
    pub skipped: Vec<Skipped>,
}

/// The bulk operations, walked step by step.
#[derive(Clone, Copy)]
enum Walk {
    Redrive,
    Purge,
    RunNow,
    Delete,
    Cancel,
}

/// What became of a finished job: [`Client::result`], [`Client::wait_for`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
#[non_exhaustive]
pub enum Finished {
    /// It completed; `result` is the JSON its handler returned, if it returned one (and
    /// the queue's result TTL still keeps it).
    Completed {
        /// The handler's value, as JSON text.
        result: Option<String>,
    },
    /// It failed for good; `error` is its last attempt's.
    Dead {
        /// The last error.
        error: String,
    },
    /// It was cancelled.
    Cancelled,
}

impl Finished {
    /// What a job's record says became of it; `None` while it is still to run.
    pub fn of(job: &JobInfo) -> Option<Finished> {
        match job.state {
            JobState::Completed => Some(Finished::Completed {
                result: job.result.clone(),
            }),
            JobState::Dead => Some(Finished::Dead {
                error: job
                    .errors
                    .last()
                    .map(|e| e.message.clone())
                    .unwrap_or_default(),
            }),
            JobState::Cancelled => Some(Finished::Cancelled),
            _ => None,
        }
    }

    /// The result decoded as `T`: `Ok(None)` for a completion without a value;
    /// an error for a job that did not complete or a value that does not decode.
    pub fn value<T: serde::de::DeserializeOwned>(&self) -> Result<Option<T>> {
        match self {
            Finished::Completed { result: None } => Ok(None),
            Finished::Completed { result: Some(json) } => {
                serde_json::from_str(json).map(Some).map_err(|e| {
                    crate::Error::InvalidOption(format!("the result does not decode: {e}"))
                })
            }
            Finished::Dead { error } => Err(crate::Error::InvalidOption(format!(
                "the job is dead, with no result: {error}"
            ))),
            Finished::Cancelled => Err(crate::Error::InvalidOption(
                "the job was cancelled, with no result".into(),
            )),
        }
    }
}

fn queue_of(opts: &EnqueueOptions) -> Result<QueueName> {
    match &opts.queue {
        Some(name) => QueueName::new(name.clone()),
        None => Ok(QueueName::default()),
    }
}
