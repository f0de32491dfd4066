//! The heartbeater: renews every lease this worker holds in one store call, every
//! lease/3, independently of the jobs' own code — a job may run for hours.

use std::sync::Arc;

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
        match shared.store.heartbeat(&tokens, shared.lease).await {
            Ok(held) => {
                for (key, lease) in keys.iter().zip(&leases) {
                    let at = tokens.binary_search_by(|t| {
                        (&t.token, &t.queue).cmp(&(&lease.token, &lease.queue))
                    });
                    let ok = at.ok().and_then(|i| held.get(i).copied()).unwrap_or(false);
                    if !ok {
                        shared.book.lost(*key);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}
