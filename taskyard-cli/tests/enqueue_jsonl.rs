//! `taskyard enqueue --jsonl`: bulk enqueue from JSON lines, on both stores.

use std::collections::HashSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

use taskyard::redis::RedisStore;
use taskyard::sqlite::SqliteStore;
use taskyard::{JobState, QueueName, Store};

use taskyard_conformance::{RedisServer, TempDir};

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn taskyard(store: &str, args: &[&str], stdin: Option<&str>) -> Out {
    let mut child = Command::new(env!("CARGO_BIN_EXE_taskyard"))
        .arg("--store")
        .arg(store)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn stats(store: &str, queue: &str) -> serde_json::Value {
    let out = taskyard(store, &["stats", "--json", "--queue", queue], None);
    assert!(out.ok, "{}", out.stderr);
    serde_json::from_str::<serde_json::Value>(&out.stdout).unwrap()[0].clone()
}

fn bulk_file_in_order_across_queues(store: &str, dir: &TempDir) {
    // 2,500 lines: runs of queue a and queue b, some delayed, some with max_attempts.
    let mut text = String::new();
    for i in 0..2500 {
        let line = match i % 5 {
            0 => format!(r#"{{"kind":"mail","payload":{{"n":{i}}},"queue":"b","delay_ms":60000}}"#),
            1 => format!(r#"{{"kind":"mail","payload":{{"n":{i}}},"max_attempts":3}}"#),
            _ => format!(r#"{{"kind":"mail","payload":{{"n":{i}}}}}"#),
        };
        text.push_str(&line);
        text.push('\n');
        if i == 100 {
            text.push('\n'); // blank lines are skipped
        }
    }
    let file = dir.path().join("jobs.jsonl");
    std::fs::write(&file, &text).unwrap();
    let out = taskyard(
        store,
        &["enqueue", "--jsonl", file.to_str().unwrap(), "--queue", "a"],
        None,
    );
    assert!(out.ok, "{}", out.stderr);
    let ids: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(ids.len(), 2500);
    // Ids are unique per queue (on Redis each queue counts its own).
    let distinct: std::collections::HashSet<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (i % 5 == 0, id))
        .collect();
    assert_eq!(distinct.len(), 2500);
    assert_eq!(stats(store, "a")["ready"], 2000);
    assert_eq!(stats(store, "b")["scheduled"], 500);
    // Ids are printed in input order: line 2 (n = 1) went to queue a with 3 attempts.
    let show = taskyard(store, &["jobs", "show", ids[1], "--queue", "a"], None);
    assert!(show.ok, "{}", show.stderr);
    let job: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    assert_eq!(job["payload"], r#"{"n":1}"#);
    assert_eq!(job["max_attempts"], 3);
}

fn malformed_line_stops_before_its_batch(store: &str) {
    let mut text = String::new();
    for i in 0..1200 {
        text.push_str(&format!(
            "{{\"kind\":\"mail\",\"payload\":{{\"n\":{i}}},\"queue\":\"c\"}}\n"
        ));
    }
    text.push_str("{\"kind\":\"mail\",\"paylod\":{}}\n");
    text.push_str("{\"kind\":\"mail\"}\n");
    let out = taskyard(store, &["enqueue", "--jsonl", "-"], Some(&text));
    assert!(!out.ok);
    assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("line 1201"), "{}", out.stderr);
    assert!(out.stderr.contains("paylod"), "{}", out.stderr);
    // The first full batch of 1,000 was written and printed; the second was not.
    assert_eq!(out.stdout.lines().count(), 1000);
    assert_eq!(stats(store, "c")["ready"], 1000);

    for (bad, says) in [
        ("{\"kind\":\"bad kind\"}", "invalid job kind"),
        (
            "{\"kind\":\"mail\",\"queue\":\"no{good}\"}",
            "invalid queue",
        ),
        ("{\"kind\":\"mail\",\"max_attempts\":0}", "invalid option"),
        (
            "{\"kind\":\"mail\",\"timeout_ms\":0}",
            "timeout 0ns is below 1 ms",
        ),
        ("{\"kind\":\"mail\",\"timeout_ms\":-5}", "timeout_ms"),
        ("{\"kind\":\"mail\",\"timeout_ms\":1.5}", "timeout_ms"),
        (
            "{\"kind\":\"mail\",\"timeout_ms\":604800001}",
            "above the longest allowed, 7 days",
        ),
        ("not json", "not a job object"),
    ] {
        let text = format!("{{\"kind\":\"mail\",\"queue\":\"d\"}}\n{bad}\n");
        let out = taskyard(store, &["enqueue", "--jsonl", "-"], Some(&text));
        assert!(
            !out.ok && out.stderr.contains("line 2") && out.stderr.contains(says),
            "{}",
            out.stderr
        );
        assert!(out.stdout.is_empty());
    }
    assert_eq!(
        stats(store, "d")["ready"],
        0,
        "a refused batch writes nothing"
    );
}

#[test]
fn jsonl_on_the_embedded_store() {
    let dir = TempDir::new();
    let db = dir.path().join("taskyard.db");
    let store = db.to_str().unwrap();
    bulk_file_in_order_across_queues(store, &dir);
    malformed_line_stops_before_its_batch(store);
    timeouts_reach_the_store(store);
}

#[test]
fn jsonl_on_redis() {
    let server = RedisServer::start();
    let dir = TempDir::new();
    bulk_file_in_order_across_queues(&server.url(), &dir);
    malformed_line_stops_before_its_batch(&server.url());
    timeouts_reach_the_store(&server.url());
}

/// `enqueue --timeout` and a line's `timeout_ms` are what a worker claims; a bad
/// `--timeout` is one line and writes nothing.
fn timeouts_reach_the_store(store: &str) {
    let one = taskyard(
        store,
        &[
            "enqueue",
            "mail",
            "{}",
            "--queue",
            "to",
            "--timeout",
            "1m 30s",
        ],
        None,
    );
    assert!(one.ok, "{}", one.stderr);
    let lines = "{\"kind\":\"mail\",\"queue\":\"to\",\"timeout_ms\":2500}\n\
                 {\"kind\":\"mail\",\"queue\":\"to\"}\n";
    let many = taskyard(store, &["enqueue", "--jsonl", "-"], Some(lines));
    assert!(many.ok, "{}", many.stderr);
    for (bad, says) in [
        ("0s", "below 1 ms"),
        ("-5s", "invalid duration"),
        ("8days", "above the longest allowed"),
        ("soon", "invalid duration"),
    ] {
        let out = taskyard(
            store,
            &["enqueue", "mail", "{}", "--queue", "to", "--timeout", bad],
            None,
        );
        assert!(!out.ok, "--timeout {bad} should fail");
        let first = out.stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error: ") && first.contains(says),
            "{bad}: {}",
            out.stderr
        );
        // An unparsable duration is refused by clap, which adds its "--help" hint.
        if says != "invalid duration" {
            assert_eq!(out.stderr.trim().lines().count(), 1, "{}", out.stderr);
        }
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let timeouts = runtime.block_on(async {
        let store: Arc<dyn Store> = if store.starts_with("redis://") {
            Arc::new(RedisStore::connect(store).await.unwrap())
        } else {
            Arc::new(SqliteStore::open(store).await.unwrap())
        };
        let q = QueueName::new("to").unwrap();
        let token = taskyard::LeaseToken::mint("cli-test").unwrap();
        let claim = store
            .claim(&q, 10, std::time::Duration::from_secs(60), &token)
            .await
            .unwrap();
        claim.jobs.iter().map(|j| j.timeout).collect::<Vec<_>>()
    });
    use std::time::Duration;
    assert_eq!(
        timeouts,
        [
            Some(Duration::from_secs(90)),
            Some(Duration::from_millis(2500)),
            None
        ],
        "three jobs, the bad ones not written"
    );
}

/// The ids of the ready jobs of queue `k`.
fn ready_ids(store: &str) -> HashSet<String> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store: Arc<dyn Store> = if store.starts_with("redis://") {
            Arc::new(RedisStore::connect(store).await.unwrap())
        } else {
            Arc::new(SqliteStore::open(store).await.unwrap())
        };
        let q = QueueName::new("k").unwrap();
        let jobs = store
            .list(&q, JobState::Ready, &taskyard::Cursor::start(), 100_000)
            .await
            .unwrap()
            .jobs;
        jobs.into_iter().map(|j| j.id.to_string()).collect()
    })
}

/// A producer killed (SIGKILL) mid-stream, the moment it printed the first id of its
/// third batch: every id it printed — every acknowledged enqueue — is in the store (an id
/// printed before its batch was committed would be missing), and every batch is whole
/// or absent.
fn producer_killed_mid_stream(store: &str) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_taskyard"))
        .args(["--store", store, "enqueue", "--jsonl", "-", "--queue", "k"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let line = "{\"kind\":\"mail\",\"payload\":{}}\n";
    // Five batches at once, more than the pipe holds: the producer reads, writes and
    // prints batch after batch while the test reads its ids.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(line.repeat(5000).as_bytes());
    });
    let mut output = BufReader::new(child.stdout.take().unwrap());
    let mut acknowledged = Vec::new();
    while acknowledged.len() < 2001 {
        let mut id = String::new();
        assert!(
            output.read_line(&mut id).unwrap() > 0,
            "the producer stopped early"
        );
        acknowledged.push(id.trim().to_string());
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = writer.join();
    let stored = ready_ids(store);
    for id in &acknowledged {
        assert!(stored.contains(id), "acknowledged job {id} is missing");
    }
    assert!(
        stored.len().is_multiple_of(1000) && stored.len() >= 3000,
        "whole batches only: {} jobs",
        stored.len()
    );
}

#[test]
fn killed_producer_keeps_what_it_acknowledged() {
    let dir = TempDir::new();
    producer_killed_mid_stream(dir.path().join("taskyard.db").to_str().unwrap());
    let server = RedisServer::start();
    producer_killed_mid_stream(&server.url());
}
