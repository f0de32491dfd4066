//! Maintenance: promotes due scheduled jobs and returns expired leases. It needs no
//! leader: the store's operation is idempotent, so every worker runs it on its queues.

use std::sync::Arc;

use rand::Rng;
use tokio::sync::watch;

use super::Shared;

pub(crate) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        for queue in shared.queue_names() {
            match shared.store.maintain(&queue).await {
                Ok(m) if m.expired > 0 => {
                    tracing::info!(queue = %queue, expired = m.expired, "returned expired leases")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(queue = %queue, error = %e, "maintenance failed"),
            }
        }
        // A little jitter keeps many workers from running it in lockstep.
        let every = shared.maintenance_every;
        let jitter = rand::rng().random_range(0..=every.as_millis() as u64 / 10);
        tokio::select! {
            _ = tokio::time::sleep(every + std::time::Duration::from_millis(jitter)) => {}
            _ = stop.changed() => if *stop.borrow() { return },
        }
    }
}
