//! `taskyard bench`: the workload of the BullMQ comparison harness (`bench/peers/bullmq`,
//! described in docs/benchmarks.md), so the figures compare side by side with BullMQ's on the same Redis.
//!
//! - enqueue: one producer adds N jobs of the ~120-byte payload in bulk batches of 1,000,
//!   one batch after another;
//! - memory: Redis `used_memory` (or the file's pages in use) after the enqueue minus
//!   before, per job;
//! - process: one worker, concurrency C, a handler that does nothing, finished jobs not
//!   retained; N / time from worker start to the N-th completion recorded in the store;
//! - pickup latency: single jobs enqueued at a fixed rate while the worker idles; each
//!   carries its enqueue time, the handler records the delay to its start.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use taskyard::{Client, EnqueueOptions, JobError, NewJob, QueueName, RetryPolicy, Worker};

use crate::open::{self, Create};
use taskyard::AnyStore;

mod scenario;
mod worker;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    pub(crate) mode: Option<BenchMode>,
    /// Jobs to enqueue and process.
    #[arg(long, default_value_t = 100_000)]
    jobs: usize,
    /// Worker concurrency.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    /// Jobs per enqueue batch.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Jobs per second in the pickup-latency phase (0 skips it).
    #[arg(long, default_value_t = 1000)]
    latency_rate: u32,
    /// Seconds of the pickup-latency phase.
    #[arg(long, default_value_t = 5.0)]
    latency_secs: f64,
    /// Runtime threads for the producer and worker (0: one per core).
    #[arg(long, default_value_t = 1)]
    pub(crate) threads: usize,
    /// Print one JSON line instead of a summary.
    #[arg(long)]
    json: bool,
    /// Run a scenario instead: long-jobs, concurrency, add-worker, poison, backlog,
    /// kill-under-load, zombie, poison-process, connection-cut (docs/scenarios.md).
    #[arg(long)]
    scenario: Option<String>,
    /// With --scenario: smaller sizes (what the tests run).
    #[arg(long, requires = "scenario")]
    quick: bool,
}

/// Other bench modes.
#[derive(clap::Subcommand)]
pub(crate) enum BenchMode {
    /// Run a worker with built-in test handlers (noop, sleep, flaky, poison, record)
    /// until SIGINT or SIGTERM.
    Worker(worker::WorkerArgs),
}

#[derive(serde::Serialize)]
struct Report {
    system: &'static str,
    store: &'static str,
    jobs: usize,
    concurrency: usize,
    enqueue_per_s: u64,
    process_per_s: u64,
    bytes_per_queued_job: i64,
    pickup_p50_ms: f64,
    pickup_p99_ms: f64,
    pickup_max_ms: f64,
    latency_rate: u32,
    threads: usize,
}

fn unix_ms_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

fn payload(n: usize, t: Option<f64>) -> Vec<u8> {
    let s = "x".repeat(100);
    match t {
        None => format!(r#"{{"n":{n},"s":"{s}"}}"#).into_bytes(),
        Some(t) => format!(r#"{{"n":{n},"s":"{s}","t":{t:.3}}}"#).into_bytes(),
    }
}

pub(crate) async fn run(
    url: Option<String>,
    args: BenchArgs,
) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(BenchMode::Worker(w)) = args.mode {
        return worker::run(url, w).await;
    }
    if let Some(name) = &args.scenario {
        return scenario::run(url, name, args.quick, args.json).await;
    }
    if args.jobs == 0 || args.concurrency == 0 || args.batch == 0 {
        return Err("--jobs, --concurrency and --batch must be at least 1".into());
    }
    let store = open::open(url.as_deref(), Create::Yes).await?;
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let queue = QueueName::new(format!("bench-{stamp}"))?;
    let lat_queue = QueueName::new(format!("bench-lat-{stamp}"))?;
    let result = measure(&store, &queue, &lat_queue, &args).await;
    store.delete_queue(&queue).await?;
    store.delete_queue(&lat_queue).await?;
    let report = result?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "enqueue {} jobs/s, process {} jobs/s, {} bytes per queued job, pickup p50 {} ms p99 {} ms max {} ms",
            report.enqueue_per_s,
            report.process_per_s,
            report.bytes_per_queued_job,
            report.pickup_p50_ms,
            report.pickup_p99_ms,
            report.pickup_max_ms
        );
    }
    Ok(())
}

async fn measure(
    store: &AnyStore,
    queue: &QueueName,
    lat_queue: &QueueName,
    args: &BenchArgs,
) -> Result<Report, Box<dyn std::error::Error>> {
    let client = Client::new(store.shared());
    let opts = EnqueueOptions::default();
    let policy = RetryPolicy::default();

    // Enqueue.
    let mem0 = store.used_bytes().await?;
    let start = Instant::now();
    let mut n = 0;
    while n < args.jobs {
        let end = (n + args.batch).min(args.jobs);
        let batch = (n..end)
            .map(|i| NewJob::new("noop", payload(i, None), &opts, policy))
            .collect::<taskyard::Result<Vec<_>>>()?;
        client.enqueue_raw(queue, batch).await?;
        n = end;
    }
    let enqueue_s = start.elapsed().as_secs_f64();
    let mem1 = store.used_bytes().await?;

    // Process.
    let worker = Worker::builder(store.shared())
        .queue(queue.as_str())
        .concurrency(args.concurrency)
        .handle_raw("noop", |_ctx, _payload| async { Ok::<(), JobError>(()) })
        .build()?;
    let counters = worker.counters();
    let start = Instant::now();
    let running = worker.spawn();
    let deadline = start + Duration::from_secs(600);
    while counters.completed() < args.jobs as u64 {
        if Instant::now() > deadline {
            return Err("processing did not finish within 10 minutes".into());
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let process_s = start.elapsed().as_secs_f64();
    running.shutdown().await?;

    let (p50, p99, max) = if args.latency_rate > 0 {
        pickup(store, lat_queue, args).await?
    } else {
        (0.0, 0.0, 0.0)
    };
    let round = |x: f64| (x * 100.0).round() / 100.0;
    Ok(Report {
        system: "taskyard",
        store: store.kind(),
        jobs: args.jobs,
        concurrency: args.concurrency,
        enqueue_per_s: (args.jobs as f64 / enqueue_s) as u64,
        process_per_s: (args.jobs as f64 / process_s) as u64,
        bytes_per_queued_job: (mem1 as i64 - mem0 as i64) / args.jobs as i64,
        pickup_p50_ms: round(p50),
        pickup_p99_ms: round(p99),
        pickup_max_ms: round(max),
        latency_rate: args.latency_rate,
        threads: args.threads,
    })
}

/// Pickup latency: single jobs at a fixed rate, each timed from just before its enqueue
/// to the start of its handler.
async fn pickup(
    store: &AnyStore,
    queue: &QueueName,
    args: &BenchArgs,
) -> Result<(f64, f64, f64), Box<dyn std::error::Error>> {
    #[derive(serde::Deserialize)]
    struct Timed {
        t: f64,
    }
    let samples = Arc::new(Mutex::new(Vec::new()));
    let s2 = samples.clone();
    let worker = Worker::builder(store.shared())
        .queue(queue.as_str())
        .concurrency(args.concurrency)
        .handle_raw("noop", move |_ctx, payload| {
            let now = unix_ms_f64();
            let res = serde_json::from_slice::<Timed>(&payload)
                .map(|p| s2.lock().unwrap_or_else(|e| e.into_inner()).push(now - p.t))
                .map_err(JobError::permanent);
            async move { res }
        })
        .build()?;
    let running = worker.spawn();
    let client = Client::new(store.shared());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let total = (args.latency_rate as f64 * args.latency_secs).round() as usize;
    let period = Duration::from_secs_f64(1.0 / args.latency_rate as f64);
    let opts = EnqueueOptions::default();
    let start = Instant::now();
    for i in 0..total {
        let at = start + period * i as u32;
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        let job = NewJob::new(
            "noop",
            payload(i, Some(unix_ms_f64())),
            &opts,
            RetryPolicy::default(),
        )?;
        client.enqueue_raw(queue, vec![job]).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while samples.lock().unwrap_or_else(|e| e.into_inner()).len() < total
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.shutdown().await?;
    let mut s = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if s.len() < total {
        eprintln!("warning: only {} of {total} latency jobs seen", s.len());
    }
    if s.is_empty() {
        return Err("no latency samples".into());
    }
    s.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| s[((p * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
    Ok((pct(0.5), pct(0.99), s[s.len() - 1]))
}
