//! The heartbeater: renews every lease this worker holds in one store call, every
//! lease/3, independently of the jobs' own code — a job may run for hours.

use std::sync::Arc;

use super::Shared;

/// Runs until aborted: shutdown keeps it beating through the grace period.
pub(crate) async fn run(shared: Arc<Shared>) {
    let every = shared.lease / 3;
    loop {
        tokio::time::sleep(every).await;
        let (keys, leases) = shared.book.leases();
        if leases.is_empty() {
            continue;
        }
        match shared.store.heartbeat(&leases, shared.lease).await {
            Ok(held) => {
                for (key, ok) in keys.iter().zip(held) {
                    if !ok {
                        shared.book.lost(*key);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}
