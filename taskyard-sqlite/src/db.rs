//! Opening the file: pragmas, the schema, and waiting out other processes' locks.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OpenFlags};
use taskyard::{Error, Result};

use crate::{Options, Synchronous};

/// The schema this version writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

/// How long one statement waits on another process's lock before SQLite gives up
/// (`busy_timeout`); our own retry loop then keeps trying up to `Options::locked_for`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the file may stay locked by other processes before a call fails, by
/// default. Only a process holding a write transaction this long (a stuck or hostile
/// one) gets here.
pub(crate) const LOCKED_FOR: Duration = Duration::from_secs(60);

/// The WAL is truncated back to this size after a checkpoint, so a burst of writes does
/// not leave a large file behind.
const WAL_SIZE_LIMIT: i64 = 4 * 1024 * 1024;

// Job states as stored. One table holds every job; `rank` orders each state:
// ready - claim order (enqueue order; a released job goes before all others);
// scheduled - due time (ms); running - the claim order it had; dead and completed - when
// it got there (ms). One index on (queue, state, rank) serves claims, promotion,
// listing, counting and trimming.
pub(crate) const READY: i64 = 0;
pub(crate) const SCHEDULED: i64 = 1;
pub(crate) const RUNNING: i64 = 2;
pub(crate) const DEAD: i64 = 3;
pub(crate) const COMPLETED: i64 = 4;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS queues (
    -- AUTOINCREMENT: a deleted queue's id is never given to a new one, so another
    -- process's cached id can never name the wrong queue.
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    paused INTEGER NOT NULL DEFAULT 0,
    -- NULL: the default of QueueConfig.
    max_len INTEGER,
    dead_max INTEGER,
    dead_max_age_ms INTEGER,
    completed_max INTEGER,
    completed_max_age_ms INTEGER
);
-- The last job id (and rank) handed out: ids are never reused, even after deletes.
CREATE TABLE IF NOT EXISTS seq (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    last INTEGER NOT NULL
);
INSERT OR IGNORE INTO seq (one, last) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    queue INTEGER NOT NULL,
    state INTEGER NOT NULL,
    rank INTEGER NOT NULL,
    -- The lease token while running, else NULL.
    token TEXT,
    -- Attempts made, the running one included (counted at claim).
    attempt INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    enqueued_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    -- 'base_ms,cap_ms' when the job has its own backoff.
    backoff TEXT,
    payload BLOB NOT NULL,
    -- One line per failed attempt: 'attempt<TAB>at_ms<TAB>message'.
    errors TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (queue, state, rank);
-- One lease per claim call, as on Redis: a worker heartbeats its batch with one row.
CREATE TABLE IF NOT EXISTS leases (
    token TEXT PRIMARY KEY,
    queue INTEGER NOT NULL,
    ends_ms INTEGER NOT NULL,
    -- The job ids claimed with it, '1,2,3'.
    ids TEXT NOT NULL,
    -- How many of them are still running.
    running INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS leases_by_end ON leases (queue, ends_ms);
";

/// Whether an error is another connection holding a lock we need.
pub(crate) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// Runs `f` until it gets past other processes' locks, for up to `limit`.
/// `SQLITE_BUSY` never reaches a user: it is waited out, and only a lock held for a
/// minute becomes an error that says so.
pub(crate) fn patiently<T>(
    limit: Duration,
    mut f: impl FnMut() -> rusqlite::Result<T>,
) -> Result<T> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match f() {
            Err(e) if is_busy(&e) => {
                if start.elapsed() >= limit {
                    return Err(Error::Store(
                        format!(
                            "the store file stayed locked by another process for {} s",
                            limit.as_secs_f64()
                        )
                        .into(),
                    ));
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            other => return other.map_err(db),
        }
    }
}

/// An SQLite error as a store error.
pub(crate) fn db(e: rusqlite::Error) -> Error {
    if e.sqlite_error_code() == Some(ErrorCode::DiskFull) {
        return Error::Store(
            format!("the store is full (its size limit or the disk's): {e}").into(),
        );
    }
    Error::store(e)
}

fn open_file(path: &Path, locked_for: Duration) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| {
        Error::Store(format!("cannot open the store file {}: {e}", path.display()).into())
    })?;
    conn.busy_timeout(BUSY_TIMEOUT.min(locked_for))
        .map_err(db)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Opens the writer's connection: WAL mode, the durability setting, and the schema.
pub(crate) fn open_writer(path: &Path, options: &Options) -> Result<Connection> {
    let conn = open_file(path, options.locked_for)?;
    let not_ours = |e: Error| {
        Error::Store(format!("{} is not a usable taskyard store: {e}", path.display()).into())
    };
    // Only takes effect on a new file, before the first table: it lets maintenance give
    // freed pages back to the file system (see `vacuum`).
    patiently(options.locked_for, || {
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
    })
    .map_err(not_ours)?;
    let mode: String = patiently(options.locked_for, || {
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
    })
    .map_err(not_ours)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Store(
            format!(
                "{} cannot use WAL mode (journal mode stays {mode}); \
                 is it on a network file system?",
                path.display()
            )
            .into(),
        ));
    }
    let sync = match options.synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync).map_err(db)?;
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
        .map_err(db)?;
    if let Some(bytes) = options.max_size {
        let page: i64 = conn
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .map_err(db)?;
        let pages = (bytes / page as u64).clamp(1, i64::MAX as u64) as i64;
        conn.pragma_update(None, "max_page_count", pages)
            .map_err(db)?;
    }
    let version = |conn: &Connection| -> Result<i64> {
        patiently(options.locked_for, || {
            conn.pragma_query_value(None, "user_version", |r| r.get(0))
        })
    };
    // The usual case, the schema in place, writes nothing: opening the file for a CLI
    // command does not contend with the workers for the write lock.
    if version(&conn)? == SCHEMA_VERSION {
        return Ok(conn);
    }
    patiently(options.locked_for, || conn.execute_batch("BEGIN IMMEDIATE"))?;
    let created = (|| {
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(db)?;
        if version > SCHEMA_VERSION {
            return Err(Error::Corrupt(format!(
                "{} was written by a newer taskyard (schema {version}, this one reads {SCHEMA_VERSION})",
                path.display()
            )));
        }
        conn.execute_batch(SCHEMA).map_err(db)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(db)
    })();
    match created {
        Ok(()) => patiently(options.locked_for, || conn.execute_batch("COMMIT"))?,
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    Ok(conn)
}

/// Opens a reader's connection: it never writes.
pub(crate) fn open_reader(path: &Path, locked_for: Duration) -> Result<Connection> {
    let conn = open_file(path, locked_for)?;
    conn.pragma_update(None, "query_only", true).map_err(db)?;
    Ok(conn)
}
