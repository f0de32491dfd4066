//! Opening the file: pragmas, the schema, and waiting out other processes' locks.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OpenFlags};
use taskyard_core::{Error, Result};

use crate::{Options, Synchronous};

/// The schema this release reads and writes (`PRAGMA user_version`): the number of
/// migrations in [`MIGRATIONS`].
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Marks a file as a taskyard store (`PRAGMA application_id`, "tyrd"), so another
/// application's SQLite file is never taken for one. Release 0.1 did not set it.
const APPLICATION_ID: i32 = 0x7479_7264;

/// The migrations, in order: `MIGRATIONS[n]` takes a file from schema `n` to `n + 1`.
/// Each runs in one transaction with the `user_version` it sets, so a file is never left
/// between two versions; a migration, once released, never changes.
const MIGRATIONS: [&str; 6] = [SCHEMA_1, SCHEMA_2, SCHEMA_3, SCHEMA_4, SCHEMA_5, SCHEMA_6];

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
// ready - claim order: the job's priority band, then the order it became ready (a
// released job goes before all others of its priority; see `ops::band`);
// scheduled - due time (ms); running - the claim order it had; dead, completed and
// cancelled - when it got there (ms). One index on (queue, state, rank) serves claims, promotion,
// listing, counting and trimming.
pub(crate) const READY: i64 = 0;
pub(crate) const SCHEDULED: i64 = 1;
pub(crate) const RUNNING: i64 = 2;
pub(crate) const DEAD: i64 = 3;
pub(crate) const COMPLETED: i64 = 4;
pub(crate) const CANCELLED: i64 = 5;

/// Schema 1, release 0.1's: queues, the id sequence, jobs and leases.
const SCHEMA_1: &str = "
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

/// Schema 2: the file says it is taskyard's (`application_id`), and records the
/// migrations it went through and which release ran them, for whoever inspects it.
const SCHEMA_2: &str = "
PRAGMA application_id = 1954116196;
CREATE TABLE migrations (
    version INTEGER PRIMARY KEY,
    applied_ms INTEGER NOT NULL,
    release TEXT NOT NULL
);
";

/// Schema 3: a job's own execution timeout, in ms (NULL: the worker's for its kind).
const SCHEMA_3: &str = "
ALTER TABLE jobs ADD COLUMN timeout_ms INTEGER;
";

/// Schema 4: priorities and unique keys. A job's priority (NULL: the default, 50) and its
/// unique key as `mode key` (NULL: none; see `unique::encode`). A ready job's rank carries
/// its priority (`ops::band`), so claims keep their query and index; every job written
/// before has the default priority, whose band is 0, so no rank changes. `uniques` holds,
/// per queue, each key and the job holding it; only jobs with a key touch it.
const SCHEMA_4: &str = "
ALTER TABLE jobs ADD COLUMN priority INTEGER;
ALTER TABLE jobs ADD COLUMN uniq TEXT;
CREATE TABLE uniques (
    queue INTEGER NOT NULL,
    key TEXT NOT NULL,
    -- The job holding it.
    holder INTEGER NOT NULL,
    -- 0 queued, 1 finished, 2 debounce, 3 period.
    mode INTEGER NOT NULL,
    -- Period mode: when the hold ends (ms); NULL for the others.
    ends_ms INTEGER,
    PRIMARY KEY (queue, key)
) WITHOUT ROWID;
-- Expired period holds, cleaned by maintenance.
CREATE INDEX uniques_by_end ON uniques (queue, ends_ms) WHERE ends_ms IS NOT NULL;
";

/// Schema 5: cancels, progress, results and waits (issue 12). Every column added is NULL
/// for a plain job, so no row is rewritten and a plain job grows by one header byte
/// (`progress`). Cancelled jobs are rows in the state 5 (`CANCELLED`), ranked by when
/// they were cancelled. Results and waiters are tables of their own that only jobs
/// using them touch; `signals` counts the events other processes wait for.
const SCHEMA_5: &str = "
-- NULL: the default of QueueConfig.
ALTER TABLE queues ADD COLUMN result_ttl_ms INTEGER;
-- A running job's latest progress (JSON text); NULL once it leaves running.
ALTER TABLE jobs ADD COLUMN progress TEXT;
-- Ids of the claim's jobs cancelled while running, '4,7': heartbeats of the token report
-- them. A lease with some keeps its row (with no job running) until it expires.
ALTER TABLE leases ADD COLUMN cancelled TEXT;
-- What completed jobs returned, kept apart from their rows (which are usually deleted at
-- once) until ends_ms. value NULL: the job returned nothing (kept for a waiter).
CREATE TABLE results (
    job INTEGER PRIMARY KEY,
    queue INTEGER NOT NULL,
    kind TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    enqueued_ms INTEGER NOT NULL,
    done_ms INTEGER NOT NULL,
    ends_ms INTEGER NOT NULL,
    value TEXT
);
CREATE INDEX results_by_end ON results (queue, ends_ms);
-- Jobs someone waits on (`Store::wait_job`), until when: their end is signalled and a
-- completion without a value leaves an empty result. Empty unless someone waits.
CREATE TABLE waiters (
    job INTEGER PRIMARY KEY,
    queue INTEGER NOT NULL,
    until_ms INTEGER NOT NULL
);
CREATE INDEX waiters_by_end ON waiters (queue, until_ms);
-- Counters other processes poll: cancels of running jobs, ends of waited jobs.
CREATE TABLE signals (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    cancels INTEGER NOT NULL,
    ends INTEGER NOT NULL
);
INSERT INTO signals (one, cancels, ends) VALUES (1, 0, 0);
";

/// Schema 6: periodic jobs (issue 13). A queue's schedules, one row each; `rev` is the
/// revision every change compares and bumps. Nothing else changes: a file without
/// schedules pays nothing.
const SCHEMA_6: &str = "
CREATE TABLE schedules (
    queue INTEGER NOT NULL,
    name TEXT NOT NULL,
    -- The definition as the core wrote it (JSON); the store never reads it.
    definition BLOB NOT NULL,
    -- The next tick, Unix ms; NULL when the expression has none left.
    next_ms INTEGER,
    last_ms INTEGER,
    last_job INTEGER,
    paused INTEGER NOT NULL,
    rev INTEGER NOT NULL,
    PRIMARY KEY (queue, name)
) WITHOUT ROWID;
";

/// What a read-only connection on a file of an older schema (read as it is, never
/// migrated) is given so that this release's reads run on it: temporary views, which
/// SQLite resolves before the file's own tables, with the later columns as NULL and the
/// later tables empty. Temporary objects live in the connection's own memory: the file
/// is not touched.
pub(crate) const SHIMS_BEFORE_5: &str = "
CREATE TEMP VIEW IF NOT EXISTS queues AS SELECT *, NULL AS result_ttl_ms FROM main.queues;
CREATE TEMP VIEW IF NOT EXISTS results AS SELECT NULL AS job, NULL AS queue, NULL AS kind,
    NULL AS attempt, NULL AS max_attempts, NULL AS enqueued_ms, NULL AS done_ms,
    NULL AS ends_ms, NULL AS value WHERE 0;
CREATE TEMP VIEW IF NOT EXISTS signals AS SELECT 1 AS one, 0 AS cancels, 0 AS ends;
";

/// The same for a file before schema 6: no schedules.
pub(crate) const SHIMS_BEFORE_6: &str = "
CREATE TEMP VIEW IF NOT EXISTS schedules AS SELECT NULL AS queue, NULL AS name,
    NULL AS definition, NULL AS next_ms, NULL AS last_ms, NULL AS last_job,
    NULL AS paused, NULL AS rev WHERE 0;
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
                    return Err(Error::StoreLocked {
                        seconds: limit.as_secs_f64(),
                    });
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
        return Error::StoreFull {
            reason: format!(
                "SQLite could not grow the file or its WAL ({e}): its size cap or the disk is reached"
            ),
        };
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
    // Look before touching anything: a file of another application, or of a newer
    // taskyard, is refused before WAL mode or a table could change it.
    let version = patiently(options.locked_for, || identify(&conn)).map_err(not_ours)?;
    check_identity(path, version)?;
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
        // `Room::new` refused caps too small to hold the schema; any u64 / page fits i64.
        let pages = (bytes / page as u64) as i64;
        conn.pragma_update(None, "max_page_count", pages)
            .map_err(db)?;
    }
    // The usual case, the schema in place, writes nothing: opening the file for a CLI
    // command does not contend with the workers for the write lock.
    if version.user_version == SCHEMA_VERSION {
        return Ok(conn);
    }
    patiently(options.locked_for, || conn.execute_batch("BEGIN IMMEDIATE"))?;
    // Read again under the write lock: another process may have migrated it meanwhile.
    let migrated = identify(&conn)
        .map_err(db)
        .and_then(|v| check_identity(path, v).map(|()| v.user_version))
        .and_then(|from| migrate(&conn, path, from, options.clock.now_ms()));
    match migrated {
        Ok(()) => patiently(options.locked_for, || conn.execute_batch("COMMIT"))?,
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(e);
        }
    }
    Ok(conn)
}

/// What a file says it is: its `application_id`, `user_version`, and whether it has any
/// table at all.
#[derive(Debug, Clone, Copy)]
struct Identity {
    application_id: i32,
    user_version: i64,
    tables: i64,
    /// Whether it has release 0.1's tables (`jobs` and `leases`).
    taskyard_tables: bool,
}

fn identify(conn: &Connection) -> rusqlite::Result<Identity> {
    let application_id = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
    let user_version = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let (tables, taskyard_tables): (i64, i64) = conn.query_row(
        "SELECT count(*), count(*) FILTER (WHERE name IN ('jobs', 'leases'))
         FROM sqlite_master WHERE type = 'table'",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(Identity {
        application_id,
        user_version,
        tables,
        taskyard_tables: taskyard_tables == 2,
    })
}

/// Accepts a new empty file, a store of this or an older schema, or release 0.1's store
/// (schema 1, no application id); refuses everything else, naming what it found.
fn check_identity(path: &Path, id: Identity) -> Result<()> {
    let ours = match id.application_id {
        APPLICATION_ID => true,
        0 => {
            (id.user_version == 0 && id.tables == 0) || (id.user_version == 1 && id.taskyard_tables)
        }
        _ => false,
    };
    if !ours {
        return Err(Error::NotAStore {
            path: path.display().to_string(),
            found: format!(
                "application_id {:#x}, user_version {}, {} tables",
                id.application_id, id.user_version, id.tables
            ),
        });
    }
    if id.user_version > SCHEMA_VERSION {
        return Err(Error::Version {
            what: format!("store file {}", path.display()),
            found: format!("schema {}", id.user_version),
            reads: format!("schemas up to {SCHEMA_VERSION} (a newer taskyard wrote it)"),
        });
    }
    Ok(())
}

/// Runs the migrations from schema `from` up to [`SCHEMA_VERSION`], inside the caller's
/// transaction, recording each.
fn migrate(conn: &Connection, path: &Path, from: i64, now_ms: u64) -> Result<()> {
    for version in from + 1..=SCHEMA_VERSION {
        let failed = |e: rusqlite::Error| Error::Version {
            what: format!("store file {}", path.display()),
            found: format!("schema {}", version - 1),
            reads: format!(
                "schema {SCHEMA_VERSION}, but migration {version} failed ({e}), so it was left unchanged"
            ),
        };
        conn.execute_batch(MIGRATIONS[version as usize - 1])
            .map_err(failed)?;
        conn.pragma_update(None, "user_version", version)
            .map_err(failed)?;
    }
    for version in from + 1..=SCHEMA_VERSION {
        conn.execute(
            "INSERT INTO migrations (version, applied_ms, release) VALUES (?1, ?2, ?3)",
            rusqlite::params![version, now_ms as i64, env!("CARGO_PKG_VERSION")],
        )
        .map_err(db)?;
    }
    Ok(())
}

/// Refuses to go on when another process changed the schema since this connection
/// opened the file (a newer release migrated it): this one would misread it.
pub(crate) fn check_version(conn: &Connection) -> Result<()> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(db)?;
    match version {
        SCHEMA_VERSION => Ok(()),
        found => Err(changed_under_us(found)),
    }
}

/// The error of a file whose schema changed to `found` while this process used it.
pub(crate) fn changed_under_us(found: i64) -> Error {
    Error::Version {
        what: "the store file".into(),
        found: format!("schema {found}"),
        reads: format!("schema {SCHEMA_VERSION} (another taskyard changed it while this one ran)"),
    }
}

/// Opens a reader's connection: it never writes.
pub(crate) fn open_reader(path: &Path, locked_for: Duration) -> Result<Connection> {
    let conn = open_file(path, locked_for)?;
    conn.pragma_update(None, "query_only", true).map_err(db)?;
    Ok(conn)
}

/// The file beside the store that holds its write-ahead log.
fn wal_path(path: &Path) -> std::path::PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    wal.into()
}

/// What a read on an immutable connection relies on not changing while it reads: the
/// file's size and modification time, and that it has no WAL (no process has it open).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    wal: bool,
}

impl Stamp {
    pub(crate) fn of(path: &Path) -> Result<Stamp> {
        let meta = std::fs::metadata(path).map_err(|e| {
            Error::Store(format!("cannot read the store file {}: {e}", path.display()).into())
        })?;
        Ok(Stamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            wal: wal_path(path).exists(),
        })
    }
}

/// Opens a connection for a read-only store, one that creates no file and changes none.
///
/// SQLite's WAL mode needs the `-wal` and `-shm` files to read, and creates them when
/// they are missing, even on a read-only connection, and leaves them behind. So:
/// - no `-wal`: no process has the file open and every commit is in the file itself; it
///   is read as an immutable file (no locks, nothing created), and the [`Stamp`] returned
///   lets the caller check afterwards that no process started writing meanwhile;
/// - a `-wal`: a process uses the file; its `-wal` and `-shm` are used as they are,
///   through a connection opened read-only.
pub(crate) fn open_read_only(
    path: &Path,
    locked_for: Duration,
) -> Result<(Connection, Option<Stamp>)> {
    let cannot = |e: rusqlite::Error| {
        Error::Store(format!("cannot open the store file {}: {e}", path.display()).into())
    };
    let stamp = Stamp::of(path)?;
    if !stamp.wal
        && let Some(uri) = crate::url::immutable_uri(path)
    {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(uri, flags).map_err(cannot)?;
        return Ok((conn, Some(stamp)));
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(cannot)?;
    conn.busy_timeout(BUSY_TIMEOUT.min(locked_for))
        .map_err(db)?;
    Ok((conn, None))
}

/// Checks, for a read-only store, that a file is one this release can read as it is:
/// a taskyard store of schema 1 (release 0.1's, read without upgrading it) up to
/// [`SCHEMA_VERSION`].
pub(crate) fn check_readable(path: &Path, conn: &Connection) -> Result<()> {
    let id = identify(conn).map_err(db)?;
    check_identity(path, id)?;
    if id.user_version == 0 {
        return Err(Error::InvalidOption(format!(
            "no taskyard store at {}: the file is empty (nothing has been enqueued there yet)",
            path.display()
        )));
    }
    if id.user_version < 5 {
        conn.execute_batch(SHIMS_BEFORE_5).map_err(db)?;
    }
    if id.user_version < 6 {
        conn.execute_batch(SHIMS_BEFORE_6).map_err(db)?;
    }
    Ok(())
}
