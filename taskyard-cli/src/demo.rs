//! `taskyard demo`: a worker with example handlers runs a realistic mix of jobs on the
//! store (the embedded default unless `--store` says otherwise), with live progress and
//! a summary.
//!
//! The mix shows each part of the model: fast jobs in waves, reports that run longer
//! than their lease (kept alive by heartbeats), card charges that fail and succeed on a
//! retry, a CSV import that always fails and ends in the dead set, and reminders delayed
//! by seconds.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use serde::{Deserialize, Serialize};
use taskyard::{
    Client, EnqueueOptions, Job, JobContext, JobError, QueueName, QueueStats, RetryPolicy, Worker,
};

use crate::open::{self, Create};

const QUEUE: &str = "demo";
/// Each claim's lease: short, so the long reports need heartbeats to stay theirs.
const LEASE: Duration = Duration::from_secs(3);
const REPORT_RUNS: Duration = Duration::from_secs(8);
const WAVES: u64 = 30;
const WAVE_EVERY: Duration = Duration::from_millis(500);

#[derive(Args)]
pub(crate) struct DemoArgs {
    /// Jobs run at once.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
}

#[derive(Serialize, Deserialize)]
struct SendEmail {
    to: String,
}
impl Job for SendEmail {
    const KIND: &'static str = "send_email";
}

#[derive(Serialize, Deserialize)]
struct ResizeImage {
    image: String,
    width: u32,
}
impl Job for ResizeImage {
    const KIND: &'static str = "resize_image";
}

#[derive(Serialize, Deserialize)]
struct GenerateReport {
    month: String,
}
impl Job for GenerateReport {
    const KIND: &'static str = "generate_report";
}

#[derive(Serialize, Deserialize)]
struct ChargeCard {
    order: u64,
    /// The card network times out this many times before it answers.
    timeouts: u32,
}
impl Job for ChargeCard {
    const KIND: &'static str = "charge_card";
}

#[derive(Serialize, Deserialize)]
struct ImportCsv {
    file: String,
}
impl Job for ImportCsv {
    const KIND: &'static str = "import_csv";
    fn retry_policy() -> RetryPolicy {
        RetryPolicy::default()
            .max_attempts(4)
            .base(Duration::from_millis(300))
            .cap(Duration::from_secs(2))
    }
}

#[derive(Serialize, Deserialize)]
struct SendReminder {
    user: u64,
}
impl Job for SendReminder {
    const KIND: &'static str = "send_reminder";
}

/// What the handlers saw.
#[derive(Default)]
struct Tally {
    /// Handler runs that returned an error (each one is retried or ends dead).
    failures: AtomicU64,
    /// Runs of the long reports, and the longest of them.
    report_runs: AtomicU64,
    report_ms: AtomicU64,
    /// Enqueue-to-start delay of first attempts, ms.
    waits: Mutex<Vec<f64>>,
}

impl Tally {
    fn started(&self, ctx: &JobContext) {
        if ctx.attempt() == 1 && ctx.kind() != SendReminder::KIND {
            let now = taskyard::job::system_time_ms(std::time::SystemTime::now());
            let wait = now.saturating_sub(ctx.enqueued_at_ms()) as f64;
            self.waits
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(wait);
        }
    }
}

fn ms(lo: u64, hi: u64) -> Duration {
    Duration::from_millis(rand::random_range(lo..=hi))
}

pub(crate) async fn run(
    url: Option<String>,
    args: DemoArgs,
) -> Result<(), Box<dyn std::error::Error>> {
    let store = open::open(url.as_deref(), Create::Yes).await?;
    let queue = QueueName::new(QUEUE)?;
    // Start from an empty queue, so the summary counts this run only.
    store.delete_queue(&queue).await?;
    // The commands to print, as this binary was invoked: `target/release/taskyard` after
    // `cargo run`, `taskyard` when it is on the PATH.
    let program = std::env::args()
        .next()
        .filter(|p| p.contains('/'))
        .unwrap_or_else(|| "taskyard".into());
    let shown = match &url {
        Some(u) => format!("{program} --store {u}"),
        None => program,
    };
    let place = match &url {
        Some(u) => u.clone(),
        None => format!(
            "./{} (the embedded default)",
            taskyard::sqlite::DEFAULT_PATH
        ),
    };
    println!(
        "taskyard demo on {place}, queue {QUEUE}, concurrency {}",
        args.concurrency
    );
    println!(
        "  {} waves of emails, image resizes and card charges (some fail, then succeed), \
         3 reports running {} s under a {} s lease, 20 reminders delayed 5-15 s, \
         1 CSV import that always fails",
        WAVES,
        REPORT_RUNS.as_secs(),
        LEASE.as_secs()
    );

    let tally = Arc::new(Tally::default());
    let t = (tally.clone(), tally.clone(), tally.clone(), tally.clone());
    let (t5, t6) = (tally.clone(), tally.clone());
    let worker = Worker::builder(store.shared())
        .queue(QUEUE)
        .concurrency(args.concurrency)
        .lease(LEASE)
        .default_retry(
            RetryPolicy::default()
                .base(Duration::from_millis(300))
                .cap(Duration::from_secs(3)),
        )
        .handle(move |_job: SendEmail, ctx: JobContext| {
            t.0.started(&ctx);
            async move {
                tokio::time::sleep(ms(2, 20)).await;
                Ok::<(), JobError>(())
            }
        })
        .handle(move |_job: ResizeImage, ctx: JobContext| {
            t.1.started(&ctx);
            async move {
                tokio::time::sleep(ms(50, 150)).await;
                Ok::<(), JobError>(())
            }
        })
        .handle(move |_job: GenerateReport, ctx: JobContext| {
            t.2.started(&ctx);
            let tally = t.2.clone();
            async move {
                let start = Instant::now();
                tokio::time::sleep(REPORT_RUNS).await;
                tally.report_runs.fetch_add(1, Ordering::Relaxed);
                tally
                    .report_ms
                    .fetch_max(start.elapsed().as_millis() as u64, Ordering::Relaxed);
                Ok::<(), JobError>(())
            }
        })
        .handle(move |job: ChargeCard, ctx: JobContext| {
            t.3.started(&ctx);
            let tally = t.3.clone();
            async move {
                tokio::time::sleep(ms(5, 30)).await;
                if ctx.attempt() <= job.timeouts {
                    tally.failures.fetch_add(1, Ordering::Relaxed);
                    return Err(JobError::retry(format!(
                        "order {}: card network timed out",
                        job.order
                    )));
                }
                Ok(())
            }
        })
        .handle(move |job: ImportCsv, ctx: JobContext| {
            t5.started(&ctx);
            t5.failures.fetch_add(1, Ordering::Relaxed);
            async move {
                Err::<(), JobError>(JobError::retry(format!(
                    "{}: row 17: invalid date \"2026-13-01\"",
                    job.file
                )))
            }
        })
        .handle(move |_job: SendReminder, ctx: JobContext| {
            t6.started(&ctx);
            async move { Ok::<(), JobError>(()) }
        })
        .build()?;
    let counters = worker.counters();
    let running = worker.spawn();

    let client = Client::new(store.shared());
    let started = Instant::now();
    let q = || EnqueueOptions::default().queue(QUEUE);
    let months = ["2026-08", "2026-09", "2026-10"];
    for month in months {
        client
            .enqueue_with(
                &GenerateReport {
                    month: month.into(),
                },
                q(),
            )
            .await?;
    }
    client
        .enqueue_with(
            &ImportCsv {
                file: "customers.csv".into(),
            },
            q(),
        )
        .await?;
    let reminders: Vec<SendReminder> = (0..20).map(|user| SendReminder { user }).collect();
    for r in &reminders {
        client.enqueue_with(r, q().delay(ms(5_000, 15_000))).await?;
    }
    let mut expected = months.len() as u64 + reminders.len() as u64;

    let tty = std::io::stdout().is_terminal();
    let mut wave = 0;
    let mut next_wave = Instant::now();
    let mut last_print = Instant::now() - Duration::from_secs(1);
    let mut last_done = (Instant::now(), 0u64);
    let mut rate = 0.0;
    let deadline = started + Duration::from_secs(90);
    let stats = loop {
        if wave < WAVES && Instant::now() >= next_wave {
            let emails: Vec<SendEmail> = (0..100)
                .map(|i| SendEmail {
                    to: format!("user{}@example.com", wave * 100 + i),
                })
                .collect();
            client.enqueue_many(emails, q()).await?;
            let images: Vec<ResizeImage> = (0..10)
                .map(|i| ResizeImage {
                    image: format!("photo-{}.jpg", wave * 10 + i),
                    width: 640,
                })
                .collect();
            client.enqueue_many(images, q()).await?;
            for i in 0..2 {
                let charge = ChargeCard {
                    order: wave * 2 + i,
                    timeouts: rand::random_range(0..=2),
                };
                client.enqueue_with(&charge, q()).await?;
            }
            expected += 112;
            wave += 1;
            next_wave += WAVE_EVERY;
        }
        let stats = store.shared().stats(&queue).await?;
        let done = counters.completed();
        let finished = wave == WAVES && done >= expected && stats.dead >= 1;
        if last_print.elapsed() >= Duration::from_millis(if tty { 200 } else { 1000 }) || finished {
            let since = last_done.0.elapsed().as_secs_f64();
            if since >= 1.0 {
                rate = (done - last_done.1) as f64 / since;
                last_done = (Instant::now(), done);
            }
            let line = progress(started.elapsed(), &stats, done, rate, &tally);
            if tty {
                print!("\r\x1b[2K{line}");
                let _ = std::io::stdout().flush();
            } else {
                println!("{line}");
            }
            last_print = Instant::now();
        }
        if finished {
            break stats;
        }
        if Instant::now() >= deadline {
            if tty {
                println!();
            }
            running.shutdown().await?;
            return Err(format!(
                "the demo did not finish within {} s: {done} of {expected} jobs completed",
                deadline.duration_since(started).as_secs()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if tty {
        println!();
    }
    running.shutdown().await?;

    let mut waits = tally
        .waits
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    waits.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        waits
            .get(((p * waits.len() as f64).ceil() as usize).clamp(1, waits.len().max(1)) - 1)
            .copied()
            .unwrap_or(0.0)
    };
    println!();
    println!("Done in {:.1} s.", started.elapsed().as_secs_f64());
    let failures = tally.failures.load(Ordering::Relaxed);
    println!("  completed  {} jobs", counters.completed());
    println!(
        "  retried    {} failed attempts were retried with backoff (card network timeouts, \
         the CSV import's first attempts)",
        failures.saturating_sub(stats.dead)
    );
    println!(
        "  dead       {} (import_csv failed all 4 of its attempts; its errors are kept)",
        stats.dead
    );
    println!(
        "  heartbeats {} report runs of {:.1} s under a {} s lease; leases lost: {}",
        tally.report_runs.load(Ordering::Relaxed),
        tally.report_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        LEASE.as_secs(),
        counters.stale()
    );
    println!(
        "  latency    enqueue to start p50 {:.1} ms, p99 {:.1} ms",
        pct(0.5),
        pct(0.99)
    );
    println!();
    println!("Look at what it left behind:");
    println!("  {shown} stats");
    println!("  {shown} dead list --queue {QUEUE}");
    let dead = store
        .shared()
        .list(
            &queue,
            taskyard::JobState::Dead,
            &taskyard::Cursor::start(),
            1,
        )
        .await?;
    if let Some(job) = dead.jobs.first() {
        println!("  {shown} jobs show {} --queue {QUEUE}", job.id);
    }
    println!("  {shown} dead redrive --queue {QUEUE} --all");
    Ok(())
}

fn progress(elapsed: Duration, s: &QueueStats, done: u64, rate: f64, tally: &Tally) -> String {
    format!(
        "{:>5.1}s  ready {:>4}  scheduled {:>3}  running {:>3}  completed {:>5}  dead {}  | {:>5.0} jobs/s  failed attempts {}",
        elapsed.as_secs_f64(),
        s.ready,
        s.scheduled,
        s.running,
        done,
        s.dead,
        rate,
        tally.failures.load(Ordering::Relaxed),
    )
}
