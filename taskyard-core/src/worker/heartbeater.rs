//! The heartbeater: renews every lease this worker holds in one store call, every
//! lease/3, independently of the jobs' own code — a job may run for hours.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Shared;

/// Runs until aborted: shutdown keeps it beating through the grace period.
pub(crate) async fn run(shared: Arc<Shared>) {
    let every = shared.lease / 3;
    loop {
        tokio::time::sleep(every).await;
        let (keys, leases): (Vec<u64>, Vec<_>) = shared
            .held()
            .iter()
            .map(|(k, h)| (*k, h.lease.clone()))
            .unzip();
        if leases.is_empty() {
            continue;
        }
        match shared.store.heartbeat(&leases, shared.lease).await {
            Ok(held) => {
                let map = shared.held();
                for ((key, lease), ok) in keys.iter().zip(&leases).zip(held) {
                    if !ok
                        && let Some(h) = map.get(key)
                        && !h.lease_lost.swap(true, Ordering::Relaxed)
                    {
                        {
                            tracing::warn!(queue = %lease.queue, id = %lease.id, "lease lost: the job may run elsewhere");
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}
