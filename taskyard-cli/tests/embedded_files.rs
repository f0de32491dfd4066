//! The files of an embedded store, as the `taskyard` command leaves them: commands that
//! only look create and change nothing (not even `-wal`/`-shm` files), a missing path is
//! an error, every spelling of a path (`file:` URLs included) names the same file for
//! every command, and every command exits with the WAL checkpointed into the one file.

use std::process::Command;
use std::time::{Duration, Instant};

use taskyard_cli::process::WorkerProcess;
use taskyard_conformance::{TempDir, file_names, files_in};

const BIN: &str = env!("CARGO_BIN_EXE_taskyard");

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn taskyard(store: &str, args: &[&str]) -> Run {
    let out = Command::new(BIN)
        .arg("--store")
        .arg(store)
        .args(args)
        .env_remove("TASKYARD_STORE")
        .output()
        .expect("run taskyard");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Polls until the worker has taken every ready job, failing past `deadline`.
fn taken(path: &str, deadline: Instant) {
    while ready(path) > 0 {
        assert!(Instant::now() < deadline, "the worker did not take the job");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The commands that only look, given a job id to show.
fn reads(id: &str) -> Vec<Vec<String>> {
    [
        vec!["stats"],
        vec!["stats", "--json"],
        vec!["stats", "--json", "--queue", "default"],
        vec!["jobs", "list", "--state", "ready"],
        vec!["jobs", "list", "--state", "dead", "--json"],
        vec!["jobs", "show", id],
        vec!["dead", "list"],
        vec!["queue", "config", "default"],
    ]
    .into_iter()
    .map(|args| args.into_iter().map(String::from).collect())
    .collect()
}

fn ready(store: &str) -> u64 {
    let run = taskyard(store, &["stats", "--json", "--queue", "default"]);
    assert!(run.ok, "stats on {store}: {}", run.stderr);
    let v: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    v[0]["ready"].as_u64().unwrap()
}

#[test]
fn read_commands_create_nothing_and_change_nothing() {
    let dir = TempDir::new();
    let missing = dir.path().join("missing.db");
    let missing = missing.to_str().unwrap();
    for store in [missing.to_string(), format!("file:{missing}")] {
        for args in reads("1") {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let run = taskyard(&store, &args);
            assert!(!run.ok, "{args:?} on a missing file succeeded");
            assert!(
                run.stderr.contains("no taskyard store at")
                    && run.stderr.trim().lines().count() == 1,
                "{args:?}: {}",
                run.stderr
            );
        }
    }
    assert!(
        file_names(dir.path()).is_empty(),
        "{:?}",
        file_names(dir.path())
    );

    let path = dir.path().join("taskyard.db");
    let path = path.to_str().unwrap().to_string();
    let enqueued = taskyard(&path, &["enqueue", "mail", r#"{"to":"ada"}"#]);
    assert!(enqueued.ok, "{}", enqueued.stderr);
    let id = enqueued.stdout.trim().to_string();
    assert_eq!(
        file_names(dir.path()),
        ["taskyard.db"],
        "the enqueue exited with the WAL checkpointed into the file"
    );

    let before = files_in(dir.path());
    let spellings = [
        path.clone(),
        format!("file:{path}"),
        format!("file://{path}"),
        format!("file://localhost{path}"),
        format!("{path}?synchronous=normal"),
    ];
    for store in &spellings {
        for args in reads(&id) {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let run = taskyard(store, &args);
            assert!(run.ok, "{args:?} on {store}: {}", run.stderr);
            assert!(
                files_in(dir.path()) == before,
                "{args:?} on {store} changed the directory: {:?}",
                file_names(dir.path())
            );
        }
        let show = taskyard(store, &["jobs", "show", &id]);
        assert!(
            show.stdout.contains("\"to\\\":\\\"ada\\\""),
            "{}",
            show.stdout
        );
    }
}

#[test]
fn every_spelling_of_a_path_names_the_same_file_for_every_command() {
    let dir = TempDir::new();
    let path = dir.path().join("taskyard.db");
    let path = path.to_str().unwrap().to_string();
    let spellings = [
        path.clone(),
        format!("file:{path}"),
        format!("file://{path}"),
        format!("file:{path}?synchronous=normal"),
        format!("{path}?SYNCHRONOUS=FULL"),
    ];
    for (n, store) in spellings.iter().enumerate() {
        let run = taskyard(store, &["enqueue", "mail", "{}"]);
        assert!(run.ok, "enqueue on {store}: {}", run.stderr);
        for other in &spellings {
            assert_eq!(
                ready(other),
                n as u64 + 1,
                "{other} after enqueue on {store}"
            );
        }
        assert!(taskyard(store, &["queue", "pause", "default"]).ok);
        assert!(taskyard(store, &["queue", "resume", "default"]).ok);
    }
    // A relative `file:` URL is relative to the working directory, as a plain path is.
    let relative = Command::new(BIN)
        .args(["--store", "file:taskyard.db", "stats", "--json"])
        .current_dir(dir.path())
        .env_remove("TASKYARD_STORE")
        .output()
        .unwrap();
    assert!(relative.status.success());
    assert!(String::from_utf8_lossy(&relative.stdout).contains("\"ready\":5"));
    assert_eq!(file_names(dir.path()), ["taskyard.db"]);

    // Spellings it cannot read are refused, in one line, by every command.
    for bad in [
        format!("file://elsewhere{path}"),
        format!("{path}?mode=ro"),
        format!("file:{path}?synchronus=normal"),
        "file:".to_string(),
    ] {
        for args in [
            vec!["enqueue", "mail", "{}"],
            vec!["stats"],
            vec!["queue", "pause", "default"],
        ] {
            let run = taskyard(&bad, &args);
            assert!(!run.ok, "{args:?} on {bad} succeeded");
            assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
        }
    }
    assert_eq!(ready(&path), 5, "the refused commands wrote nothing");
    assert_eq!(file_names(dir.path()), ["taskyard.db"]);
}

#[test]
fn write_commands_and_a_stopped_worker_leave_one_file() {
    let dir = TempDir::new();
    let logs = TempDir::new();
    let path = dir.path().join("taskyard.db");
    let path = path.to_str().unwrap().to_string();
    for args in [
        vec!["enqueue", "record", r#"{"ms":0}"#],
        vec!["queue", "pause", "default"],
        vec!["queue", "resume", "default"],
        vec!["queue", "config", "default", "--dead-max", "100"],
        vec!["dead", "purge", "--all"],
        vec!["stats"],
    ] {
        let run = taskyard(&path, &args);
        assert!(run.ok, "{args:?}: {}", run.stderr);
        assert_eq!(file_names(dir.path()), ["taskyard.db"], "after {args:?}");
    }

    // A worker running: commands that only look add no file beside its own.
    let mut worker = WorkerProcess::start(BIN, &path, logs.path(), "w", &["--concurrency", "4"])
        .expect("start a worker");
    let deadline = Instant::now() + Duration::from_secs(30);
    taken(&path, deadline);
    let running = file_names(dir.path());
    assert!(
        running.contains(&"taskyard.db-wal".to_string()),
        "a running worker has its WAL: {running:?}"
    );
    for args in reads("1") {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = taskyard(&path, &args);
        assert!(
            run.ok || args[..2] == ["jobs", "show"],
            "{args:?}: {}",
            run.stderr
        );
        assert_eq!(file_names(dir.path()), running, "{args:?} beside a worker");
    }
    let enq = taskyard(&path, &["enqueue", "record", r#"{"ms":0}"#]);
    assert!(enq.ok, "{}", enq.stderr);
    taken(&path, deadline);
    worker.stop().expect("the worker stopped gracefully");
    assert_eq!(
        file_names(dir.path()),
        ["taskyard.db"],
        "the stopped worker checkpointed the WAL into the file"
    );
}

#[test]
fn a_0_1_store_is_read_as_it_is() {
    let dir = TempDir::new();
    let path = dir.path().join("taskyard.db");
    std::fs::copy(taskyard_conformance::fixtures::path("store-0.1.db"), &path).unwrap();
    let path = path.to_str().unwrap().to_string();
    let before = files_in(dir.path());
    let stats = taskyard(&path, &["stats", "--json"]);
    assert!(stats.ok, "{}", stats.stderr);
    assert!(stats.stdout.contains("\"queue\""), "{}", stats.stdout);
    for args in reads("1") {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let _ = taskyard(&path, &args);
    }
    assert!(
        files_in(dir.path()) == before,
        "reading a 0.1 store changed it: {:?}",
        file_names(dir.path())
    );
    // A command that writes upgrades it.
    assert!(taskyard(&path, &["queue", "pause", "default"]).ok);
    assert!(files_in(dir.path()) != before);
}

/// A store full to its cap (set in the URL) refuses `enqueue` in one line with a failure
/// exit and writes nothing; the commands that look and pause still work. A cap too small
/// for the reserve is refused, not clamped.
#[test]
fn a_full_store_refuses_enqueue_in_one_line_and_other_commands_go_on() {
    let dir = TempDir::new();
    let path = dir.path().join("taskyard.db");
    let capped = format!("{}?max_size=393216&reserve=65536", path.display());
    let payload = format!(r#"{{"s":"{}"}}"#, "x".repeat(4000));
    let mut acked = 0;
    let refusal = loop {
        let run = taskyard(&capped, &["enqueue", "big", &payload]);
        if !run.ok {
            break run.stderr;
        }
        acked += 1;
        assert!(acked < 200, "the cap never stopped enqueues");
    };
    assert!(
        refusal.starts_with("error: store is full:") && refusal.trim().lines().count() == 1,
        "{refusal}"
    );
    assert!(acked > 20, "the file held jobs first: {acked}");
    assert_eq!(ready(&capped), acked, "the refused enqueue wrote nothing");
    assert!(taskyard(&capped, &["queue", "pause", "default"]).ok);
    assert!(taskyard(&capped, &["queue", "resume", "default"]).ok);
    assert!(taskyard(&capped, &["jobs", "list", "--state", "ready"]).ok);
    assert_eq!(file_names(dir.path()), ["taskyard.db"]);

    let too_small = taskyard(
        &format!("{}?max_size=65536", path.display()),
        &["enqueue", "big", "{}"],
    );
    assert!(!too_small.ok);
    assert!(
        too_small.stderr.contains("max_size 65536") && too_small.stderr.trim().lines().count() == 1,
        "{}",
        too_small.stderr
    );
    assert_eq!(ready(&path.display().to_string()), acked);
}
