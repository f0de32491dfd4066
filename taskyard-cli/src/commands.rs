//! The inspection and admin commands.

use std::time::Duration;

use clap::{Args, Subcommand};
use taskyard::{
    Client, Cursor, DeadFilter, EnqueueOptions, Error, JobId, JobInfo, JobState, NewJob, Page,
    QueueName, RetryPolicy,
};

use crate::QueueArg;

type Res = Result<(), Box<dyn std::error::Error>>;

#[derive(Args)]
pub(crate) struct EnqueueArgs {
    /// The job kind.
    #[arg(required_unless_present = "jsonl")]
    kind: Option<String>,
    /// The JSON payload.
    #[arg(default_value = "{}")]
    payload: String,
    #[command(flatten)]
    queue: QueueArg,
    /// Run no sooner than this from now: 500ms, 30s, 5m, 2h.
    #[arg(long, value_parser = parse_duration)]
    delay: Option<Duration>,
    /// Attempts in all.
    #[arg(long)]
    max_attempts: Option<u32>,
    /// How long one run may take before it is stopped and retried: 500ms, 30s, 5m, up to
    /// 7 days. Default: the worker's timeout for the kind (30 minutes unless set).
    // Hyphen values allowed: `--timeout -5s` then gets the duration's own error rather
    // than clap's "unexpected argument".
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
    timeout: Option<Duration>,
    /// Enqueue one job per JSON line of this file (`-`: standard input), in bulk; prints
    /// the ids in input order. See `taskyard enqueue --help` and the README.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["kind", "delay", "max_attempts", "timeout"]
    )]
    jsonl: Option<String>,
}

#[derive(Args)]
pub(crate) struct StatsArgs {
    /// Only this queue.
    #[arg(long, short)]
    queue: Option<String>,
    /// One JSON line.
    #[arg(long)]
    json: bool,
    /// Repeat every second until interrupted.
    #[arg(long)]
    watch: bool,
}

#[derive(Subcommand)]
pub(crate) enum JobsCommand {
    /// Jobs in one state.
    List {
        /// scheduled, ready, running, completed or dead.
        #[arg(long)]
        state: JobState,
        #[command(flatten)]
        queue: QueueArg,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: u64,
        /// Start after this cursor: the one the previous page printed.
        #[arg(long, default_value = "")]
        after: String,
        /// JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// One job, with its errors.
    Show {
        /// The job id.
        id: String,
        #[command(flatten)]
        queue: QueueArg,
    },
}

#[derive(Subcommand)]
pub(crate) enum DeadCommand {
    /// Dead jobs, newest first.
    List {
        #[command(flatten)]
        queue: QueueArg,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: u64,
        /// JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Move dead jobs back to ready with fresh attempts.
    Redrive(DeadSelect),
    /// Delete dead jobs.
    Purge(DeadSelect),
}

#[derive(Args)]
pub(crate) struct DeadSelect {
    /// These job ids.
    ids: Vec<String>,
    /// Every dead job of this kind.
    #[arg(long, conflicts_with = "ids")]
    kind: Option<String>,
    /// Every dead job.
    #[arg(long, conflicts_with_all = ["ids", "kind"])]
    all: bool,
    #[command(flatten)]
    queue: QueueArg,
}

#[derive(Subcommand)]
pub(crate) enum QueueCommand {
    /// Stop workers from claiming; enqueues still succeed.
    Pause {
        /// The queue.
        queue: String,
    },
    /// Let workers claim again.
    Resume {
        /// The queue.
        queue: String,
    },
    /// Show or change a queue's settings.
    Config {
        /// The queue.
        queue: String,
        /// Max ready + scheduled jobs; 0 = no limit.
        #[arg(long)]
        max_len: Option<u64>,
        /// Dead jobs kept.
        #[arg(long)]
        dead_max: Option<u64>,
        /// Completed jobs kept; 0 = removed at once.
        #[arg(long)]
        completed_max: Option<u64>,
    },
}

impl DeadCommand {
    /// Whether the command only looks, so the store is opened read-only.
    pub(crate) fn only_reads(&self) -> bool {
        matches!(self, DeadCommand::List { .. })
    }
}

impl QueueCommand {
    /// Whether the command only looks (`queue config` without a setting to change).
    pub(crate) fn only_reads(&self) -> bool {
        matches!(
            self,
            QueueCommand::Config {
                max_len: None,
                dead_max: None,
                completed_max: None,
                ..
            }
        )
    }
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("invalid duration {s:?} ({e}): use 500ms, 30s, 5m, 2h or 1h 30m"))
}

pub(crate) async fn enqueue(client: Client, args: EnqueueArgs) -> Res {
    if let Some(source) = &args.jsonl {
        return crate::jsonl::enqueue(client, source, &args.queue.queue).await;
    }
    let kind = args.kind.unwrap_or_default();
    let queue = QueueName::new(args.queue.queue)?;
    let value: serde_json::Value = serde_json::from_str(&args.payload)
        .map_err(|e| Error::InvalidOption(format!("payload is not valid JSON: {e}")))?;
    let mut opts = EnqueueOptions::default();
    if let Some(d) = args.delay {
        opts = opts.delay(d);
    }
    if let Some(n) = args.max_attempts {
        opts = opts.max_attempts(n);
    }
    if let Some(t) = args.timeout {
        opts = opts.timeout(t);
    }
    let job = NewJob::new(
        &kind,
        serde_json::to_vec(&value)?,
        &opts,
        RetryPolicy::default(),
    )?;
    for done in client.enqueue_raw(&queue, vec![job]).await? {
        println!("{}", crate::jsonl::answer(&done));
    }
    Ok(())
}

pub(crate) async fn stats(client: Client, args: StatsArgs) -> Res {
    loop {
        let queues = match &args.queue {
            Some(q) => vec![QueueName::new(q.clone())?],
            None => client.queues().await?,
        };
        let mut all = Vec::with_capacity(queues.len());
        for q in &queues {
            all.push(client.stats(q).await?);
        }
        if args.json {
            println!("{}", serde_json::to_string(&all)?);
        } else {
            if args.watch {
                print!("\x1b[2J\x1b[H");
            }
            println!(
                "{:<24} {:>10} {:>10} {:>8} {:>10} {:>8}  paused",
                "queue", "ready", "scheduled", "running", "completed", "dead"
            );
            for s in &all {
                println!(
                    "{:<24} {:>10} {:>10} {:>8} {:>10} {:>8}  {}",
                    s.queue,
                    s.ready,
                    s.scheduled,
                    s.running,
                    s.completed,
                    s.dead,
                    if s.paused { "yes" } else { "no" }
                );
            }
        }
        if !args.watch {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// Prints a page of jobs on stdout and, when there is more, the cursor of the next page on
/// stderr (stdout stays one job per line with `--json`).
fn print_page(page: &Page, json: bool) -> Res {
    print_jobs(&page.jobs, json)?;
    if let Some(next) = &page.next {
        eprintln!("more: --after {next}");
    }
    Ok(())
}

fn print_jobs(jobs: &[JobInfo], json: bool) -> Res {
    if json {
        for j in jobs {
            println!("{}", serde_json::to_string(j)?);
        }
        return Ok(());
    }
    println!(
        "{:<12} {:<20} {:<10} {:>8}  last error",
        "id", "kind", "state", "attempt"
    );
    for j in jobs {
        let err = j.errors.last().map(|e| e.message.as_str()).unwrap_or("");
        println!(
            "{:<12} {:<20} {:<10} {:>8}  {}",
            j.id,
            j.kind,
            j.state,
            format!("{}/{}", j.attempt, j.max_attempts),
            err
        );
    }
    Ok(())
}

pub(crate) async fn jobs(client: Client, cmd: JobsCommand) -> Res {
    match cmd {
        JobsCommand::List {
            state,
            queue,
            limit,
            after,
            json,
        } => {
            let q = QueueName::new(queue.queue)?;
            let page = client.list(&q, state, &Cursor::new(after), limit).await?;
            print_page(&page, json)
        }
        JobsCommand::Show { id, queue } => {
            let q = QueueName::new(queue.queue)?;
            match client.job(&q, &JobId::new(id.clone())).await? {
                Some(job) => {
                    println!("{}", serde_json::to_string_pretty(&job)?);
                    Ok(())
                }
                None => Err(format!("no job {id} in queue {q}").into()),
            }
        }
    }
}

pub(crate) async fn dead(client: Client, cmd: DeadCommand) -> Res {
    match cmd {
        DeadCommand::List { queue, limit, json } => {
            let q = QueueName::new(queue.queue)?;
            let page = client
                .list(&q, JobState::Dead, &Cursor::start(), limit)
                .await?;
            print_page(&page, json)
        }
        DeadCommand::Redrive(sel) => {
            let (q, filter) = select(sel)?;
            let n = client.redrive(&q, &filter).await?;
            println!("redrove {n} jobs");
            Ok(())
        }
        DeadCommand::Purge(sel) => {
            let (q, filter) = select(sel)?;
            let n = client.purge(&q, &filter).await?;
            println!("purged {n} jobs");
            Ok(())
        }
    }
}

fn select(sel: DeadSelect) -> Result<(QueueName, DeadFilter), Box<dyn std::error::Error>> {
    let q = QueueName::new(sel.queue.queue)?;
    let filter = if sel.all {
        DeadFilter::All
    } else if let Some(kind) = sel.kind {
        DeadFilter::Kind(kind)
    } else if !sel.ids.is_empty() {
        DeadFilter::Ids(sel.ids.into_iter().map(JobId::new).collect())
    } else {
        return Err("say which dead jobs: ids, --kind KIND or --all".into());
    };
    Ok((q, filter))
}

pub(crate) async fn queue(client: Client, cmd: QueueCommand) -> Res {
    match cmd {
        QueueCommand::Pause { queue } => {
            client.pause(&QueueName::new(queue.clone())?).await?;
            println!("paused {queue}");
        }
        QueueCommand::Resume { queue } => {
            client.resume(&QueueName::new(queue.clone())?).await?;
            println!("resumed {queue}");
        }
        QueueCommand::Config {
            queue,
            max_len,
            dead_max,
            completed_max,
        } => {
            let q = QueueName::new(queue)?;
            let mut config = client.config(&q).await?;
            if max_len.is_some() || dead_max.is_some() || completed_max.is_some() {
                config.max_len = max_len.unwrap_or(config.max_len);
                config.dead_max = dead_max.unwrap_or(config.dead_max);
                config.completed_max = completed_max.unwrap_or(config.completed_max);
                client.configure(&q, &config).await?;
            }
            println!("{}", serde_json::to_string(&config)?);
        }
    }
    Ok(())
}
