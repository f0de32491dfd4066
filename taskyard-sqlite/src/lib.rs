//! The embedded store for taskyard: one SQLite file on local disk, the default store.
//!
//! [`SqliteStore`] implements [`taskyard_core::Store`] on a file in WAL mode, so other
//! processes on the same machine (the CLI, a second worker, a dashboard) use the file
//! while a worker runs: readers never block the writer, nor it them.
//!
//! - **One writer, group commit.** Every change goes to one thread that owns the write
//!   connection; it runs every change waiting in one transaction and answers each caller
//!   after the commit (`writer.rs`). Another process's writer takes turns through SQLite's
//!   file lock; `SQLITE_BUSY` is waited out, never shown to a caller.
//! - **Durability.** By default an acknowledged change survives power loss
//!   (`synchronous=FULL`: the WAL is fsynced at every commit). [`Synchronous::Normal`]
//!   is faster and survives a crash of the process, but the last commits before a power
//!   loss may be lost (the file stays consistent).
//! - **Time** comes from one [`Clock`] per store: the system clock, or a
//!   [`ManualClock`] in tests.
//! - **Full, it still drains.** Enqueues stop with [`Error::StoreFull`] short of the
//!   size cap or a full disk, keeping [`Options::reserve`] for claims, finishes and
//!   maintenance (`room.rs`, docs/embedded.md).
//! - **Looking changes nothing.** [`SqliteStore::open_read_only`] reads a file without
//!   creating or changing any; dropping the last handle of a store closes its connections
//!   and, if no other process uses the file, leaves it one file (WAL checkpointed).
//! - **Cancels, progress, results, waits.** A cancel ends a job `cancelled` in its row;
//!   a running one is reported to its claim's heartbeats. Progress is a column of the
//!   running job; results, and waits on a job, are tables of their own that plain jobs
//!   never touch. Waiters in this process are woken at once after the commit; those of
//!   other processes read a counter row every [`Options::poll`].
//! - **Bounded file.** Finished jobs are deleted (or kept as retention says), and
//!   maintenance gives free pages back to the file system once a drained backlog leaves
//!   many (incremental vacuum); the WAL is truncated after checkpoints.
//!
//! ```no_run
//! # async fn example() -> taskyard_core::Result<()> {
//! let store = taskyard_sqlite::SqliteStore::open_default().await?; // ./taskyard.db
//! let client = taskyard_core::Client::new(store);
//! # Ok(()) }
//! ```

mod bulk;
mod db;
mod ops;
mod read;
mod room;
mod schedules;
mod unique;
mod url;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rusqlite::Connection;
use taskyard_core::schedule::StoredSchedule;
use taskyard_core::{
    Beat, Claim, Cursor, Enqueued, Error, JobFilter, JobId, JobInfo, JobState, Lease, LeaseToken,
    Maintenance, NewJob, Outcome, Page, QueueConfig, QueueName, QueueStats, Result, Step, Store,
};

use crate::bulk::Action;
pub use crate::url::parse_url;
use crate::writer::{Signals, Writer};

/// The file every command and [`SqliteStore::open_default`] use when no store is named.
pub const DEFAULT_PATH: &str = "taskyard.db";

/// [`Options::reserve`] by default.
pub const DEFAULT_RESERVE: u64 = 8 * 1024 * 1024;

/// Where the store's time comes from: lease deadlines, due times, and when jobs finished.
pub trait Clock: Send + Sync + 'static {
    /// Now, in Unix milliseconds.
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        taskyard_core::job::system_time_ms(std::time::SystemTime::now())
    }
}

/// A clock that moves only when told: for tests of leases, delays and retention without
/// waiting for them.
#[derive(Debug, Default)]
pub struct ManualClock {
    ms: AtomicU64,
}

impl ManualClock {
    /// A clock reading `ms`.
    pub fn new(ms: u64) -> Self {
        ManualClock {
            ms: AtomicU64::new(ms),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.ms.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.ms.load(Ordering::SeqCst)
    }
}

/// How hard each commit is pushed to disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// Each commit is on disk before it is acknowledged: survives power loss.
    #[default]
    Full,
    /// Commits reach the disk at checkpoints: survives a process crash; a power loss
    /// may lose the last commits (never the file's consistency). Faster.
    Normal,
}

/// How to open a store.
#[derive(Clone)]
pub struct Options {
    /// Durability of each commit; default [`Synchronous::Full`].
    pub synchronous: Synchronous,
    /// Where time comes from; default the system clock.
    pub clock: Arc<dyn Clock>,
    /// A cap on the file's size in bytes (rounded down to whole pages). Enqueues stop at
    /// `max_size - reserve` with [`Error::StoreFull`] and write nothing; every other
    /// change may use the whole cap. Must be at least `reserve` + 256 KiB. Default: none.
    pub max_size: Option<u64>,
    /// Room kept for everything but enqueues (claims, finishes, releases, heartbeats,
    /// maintenance), so a full store still drains: enqueues are refused once the file's
    /// data would pass `max_size - reserve`, or once the disk has less than `reserve`
    /// bytes free. Default: 8 MiB (two WAL checkpoints' worth, see docs/embedded.md).
    pub reserve: u64,
    /// How long a call waits out another process holding the file's write lock before it
    /// fails with an error saying so. Default: 60 s.
    pub locked_for: Duration,
    /// How often an idle worker looks for work that another process added (an enqueue
    /// through this store, or a clone of it, wakes idle workers at once), and how often
    /// waits for cancels and for a job's end look at the counters other processes bump
    /// (a cancel or an end through this store wakes them at once). Default: 50 ms.
    pub poll: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            synchronous: Synchronous::Full,
            clock: Arc::new(SystemClock),
            max_size: None,
            reserve: DEFAULT_RESERVE,
            locked_for: db::LOCKED_FOR,
            poll: Duration::from_millis(50),
        }
    }
}

/// The settings the writer's connection runs with, as SQLite reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pragmas {
    /// `wal`.
    pub journal_mode: String,
    /// 2 = FULL, 1 = NORMAL.
    pub synchronous: i64,
    /// 2 = INCREMENTAL.
    pub auto_vacuum: i64,
    /// Milliseconds a statement waits on another process's lock.
    pub busy_timeout_ms: i64,
}

/// A store in one SQLite file. Cheap to clone; clones share the writer and readers.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// `None` for a store opened read-only: it has no write connection at all.
    writer: Option<Writer>,
    /// Reader connections not in use.
    readers: Mutex<Vec<Connection>>,
    clock: Arc<dyn Clock>,
    /// Raised after commits: work made ready (idle workers of this process wait on it),
    /// running jobs cancelled, waited jobs ended.
    signals: Arc<Signals>,
    /// How often idle workers look for other processes' work.
    poll: Duration,
    /// How long a reader waits out other processes' locks.
    locked_for: Duration,
    /// Where enqueues stop.
    room: Arc<room::Room>,
}

impl Drop for Inner {
    /// Closes the readers first, then the writer (its drop waits for its thread), so the
    /// writer's connection is the last one of this process: if no other process uses the
    /// file, SQLite checkpoints the WAL into it and removes the `-wal` and `-shm` files,
    /// leaving one file behind.
    fn drop(&mut self) {
        self.readers
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

impl SqliteStore {
    /// Opens (or creates) the store in `./taskyard.db`.
    pub async fn open_default() -> Result<Self> {
        Self::open(DEFAULT_PATH).await
    }

    /// Opens (or creates) the store in a file, with the default options.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, Options::default()).await
    }

    /// Opens (or creates) the store in a file.
    pub async fn open_with(path: impl AsRef<Path>, options: Options) -> Result<Self> {
        if options.poll.is_zero() {
            // Idle workers would look for other processes' work without pause.
            return Err(Error::InvalidOption(
                "Options::poll must be above zero".into(),
            ));
        }
        let path = path.as_ref().to_path_buf();
        let room = Arc::new(room::Room::new(&path, options.reserve, options.max_size)?);
        let signals = Arc::new(Signals::default());
        let writer = Writer::start(path.clone(), options.clone(), signals.clone()).await?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                writer: Some(writer),
                readers: Mutex::new(Vec::new()),
                clock: options.clock,
                signals,
                poll: options.poll,
                locked_for: options.locked_for,
                room,
            }),
        })
    }

    /// Opens the store a `--store` value names: a path or a `file:` URL, with options
    /// after `?` (see [`parse_url`]).
    pub async fn open_url(url: &str) -> Result<Self> {
        let (path, options) = parse_url(url)?;
        Self::open_with(path, options).await
    }

    /// Opens an existing store to read it only: the file is opened read-only, nothing is
    /// created or changed beside it, and a file of release 0.1 is read as it is (the
    /// first process that opens it to write upgrades it). Every change (enqueue, claim,
    /// pause, ...) fails with [`Error::InvalidOption`]. A missing or empty file is
    /// refused: `no taskyard store at PATH`.
    pub async fn open_read_only(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if !path.is_file() {
            return Err(Error::InvalidOption(format!(
                "no taskyard store at {}: nothing has been enqueued there yet",
                path.display()
            )));
        }
        let options = Options::default();
        let store = SqliteStore {
            inner: Arc::new(Inner {
                room: Arc::new(room::Room::new(&path, options.reserve, None)?),
                path,
                writer: None,
                readers: Mutex::new(Vec::new()),
                clock: options.clock,
                signals: Arc::new(Signals::default()),
                poll: options.poll,
                locked_for: options.locked_for,
            }),
        };
        // Refuses a foreign file or one of a newer release before any command reads it.
        store.read(|_| Ok(())).await?;
        Ok(store)
    }

    /// [`SqliteStore::open_read_only`] on the file a `--store` value names.
    pub async fn open_url_read_only(url: &str) -> Result<Self> {
        let (path, _) = parse_url(url)?;
        Self::open_read_only(path).await
    }

    /// Whether this store was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.inner.writer.is_none()
    }

    /// The writer, or the error of a change asked of a read-only store.
    fn writer(&self) -> Result<&Writer> {
        self.inner.writer.as_ref().ok_or_else(|| {
            Error::InvalidOption(format!(
                "the store {} was opened read-only, for a command that only looks: \
                 open it with SqliteStore::open to change it",
                self.inner.path.display()
            ))
        })
    }

    /// The file this store is in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The settings the writer's connection runs with, read back from SQLite.
    pub async fn pragmas(&self) -> Result<Pragmas> {
        self.writer()?
            .call(|tx| {
                let text = |name: &str| {
                    tx.conn
                        .pragma_query_value(None, name, |r| r.get::<_, String>(0))
                        .map_err(db::db)
                };
                let int = |name: &str| {
                    tx.conn
                        .pragma_query_value(None, name, |r| r.get::<_, i64>(0))
                        .map_err(db::db)
                };
                Ok(Pragmas {
                    journal_mode: text("journal_mode")?,
                    synchronous: int("synchronous")?,
                    auto_vacuum: int("auto_vacuum")?,
                    busy_timeout_ms: int("busy_timeout")?,
                })
            })
            .await
    }

    /// Transactions the writer has committed since the store was opened: each is one
    /// group of operations (and, with `synchronous=FULL`, one fsync of the WAL).
    pub fn commits(&self) -> u64 {
        self.inner.writer.as_ref().map_or(0, Writer::commits)
    }

    /// Bytes of the file in use by data (pages not on the free list), to measure
    /// footprints.
    pub async fn used_bytes(&self) -> Result<u64> {
        self.writer()?
            .call(|tx| {
                let int = |name: &str| {
                    tx.conn
                        .pragma_query_value(None, name, |r| r.get::<_, i64>(0))
                        .map_err(db::db)
                };
                Ok(((int("page_count")? - int("freelist_count")?) * int("page_size")?) as u64)
            })
            .await
    }

    /// Runs `f` on a reader connection, on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        F: Fn(&Connection) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            if inner.writer.is_none() {
                return read_only(&inner, &f);
            }
            let pooled = inner
                .readers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop();
            let conn = match pooled {
                Some(c) => c,
                None => db::open_reader(&inner.path, inner.locked_for)?,
            };
            // A newer release may have migrated the file since this one opened it.
            let out = db::patiently(inner.locked_for, || {
                match db::check_version(&conn).and_then(|()| f(&conn)) {
                    Err(Error::Store(e)) => match e.downcast::<rusqlite::Error>() {
                        Ok(e) => Err(*e),
                        Err(e) => Ok(Err(Error::Store(e))),
                    },
                    other => Ok(other),
                }
            });
            inner
                .readers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(conn);
            out?
        })
        .await
        .map_err(|e| Error::Store(format!("a store read failed: {e}").into()))?
    }
}

/// The largest number the file keeps: SQLite's integers are 64-bit signed.
const MAX_SETTING: u64 = i64::MAX as u64;

/// A lease in milliseconds, or the error of one the file cannot hold.
fn lease_ms(lease: Duration) -> Result<u64> {
    u64::try_from(lease.as_millis())
        .ok()
        .filter(|ms| *ms <= MAX_SETTING)
        .ok_or_else(|| {
            Error::InvalidOption(format!(
                "lease {lease:?} is out of range: the file store keeps leases of 0 to \
                 {MAX_SETTING} ms"
            ))
        })
}

/// One read of a read-only store, on a connection of its own (see `db::open_read_only`).
/// A read of the immutable file is used only if the file did not change while it ran (a
/// process that opened the file meanwhile); otherwise it is read again, through that
/// process's WAL.
fn read_only<T>(inner: &Inner, f: &dyn Fn(&Connection) -> Result<T>) -> Result<T> {
    for _ in 0..5 {
        let (conn, stamp) = db::open_read_only(&inner.path, inner.locked_for)?;
        let out = db::patiently(inner.locked_for, || {
            match db::check_readable(&inner.path, &conn).and_then(|()| f(&conn)) {
                Err(Error::Store(e)) => match e.downcast::<rusqlite::Error>() {
                    Ok(e) => Err(*e),
                    Err(e) => Ok(Err(Error::Store(e))),
                },
                other => Ok(other),
            }
        });
        drop(conn);
        match stamp {
            Some(before) if db::Stamp::of(&inner.path)? != before => continue,
            _ => return out?,
        }
    }
    Err(Error::Store(
        format!(
            "the store file {} kept changing while it was read without a WAL \
             (is another program writing to it?)",
            inner.path.display()
        )
        .into(),
    ))
}

#[taskyard_core::async_trait]
impl Store for SqliteStore {
    async fn enqueue_report(&self, queue: &QueueName, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let queue = queue.clone();
        let room = self.inner.room.clone();
        self.writer()?
            .call(move |tx| {
                let before = room::Pages::read(tx.conn)?;
                let enqueued = ops::enqueue(tx, &queue, &jobs)?;
                room.check_enqueue(tx.conn, before)?;
                Ok(enqueued)
            })
            .await
    }

    async fn claim(
        &self,
        queue: &QueueName,
        max: usize,
        lease: Duration,
        token: &LeaseToken,
    ) -> Result<Claim> {
        let token = token.clone();
        let queue = queue.clone();
        let lease_ms = lease_ms(lease)?;
        let (jobs, next_due) = self
            .writer()?
            .call(move |tx| ops::claim(tx, &queue, max, lease_ms, &token))
            .await?;
        Ok(Claim {
            jobs,
            next_due: next_due.map(Duration::from_millis),
        })
    }

    async fn wait(&self, queues: &[QueueName], timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        // Registered before looking, so a commit between the look and the sleep still
        // wakes this wait.
        let notified = self.inner.signals.work.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        loop {
            let qs = queues.to_vec();
            let clock = self.inner.clock.clone();
            if self
                .read(move |conn| read::has_work(conn, &qs, clock.now_ms()))
                .await?
            {
                return Ok(());
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(());
            }
            // Another process's enqueue raises no notification here: look again soon.
            tokio::select! {
                _ = &mut notified => return Ok(()),
                _ = tokio::time::sleep_until(deadline.min(now + self.inner.poll)) => {}
            }
        }
    }

    async fn heartbeat(
        &self,
        leases: &[Lease],
        lease: Duration,
        progress: &[(Lease, Bytes)],
    ) -> Result<Beat> {
        let (leases, progress) = (leases.to_vec(), progress.to_vec());
        let lease_ms = lease_ms(lease)?;
        self.writer()?
            .call(move |tx| ops::heartbeat(tx, &leases, lease_ms, &progress))
            .await
    }

    async fn wait_cancel(&self, _queues: &[QueueName], timeout: Duration) -> Result<()> {
        // One counter for the file: a cancel in any queue wakes every waiter (spurious
        // for the others, allowed), which is rare enough to cost nothing.
        let notified = self.inner.signals.cancels.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let (seen, _) = self.read(read::signals).await?;
        self.until_signal(notified, timeout, move |(cancels, _)| cancels != seen)
            .await
    }

    async fn wait_job(&self, queue: &QueueName, id: &JobId, timeout: Duration) -> Result<()> {
        let notified = self.inner.signals.ends.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let until = self
            .inner
            .clock
            .now_ms()
            .saturating_add(timeout.as_millis().min(u64::MAX as u128) as u64);
        let (queue, id) = (queue.clone(), id.clone());
        let registered = self
            .writer()?
            .call(move |tx| ops::wait_job(tx, &queue, &id, until))
            .await?;
        let Some(seen) = registered else {
            // Unknown or already ended: nothing to wait for.
            return Ok(());
        };
        self.until_signal(notified, timeout, move |(_, ends)| ends != seen)
            .await
    }

    async fn finish(&self, outcomes: &[(Lease, Outcome)]) -> Result<Vec<bool>> {
        let outcomes = outcomes.to_vec();
        self.writer()?
            .call(move |tx| ops::finish(tx, &outcomes))
            .await
    }

    async fn release(&self, leases: &[Lease]) -> Result<Vec<bool>> {
        let leases = leases.to_vec();
        self.writer()?
            .call(move |tx| ops::release(tx, &leases))
            .await
    }

    async fn maintain(&self, queue: &QueueName) -> Result<Maintenance> {
        let queue = queue.clone();
        self.writer()?
            .call(move |tx| ops::maintain(tx, &queue))
            .await
    }

    async fn now_ms(&self) -> Result<u64> {
        Ok(self.inner.clock.now_ms())
    }

    async fn queues(&self) -> Result<Vec<QueueName>> {
        self.read(read::queues).await
    }

    async fn stats(&self, queue: &QueueName) -> Result<QueueStats> {
        let queue = queue.clone();
        self.read(move |conn| read::stats(conn, &queue)).await
    }

    async fn list(
        &self,
        queue: &QueueName,
        state: JobState,
        after: &Cursor,
        limit: u64,
    ) -> Result<Page> {
        let queue = queue.clone();
        let after = read::Position::parse(after)?;
        let clock = self.inner.clock.clone();
        self.read(move |conn| read::list(conn, &queue, state, after, limit, clock.now_ms()))
            .await
    }

    async fn job(&self, queue: &QueueName, id: &JobId) -> Result<Option<JobInfo>> {
        let (queue, id) = (queue.clone(), id.clone());
        let clock = self.inner.clock.clone();
        self.read(move |conn| read::job(conn, &queue, &id, clock.now_ms()))
            .await
    }

    async fn find(&self, id: &JobId) -> Result<Option<JobInfo>> {
        let id = id.clone();
        let clock = self.inner.clock.clone();
        self.read(move |conn| read::find(conn, &id, clock.now_ms()))
            .await
    }

    async fn redrive(&self, queue: &QueueName, filter: &JobFilter, after: &Cursor) -> Result<Step> {
        self.step(queue, Action::Redrive, filter, after).await
    }

    async fn purge(&self, queue: &QueueName, filter: &JobFilter, after: &Cursor) -> Result<Step> {
        self.step(queue, Action::Purge, filter, after).await
    }

    async fn run_now(&self, queue: &QueueName, filter: &JobFilter, after: &Cursor) -> Result<Step> {
        self.step(queue, Action::RunNow, filter, after).await
    }

    async fn delete(&self, queue: &QueueName, filter: &JobFilter, after: &Cursor) -> Result<Step> {
        self.step(queue, Action::Delete, filter, after).await
    }

    async fn cancel(&self, queue: &QueueName, filter: &JobFilter, after: &Cursor) -> Result<Step> {
        self.step(queue, Action::Cancel, filter, after).await
    }

    async fn delete_queue(&self, queue: &QueueName, _after: &Cursor) -> Result<Step> {
        // Every row a step examines goes, so each step starts from the start.
        let queue = queue.clone();
        self.writer()?
            .call(move |tx| bulk::delete_queue(tx, &queue))
            .await
    }

    async fn set_paused(&self, queue: &QueueName, paused: bool) -> Result<()> {
        let queue = queue.clone();
        self.writer()?
            .call(move |tx| ops::set_paused(tx, &queue, paused))
            .await
    }

    async fn config(&self, queue: &QueueName) -> Result<QueueConfig> {
        let queue = queue.clone();
        self.read(move |conn| read::config(conn, &queue)).await
    }

    async fn configure(&self, queue: &QueueName, config: &QueueConfig) -> Result<()> {
        config.check_at_most(MAX_SETTING, "the file store")?;
        let (queue, config) = (queue.clone(), *config);
        self.writer()?
            .call(move |tx| ops::configure(tx, &queue, &config))
            .await
    }

    async fn schedules(&self, queue: &QueueName) -> Result<Vec<StoredSchedule>> {
        let queue = queue.clone();
        self.read(move |conn| schedules::list(conn, &queue)).await
    }

    async fn put_schedule(&self, queue: &QueueName, schedule: &StoredSchedule) -> Result<bool> {
        let (queue, schedule) = (queue.clone(), schedule.clone());
        self.writer()?
            .call(move |tx| schedules::put(tx, &queue, &schedule))
            .await
    }

    async fn remove_schedule(&self, queue: &QueueName, name: &str) -> Result<bool> {
        let (queue, name) = (queue.clone(), name.to_string());
        self.writer()?
            .call(move |tx| schedules::remove(tx, &queue, &name))
            .await
    }

    async fn fire(
        &self,
        queue: &QueueName,
        name: &str,
        rev: u64,
        next_ms: u64,
        last_ms: Option<u64>,
        jobs: Vec<NewJob>,
    ) -> Result<Option<Vec<JobId>>> {
        let (queue, name) = (queue.clone(), name.to_string());
        let room = self.inner.room.clone();
        self.writer()?
            .call(move |tx| {
                let before = room::Pages::read(tx.conn)?;
                let fired = schedules::fire(tx, &queue, &name, rev, next_ms, last_ms, &jobs)?;
                if fired.as_ref().is_some_and(|ids| !ids.is_empty()) {
                    room.check_enqueue(tx.conn, before)?;
                }
                Ok(fired)
            })
            .await
    }
}

impl SqliteStore {
    /// Waits until `notified` (this process's signal) fires, the counters other
    /// processes bump satisfy `changed` (read every `Options::poll`, one indexed read), or
    /// `timeout` passes.
    async fn until_signal(
        &self,
        mut notified: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
        timeout: Duration,
        changed: impl Fn((i64, i64)) -> bool,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(());
            }
            tokio::select! {
                _ = &mut notified => return Ok(()),
                _ = tokio::time::sleep_until(deadline.min(now + self.inner.poll)) => {}
            }
            if changed(self.read(read::signals).await?) {
                return Ok(());
            }
        }
    }

    /// One step of a bulk operation: at most 1,000 jobs in one transaction, so a large
    /// one never holds the writer for long.
    async fn step(
        &self,
        queue: &QueueName,
        action: Action,
        filter: &JobFilter,
        after: &Cursor,
    ) -> Result<Step> {
        let (queue, filter) = (queue.clone(), filter.clone());
        let after = bulk::Resume::parse(after)?;
        self.writer()?
            .call(move |tx| bulk::step(tx, &queue, action, &filter, after))
            .await
    }
}
