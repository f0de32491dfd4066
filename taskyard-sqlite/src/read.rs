//! Reads: what inspection, stats and idle waits need. They run on reader connections
//! (WAL readers never block the writer, nor it them) and inside write operations.

use rusqlite::{Connection, OptionalExtension, Row, params};
use taskyard_core::store::support::history;
use taskyard_core::{
    Cursor, DEFAULT_PRIORITY, Error, JobId, JobInfo, JobState, Page, QueueConfig, QueueName,
    QueueStats, Result,
};

use crate::db::{CANCELLED, COMPLETED, DEAD, READY, RUNNING, SCHEDULED, db};
use crate::ops::ms;

pub(crate) fn state_code(state: JobState) -> i64 {
    match state {
        JobState::Ready => READY,
        JobState::Scheduled => SCHEDULED,
        JobState::Running => RUNNING,
        JobState::Dead => DEAD,
        JobState::Completed => COMPLETED,
        JobState::Cancelled => CANCELLED,
        // A state this release does not store: no job has it.
        _ => -1,
    }
}

pub(crate) fn state_of(code: i64) -> Option<JobState> {
    Some(match code {
        READY => JobState::Ready,
        SCHEDULED => JobState::Scheduled,
        RUNNING => JobState::Running,
        DEAD => JobState::Dead,
        COMPLETED => JobState::Completed,
        CANCELLED => JobState::Cancelled,
        _ => return None,
    })
}

/// A job id as stored: ids are integers here, so any other id names no job.
pub(crate) fn row_id(id: &JobId) -> Option<i64> {
    id.as_str().parse().ok()
}

pub(crate) fn queue_id(conn: &Connection, name: &QueueName) -> Result<Option<i64>> {
    conn.prepare_cached("SELECT id FROM queues WHERE name = ?1")
        .and_then(|mut s| s.query_row([name.as_str()], |r| r.get(0)).optional())
        .map_err(db)
}

/// What a queue's row says: whether it is paused, and its settings (the defaults where
/// none were set).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct QueueRow {
    pub(crate) paused: bool,
    pub(crate) config: QueueConfig,
}

const QUEUE_ROW: &str = "paused, max_len, dead_max, dead_max_age_ms, completed_max, \
                         completed_max_age_ms, result_ttl_ms";

fn queue_row_of(r: &Row<'_>, first: usize) -> rusqlite::Result<QueueRow> {
    let d = QueueConfig::default();
    let get = |i: usize, default: u64| -> rusqlite::Result<u64> {
        Ok(r.get::<_, Option<i64>>(first + i)?
            .map(|n| n as u64)
            .unwrap_or(default))
    };
    Ok(QueueRow {
        paused: r.get(first)?,
        config: QueueConfig {
            max_len: get(1, d.max_len)?,
            dead_max: get(2, d.dead_max)?,
            dead_max_age_ms: get(3, d.dead_max_age_ms)?,
            completed_max: get(4, d.completed_max)?,
            completed_max_age_ms: get(5, d.completed_max_age_ms)?,
            result_ttl_ms: get(6, d.result_ttl_ms)?,
        },
    })
}

/// A queue's row by id, if it has one (a queue deleted since its id was read has none).
pub(crate) fn queue_row(conn: &Connection, queue: i64) -> Result<Option<QueueRow>> {
    conn.prepare_cached(&format!("SELECT {QUEUE_ROW} FROM queues WHERE id = ?1"))
        .and_then(|mut s| s.query_row([queue], |r| queue_row_of(r, 0)).optional())
        .map_err(db)
}

/// A queue's id and row by name, if it has one.
pub(crate) fn queue_by_name(
    conn: &Connection,
    name: &QueueName,
) -> Result<Option<(i64, QueueRow)>> {
    conn.prepare_cached(&format!(
        "SELECT id, {QUEUE_ROW} FROM queues WHERE name = ?1"
    ))
    .and_then(|mut s| {
        s.query_row([name.as_str()], |r| Ok((r.get(0)?, queue_row_of(r, 1)?)))
            .optional()
    })
    .map_err(db)
}

pub(crate) fn config(conn: &Connection, name: &QueueName) -> Result<QueueConfig> {
    Ok(queue_by_name(conn, name)?
        .map(|(_, row)| row.config)
        .unwrap_or_default())
}

pub(crate) fn paused(conn: &Connection, queue: i64) -> Result<bool> {
    Ok(queue_row(conn, queue)?.is_some_and(|row| row.paused))
}

/// Jobs of one queue in one of `states`.
pub(crate) fn count(conn: &Connection, queue: i64, state: i64) -> Result<u64> {
    conn.prepare_cached("SELECT COUNT(*) FROM jobs WHERE queue = ?1 AND state = ?2")
        .and_then(|mut s| s.query_row([queue, state], |r| r.get::<_, i64>(0)))
        .map(|n| n as u64)
        .map_err(db)
}

pub(crate) fn queues(conn: &Connection) -> Result<Vec<QueueName>> {
    let names: Vec<String> = conn
        .prepare_cached("SELECT name FROM queues ORDER BY name")
        .and_then(|mut s| {
            s.query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()
        })
        .map_err(db)?;
    names.into_iter().map(QueueName::new).collect()
}

pub(crate) fn stats(conn: &Connection, name: &QueueName) -> Result<QueueStats> {
    let mut stats = QueueStats {
        queue: name.to_string(),
        ..QueueStats::default()
    };
    let Some(q) = queue_id(conn, name)? else {
        return Ok(stats);
    };
    stats.paused = paused(conn, q)?;
    let counts: Vec<(i64, i64)> = conn
        .prepare_cached("SELECT state, COUNT(*) FROM jobs WHERE queue = ?1 GROUP BY state")
        .and_then(|mut s| {
            s.query_map([q], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()
        })
        .map_err(db)?;
    for (state, n) in counts {
        let n = n as u64;
        match state {
            READY => stats.ready = n,
            SCHEDULED => stats.scheduled = n,
            RUNNING => stats.running = n,
            DEAD => stats.dead = n,
            COMPLETED => stats.completed = n,
            CANCELLED => stats.cancelled = n,
            _ => {}
        }
    }
    Ok(stats)
}

/// The columns every schema has that `info` reads, in its order.
macro_rules! info_columns_1 {
    () => {
        "j.id, j.state, j.attempt, j.max_attempts, j.enqueued_ms, j.kind, j.payload, j.errors, \
         CASE j.state WHEN 2 THEN l.ends_ms WHEN 0 THEN NULL ELSE j.rank END"
    };
}

/// The columns `info` reads, in its order. `r` is the job's result row, joined by
/// [`result_join`].
const INFO_COLUMNS: &str = concat!(
    info_columns_1!(),
    ", j.priority, j.uniq, j.progress, r.value"
);

/// [`INFO_COLUMNS`] for a file of schema 4 (read as it is by a read-only store): its
/// jobs have no progress and no result.
const INFO_COLUMNS_4: &str = concat!(info_columns_1!(), ", j.priority, j.uniq, NULL, NULL");

/// [`INFO_COLUMNS`] for a file of a schema before 4: its jobs have the default priority
/// and no key either.
const INFO_COLUMNS_3: &str = concat!(info_columns_1!(), ", NULL, NULL, NULL, NULL");

/// The number of columns `info` reads: a query's own columns come after them.
const INFO_LEN: usize = 13;

/// Joins a job's result while it is kept (parameter `now`: the store time), for
/// [`INFO_COLUMNS`]. Results exist for completed jobs only, so only they find one.
fn result_join(now: usize) -> String {
    format!("LEFT JOIN results r ON r.job = j.id AND r.ends_ms > ?{now}")
}

/// The columns `info` reads on this file.
fn info_columns(conn: &Connection) -> Result<&'static str> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(db)?;
    Ok(match version {
        5.. => INFO_COLUMNS,
        4 => INFO_COLUMNS_4,
        _ => INFO_COLUMNS_3,
    })
}

fn info(name: &QueueName, r: &Row<'_>) -> rusqlite::Result<JobInfo> {
    let state = r.get::<_, i64>(1)?;
    let payload: Vec<u8> = r.get(6)?;
    let errors: Option<String> = r.get(7)?;
    let priority: Option<u8> = r.get(9)?;
    let uniq: Option<String> = r.get(10)?;
    let state = state_of(state).ok_or(rusqlite::Error::IntegralValueOutOfRange(1, state))?;
    Ok(JobInfo {
        id: JobId::new(r.get::<_, i64>(0)?.to_string()),
        queue: name.to_string(),
        kind: r.get(5)?,
        state,
        payload: String::from_utf8_lossy(&payload).into_owned(),
        attempt: r.get(2)?,
        max_attempts: r.get(3)?,
        enqueued_at_ms: r.get::<_, i64>(4)? as u64,
        at_ms: r.get::<_, Option<i64>>(8)?.map(|n| n as u64),
        errors: errors
            .map(|e| history::parse(e.as_bytes()))
            .unwrap_or_default(),
        priority: priority.unwrap_or(DEFAULT_PRIORITY),
        unique: uniq.as_deref().and_then(crate::unique::decode),
        // Only a running job shows progress (the column is cleared as it leaves running).
        progress: if state == JobState::Running {
            r.get(11)?
        } else {
            None
        },
        result: r.get(12)?,
    })
}

/// The columns of a result row that [`kept`] reads, in its order.
const KEPT_COLUMNS: &str = "job, kind, attempt, max_attempts, enqueued_ms, done_ms, value";

/// A completed job known only by its result row (its own row was not retained): as much
/// as the row keeps; its payload is not kept.
fn kept(name: &QueueName, r: &Row<'_>) -> rusqlite::Result<JobInfo> {
    Ok(JobInfo {
        id: JobId::new(r.get::<_, i64>(0)?.to_string()),
        queue: name.to_string(),
        kind: r.get(1)?,
        state: JobState::Completed,
        payload: String::new(),
        attempt: r.get(2)?,
        max_attempts: r.get(3)?,
        enqueued_at_ms: r.get::<_, i64>(4)? as u64,
        at_ms: Some(r.get::<_, i64>(5)? as u64),
        errors: Vec::new(),
        priority: DEFAULT_PRIORITY,
        unique: None,
        progress: None,
        result: r.get(6)?,
    })
}

/// A place in a state's order, as a cursor holds it: the sort key and id of the last job
/// seen (`key:id`), or the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position(Option<(i64, i64)>);

impl Position {
    /// The start of a state's order.
    pub(crate) const START: Position = Position(None);

    pub(crate) fn parse(cursor: &Cursor) -> Result<Self> {
        if cursor.is_start() {
            return Ok(Position(None));
        }
        let parsed = cursor
            .as_str()
            .split_once(':')
            .and_then(|(k, id)| Some((k.parse().ok()?, id.parse().ok()?)));
        match parsed {
            Some(at) => Ok(Position(Some(at))),
            None => Err(Error::InvalidOption(format!(
                "malformed cursor {:?}: pass back one a listing returned",
                cursor.as_str()
            ))),
        }
    }

    pub(crate) fn cursor(key: i64, id: i64) -> Cursor {
        Cursor::new(format!("{key}:{id}"))
    }

    /// The bound to compare `(key, id)` with: past the start of an ascending or a
    /// descending order when there is no position yet.
    pub(crate) fn bound(self, descending: bool) -> (i64, i64) {
        self.0.unwrap_or(if descending {
            (i64::MAX, i64::MAX)
        } else {
            (i64::MIN, i64::MIN)
        })
    }
}

pub(crate) fn list(
    conn: &Connection,
    name: &QueueName,
    state: JobState,
    after: Position,
    limit: u64,
    now: u64,
) -> Result<Page> {
    let Some(q) = queue_id(conn, name)? else {
        return Ok(Page::default());
    };
    // Ready and scheduled: next first; running: earliest lease end first; dead,
    // completed and cancelled: newest first. Each page resumes after the (key, id) of the
    // last one.
    let (key, descending) = match state {
        JobState::Running => ("l.ends_ms", false),
        JobState::Dead | JobState::Completed | JobState::Cancelled => ("j.rank", true),
        _ => ("j.rank", false),
    };
    let (cmp, dir) = if descending { ("<", "DESC") } else { (">", "") };
    let columns = info_columns(conn)?;
    let sql = format!(
        "SELECT {columns}, {key} FROM jobs j LEFT JOIN leases l ON l.token = j.token
         {}
         WHERE j.queue = ?1 AND j.state = ?2 AND ({key}, j.id) {cmp} (?3, ?4)
         ORDER BY {key} {dir}, j.id {dir} LIMIT ?5",
        result_join(6)
    );
    let (k, id) = after.bound(descending);
    // One more than asked: whether there is a next page.
    let fetch = limit.min(i64::MAX as u64 - 1) as i64 + 1;
    let mut rows: Vec<(JobInfo, i64)> = conn
        .prepare_cached(&sql)
        .and_then(|mut s| {
            s.query_map(params![q, state_code(state), k, id, fetch, ms(now)], |r| {
                Ok((info(name, r)?, r.get(INFO_LEN)?))
            })?
            .collect()
        })
        .map_err(db)?;
    let more = rows.len() as u64 > limit;
    rows.truncate(limit as usize);
    let next = match rows.last() {
        Some((job, key)) if more => Some(Position::cursor(
            *key,
            job.id.as_str().parse().unwrap_or_default(),
        )),
        _ => None,
    };
    Ok(Page {
        jobs: rows.into_iter().map(|(job, _)| job).collect(),
        next,
    })
}

pub(crate) fn job(
    conn: &Connection,
    name: &QueueName,
    id: &JobId,
    now: u64,
) -> Result<Option<JobInfo>> {
    let (Some(q), Some(id)) = (queue_id(conn, name)?, row_id(id)) else {
        return Ok(None);
    };
    let columns = info_columns(conn)?;
    let sql = format!(
        "SELECT {columns} FROM jobs j LEFT JOIN leases l ON l.token = j.token {}
         WHERE j.id = ?1 AND j.queue = ?2",
        result_join(3)
    );
    let found = conn
        .prepare_cached(&sql)
        .and_then(|mut s| {
            s.query_row(params![id, q, ms(now)], |r| info(name, r))
                .optional()
        })
        .map_err(db)?;
    if found.is_some() {
        return Ok(found);
    }
    conn.prepare_cached(&format!(
        "SELECT {KEPT_COLUMNS} FROM results WHERE job = ?1 AND queue = ?2 AND ends_ms > ?3"
    ))
    .and_then(|mut s| {
        s.query_row(params![id, q, ms(now)], |r| kept(name, r))
            .optional()
    })
    .map_err(db)
}

/// One job by id alone: ids are unique across the file's queues.
pub(crate) fn find(conn: &Connection, id: &JobId, now: u64) -> Result<Option<JobInfo>> {
    let Some(id) = row_id(id) else {
        return Ok(None);
    };
    let named = |name: String| {
        QueueName::new(name).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
    };
    let columns = info_columns(conn)?;
    let sql = format!(
        "SELECT {columns}, q.name FROM jobs j LEFT JOIN leases l ON l.token = j.token
         {} JOIN queues q ON q.id = j.queue WHERE j.id = ?1",
        result_join(2)
    );
    let found = conn
        .prepare_cached(&sql)
        .and_then(|mut s| {
            s.query_row(params![id, ms(now)], |r| info(&named(r.get(INFO_LEN)?)?, r))
                .optional()
        })
        .map_err(db)?;
    if found.is_some() {
        return Ok(found);
    }
    conn.prepare_cached(&format!(
        "SELECT {KEPT_COLUMNS}, q.name FROM results JOIN queues q ON q.id = results.queue
         WHERE job = ?1 AND ends_ms > ?2"
    ))
    .and_then(|mut s| {
        s.query_row(params![id, ms(now)], |r| kept(&named(r.get(7)?)?, r))
            .optional()
    })
    .map_err(db)
}

/// Whether one of `queues` has work a claim would take now: a ready job or a due one,
/// in a queue that is not paused.
pub(crate) fn has_work(conn: &Connection, queues: &[QueueName], now: u64) -> Result<bool> {
    for name in queues {
        let Some(q) = queue_id(conn, name)? else {
            continue;
        };
        if paused(conn, q)? {
            continue;
        }
        let found: bool = conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM jobs WHERE queue = ?1 AND state = 0)
                     OR EXISTS (SELECT 1 FROM jobs WHERE queue = ?1 AND state = 1 AND rank <= ?2)",
            )
            .and_then(|mut s| s.query_row([q, now as i64], |r| r.get(0)))
            .map_err(db)?;
        if found {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The counters other processes' waits compare: (cancels of running jobs, ends of waited
/// jobs).
pub(crate) fn signals(conn: &Connection) -> Result<(i64, i64)> {
    conn.prepare_cached("SELECT cancels, ends FROM signals WHERE one = 1")
        .and_then(|mut s| s.query_row([], |r| Ok((r.get(0)?, r.get(1)?))))
        .map_err(db)
}
