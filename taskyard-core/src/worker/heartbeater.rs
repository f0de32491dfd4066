//! The heartbeater: renews every lease this worker holds in one store call, every
//! lease/3, independently of the jobs' own code — a job may run for hours. It notes in
//! the book when each lease was last renewed; the watchdog gives up on leases no
//! heartbeat renewed for longer than the lease (a partition).
//!
//! Each heartbeat carries the progress handlers reported since the last one (so a
//! report costs no store call of its own), and its answer names the jobs of these claims
//! that were cancelled while running. A cancel wakes every worker waiting in
//! `Store::wait_cancel`; one holding jobs of that queue beats at once, so its handler
//! hears of the cancel within a round trip or two instead of at the next beat.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Shared;
use crate::Lease;

/// The least time between two heartbeats a cancel signal brought forward.
const EARLY_BEATS_APART: Duration = Duration::from_millis(5);

/// Runs until aborted: shutdown keeps it beating through the grace period. `signal` is
/// the listener's ([`listen`]): one for the worker's life, calling `wait_cancel` again
/// the moment it returns, so a cancel signalled while a beat is in flight is not missed
/// (it leaves a permit in `signal` for the next look).
pub(crate) async fn run(shared: Arc<Shared>, signal: Arc<tokio::sync::Notify>) {
    let every = shared.lease / 3;
    // The runtime's clock (not `std`'s), so a paused test clock paces the beats too.
    let mut next = tokio::time::Instant::now() + every;
    let mut last = tokio::time::Instant::now();
    loop {
        let woken = tokio::select! {
            _ = tokio::time::sleep_until(next) => false,
            _ = signal.notified() => true,
        };
        if woken && shared.book.is_empty() {
            // Nothing held here can have been cancelled.
            continue;
        }
        if woken {
            // A burst of cancels is answered by one beat every few milliseconds, not
            // one each.
            tokio::time::sleep_until(last + EARLY_BEATS_APART).await;
        }
        last = tokio::time::Instant::now();
        beat(&shared).await;
        next = tokio::time::Instant::now() + every;
    }
}

/// Waits for cancel signals for as long as the worker runs, and passes each on. A wait
/// that ends before its (long) timeout is a signal, or a rare spurious return; a store
/// that cannot be reached is asked again after a pause, and meanwhile the worker beats
/// on its schedule.
pub(crate) async fn listen(shared: Arc<Shared>, signal: Arc<tokio::sync::Notify>) {
    let queues = shared.queue_names();
    let timeout = shared.lease;
    loop {
        let started = tokio::time::Instant::now();
        match shared.store.wait_cancel(&queues, timeout).await {
            Ok(()) if started.elapsed() < timeout => {
                signal.notify_one();
                // A store that returns at once again and again costs a few wakes, not a
                // spinning loop.
                tokio::time::sleep(EARLY_BEATS_APART).await;
            }
            Ok(()) => {}
            Err(e) => {
                tracing::debug!(error = %e, "waiting for cancels failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// One heartbeat: every held lease, once per claim token.
async fn beat(shared: &Shared) {
    let (keys, leases) = shared.book.leases();
    if leases.is_empty() {
        return;
    }
    // One lease per claim call: each token is renewed once, for all its jobs.
    let mut tokens: Vec<Lease> = leases.clone();
    tokens.sort_unstable_by(|a, b| (&a.token, &a.queue).cmp(&(&b.token, &b.queue)));
    tokens.dedup_by(|a, b| a.token == b.token && a.queue == b.queue);
    let progress = shared.book.progress();
    let sent = Instant::now();
    // A call that hangs (a partition the connection has not noticed) is given up after a
    // lease: its answer could not keep anything alive by then.
    let answer = tokio::time::timeout(
        shared.lease,
        shared.store.heartbeat(&tokens, shared.lease, &progress),
    )
    .await;
    match answer {
        Ok(Ok(beat)) => {
            let mut renewed = Vec::with_capacity(keys.len());
            for (key, lease) in keys.iter().zip(&leases) {
                let at = tokens
                    .binary_search_by(|t| (&t.token, &t.queue).cmp(&(&lease.token, &lease.queue)));
                let ok = at
                    .ok()
                    .and_then(|i| beat.held.get(i).copied())
                    .unwrap_or(false);
                if ok {
                    renewed.push(*key);
                } else if shared.book.lost(*key) {
                    shared.counters.leases_lost.fetch_add(1, Ordering::Relaxed);
                }
            }
            shared.book.renewed(&renewed, sent);
            let news = shared.book.cancelled(&beat.cancelled);
            if news > 0 {
                tracing::info!(
                    jobs = news,
                    "running jobs cancelled: their handlers are told to stop"
                );
            }
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "heartbeat failed"),
        Err(_) => tracing::warn!(
            after = ?shared.lease,
            "heartbeat failed: no answer within the lease"
        ),
    }
}
