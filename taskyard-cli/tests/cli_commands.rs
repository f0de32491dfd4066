//! The `taskyard` command end to end: the real binary against a real `redis-server`.

use std::process::Command;
use std::time::Duration;

use taskyard::redis::RedisStore;
use taskyard::{LeaseToken, Outcome, QueueName, Store};
use taskyard_conformance::RedisServer;

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn taskyard(server: &RedisServer, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_taskyard"))
        .args(args)
        .env("TASKYARD_STORE", server.url())
        .output()
        .expect("run taskyard");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ready(server: &RedisServer, queue: &str) -> u64 {
    let run = taskyard(server, &["stats", "--json", "--queue", queue]);
    assert!(run.ok, "{}", run.stderr);
    let v: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    v[0]["ready"].as_u64().unwrap()
}

#[test]
fn enqueue_inspect_pause_and_resume() {
    let server = RedisServer::start();
    let run = taskyard(
        &server,
        &["enqueue", "mail", r#"{"to":"ada"}"#, "--queue", "q1"],
    );
    assert!(run.ok, "{}", run.stderr);
    let id = run.stdout.trim().to_string();
    assert!(!id.is_empty());
    assert_eq!(ready(&server, "q1"), 1);

    let list = taskyard(
        &server,
        &[
            "jobs", "list", "--state", "ready", "--queue", "q1", "--json",
        ],
    );
    assert!(list.ok, "{}", list.stderr);
    let job: serde_json::Value = serde_json::from_str(list.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(job["kind"], "mail");
    assert_eq!(job["payload"], r#"{"to":"ada"}"#);

    let show = taskyard(&server, &["jobs", "show", &id, "--queue", "q1"]);
    assert!(show.ok, "{}", show.stderr);
    assert!(
        show.stdout.contains("\"state\": \"ready\""),
        "{}",
        show.stdout
    );

    assert!(taskyard(&server, &["queue", "pause", "q1"]).ok);
    let stats = taskyard(&server, &["stats"]);
    assert!(
        stats.stdout.contains("q1") && stats.stdout.contains("yes"),
        "{}",
        stats.stdout
    );
    assert!(taskyard(&server, &["queue", "resume", "q1"]).ok);

    let cfg = taskyard(&server, &["queue", "config", "q1", "--max-len", "1"]);
    assert!(cfg.ok, "{}", cfg.stderr);
    let full = taskyard(&server, &["enqueue", "mail", "{}", "--queue", "q1"]);
    assert!(!full.ok);
    assert!(full.stderr.contains("is full"), "{}", full.stderr);
    assert_eq!(ready(&server, "q1"), 1, "a refused enqueue writes nothing");
}

#[test]
fn bad_input_is_one_line_and_a_failure_exit() {
    let server = RedisServer::start();
    for args in [
        vec!["enqueue", "mail", "{not json", "--queue", "q2"],
        vec!["enqueue", "bad kind", "{}", "--queue", "q2"],
        vec!["enqueue", "mail", "{}", "--queue", "no{good}"],
        vec![
            "enqueue",
            "mail",
            "{}",
            "--queue",
            "q2",
            "--max-attempts",
            "0",
        ],
        vec!["dead", "redrive", "--queue", "q2"],
        vec!["jobs", "show", "424242", "--queue", "q2"],
    ] {
        let run = taskyard(&server, &args);
        assert!(!run.ok, "{args:?} should fail");
        assert_eq!(
            run.stderr.trim().lines().count(),
            1,
            "{args:?}: {}",
            run.stderr
        );
        assert!(run.stderr.starts_with("error: "), "{}", run.stderr);
    }
    assert_eq!(ready(&server, "q2"), 0);

    let bad = Command::new(env!("CARGO_BIN_EXE_taskyard"))
        .args(["stats", "--store", "postgres://localhost/jobs"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unsupported store"));
}

#[tokio::test]
async fn dead_list_redrive_and_purge() {
    let server = RedisServer::start();
    for n in 0..3 {
        let payload = format!(r#"{{"n":{n}}}"#);
        let args = [
            "enqueue",
            if n == 0 { "a" } else { "b" },
            payload.as_str(),
            "--queue",
            "q3",
        ];
        assert!(taskyard(&server, &args).ok);
    }
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let q = QueueName::new("q3").unwrap();
    let jobs = store
        .claim(
            &q,
            3,
            Duration::from_secs(30),
            &LeaseToken::mint("w").unwrap(),
        )
        .await
        .unwrap()
        .jobs;
    let dead: Vec<_> = jobs
        .into_iter()
        .map(|j| {
            (
                j.lease,
                Outcome::Dead {
                    error: "poison".into(),
                },
            )
        })
        .collect();
    store.finish(&dead).await.unwrap();

    let list = taskyard(&server, &["dead", "list", "--queue", "q3"]);
    assert!(list.ok && list.stdout.contains("poison"), "{}", list.stdout);
    let redrive = taskyard(
        &server,
        &["dead", "redrive", "--kind", "b", "--queue", "q3"],
    );
    assert_eq!(redrive.stdout.trim(), "redrove 2 jobs");
    assert_eq!(ready(&server, "q3"), 2);
    let purge = taskyard(&server, &["dead", "purge", "--all", "--queue", "q3"]);
    assert_eq!(purge.stdout.trim(), "purged 1 jobs");
    assert_eq!(store.stats(&q).await.unwrap().dead, 0);
}

#[test]
fn bench_prints_one_json_line_with_its_figures() {
    let server = RedisServer::start();
    let run = taskyard(
        &server,
        &[
            "bench",
            "--jobs",
            "2000",
            "--concurrency",
            "50",
            "--latency-rate",
            "200",
            "--latency-secs",
            "0.5",
            "--delayed-jobs",
            "100",
            "--delayed-secs",
            "0.5",
            "--cron-ticks",
            "2",
            "--json",
        ],
    );
    assert!(run.ok, "{}", run.stderr);
    assert_eq!(run.stdout.trim().lines().count(), 1);
    let v: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    for key in ["enqueue_per_s", "process_per_s", "bytes_per_queued_job"] {
        assert!(v[key].as_f64().unwrap() > 0.0, "{key}: {v}");
    }
    for key in [
        "pickup_p50_ms",
        "pickup_p99_ms",
        "late_p50_ms",
        "late_p99_ms",
    ] {
        assert!(v[key].as_f64().is_some(), "{key}: {v}");
    }
    // No delayed job starts before its due time.
    assert!(v["late_min_ms"].as_f64().unwrap() >= 0.0, "{v}");
    assert_eq!(v["delayed_jobs"], 100);
    // No tick's job starts before its tick.
    assert!(v["tick_late_min_ms"].as_f64().unwrap() >= 0.0, "{v}");
    assert_eq!(v["cron_ticks"], 2);
    assert_eq!(v["jobs"], 2000);
    // The bench cleans up after itself.
    let stats = taskyard(&server, &["stats", "--json"]);
    assert_eq!(stats.stdout.trim(), "[]");
}
