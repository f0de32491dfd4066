//! `--scenario poison`: an always-failing job among healthy ones.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use taskyard::{JobState, RetryPolicy, Worker};

use super::Outcome;
use super::context::{Ctx, ms};

/// One always-failing job among healthy ones: they all complete; it reaches dead after
/// its attempts, each retry within the policy's backoff.
pub(super) async fn run(c: &Ctx) -> Outcome {
    let healthy = c.size.pick(10_000, 2_000);
    let policy = RetryPolicy::default()
        .max_attempts(5)
        .base(Duration::from_millis(200))
        .cap(Duration::from_secs(5));
    let poison = c
        .enqueue(1, "flaky", r#"{"fail":1000000}"#, &c.opts().retry(policy))
        .await?
        .remove(0);
    c.enqueue(healthy, "noop", "{}", &c.opts()).await?;
    let worker = crate::bench::worker::test_handlers(
        Worker::builder(c.store.shared())
            .queue(c.queue.as_str())
            .concurrency(50),
        None,
    )
    .build()?;
    let counters = worker.counters();
    let start = Instant::now();
    let running = worker.spawn();
    let healthy_done = Arc::new(AtomicU64::new(0));
    c.until(
        "the healthy jobs to complete and the poison to die",
        Duration::from_secs(60),
        async || {
            if counters.completed() >= healthy as u64 && healthy_done.load(Ordering::Relaxed) == 0 {
                healthy_done.store(ms(start.elapsed()).max(1), Ordering::Relaxed);
            }
            Ok(c.stats().await?.dead == 1)
        },
    )
    .await?;
    let dead_after = start.elapsed();
    c.until(
        "the healthy jobs to complete",
        Duration::from_secs(60),
        async || Ok(counters.completed() >= healthy as u64),
    )
    .await?;
    running.shutdown().await?;
    let job = c.job(&poison).await?;
    // Attempt n+1 starts after a delay in [0, ceiling(n)]; allow 1 s for pickup.
    let times: Vec<u64> = job.errors.iter().map(|e| e.at_ms).collect();
    let gaps: Vec<u64> = times
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .collect();
    let ceilings: Vec<u64> = (1..times.len() as u32)
        .map(|n| ms(policy.ceiling(n)))
        .collect();
    let within = gaps.iter().zip(&ceilings).all(|(g, c)| *g <= c + 1000);
    let ok = job.state == JobState::Dead
        && job.attempt == 5
        && job.errors.len() == 5
        && within
        && counters.completed() == healthy as u64;
    Ok((
        ok,
        "healthy jobs all complete; the failing one is dead after 5 attempts, each retry within its backoff",
        json!({
            "healthy": healthy, "healthy_completed": counters.completed(),
            "healthy_done_ms": healthy_done.load(Ordering::Relaxed),
            "poison_state": job.state, "poison_attempts": job.attempt,
            "retry_gaps_ms": gaps, "backoff_ceilings_ms": ceilings,
            "dead_after_ms": ms(dead_after),
        }),
    ))
}
