//! The inspection and admin commands.

use std::time::Duration;

use clap::{Args, Subcommand};
use taskyard::{
    Bulk, Client, Cursor, EnqueueOptions, Error, Finished, JobFilter, JobId, JobInfo, JobState,
    NewJob, Page, QueueName, RetryPolicy, Skip, UniqueMode,
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
    /// Priority within the queue, 0 (last) to 100 (first); 50 when not given.
    #[arg(long, allow_hyphen_values = true)]
    priority: Option<i64>,
    /// A unique key, scoped to the queue: while a job with this key holds it, another
    /// enqueue adds nothing and prints the holder's id followed by `duplicate`.
    #[arg(long, value_name = "KEY")]
    unique: Option<String>,
    /// How long the key is held: queued (until a worker takes the job), finished (until
    /// it completes or dies), period (for --unique-period after enqueue) or debounce
    /// (while it is scheduled; a duplicate replaces its payload and due time).
    #[arg(
        long,
        value_name = "MODE",
        default_value = "finished",
        requires = "unique"
    )]
    unique_mode: String,
    /// The period of --unique-mode period: 500ms, 30s, 5m, up to 30 days.
    #[arg(long, value_parser = parse_duration, requires = "unique", allow_hyphen_values = true)]
    unique_period: Option<Duration>,
    /// Enqueue one job per JSON line of this file (`-`: standard input), in bulk; prints
    /// the ids in input order. See `taskyard enqueue --help` and the README.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["kind", "delay", "max_attempts", "timeout", "priority", "unique"]
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
        /// scheduled, ready, running, completed, dead or cancelled.
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
    /// One job, with its errors, progress (while it runs) and result (once completed).
    Show {
        /// The job id.
        id: String,
        #[command(flatten)]
        queue: QueueArg,
    },
    /// Make scheduled jobs (delayed, or waiting out a retry's backoff) ready at once.
    RunNow(Select),
    /// Delete ready and scheduled jobs (running jobs are left to finish; dead jobs are
    /// purged with `dead purge`).
    Delete(Select),
    /// Cancel ready, scheduled and running jobs: they end `cancelled` and never run
    /// again; a running job's handler is told to stop.
    Cancel(Select),
    /// Wait until a job has finished; print its result (completed), last error (dead) or
    /// that it was cancelled, as JSON. Fails unless it completed.
    Wait {
        /// The job id.
        id: String,
        /// Give up after this long (the job is left as it is).
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        timeout: Duration,
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
    Redrive(Select),
    /// Delete dead jobs.
    Purge(Select),
}

/// Which jobs a bulk command acts on, among those of the state it applies to.
#[derive(Args)]
pub(crate) struct Select {
    /// These job ids.
    ids: Vec<String>,
    /// Every job of this kind.
    #[arg(long, conflicts_with = "ids")]
    kind: Option<String>,
    /// Every job.
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
    /// Delete a queue with everything in it: jobs in every state, unique keys,
    /// settings. Workers running its jobs have their outcomes refused.
    Delete {
        /// The queue.
        queue: String,
        /// Really delete: without it, the command only says what it would delete.
        #[arg(long)]
        yes: bool,
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
        /// How long a handler's returned value is kept after completion; 0s keeps none.
        #[arg(long, value_parser = parse_duration)]
        result_ttl: Option<Duration>,
    },
}

impl JobsCommand {
    /// Whether the command only looks, so the store is opened read-only.
    pub(crate) fn only_reads(&self) -> bool {
        matches!(self, JobsCommand::List { .. } | JobsCommand::Show { .. })
    }
}

impl DeadCommand {
    /// Whether the command only looks, so the store is opened read-only.
    pub(crate) fn only_reads(&self) -> bool {
        matches!(self, DeadCommand::List { .. })
    }
}

impl QueueCommand {
    /// Whether the command only looks (`queue config` without a setting to change,
    /// `queue delete` without `--yes`).
    pub(crate) fn only_reads(&self) -> bool {
        matches!(
            self,
            QueueCommand::Config {
                max_len: None,
                dead_max: None,
                completed_max: None,
                result_ttl: None,
                ..
            } | QueueCommand::Delete { yes: false, .. }
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
    if let Some(p) = args.priority {
        opts = opts.priority(p);
    }
    if let Some(key) = args.unique {
        opts = opts.unique(
            key,
            UniqueMode::parse(&args.unique_mode, args.unique_period)?,
        );
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
                "{:<24} {:>10} {:>10} {:>8} {:>10} {:>8} {:>9}  paused",
                "queue", "ready", "scheduled", "running", "completed", "dead", "cancelled"
            );
            for s in &all {
                println!(
                    "{:<24} {:>10} {:>10} {:>8} {:>10} {:>8} {:>9}  {}",
                    s.queue,
                    s.ready,
                    s.scheduled,
                    s.running,
                    s.completed,
                    s.dead,
                    s.cancelled,
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
        JobsCommand::RunNow(sel) => {
            let (q, filter) = select(sel, "scheduled jobs")?;
            check_named(&client, &q, &filter, &[JobState::Scheduled]).await?;
            let done = client.run_now(&q, &filter).await?;
            report(&done, "made ready")
        }
        JobsCommand::Delete(sel) => {
            let (q, filter) = select(sel, "ready or scheduled jobs")?;
            check_named(
                &client,
                &q,
                &filter,
                &[JobState::Ready, JobState::Scheduled],
            )
            .await?;
            let done = client.delete(&q, &filter).await?;
            report(&done, "deleted")
        }
        JobsCommand::Cancel(sel) => {
            let (q, filter) = select(sel, "jobs")?;
            check_named(
                &client,
                &q,
                &filter,
                &[JobState::Ready, JobState::Scheduled, JobState::Running],
            )
            .await?;
            let done = client.cancel(&q, &filter).await?;
            report(&done, "cancelled")
        }
        JobsCommand::Wait { id, timeout } => {
            let done = client.wait_for(&JobId::new(id.clone()), timeout).await?;
            println!("{}", serde_json::to_string(&done)?);
            match done {
                Finished::Completed { .. } => Ok(()),
                Finished::Dead { error } => Err(format!("job {id} is dead: {error}").into()),
                _ => Err(format!("job {id} was cancelled").into()),
            }
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
            let (q, filter) = select(sel, "dead jobs")?;
            let n = client.redrive(&q, &filter).await?;
            println!("redrove {n} jobs");
            Ok(())
        }
        DeadCommand::Purge(sel) => {
            let (q, filter) = select(sel, "dead jobs")?;
            let n = client.purge(&q, &filter).await?;
            println!("purged {n} jobs");
            Ok(())
        }
    }
}

fn select(sel: Select, which: &str) -> Result<(QueueName, JobFilter), Box<dyn std::error::Error>> {
    let q = QueueName::new(sel.queue.queue)?;
    let filter = if sel.all {
        JobFilter::All
    } else if let Some(kind) = sel.kind {
        JobFilter::Kind(kind)
    } else if !sel.ids.is_empty() {
        JobFilter::Ids(sel.ids.into_iter().map(JobId::new).collect())
    } else {
        return Err(format!("say which {which}: ids, --kind KIND or --all").into());
    };
    Ok((q, filter))
}

/// Refuses a command naming a job it cannot act on — unknown, or in another state —
/// before anything is changed, naming each such job.
async fn check_named(
    client: &Client,
    q: &QueueName,
    filter: &JobFilter,
    states: &[JobState],
) -> Res {
    let JobFilter::Ids(ids) = filter else {
        return Ok(());
    };
    let mut wrong = Vec::new();
    for id in ids {
        match client.job(q, id).await? {
            None => wrong.push(format!("job {id}: no such job in queue {q}")),
            Some(job) if !states.contains(&job.state) => {
                wrong.push(format!("job {id}: {}", state_words(job.state)))
            }
            Some(_) => {}
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("{} (nothing was changed)", wrong.join("; ")).into())
    }
}

fn state_words(state: JobState) -> &'static str {
    match state {
        JobState::Completed => "already finished (completed)",
        JobState::Dead => "already finished (dead): use dead redrive or dead purge",
        JobState::Running => "running: a worker has it",
        JobState::Ready => "already ready",
        JobState::Scheduled => "scheduled",
        JobState::Cancelled => "already finished (cancelled)",
        _ => "in another state",
    }
}

/// Prints what a bulk command did; jobs it passed over (a race with a worker after the
/// check) make the command fail, each on its own line.
fn report(done: &Bulk, verb: &str) -> Res {
    println!("{verb} {} jobs", done.done);
    if done.skipped.is_empty() {
        return Ok(());
    }
    for s in &done.skipped {
        let why = match &s.why {
            Skip::NotFound => "no such job".to_string(),
            Skip::InState(state) => state_words(*state).to_string(),
            Skip::KeyHeld(holder) => format!("its unique key is held by job {holder}"),
            other => format!("{other:?}"),
        };
        eprintln!("job {}: {why}", s.id);
    }
    Err(format!("{} jobs were not {verb}", done.skipped.len()).into())
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
        QueueCommand::Delete { queue, yes } => {
            let q = QueueName::new(queue)?;
            let st = client.stats(&q).await?;
            let jobs = st.ready + st.scheduled + st.running + st.completed + st.dead + st.cancelled;
            if !yes {
                return Err(format!(
                    "queue {q} holds {jobs} jobs ({} ready, {} scheduled, {} running, {} \
                     completed, {} dead, {} cancelled): add --yes to delete it and all of them",
                    st.ready, st.scheduled, st.running, st.completed, st.dead, st.cancelled
                )
                .into());
            }
            let n = client.delete_queue(&q).await?;
            println!("deleted queue {q} and its {n} jobs");
        }
        QueueCommand::Config {
            queue,
            max_len,
            dead_max,
            completed_max,
            result_ttl,
        } => {
            let q = QueueName::new(queue)?;
            let mut config = client.config(&q).await?;
            let result_ttl_ms = result_ttl.map(|d| d.as_millis() as u64);
            if max_len.is_some()
                || dead_max.is_some()
                || completed_max.is_some()
                || result_ttl_ms.is_some()
            {
                config.max_len = max_len.unwrap_or(config.max_len);
                config.dead_max = dead_max.unwrap_or(config.dead_max);
                config.completed_max = completed_max.unwrap_or(config.completed_max);
                config.result_ttl_ms = result_ttl_ms.unwrap_or(config.result_ttl_ms);
                client.configure(&q, &config).await?;
            }
            println!("{}", serde_json::to_string(&config)?);
        }
    }
    Ok(())
}
