//! `--scenario zombie`: a worker paused past its lease cannot complete the job another
//! worker now holds.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use taskyard::{JobContext, JobError, JobState, Worker};
use taskyard_cli::process::{Signal, records};

use super::Outcome;
use super::books::count_in;
use super::context::{Ctx, ms};

/// A worker stopped (SIGSTOP) past its lease, its job claimed by another, then resumed
/// while the other still runs the job: its completion is refused, and the other's holds.
pub(super) async fn run(c: &Ctx) -> Outcome {
    let id = c
        .enqueue(1, "record", r#"{"ms":3000}"#, &c.opts())
        .await?
        .remove(0);
    let mut zombie = c.spawn("zombie", &["--concurrency", "1", "--lease", "1s"])?;
    c.until("the job to run", Duration::from_secs(10), async || {
        Ok(c.stats().await?.running == 1)
    })
    .await?;
    zombie.signal(Signal::SIGSTOP)?;
    // The embedded store has one writer at a time across processes: a stop that caught
    // the zombie inside a write (a heartbeat's commit) holds the file's lock for the
    // whole pause, and no other process could take the job — not what this scenario is
    // about. A write from here tells; such a stop is undone and made again.
    for _ in 0..5 {
        if c.store.kind() != "sqlite" {
            break;
        }
        let probe = c.store.shared();
        match tokio::time::timeout(Duration::from_secs(2), probe.maintain(&c.queue)).await {
            Ok(Ok(_)) => break,
            _ => {
                zombie.signal(Signal::SIGCONT)?;
                tokio::time::sleep(Duration::from_millis(50)).await;
                zombie.signal(Signal::SIGSTOP)?;
            }
        }
    }
    let stopped = Instant::now();
    // The job's new holder runs in this process, its handler held until the zombie's
    // outcome is in: the zombie reports while the other holds the lease. Its lease is
    // longer (2 s): its own heartbeats must not be the test.
    let started: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
    let (finish, finishing) = tokio::sync::watch::channel(false);
    let seen = started.clone();
    let other = Worker::builder(c.store.shared())
        .queue(c.queue.as_str())
        .concurrency(1)
        .lease(Duration::from_secs(2))
        .handle_raw("record", move |ctx: JobContext, _payload| {
            seen.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((ctx.id().to_string(), ctx.attempt()));
            let mut finishing = finishing.clone();
            async move {
                let _ = finishing.wait_for(|go| *go).await;
                Ok::<(), JobError>(())
            }
        })
        .build()?;
    let other_counters = other.counters();
    let other = other.spawn();
    c.until(
        "the other worker to take the job",
        Duration::from_secs(20),
        async || Ok(!started.lock().unwrap_or_else(|e| e.into_inner()).is_empty()),
    )
    .await?;
    let before = c.store.shared().job(&c.queue, &id).await?;
    let paused = stopped.elapsed();
    zombie.signal(Signal::SIGCONT)?;
    // The zombie's handler wakes, records its run and reports it. Its graceful stop
    // waits for the report to be answered, so its books are final.
    c.until(
        "the zombie to finish its run",
        Duration::from_secs(10),
        async || Ok(!records(&c.dir, &["zombie"]).is_empty()),
    )
    .await?;
    // Off this thread: the other worker runs here and must keep its lease alive.
    let zombie_books =
        tokio::task::spawn_blocking(move || zombie.stop().map_err(|e| e.to_string())).await??;
    // The job as the zombie's refused report left it: still the other's.
    let after = c.store.shared().job(&c.queue, &id).await?;
    let held = |j: &Option<taskyard::JobInfo>| {
        j.as_ref()
            .is_some_and(|j| j.state == JobState::Running && j.attempt == 2)
    };
    let held_throughout = held(&before) && held(&after);
    let completed_before_release = other_counters.completed();
    let _ = finish.send(true);
    c.until(
        "the other worker to complete the job",
        Duration::from_secs(10),
        async || Ok(other_counters.completed() >= 1),
    )
    .await?;
    c.drained(Duration::from_secs(10)).await?;
    other.shutdown().await?;
    let dead = c.stats().await?.dead;
    let other_runs = started.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let zombie_runs = records(&c.dir, &["zombie"]);
    let (stale, zombie_completed) = (
        count_in(&zombie_books, "stale"),
        count_in(&zombie_books, "completed"),
    );
    let state = |j: &Option<taskyard::JobInfo>| {
        j.as_ref()
            .map(|j| json!({ "state": j.state, "attempt": j.attempt }))
    };
    let ok = stale == Some(1)
        && zombie_completed == Some(0)
        && zombie_runs == vec![(id.to_string(), 1)]
        && held_throughout
        && completed_before_release == 0
        && other_runs == vec![(id.to_string(), 2)]
        && other_counters.completed() == 1
        && other_counters.stale() == 0
        && dead == 0;
    Ok((
        ok,
        "a worker paused past its lease cannot complete the job another worker holds: its \
         outcome is refused while the job runs under the other's attempt 2, and the other \
         completes it",
        json!({
            "paused_ms": ms(paused), "zombie_runs": zombie_runs,
            "zombie_books": zombie_books, "zombie_outcomes_rejected": stale,
            "job_before_resume": state(&before), "job_after_refusal": state(&after),
            "held_by_other_throughout": held_throughout,
            "other_worker_runs": other_runs, "other_completed": other_counters.completed(),
            "other_stale": other_counters.stale(), "dead": dead,
        }),
    ))
}
