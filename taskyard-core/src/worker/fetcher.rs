//! The fetcher: claims as many jobs as there are free slots, in one store call per queue,
//! and blocks in the store (no polling loop) while there is nothing to claim.
//!
//! A claim call that failed may still have claimed jobs (the connection was cut after the
//! store ran it): its token is kept and the next claim of that queue sends it again, and
//! the store answers such a replay with the jobs the token holds instead of claiming
//! more. So a lost answer costs neither an attempt nor a lease expiry.

use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;

use rand::Rng;
use tokio::sync::{mpsc, watch};

use super::{QueueOrder, Shared, executor};
use crate::QueueName;
use crate::{Lease, LeaseToken};

/// The longest a wait lasts before the fetcher tries a claim anyway: a safety net for a
/// lost wakeup, not a poll (an idle worker makes one claim call per this interval).
const MAX_WAIT: Duration = Duration::from_secs(5);

pub(crate) async fn run(
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    done: mpsc::UnboundedSender<executor::Done>,
) {
    let names = shared.queue_names();
    let mut failures = 0u32;
    // Claims whose answer never came, by queue: replayed with the same token.
    let mut unanswered: HashMap<QueueName, LeaseToken> = HashMap::new();
    loop {
        if *stop.borrow() {
            return;
        }
        let first = tokio::select! {
            // Stop wins a tie: a stopping worker claims nothing more.
            biased;
            _ = stop.changed() => return,
            p = shared.slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let mut permits = first;
        let extra = shared.slots.available_permits();
        if extra > 0
            && let Ok(more) = shared.slots.clone().try_acquire_many_owned(extra as u32)
        {
            permits.merge(more);
        }
        let want = permits.num_permits();

        let mut claimed = 0;
        let mut next_due: Option<Duration> = None;
        let mut failed = false;
        let mut extra: Vec<Lease> = Vec::new();
        // Replays first: their jobs may already be leased to this worker.
        let mut queues = order(&shared);
        queues.sort_by_key(|q| !unanswered.contains_key(q));
        for queue in queues {
            if claimed == want {
                break;
            }
            // A token per claim call, minted here: the worker's nonce is its owner name.
            let token = match unanswered.remove(&queue) {
                Some(token) => token,
                None => match LeaseToken::mint(&shared.nonce) {
                    Ok(token) => token,
                    Err(e) => {
                        tracing::warn!(queue = %queue, error = %e, "claim failed");
                        failed = true;
                        continue;
                    }
                },
            };
            let sent = std::time::Instant::now();
            let result = shared
                .store
                .claim(&queue, want - claimed, shared.lease, &token)
                .await;
            match result {
                Ok(claim) => {
                    next_due = match (next_due, claim.next_due) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    for job in claim.jobs {
                        match permits.split(1) {
                            Some(permit) => {
                                executor::start(&shared, job, permit, done.clone(), sent);
                                claimed += 1;
                            }
                            // Only a replay can answer with more jobs than were asked
                            // for this time: give them back uncharged.
                            None => extra.push(job.lease),
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(queue = %queue, error = %e, "claim failed");
                    unanswered.insert(queue, token);
                    failed = true;
                }
            }
        }
        if !extra.is_empty()
            && let Err(e) = shared.store.release(&extra).await
        {
            tracing::warn!(error = %e, jobs = extra.len(), "giving back replayed jobs failed; they return when their lease ends");
        }
        drop(permits);

        if failed {
            failures += 1;
            let pause = Duration::from_millis((50u64 << failures.min(6)).min(3000));
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => return,
            }
            continue;
        }
        failures = 0;
        if claimed == 0 {
            let timeout = next_due.unwrap_or(MAX_WAIT).min(MAX_WAIT);
            tokio::select! {
                r = shared.store.wait(&names, timeout) => {
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "wait failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                _ = stop.changed() => return,
            }
        }
    }
}

/// The queues in the order to try them for this claim.
fn order(shared: &Shared) -> Vec<QueueName> {
    match shared.order {
        QueueOrder::Strict => shared.queue_names(),
        QueueOrder::Weighted => {
            // Weighted draw without replacement: each queue's chance to come first is its
            // share of the total weight.
            let mut rest: Vec<(QueueName, u32)> = shared.queues.clone();
            let mut out = Vec::with_capacity(rest.len());
            let mut rng = rand::rng();
            while !rest.is_empty() {
                let total: u64 = rest.iter().map(|(_, w)| u64::from(*w)).sum();
                let mut pick = rng.random_range(0..total);
                let idx = rest
                    .iter()
                    .position(|(_, w)| {
                        let w = u64::from(*w);
                        if pick < w {
                            true
                        } else {
                            pick -= w;
                            false
                        }
                    })
                    .unwrap_or(0);
                out.push(rest.remove(idx).0);
            }
            out
        }
    }
}
