//! `taskyard cron`: periodic jobs. Applications declare their schedules in code (every
//! process may; see docs/semantics.md, "Periodic jobs"); operators list them with their
//! next and last run, pause, resume, run one now, remove one — or declare one here.

use clap::Subcommand;
use taskyard::schedule::{Misfire, Schedule};
use taskyard::{Client, EnqueueOptions, QueueName, RetryPolicy};

type Res = Result<(), Box<dyn std::error::Error>>;

#[derive(Subcommand)]
pub(crate) enum CronCommand {
    /// Every schedule (or one queue's), with its next and last run.
    List {
        /// Only this queue.
        #[arg(long, short)]
        queue: Option<String>,
        /// JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Declare a schedule, as an application does: `taskyard cron add nightly
    /// '0 30 2 * * *' report '{}' --tz Europe/Berlin`.
    Add {
        /// Its name, unique within its queue.
        name: String,
        /// Cron expression: 5 fields (minute hour day-of-month month day-of-week) or 6
        /// (seconds first); `@daily` and the like.
        expr: String,
        /// The kind of job each tick enqueues.
        kind: String,
        /// Its JSON payload.
        #[arg(default_value = "{}")]
        payload: String,
        /// The queue.
        #[arg(long, short, default_value = "default")]
        queue: String,
        /// The time zone the expression is read in (IANA name).
        #[arg(long, default_value = "UTC")]
        tz: String,
        /// Ticks missed while no worker ran: latest (run the latest once), all, skip.
        #[arg(long, default_value = "latest")]
        misfire: String,
        /// The definition's version: a higher one replaces the stored one.
        #[arg(long, default_value_t = 1)]
        version: u32,
    },
    /// Stop enqueuing a schedule's ticks until it is resumed.
    Pause(Named),
    /// Enqueue a schedule's ticks again, from its next one.
    Resume(Named),
    /// Enqueue a schedule's job now; its ticks go on as before.
    Run(Named),
    /// Remove a schedule (jobs it enqueued stay).
    Remove(Named),
}

#[derive(clap::Args)]
pub(crate) struct Named {
    /// The schedule.
    name: String,
    /// Its queue.
    #[arg(long, short, default_value = "default")]
    queue: String,
}

impl CronCommand {
    /// How the command opens the store: read-only to look, creating it only to add.
    pub(crate) fn access(&self) -> crate::open::Create {
        match self {
            CronCommand::List { .. } => crate::open::Create::ReadOnly,
            CronCommand::Add { .. } => crate::open::Create::Yes,
            _ => crate::open::Create::No,
        }
    }
}

pub(crate) async fn run(client: Client, cmd: CronCommand) -> Res {
    match cmd {
        CronCommand::List { queue, json } => {
            let listed = match queue {
                Some(q) => client.schedules(&QueueName::new(q)?).await?,
                None => client.all_schedules().await?,
            };
            if json {
                for s in &listed {
                    println!("{}", serde_json::to_string(s)?);
                }
                return Ok(());
            }
            println!(
                "{:<12} {:<20} {:<16} {:<14} {:<10} {:<24} {:<24} state",
                "queue", "name", "cron", "tz", "kind", "next", "last"
            );
            for s in &listed {
                let d = &s.schedule;
                println!(
                    "{:<12} {:<20} {:<16} {:<14} {:<10} {:<24} {:<24} {}",
                    d.queue(),
                    d.name(),
                    d.cron(),
                    d.tz(),
                    d.kind(),
                    when(s.next_ms),
                    when(s.last_ms),
                    if s.paused { "paused" } else { "active" }
                );
            }
            Ok(())
        }
        CronCommand::Add {
            name,
            expr,
            kind,
            payload,
            queue,
            tz,
            misfire,
            version,
        } => {
            let opts = EnqueueOptions::default().queue(queue);
            let schedule = Schedule::raw(
                &name,
                &expr,
                &kind,
                payload.into_bytes(),
                &opts,
                RetryPolicy::default(),
            )?
            .time_zone(&tz)?
            .misfire(misfire.parse::<Misfire>()?)
            .version(version);
            let declared = client.schedule(&schedule).await?;
            println!("{}", serde_json::to_string(&declared)?.trim_matches('"'));
            Ok(())
        }
        CronCommand::Pause(n) => {
            client
                .pause_schedule(&QueueName::new(n.queue)?, &n.name)
                .await?;
            Ok(())
        }
        CronCommand::Resume(n) => {
            client
                .resume_schedule(&QueueName::new(n.queue)?, &n.name)
                .await?;
            Ok(())
        }
        CronCommand::Run(n) => {
            let id = client
                .run_schedule(&QueueName::new(n.queue)?, &n.name)
                .await?;
            println!("{id}");
            Ok(())
        }
        CronCommand::Remove(n) => {
            client
                .remove_schedule(&QueueName::new(n.queue)?, &n.name)
                .await?;
            Ok(())
        }
    }
}

/// A store time as UTC (RFC 3339, to the millisecond), or `-`.
fn when(ms: Option<u64>) -> String {
    ms.and_then(|ms| jiff::Timestamp::from_millisecond(ms as i64).ok())
        .map_or_else(|| "-".into(), |t| t.to_string())
}
