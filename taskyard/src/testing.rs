//! Test helpers for applications: run your handlers in a unit test on a throwaway
//! embedded store — no Redis, no files left behind, no sleeps in your test.
//!
//! A [`TestQueue`] is a temporary store (removed when dropped) whose queues keep their
//! completed jobs, so every job can be looked at after it ran: its state, attempts,
//! errors and result. [`TestQueue::run`] runs a worker built by your closure until no job
//! is left to run; a retry waiting out its backoff, or a delayed job, is made ready at
//! once, so a test of a flaky handler takes as long as its runs and no longer.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use taskyard::testing::TestQueue;
//! use taskyard::{Finished, Job, JobContext, JobError, JobState, Json};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Add { a: i64, b: i64 }
//! impl Job for Add { const KIND: &'static str = "add"; }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> taskyard::Result<()> {
//! let t = TestQueue::new().await?;
//! let id = t.enqueue(&Add { a: 2, b: 3 }).await?;
//! t.run(|w| w.handle(|job: Add, _ctx: JobContext| async move {
//!     Ok::<_, JobError>(Json(job.a + job.b))
//! }))
//! .await?;
//! let job = t.job(&id).await?;
//! assert_eq!((job.state, job.attempt), (JobState::Completed, 1));
//! assert_eq!(t.result(&id).await?.value::<i64>()?, Some(5));
//! # Ok(()) }
//! ```

use std::time::Duration;

use taskyard_core::{
    Client, EnqueueOptions, Error, Finished, Job, JobFilter, JobId, JobInfo, QueueName, Result,
    WorkerBuilder,
};

use crate::AnyStore;

/// A throwaway embedded store for tests; see the [module](self) documentation.
pub struct TestQueue {
    store: AnyStore,
    client: Client,
    // Removed when the queue is dropped, with the store's file in it.
    _dir: tempfile::TempDir,
}

/// How long [`TestQueue::run`] lets the jobs run before it gives up: a handler that
/// never returns fails the test instead of hanging it.
pub const RUN_LIMIT: Duration = Duration::from_secs(60);

impl TestQueue {
    /// A new, empty store in a temporary directory.
    pub async fn new() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("taskyard-test-")
            .tempdir()
            .map_err(|e| Error::Store(Box::new(e)))?;
        let path = dir.path().join("taskyard.db");
        let store = AnyStore::open(&path.to_string_lossy()).await?;
        let client = Client::new(store.clone());
        Ok(TestQueue {
            store,
            client,
            _dir: dir,
        })
    }

    /// The store, to build your own worker or client on.
    pub fn store(&self) -> &AnyStore {
        &self.store
    }

    /// A client on the store.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Enqueues a job on the queue `default`.
    pub async fn enqueue<J: Job>(&self, job: &J) -> Result<JobId> {
        self.enqueue_with(job, EnqueueOptions::default()).await
    }

    /// Enqueues a job with options (a queue, a delay, a retry policy, ...).
    pub async fn enqueue_with<J: Job>(&self, job: &J, opts: EnqueueOptions) -> Result<JobId> {
        let id = self.client.enqueue_with(job, opts).await?;
        self.keep_completed().await?;
        Ok(id)
    }

    /// Runs a worker on every queue of the store, built by `build` from a builder with
    /// fast maintenance (add your handlers, hooks, options), until no job is left to run:
    /// each job has completed, gone dead or been cancelled. Scheduled jobs (delays,
    /// retries waiting out their backoff) are made ready at once. Fails if jobs are still
    /// to run after [`RUN_LIMIT`], or if the worker itself failed.
    pub async fn run(&self, build: impl FnOnce(WorkerBuilder) -> WorkerBuilder) -> Result<()> {
        let queues = self.client.queues().await?;
        let mut builder = taskyard_core::Worker::builder(self.store.clone())
            .maintenance_every(Duration::from_millis(20));
        for q in &queues {
            builder = builder.queue(q.as_str());
        }
        let handle = build(builder).build()?.spawn();
        let started = std::time::Instant::now();
        let outcome = loop {
            match self.left(&queues).await {
                Ok(0) => break Ok(()),
                Ok(_) if started.elapsed() > RUN_LIMIT => {
                    break Err(Error::Worker(format!(
                        "jobs were still to run after {RUN_LIMIT:?}: does a handler hang?"
                    )));
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(2)).await,
                Err(e) => break Err(e),
            }
        };
        let stopped = handle.shutdown().await;
        outcome.and(stopped)
    }

    /// Jobs still to run on `queues`, after making scheduled ones ready.
    async fn left(&self, queues: &[QueueName]) -> Result<u64> {
        let mut left = 0;
        for q in queues {
            let st = self.client.stats(q).await?;
            if st.scheduled > 0 {
                self.client.run_now(q, &JobFilter::All).await?;
            }
            left += st.ready + st.scheduled + st.running;
        }
        Ok(left)
    }

    /// A job, in whatever state it is (completed jobs are kept).
    pub async fn job(&self, id: &JobId) -> Result<JobInfo> {
        self.client
            .find(id)
            .await?
            .ok_or_else(|| Error::UnknownJob(id.clone()))
    }

    /// What became of a job: its result, last error, or cancel. An error if it has not
    /// finished.
    pub async fn result(&self, id: &JobId) -> Result<Finished> {
        match self.client.result(id).await? {
            Some(done) => Ok(done),
            None => Err(Error::InvalidOption(format!(
                "job {id} has not finished: it is {}",
                self.job(id).await?.state
            ))),
        }
    }

    /// Makes every queue keep its completed jobs, so tests can look at them; its other
    /// settings stay as they are.
    async fn keep_completed(&self) -> Result<()> {
        for q in self.client.queues().await? {
            let mut config = self.client.config(&q).await?;
            if config.completed_max < KEEP_COMPLETED {
                config.completed_max = KEEP_COMPLETED;
                config.completed_max_age_ms = 30 * 24 * 3600 * 1000;
                self.client.configure(&q, &config).await?;
            }
        }
        Ok(())
    }
}

/// Completed jobs a test queue keeps.
const KEEP_COMPLETED: u64 = 1_000_000;
