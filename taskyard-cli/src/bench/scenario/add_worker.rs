//! `--scenario add-worker`: a worker process added mid-backlog takes its share at once.

use std::time::{Duration, Instant};

use serde_json::json;
use taskyard_cli::process::records;

use super::Outcome;
use super::books::books;
use super::context::{Ctx, ms};

/// A second worker process started in the middle of a backlog takes its share within 1 s.
pub(super) async fn run(c: &Ctx) -> Outcome {
    let n = c.size.pick(20_000, 6_000);
    let ids = c.enqueue(n, "record", r#"{"ms":10}"#, &c.opts()).await?;
    let args = ["--concurrency", "20"];
    let mut first = c.spawn("first", &args)?;
    // Let the first worker take the backlog alone for a while.
    c.until(
        "the first worker to be busy",
        Duration::from_secs(30),
        async || Ok(records(&c.dir, &["first"]).len() >= n / 5),
    )
    .await?;
    let added = Instant::now();
    let mut second = c.spawn("second", &args)?;
    // Sample both workers' completions every 50 ms until the backlog is done.
    let mut samples: Vec<(Duration, usize, usize)> = Vec::new();
    loop {
        let (a, b) = (
            records(&c.dir, &["first"]).len(),
            records(&c.dir, &["second"]).len(),
        );
        samples.push((added.elapsed(), a, b));
        if a + b >= n || added.elapsed() > Duration::from_secs(120) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.drained(Duration::from_secs(30)).await?;
    first.stop()?;
    second.stop()?;
    let first_done = samples.iter().find(|s| s.2 > 0).map(|s| ms(s.0));
    // The first 250 ms window in which the second worker did at least 40% of the work.
    let mut share_at = None;
    for w in samples.windows(6) {
        let (s0, s5) = (w[0], w[5]);
        let (da, db) = (s5.1 - s0.1, s5.2 - s0.2);
        if da + db > 0 && db * 10 >= (da + db) * 4 {
            share_at = Some(ms(s5.0));
            break;
        }
    }
    let (lost, unexpected, duplicated) = books(&ids, &records(&c.dir, &["first", "second"]));
    let ok = share_at.is_some_and(|t| t <= 1000) && lost == 0 && unexpected == 0;
    let total = records(&c.dir, &["second"]).len();
    Ok((
        ok,
        "a worker process added mid-backlog does at least 40% of the work within 1 s of starting",
        json!({
            "backlog": n, "second_first_completion_ms": first_done,
            "second_share_reached_ms": share_at, "second_completed": total,
            "lost": lost, "unexpected": unexpected, "duplicated": duplicated,
        }),
    ))
}
