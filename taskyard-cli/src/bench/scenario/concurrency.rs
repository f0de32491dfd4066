//! `--scenario concurrency`: many concurrent slow jobs on one queue, a throughput target.

use std::time::{Duration, Instant};

use serde_json::json;
use taskyard::Worker;

use super::Outcome;
use super::context::{Ctx, ms};

/// 1,000 concurrent 100 ms jobs on one queue: ≥ 9,000 jobs/s.
pub(super) async fn run(c: &Ctx) -> Outcome {
    let n = c.size.pick(60_000, 30_000);
    let concurrency = 1000;
    let ids = c.enqueue(n, "sleep", r#"{"ms":100}"#, &c.opts()).await?;
    let worker = crate::bench::worker::test_handlers(
        Worker::builder(c.store.shared())
            .queue(c.queue.as_str())
            .concurrency(concurrency),
        None,
    )
    .build()?;
    let counters = worker.counters();
    let start = Instant::now();
    let running = worker.spawn();
    c.until(
        "every job to complete",
        Duration::from_secs(120),
        async || Ok(counters.completed() >= n as u64),
    )
    .await?;
    let elapsed = start.elapsed();
    running.shutdown().await?;
    let rate = n as f64 / elapsed.as_secs_f64();
    Ok((
        rate >= 9000.0,
        "1,000 concurrent 100 ms jobs on one queue give >= 9,000 jobs/s",
        json!({
            "jobs": ids.len(), "concurrency": concurrency, "job_ms": 100,
            "jobs_per_s": rate.round(), "ideal_jobs_per_s": concurrency * 10,
            "elapsed_ms": ms(elapsed),
        }),
    ))
}
