//! `taskyard bench --scenario NAME`: one executable proof per Kafka pain (README, docs/scenarios.md),
//! plus the fault scenarios, each printing its figures and whether its invariant held.
//!
//! Scenarios that need several workers run them as real `taskyard bench worker`
//! processes (this same binary, through [`taskyard_cli::process`], as the tests do), so a
//! kill is a real SIGKILL; the books are kept from the `record` files those workers append
//! to before each completion.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use taskyard::{
    Client, EnqueueOptions, JobContext, JobError, JobId, JobState, NewJob, QueueName, RetryPolicy,
    Worker,
};

use crate::open::{self, Create};
use taskyard::AnyStore;
use taskyard_cli::process::{WorkerProcess, records};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// The scenarios, by name.
pub(crate) const NAMES: [&str; 9] = [
    "long-jobs",
    "concurrency",
    "add-worker",
    "poison",
    "backlog",
    "kill-under-load",
    "zombie",
    "poison-process",
    "connection-cut",
];

/// What a scenario prints.
#[derive(serde::Serialize)]
pub(crate) struct Verdict {
    scenario: String,
    store: &'static str,
    /// Whether the invariant held.
    ok: bool,
    /// The invariant, in words.
    invariant: &'static str,
    figures: serde_json::Value,
}

/// Sizes: full by default, `--quick` for tests.
#[derive(Clone, Copy)]
struct Size {
    quick: bool,
}

impl Size {
    fn pick<T>(self, full: T, quick: T) -> T {
        if self.quick { quick } else { full }
    }
}

pub(crate) async fn run(url: Option<String>, name: &str, quick: bool, json: bool) -> Res<()> {
    if !NAMES.contains(&name) {
        return Err(format!("unknown scenario {name:?}: one of {}", NAMES.join(", ")).into());
    }
    let store = open::open(url.as_deref(), Create::Yes).await?;
    let url = url.unwrap_or_else(|| taskyard::sqlite::DEFAULT_PATH.to_string());
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let queue = QueueName::new(format!("scn-{name}-{stamp}"))?;
    let dir =
        std::env::temp_dir().join(format!("taskyard-scenario-{}-{stamp}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ctx = Ctx {
        store: store.clone(),
        url,
        queue: queue.clone(),
        dir: dir.clone(),
        size: Size { quick },
    };
    let result = match name {
        "long-jobs" => long_jobs(&ctx).await,
        "concurrency" => concurrency(&ctx).await,
        "add-worker" => add_worker(&ctx).await,
        "poison" => poison(&ctx).await,
        "backlog" => backlog(&ctx).await,
        "kill-under-load" => kill_under_load(&ctx).await,
        "zombie" => zombie(&ctx).await,
        "poison-process" => poison_process(&ctx).await,
        _ => connection_cut(&ctx).await,
    };
    let _ = store.delete_queue(&queue).await;
    let _ = std::fs::remove_dir_all(&dir);
    let (ok, invariant, figures) = result?;
    let verdict = Verdict {
        scenario: name.to_string(),
        store: store.kind(),
        ok,
        invariant,
        figures,
    };
    if json {
        println!("{}", serde_json::to_string(&verdict)?);
    } else {
        println!(
            "{name} on {}: {} — {invariant}",
            verdict.store,
            if ok { "held" } else { "FAILED" }
        );
        println!("{}", serde_json::to_string_pretty(&verdict.figures)?);
    }
    if ok {
        Ok(())
    } else {
        Err(format!("scenario {name}: the invariant did not hold").into())
    }
}

type Outcome = Res<(bool, &'static str, serde_json::Value)>;

struct Ctx {
    store: AnyStore,
    url: String,
    queue: QueueName,
    dir: PathBuf,
    size: Size,
}

impl Ctx {
    fn client(&self) -> Client {
        Client::new(self.store.shared())
    }

    fn opts(&self) -> EnqueueOptions {
        EnqueueOptions::default().queue(self.queue.as_str())
    }

    /// Enqueues `n` jobs of one kind and payload, in batches; returns their ids.
    async fn enqueue(
        &self,
        n: usize,
        kind: &str,
        payload: &str,
        opts: &EnqueueOptions,
    ) -> Res<Vec<JobId>> {
        let mut ids = Vec::with_capacity(n);
        let mut left = n;
        while left > 0 {
            let k = left.min(1000);
            let batch = (0..k)
                .map(|_| {
                    NewJob::new(
                        kind,
                        payload.as_bytes().to_vec(),
                        opts,
                        RetryPolicy::default(),
                    )
                })
                .collect::<taskyard::Result<Vec<_>>>()?;
            ids.extend(self.client().enqueue_raw(&self.queue, batch).await?);
            left -= k;
        }
        Ok(ids)
    }

    /// One job of the scenario's queue, which must still exist.
    async fn job(&self, id: &JobId) -> Res<taskyard::JobInfo> {
        let job = self.store.shared().job(&self.queue, id).await?;
        Ok(job.ok_or_else(|| format!("job {id} is gone"))?)
    }

    async fn stats(&self) -> Res<taskyard::QueueStats> {
        Ok(self.store.shared().stats(&self.queue).await?)
    }

    /// A worker process on this scenario's queue, recording to `<name>.record`.
    fn spawn(&self, name: &str, args: &[&str]) -> Res<WorkerProcess> {
        self.spawn_on(&self.url, name, args)
    }

    /// The same on another URL of the store (through a proxy).
    fn spawn_on(&self, store: &str, name: &str, args: &[&str]) -> Res<WorkerProcess> {
        let args = [&["--queue", self.queue.as_str()], args].concat();
        let exe = std::env::current_exe()?;
        Ok(WorkerProcess::start(exe, store, &self.dir, name, &args)?)
    }

    /// Waits until `done` holds, or fails after `within`.
    async fn until(
        &self,
        what: &str,
        within: Duration,
        mut done: impl AsyncFnMut() -> Res<bool>,
    ) -> Res<()> {
        let deadline = Instant::now() + within;
        while !done().await? {
            if Instant::now() > deadline {
                return Err(
                    format!("timed out after {} s waiting for {what}", within.as_secs()).into(),
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Waits until the queue has nothing ready, scheduled or running.
    async fn drained(&self, within: Duration) -> Res<()> {
        self.until("the queue to drain", within, async || {
            let s = self.stats().await?;
            Ok(s.ready + s.scheduled + s.running == 0)
        })
        .await
    }
}

/// A worker running in this process until stopped.
struct InProcess {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<taskyard::Result<()>>,
}

impl InProcess {
    fn start(worker: Worker) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(worker.run(async {
            let _ = stopped.await;
        }));
        InProcess { stop, task }
    }

    /// Stops it gracefully and waits for it.
    async fn stop(self) -> Res<()> {
        let _ = self.stop.send(());
        Ok(self.task.await??)
    }
}

/// Lost (expected, never run), unexpected (run, never enqueued) and duplicated (run
/// more than once) jobs.
fn books(expected: &[JobId], runs: &[(String, u32)]) -> (usize, usize, usize) {
    let expected: HashSet<&str> = expected.iter().map(|id| id.as_str()).collect();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (id, _) in runs {
        *seen.entry(id.as_str()).or_default() += 1;
    }
    let lost = expected.iter().filter(|id| !seen.contains_key(*id)).count();
    let unexpected = seen.keys().filter(|id| !expected.contains(*id)).count();
    let duplicated = seen.values().filter(|n| **n > 1).count();
    (lost, unexpected, duplicated)
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// Jobs lasting 5× the lease complete exactly once: heartbeats keep their leases.
async fn long_jobs(c: &Ctx) -> Outcome {
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
    let running = InProcess::start(worker);
    c.until("every long job to complete", run * 4, async || {
        Ok(counters.completed() >= n as u64)
    })
    .await?;
    let elapsed = start.elapsed();
    // Past their leases several times over: a redelivery would have shown by now.
    tokio::time::sleep(lease * 2).await;
    running.stop().await?;
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

/// 1,000 concurrent 100 ms jobs on one queue: ≥ 9,000 jobs/s.
async fn concurrency(c: &Ctx) -> Outcome {
    let n = c.size.pick(60_000, 30_000);
    let concurrency = 1000;
    let ids = c.enqueue(n, "sleep", r#"{"ms":100}"#, &c.opts()).await?;
    let worker = super::worker::test_handlers(
        Worker::builder(c.store.shared())
            .queue(c.queue.as_str())
            .concurrency(concurrency),
        None,
    )
    .build()?;
    let counters = worker.counters();
    let start = Instant::now();
    let running = InProcess::start(worker);
    c.until(
        "every job to complete",
        Duration::from_secs(120),
        async || Ok(counters.completed() >= n as u64),
    )
    .await?;
    let elapsed = start.elapsed();
    running.stop().await?;
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

/// A second worker process started in the middle of a backlog takes its share within 1 s.
async fn add_worker(c: &Ctx) -> Outcome {
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

/// One always-failing job among healthy ones: they all complete; it reaches dead after
/// its attempts, each retry within the policy's backoff.
async fn poison(c: &Ctx) -> Outcome {
    let healthy = c.size.pick(10_000, 2_000);
    let policy = RetryPolicy::default()
        .max_attempts(5)
        .base(Duration::from_millis(200))
        .cap(Duration::from_secs(5));
    let poison = c
        .enqueue(1, "flaky", r#"{"fail":1000000}"#, &c.opts().retry(policy))
        .await?
        .remove(0);
    c.enqueue(healthy, "noop", "{}", &c.opts()).await?;
    let worker = super::worker::test_handlers(
        Worker::builder(c.store.shared())
            .queue(c.queue.as_str())
            .concurrency(50),
        None,
    )
    .build()?;
    let counters = worker.counters();
    let start = Instant::now();
    let running = InProcess::start(worker);
    let healthy_done = Arc::new(AtomicU64::new(0));
    c.until(
        "the healthy jobs to complete and the poison to die",
        Duration::from_secs(60),
        async || {
            if counters.completed() >= healthy as u64 && healthy_done.load(Ordering::Relaxed) == 0 {
                healthy_done.store(ms(start.elapsed()).max(1), Ordering::Relaxed);
            }
            Ok(c.stats().await?.dead == 1)
        },
    )
    .await?;
    let dead_after = start.elapsed();
    c.until(
        "the healthy jobs to complete",
        Duration::from_secs(60),
        async || Ok(counters.completed() >= healthy as u64),
    )
    .await?;
    running.stop().await?;
    let job = c.job(&poison).await?;
    // Attempt n+1 starts after a delay in [0, ceiling(n)]; allow 1 s for pickup.
    let times: Vec<u64> = job.errors.iter().map(|e| e.at_ms).collect();
    let gaps: Vec<u64> = times
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .collect();
    let ceilings: Vec<u64> = (1..times.len() as u32)
        .map(|n| ms(policy.ceiling(n)))
        .collect();
    let within = gaps.iter().zip(&ceilings).all(|(g, c)| *g <= c + 1000);
    let ok = job.state == JobState::Dead
        && job.attempt == 5
        && job.errors.len() == 5
        && within
        && counters.completed() == healthy as u64;
    Ok((
        ok,
        "healthy jobs all complete; the failing one is dead after 5 attempts, each retry within its backoff",
        json!({
            "healthy": healthy, "healthy_completed": counters.completed(),
            "healthy_done_ms": healthy_done.load(Ordering::Relaxed),
            "poison_state": job.state, "poison_attempts": job.attempt,
            "retry_gaps_ms": gaps, "backoff_ceilings_ms": ceilings,
            "dead_after_ms": ms(dead_after),
        }),
    ))
}

/// A large backlog: bytes per queued job, and the enqueue rate stays flat.
async fn backlog(c: &Ctx) -> Outcome {
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

/// Three worker processes, one killed with SIGKILL at random points every few seconds
/// and restarted: the others never stop completing, the books balance, and the only runs
/// that come back are those the killed worker held at its kill.
async fn kill_under_load(c: &Ctx) -> Outcome {
    // Three workers of concurrency 20 run at most 3,000 of these jobs a second: the quick
    // run lasts at least 3 s, time for four kills.
    let n = c.size.pick(30_000, 9_000);
    let every = c
        .size
        .pick(Duration::from_secs(2), Duration::from_millis(500));
    // 20 ms jobs that record themselves as they start: a worker's running jobs are
    // recorded and not yet reported, so a kill leaves runs that must come back.
    let ids = c
        .enqueue(n, "record", r#"{"after_ms":20}"#, &c.opts())
        .await?;
    let args = ["--concurrency", "20", "--lease", "2s"];
    let names = ["w0", "w1", "w2"];
    let mut workers: Vec<WorkerProcess> = names
        .iter()
        .map(|name| c.spawn(name, &args))
        .collect::<Res<_>>()?;
    // Each worker process is a generation with a record file of its own: w0, w0-1, …
    let mut current: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut all_names = current.clone();
    let mut kills: Vec<Kill> = Vec::new();
    let mut next_kill = Instant::now() + every;
    let mut last_total = 0;
    let mut last_change = Instant::now();
    let mut longest_gap = Duration::ZERO;
    loop {
        let refs: Vec<&str> = all_names.iter().map(|s| s.as_str()).collect();
        let runs = records(&c.dir, &refs);
        let done: HashSet<&str> = runs.iter().map(|(id, _)| id.as_str()).collect();
        // A gap counts while jobs wait: at the end, when only the jobs of a killed
        // worker are left (back after their lease), idle survivors are not stopped.
        if runs.len() != last_total {
            last_total = runs.len();
            last_change = Instant::now();
        } else if c.stats().await?.ready > 0 {
            longest_gap = longest_gap.max(last_change.elapsed());
        }
        if done.len() >= n {
            break;
        }
        if Instant::now() >= next_kill {
            let victim = kills.len() % workers.len();
            workers[victim].kill9()?;
            // Right after the kill, what the store still has running: the killed
            // worker's leases stay until they expire (2 s), so every run it held is here,
            // with the attempt it ran under.
            let running = c
                .store
                .shared()
                .list(&c.queue, JobState::Running, 0, u64::MAX >> 1)
                .await?
                .into_iter()
                .map(|j| (j.id.to_string(), j.attempt))
                .collect();
            kills.push(Kill {
                worker: current[victim].clone(),
                running,
            });
            let name = format!("{}-{}", names[victim], kills.len());
            workers[victim] = c.spawn(&name, &args)?;
            current[victim] = name.clone();
            all_names.push(name);
            // At random points: the next kill lands anywhere in [every/2, 3*every/2].
            next_kill = Instant::now() + every / 2 + every.mul_f64(rand::random::<f64>());
        }
        if last_change.elapsed() > Duration::from_secs(60) {
            return Err("no completion for 60 s".into());
        }
        // Reading the books costs CPU the workers need: look every 50 ms.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.drained(Duration::from_secs(30)).await?;
    for w in &mut workers {
        w.stop()?;
    }
    let refs: Vec<&str> = all_names.iter().map(|s| s.as_str()).collect();
    let (lost, unexpected, duplicated) = books(&ids, &records(&c.dir, &refs));
    let reruns = reruns(&c.dir, &all_names, &kills);
    let dead = c.stats().await?.dead;
    let within_bound = reruns.per_kill.iter().all(|k| k.ran_again <= k.bound);
    let ok = lost == 0
        && unexpected == 0
        && dead == 0
        && reruns.unexplained.is_empty()
        && within_bound
        && reruns.jobs == duplicated
        && longest_gap < Duration::from_secs(1);
    let bound: usize = reruns.per_kill.iter().map(|k| k.bound).sum();
    let after_kill: usize = reruns.per_kill.iter().map(|k| k.ran_again).sum();
    Ok((
        ok,
        "with a worker SIGKILLed every few seconds: lost 0, unexpected 0, nothing dead; a run \
         comes back only if the killed worker held it at its kill (or the store refused its \
         outcome); completions never stop for 1 s",
        json!({
            "jobs": n, "kills": kills.len(), "lost": lost, "unexpected": unexpected,
            "duplicated": duplicated, "dead": dead, "longest_gap_ms": ms(longest_gap),
            "reruns_after_kill": after_kill, "reruns_bound": bound,
            "reruns_within_bound": within_bound,
            "reruns_after_refusal": reruns.after_refusal,
            "rerun_jobs": reruns.jobs,
            "unexplained_reruns": reruns.unexplained.len(),
            "unexplained_examples": reruns.unexplained.iter().take(10).collect::<Vec<_>>(),
            "per_kill": reruns.per_kill.iter().map(|k| json!({
                "worker": k.worker, "running_at_kill": k.running_at_kill,
                "held_recorded_runs": k.bound, "ran_again": k.ran_again,
            })).collect::<Vec<_>>(),
        }),
    ))
}

/// One SIGKILL: the worker process killed, and the store's running jobs (id, attempt)
/// read right after it.
struct Kill {
    worker: String,
    running: HashSet<(String, u32)>,
}

/// The figures of one kill.
struct KillFigures {
    worker: String,
    running_at_kill: usize,
    /// The killed worker's recorded runs still running under its claim after the kill:
    /// recorded, their completion not recorded. The most of its runs that may come back.
    bound: usize,
    /// Its recorded runs that ran again.
    ran_again: usize,
}

/// Which runs came back, and why.
struct Reruns {
    per_kill: Vec<KillFigures>,
    /// Runs that came back whose outcome the store had refused (the worker's lease
    /// expired first: it logs "outcome rejected").
    after_refusal: usize,
    /// Runs that came back with neither reason: a recorded completion came back.
    unexplained: Vec<String>,
    /// Jobs that ran more than once.
    jobs: usize,
}

/// Checks every run that was followed by another run of the same job (a later attempt):
/// its worker was SIGKILLed and the job was still running under that attempt right after
/// the kill, or the store refused its outcome. Anything else is a recorded completion that
/// came back, or two runs of one claim.
fn reruns(dir: &Path, workers: &[String], kills: &[Kill]) -> Reruns {
    let mut by_job: HashMap<String, Vec<(u32, &str)>> = HashMap::new();
    let mut recorded: HashMap<&str, Vec<(String, u32)>> = HashMap::new();
    for w in workers {
        let runs = records(dir, &[w.as_str()]);
        for (id, attempt) in &runs {
            by_job
                .entry(id.clone())
                .or_default()
                .push((*attempt, w.as_str()));
        }
        recorded.insert(w.as_str(), runs);
    }
    let refused = |w: &str, id: &str| {
        std::fs::read_to_string(dir.join(format!("{w}.stderr")))
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("outcome rejected") && l.contains(id))
    };
    let killed: HashMap<&str, &Kill> = kills.iter().map(|k| (k.worker.as_str(), k)).collect();
    let mut ran_again: HashMap<&str, usize> = HashMap::new();
    let (mut after_refusal, mut unexplained, mut jobs) = (0, Vec::new(), 0);
    for (id, runs) in &mut by_job {
        if runs.len() < 2 {
            continue;
        }
        jobs += 1;
        runs.sort_unstable();
        let last = runs.len() - 1;
        for (i, &(attempt, w)) in runs.iter().enumerate().take(last) {
            let later_attempt = runs[i + 1].0 > attempt;
            let held_at_kill = killed
                .get(w)
                .is_some_and(|k| k.running.contains(&(id.clone(), attempt)));
            if later_attempt && held_at_kill {
                *ran_again.entry(w).or_default() += 1;
            } else if later_attempt && refused(w, id) {
                after_refusal += 1;
            } else {
                unexplained.push(format!("{id} attempt {attempt} by {w}"));
            }
        }
    }
    let per_kill = kills
        .iter()
        .map(|k| KillFigures {
            worker: k.worker.clone(),
            running_at_kill: k.running.len(),
            bound: recorded.get(k.worker.as_str()).map_or(0, |runs| {
                runs.iter().filter(|r| k.running.contains(*r)).count()
            }),
            ran_again: ran_again.get(k.worker.as_str()).copied().unwrap_or(0),
        })
        .collect();
    Reruns {
        per_kill,
        after_refusal,
        unexplained,
        jobs,
    }
}

/// A worker stopped (SIGSTOP) past its lease, its job claimed by another, then resumed
/// while the other still runs the job: its completion is refused, and the other's holds.
async fn zombie(c: &Ctx) -> Outcome {
    let id = c
        .enqueue(1, "record", r#"{"ms":3000}"#, &c.opts())
        .await?
        .remove(0);
    let mut zombie = c.spawn("zombie", &["--concurrency", "1", "--lease", "1s"])?;
    c.until("the job to run", Duration::from_secs(10), async || {
        Ok(c.stats().await?.running == 1)
    })
    .await?;
    zombie.signal("-STOP")?;
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
    let other = InProcess::start(other);
    c.until(
        "the other worker to take the job",
        Duration::from_secs(20),
        async || Ok(!started.lock().unwrap_or_else(|e| e.into_inner()).is_empty()),
    )
    .await?;
    let before = c.store.shared().job(&c.queue, &id).await?;
    let paused = stopped.elapsed();
    zombie.signal("-CONT")?;
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
    other.stop().await?;
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

/// The number after `what ` in a worker's books line ("…; completed 0, failed 0, stale 1").
fn count_in(books: &str, what: &str) -> Option<u64> {
    let (_, rest) = books.split_once(&format!(" {what} "))?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// A job that kills its worker process ends in dead after its attempts (counted at
/// claim), while healthy jobs complete.
async fn poison_process(c: &Ctx) -> Outcome {
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

/// Workers reach Redis through a TCP proxy that cuts every connection five times a
/// second, mid-batch: they reconnect and nothing is lost.
async fn connection_cut(c: &Ctx) -> Outcome {
    let Some((target, via)) = split_redis_url(&c.url) else {
        return Err(
            "connection-cut needs a redis:// store (it cuts the workers' connections)".into(),
        );
    };
    let proxy = Proxy::start(target).await?;
    let proxied = via(&proxy.addr);
    // Two workers of concurrency 20 run at most 2,000 of these 20 ms jobs a second: the
    // quick run lasts at least 2 s, about ten cut rounds.
    let n = c.size.pick(20_000, 4_000);
    let ids = c.enqueue(n, "record", r#"{"ms":20}"#, &c.opts()).await?;
    let args = ["--concurrency", "20", "--lease", "5s"];
    let mut workers: Vec<WorkerProcess> = ["a", "b"]
        .iter()
        .map(|name| c.spawn_on(&proxied, name, &args))
        .collect::<Res<_>>()?;
    let (mut cuts, mut rounds) = (0, 0);
    // Per cut connection, the command of the request it was waiting on ("none": idle).
    let mut pending: BTreeMap<String, usize> = BTreeMap::new();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(120);
    // How long the cuts lasted: while the backlog did.
    let mut cut_for = None;
    loop {
        let done: HashSet<String> = records(&c.dir, &["a", "b"])
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        if done.len() >= n {
            break;
        }
        if Instant::now() > deadline {
            return Err("the workers did not finish within 120 s".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The cuts last while jobs wait to be claimed; the rest (jobs whose claim's
        // answer was cut come back after their lease) runs uncut. Cut on, that tail can
        // stall with the workers idle between calls: an aimed round tends to cut each
        // new claim of those jobs (a lease more each time), an unaimed one every call (a
        // worker finds its connection cut only when a call fails on it).
        if cut_for.is_none() && c.stats().await?.ready == 0 {
            cut_for = Some(start.elapsed());
        }
        if cut_for.is_some() {
            continue;
        }
        // Aimed at a batch: the round waits (up to 1 s) for a worker to send a script,
        // then cuts every connection while the server has it and its answer is on the way.
        let _ = tokio::time::timeout(Duration::from_secs(1), proxy.script_sent()).await;
        let cut = proxy.cut();
        cuts += cut.len();
        rounds += usize::from(!cut.is_empty());
        for command in cut {
            *pending
                .entry(command.unwrap_or_else(|| "none".into()))
                .or_default() += 1;
        }
    }
    c.drained(Duration::from_secs(30)).await?;
    // Stopped off this thread: the proxy runs here and must keep serving the workers'
    // last calls while they shut down.
    for w in workers.drain(..) {
        tokio::task::spawn_blocking(move || {
            let mut w = w;
            w.stop().map_err(|e| e.to_string())
        })
        .await??;
    }
    let (lost, unexpected, duplicated) = books(&ids, &records(&c.dir, &["a", "b"]));
    let dead = c.stats().await?.dead;
    // The cuts that broke a store call in flight: a script (claim, finish, heartbeat,
    // maintenance) sent and not yet answered. An idle BLPOP cut is not one.
    let in_flight: usize = ["EVALSHA", "EVAL"]
        .iter()
        .filter_map(|c| pending.get(*c))
        .sum();
    Ok((
        lost == 0 && unexpected == 0 && dead == 0,
        "connections cut mid-batch: workers reconnect, lost 0, unexpected 0, nothing dead",
        json!({
            "jobs": n, "connections_cut": cuts, "cut_rounds": rounds,
            "cut_for_ms": cut_for.map(ms), "elapsed_ms": ms(start.elapsed()),
            "cuts_in_flight": in_flight, "cuts_by_pending_command": pending,
            "lost": lost, "unexpected": unexpected, "dead": dead,
            "duplicated": duplicated,
        }),
    ))
}

/// The `host:port` a redis:// URL names, and a function making the same URL for another
/// address (no TLS: the proxy passes bytes, not TLS sessions).
fn split_redis_url(url: &str) -> Option<(String, impl Fn(&str) -> String)> {
    let rest = url.strip_prefix("redis://")?;
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((auth, rest)) => (format!("{auth}@"), rest),
        None => (String::new(), rest),
    };
    let (host, path) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let target = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:6379")
    };
    let path = path.to_string();
    Some((target, move |addr: &str| {
        format!("redis://{auth}{addr}{path}")
    }))
}

/// What the proxy knows of one connection's requests: the command of the last one the
/// client sent, while the server has not answered since (`None`: nothing unanswered).
type Pending = Arc<Mutex<Option<String>>>;

/// One connection the proxy carries.
struct Conn {
    task: tokio::task::AbortHandle,
    pending: Pending,
}

/// A TCP proxy that can cut every connection it carries.
struct Proxy {
    addr: String,
    conns: Arc<Mutex<Vec<Conn>>>,
    /// Told each time a client's script request (EVALSHA, EVAL) has been passed on.
    sent: Arc<tokio::sync::Notify>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: String) -> Res<Proxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let conns: Arc<Mutex<Vec<Conn>>> = Arc::default();
        let sent: Arc<tokio::sync::Notify> = Arc::default();
        let list = conns.clone();
        let told = sent.clone();
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let pending = Pending::default();
                let task = tokio::spawn(Self::carry(
                    inbound,
                    target.clone(),
                    pending.clone(),
                    told.clone(),
                ));
                list.lock().unwrap_or_else(|e| e.into_inner()).push(Conn {
                    task: task.abort_handle(),
                    pending,
                });
            }
        });
        Ok(Proxy {
            addr,
            conns,
            sent,
            accept,
        })
    }

    /// Resolves the next time a client's script request has been passed to the server.
    fn script_sent(&self) -> tokio::sync::futures::Notified<'_> {
        self.sent.notified()
    }

    /// Passes bytes both ways, noting what is unanswered: a request is noted before it is
    /// passed on (so its answer cannot clear the note first), and any bytes from the
    /// server clear it. Pipelined requests answered in part look answered: the count
    /// of cuts in flight can be low, never high.
    async fn carry(
        inbound: tokio::net::TcpStream,
        target: String,
        pending: Pending,
        sent: Arc<tokio::sync::Notify>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
            return;
        };
        let (mut client_rx, mut client_tx) = inbound.into_split();
        let (mut server_rx, mut server_tx) = outbound.into_split();
        let note = |command: Option<String>| {
            let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
            *p = match command {
                // The rest of a request already noted keeps its command.
                Some(c) if c.is_empty() => p.take().or(Some("?".into())),
                c => c,
            };
        };
        let up = async {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = client_rx.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<(), std::io::Error>(());
                }
                let command = command_of(&buf[..n]);
                let script = command == "EVALSHA" || command == "EVAL";
                note(Some(command));
                server_tx.write_all(&buf[..n]).await?;
                if script {
                    sent.notify_waiters();
                }
            }
        };
        let down = async {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = server_rx.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<(), std::io::Error>(());
                }
                note(None);
                client_tx.write_all(&buf[..n]).await?;
            }
        };
        tokio::select! {
            _ = up => {}
            _ = down => {}
        }
    }

    /// Drops every open connection; returns, per connection dropped, the command it was
    /// waiting on (`None`: nothing unanswered).
    fn cut(&self) -> Vec<Option<String>> {
        let conns = std::mem::take(&mut *self.conns.lock().unwrap_or_else(|e| e.into_inner()));
        let mut cut = Vec::new();
        for c in conns {
            if !c.task.is_finished() {
                // Aborted under the note's lock: no answer can slip in between.
                let pending = c.pending.lock().unwrap_or_else(|e| e.into_inner());
                c.task.abort();
                cut.push(pending.clone());
            }
        }
        cut
    }
}

/// The command a chunk of client bytes starts, upper case, if it starts a RESP request
/// (`*N\r\n$L\r\nNAME…`); empty if it does not (the rest of a request).
fn command_of(chunk: &[u8]) -> String {
    let name = (|| {
        let rest = chunk.strip_prefix(b"*")?;
        let rest = &rest[rest.windows(2).position(|w| w == b"\r\n")? + 2..];
        let rest = rest.strip_prefix(b"$")?;
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        let len: usize = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
        let name = rest.get(end + 2..end + 2 + len)?;
        Some(String::from_utf8_lossy(name).to_ascii_uppercase())
    })();
    name.unwrap_or_default()
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
