//! Unique keys: which job of a queue holds a key (the `uniques` table). A job takes its
//! key at enqueue (or when redriven) and gives it back as it leaves its mode's states:
//! queued and debounce keys when the job is claimed, finished keys when it completes or
//! dies, every key but a period's when it is deleted. A period's hold simply ends; its
//! entry is cleaned up later.
//!
//! Only jobs with a key touch the table. A lookup also checks the holder's state, so an
//! entry whose holder has left its mode's states (a debounce job that came due) is free.

use std::time::Duration;

use rusqlite::{OptionalExtension, params};
use taskyard_core::{Result, Unique, UniqueMode};

use crate::db::{READY, RUNNING, SCHEDULED, db};
use crate::writer::Tx;

// The `mode` column of `uniques`.
const QUEUED: i64 = 0;
const FINISHED: i64 = 1;
const DEBOUNCE: i64 = 2;
const PERIOD: i64 = 3;

/// The most expired period holds one maintenance pass deletes.
const EXPIRE: i64 = taskyard_core::store::support::STEP as i64;

fn ms(n: u64) -> i64 {
    n.min(i64::MAX as u64) as i64
}

/// A job's key as its row keeps it (`jobs.uniq`): the mode, a space, the key (`finished
/// user:7`, `period=60000 digest`). Keys have no control characters, modes no space.
/// Whether any key is held in the file: when none is, completions cannot free one, and
/// finish keeps its plain statements (one lookup per call, not per job).
pub(crate) fn any_held(tx: &Tx<'_>) -> Result<bool> {
    tx.conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM uniques)")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(db)
}

pub(crate) fn encode(u: &Unique) -> String {
    match u.mode {
        UniqueMode::Period(d) => format!("period={} {}", d.as_millis(), u.key),
        mode => format!("{} {}", mode.as_str(), u.key),
    }
}

/// A key as [`encode`] wrote it.
pub(crate) fn decode(s: &str) -> Option<Unique> {
    let (mode, key) = s.split_once(' ')?;
    let mode = match mode.strip_prefix("period=") {
        Some(period) => UniqueMode::Period(Duration::from_millis(period.parse().ok()?)),
        None => UniqueMode::parse(mode, None).ok()?,
    };
    Some(Unique {
        key: key.to_string(),
        mode,
    })
}

/// A key that a job holds in debounce mode: a debounced duplicate replaces that job's
/// payload and due time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Holder {
    pub(crate) id: i64,
    pub(crate) debounce: bool,
}

/// The job that holds `key` in queue `q` now, if one does: a period's until it ends; the
/// others' while the holder is in its mode's states (queued: scheduled or ready;
/// finished: scheduled, ready or running; debounce: scheduled).
pub(crate) fn holder(tx: &Tx<'_>, q: i64, key: &str) -> Result<Option<Holder>> {
    let entry: Option<(i64, i64, Option<i64>)> = tx
        .conn
        .prepare_cached("SELECT holder, mode, ends_ms FROM uniques WHERE queue = ?1 AND key = ?2")
        .and_then(|mut s| {
            s.query_row(params![q, key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
        .map_err(db)?;
    let Some((id, mode, ends)) = entry else {
        return Ok(None);
    };
    let held = if mode == PERIOD {
        ends.is_some_and(|end| end > ms(tx.now))
    } else {
        let state: Option<i64> = tx
            .conn
            .prepare_cached("SELECT state FROM jobs WHERE id = ?1 AND queue = ?2")
            .and_then(|mut s| s.query_row([id, q], |r| r.get(0)).optional())
            .map_err(db)?;
        matches!(
            (mode, state),
            (QUEUED, Some(SCHEDULED | READY))
                | (FINISHED, Some(SCHEDULED | READY | RUNNING))
                | (DEBOUNCE, Some(SCHEDULED))
        )
    };
    Ok(held.then_some(Holder {
        id,
        debounce: mode == DEBOUNCE,
    }))
}

/// Makes job `id`, now in `state`, the holder of its key — unless its mode holds nothing
/// in that state (a debounce job that is ready at once). The caller checked that no
/// other job holds it.
pub(crate) fn take(tx: &Tx<'_>, q: i64, id: i64, u: &Unique, state: i64) -> Result<()> {
    let (mode, ends) = match u.mode {
        UniqueMode::Queued => (QUEUED, None),
        UniqueMode::Finished => (FINISHED, None),
        UniqueMode::Debounce if state == SCHEDULED => (DEBOUNCE, None),
        UniqueMode::Debounce => return Ok(()),
        UniqueMode::Period(d) => (
            PERIOD,
            Some(ms(tx.now.saturating_add(d.as_millis() as u64))),
        ),
    };
    tx.conn
        .prepare_cached(
            "INSERT INTO uniques (queue, key, holder, mode, ends_ms) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (queue, key) DO UPDATE
             SET holder = excluded.holder, mode = excluded.mode, ends_ms = excluded.ends_ms",
        )
        .and_then(|mut s| s.execute(params![q, u.key, id, mode, ends]))
        .map_err(db)?;
    Ok(())
}

/// How a job left the states its key was held in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Left {
    /// A worker claimed it: queued and debounce keys are free.
    Claimed,
    /// It completed or died: finished keys are free.
    Finished,
    /// It was deleted: every key but a period's is free.
    Deleted,
}

/// Gives back the key of job `id` of queue `q` (`uniq`, its row's column) if leaving
/// `how` frees it and the job still holds it.
pub(crate) fn left(tx: &Tx<'_>, q: i64, id: i64, uniq: Option<&str>, how: Left) -> Result<()> {
    let Some(u) = uniq.and_then(decode) else {
        return Ok(());
    };
    let frees = match (how, u.mode) {
        (_, UniqueMode::Period(_)) => false,
        (Left::Deleted, _) => true,
        (Left::Claimed, mode) => matches!(mode, UniqueMode::Queued | UniqueMode::Debounce),
        (Left::Finished, mode) => mode == UniqueMode::Finished,
    };
    if frees {
        tx.conn
            .prepare_cached("DELETE FROM uniques WHERE queue = ?1 AND key = ?2 AND holder = ?3")
            .and_then(|mut s| s.execute(params![q, u.key, id]))
            .map_err(db)?;
    }
    Ok(())
}

/// Deletes period holds of queue `q` that have ended, a bounded number per call (a
/// lookup treats them as free meanwhile).
pub(crate) fn expire(tx: &Tx<'_>, q: i64) -> Result<()> {
    tx.conn
        .prepare_cached(
            "DELETE FROM uniques WHERE queue = ?1 AND key IN
                (SELECT key FROM uniques WHERE queue = ?1 AND ends_ms <= ?2 LIMIT ?3)",
        )
        .and_then(|mut s| s.execute(params![q, ms(tx.now), EXPIRE]))
        .map_err(db)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_back_as_written() {
        for mode in [
            UniqueMode::Queued,
            UniqueMode::Finished,
            UniqueMode::Debounce,
            UniqueMode::Period(Duration::from_millis(60_000)),
        ] {
            let u = Unique::new("user:7 with spaces", mode).unwrap();
            assert_eq!(decode(&encode(&u)), Some(u));
        }
        assert_eq!(decode("forever k"), None);
        assert_eq!(decode("finished"), None);
    }
}
