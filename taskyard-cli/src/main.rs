//! The `taskyard` command: enqueue jobs, look at queues, redrive the dead, pause and
//! resume queues, and benchmark a store.
//!
//! Flags are parsed by clap into [`Cli`], then each command resolves its arguments into
//! library calls; every error ends as one line on stderr and a non-zero exit.

mod bench;
mod commands;
mod cron;
mod demo;
mod jsonl;
mod open;

use std::process::ExitCode;

// A worker allocates a few small buffers per job (reply parsing, leases, task state);
// glibc's allocator spent ~18% of the bench's worker CPU on them, mimalloc much less.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Args, Parser, Subcommand};

/// taskyard: a background job queue.
#[derive(Parser)]
#[command(name = "taskyard", version, about)]
struct Cli {
    /// The store: a file path or file: URL (default ./taskyard.db; add
    /// ?synchronous=normal for faster, less durable commits, max_size=BYTES to cap the
    /// file), or redis://[user:pass@]host[:port][/db], rediss://… for TLS.
    #[arg(long, env = "TASKYARD_STORE", global = true)]
    store: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a worker with example jobs on the store for about half a minute, with live
    /// progress and a summary: the quickest way to see taskyard work.
    Demo(demo::DemoArgs),
    /// Enqueue one job: `taskyard enqueue send_email '{"to":"ada@example.com"}'`; or many,
    /// one per JSON line: `taskyard enqueue --jsonl jobs.jsonl`.
    Enqueue(commands::EnqueueArgs),
    /// Counts per state of every queue (or one).
    Stats(commands::StatsArgs),
    /// List or show jobs.
    #[command(subcommand)]
    Jobs(commands::JobsCommand),
    /// The dead set: list, redrive, purge.
    #[command(subcommand)]
    Dead(commands::DeadCommand),
    /// Pause, resume or configure a queue.
    #[command(subcommand)]
    Queue(commands::QueueCommand),
    /// Periodic jobs: list, add, pause, resume, run, remove schedules.
    #[command(subcommand)]
    Cron(cron::CronCommand),
    /// Benchmark the store with the peer workload (see docs/benchmarks.md).
    Bench(bench::BenchArgs),
}

/// Flags shared by commands that act on one queue.
#[derive(Args, Clone)]
struct QueueArg {
    /// The queue.
    #[arg(long, short, default_value = "default")]
    queue: String,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TASKYARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // The bench runs its worker on one thread by default, as the peer (BullMQ, on Node)
    // does: on a small machine the other cores belong to Redis.
    let threads = match &cli.command {
        Command::Bench(args) if args.mode.is_none() => args.threads,
        _ => 0,
    };
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if threads > 1 {
            b.worker_threads(threads);
        }
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let url = cli.store;
    use open::Create::{No, ReadOnly, Yes};
    match cli.command {
        Command::Enqueue(args) => commands::enqueue(open::client(url, Yes).await?, args).await,
        Command::Stats(args) => commands::stats(open::client(url, ReadOnly).await?, args).await,
        Command::Jobs(cmd) => {
            let access = if cmd.only_reads() { ReadOnly } else { No };
            commands::jobs(open::client(url, access).await?, cmd).await
        }
        Command::Dead(cmd) => {
            let access = if cmd.only_reads() { ReadOnly } else { No };
            commands::dead(open::client(url, access).await?, cmd).await
        }
        Command::Queue(cmd) => {
            let access = if cmd.only_reads() { ReadOnly } else { Yes };
            commands::queue(open::client(url, access).await?, cmd).await
        }
        Command::Cron(cmd) => cron::run(open::client(url, cmd.access()).await?, cmd).await,
        Command::Bench(args) => bench::run(url, args).await,
        Command::Demo(args) => demo::run(url, args).await,
    }
}
