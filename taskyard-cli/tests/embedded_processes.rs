//! Real processes on one embedded store file: two workers, CLI commands and a producer
//! at once; and a worker killed with SIGKILL under load.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use taskyard::{EnqueueOptions, JobState, NewJob, QueueName, RetryPolicy, Store};
use taskyard_conformance::TempDir;
use taskyard_conformance::process::{self, WorkerProcess};
use taskyard_sqlite::SqliteStore;

const BIN: &str = env!("CARGO_BIN_EXE_taskyard");

fn worker(db: &Path, name: &str, args: &[&str]) -> WorkerProcess {
    WorkerProcess::start(BIN, db.to_str().unwrap(), db.parent().unwrap(), name, args)
}

fn records(db: &Path, name: &str) -> Vec<(String, u32)> {
    process::records(db.parent().unwrap(), name)
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
    a.stop();
    b.stop();

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
    let dir = TempDir::new();
    let db = dir.path().join("taskyard.db");
    let store = SqliteStore::open(&db).await.unwrap();
    let q = QueueName::new("default").unwrap();
    let lease = ["--concurrency", "20", "--lease", "2s"];
    let mut first = worker(&db, "first", &lease);

    // Produce steadily while the first worker runs 50 ms jobs; kill it mid-stream.
    let mut acknowledged: Vec<String> = Vec::new();
    let mut running_at_kill = Vec::new();
    let mut second = None;
    for round in 0..30 {
        let ids = store.enqueue(&q, record_jobs(40, 50)).await.unwrap();
        acknowledged.extend(ids.iter().map(|id| id.to_string()));
        if round == 15 {
            running_at_kill = store.list(&q, JobState::Running, 0, 1000).await.unwrap();
            first.kill9();
            second = Some(worker(&db, "second", &lease));
        }
        // Pacing, not synchronisation: production goes on around the kill.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(
        !running_at_kill.is_empty(),
        "the worker was busy when it was killed"
    );

    // Every acknowledged job is in the file, and each ends up recorded; the jobs that
    // were running in the killed worker are run again once their lease ends.
    let expected: HashSet<String> = acknowledged.iter().cloned().collect();
    wait_for("every job to be recorded", Duration::from_secs(60), || {
        expected.is_subset(&recorded(&db, &["first", "second"]))
    })
    .await;
    let mut second = second.unwrap();
    second.stop();
    // A job listed as running may still have finished before the kill landed; every
    // other one must come back, on a later attempt.
    let finished_first: HashSet<String> = records(&db, "first")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let rerun: HashMap<String, u32> = records(&db, "second").into_iter().collect();
    let mut came_back = 0;
    for job in &running_at_kill {
        let attempt = rerun.get(job.id.as_str()).copied();
        if finished_first.contains(job.id.as_str()) && attempt.is_none() {
            continue;
        }
        assert!(
            attempt.is_some_and(|a| a >= 2),
            "job {} was running at the kill: rerun on attempt {attempt:?}",
            job.id
        );
        came_back += 1;
    }
    assert!(
        came_back > 0,
        "some jobs were cut off by the kill and came back"
    );
    let stats = store.stats(&q).await.unwrap();
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
