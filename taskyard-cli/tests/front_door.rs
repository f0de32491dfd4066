//! The front door: with nothing configured, commands use the embedded store in
//! ./taskyard.db, and `taskyard demo` (the README's first command) runs for real — on
//! that default and on Redis.

use std::process::Command;

use taskyard_conformance::{RedisServer, TempDir};

fn run(dir: &TempDir, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_taskyard"))
        .args(args)
        .current_dir(dir.path())
        .env_remove("TASKYARD_STORE")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// With no --store and no TASKYARD_STORE, commands use ./taskyard.db; a command that
/// only looks does not create it.
#[test]
fn the_embedded_store_is_the_default() {
    let dir = TempDir::new();
    let run = |args: &[&str]| run(&dir, args);
    let (ok, _, err) = run(&["stats"]);
    assert!(
        !ok && err.contains("no taskyard store at taskyard.db"),
        "{err}"
    );
    assert!(!dir.path().join("taskyard.db").exists());

    let (ok, id, err) = run(&["enqueue", "mail", r#"{"to":"ada"}"#]);
    assert!(ok, "{err}");
    assert!(dir.path().join("taskyard.db").exists());
    let (ok, stats, err) = run(&["stats", "--json"]);
    assert!(ok, "{err}");
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats[0]["queue"], "default");
    assert_eq!(stats[0]["ready"], 1);
    let (ok, job, err) = run(&["jobs", "show", id.trim()]);
    assert!(ok, "{err}");
    assert!(job.contains("ada"), "{job}");
}

/// The number after `label` on the summary line that starts with it, whatever the
/// spacing between them.
fn figure(out: &str, label: &str) -> Option<u64> {
    out.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next()? == label).then(|| words.next()?.parse().ok())?
    })
}

/// The summary shows every part of the mix did what it should.
fn check_summary(out: &str) {
    // 30 waves of 112 jobs, 3 reports and 20 reminders complete; the import dies.
    assert_eq!(figure(out, "completed"), Some(3383), "{out}");
    assert_eq!(figure(out, "dead"), Some(1), "{out}");
    let reports = out
        .lines()
        .find(|l| l.contains("report runs of"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "));
    assert!(
        reports.is_some_and(|l| l.contains("3 report runs of 8.0 s under a 3 s lease; leases lost: 0")),
        "{out}"
    );
    assert!(out.contains("dead list --queue demo"), "{out}");
}

#[test]
fn demo_runs_on_the_embedded_default() {
    let dir = TempDir::new();
    let (ok, out, err) = run(&dir, &["demo"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("./taskyard.db (the embedded default)"),
        "{out}"
    );
    check_summary(&out);
    // What it left behind is there for the commands it names.
    let (ok, dead, err) = run(&dir, &["dead", "list", "--queue", "demo"]);
    assert!(ok, "{err}");
    assert!(
        dead.contains("import_csv") && dead.contains("4/4"),
        "{dead}"
    );
    // A second run starts from an empty queue.
    let (ok, out, err) = run(&dir, &["demo"]);
    assert!(ok, "{err}");
    check_summary(&out);
}

#[test]
fn demo_runs_on_redis() {
    let server = RedisServer::start();
    let dir = TempDir::new();
    let (ok, out, err) = run(&dir, &["demo", "--store", &server.url()]);
    assert!(ok, "{err}");
    check_summary(&out);
    assert!(
        !dir.path().join("taskyard.db").exists(),
        "no file when on Redis"
    );
}
