//! The store conformance suite: taskyard's semantics written once against the
//! [`Store`] trait, run unchanged against every store.
//!
//! A store enlists with an integration test target of its own (`harness = false`) whose
//! `main` hands [`run`] an async function that returns a fresh [`Subject`]:
//!
//! ```text
//! async fn subject() -> taskyard_conformance::Subject { /* start a store */ }
//! fn main() -> std::process::ExitCode { taskyard_conformance::run(subject) }
//! ```
//!
//! Every test of [`suite`] (each of its `pub async fn`s, listed by the build script) then
//! runs as its own test, with the usual `cargo test` output and filters. A store is done
//! when the whole suite passes on it. [`RedisServer`] starts a throwaway `redis-server` for tests.

pub mod fixtures;
mod redis_server;
pub mod suite;

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use nix::sys::signal::Signal;
pub use redis_server::RedisServer;
use taskyard_core::{Counters, QueueName, Store};

/// A store under test, with whatever must live as long as it (a server process, a file).
pub struct Subject {
    /// The store.
    pub store: Arc<dyn Store>,
    _guard: Box<dyn Any + Send + Sync>,
}

impl Subject {
    /// A store and what keeps it alive.
    pub fn new(store: impl Store, guard: impl Any + Send + Sync) -> Self {
        Subject {
            store: Arc::new(store),
            _guard: Box::new(guard),
        }
    }
}

/// Every file in `dir`, by name, with its bytes: to show that a command changed nothing
/// (or which files a store leaves beside its own).
pub fn files_in(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("read the directory")
        .map(|e| {
            let e = e.expect("a directory entry");
            let bytes = std::fs::read(e.path()).expect("read a file");
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect()
}

/// The names of the files in `dir`, sorted.
pub fn file_names(dir: &std::path::Path) -> Vec<String> {
    files_in(dir).into_keys().collect()
}

/// A queue name no other test uses.
pub fn unique_queue() -> QueueName {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    QueueName::new(format!("t{}-{n}", std::process::id())).expect("valid queue name")
}

/// Waits until `check` is true or `within` passes; returns whether it became true.
/// Tests wait on conditions with a deadline, never on a fixed sleep.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Claims every ready job of `q` (up to 10,000) and sends each to dead: a quick way to
/// fill a dead set.
pub async fn bury(store: &dyn Store, q: &QueueName) {
    let claimed = store
        .claim(
            q,
            10_000,
            Duration::from_secs(60),
            &taskyard_core::LeaseToken::mint("bury").unwrap(),
        )
        .await
        .expect("claim")
        .jobs;
    let dead: Vec<_> = claimed
        .into_iter()
        .map(|j| {
            let error = "buried".to_string();
            (j.lease, taskyard_core::Outcome::Dead { error })
        })
        .collect();
    store.finish(&dead).await.expect("finish");
}

/// Waits until a worker's counters satisfy `done`, panicking with the counts after 10 s.
pub async fn until(counters: &Arc<Counters>, done: impl Fn(&Counters) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(counters) {
        assert!(
            Instant::now() < deadline,
            "worker did not get there: completed {}, failed {}",
            counters.completed(),
            counters.failed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One conformance test, started on a store.
type TestRun = std::pin::Pin<Box<dyn Future<Output = ()>>>;

/// A conformance test: its name and how to start it.
type Test = (&'static str, fn(Subject) -> TestRun);

/// Every test of [`suite`], by name: each `pub async fn` of the files under `src/suite/`,
/// listed by the build script (so a test written there always runs).
fn tests() -> Vec<Test> {
    let list: Vec<Test> = include!(concat!(env!("OUT_DIR"), "/suite_list.rs"));
    list
}

/// Runs every test of [`suite`] against stores made by `subject`, one fresh store per
/// test, each test on its own multi-threaded runtime; takes the command line of
/// `cargo test` (filters, `--list`, `--test-threads`, ...) and returns the exit code.
/// A store's conformance test target (`harness = false`) is one line:
///
/// ```text
/// fn main() -> std::process::ExitCode { taskyard_conformance::run(subject) }
/// ```
pub fn run<F, Fut>(subject: F) -> std::process::ExitCode
where
    F: Fn() -> Fut + Copy + Send + 'static,
    Fut: Future<Output = Subject>,
{
    let trials = tests()
        .into_iter()
        .map(|(name, test)| {
            libtest_mimic::Trial::test(name, move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(|e| format!("start a runtime: {e}"))?;
                runtime.block_on(async { test(subject().await).await });
                Ok(())
            })
        })
        .collect();
    libtest_mimic::run(&libtest_mimic::Arguments::from_args(), trials).exit_code()
}

/// A directory removed when dropped, for stores that live in files: a fresh, empty
/// `taskyard-test-…` directory under the system's temporary directory (a
/// [`tempfile::TempDir`]).
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    /// A fresh, empty directory under the system's temporary directory.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("taskyard-test-")
            .tempdir()
            .expect("create a temporary directory");
        TempDir(dir)
    }

    /// Its path.
    pub fn path(&self) -> &std::path::Path {
        self.0.path()
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}
