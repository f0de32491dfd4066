//! Faults around Redis with real worker processes: the server restarted (AOF, fsync
//! always) while producers and workers run, and workers whose clocks are minutes off.

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use taskyard::redis::RedisStore;
use taskyard::{EnqueueOptions, JobId, NewJob, QueueName, RetryPolicy, Store};
use taskyard_cli::process::{WorkerProcess, recorded, records};
use taskyard_conformance::{RedisServer, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_taskyard");

fn record_jobs(n: usize, ms: u64, opts: &EnqueueOptions) -> Vec<NewJob> {
    (0..n)
        .map(|_| {
            let payload = format!(r#"{{"ms":{ms}}}"#).into_bytes();
            NewJob::new("record", payload, opts, RetryPolicy::default()).unwrap()
        })
        .collect()
}

async fn wait_for(what: &str, within: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn drained(store: &RedisStore, q: &QueueName) {
    wait_for(
        "the queue to drain",
        Duration::from_secs(30),
        async || matches!(store.stats(q).await, Ok(s) if s.ready + s.scheduled + s.running == 0),
    )
    .await;
}

fn ids(ids: &[JobId]) -> HashSet<String> {
    ids.iter().map(|id| id.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_under_load_keeps_every_acknowledged_enqueue() {
    let mut server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let url = server.url();
    let dir = TempDir::new();
    let store = RedisStore::connect(&url).await.unwrap();
    let q = QueueName::new("default").unwrap();
    let args = ["--concurrency", "10", "--lease", "5s"];
    let start = |name: &str| {
        WorkerProcess::start(BIN, &url, dir.path(), name, &args).expect("start a worker process")
    };
    let (mut a, mut b) = (start("a"), start("b"));

    // A producer enqueues in small batches throughout; Redis is killed and restarted in
    // the middle. Enqueues refused during the outage were never acknowledged.
    let opts = EnqueueOptions::default();
    let (mut acked, mut refused) = (Vec::new(), 0);
    for round in 0..60 {
        match store.enqueue(&q, record_jobs(50, 2, &opts)).await {
            Ok(ids) => acked.extend(ids),
            Err(_) => refused += 1,
        }
        if round == 20 {
            server.restart();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        acked.len() >= 40 * 50,
        "the producer carried on: {} acknowledged",
        acked.len()
    );
    let expected = ids(&acked);
    wait_for(
        "every acknowledged job to run",
        Duration::from_secs(60),
        async || expected.is_subset(&recorded(dir.path(), &["a", "b"])),
    )
    .await;
    drained(&store, &q).await;
    a.stop().expect("worker a stops gracefully");
    b.stop().expect("worker b stops gracefully");
    // Lost: acknowledged and never run. A batch whose reply the restart cut off may have
    // been written and run although its producer saw an error: allowed (at least once),
    // and bounded by the refused batches.
    let ran = recorded(dir.path(), &["a", "b"]);
    let unacknowledged = ran.difference(&expected).count();
    assert!(
        unacknowledged <= refused * 50,
        "{unacknowledged} jobs ran that no refused batch explains"
    );
    // Duplicated: run more than once. Under `appendfsync always` a recorded completion
    // survives the crash, so only a job running at the crash can run again: at most the
    // two workers' slots (10 each).
    let runs = records(dir.path(), &["a", "b"]);
    let mut times = std::collections::HashMap::new();
    for (id, _) in &runs {
        *times.entry(id.as_str()).or_insert(0) += 1;
    }
    let duplicated = times.values().filter(|n| **n > 1).count();
    assert!(
        duplicated <= 20,
        "{duplicated} jobs ran twice: more than were running at the crash"
    );
}

/// libfaketime, which moves the wall clock of the program it is preloaded into
/// (Debian: `apt-get install faketime`).
fn libfaketime() -> String {
    std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("faketime/libfaketimeMT.so.1"))
        .find(|p| p.exists())
        .expect("libfaketime is needed: apt-get install faketime")
        .display()
        .to_string()
}

/// The environment that moves a program's wall clock by `offset` ("+10m"), leaving its
/// monotonic clock (tokio's timers) alone.
fn skew(offset: &str) -> Vec<(&'static str, String)> {
    vec![
        ("LD_PRELOAD", libfaketime()),
        ("FAKETIME", offset.to_string()),
        ("DONT_FAKE_MONOTONIC", "1".to_string()),
    ]
}

/// The environment really moves the clock of the program it runs.
fn skew_works(offset: &str, expect_secs: i64) {
    let out = Command::new("date")
        .arg("+%s")
        .envs(skew(offset))
        .output()
        .unwrap();
    let faked: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let real = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (faked - real - expect_secs).abs() < 30,
        "FAKETIME={offset} gave {faked}, real {real}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_with_skewed_clocks_honour_leases_and_due_times() {
    skew_works("+10m", 600);
    skew_works("-10m", -600);
    let server = RedisServer::start();
    let url = server.url();
    let dir = TempDir::new();
    let store = RedisStore::connect(&url).await.unwrap();
    let q = QueueName::new("default").unwrap();
    // Wall clocks ten minutes ahead and ten behind; monotonic time (tokio's timers) real.
    let args = ["--concurrency", "4", "--lease", "2s"];
    let skewed = |offset: &str, name: &str| {
        let env = skew(offset);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        WorkerProcess::start_with_env(BIN, &url, dir.path(), name, &args, &env)
            .expect("start a worker process")
    };
    let mut ahead = skewed("+10m", "ahead");
    let mut behind = skewed("-10m", "behind");

    // Jobs three times their lease, and one delayed by 3 s (store time).
    let long = store
        .enqueue(&q, record_jobs(4, 6000, &EnqueueOptions::default()))
        .await
        .unwrap();
    let enqueued = Instant::now();
    let delayed = store
        .enqueue(
            &q,
            record_jobs(
                1,
                0,
                &EnqueueOptions::default().delay(Duration::from_secs(3)),
            ),
        )
        .await
        .unwrap()
        .remove(0)
        .to_string();
    let mut delayed_ran_after = None;
    wait_for("every job to run", Duration::from_secs(30), async || {
        let ran = recorded(dir.path(), &["ahead", "behind"]);
        if delayed_ran_after.is_none() && ran.contains(&delayed) {
            delayed_ran_after = Some(enqueued.elapsed());
        }
        ran.len() == 5
    })
    .await;
    drained(&store, &q).await;
    ahead.stop().expect("worker ahead stops gracefully");
    behind.stop().expect("worker behind stops gracefully");

    let after = delayed_ran_after.unwrap();
    assert!(
        after >= Duration::from_millis(2900),
        "the delayed job ran {after:?} after its enqueue, before it was due"
    );
    let runs = records(dir.path(), &["ahead", "behind"]);
    for id in &long {
        let attempts: Vec<u32> = runs
            .iter()
            .filter(|(r, _)| r == id.as_str())
            .map(|(_, a)| *a)
            .collect();
        assert_eq!(
            attempts,
            vec![1],
            "job {id} ran once, its lease kept by heartbeats"
        );
    }
    for w in [&ahead, &behind] {
        assert!(w.errors().contains("stale 0"), "{}", w.errors());
    }
}
