//! `taskyard bench --scenario NAME`: one executable proof per Kafka pain (README, docs/scenarios.md),
//! plus the fault scenarios, each printing its figures and whether its invariant held.
//!
//! Scenarios that need several workers run them as real `taskyard bench worker`
//! processes (this same binary, through [`taskyard_cli::process`], as the tests do), so a
//! kill is a real SIGKILL; the books are kept from the `record` files those workers append
//! to before each completion.
//!
//! One module per scenario, each with its `run`; `context` is what every scenario is
//! handed ([`Ctx`]: store, queue, directory, sizes, waits, workers) and `books` counts
//! the lost, unexpected and duplicated jobs of a run.

mod add_worker;
mod backlog;
mod books;
mod cancel;
mod concurrency;
mod connection_cut;
mod context;
mod kill_under_load;
mod long_jobs;
mod poison;
mod poison_process;
mod unique;
mod zombie;

use std::time::{SystemTime, UNIX_EPOCH};

use taskyard::QueueName;

use crate::open::{self, Create};
use context::{Ctx, Size};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// What a scenario returns: whether its invariant held, the invariant, and its figures.
type Outcome = Res<(bool, &'static str, serde_json::Value)>;

/// The scenarios, by name.
pub(crate) const NAMES: [&str; 11] = [
    "long-jobs",
    "concurrency",
    "add-worker",
    "poison",
    "backlog",
    "kill-under-load",
    "zombie",
    "poison-process",
    "connection-cut",
    "unique",
    "cancel",
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
        "long-jobs" => long_jobs::run(&ctx).await,
        "concurrency" => concurrency::run(&ctx).await,
        "add-worker" => add_worker::run(&ctx).await,
        "poison" => poison::run(&ctx).await,
        "backlog" => backlog::run(&ctx).await,
        "kill-under-load" => kill_under_load::run(&ctx).await,
        "zombie" => zombie::run(&ctx).await,
        "poison-process" => poison_process::run(&ctx).await,
        "unique" => unique::run(&ctx).await,
        "cancel" => cancel::run(&ctx).await,
        _ => connection_cut::run(&ctx).await,
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
