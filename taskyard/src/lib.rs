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
//! - a [`Store`] holds the queues: the embedded one (feature `sqlite`, on by default: one
//!   file, nothing to install) or Redis (feature `redis`). [`AnyStore::open`] opens
//!   either from a URL — `redis://…`, `rediss://…`, or a file path — so an application
//!   does not write its own switch; both pass the same conformance suite.
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
//!     // A file path (here ./taskyard.db), or "redis://127.0.0.1:6379" with the `redis`
//!     // feature.
//!     let store = taskyard::AnyStore::open("taskyard.db").await?;
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

pub use taskyard_core::*;

mod open;
pub use open::AnyStore;

#[cfg(feature = "sqlite")]
pub mod testing;

/// The embedded store: one SQLite file (see its [`SqliteStore`](sqlite::SqliteStore)).
#[cfg(feature = "sqlite")]
pub use taskyard_sqlite as sqlite;

/// The Redis (and Valkey) store (see its [`RedisStore`](redis::RedisStore)).
#[cfg(feature = "redis")]
pub use taskyard_redis as redis;

#[cfg(not(any(feature = "sqlite", feature = "redis")))]
compile_error!("taskyard needs a store: enable the `sqlite` feature (the default) or `redis`");
