//! Lifecycle hooks: code an application runs around every run of a worker (before and
//! after the handler, in a span, with a timer) and on each job's end as the store
//! recorded it (completed, retrying, dead, cancelled) — to alert on dead letters, count
//! its own metrics, or set up per-job context.
//!
//! Hooks nest like tower layers: the first registered is the outermost. `around` gets the
//! rest of the chain as [`Next`] and decides when (and whether) to run it; `ended` is
//! told after the store accepted an outcome, off the worker's hot path.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;

use super::handler::{Handler, JobContext, RunResult};
use crate::{JobId, QueueName};

/// Code run around every run of a worker, and on every recorded end. Both methods have
/// defaults that do nothing, so a hook implements what it needs.
///
/// ```
/// use taskyard_core::{Ended, Hook, JobContext, Next, RunResult, async_trait};
///
/// struct Timing;
///
/// #[async_trait]
/// impl Hook for Timing {
///     async fn around(&self, ctx: &JobContext, next: Next) -> RunResult {
///         let started = std::time::Instant::now();
///         let result = next.run().await;
///         println!("{} {} took {:?}", ctx.kind(), ctx.id(), started.elapsed());
///         result
///     }
///
///     async fn ended(&self, end: &Ended) {
///         if end.is_dead() {
///             eprintln!("ALERT: job {} ({}) is dead", end.id, end.kind);
///         }
///     }
/// }
/// ```
#[async_trait]
pub trait Hook: Send + Sync + 'static {
    /// Wraps one run: code before `next.run().await` runs before the handler (and the
    /// hooks inside this one), code after it sees how the run came out and may change
    /// it. A panic here is caught as the handler's own would be.
    async fn around(&self, ctx: &JobContext, next: Next) -> RunResult {
        let _ = ctx;
        next.run().await
    }

    /// Told once the store has recorded how a run ended (an outcome it refused, for a
    /// job whose lease was lost or which was cancelled meanwhile, is
    /// [`How::Refused`]). Runs in a task of its own, one end after another in the order
    /// the store recorded them (a job's retry before its death), so a slow hook delays no
    /// other job; a job whose worker died before recording its outcome is not reported
    /// here.
    async fn ended(&self, end: &Ended) {
        let _ = end;
    }
}

/// How a run ended, as the store recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum How {
    /// The job completed.
    Completed,
    /// The run failed and the job will run again (after its backoff).
    Retrying {
        /// What the handler said.
        error: String,
    },
    /// The run failed and the job went dead: a permanent failure, or its last attempt.
    Dead {
        /// What the handler said.
        error: String,
    },
    /// The store refused the outcome: the job was cancelled while it ran, or its lease
    /// was lost and it may run elsewhere.
    Refused,
}

/// One run's end, for [`Hook::ended`].
#[derive(Debug, Clone)]
pub struct Ended {
    /// The job's queue.
    pub queue: QueueName,
    /// The job's id.
    pub id: JobId,
    /// The job's kind.
    pub kind: Arc<str>,
    /// The attempt that ended (1-based).
    pub attempt: u32,
    /// Attempts in all.
    pub max_attempts: u32,
    /// Whether the run was told the job was cancelled (its outcome is then refused).
    pub cancelled: bool,
    /// How it ended.
    pub how: How,
}

impl Ended {
    /// Whether the job went dead.
    pub fn is_dead(&self) -> bool {
        matches!(self.how, How::Dead { .. })
    }
}

/// The rest of a run's chain: the hooks inside the current one, then the handler.
pub struct Next {
    pub(crate) hooks: Arc<[Arc<dyn Hook>]>,
    pub(crate) at: usize,
    pub(crate) ctx: JobContext,
    pub(crate) handler: Handler,
    pub(crate) payload: Bytes,
}

impl Next {
    /// Runs the rest of the chain and returns how the run came out.
    pub fn run(self) -> BoxFuture<'static, RunResult> {
        Box::pin(async move {
            match self.hooks.get(self.at).cloned() {
                Some(hook) => {
                    let ctx = self.ctx.clone();
                    let next = Next {
                        at: self.at + 1,
                        ..self
                    };
                    hook.around(&ctx, next).await
                }
                None => (self.handler.run)(self.ctx, self.payload).await,
            }
        })
    }
}
