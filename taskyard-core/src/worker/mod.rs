//! The worker runtime: a small pipeline around the store.
//!
//! ```text
//!  fetcher ──claim(up to free slots)──► executor slots ──outcomes──► completer ──finish(batch)──► store
//!                                            ▲
//!  heartbeater ── heartbeat(all held leases) every lease/3
//!  watchdog    ── time out overrunning runs, report blocked handlers, give up leases no
//!                 heartbeat renewed for a lease
//!  maintenance ── promote due jobs, return expired leases, every second
//!  cron        ── fire due schedules (periodic jobs) at their ticks
//! ```
//!
//! Each part is one task in its own file. The fetcher claims as many jobs as there are
//! free slots in one store call; each job runs in its own task; the completer batches the
//! outcomes that pile up while a store call is in flight, so under load one round trip
//! carries many completions and at rest a completion goes out at once. Maintenance needs
//! no leader: it is idempotent and every worker runs it.

mod book;
mod completer;
mod cron;
mod executor;
mod fetcher;
mod handler;
mod heartbeater;
mod hooks;
mod maintenance;
mod stop;
mod watchdog;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::{JoinError, JoinHandle};

use book::Book;
pub(crate) use handler::{Failure, Handler};
pub use handler::{JobContext, JobError, Json, Output, RunResult};
pub use hooks::{Ended, Hook, How, Next};
pub use stop::StopReason;

use crate::{Error, Job, Lease, QueueName, Result, RetryPolicy, Store};

/// How a worker picks among its queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum QueueOrder {
    /// Always the first queue with ready jobs, in the order given.
    #[default]
    Strict,
    /// Each claim draws the queue order at random, by weight.
    Weighted,
}

/// Counts of what a worker has done, as acknowledged by the store.
#[derive(Debug, Default)]
pub struct Counters {
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) stale: AtomicU64,
    pub(crate) timed_out: AtomicU64,
    pub(crate) leases_lost: AtomicU64,
    pub(crate) blocked: AtomicU64,
    pub(crate) cancelled: AtomicU64,
}

impl Counters {
    /// Completed runs so far.
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }

    /// Failed runs so far (to retry or dead).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Outcomes the store refused because the lease was no longer held.
    pub fn stale(&self) -> u64 {
        self.stale.load(Ordering::Relaxed)
    }

    /// Runs that failed as timed out so far (also counted in [`Counters::failed`] once
    /// the store records them).
    pub fn timed_out(&self) -> u64 {
        self.timed_out.load(Ordering::Relaxed)
    }

    /// Leases this worker gave up on so far: the store refused their heartbeat, or no
    /// heartbeat reached it for longer than the lease.
    pub fn leases_lost(&self) -> u64 {
        self.leases_lost.load(Ordering::Relaxed)
    }

    /// Runs whose job was cancelled while they ran: told to stop, their outcomes refused
    /// (not counted as stale).
    pub fn cancelled(&self) -> u64 {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// Handlers blocking their thread right now: timed out, aborted, and still not
    /// returned (each keeps its slot until it does).
    pub fn blocked(&self) -> u64 {
        self.blocked.load(Ordering::Relaxed)
    }
}

/// Runs jobs: claims them from its queues, runs their handlers with bounded concurrency,
/// keeps their leases alive and records the outcomes.
///
/// ```no_run
/// # async fn example() -> taskyard_core::Result<()> {
/// use std::time::Duration;
/// use serde::{Deserialize, Serialize};
/// use taskyard_core::{Job, JobContext, JobError, Worker};
///
/// #[derive(Serialize, Deserialize)]
/// struct Welcome { user_id: u64 }
/// impl Job for Welcome { const KIND: &'static str = "welcome"; }
///
/// let store = taskyard_redis::RedisStore::connect("redis://127.0.0.1:6379").await?;
/// let worker = Worker::builder(store)
///     .queue("default")
///     .concurrency(50)
///     .lease(Duration::from_secs(30))
///     .handle(|job: Welcome, ctx: JobContext| async move {
///         println!("welcome {} (attempt {})", job.user_id, ctx.attempt());
///         Ok::<(), JobError>(())
///     })
///     .build()?;
/// worker.run(taskyard_core::shutdown_signal()).await?;
/// # Ok(()) }
/// ```
pub struct Worker {
    shared: Arc<Shared>,
}

/// Builds a [`Worker`].
pub struct WorkerBuilder {
    store: Arc<dyn Store>,
    queues: Vec<(String, u32)>,
    order: QueueOrder,
    concurrency: usize,
    lease: Duration,
    grace: Duration,
    maintenance_every: Duration,
    handlers: HashMap<String, Handler>,
    default_policy: RetryPolicy,
    default_timeout: Duration,
    timeouts: HashMap<String, Duration>,
    timeout_grace: Duration,
    hooks: Vec<Arc<dyn Hook>>,
    schedules: Vec<crate::schedule::Schedule>,
}

impl WorkerBuilder {
    /// Adds a queue to serve (weight 1). Defaults to the one queue `default`.
    pub fn queue(self, name: impl Into<String>) -> Self {
        self.weighted_queue(name, 1)
    }

    /// Adds a queue with a weight, used when the order is [`QueueOrder::Weighted`].
    pub fn weighted_queue(mut self, name: impl Into<String>, weight: u32) -> Self {
        self.queues.push((name.into(), weight));
        self
    }

    /// How to pick among queues. Defaults to [`QueueOrder::Strict`].
    pub fn order(mut self, order: QueueOrder) -> Self {
        self.order = order;
        self
    }

    /// Jobs run at once. Defaults to 10.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// How long a claim holds a job before another worker may take it, unless renewed
    /// by a heartbeat (every lease/3). Defaults to 30 s.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long shutdown waits for running jobs before releasing them. Defaults to 30 s.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Declares a periodic job when the worker starts (see
    /// [`Client::schedule`](crate::Client::schedule)): every process of an application
    /// may declare the same schedules; each tick is enqueued once. A worker fires the
    /// due schedules of the queues it serves, whoever declared them.
    pub fn schedule(mut self, schedule: crate::schedule::Schedule) -> Self {
        self.schedules.push(schedule);
        self
    }

    /// How often maintenance runs (promote due jobs, return expired leases), and the
    /// longest a worker waits before it reads its queues' schedules again (it wakes at
    /// their next tick anyway). Defaults to 1 s.
    pub fn maintenance_every(mut self, every: Duration) -> Self {
        self.maintenance_every = every;
        self
    }

    /// The retry policy for kinds registered with [`WorkerBuilder::handle_raw`].
    /// Defaults to [`RetryPolicy::default`].
    pub fn default_retry(mut self, policy: RetryPolicy) -> Self {
        self.default_policy = policy;
        self
    }

    /// How long a run may take when neither its job nor its kind sets a timeout.
    /// Defaults to [`DEFAULT_TIMEOUT`](crate::job::DEFAULT_TIMEOUT) (30 minutes). Between
    /// 1 ms and [`MAX_TIMEOUT`](crate::job::MAX_TIMEOUT); checked by `build`.
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// How long a run of `kind` may take, unless its job was enqueued with its own
    /// timeout ([`EnqueueOptions::timeout`](crate::EnqueueOptions::timeout)). A run past
    /// it is told to stop ([`StopReason::Timeout`]), aborted at its next `.await` after
    /// the timeout grace, and fails as a retryable "timed out" failure. The kind must have
    /// a handler on this worker; checked by `build`.
    pub fn timeout_for(mut self, kind: impl Into<String>, timeout: Duration) -> Self {
        self.timeouts.insert(kind.into(), timeout);
        self
    }

    /// How long a run past its timeout has to return after being told to stop, before it
    /// is aborted at its next `.await`. Defaults to 5 s.
    pub fn timeout_grace(mut self, grace: Duration) -> Self {
        self.timeout_grace = grace;
        self
    }

    /// Adds a lifecycle hook: code around every run and on every recorded end (see
    /// [`Hook`]). Hooks nest in the order added, the first outermost.
    pub fn hook(mut self, hook: impl Hook) -> Self {
        self.hooks.push(Arc::new(hook));
        self
    }

    /// Registers the handler of job type `J`. A payload that does not decode as `J`
    /// sends the job to dead with the decode error.
    ///
    /// The handler returns `Ok(())`, or `Ok(value)` with a value kept as the job's result
    /// ([`Output`]: [`Json`] or a `serde_json::Value`).
    pub fn handle<J, F, Fut, O>(mut self, f: F) -> Self
    where
        J: Job,
        F: Fn(J, JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<O, JobError>> + Send + 'static,
        O: Output,
    {
        self.handlers.insert(J::KIND.to_string(), Handler::typed(f));
        self
    }

    /// Registers a handler for a kind by name, given the raw JSON payload.
    pub fn handle_raw<F, Fut, O>(mut self, kind: impl Into<String>, f: F) -> Self
    where
        F: Fn(JobContext, Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<O, JobError>> + Send + 'static,
        O: Output,
    {
        self.handlers.insert(kind.into(), Handler::raw(f));
        self
    }

    /// Checks the settings and builds the worker.
    pub fn build(self) -> Result<Worker> {
        if self.concurrency == 0 {
            return Err(Error::InvalidOption(
                "concurrency must be at least 1".into(),
            ));
        }
        if self.lease < Duration::from_millis(300) {
            return Err(Error::InvalidOption("lease must be at least 300 ms".into()));
        }
        if self.maintenance_every.is_zero() {
            return Err(Error::InvalidOption(
                "maintenance interval must be above zero".into(),
            ));
        }
        if self.handlers.is_empty() {
            return Err(Error::InvalidOption(
                "a worker needs at least one handler".into(),
            ));
        }
        for kind in self.handlers.keys() {
            crate::job::validate_kind(kind)?;
        }
        crate::job::validate_timeout(self.default_timeout)
            .map_err(|e| Error::InvalidOption(format!("default_timeout: {}", message(&e))))?;
        for (kind, timeout) in &self.timeouts {
            crate::job::validate_timeout(*timeout)
                .map_err(|e| Error::InvalidOption(format!("kind {kind}: {}", message(&e))))?;
            if !self.handlers.contains_key(kind) {
                return Err(Error::InvalidOption(format!(
                    "a timeout is set for kind {kind}, which has no handler on this worker: \
                     register its handler, or fix the kind's name"
                )));
            }
        }
        if self.timeout_grace.is_zero() {
            return Err(Error::InvalidOption(
                "timeout grace must be above zero".into(),
            ));
        }
        let names = if self.queues.is_empty() {
            vec![("default".to_string(), 1)]
        } else {
            self.queues
        };
        let mut queues = Vec::new();
        for (name, weight) in names {
            if weight == 0 {
                return Err(Error::InvalidOption(format!("queue {name} has weight 0")));
            }
            queues.push((QueueName::new(name)?, weight));
        }
        let nonce = format!("{:016x}", rand::random::<u64>());
        Ok(Worker {
            shared: Arc::new(Shared {
                store: self.store,
                queues,
                order: self.order,
                concurrency: self.concurrency,
                lease: self.lease,
                grace: self.grace,
                maintenance_every: self.maintenance_every,
                handlers: self
                    .handlers
                    .into_iter()
                    .map(|(kind, mut h)| {
                        h.policy = h.policy.or(Some(self.default_policy));
                        (kind, h)
                    })
                    .collect(),
                nonce,
                slots: Arc::new(Semaphore::new(self.concurrency)),
                book: Book::default(),
                counters: Arc::new(Counters::default()),
                default_timeout: self.default_timeout,
                timeouts: self.timeouts,
                timeout_grace: self.timeout_grace,
                hooks: self.hooks.into(),
                schedules: self.schedules,
            }),
        })
    }
}

/// State shared by the worker's tasks.
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) queues: Vec<(QueueName, u32)>,
    pub(crate) order: QueueOrder,
    pub(crate) concurrency: usize,
    pub(crate) lease: Duration,
    pub(crate) grace: Duration,
    pub(crate) maintenance_every: Duration,
    pub(crate) handlers: HashMap<String, Handler>,
    pub(crate) nonce: String,
    pub(crate) slots: Arc<Semaphore>,
    /// Jobs this worker holds a lease on: running, or finished with the outcome not yet
    /// recorded. The heartbeater renews all of them.
    pub(crate) book: Book,
    pub(crate) counters: Arc<Counters>,
    pub(crate) default_timeout: Duration,
    pub(crate) timeouts: HashMap<String, Duration>,
    pub(crate) timeout_grace: Duration,
    pub(crate) hooks: Arc<[Arc<dyn Hook>]>,
    /// Schedules to declare when the worker starts.
    pub(crate) schedules: Vec<crate::schedule::Schedule>,
}

impl Shared {
    pub(crate) fn queue_names(&self) -> Vec<QueueName> {
        self.queues.iter().map(|(q, _)| q.clone()).collect()
    }
}

impl Worker {
    /// Starts building a worker on a store (a store, or an `Arc<dyn Store>` shared with a
    /// [`Client`](crate::Client)).
    pub fn builder(store: impl IntoStore) -> WorkerBuilder {
        WorkerBuilder {
            store: store.into_store(),
            queues: Vec::new(),
            order: QueueOrder::Strict,
            concurrency: 10,
            lease: Duration::from_secs(30),
            grace: Duration::from_secs(30),
            maintenance_every: Duration::from_secs(1),
            handlers: HashMap::new(),
            default_policy: RetryPolicy::default(),
            default_timeout: crate::job::DEFAULT_TIMEOUT,
            timeouts: HashMap::new(),
            timeout_grace: Duration::from_secs(5),
            hooks: Vec::new(),
            schedules: Vec::new(),
        }
    }

    /// The worker's counters; they keep counting while it runs.
    pub fn counters(&self) -> Arc<Counters> {
        self.shared.counters.clone()
    }

    /// Runs until `shutdown` resolves, then shuts down gracefully: stops claiming, tells
    /// running handlers to stop ([`JobContext::stopped`] resolves with
    /// [`StopReason::Shutdown`]) and lets them finish within the grace period, gives back
    /// the leases of the rest (their attempt is not charged), waits up to 30 s for the
    /// outcomes to be recorded, and returns.
    ///
    /// Returns an error naming what went wrong inside the worker, if anything did: one of
    /// its tasks panicked, or outcomes could not be recorded in time (those jobs run
    /// again when their leases expire). Handlers' own failures are outcomes, not errors.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let shared = self.shared;
        cron::declare(&shared, &shared.schedules).await?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let (closing_tx, closing_rx) = watch::channel(false);
        let (done_tx, done_rx) = mpsc::unbounded_channel();

        let completer = tokio::spawn(completer::run(shared.clone(), done_rx, closing_rx));
        let cancels = Arc::new(tokio::sync::Notify::new());
        let listener = tokio::spawn(heartbeater::listen(shared.clone(), cancels.clone()));
        let heartbeater = tokio::spawn(heartbeater::run(shared.clone(), cancels));
        let watchdog = tokio::spawn(watchdog::run(shared.clone(), done_tx.clone()));
        let maintenance = tokio::spawn(maintenance::run(shared.clone(), stop_rx.clone()));
        let cron = tokio::spawn(cron::run(shared.clone(), stop_rx.clone()));
        let fetcher = tokio::spawn(fetcher::run(shared.clone(), stop_rx, done_tx));

        shutdown.await;
        tracing::info!("worker stopping: no more claims");
        let _ = stop_tx.send(true);
        let mut failures = Vec::new();
        noted(&mut failures, "fetcher", fetcher.await);
        // Every job this worker will run is started now: tell their handlers.
        shared.book.stop_all(StopReason::Shutdown);

        let all = u32::try_from(shared.concurrency).unwrap_or(u32::MAX);
        let finished = tokio::time::timeout(shared.grace, shared.slots.acquire_many(all)).await;
        if finished.is_err() {
            let leftover = shared.book.release_unfinished();
            tracing::warn!(
                jobs = leftover.len(),
                "grace period over: releasing unfinished jobs"
            );
            release(&shared, &leftover).await;
        }
        // Every run has an outcome on its way or its lease given back: no timeout is left
        // to act on.
        watchdog.abort();
        let blocked = shared.counters.blocked();
        if blocked > 0 {
            failures.push(format!(
                "{blocked} handlers still block their threads (timed out, aborted, not \
                 returned); their jobs were failed as timed out"
            ));
        }
        // The completer records what is on its way and ends once the book is empty; it
        // does not wait for the senders held by handlers that block their threads.
        let _ = closing_tx.send(true);
        match tokio::time::timeout(Duration::from_secs(30), completer).await {
            Ok(joined) => noted(&mut failures, "completer", joined),
            Err(_) => failures.push(format!(
                "outcomes of {} jobs were not recorded within 30 s; those jobs run again when \
                 their leases expire",
                shared.book.leases().0.len()
            )),
        }
        if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(1), watchdog).await
            && !e.is_cancelled()
        {
            failures.push(format!("the watchdog task failed: {e}"));
        }
        // The heartbeater and the cancel listener run until aborted (one that ended by
        // itself panicked), and are waited for once aborted: an aborted task is dropped
        // later, by the runtime, and until then it holds the store.
        for (name, task) in [("heartbeater", heartbeater), ("cancel listener", listener)] {
            task.abort();
            noted(&mut failures, name, task.await);
        }
        // Maintenance and cron end at the stop signal, after the store call in hand: they
        // are waited for, so no call of theirs is still running (and holding the store
        // open) once the worker has returned.
        for (name, mut task) in [("maintenance", maintenance), ("cron", cron)] {
            match tokio::time::timeout(Duration::from_secs(5), &mut task).await {
                Ok(joined) => noted(&mut failures, name, joined),
                Err(_) => task.abort(),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(Error::Worker(failures.join("; ")))
        }
    }

    /// Starts the worker in the background and returns a handle to stop it with. Dropping
    /// the handle also shuts the worker down gracefully, without waiting for it.
    pub fn spawn(self) -> WorkerHandle {
        let counters = self.counters();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(self.run(async {
            // A send or a dropped handle: either way, time to stop.
            let _ = stopped.await;
        }));
        WorkerHandle {
            stop: Some(stop),
            task,
            counters,
        }
    }
}

/// A worker running in the background, from [`Worker::spawn`].
pub struct WorkerHandle {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<()>>,
    counters: Arc<Counters>,
}

impl WorkerHandle {
    /// The worker's counters.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Whether the worker has stopped.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Shuts the worker down gracefully (see [`Worker::run`]) and waits until it has;
    /// returns what went wrong inside it, if anything did.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.task).await {
            Ok(result) => result,
            Err(e) => Err(Error::Worker(format!("the worker itself failed: {e}"))),
        }
    }
}

/// An error's message without the variant's prefix, to put in another.
fn message(e: &Error) -> String {
    match e {
        Error::InvalidOption(m) => m.clone(),
        other => other.to_string(),
    }
}

/// Adds a task's failure, if it had one, to `failures`.
fn noted(failures: &mut Vec<String>, task: &str, joined: std::result::Result<(), JoinError>) {
    if let Err(e) = joined
        && !e.is_cancelled()
    {
        failures.push(format!("the {task} task failed: {e}"));
    }
}

async fn release(shared: &Shared, leases: &[Lease]) {
    if leases.is_empty() {
        return;
    }
    for attempt in 0..5u32 {
        match shared.store.release(leases).await {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "release failed; retrying");
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
        }
    }
    tracing::error!("could not release leases; they return when they expire");
}

/// Anything a worker can be built on: a store, or a store already shared.
pub trait IntoStore {
    /// The store as a shared trait object.
    fn into_store(self) -> Arc<dyn Store>;
}

impl<S: Store> IntoStore for S {
    fn into_store(self) -> Arc<dyn Store> {
        Arc::new(self)
    }
}

impl IntoStore for Arc<dyn Store> {
    fn into_store(self) -> Arc<dyn Store> {
        self
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM: the usual shutdown signal for
/// [`Worker::run`].
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
