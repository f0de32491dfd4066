//! Real processes on one embedded store file: two workers, CLI commands and a producer
//! at once; and a worker killed with SIGKILL under load.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use taskyard::{EnqueueOptions, JobState, NewJob, QueueName, RetryPolicy, Store};
use taskyard_conformance::TempDir;
use taskyard_sqlite::SqliteStore;

const BIN: &str = env!("CARGO_BIN_EXE_taskyard");

/// A `taskyard bench worker` process, its stderr kept in a file.
struct WorkerProcess {
    child: Child,
    stderr: PathBuf,
}

impl WorkerProcess {
    fn start(db: &Path, name: &str, args: &[&str]) -> Self {
        let dir = db.parent().unwrap();
        let stderr = dir.join(format!("{name}.stderr"));
        let record = dir.join(format!("{name}.record"));
        let child = Command::new(BIN)
            .args(["bench", "worker", "--store"])
            .arg(db)
            .arg("--record")
            .arg(&record)
            .args(args)
            .env("TASKYARD_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start a worker process");
        WorkerProcess { child, stderr }
    }

    fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits for a graceful exit.
    fn stop(&mut self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "sent SIGTERM");
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "worker exited with {status}: {}",
            self.errors()
        );
    }

    fn errors(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The runs recorded in a worker's record file: (job id, attempt).
fn records(db: &Path, name: &str) -> Vec<(String, u32)> {
    let text = std::fs::read_to_string(db.parent().unwrap().join(format!("{name}.record")))
        .unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (id, attempt) = l.split_once(' ')?;
            Some((id.to_string(), attempt.parse().ok()?))
        })
        .collect()
}

/// The ids the named workers recorded.
fn recorded(db: &Path, names: &[&str]) -> HashSet<String> {
    names
        .iter()
        .flat_map(|name| records(db, name))
        .map(|(id, _)| id)
        .collect()
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
    let mut a = WorkerProcess::start(&db, "a", &["--concurrency", "8"]);
    let mut b = WorkerProcess::start(&db, "b", &["--concurrency", "8"]);

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
    let mut first = WorkerProcess::start(&db, "first", &lease);

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
            second = Some(WorkerProcess::start(&db, "second", &lease));
        }
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
