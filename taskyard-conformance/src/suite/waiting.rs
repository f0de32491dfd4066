//! Waiting and wakeups: an idle waiter, and an idle worker, wake when a job arrives rather
//! than at a poll.

use std::time::{Duration, Instant};

use taskyard_core::JobContext;

use super::common::{Ping, SOON, enqueue, new_job, worker};
use crate::{Subject, unique_queue};

/// An idle waiter wakes when a job is enqueued, long before its timeout.
pub async fn wait_returns_when_a_job_arrives(s: Subject) {
    let q = unique_queue();
    let store = s.store.clone();
    let qs = vec![q.clone()];
    let waiter = tokio::spawn(async move {
        let start = Instant::now();
        store.wait(&qs, Duration::from_secs(20)).await.unwrap();
        start.elapsed()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    enqueue(&s.store, &q, vec![new_job(1)]).await;
    let waited = tokio::time::timeout(SOON, waiter)
        .await
        .expect("wait returned")
        .unwrap();
    assert!(
        waited < Duration::from_secs(5),
        "woken by the enqueue, not the timeout: {waited:?}"
    );
}

/// An idle worker blocks in the store and starts a new job at once, not at its next poll.
pub async fn idle_worker_picks_up_without_polling(s: Subject) {
    let q = unique_queue();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let w = worker(&s, &q)
        .handle(move |_job: Ping, _ctx: JobContext| {
            let _ = tx.send(Instant::now());
            std::future::ready(Ok(()))
        })
        .build()
        .unwrap();
    let running = w.spawn();
    // Let the worker go idle (its claim finds nothing, then it blocks).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut pickups = Vec::new();
    for n in 0..15 {
        let sent = Instant::now();
        enqueue(&s.store, &q, vec![new_job(n)]).await;
        let started = tokio::time::timeout(SOON, rx.recv())
            .await
            .unwrap()
            .unwrap();
        pickups.push(started - sent);
        // Pacing: each job finds the worker idle again, at a different point of any
        // cycle a poll would have (a fixed pause could fall in step with one).
        tokio::time::sleep(Duration::from_millis(40 + (37 * n) % 100)).await;
    }
    running
        .shutdown()
        .await
        .expect("the worker shut down cleanly");
    // A wakeup answers in about a millisecond; a poll every P ms spreads pickups over
    // [0, P], so a median under 10 ms of 15 rules out a poll of 60 ms or slower (a 60 ms
    // poll would pass with a chance of about 1 in 250).
    pickups.sort();
    assert!(
        pickups[7] < Duration::from_millis(10),
        "pickups {pickups:?}"
    );
    assert!(
        pickups[14] < Duration::from_millis(250),
        "pickups {pickups:?}"
    );
}
