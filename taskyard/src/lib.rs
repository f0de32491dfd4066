//! taskyard: a background job queue with per-job leases, heartbeats, retries with
//! backoff and a dead-letter set you can redrive.
//!
//! The principal types:
//!
//! - a [`Job`] is a serde type with a kind name; [`EnqueueOptions`] say where and when it
//!   runs and how often it may be retried ([`RetryPolicy`]);
//! - a [`Client`] enqueues jobs (one, or many in one round trip) and inspects queues:
//!   [`QueueStats`], [`JobInfo`], redrive and purge of the dead set, pause and resume;
//! - a [`Worker`] claims jobs in batches, runs their handlers with bounded concurrency,
//!   renews their leases with one heartbeat call, and records outcomes in batches;
//! - a [`Store`] holds the queues. Stores live in their own crates — `taskyard-sqlite`
//!   (the embedded default: one file, nothing to install) and `taskyard-redis` — and all
//!   pass the same conformance suite (`taskyard-conformance`).
//!
//! Delivery is at least once: a job is never lost, and may run twice after a crash or a
//! lease expiry ([`JobContext::attempt`] says so). Use the job id as the idempotency key of
//! side effects.
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use taskyard::{Client, Job, JobContext, JobError, Worker};
//!
//! #[derive(Serialize, Deserialize)]
//! struct SendEmail { to: String }
//!
//! impl Job for SendEmail {
//!     const KIND: &'static str = "send_email";
//! }
//!
//! #[tokio::main]
//! async fn main() -> taskyard::Result<()> {
//!     // ./taskyard.db; or taskyard_redis::RedisStore::connect("redis://127.0.0.1:6379")
//!     let store = taskyard_sqlite::SqliteStore::open_default().await?;
//!     let client = Client::new(store.clone());
//!     client.enqueue(&SendEmail { to: "ada@example.com".into() }).await?;
//!
//!     let worker = Worker::builder(store)
//!         .concurrency(20)
//!         .handle(|job: SendEmail, ctx: JobContext| async move {
//!             println!("mailing {} (attempt {})", job.to, ctx.attempt());
//!             Ok::<(), JobError>(())
//!         })
//!         .build()?;
//!     worker.run(taskyard::shutdown_signal()).await
//! }
//! ```

mod client;
mod error;
pub mod job;
mod retry;
pub mod store;
mod worker;

pub use client::Client;
pub use error::{Error, Result};
pub use job::{
    AttemptError, Backoff, Due, EnqueueOptions, Job, JobId, JobInfo, JobState, MAX_PAYLOAD_BYTES,
    NewJob, QueueName,
};
pub use retry::RetryPolicy;
pub use store::{
    Claim, ClaimedJob, DeadFilter, Lease, Maintenance, Outcome, QueueConfig, QueueStats, Store,
};
pub use worker::{
    Counters, IntoStore, JobContext, JobError, QueueOrder, Worker, WorkerBuilder, shutdown_signal,
};

/// Re-exported so stores implement [`Store`] with the same macro.
pub use async_trait::async_trait;
