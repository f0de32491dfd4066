//! `--scenario poison-process`: a job that kills its worker process.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::json;
use taskyard::JobState;
use taskyard_cli::process::records;

use super::Outcome;
use super::books::books;
use super::context::Ctx;

/// A job that kills its worker process ends in dead after its attempts (counted at
/// claim), while healthy jobs complete.
pub(super) async fn run(c: &Ctx) -> Outcome {
    let healthy = c.size.pick(500, 200);
    let poison = c
        .enqueue(1, "poison", "{}", &c.opts().max_attempts(3))
        .await?
        .remove(0);
    let ids = c.enqueue(healthy, "record", "{}", &c.opts()).await?;
    let args = ["--concurrency", "10", "--lease", "1s"];
    let restarts = AtomicU32::new(0);
    let mut worker = c.spawn("w-0", &args)?;
    let mut names = vec!["w-0".to_string()];
    c.until(
        "the poison job to be dead",
        Duration::from_secs(60),
        async || {
            if worker.exited() {
                let n = restarts.fetch_add(1, Ordering::Relaxed) + 1;
                let name = format!("w-{n}");
                worker = c.spawn(&name, &args)?;
                names.push(name);
            }
            // The poison job itself: another dead job must show in the verdict, not
            // as a timeout.
            Ok(c.job(&poison).await?.state == JobState::Dead)
        },
    )
    .await?;
    c.drained(Duration::from_secs(30)).await?;
    worker.stop()?;
    let job = c.job(&poison).await?;
    let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    let (lost, unexpected, _) = books(&ids, &records(&c.dir, &refs));
    let dead = c.stats().await?.dead;
    let expired = job
        .errors
        .iter()
        .filter(|e| e.message.contains("lease expired"))
        .count();
    let ok = job.state == JobState::Dead
        && job.attempt == 3
        && expired == 3
        && lost == 0
        && unexpected == 0
        && dead == 1;
    Ok((
        ok,
        "a job that kills its worker is dead after max attempts; the healthy jobs complete",
        json!({
            "poison_state": job.state, "poison_attempts": job.attempt,
            "lease_expiries": expired, "worker_deaths": restarts.load(Ordering::Relaxed),
            "healthy": healthy, "lost": lost, "unexpected": unexpected, "dead": dead,
        }),
    ))
}
