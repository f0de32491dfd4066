//! Periodic jobs: every worker fires the due schedules of its queues. No leader: the
//! store lets one worker through per tick (see the `schedule` module), so this runs on
//! every worker and a worker that dies takes no schedule with it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Shared;
use crate::schedule::{self, Schedule};
use crate::{Client, Result};

/// Declares the schedules the worker was built with, before it starts: a definition
/// the store refuses (another of the same version) stops the worker from starting.
pub(crate) async fn declare(shared: &Shared, schedules: &[Schedule]) -> Result<()> {
    let client = Client::new(shared.store.clone());
    for s in schedules {
        let declared = client.schedule(s).await?;
        tracing::info!(schedule = s.name(), queue = %s.queue(), ?declared, "schedule declared");
    }
    Ok(())
}

/// Fires due schedules until stopped, sleeping until the earliest next tick — at most a
/// maintenance interval, so a schedule another process declares or changes is seen
/// within one.
pub(crate) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let mut wait = shared.maintenance_every;
        for queue in shared.queue_names() {
            match schedule::fire_due(&shared.store, &queue).await {
                Ok((now, Some(next))) => {
                    // At least 1 ms: the store's clock may run a little behind ours.
                    let until = Duration::from_millis(next.saturating_sub(now).max(1));
                    wait = wait.min(until);
                }
                Ok((_, None)) => {}
                Err(e) => tracing::warn!(queue = %queue, error = %e, "firing schedules failed"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => if *stop.borrow() { return },
        }
    }
}
