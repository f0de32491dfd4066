//! What a handler sees (`JobContext`) and what it can say (`JobError`), and the
//! type-erased form the runtime stores handlers in.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::stop::{Stop, StopReason};

use crate::{Job, JobId, Lease, QueueName, RetryPolicy};

/// One run of a job: which job, which attempt, and its stop signal. Shared by the
/// handler's context, the lease book and the run's task, so starting a run costs one
/// allocation and a few reference counts, not a copy of each field for each holder.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) lease: Lease,
    pub(crate) kind: Arc<str>,
    pub(crate) attempt: u32,
    pub(crate) max_attempts: u32,
    pub(crate) enqueued_at_ms: u64,
    pub(crate) stop: Stop,
}

/// What a handler knows about the run it is in.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub(crate) run: Arc<Run>,
}

impl JobContext {
    /// The job's id: use it as the idempotency key of side effects, since a job may run
    /// more than once (delivery is at least once).
    pub fn id(&self) -> &JobId {
        &self.run.lease.id
    }

    /// The job's queue.
    pub fn queue(&self) -> &QueueName {
        &self.run.lease.queue
    }

    /// The job's kind.
    pub fn kind(&self) -> &str {
        &self.run.kind
    }

    /// This attempt's number, 1-based. Above 1, an earlier run failed or its worker died.
    pub fn attempt(&self) -> u32 {
        self.run.attempt
    }

    /// Attempts in all.
    pub fn max_attempts(&self) -> u32 {
        self.run.max_attempts
    }

    /// When the job was enqueued, Unix ms (store time).
    pub fn enqueued_at_ms(&self) -> u64 {
        self.run.enqueued_at_ms
    }

    /// Whether this run's lease is lost: the store refused its heartbeat, or no heartbeat
    /// reached the store for longer than the lease (a partition). The job may now run
    /// elsewhere. A long handler can check this and stop early; its outcome will be
    /// refused once another worker holds the job.
    pub fn lease_lost(&self) -> bool {
        self.run.stop.lease_lost()
    }

    /// Resolves when this run is asked to stop early, with why: the worker is shutting
    /// down (the handler has until the grace period ends), the lease was lost, or the run
    /// passed its timeout (the handler has until the timeout grace ends, then it is
    /// aborted at its next `.await`). Never resolves otherwise, so a handler can race it
    /// against its work:
    ///
    /// ```ignore
    /// tokio::select! {
    ///     result = do_the_work() => result,
    ///     why = ctx.stopped() => Err(JobError::retry(format!("stopped: {why:?}"))),
    /// }
    /// ```
    pub async fn stopped(&self) -> StopReason {
        self.run.stop.stopped().await
    }

    /// Why this run was asked to stop, if it was (the first reason is kept).
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.run.stop.reason()
    }

    /// Reports how far the run has got: a small JSON value (a percentage, a count, a
    /// stage), at most [`MAX_PROGRESS_BYTES`](crate::MAX_PROGRESS_BYTES) encoded. Costs
    /// no store call: the latest value goes out with the worker's next heartbeat (every
    /// lease/3), and [`Client::job`](crate::Client::job) and `taskyard jobs show` show it
    /// while the job runs. A value that does not encode or is too large is an error, and
    /// the progress last reported stands.
    pub fn progress<T: serde::Serialize + ?Sized>(&self, value: &T) -> crate::Result<()> {
        let json = serde_json::to_vec(value)?;
        if json.len() > crate::MAX_PROGRESS_BYTES {
            return Err(crate::Error::InvalidOption(format!(
                "progress of {} bytes is over the limit of {} bytes",
                json.len(),
                crate::MAX_PROGRESS_BYTES
            )));
        }
        self.run.stop.set_progress(Bytes::from(json));
        Ok(())
    }

    /// The same signal as a [`CancellationToken`], to hand to code that takes one. It is
    /// a child of the run's own token: cancelling it does not stop the run.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.run.stop.token()
    }
}

/// How a handler says a run failed.
///
/// Any `std::error::Error` converts into a retryable `JobError`, so `?` works in handlers.
///
/// ```
/// use std::time::Duration;
/// use taskyard_core::JobError;
///
/// let _ = JobError::retry("upstream returned 503");
/// let _ = JobError::retry_after(Duration::from_secs(60), "rate limited");
/// let _ = JobError::permanent("no such user");
/// ```
pub struct JobError {
    pub(crate) how: Failure,
    pub(crate) message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    Retry,
    RetryAfter(Duration),
    RetryAt(SystemTime),
    Permanent,
}

impl JobError {
    /// A failure to retry after the policy's backoff (or dead, once attempts are spent).
    pub fn retry(message: impl fmt::Display) -> Self {
        JobError {
            how: Failure::Retry,
            message: message.to_string(),
        }
    }

    /// A failure to retry after `delay`, whatever the policy says.
    pub fn retry_after(delay: Duration, message: impl fmt::Display) -> Self {
        JobError {
            how: Failure::RetryAfter(delay),
            message: message.to_string(),
        }
    }

    /// A failure to retry at `at`.
    pub fn retry_at(at: SystemTime, message: impl fmt::Display) -> Self {
        JobError {
            how: Failure::RetryAt(at),
            message: message.to_string(),
        }
    }

    /// A failure that no retry can fix: the job goes straight to dead.
    pub fn permanent(message: impl fmt::Display) -> Self {
        JobError {
            how: Failure::Permanent,
            message: message.to_string(),
        }
    }

    /// The message kept in the job's history.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Debug for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobError({:?}: {})", self.how, self.message)
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for JobError {
    fn from(err: E) -> Self {
        JobError::retry(err)
    }
}

/// What a handler may return on success: nothing (`()`), or a value kept as the job's
/// result for the queue's result TTL ([`Json`], or a `serde_json::Value`), which
/// [`Client::result`](crate::Client::result) and [`Client::wait_for`](crate::Client::wait_for)
/// return.
pub trait Output: Send + 'static {
    /// The value as JSON, if there is one; an error fails the run.
    fn into_result(self) -> Result<Option<Bytes>, JobError>;
}

impl Output for () {
    fn into_result(self) -> Result<Option<Bytes>, JobError> {
        Ok(None)
    }
}

impl Output for serde_json::Value {
    fn into_result(self) -> Result<Option<Bytes>, JobError> {
        Json(self).into_result()
    }
}

/// A handler's result, kept as JSON: `Ok(Json(value))`.
///
/// ```
/// use taskyard_core::{Json, JobError};
///
/// async fn resize() -> Result<Json<(u32, u32)>, JobError> {
///     Ok(Json((640, 480)))
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<T: serde::Serialize + Send + 'static> Output for Json<T> {
    fn into_result(self) -> Result<Option<Bytes>, JobError> {
        let json = serde_json::to_vec(&self.0)
            .map_err(|e| JobError::permanent(format!("the result does not encode as JSON: {e}")))?;
        if json.len() > crate::MAX_RESULT_BYTES {
            // The same value would come back from every retry.
            return Err(JobError::permanent(format!(
                "result of {} bytes is over the limit of {} bytes",
                json.len(),
                crate::MAX_RESULT_BYTES
            )));
        }
        Ok(Some(Bytes::from(json)))
    }
}

/// How a run of a handler (with the hooks around it) came out: its result, if it
/// returned one, or how it failed.
pub type RunResult = Result<Option<Bytes>, JobError>;

pub(crate) type HandlerFuture = Pin<Box<dyn Future<Output = RunResult> + Send>>;

/// A handler with its payload decoding erased, and the kind's retry policy.
#[derive(Clone)]
pub(crate) struct Handler {
    pub(crate) run: Arc<dyn Fn(JobContext, Bytes) -> HandlerFuture + Send + Sync>,
    /// The kind's policy; `None` for raw handlers, which take the worker's default.
    pub(crate) policy: Option<RetryPolicy>,
}

impl Handler {
    /// Wraps a typed handler: decodes the payload as `J`; a payload that does not decode
    /// is a permanent failure, since no retry will make it decode.
    pub(crate) fn typed<J, F, Fut, O>(f: F) -> Self
    where
        J: Job,
        F: Fn(J, JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, JobError>> + Send + 'static,
        O: Output,
    {
        let f = Arc::new(f);
        Handler {
            run: Arc::new(move |ctx, payload| {
                let f = f.clone();
                Box::pin(async move {
                    let job: J = serde_json::from_slice(&payload).map_err(|e| {
                        JobError::permanent(format!("payload does not decode as {}: {e}", J::KIND))
                    })?;
                    f(job, ctx).await?.into_result()
                })
            }),
            policy: Some(J::retry_policy()),
        }
    }

    pub(crate) fn raw<F, Fut, O>(f: F) -> Self
    where
        F: Fn(JobContext, Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, JobError>> + Send + 'static,
        O: Output,
    {
        let f = Arc::new(f);
        Handler {
            // The handler is called inside the run's future, as a typed one is: its code
            // (even the part before its first `.await`) runs in the run's task, where a
            // panic is caught as the run's failure.
            run: Arc::new(move |ctx, payload| {
                let f = f.clone();
                Box::pin(async move { f(ctx, payload).await?.into_result() })
            }),
            policy: None,
        }
    }
}
