//! Real processes on one embedded store file: two workers, CLI commands and a producer
//! at once; and a worker killed with SIGKILL under load.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use taskyard::sqlite::{Options, SqliteStore, Synchronous};
use taskyard::{EnqueueOptions, JobState, NewJob, QueueName, RetryPolicy, Store};
use taskyard_cli::process::{self, WorkerProcess};
use taskyard_conformance::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_taskyard");

fn worker(db: &Path, name: &str, args: &[&str]) -> WorkerProcess {
    WorkerProcess::start(BIN, db.to_str().unwrap(), db.parent().unwrap(), name, args)
        .expect("start a worker process")
}

fn records(db: &Path, name: &str) -> Vec<(String, u32)> {
    process::records(db.parent().unwrap(), &[name])
}

fn recorded(db: &Path, names: &[&str]) -> HashSet<String> {
    process::recorded(db.parent().unwrap(), names)
}

fn record_jobs(n: usize, ms: u64) -> Vec<NewJob> {
    (0..n)
        .map(|_| {
            NewJob::new(
                "record",
                format!(r#"{{"ms":{ms}}}"#).into_bytes(),
                &EnqueueOptions::default(),
                RetryPolicy::default(),
            )
            .unwrap()
        })
        .collect()
}

/// Runs the CLI on the store; returns stdout, panicking with stderr on failure.
fn cli(db: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("--store")
        .arg(db)
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.is_empty(),
        "taskyard {args:?} failed: {stderr}"
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_and_the_cli_share_one_file() {
    let dir = TempDir::new();
    let db = dir.path().join("taskyard.db");
    let store = SqliteStore::open(&db).await.unwrap();
    let q = QueueName::new("default").unwrap();
    let mut a = worker(&db, "a", &["--concurrency", "8"]);
    let mut b = worker(&db, "b", &["--concurrency", "8"]);

    // Two CLI producers, one job per process, while the stats command reads.
    let cli_producers: Vec<_> = (0..2)
        .map(|_| {
            let db = db.clone();
            std::thread::spawn(move || {
                (0..40)
                    .map(|_| {
                        cli(&db, &["enqueue", "record", r#"{"ms":1}"#])
                            .trim()
                            .to_string()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let reader = {
        let db = db.clone();
        std::thread::spawn(move || {
            for _ in 0..20 {
                let line = cli(&db, &["stats", "--json"]);
                assert!(line.starts_with('['), "stats: {line}");
            }
        })
    };
    // And a producer in this process, in batches.
    let mut acknowledged: Vec<String> = Vec::new();
    for _ in 0..20 {
        let ids = store.enqueue(&q, record_jobs(100, 1)).await.unwrap();
        acknowledged.extend(ids.iter().map(|id| id.to_string()));
        // Pacing, not synchronisation: spread the batches over the workers' run.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for p in cli_producers {
        acknowledged.extend(p.join().expect("CLI producer"));
    }
    reader.join().expect("stats reader");
    assert_eq!(acknowledged.len(), 2_080);

    let expected: HashSet<String> = acknowledged.iter().cloned().collect();
    assert_eq!(expected.len(), acknowledged.len(), "ids are distinct");
    wait_for("every job to be recorded", Duration::from_secs(60), || {
        expected.is_subset(&recorded(&db, &["a", "b"]))
    })
    .await;
    // A run is recorded just before its completion is; give the last ones a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = store.stats(&q).await.unwrap();
        if (stats.ready, stats.scheduled, stats.running) == (0, 0, 0) {
            break;
        }
        assert!(Instant::now() < deadline, "jobs left over: {stats:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.stop().expect("worker a stops gracefully");
    b.stop().expect("worker b stops gracefully");

    let (ra, rb) = (records(&db, "a"), records(&db, "b"));
    assert!(
        !ra.is_empty() && !rb.is_empty(),
        "both workers took a share: {} and {}",
        ra.len(),
        rb.len()
    );
    let mut runs: HashMap<String, usize> = HashMap::new();
    for (id, attempt) in ra.iter().chain(rb.iter()) {
        assert_eq!(
            *attempt, 1,
            "job {id} ran on attempt {attempt}: no lease expired"
        );
        *runs.entry(id.clone()).or_default() += 1;
    }
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "completed twice: {twice:?}");
    assert_eq!(runs.len(), expected.len(), "nothing unexpected ran");
    for w in [&a, &b] {
        assert!(
            w.errors()
                .lines()
                .all(|l| l.contains("serving") || l.contains("stale 0")),
            "{}",
            w.errors()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_loses_nothing() {
    killed_worker(Synchronous::Full).await;
}

/// The same under `?synchronous=normal`: commits are not fsynced, but a crash of the
/// process (not of the machine) still loses nothing that was committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_loses_nothing_under_normal_durability() {
    killed_worker(Synchronous::Normal).await;
}

/// A worker SIGKILLed under load: every acknowledged job runs; the only jobs that run
/// twice are jobs the killed worker held at the kill (a completion it had recorded never
/// comes back), and those it had not finished run again on a later attempt.
async fn killed_worker(synchronous: Synchronous) {
    let dir = TempDir::new();
    let db = dir.path().join("taskyard.db");
    let options = Options {
        synchronous,
        ..Options::default()
    };
    let store = SqliteStore::open_with(&db, options).await.unwrap();
    let url = match synchronous {
        Synchronous::Normal => format!("{}?synchronous=normal", db.display()),
        _ => db.display().to_string(),
    };
    let start = |name: &str| {
        WorkerProcess::start(
            BIN,
            &url,
            dir.path(),
            name,
            &["--concurrency", "20", "--lease", "2s"],
        )
        .expect("start a worker process")
    };
    let mut first = start("first");

    // Produce steadily while the first worker runs 50 ms jobs; kill it mid-stream.
    let mut acknowledged: Vec<String> = Vec::new();
    let mut running_at_kill = Vec::new();
    let mut second = None;
    for round in 0..30 {
        let ids = store.enqueue(&q(), record_jobs(40, 50)).await.unwrap();
        acknowledged.extend(ids.iter().map(|id| id.to_string()));
        if round == 15 {
            first.kill9().expect("SIGKILL the first worker");
            // Nothing else holds a lease yet: the running jobs are exactly the killed
            // worker's, frozen until their leases end.
            running_at_kill = store
                .list(&q(), JobState::Running, &taskyard::Cursor::start(), 1000)
                .await
                .unwrap()
                .jobs;
            second = Some(start("second"));
        }
        // Pacing, not synchronisation: production goes on around the kill.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(
        !running_at_kill.is_empty(),
        "the worker was busy when it was killed"
    );
    let held: HashSet<&str> = running_at_kill.iter().map(|j| j.id.as_str()).collect();

    // Every acknowledged job is in the file, and each ends up recorded; the jobs that
    // were running in the killed worker are run again once their lease ends.
    let expected: HashSet<String> = acknowledged.iter().cloned().collect();
    wait_for("every job to be recorded", Duration::from_secs(60), || {
        expected.is_subset(&recorded(&db, &["first", "second"]))
    })
    .await;
    let mut second = second.unwrap();
    second.stop().expect("the second worker stops gracefully");
    let rerun: HashMap<String, u32> = records(&db, "second").into_iter().collect();
    for id in &held {
        let attempt = rerun.get(*id).copied();
        assert!(
            attempt.is_some_and(|a| a >= 2),
            "job {id} was held by the killed worker: rerun on attempt {attempt:?}"
        );
    }
    // Run twice: only jobs the killed worker held. A job it ran and whose completion
    // was committed must not run again.
    let mut times: HashMap<String, usize> = HashMap::new();
    for (id, _) in records(&db, "first")
        .into_iter()
        .chain(records(&db, "second"))
    {
        *times.entry(id).or_default() += 1;
    }
    let duplicated: Vec<&String> = times
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id)
        .collect();
    for id in &duplicated {
        assert!(
            held.contains(id.as_str()),
            "job {id} ran twice but was not held at the kill: a recorded completion came back"
        );
    }
    assert!(duplicated.len() <= held.len());
    let stats = store.stats(&q()).await.unwrap();
    assert_eq!(
        (stats.ready, stats.running, stats.dead),
        (0, 0, 0),
        "after a graceful stop"
    );
    assert_eq!(
        recorded(&db, &["first", "second"]),
        expected,
        "lost 0, unexpected 0"
    );
}

fn q() -> QueueName {
    QueueName::new("default").unwrap()
}
