//! Executor slots: one task per claimed job, holding one slot of the worker's concurrency.
//! A panic in a handler is caught and recorded as a failure; the worker lives on.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::book::{Held, Run};
use super::hooks::Next;
use super::stop::{Stop, StopReason};
use super::{Failure, JobContext, JobError, RunResult, Shared};
use crate::{ClaimedJob, Lease, Outcome, RetryPolicy};

/// A finished run on its way to the completer: its key in `running`, lease and outcome.
pub(crate) type Done = (u64, Lease, Outcome);

/// Starts a claimed job in its own task. The held lease is registered before the task can
/// finish, so the completer always finds it. `claimed_at` is when the claim was sent: the
/// lease lasts at least the lease length from then.
pub(crate) fn start(
    shared: &Arc<Shared>,
    job: ClaimedJob,
    permit: OwnedSemaphorePermit,
    done: mpsc::UnboundedSender<Done>,
    claimed_at: Instant,
) {
    let key = shared.book.next_key();
    let stop = Stop::new();
    let ctx = JobContext {
        id: job.lease.id.clone(),
        queue: job.lease.queue.clone(),
        kind: job.kind.clone(),
        attempt: job.attempt,
        max_attempts: job.max_attempts,
        enqueued_at_ms: job.enqueued_at_ms,
        stop: stop.clone(),
    };
    let handler = shared.handlers.get(&*job.kind).cloned();
    let lease = job.lease.clone();
    let task_shared = shared.clone();
    let policy = match job.backoff {
        Some(b) => RetryPolicy::default()
            .base(Duration::from_millis(b.base_ms))
            .cap(Duration::from_millis(b.cap_ms)),
        None => handler.as_ref().and_then(|h| h.policy).unwrap_or_default(),
    };
    // The job's own timeout, else its kind's on this worker, else the worker's.
    let timeout = job
        .timeout
        .or_else(|| shared.timeouts.get(&*job.kind).copied())
        .unwrap_or(shared.default_timeout);
    let run = Run {
        kind: job.kind.clone(),
        timeout,
        policy,
        attempt: job.attempt,
        max_attempts: job.max_attempts,
        claimed_at,
    };

    let task_stop = stop.clone();
    let mut book = shared.book.lock();
    // Boxed: the task then holds a pointer, not the whole future, which spawning would
    // otherwise copy around (measured: ~8% less worker CPU per job on the bench).
    let task = tokio::spawn(Box::pin(async move {
        let result = match handler {
            Some(h) => {
                let run = if task_shared.hooks.is_empty() {
                    (h.run)(ctx, job.payload.clone())
                } else {
                    Next {
                        hooks: task_shared.hooks.clone(),
                        at: 0,
                        ctx,
                        handler: h,
                        payload: job.payload.clone(),
                    }
                    .run()
                };
                AssertUnwindSafe(run)
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|panic| Err(JobError::retry(panic_message(&panic))))
                    .and_then(checked)
            }
            None => Err(JobError::retry(format!(
                "no handler for kind {} on this worker",
                job.kind
            ))),
        };
        // A handler that gave up because the worker is shutting down has not failed:
        // its lease is given back and the attempt not charged, as for a run still going
        // when the grace period ends.
        if result.is_err() && task_stop.reason() == Some(StopReason::Shutdown) {
            let leases = task_shared.book.release_unfinished_one(key);
            // The slot is held until the lease is given back: shutdown waits on the
            // slots, and returns once every job is recorded or given back.
            // Boxed: a rare path, whose state would otherwise make every run's future
            // larger (it is written in full when the run is spawned).
            Box::pin(super::release(&task_shared, &leases)).await;
            drop(permit);
            return;
        }
        // A handler that gave up because it was told it ran past its timeout failed as
        // timed out, whatever it said: the failure is retryable (a permanent one too,
        // since the timeout, not the job, ended it).
        let timed_out = result.is_err() && task_stop.reason() == Some(StopReason::Timeout);
        let result = match result {
            Err(e) if timed_out => Err(JobError {
                how: match e.how {
                    Failure::Permanent => Failure::Retry,
                    how => how,
                },
                message: format!("{}: {}", timed_out_message(timeout), e.message),
            }),
            other => other,
        };
        let outcome = outcome_of(result, job.attempt, &policy);
        // Marked finished before the slot is freed: shutdown waits on the slots, and
        // must not release a job whose outcome is already known. Not marked if the
        // watchdog already timed it out and sent its outcome.
        if !task_shared.book.finish(key) {
            return;
        }
        if timed_out {
            task_shared
                .counters
                .timed_out
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        drop(permit);
        let _ = done.send((key, job.lease, outcome));
    }));
    book.insert(key, Held::new(lease, stop, task.abort_handle(), run));
}

/// A result as a hook may have replaced it: held to the same limit as a handler's.
fn checked(result: Option<bytes::Bytes>) -> RunResult {
    match result {
        Some(json) if json.len() > crate::MAX_RESULT_BYTES => Err(JobError::permanent(format!(
            "result of {} bytes is over the limit of {} bytes",
            json.len(),
            crate::MAX_RESULT_BYTES
        ))),
        other => Ok(other),
    }
}

/// The error a timed-out run leaves in its job's history.
pub(crate) fn timed_out_message(timeout: Duration) -> String {
    format!("timed out after {timeout:?}")
}

fn outcome_of(result: RunResult, attempt: u32, policy: &RetryPolicy) -> Outcome {
    let err = match result {
        Ok(None) => return Outcome::Completed,
        Ok(Some(result)) => return Outcome::CompletedWith { result },
        Err(err) => err,
    };
    let error = err.message;
    match err.how {
        Failure::Retry => Outcome::Retry {
            delay_ms: policy.backoff(attempt).as_millis() as u64,
            error,
        },
        Failure::RetryAfter(d) => Outcome::Retry {
            delay_ms: d.as_millis() as u64,
            error,
        },
        Failure::RetryAt(at) => Outcome::RetryAt {
            at_ms: crate::job::system_time_ms(at),
            error,
        },
        Failure::Permanent => Outcome::Dead { error },
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".into());
    format!("handler panicked: {msg}")
}
