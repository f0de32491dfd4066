//! `--scenario long-jobs`: jobs longer than their lease, kept by heartbeats.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use taskyard::{JobContext, JobError, JobId, Worker};

use super::Outcome;
use super::context::{Ctx, ms};

/// Jobs lasting 5× the lease complete exactly once: heartbeats keep their leases.
pub(super) async fn run(c: &Ctx) -> Outcome {
    // Quick runs share a loaded machine with other tests: a longer lease gives a late
    // heartbeat more room, the ratio stays 5x.
    let lease = c.size.pick(Duration::from_secs(1), Duration::from_secs(2));
    let run = lease * 5;
    let n = c.size.pick(20, 5);
    let runs: Arc<Mutex<Vec<(JobId, u32)>>> = Arc::default();
    let seen = runs.clone();
    let worker = Worker::builder(c.store.shared())
        .queue(c.queue.as_str())
        .concurrency(n)
        .lease(lease)
        .handle_raw("long", move |ctx: JobContext, _payload| {
            seen.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((ctx.id().clone(), ctx.attempt()));
            async move {
                tokio::time::sleep(run).await;
                Ok::<(), JobError>(())
            }
        })
        .build()?;
    let counters = worker.counters();
    let ids = c.enqueue(n, "long", "{}", &c.opts()).await?;
    let start = Instant::now();
    let running = worker.spawn();
    c.until("every long job to complete", run * 4, async || {
        Ok(counters.completed() >= n as u64)
    })
    .await?;
    let elapsed = start.elapsed();
    // Past their leases several times over: a redelivery would have shown by now.
    tokio::time::sleep(lease * 2).await;
    running.shutdown().await?;
    let runs = runs.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let redelivered = runs.iter().filter(|(_, attempt)| *attempt > 1).count();
    let once = ids
        .iter()
        .all(|id| runs.iter().filter(|(r, _)| r == id).count() == 1);
    let ok = once && redelivered == 0 && counters.stale() == 0 && counters.completed() == n as u64;
    Ok((
        ok,
        "jobs lasting 5x the lease complete exactly once, no redelivery",
        json!({
            "jobs": n, "lease_ms": ms(lease), "job_ms": ms(run), "runs": runs.len(),
            "redelivered": redelivered, "stale_outcomes": counters.stale(),
            "completed": counters.completed(), "elapsed_ms": ms(elapsed),
        }),
    ))
}
