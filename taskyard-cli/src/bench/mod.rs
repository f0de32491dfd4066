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
//!   carries its enqueue time, the handler records the delay to its start;
//! - delayed-job lateness: with an idle worker running, jobs due at random times over a
//!   few seconds (the first 1 s after they are all added); each carries its due time, the
//!   handler records how late it started;
//! - periodic-job lateness (`--cron-ticks N`, off by default): with an idle worker
//!   running, a schedule every second; each handler records how late it started after
//!   its tick (the second its job was enqueued in, store time).

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
    /// Delayed jobs in the lateness phase (0 skips it).
    #[arg(long, default_value_t = 2000)]
    delayed_jobs: usize,
    /// Seconds over which the delayed jobs fall due.
    #[arg(long, default_value_t = 5.0)]
    delayed_secs: f64,
    /// Ticks of a schedule every second in the periodic-job lateness phase (0 skips it).
    #[arg(long, default_value_t = 0)]
    cron_ticks: usize,
    /// Give the jobs mixed priorities, to measure what priorities cost: `all` (job i
    /// gets i × 37 mod 101, so every level of 0–100 and almost no job the default) or a
    /// list of levels the jobs take in turn (`80,50,20`).
    #[arg(long, value_name = "all|P,P,…", value_parser = parse_levels)]
    priorities: Option<Levels>,
    /// Give every job a unique key of its own (mode finished), to measure what unique
    /// keys cost.
    #[arg(long)]
    unique_keys: bool,
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
    delayed_jobs: usize,
    late_p50_ms: f64,
    late_p99_ms: f64,
    late_max_ms: f64,
    late_min_ms: f64,
    cron_ticks: usize,
    tick_late_p50_ms: f64,
    tick_late_p99_ms: f64,
    tick_late_max_ms: f64,
    tick_late_min_ms: f64,
    threads: usize,
    /// The `--priorities` mix, if any.
    priorities: Option<String>,
    unique_keys: bool,
}

/// The priorities of `--priorities`.
#[derive(Clone)]
pub(crate) struct Levels {
    name: String,
    levels: Vec<i64>,
}

impl Levels {
    /// Job `i`'s priority.
    fn of(&self, i: usize) -> i64 {
        if self.levels.is_empty() {
            (i * 37 % 101) as i64
        } else {
            self.levels[i % self.levels.len()]
        }
    }
}

fn parse_levels(s: &str) -> Result<Levels, String> {
    let levels = if s == "all" {
        Vec::new()
    } else {
        s.split(',')
            .map(|p| {
                p.trim()
                    .parse::<i64>()
                    .ok()
                    .filter(|p| (0..=100).contains(p))
                    .ok_or_else(|| format!("priority {p:?} is not a whole number from 0 to 100"))
            })
            .collect::<Result<_, _>>()?
    };
    Ok(Levels {
        name: s.to_string(),
        levels,
    })
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
    let late_queue = QueueName::new(format!("bench-late-{stamp}"))?;
    let cron_queue = QueueName::new(format!("bench-cron-{stamp}"))?;
    let queues = [queue, lat_queue, late_queue, cron_queue];
    let result = measure(&store, &queues, &args).await;
    for q in &queues {
        store.delete_queue(q).await?;
    }
    let report = result?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "enqueue {} jobs/s, process {} jobs/s, {} bytes per queued job, pickup p50 {} ms p99 {} ms max {} ms, \
             delayed jobs late p50 {} ms p99 {} ms max {} ms",
            report.enqueue_per_s,
            report.process_per_s,
            report.bytes_per_queued_job,
            report.pickup_p50_ms,
            report.pickup_p99_ms,
            report.pickup_max_ms,
            report.late_p50_ms,
            report.late_p99_ms,
            report.late_max_ms
        );
        if report.cron_ticks > 0 {
            println!(
                "periodic job ticks ({}): started late p50 {} ms p99 {} ms max {} ms",
                report.cron_ticks,
                report.tick_late_p50_ms,
                report.tick_late_p99_ms,
                report.tick_late_max_ms
            );
        }
    }
    Ok(())
}

async fn measure(
    store: &AnyStore,
    [queue, lat_queue, late_queue, cron_queue]: &[QueueName; 4],
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
            .map(|i| {
                let mut opts = opts.clone();
                if let Some(levels) = &args.priorities {
                    opts = opts.priority(levels.of(i));
                }
                if args.unique_keys {
                    opts = opts.unique(format!("k{i}"), taskyard::UniqueMode::Finished);
                }
                NewJob::new("noop", payload(i, None), &opts, policy)
            })
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
    let late = if args.delayed_jobs > 0 {
        lateness(store, late_queue, args).await?
    } else {
        vec![0.0]
    };
    let ticks = if args.cron_ticks > 0 {
        tick_lateness(store, cron_queue, args).await?
    } else {
        vec![0.0]
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
        delayed_jobs: args.delayed_jobs,
        late_p50_ms: round(percentile(&late, 0.5)),
        late_p99_ms: round(percentile(&late, 0.99)),
        late_max_ms: round(late[late.len() - 1]),
        late_min_ms: round(late[0]),
        cron_ticks: args.cron_ticks,
        tick_late_p50_ms: round(percentile(&ticks, 0.5)),
        tick_late_p99_ms: round(percentile(&ticks, 0.99)),
        tick_late_max_ms: round(ticks[ticks.len() - 1]),
        tick_late_min_ms: round(ticks[0]),
        threads: args.threads,
        priorities: args.priorities.as_ref().map(|l| l.name.clone()),
        unique_keys: args.unique_keys,
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
    let (running, samples) = timing_worker(store, queue, args, |p: &Timed| p.t)?;
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
    Ok((percentile(&s, 0.5), percentile(&s, 0.99), s[s.len() - 1]))
}

/// Milliseconds, one per job, filled in by a worker's handlers.
type Samples = Arc<Mutex<Vec<f64>>>;

/// A worker running the bench's `noop` jobs that records, per job, how many ms after the
/// time `at` reads from its payload (its enqueue or due time) its handler started.
fn timing_worker<T: serde::de::DeserializeOwned + 'static>(
    store: &AnyStore,
    queue: &QueueName,
    args: &BenchArgs,
    at: fn(&T) -> f64,
) -> Result<(taskyard::WorkerHandle, Samples), Box<dyn std::error::Error>> {
    let samples = Arc::new(Mutex::new(Vec::new()));
    let s2 = samples.clone();
    let worker = Worker::builder(store.shared())
        .queue(queue.as_str())
        .concurrency(args.concurrency)
        .handle_raw("noop", move |_ctx, payload| {
            let now = unix_ms_f64();
            let res = serde_json::from_slice::<T>(&payload)
                .map(|p| {
                    s2.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(now - at(&p))
                })
                .map_err(JobError::permanent);
            async move { res }
        })
        .build()?;
    Ok((worker.spawn(), samples))
}

/// Periodic-job lateness: with an idle worker running (the bench's concurrency), a
/// schedule every second; each handler records how late it started after its tick.
/// A tick's job is enqueued in its tick's second (the worker wakes at the tick), so the
/// tick is that second of its enqueue time. Returns the samples, sorted.
async fn tick_lateness(
    store: &AnyStore,
    queue: &QueueName,
    args: &BenchArgs,
) -> Result<Vec<f64>, Box<dyn std::error::Error>> {
    let samples: Samples = Arc::new(Mutex::new(Vec::new()));
    let s2 = samples.clone();
    let worker = Worker::builder(store.shared())
        .queue(queue.as_str())
        .concurrency(args.concurrency)
        .handle_raw("tick", move |ctx, _payload| {
            let tick = ctx.enqueued_at_ms() / 1000 * 1000;
            s2.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(unix_ms_f64() - tick as f64);
            async { Ok::<(), JobError>(()) }
        })
        .build()?;
    let every_second = taskyard::schedule::Schedule::raw(
        "bench-tick",
        "* * * * * *",
        "tick",
        b"{}".to_vec(),
        &EnqueueOptions::default().queue(queue.as_str()),
        RetryPolicy::default(),
    )?;
    // Declared before the worker starts, so its first read of the schedules has it: a
    // schedule declared later is seen at the worker's next read, up to a maintenance
    // interval after its tick, which is not what this phase measures.
    Client::new(store.shared()).schedule(&every_second).await?;
    let running = worker.spawn();
    let deadline = Instant::now() + Duration::from_secs(args.cron_ticks as u64 + 30);
    while samples.lock().unwrap_or_else(|e| e.into_inner()).len() < args.cron_ticks
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.shutdown().await?;
    let mut s = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if s.len() < args.cron_ticks {
        return Err(format!("only {} of {} ticks ran", s.len(), args.cron_ticks).into());
    }
    s.truncate(args.cron_ticks);
    s.sort_by(|a, b| a.total_cmp(b));
    Ok(s)
}

/// The `p` quantile of sorted samples (nearest rank).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Delayed-job lateness: with an idle worker running, jobs due at random times over
/// `delayed_secs`, all added before the first falls due; each handler records how late
/// it started. Returns the samples, sorted.
async fn lateness(
    store: &AnyStore,
    queue: &QueueName,
    args: &BenchArgs,
) -> Result<Vec<f64>, Box<dyn std::error::Error>> {
    use rand::Rng;
    #[derive(serde::Deserialize)]
    struct Due {
        due: u64,
    }
    /// No job falls due before all of them are added.
    const LEAD_MS: u64 = 1000;
    let (running, samples) = timing_worker(store, queue, args, |p: &Due| p.due as f64)?;
    let client = Client::new(store.shared());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = unix_ms_f64() as u64;
    let spread_ms = (args.delayed_secs * 1000.0) as u64;
    let mut rng = rand::rng();
    let jobs = (0..args.delayed_jobs)
        .map(|n| {
            let due = start + LEAD_MS + rng.random_range(0..spread_ms.max(1));
            let opts = EnqueueOptions::default().run_at(UNIX_EPOCH + Duration::from_millis(due));
            let s = "x".repeat(100);
            let payload = format!(r#"{{"n":{n},"s":"{s}","due":{due}}}"#).into_bytes();
            NewJob::new("noop", payload, &opts, RetryPolicy::default())
        })
        .collect::<taskyard::Result<Vec<_>>>()?;
    for batch in jobs.chunks(args.batch) {
        client.enqueue_raw(queue, batch.to_vec()).await?;
    }
    if unix_ms_f64() as u64 > start + LEAD_MS {
        eprintln!("warning: adding the delayed jobs took longer than the lead time");
    }
    let deadline = Instant::now() + Duration::from_millis(LEAD_MS + spread_ms + 30_000);
    while samples.lock().unwrap_or_else(|e| e.into_inner()).len() < args.delayed_jobs
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.shutdown().await?;
    let mut s = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if s.len() < args.delayed_jobs {
        return Err(format!("only {} of {} delayed jobs ran", s.len(), args.delayed_jobs).into());
    }
    s.sort_by(|a, b| a.total_cmp(b));
    Ok(s)
}
