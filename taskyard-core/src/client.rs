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
}

fn queue_of(opts: &EnqueueOptions) -> Result<QueueName> {
    match &opts.queue {
        Some(name) => QueueName::new(name.clone()),
        None => Ok(QueueName::default()),
    }
}
