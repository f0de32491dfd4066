//! Lifecycle hooks: a worker with two hooks — one times every run and counts outcomes
//! (your metrics), one alerts when a job goes dead (your pager) — on the embedded store.
//! `cargo run --example hooks` enqueues a few jobs, one of which always fails, runs them
//! and prints what the hooks saw.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use taskyard::{
    Client, Ended, EnqueueOptions, Hook, How, Job, JobContext, JobError, Next, RetryPolicy,
    RunResult, Worker, async_trait,
};

#[derive(Serialize, Deserialize)]
struct Charge {
    cents: u64,
}

impl Job for Charge {
    const KIND: &'static str = "charge";
    fn retry_policy() -> RetryPolicy {
        RetryPolicy::default()
            .max_attempts(3)
            .base(Duration::from_millis(50))
    }
}

/// Times each run and counts how runs ended: what an application would export as
/// metrics.
#[derive(Clone, Default)]
struct Metrics(Arc<Counts>);

#[derive(Default)]
struct Counts {
    completed: AtomicU64,
    retried: AtomicU64,
    dead: AtomicU64,
}

#[async_trait]
impl Hook for Metrics {
    async fn around(&self, ctx: &JobContext, next: Next) -> RunResult {
        let started = Instant::now();
        let result = next.run().await;
        println!(
            "{} {} attempt {} took {:?}: {}",
            ctx.kind(),
            ctx.id(),
            ctx.attempt(),
            started.elapsed(),
            if result.is_ok() { "ok" } else { "failed" }
        );
        result
    }

    async fn ended(&self, end: &Ended) {
        let counter = match end.how {
            How::Completed => &self.0.completed,
            How::Retrying { .. } => &self.0.retried,
            How::Dead { .. } => &self.0.dead,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Alerts on dead letters: here a line on stderr; in an application, a page or a chat
/// message.
struct DeadLetterAlert;

#[async_trait]
impl Hook for DeadLetterAlert {
    async fn ended(&self, end: &Ended) {
        if let How::Dead { error } = &end.how {
            eprintln!(
                "ALERT: {} job {} on {} is dead after {} attempts: {error}",
                end.kind, end.id, end.queue, end.attempt
            );
        }
    }
}

#[tokio::main]
async fn main() -> taskyard::Result<()> {
    let dir = std::env::temp_dir().join(format!("taskyard-hooks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| taskyard::Error::Store(Box::new(e)))?;
    let store = taskyard::AnyStore::open(&dir.join("hooks.db").to_string_lossy()).await?;
    let client = Client::new(store.clone());
    for cents in [100, 250, 0] {
        client
            .enqueue_with(&Charge { cents }, EnqueueOptions::default())
            .await?;
    }

    let metrics = Metrics::default();
    let worker = Worker::builder(store)
        .hook(metrics.clone())
        .hook(DeadLetterAlert)
        .maintenance_every(Duration::from_millis(20))
        .handle(|job: Charge, _ctx: JobContext| async move {
            if job.cents == 0 {
                return Err(JobError::retry("the card was declined"));
            }
            Ok(())
        })
        .build()?
        .spawn();
    // 2 complete at once; the declined charge is tried 3 times, then goes dead.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metrics.0.completed.load(Ordering::Relaxed) + metrics.0.dead.load(Ordering::Relaxed) < 3
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.shutdown().await?;
    println!(
        "completed {}, retried {}, dead {}",
        metrics.0.completed.load(Ordering::Relaxed),
        metrics.0.retried.load(Ordering::Relaxed),
        metrics.0.dead.load(Ordering::Relaxed)
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
