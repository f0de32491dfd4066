//! The heartbeater: renews every lease this worker holds in one store call, every
//! lease/3, independently of the jobs' own code — a job may run for hours. It notes in
//! the book when each lease was last renewed; the watchdog gives up on leases no
//! heartbeat renewed for longer than the lease (a partition).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::Shared;
use crate::Lease;

/// Runs until aborted: shutdown keeps it beating through the grace period.
pub(crate) async fn run(shared: Arc<Shared>) {
    let every = shared.lease / 3;
    loop {
        tokio::time::sleep(every).await;
        let (keys, leases) = shared.book.leases();
        if leases.is_empty() {
            continue;
        }
        // One lease per claim call: each token is renewed once, for all its jobs.
        let mut tokens: Vec<Lease> = leases.clone();
        tokens.sort_unstable_by(|a, b| (&a.token, &a.queue).cmp(&(&b.token, &b.queue)));
        tokens.dedup_by(|a, b| a.token == b.token && a.queue == b.queue);
        let sent = Instant::now();
        // A call that hangs (a partition the connection has not noticed) is given up
        // after a lease: its answer could not keep anything alive by then.
        let answer =
            tokio::time::timeout(shared.lease, shared.store.heartbeat(&tokens, shared.lease)).await;
        match answer {
            Ok(Ok(held)) => {
                let mut renewed = Vec::with_capacity(keys.len());
                for (key, lease) in keys.iter().zip(&leases) {
                    let at = tokens.binary_search_by(|t| {
                        (&t.token, &t.queue).cmp(&(&lease.token, &lease.queue))
                    });
                    let ok = at.ok().and_then(|i| held.get(i).copied()).unwrap_or(false);
                    if ok {
                        renewed.push(*key);
                    } else if shared.book.lost(*key) {
                        shared.counters.leases_lost.fetch_add(1, Ordering::Relaxed);
                    }
                }
                shared.book.renewed(&renewed, sent);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "heartbeat failed"),
            Err(_) => tracing::warn!(
                after = ?shared.lease,
                "heartbeat failed: no answer within the lease"
            ),
        }
    }
}
