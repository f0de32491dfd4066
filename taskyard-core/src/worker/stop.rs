//! Why a run stops early — once, with the first reason kept — and the signal its handler
//! can wait on.
//!
//! A run can be asked to stop before its handler returns for one of a few reasons, each
//! with its own consequence for the job (docs/semantics.md, "Stopping a run early"):
//! shutdown (the lease is given back when the grace period ends; the attempt is not
//! charged), lease lost (the store refuses the outcome; the job runs elsewhere), timeout
//! (the run fails as "timed out" and is retried), cancel (the job already ended
//! `cancelled` in the store; the outcome is refused).
//!
//! The same signal carries the run's latest progress from the handler to the heartbeater;
//! it lives in the run's shared [`Run`](super::handler::Run), so a run costs one
//! allocation for both.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Why a run is asked to stop early. See [`JobContext::stopped`](crate::JobContext::stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StopReason {
    /// The worker is shutting down. The handler has until the grace period ends to
    /// return; a run still going then is given back to the queue (its attempt not
    /// charged) and runs again, here or on another worker.
    Shutdown,
    /// The store refused this run's heartbeat, or no heartbeat reached it for longer
    /// than the lease (a partition): the lease expired and the job may already run
    /// elsewhere. This run's outcome will likely be refused, so it may as well stop.
    LeaseLost,
    /// The run took longer than its timeout (the job's own, else its kind's on this
    /// worker). It fails as "timed out" and is retried like any failure; a handler still
    /// running one grace period later is aborted at its next `.await`.
    Timeout,
    /// The job was cancelled ([`Client::cancel`](crate::Client::cancel)): it has ended
    /// `cancelled` in the store and will never run again; its outcome will be refused,
    /// whatever the handler returns, so it should stop.
    Cancelled,
}

/// The stop signal of one run. Made for every job, so it allocates nothing until a
/// handler waits: a `Notify` to wake waiters, and a `CancellationToken` only for a handler
/// that asks for one.
#[derive(Debug, Default)]
pub(crate) struct Stop {
    reason: OnceLock<StopReason>,
    notify: Notify,
    token: OnceLock<CancellationToken>,
    lease_lost: AtomicBool,
    /// The latest progress the handler reported, until a heartbeat takes it.
    progress: std::sync::Mutex<Option<bytes::Bytes>>,
}

impl Stop {
    /// Asks the run to stop. The first reason given is the one kept.
    pub(crate) fn fire(&self, reason: StopReason) {
        let _ = self.reason.set(reason);
        self.notify.notify_waiters();
        if let Some(token) = self.token.get() {
            token.cancel();
        }
    }

    /// Records that the lease was lost, and asks the run to stop. Returns whether this
    /// is news.
    pub(crate) fn lose_lease(&self) -> bool {
        let first = !self.lease_lost.swap(true, Ordering::Relaxed);
        if first {
            self.fire(StopReason::LeaseLost);
        }
        first
    }

    pub(crate) fn lease_lost(&self) -> bool {
        self.lease_lost.load(Ordering::Relaxed)
    }

    pub(crate) fn reason(&self) -> Option<StopReason> {
        self.reason.get().copied()
    }

    pub(crate) async fn stopped(&self) -> StopReason {
        loop {
            // Registered before the check: a `fire` between the two still wakes it.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(reason) = self.reason() {
                return reason;
            }
            notified.await;
        }
    }

    /// Keeps `value` as the run's latest progress, replacing any a heartbeat has not yet
    /// taken.
    pub(crate) fn set_progress(&self, value: bytes::Bytes) {
        *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
    }

    /// The progress reported since the last call, if any.
    pub(crate) fn take_progress(&self) -> Option<bytes::Bytes> {
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    pub(crate) fn token(&self) -> CancellationToken {
        let token = self.token.get_or_init(CancellationToken::new);
        // Made after a `fire`: cancel it here (a `fire` after `get_or_init` cancels it
        // there).
        if self.reason().is_some() {
            token.cancel();
        }
        token.child_token()
    }
}
