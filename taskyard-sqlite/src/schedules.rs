//! Periodic jobs: a queue's schedules, one row each (`schedules`, schema 6). Every change
//! is a compare-and-set on the row's revision inside the writer's transaction, and a
//! firing enqueues its jobs in that same transaction, so a tick is enqueued once
//! however many workers (and processes) race for it.

use rusqlite::{Connection, OptionalExtension, params};
use taskyard_core::schedule::StoredSchedule;
use taskyard_core::{JobId, NewJob, QueueName, Result};

use crate::db::db;
use crate::writer::Tx;
use crate::{ops, read};

/// `next_ms` as kept: NULL for "no tick left" (`u64::MAX`), which an INTEGER cannot hold.
fn next_col(next_ms: u64) -> Option<i64> {
    (next_ms != u64::MAX).then(|| i64::try_from(next_ms).unwrap_or(i64::MAX))
}

pub(crate) fn list(conn: &Connection, queue: &QueueName) -> Result<Vec<StoredSchedule>> {
    let Some(q) = read::queue_id(conn, queue)? else {
        return Ok(Vec::new());
    };
    let mut stmt = conn
        .prepare_cached(
            "SELECT name, definition, next_ms, last_ms, last_job, paused, rev
             FROM schedules WHERE queue = ?1 ORDER BY name",
        )
        .map_err(db)?;
    let rows = stmt
        .query_map([q], |r| {
            Ok(StoredSchedule {
                name: r.get(0)?,
                definition: r.get::<_, Vec<u8>>(1)?.into(),
                next_ms: r.get::<_, Option<i64>>(2)?.map_or(u64::MAX, |v| v as u64),
                last_ms: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
                last_job: r
                    .get::<_, Option<i64>>(4)?
                    .map(|v| JobId::new(v.to_string())),
                paused: r.get(5)?,
                rev: r.get::<_, i64>(6)? as u64,
            })
        })
        .map_err(db)?;
    rows.collect::<std::result::Result<Vec<_>, _>>().map_err(db)
}

/// The stored revision of a schedule, 0 when there is none.
fn rev(tx: &Tx<'_>, q: i64, name: &str) -> Result<(u64, bool)> {
    let found: Option<(i64, bool)> = tx
        .conn
        .prepare_cached("SELECT rev, paused FROM schedules WHERE queue = ?1 AND name = ?2")
        .and_then(|mut s| {
            s.query_row(params![q, name], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(db)?;
    Ok(found.map_or((0, false), |(rev, paused)| (rev as u64, paused)))
}

pub(crate) fn put(tx: &mut Tx<'_>, queue: &QueueName, s: &StoredSchedule) -> Result<bool> {
    let (q, _) = tx.ensure(queue)?;
    if rev(tx, q, &s.name)?.0 != s.rev {
        return Ok(false);
    }
    let last_job = s.last_job.as_ref().and_then(read::row_id);
    tx.conn
        .prepare_cached(
            "INSERT INTO schedules (queue, name, definition, next_ms, last_ms, last_job, paused, rev)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (queue, name) DO UPDATE SET definition = ?3, next_ms = ?4,
                 last_ms = ?5, last_job = ?6, paused = ?7, rev = ?8",
        )
        .and_then(|mut st| {
            st.execute(params![
                q,
                s.name,
                s.definition.as_ref(),
                next_col(s.next_ms),
                s.last_ms.map(|v| v as i64),
                last_job,
                s.paused,
                (s.rev + 1) as i64
            ])
        })
        .map_err(db)?;
    Ok(true)
}

pub(crate) fn remove(tx: &mut Tx<'_>, queue: &QueueName, name: &str) -> Result<bool> {
    let Some(q) = tx.queue(queue)? else {
        return Ok(false);
    };
    let n = tx
        .conn
        .prepare_cached("DELETE FROM schedules WHERE queue = ?1 AND name = ?2")
        .and_then(|mut s| s.execute(params![q, name]))
        .map_err(db)?;
    Ok(n > 0)
}

/// Enqueues a tick's jobs and moves the schedule, if its revision is still `rev` and it
/// is not paused. An enqueue refused (full) fails the whole transaction: nothing moves.
pub(crate) fn fire(
    tx: &mut Tx<'_>,
    queue: &QueueName,
    name: &str,
    expect: u64,
    next_ms: u64,
    last_ms: Option<u64>,
    jobs: &[NewJob],
) -> Result<Option<Vec<JobId>>> {
    let Some(q) = tx.queue(queue)? else {
        return Ok(None);
    };
    let (stored, paused) = rev(tx, q, name)?;
    if stored == 0 || stored != expect || paused {
        return Ok(None);
    }
    let ids: Vec<JobId> = if jobs.is_empty() {
        Vec::new()
    } else {
        ops::enqueue(tx, queue, jobs)?
            .into_iter()
            .map(|e| e.id)
            .collect()
    };
    let last_job = ids.last().and_then(read::row_id);
    tx.conn
        .prepare_cached(
            "UPDATE schedules SET next_ms = ?3, last_ms = ?4,
                 last_job = coalesce(?5, last_job), rev = rev + 1
             WHERE queue = ?1 AND name = ?2",
        )
        .and_then(|mut s| {
            s.execute(params![
                q,
                name,
                next_col(next_ms),
                last_ms.map(|v| v as i64),
                last_job
            ])
        })
        .map_err(db)?;
    Ok(Some(ids))
}
