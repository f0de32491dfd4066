//! `--scenario backlog`: a large backlog, its size per job and a flat enqueue rate.

use std::time::Instant;

use serde_json::json;

use super::Outcome;
use super::context::Ctx;

/// A large backlog: bytes per queued job, and the enqueue rate stays flat.
pub(super) async fn run(c: &Ctx) -> Outcome {
    let n = c.size.pick(1_000_000, 100_000);
    let tenth = n / 10;
    let before = c.store.used_bytes().await?;
    let payload = format!(r#"{{"s":"{}"}}"#, "x".repeat(100));
    let opts = c.opts();
    let mut rates = Vec::new();
    for _ in 0..10 {
        let start = Instant::now();
        c.enqueue(tenth, "noop", &payload, &opts).await?;
        rates.push(tenth as f64 / start.elapsed().as_secs_f64());
    }
    let after = c.store.used_bytes().await?;
    let queued = c.stats().await?.ready;
    let (first, last) = (rates[0], rates[9]);
    let ok = last >= first * 0.8 && queued == n as u64;
    Ok((
        ok,
        "the enqueue rate of the last tenth is within 20% of the first's",
        json!({
            "jobs": n, "queued": queued,
            "bytes_per_job": (after.saturating_sub(before)) / n as u64,
            "enqueue_per_s_by_tenth": rates.iter().map(|r| r.round()).collect::<Vec<_>>(),
            "last_over_first": (last / first * 100.0).round() / 100.0,
        }),
    ))
}
