//! The lease book: every job this worker holds a lease on, from its claim until its
//! outcome is recorded or its lease given back. The executor writes a job in, the
//! heartbeater renews what is in it and marks leases lost, shutdown gives back what is
//! still running, and the completer takes a job out once the store has its outcome — all
//! through the methods here, so the rules of the book live in one place.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::task::AbortHandle;

use super::stop::{Stop, StopReason};
use crate::Lease;

/// One held lease.
pub(crate) struct Held {
    pub(crate) lease: Lease,
    /// Fires the handler's stop signal (shutdown, lease lost) and remembers why.
    pub(crate) stop: Arc<Stop>,
    pub(crate) abort: Option<AbortHandle>,
    /// The handler returned; its outcome is on its way to the store.
    finished: bool,
    /// Shutdown gave the lease back; the handler's outcome, if any, is dropped.
    released: bool,
}

impl Held {
    pub(crate) fn new(lease: Lease, stop: Arc<Stop>, abort: AbortHandle) -> Self {
        Held {
            lease,
            stop,
            abort: Some(abort),
            finished: false,
            released: false,
        }
    }
}

/// The jobs a worker holds, by a key per claimed job (cheaper to hash than its lease).
#[derive(Default)]
pub(crate) struct Book {
    held: Mutex<HashMap<u64, Held>>,
    next_key: AtomicU64,
}

impl Book {
    /// The book, locked. A panic never happens while it is locked (no user code runs
    /// under it), so a poisoned lock still holds consistent data.
    pub(crate) fn lock(&self) -> MutexGuard<'_, HashMap<u64, Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A key for a newly claimed job.
    pub(crate) fn next_key(&self) -> u64 {
        self.next_key.fetch_add(1, Ordering::Relaxed)
    }

    /// The handler of `key` returned: marks it finished, unless shutdown already gave its
    /// lease back. Returns whether its outcome is to be recorded.
    pub(crate) fn finish(&self, key: u64) -> bool {
        match self.lock().get_mut(&key) {
            Some(h) if !h.released => {
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
            .map(|(k, h)| (*k, h.lease.clone()))
            .unzip()
    }

    /// The store refused to renew `key`'s lease: the job may run elsewhere now. Its
    /// handler is told (once), and so is the log.
    pub(crate) fn lost(&self, key: u64) {
        let book = self.lock();
        if let Some(h) = book.get(&key)
            && h.stop.lose_lease()
        {
            let lease = &h.lease;
            tracing::warn!(queue = %lease.queue, id = %lease.id, "lease lost: the job may run elsewhere");
        }
    }

    /// Tells every running handler to stop, for `reason`.
    pub(crate) fn stop_all(&self, reason: StopReason) {
        for h in self.lock().values() {
            if !h.finished {
                h.stop.fire(reason);
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
            leases.push(h.lease.clone());
            false
        });
        leases
    }

    /// Gives back one job whose handler stopped for shutdown: takes it out of the book
    /// and returns its lease (none if shutdown already gave it back).
    pub(crate) fn release_unfinished_one(&self, key: u64) -> Vec<Lease> {
        let mut book = self.lock();
        match book.get(&key) {
            Some(h) if !h.finished && !h.released => {
                book.remove(&key).map(|h| vec![h.lease]).unwrap_or_default()
            }
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
}
