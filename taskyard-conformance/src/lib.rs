//! The store conformance suite: taskyard's semantics written once against the
//! [`Store`] trait, run unchanged against every store.
//!
//! A store enlists with one line in an integration test, naming an async function that
//! returns a fresh [`Subject`]:
//!
//! ```text
//! async fn subject() -> taskyard_conformance::Subject { /* start a store */ }
//! taskyard_conformance::conformance_suite!(subject);
//! ```
//!
//! Every test of [`suite`] then runs as its own `#[tokio::test]`. A store is done when the
//! whole suite passes on it. [`RedisServer`] starts a throwaway `redis-server` for tests.

pub mod process;
mod redis_server;
pub mod suite;

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use process::WorkerProcess;
pub use redis_server::RedisServer;
use taskyard::{Counters, QueueName, Store, Worker};

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

/// A worker running in the background until [`Running::shutdown`].
pub struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<taskyard::Result<()>>,
}

impl Running {
    /// Starts `worker` on the current runtime.
    pub fn start(worker: Worker) -> Self {
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(worker.run(async move {
            let _ = rx.await;
        }));
        Running { stop, task }
    }

    /// Shuts the worker down gracefully and waits for it; panics if it failed.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        self.task.await.expect("worker task").expect("worker run");
    }
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

/// Runs every test of [`suite`] against the store made by `$subject` (an async fn
/// returning a [`Subject`]), each as its own `#[tokio::test]`.
#[macro_export]
macro_rules! conformance_suite {
    ($subject:path) => {
        $crate::conformance_suite!(@each $subject;
            enqueue_returns_ids_in_input_order,
            bulk_enqueue_writes_every_job,
            claim_counts_attempt_and_leases_oldest_first,
            heartbeat_renews_held_leases_and_rejects_stale_tokens,
            stale_token_cannot_complete_fail_or_heartbeat,
            expired_lease_returns_job_to_ready,
            expired_lease_with_attempts_spent_goes_to_dead,
            retry_schedules_the_job_after_its_delay,
            retry_at_a_given_time,
            failure_with_attempts_spent_goes_to_dead_with_history,
            permanent_failure_goes_straight_to_dead,
            redrive_one_by_kind_and_all,
            purge_deletes_dead_jobs,
            dead_set_is_trimmed_to_its_max,
            dead_jobs_past_their_age_are_dropped,
            completed_jobs_are_removed_unless_retained,
            delayed_job_is_not_claimed_before_due,
            run_at_in_the_past_is_ready_at_once,
            paused_queue_yields_no_claims_until_resumed,
            full_queue_rejects_enqueue_and_writes_nothing,
            release_returns_job_without_charging_attempt,
            job_lookup_in_every_state,
            bad_input_is_rejected_and_changes_nothing,
            wait_returns_when_a_job_arrives,
            worker_completes_every_job,
            worker_retries_with_backoff_until_success,
            handler_chooses_retry_time_or_permanent_failure,
            handler_panic_is_a_failure_and_worker_lives_on,
            undecodable_payload_goes_to_dead_with_decode_error,
            long_job_is_kept_alive_by_heartbeats,
            shutdown_waits_for_running_jobs,
            shutdown_releases_jobs_past_grace,
            idle_worker_picks_up_without_polling,
            strict_queue_order_drains_first_queue_first,
            worker_serves_several_queues_by_weight,
            worker_skips_paused_queue_until_resumed,
            worker_runs_delayed_job_when_due,
            dead_workers_job_is_reclaimed_by_another_worker,
        );
    };
    (@each $subject:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let subject = $subject().await;
                $crate::suite::$name(subject).await;
            }
        )*
    };
}

/// A directory removed when dropped, for stores that live in files.
pub struct TempDir {
    path: std::path::PathBuf,
}

impl TempDir {
    /// A fresh, empty directory under the system's temporary directory.
    pub fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "taskyard-test-{}-{n}-{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir { path }
    }

    /// Its path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
