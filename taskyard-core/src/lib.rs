//! The core of taskyard: jobs, the [`Client`], the [`Worker`] and the [`Store`] trait.
//!
//! Applications depend on the `taskyard` crate, which re-exports all of this together
//! with a store (the embedded one by default, Redis with the `redis` feature) and opens
//! either from a URL. A store implements [`Store`] against this crate, with the helpers of
//! [`store::support`], and is held to the conformance suite (`taskyard-conformance`).

mod client;
mod error;
pub mod job;
mod retry;
pub mod schedule;
pub mod store;
mod worker;

pub use client::{Bulk, Client, Finished};
pub use error::{Error, Result};
pub use job::{
    AttemptError, Backoff, DEFAULT_PRIORITY, Due, EnqueueOptions, Enqueued, Job, JobId, JobInfo,
    JobState, MAX_PAYLOAD_BYTES, MAX_PROGRESS_BYTES, MAX_RESULT_BYTES, NewJob, PRIORITY_MAX,
    PRIORITY_MIN, QueueName, Unique, UniqueMode,
};
pub use retry::RetryPolicy;
pub use store::{
    Beat, Claim, ClaimedJob, Cursor, DEFAULT_RESULT_TTL_MS, DeadFilter, JobFilter, Lease,
    LeaseToken, Maintenance, Outcome, Page, QueueConfig, QueueStats, Skip, Skipped, Step, Store,
};
pub use worker::{
    Counters, Ended, Hook, How, IntoStore, JobContext, JobError, Json, Next, Output, QueueOrder,
    RunResult, StopReason, Worker, WorkerBuilder, WorkerHandle, shutdown_signal,
};

/// Re-exported so stores implement [`Store`] with the same macro.
pub use async_trait::async_trait;
