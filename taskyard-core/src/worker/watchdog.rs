//! The watchdog: looks at the lease book every tick and acts on what overran.
//!
//! - A run past its timeout is told to stop (`StopReason::Timeout`); one still running a
//!   grace period later is taken over: its outcome is sent as a retryable "timed out"
//!   failure and its task aborted, which drops the handler at its next `.await`.
//! - A handler that does not return even then is blocking its thread (synchronous code in
//!   an async handler): no abort can reach it. It keeps its slot (the slot's permit lives
//!   in its task, so no job is claimed into it) and is reported as an error, again and
//!   again, until it returns. Its job was failed as timed out, so its lease is not kept:
//!   the job is retried after its backoff, here or elsewhere.
//! - A lease no heartbeat renewed for longer than the lease (a partition from the store)
//!   is treated as lost: its handler is told (`StopReason::LeaseLost`) and a warning says
//!   how many.
//!
//! Why a separate task rather than a timer in each job's task: a handler that blocks its
//! thread also blocks anything else its task would run, and one look at the whole book per
//! tick costs less than a timer per job on a worker running thousands of jobs a second.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::Shared;
use super::executor::{Done, timed_out_message};
use crate::{Lease, Outcome};

/// A handler that did not return after its task was aborted.
struct Blocked {
    lease: Lease,
    kind: Arc<str>,
    abort: AbortHandle,
    aborted_at: Instant,
    /// When to report it (again); `reported` once it has been.
    next_report: Instant,
    reported: bool,
}

/// How often the watchdog looks: often enough that timeouts and lost leases are acted on
/// within a small fraction of the grace and the lease.
pub(crate) fn tick(shared: &Shared) -> Duration {
    (shared.timeout_grace / 4)
        .min(shared.lease / 10)
        .clamp(Duration::from_millis(10), Duration::from_millis(100))
}

/// How often a blocked handler is reported again: six grace periods (30 s by default).
pub(crate) fn report_every(shared: &Shared) -> Duration {
    (shared.timeout_grace * 6).max(Duration::from_secs(1))
}

/// Runs until aborted (at the end of shutdown).
pub(crate) async fn run(shared: Arc<Shared>, done: mpsc::UnboundedSender<Done>) {
    let tick = tick(&shared);
    let mut blocked: Vec<Blocked> = Vec::new();
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let now = Instant::now();
        let found = shared.book.overdue(now, shared.lease, shared.timeout_grace);
        if !found.lost.is_empty() {
            shared
                .counters
                .leases_lost
                .fetch_add(found.lost.len() as u64, Ordering::Relaxed);
            let queues: BTreeSet<&str> = found.lost.iter().map(|l| l.queue.as_str()).collect();
            let queues: Vec<&str> = queues.into_iter().collect();
            tracing::warn!(
                jobs = found.lost.len(),
                queues = %queues.join(","),
                lease = ?shared.lease,
                "no heartbeat reached the store for longer than the lease: treating the \
                 leases of {} running jobs as lost (their handlers are told to stop; the jobs \
                 may run elsewhere)",
                found.lost.len()
            );
        }
        for t in found.timed_out {
            shared.counters.timed_out.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                queue = %t.lease.queue,
                id = %t.lease.id,
                kind = %t.kind,
                timeout = ?t.timeout,
                "job timed out and did not stop within the grace period: aborted, to be retried"
            );
            let outcome = Outcome::Retry {
                delay_ms: t.retry_ms,
                error: timed_out_message(t.timeout),
            };
            let _ = done.send((t.key, t.lease.clone(), outcome));
            if let Some(abort) = t.abort {
                blocked.push(Blocked {
                    lease: t.lease,
                    kind: t.kind,
                    abort,
                    aborted_at: now,
                    // An abort reaches a task at its next `.await`, at once for one
                    // waiting there: one still running a grace later is stuck in its
                    // own code.
                    next_report: now + shared.timeout_grace,
                    reported: false,
                });
            }
        }
        blocked.retain_mut(|b| {
            if b.abort.is_finished() {
                if b.reported {
                    shared.counters.blocked.fetch_sub(1, Ordering::Relaxed);
                    tracing::warn!(
                        queue = %b.lease.queue,
                        id = %b.lease.id,
                        kind = %b.kind,
                        "the handler that blocked its thread returned after {:?}; its slot is \
                         free again",
                        now - b.aborted_at
                    );
                }
                return false;
            }
            if now >= b.next_report {
                if !b.reported {
                    b.reported = true;
                    shared.counters.blocked.fetch_add(1, Ordering::Relaxed);
                }
                b.next_report = now + report_every(&shared);
                tracing::error!(
                    queue = %b.lease.queue,
                    id = %b.lease.id,
                    kind = %b.kind,
                    "the handler of job {} ({}) is blocking its thread: it timed out and was \
                     aborted {:?} ago but has not returned; it keeps its slot until it does. \
                     Use async I/O or tokio::task::spawn_blocking for blocking work",
                    b.lease.id,
                    b.kind,
                    now - b.aborted_at
                );
            }
            true
        });
    }
}
