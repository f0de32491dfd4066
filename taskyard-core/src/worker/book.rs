//! The lease book: every job this worker holds a lease on, from its claim until its
//! outcome is recorded or its lease given back. The executor writes a job in, the
//! heartbeater renews what is in it and marks leases lost, the watchdog times runs out
//! and gives up leases no heartbeat reached, shutdown gives back what is still running,
//! and the completer takes a job out once the store has its outcome — all through the
//! methods here, so the rules of the book live in one place.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::task::AbortHandle;

use super::handler::Run;
use super::stop::StopReason;
use crate::{Lease, RetryPolicy};

/// One held lease.
pub(crate) struct Held {
    /// The run: its lease, kind and attempt, and the stop signal that tells its handler
    /// to stop (shutdown, lease lost, timeout, cancel) and remembers why.
    pub(crate) run: Arc<Run>,
    pub(crate) abort: Option<AbortHandle>,
    /// The run's timeout, and the instant it passes.
    pub(crate) timeout: Duration,
    deadline: Instant,
    /// The retry policy, for the backoff of a run the watchdog times out.
    policy: RetryPolicy,
    /// The last time the store is known to have renewed the lease: when the claim, or
    /// the last heartbeat it answered "held", was sent. The lease lasts at least until
    /// this plus the lease length, in the store's time.
    renewed: Instant,
    /// The run was told it is past its timeout.
    told_timeout: bool,
    /// The handler returned, or the watchdog timed it out; its outcome is on its way to
    /// the store, and nothing else is sent for it.
    finished: bool,
    /// Shutdown gave the lease back; the handler's outcome, if any, is dropped.
    released: bool,
}

impl Held {
    /// A run just started, whose claim was sent at `claimed_at`.
    pub(crate) fn new(
        run: Arc<Run>,
        abort: AbortHandle,
        timeout: Duration,
        policy: RetryPolicy,
        claimed_at: Instant,
    ) -> Self {
        Held {
            run,
            abort: Some(abort),
            timeout,
            // From the claim, which the run follows at once: no clock read per job (the
            // bench's worker spent ~1% of its time reading the clock for this). The
            // timeout is at most 7 days (`MAX_TIMEOUT`), far from overflowing.
            deadline: claimed_at + timeout,
            policy,
            renewed: claimed_at,
            told_timeout: false,
            finished: false,
            released: false,
        }
    }

    pub(crate) fn lease(&self) -> &Lease {
        &self.run.lease
    }
}

/// A run the watchdog timed out past its grace: its outcome is to be sent, its task was
/// aborted.
pub(crate) struct TimedOut {
    pub(crate) key: u64,
    pub(crate) lease: Lease,
    pub(crate) kind: Arc<str>,
    pub(crate) timeout: Duration,
    pub(crate) retry_ms: u64,
    pub(crate) abort: Option<AbortHandle>,
}

/// What one look of the watchdog found.
#[derive(Default)]
pub(crate) struct Overdue {
    /// Running jobs whose leases no heartbeat renewed for longer than the lease, now
    /// told so (each once).
    pub(crate) lost: Vec<Lease>,
    /// Runs past their timeout and its grace, taken over by the watchdog.
    pub(crate) timed_out: Vec<TimedOut>,
}

/// Hashes the book's keys: a counter, so one multiplication spreads it well enough, where
/// the default (SipHash) cost ~1% of the bench worker's time over three lookups per job.
#[derive(Default, Clone, Copy)]
pub(crate) struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: the key's bits end up in the high ones, which the table's
        // control bytes read, and in the low ones, which pick its bucket.
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(32);
    }
}

type Keyed<V> = HashMap<u64, V, std::hash::BuildHasherDefault<KeyHasher>>;

/// The jobs a worker holds, by a key per claimed job (cheaper to hash than its lease).
#[derive(Default)]
pub(crate) struct Book {
    held: Mutex<Keyed<Held>>,
    next_key: AtomicU64,
}

impl Book {
    /// The book, locked. A panic never happens while it is locked (no user code runs
    /// under it), so a poisoned lock still holds consistent data.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Keyed<Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A key for a newly claimed job.
    pub(crate) fn next_key(&self) -> u64 {
        self.next_key.fetch_add(1, Ordering::Relaxed)
    }

    /// The handler of `key` returned: marks it finished, unless shutdown already gave its
    /// lease back or the watchdog timed it out. Returns whether its outcome is to be
    /// recorded.
    pub(crate) fn finish(&self, key: u64) -> bool {
        match self.lock().get_mut(&key) {
            Some(h) if !h.released && !h.finished => {
                h.finished = true;
                true
            }
            _ => false,
        }
    }

    /// Every held lease, with its key, for one heartbeat.
    pub(crate) fn leases(&self) -> (Vec<u64>, Vec<Lease>) {
        self.lock()
            .iter()
            .map(|(k, h)| (*k, h.lease().clone()))
            .unzip()
    }

    /// The progress reported by running handlers since the last heartbeat took it.
    pub(crate) fn progress(&self) -> Vec<(Lease, bytes::Bytes)> {
        self.lock()
            .values()
            .filter(|h| !h.finished && !h.released)
            .filter_map(|h| Some((h.lease().clone(), h.run.stop.take_progress()?)))
            .collect()
    }

    /// The store reports these jobs cancelled while they ran: their handlers are told
    /// (once each). Returns how many were news.
    pub(crate) fn cancelled(&self, jobs: &[(crate::QueueName, crate::JobId)]) -> usize {
        if jobs.is_empty() {
            return 0;
        }
        let book = self.lock();
        let mut news = 0;
        for h in book.values() {
            let hit = jobs
                .iter()
                .any(|(q, id)| *id == h.run.lease.id && *q == h.run.lease.queue);
            if hit && h.run.stop.reason().is_none() {
                h.run.stop.fire(StopReason::Cancelled);
                news += 1;
            }
        }
        news
    }

    /// The store refused to renew `key`'s lease: the job may run elsewhere now. Its
    /// handler is told (once), and so is the log. Returns whether this was news.
    pub(crate) fn lost(&self, key: u64) -> bool {
        let book = self.lock();
        if let Some(h) = book.get(&key)
            && h.run.stop.lose_lease()
        {
            let lease = h.lease();
            tracing::warn!(queue = %lease.queue, id = %lease.id, "lease lost: the job may run elsewhere");
            return true;
        }
        false
    }

    /// The store renewed these leases, with a heartbeat sent at `sent`.
    pub(crate) fn renewed(&self, keys: &[u64], sent: Instant) {
        let mut book = self.lock();
        for key in keys {
            if let Some(h) = book.get_mut(key) {
                h.renewed = h.renewed.max(sent);
            }
        }
    }

    /// One look by the watchdog at `now`: tells runs past their timeout to stop, takes
    /// over those still running `grace` after it (marked finished, their tasks aborted),
    /// and tells runs whose lease no heartbeat renewed for `lease` that it is lost.
    pub(crate) fn overdue(&self, now: Instant, lease: Duration, grace: Duration) -> Overdue {
        let mut found = Overdue::default();
        for (key, h) in self.lock().iter_mut() {
            if h.finished || h.released {
                continue;
            }
            if now.saturating_duration_since(h.renewed) >= lease && h.run.stop.lose_lease() {
                found.lost.push(h.lease().clone());
            }
            if now < h.deadline {
                continue;
            }
            if !h.told_timeout {
                h.told_timeout = true;
                h.run.stop.fire(StopReason::Timeout);
            }
            if now >= h.deadline + grace {
                h.finished = true;
                if let Some(abort) = &h.abort {
                    abort.abort();
                }
                found.timed_out.push(TimedOut {
                    key: *key,
                    lease: h.lease().clone(),
                    kind: h.run.kind.clone(),
                    timeout: h.timeout,
                    // Drawn only for a run that times out: most never do.
                    retry_ms: h.policy.backoff(h.run.attempt).as_millis() as u64,
                    abort: h.abort.clone(),
                });
            }
        }
        found
    }

    /// Whether the book holds no job: every outcome recorded, every lease given back.
    pub(crate) fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Tells every running handler to stop, for `reason`.
    pub(crate) fn stop_all(&self, reason: StopReason) {
        for h in self.lock().values() {
            if !h.finished {
                h.run.stop.fire(reason);
            }
        }
    }

    /// Aborts every job still running and returns their leases, to be given back.
    pub(crate) fn release_unfinished(&self) -> Vec<Lease> {
        let mut leases = Vec::new();
        self.lock().retain(|_, h| {
            if h.finished || h.released {
                return true;
            }
            h.released = true;
            if let Some(abort) = h.abort.take() {
                abort.abort();
            }
            leases.push(h.lease().clone());
            false
        });
        leases
    }

    /// Gives back one job whose handler stopped for shutdown: takes it out of the book
    /// and returns its lease (none if shutdown already gave it back).
    pub(crate) fn release_unfinished_one(&self, key: u64) -> Vec<Lease> {
        let mut book = self.lock();
        match book.get(&key) {
            Some(h) if !h.finished && !h.released => book
                .remove(&key)
                .map(|h| vec![h.lease().clone()])
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// Takes recorded jobs out of the book.
    pub(crate) fn remove(&self, keys: &[u64]) {
        let mut book = self.lock();
        for key in keys {
            book.remove(key);
        }
    }

    /// Takes recorded jobs out of the book and returns them, for the hooks.
    pub(crate) fn take(&self, keys: &[u64]) -> Vec<Option<Held>> {
        let mut book = self.lock();
        keys.iter().map(|key| book.remove(key)).collect()
    }

    /// Why the run of `key` was asked to stop, if it was.
    pub(crate) fn reason(&self, key: u64) -> Option<StopReason> {
        self.lock().get(&key).and_then(|h| h.run.stop.reason())
    }
}
