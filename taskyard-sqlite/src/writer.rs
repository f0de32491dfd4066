//! The one writer: a thread that owns the write connection and commits in groups.
//!
//! Every state change is an operation sent to this thread. It takes all the operations
//! waiting (up to [`GROUP`]), runs them in one transaction, each inside its own savepoint
//! (an operation that fails is undone alone), commits once, and only then answers each
//! caller. One fsync thus covers many callers: a worker's claim, another's completions
//! and a producer's enqueue share a commit.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use rusqlite::Connection;
use taskyard_core::{Error, QueueName, Result};
use tokio::sync::{Notify, oneshot};

use crate::db::{self, db, patiently};
use crate::read::{self, QueueRow};
use crate::{Clock, Options};

/// Operations per transaction at most: bounds how long one commit keeps callers waiting.
const GROUP: usize = 512;

/// What the writer raises after a commit, for this process's waiters (other processes
/// see the commits themselves: polled reads and the `signals` counters).
#[derive(Debug, Default)]
pub(crate) struct Signals {
    /// Work was made ready: idle workers ([`Store::wait`](taskyard_core::Store::wait)).
    pub(crate) work: Notify,
    /// A running job was cancelled: heartbeaters
    /// ([`Store::wait_cancel`](taskyard_core::Store::wait_cancel)).
    pub(crate) cancels: Notify,
    /// A job someone waits on ended ([`Store::wait_job`](taskyard_core::Store::wait_job)).
    pub(crate) ends: Notify,
}

/// What an operation sees: the connection inside the open transaction, the store time,
/// and flags to raise for the [`Signals`] sent after commit.
pub(crate) struct Tx<'c> {
    pub(crate) conn: &'c Connection,
    pub(crate) now: u64,
    /// It made work ready.
    pub(crate) wake: bool,
    /// It cancelled a running job.
    pub(crate) cancelled: bool,
    /// It ended a job someone waits on.
    pub(crate) ended: bool,
    /// Queue ids seen by this writer. Emptied whenever a change is rolled back, so it
    /// only ever holds committed rows. A queue deleted since (by any process) is noticed
    /// where its row is read ([`Tx::settings`]): its id is never given to another queue.
    queues: &'c mut HashMap<String, i64>,
}

impl Tx<'_> {
    /// A queue's id and row (paused, settings), in one lookup when its id is cached, or
    /// `None` if it has none. A cached id whose row is gone — the queue was deleted, by
    /// this process or another — is dropped and the name looked up again: a deleted
    /// queue's id names nothing ever again (queue ids are not reused), so no job is
    /// written under it, and a queue made again under its name is found.
    pub(crate) fn settings(&mut self, name: &QueueName) -> Result<Option<(i64, QueueRow)>> {
        if let Some(&id) = self.queues.get(name.as_str()) {
            if let Some(row) = read::queue_row(self.conn, id)? {
                return Ok(Some((id, row)));
            }
            self.queues.remove(name.as_str());
        }
        let found = read::queue_by_name(self.conn, name)?;
        if let Some((id, _)) = found {
            self.queues.insert(name.as_str().to_string(), id);
        }
        Ok(found)
    }

    /// [`Tx::settings`] of a queue, made on first use.
    pub(crate) fn ensure(&mut self, name: &QueueName) -> Result<(i64, QueueRow)> {
        if let Some(found) = self.settings(name)? {
            return Ok(found);
        }
        self.conn
            .prepare_cached("INSERT INTO queues (name) VALUES (?1)")
            .and_then(|mut s| s.execute([name.as_str()]))
            .map_err(db)?;
        let id = self.conn.last_insert_rowid();
        self.queues.insert(name.as_str().to_string(), id);
        Ok((id, QueueRow::default()))
    }

    /// The id of a queue, if it has one.
    pub(crate) fn queue(&mut self, name: &QueueName) -> Result<Option<i64>> {
        Ok(self.settings(name)?.map(|(id, _)| id))
    }

    /// Forgets a queue's id (it was deleted).
    pub(crate) fn forget_queue(&mut self, name: &QueueName) {
        self.queues.remove(name.as_str());
    }

    /// Takes `n` fresh numbers from the sequence (job ids and ready ranks); returns the
    /// first.
    pub(crate) fn fresh(&mut self, n: usize) -> Result<i64> {
        let last: i64 = self
            .conn
            .prepare_cached("UPDATE seq SET last = last + ?1 WHERE one = 1 RETURNING last")
            .and_then(|mut s| s.query_row([n as i64], |r| r.get(0)))
            .map_err(db)?;
        Ok(last - n as i64 + 1)
    }
}

/// One operation, sent to the writer thread.
trait Op: Send {
    /// Runs inside the transaction; returns whether it succeeded. It may run again, in a
    /// new transaction, when SQLite rolled back the one it ran in because of another
    /// operation.
    fn run(&mut self, tx: &mut Tx<'_>) -> bool;
    /// Sends the last run's result once the transaction is committed, or the commit's
    /// error.
    fn answer(self: Box<Self>, commit: std::result::Result<(), &Failed>);
    /// Fails without running (no transaction could be opened, or it must not be used).
    fn fail(self: Box<Self>, error: Error);
}

struct Call<F, T> {
    f: F,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<F, T> Op for Call<F, T>
where
    F: FnMut(&mut Tx<'_>) -> Result<T> + Send,
    T: Send + 'static,
{
    fn run(&mut self, tx: &mut Tx<'_>) -> bool {
        // Stays the answer if `f` panics.
        self.result = Some(Err(Error::Store("the store operation panicked".into())));
        let result = (self.f)(tx);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(self: Box<Self>, commit: std::result::Result<(), &Failed>) {
        let result = match (commit, self.result) {
            (_, Some(Err(e))) => Err(e),
            (Ok(()), Some(ok)) => ok,
            (Ok(()), None) => Err(Error::Store("the store operation did not run".into())),
            (Err(e), _) => Err(e.error()),
        };
        let _ = self.reply.send(result);
    }

    fn fail(self: Box<Self>, error: Error) {
        let _ = self.reply.send(Err(error));
    }
}

/// Why a group could not commit, told to each of its operations: a full store stays
/// [`Error::StoreFull`] for every one of them, so callers can tell it from other errors.
#[derive(Debug, Clone)]
pub(crate) enum Failed {
    Full(String),
    Locked(f64),
    Other(String),
}

impl Failed {
    fn from_error(e: Error) -> Failed {
        match e {
            Error::StoreFull { reason } => Failed::Full(reason),
            Error::StoreLocked { seconds } => Failed::Locked(seconds),
            other => Failed::Other(other.to_string()),
        }
    }

    fn from_sqlite(e: rusqlite::Error) -> Failed {
        Failed::from_error(db(e))
    }

    fn error(&self) -> Error {
        match self {
            Failed::Full(reason) => Error::StoreFull {
                reason: reason.clone(),
            },
            Failed::Locked(seconds) => Error::StoreLocked { seconds: *seconds },
            Failed::Other(e) => Error::Store(format!("the store could not commit: {e}").into()),
        }
    }
}

/// The handle to the writer thread. The thread ends when every handle is dropped.
pub(crate) struct Writer {
    ops: mpsc::Sender<Box<dyn Op>>,
    /// Transactions committed so far.
    commits: Arc<AtomicU64>,
    /// The writer thread, joined on drop: its connection is closed (and the WAL
    /// checkpointed, when it is the file's last) before the store's drop returns, so a
    /// process that exits right after still leaves one file.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        // The thread ends when its channel has no sender left.
        let (orphan, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.ops, orphan));
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the store's writer thread panicked");
        }
    }
}

/// What the writer thread works with besides its connection.
struct Limits<'a> {
    clock: &'a dyn Clock,
    /// How long to wait out other processes' locks.
    locked_for: Duration,
    commits: &'a AtomicU64,
    /// Wakes waiters of this store.
    signals: &'a Signals,
}

impl Writer {
    /// Opens the file (creating the schema) on a new thread and returns once it is ready.
    pub(crate) async fn start(
        path: PathBuf,
        options: Options,
        signals: Arc<Signals>,
    ) -> Result<Writer> {
        let (ops, rx) = mpsc::channel::<Box<dyn Op>>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let commits = Arc::new(AtomicU64::new(0));
        let counted = commits.clone();
        let thread = std::thread::Builder::new()
            .name("taskyard-sqlite-writer".into())
            .spawn(move || match db::open_writer(&path, &options) {
                Ok(conn) => {
                    let _ = ready_tx.send(Ok(()));
                    serve(conn, rx, &options, signals, counted);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| Error::Store(format!("cannot start the writer thread: {e}").into()))?;
        ready_rx
            .await
            .map_err(|_| Error::Store("the writer thread died while opening".into()))??;
        Ok(Writer {
            ops,
            commits,
            thread: Some(thread),
        })
    }

    /// Transactions committed so far (each one a group of operations).
    pub(crate) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Runs `f` in the next group transaction; answers after it is committed.
    pub(crate) async fn call<T, F>(&self, f: F) -> Result<T>
    where
        F: FnMut(&mut Tx<'_>) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        self.ops
            .send(Box::new(Call {
                f,
                result: None,
                reply,
            }))
            .map_err(|_| Error::Store("the store's writer has stopped".into()))?;
        rx.await
            .map_err(|_| Error::Store("the store's writer failed during the call".into()))?
    }
}

fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn serve(
    conn: Connection,
    rx: mpsc::Receiver<Box<dyn Op>>,
    options: &Options,
    signals: Arc<Signals>,
    commits: Arc<AtomicU64>,
) {
    let limits = Limits {
        clock: options.clock.as_ref(),
        locked_for: options.locked_for,
        commits: &commits,
        signals: &signals,
    };
    let mut queues = HashMap::new();
    let mut group: Vec<Box<dyn Op>> = Vec::with_capacity(GROUP);
    while let Ok(first) = rx.recv() {
        group.push(first);
        while group.len() < GROUP {
            match rx.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        // Usually one round. When SQLite rolls the whole transaction back because of one
        // operation (the file reached its size cap, an I/O error), that operation fails
        // alone and the others run again in a new transaction.
        while !group.is_empty() {
            run_group(&conn, &mut group, &limits, &mut queues);
        }
    }
}

/// Runs `group` in one transaction and answers its operations. Operations to run again
/// are left in `group`. Returns whether it woke idle waiters (after its commit, before
/// its answers).
fn run_group(
    conn: &Connection,
    group: &mut Vec<Box<dyn Op>>,
    limits: &Limits<'_>,
    queues: &mut HashMap<String, i64>,
) -> bool {
    let clock = limits.clock;
    if let Err(e) = patiently(limits.locked_for, || exec(conn, "BEGIN IMMEDIATE")) {
        let failed = match e {
            Error::StoreLocked { .. } => Failed::from_error(e),
            other => Failed::Other(other.to_string()),
        };
        for op in group.drain(..) {
            op.fail(match &failed {
                Failed::Other(msg) => Error::Store(msg.clone().into()),
                typed => typed.error(),
            });
        }
        return false;
    }
    // Every transaction checks the schema: a newer release may have migrated the file
    // since this process opened it, and then nothing here may write to it.
    let version = conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0));
    if let Ok(found) = version
        && found != db::SCHEMA_VERSION
    {
        let _ = conn.execute_batch("ROLLBACK");
        for op in group.drain(..) {
            op.fail(db::changed_under_us(found));
        }
        return false;
    }
    let mut done: Vec<Box<dyn Op>> = Vec::with_capacity(group.len());
    let mut wake = false;
    let (mut cancelled, mut ended) = (false, false);
    // Set when the transaction cannot commit as a whole (an operation could not be
    // undone alone): every operation of the group then fails; none is half-applied.
    let mut broken: Option<Failed> = None;
    let mut ops = std::mem::take(group).into_iter();
    while let Some(mut op) = ops.next() {
        if let Err(e) = exec(conn, "SAVEPOINT op") {
            broken = Some(Failed::from_sqlite(e));
            done.push(op);
            break;
        }
        let mut tx = Tx {
            conn,
            now: clock.now_ms(),
            wake: false,
            cancelled: false,
            ended: false,
            queues,
        };
        // A panic in an operation is its failure; the writer carries on.
        let ok = std::panic::catch_unwind(AssertUnwindSafe(|| op.run(&mut tx))).unwrap_or(false);
        let (op_wake, op_cancelled, op_ended) = (tx.wake, tx.cancelled, tx.ended);
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back: this operation fails, and every
            // other one of the group, run or not, runs again in a new transaction.
            queues.clear();
            if ok {
                op.fail(Error::Store("SQLite rolled the transaction back".into()));
            } else {
                op.answer(Ok(()));
            }
            group.extend(done);
            group.extend(ops);
            return false;
        }
        if ok {
            wake |= op_wake;
            cancelled |= op_cancelled;
            ended |= op_ended;
        } else {
            queues.clear();
            if let Err(e) = exec(conn, "ROLLBACK TO op") {
                broken = Some(Failed::Other(format!(
                    "could not undo a failed operation: {e}"
                )));
                done.push(op);
                break;
            }
        }
        if let Err(e) = exec(conn, "RELEASE op") {
            broken = Some(Failed::from_sqlite(e));
            done.push(op);
            break;
        }
        done.push(op);
    }
    let commit = match broken {
        Some(e) => {
            for op in ops {
                op.fail(e.error());
            }
            Err(e)
        }
        None => patiently(limits.locked_for, || exec(conn, "COMMIT")).map_err(Failed::from_error),
    };
    if commit.is_ok() {
        limits.commits.fetch_add(1, Ordering::Relaxed);
        // Before the answers: a caller that sees its enqueue done and then starts to
        // wait must not be woken by that enqueue's own wakeup.
        if wake {
            limits.signals.work.notify_waiters();
        }
        if cancelled {
            limits.signals.cancels.notify_waiters();
        }
        if ended {
            limits.signals.ends.notify_waiters();
        }
    }
    if commit.is_err() {
        if !conn.is_autocommit()
            && let Err(e) = conn.execute_batch("ROLLBACK")
        {
            tracing::error!(error = %e, "the store's writer could not roll back");
        }
        queues.clear();
        wake = false;
    }
    for op in done {
        op.answer(commit.as_ref().map(|_| ()));
    }
    wake
}
