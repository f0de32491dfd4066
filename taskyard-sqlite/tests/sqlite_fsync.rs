//! What `synchronous=FULL` costs and buys, counted rather than inferred: each group
//! commit is one fsync of the write-ahead log before its callers are answered, and
//! concurrent callers share a commit; under `synchronous=NORMAL` commits are not
//! fsynced (only checkpoints are). The fsyncs are counted with `strace` on a child
//! process (this test binary run again in child mode), the commits by the store itself.
//!
//! Needs `strace` (Debian: `apt-get install strace`; `./test.sh` installs it).

use std::process::{Command, ExitCode};

use taskyard_conformance::TempDir;
use taskyard_core::{EnqueueOptions, NewJob, QueueName, RetryPolicy, Store};
use taskyard_sqlite::{Options, SqliteStore, Synchronous};

const CHILD: &str = "TASKYARD_FSYNC_CHILD";
const FILE: &str = "TASKYARD_FSYNC_FILE";

fn main() -> ExitCode {
    if let Ok(mode) = std::env::var(CHILD) {
        child(&mode);
        return ExitCode::SUCCESS;
    }
    let trials = vec![libtest_mimic::Trial::test(
        "full_fsyncs_each_group_commit_once_and_normal_does_not",
        || {
            full_fsyncs_each_group_commit_once_and_normal_does_not();
            Ok(())
        },
    )];
    libtest_mimic::run(&libtest_mimic::Arguments::from_args(), trials).exit_code()
}

fn job() -> NewJob {
    NewJob::new(
        "noop",
        br#"{"s":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#.to_vec(),
        &EnqueueOptions::default(),
        RetryPolicy::default(),
    )
    .unwrap()
}

/// The child: enqueues one job at a time, either one after another (`*-seq`: every
/// enqueue its own commit) or from 16 tasks at once (`*-group`), then prints the
/// commits its store made.
fn child(mode: &str) {
    let synchronous = if mode.starts_with("full") {
        Synchronous::Full
    } else {
        Synchronous::Normal
    };
    let path = std::env::var(FILE).expect("the store file");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let options = Options {
            synchronous,
            ..Options::default()
        };
        let store = SqliteStore::open_with(path, options).await.unwrap();
        let q = QueueName::new("fsync").unwrap();
        if mode.ends_with("seq") {
            for _ in 0..200 {
                store.enqueue(&q, vec![job()]).await.unwrap();
            }
        } else {
            let tasks: Vec<_> = (0..16)
                .map(|_| {
                    let (store, q) = (store.clone(), q.clone());
                    tokio::spawn(async move {
                        for _ in 0..50 {
                            store.enqueue(&q, vec![job()]).await.unwrap();
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        }
        println!("commits {}", store.commits());
    });
}

/// Runs the child under strace; returns (fsync and fdatasync calls, commits).
fn count(mode: &str, file: &std::path::Path, dir: &TempDir) -> (u64, u64) {
    let summary = dir.path().join(format!("{mode}.strace"));
    let out = Command::new("strace")
        .args(["-f", "-c", "-e", "trace=fsync,fdatasync", "-o"])
        .arg(&summary)
        .arg(std::env::current_exe().unwrap())
        .env(CHILD, mode)
        .env(FILE, file)
        .output()
        .expect("strace is needed for this test: apt-get install strace");
    assert!(
        out.status.success(),
        "{mode}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let commits = stdout
        .lines()
        .find_map(|l| l.strip_prefix("commits "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{mode}: no commit count in {stdout:?}"));
    // strace -c: "% time  seconds  usecs/call  calls  [errors]  syscall" per line.
    let table = std::fs::read_to_string(&summary).unwrap();
    let fsyncs = table
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            match cols.last() {
                Some(&"fsync") | Some(&"fdatasync") => cols.get(3)?.parse::<u64>().ok(),
                _ => None,
            }
        })
        .sum();
    (fsyncs, commits)
}

fn full_fsyncs_each_group_commit_once_and_normal_does_not() {
    let dir = TempDir::new();
    // Opening a file for the first time writes its schema: done here, not in the child.
    let file = dir.path().join("taskyard.db");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        drop(SqliteStore::open(&file).await.unwrap());
    });
    // Opening and closing the file (its checkpoint on close) costs a few fsyncs apart
    // from the commits.
    let overhead = 8;

    let (fsyncs, commits) = count("full-seq", &file, &dir);
    assert!(commits >= 200, "one commit per enqueue: {commits}");
    assert!(
        fsyncs >= commits && fsyncs <= commits + overhead,
        "FULL: {fsyncs} fsyncs for {commits} commits"
    );

    let (fsyncs, commits) = count("full-group", &file, &dir);
    assert!(
        commits < 800,
        "800 concurrent enqueues share commits: {commits}"
    );
    assert!(
        fsyncs >= commits && fsyncs <= commits + overhead,
        "FULL, grouped: {fsyncs} fsyncs for {commits} commits"
    );

    let (fsyncs, commits) = count("normal-seq", &file, &dir);
    assert!(commits >= 200, "one commit per enqueue: {commits}");
    assert!(
        fsyncs <= overhead,
        "NORMAL: {fsyncs} fsyncs for {commits} commits"
    );
}
