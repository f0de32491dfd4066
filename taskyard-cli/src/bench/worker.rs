//! `taskyard bench worker`: a worker process with built-in test handlers, so scenarios
//! and fault tests can drive real processes from outside (start, kill -9, stop, resume).
//!
//! Handlers, by job kind:
//! - `noop`: succeeds at once;
//! - `sleep`: sleeps `{"ms": N}`, then succeeds;
//! - `flaky`: fails its first `{"fail": N}` attempts, then succeeds;
//! - `poison`: kills its own process (abort), every attempt;
//! - `record`: sleeps `{"ms": N}` if given, then appends `job_id attempt` as one line to
//!   the `--record` file, written before the job is reported complete; then sleeps
//!   `{"after_ms": M}` if given (a run recorded and not yet reported, for a kill to find);
//! - `span`: appends `start KEY id attempt unix_us` to the `--record` file, sleeps
//!   `{"ms": N}`, appends `end KEY id attempt unix_us` and succeeds: the run's span, for
//!   the `unique` scenario to check that two jobs of one `{"key": KEY}` never overlap.
//!   A run told its job was cancelled appends `cancelled KEY id attempt unix_us` at
//!   once and stops (the `cancel` scenario's latency).

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use std::fs::File;

use taskyard::{JobContext, JobError, RetryPolicy, StopReason, Worker, WorkerBuilder};

use crate::commands::parse_duration;
use crate::open::{self, Create};

#[derive(Args)]
pub(crate) struct WorkerArgs {
    /// Queues to serve, first first (repeat the flag for more).
    #[arg(long = "queue", short, default_value = "default")]
    queues: Vec<String>,
    /// Jobs run at once.
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    /// Lease of each claim: 500ms, 30s, 5m.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    lease: Duration,
    /// First retry delay of failed jobs (full jitter, doubling, capped at 1h).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    retry_base: Duration,
    /// The file `record` jobs append to.
    #[arg(long)]
    record: Option<std::path::PathBuf>,
}

#[derive(serde::Deserialize, Default)]
struct Params {
    #[serde(default)]
    ms: u64,
    #[serde(default)]
    fail: u32,
    #[serde(default)]
    after_ms: u64,
    #[serde(default)]
    key: String,
}

fn params(payload: &[u8]) -> Params {
    serde_json::from_slice(payload).unwrap_or_default()
}

pub(crate) async fn run(
    url: Option<String>,
    args: WorkerArgs,
) -> Result<(), Box<dyn std::error::Error>> {
    // Handlers for SIGTERM and SIGINT before anything else: a stop that arrives while
    // the store is still opening is a graceful stop, not the default (instant) death.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    let store = open::open(url.as_deref(), Create::Yes).await?;
    let record = match &args.record {
        Some(path) => Some(Arc::new(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?,
        ))),
        None => None,
    };
    let mut builder = test_handlers(
        Worker::builder(store.shared())
            .concurrency(args.concurrency)
            .lease(args.lease)
            .default_retry(RetryPolicy::default().base(args.retry_base)),
        record,
    );
    for q in &args.queues {
        builder = builder.queue(q.as_str());
    }
    let worker = builder.build()?;
    eprintln!(
        "taskyard bench worker {}: serving {} on {} with concurrency {}",
        std::process::id(),
        args.queues.join(", "),
        store.kind(),
        args.concurrency
    );
    let counters = worker.counters();
    worker.run(stop).await?;
    // The books of this process, for scenarios and fault tests to read.
    eprintln!(
        "taskyard bench worker {}: stopped; completed {}, failed {}, stale {}",
        std::process::id(),
        counters.completed(),
        counters.failed(),
        counters.stale()
    );
    Ok(())
}

/// Adds the built-in test handlers (see the module docs) to a worker. `record` is the
/// file `record` jobs append to.
pub(crate) fn test_handlers(
    builder: WorkerBuilder,
    record: Option<Arc<Mutex<File>>>,
) -> WorkerBuilder {
    builder
        .handle_raw("noop", |_ctx, _payload| async { Ok::<(), JobError>(()) })
        .handle_raw("sleep", |_ctx, payload| {
            let ms = params(&payload).ms;
            async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok::<(), JobError>(())
            }
        })
        .handle_raw("flaky", |ctx: JobContext, payload| {
            let fail = params(&payload).fail;
            let attempt = ctx.attempt();
            async move {
                if attempt <= fail {
                    Err(JobError::retry(format!(
                        "flaky: attempt {attempt} of the first {fail} fails"
                    )))
                } else {
                    Ok(())
                }
            }
        })
        .handle_raw("poison", |_ctx, _payload| async {
            // The job that takes its worker down: the process dies mid-job, as a
            // segfault or an out-of-memory kill would take it.
            std::process::abort();
            #[allow(unreachable_code)]
            Ok::<(), JobError>(())
        })
        .handle_raw("span", {
            let record = record.clone();
            move |ctx: JobContext, payload| {
                let Params { ms, key, .. } = params(&payload);
                let record = record.clone();
                async move {
                    let Some(file) = record else {
                        return Err(JobError::permanent("span jobs need --record FILE"));
                    };
                    let mark = |what: &str| {
                        let us = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_micros());
                        let line = format!("{what} {key} {} {} {us}\n", ctx.id(), ctx.attempt());
                        file.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .write_all(line.as_bytes())
                            .map_err(JobError::retry)
                    };
                    mark("start")?;
                    let cancelled = async {
                        if ctx.stopped().await != StopReason::Cancelled {
                            // Other stops (shutdown, a lost lease) let the run go on.
                            std::future::pending::<()>().await;
                        }
                    };
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(ms)) => mark("end"),
                        _ = cancelled => {
                            mark("cancelled")?;
                            Err(JobError::retry("cancelled"))
                        }
                    }
                }
            }
        })
        .handle_raw("record", move |ctx: JobContext, payload| {
            let Params { ms, after_ms, .. } = params(&payload);
            let record = record.clone();
            async move {
                if ms > 0 {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                let Some(file) = record else {
                    return Err(JobError::permanent("record jobs need --record FILE"));
                };
                let line = format!("{} {}\n", ctx.id(), ctx.attempt());
                file.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .write_all(line.as_bytes())
                    .map_err(JobError::retry)?;
                if after_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(after_ms)).await;
                }
                Ok(())
            }
        })
}
