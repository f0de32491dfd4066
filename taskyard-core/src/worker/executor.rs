//! Executor slots: one task per claimed job, holding one slot of the worker's concurrency.
//! A panic in a handler is caught and recorded as a failure; the worker lives on.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::book::Held;
use super::handler::Run;
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
    let handler = shared.handlers.get(&*job.kind);
    let policy = match job.backoff {
        Some(b) => RetryPolicy::default()
            .base(Duration::from_millis(b.base_ms))
            .cap(Duration::from_millis(b.cap_ms)),
        None => handler.and_then(|h| h.policy).unwrap_or_default(),
    };
    // The job's own timeout, else its kind's on this worker, else the worker's.
    let timeout = job
        .timeout
        .or_else(|| shared.timeouts.get(&*job.kind).copied())
        .unwrap_or(shared.default_timeout);
    let run = Arc::new(Run {
        lease: job.lease,
        kind: job.kind,
        attempt: job.attempt,
        max_attempts: job.max_attempts,
        enqueued_at_ms: job.enqueued_at_ms,
        stop: Stop::default(),
    });
    // The handler's future, made here and first polled in the run's task (no handler
    // code runs until then): the task then holds the future alone, not the handler and
    // the payload it is made from.
    let ctx = JobContext { run: run.clone() };
    let future = handler.map(|h| {
        if shared.hooks.is_empty() {
            (h.run)(ctx, job.payload)
        } else {
            Next {
                hooks: shared.hooks.clone(),
                at: 0,
                ctx,
                handler: h.clone(),
                payload: job.payload,
            }
            .run()
        }
    });
    let task_shared = shared.clone();
    let task_run = run.clone();

    let mut book = shared.book.lock();
    // Boxed: the task then holds a pointer, not the whole future, which spawning would
    // otherwise copy around (measured: ~8% less worker CPU per job on the bench).
    let task = tokio::spawn(Box::pin(async move {
        let run = task_run;
        let stop = &run.stop;
        let result = match future {
            Some(future) => AssertUnwindSafe(future)
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| Err(JobError::retry(panic_message(&panic))))
                .and_then(checked),
            None => Err(JobError::retry(format!(
                "no handler for kind {} on this worker",
                run.kind
            ))),
        };
        // A handler that gave up because the worker is shutting down has not failed:
        // its lease is given back and the attempt not charged, as for a run still going
        // when the grace period ends.
        if result.is_err() && stop.reason() == Some(StopReason::Shutdown) {
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
        let timed_out = result.is_err() && stop.reason() == Some(StopReason::Timeout);
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
        let outcome = outcome_of(result, run.attempt, &policy);
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
        let _ = done.send((key, run.lease.clone(), outcome));
    }));
    book.insert(
        key,
        Held::new(run, task.abort_handle(), timeout, policy, claimed_at),
    );
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
