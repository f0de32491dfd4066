//! Bulk operations, one bounded step per writer operation (one transaction): redrive and
//! purge (dead jobs), run-now (scheduled jobs), delete (ready and scheduled jobs), cancel
//! (ready, scheduled and running jobs), and deleting a whole queue. A step acts on at most [`STEP`] jobs and examines at most
//! [`EXAMINE`], so other callers' operations get in between steps.

use std::collections::{HashMap, HashSet};

use rusqlite::{OptionalExtension, params};
use taskyard_core::{Cursor, Error, JobFilter, JobId, Result, Skip, Skipped, Step, UniqueMode};

use crate::db::{CANCELLED, DEAD, READY, RUNNING, SCHEDULED, db};
use crate::ops::{self, Gates, STEP, make_ready};
use crate::read::{Position, row_id, state_of};
use crate::unique::{self, Left};
use crate::writer::Tx;

/// The most jobs one step by kind examines: a step never reads the whole set.
const EXAMINE: i64 = 10 * STEP;

/// What a bulk step does to the jobs it selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Dead jobs back to ready with a fresh count of attempts.
    Redrive,
    /// Dead jobs deleted.
    Purge,
    /// Scheduled jobs made ready now.
    RunNow,
    /// Ready and scheduled jobs deleted.
    Delete,
    /// Ready, scheduled and running jobs ended `cancelled`.
    Cancel,
}

impl Action {
    /// The states it acts on, walked in this order.
    fn states(self) -> &'static [i64] {
        match self {
            Action::Redrive | Action::Purge => &[DEAD],
            Action::RunNow => &[SCHEDULED],
            Action::Delete => &[READY, SCHEDULED],
            Action::Cancel => &[READY, SCHEDULED, RUNNING],
        }
    }
}

/// Where a walk resumes: which of the action's states, and the (rank, id) of the last
/// job examined in it. Written `rank:id` in the first state, `n/rank:id` in the n-th.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resume {
    state: usize,
    at: Position,
}

impl Resume {
    pub(crate) fn parse(cursor: &Cursor) -> Result<Self> {
        let (state, at) = match cursor.as_str().split_once('/') {
            Some((n, at)) => {
                let n = n.parse().map_err(|_| {
                    Error::InvalidOption(format!(
                        "malformed cursor {:?}: pass back one a step returned",
                        cursor.as_str()
                    ))
                })?;
                (n, Cursor::new(at))
            }
            None => (0, cursor.clone()),
        };
        Ok(Resume {
            state,
            at: Position::parse(&at)?,
        })
    }

    fn cursor(state: usize, rank: i64, id: i64) -> Cursor {
        match state {
            0 => Position::cursor(rank, id),
            n => Cursor::new(format!("{n}/{}", Position::cursor(rank, id))),
        }
    }
}

/// Each id once, in the order given: a job named twice is acted on once, as it must
/// never be moved twice — by its row id, so "7" and "07" are one job.
fn once_each(ids: &[JobId]) -> impl Iterator<Item = &JobId> {
    let mut seen = HashSet::new();
    ids.iter()
        .filter(move |id| seen.insert(row_id(id).ok_or(id.as_str())))
}

/// A job a step selected: its id, state, unique key, and lease token if running.
struct Picked {
    id: i64,
    state: i64,
    uniq: Option<String>,
    token: Option<String>,
}

/// The jobs of queue `q` in the action's states that a step acts on, the named jobs it
/// passes over, and where the next step resumes. Ids: the named ones in those states
/// (the caller sends at most [`STEP`]), each once, in the order given. A kind or all:
/// the matching ones among at most [`EXAMINE`] examined from `after` on, at most
/// [`STEP`] of them.
fn select(
    tx: &Tx<'_>,
    q: i64,
    states: &[i64],
    filter: &JobFilter,
    after: Resume,
) -> Result<(Vec<Picked>, Vec<Skipped>, Option<Cursor>)> {
    let mut picked = Vec::new();
    let kind = match filter {
        JobFilter::Ids(ids) => {
            let mut skipped = Vec::new();
            let mut look = tx
                .conn
                .prepare_cached("SELECT state, uniq, token FROM jobs WHERE id = ?1 AND queue = ?2")
                .map_err(db)?;
            // A completed job whose row was not retained is known by its result.
            let mut kept = tx
                .conn
                .prepare_cached(
                    "SELECT 4 FROM results WHERE job = ?1 AND queue = ?2 AND ends_ms > ?3",
                )
                .map_err(db)?;
            for name in once_each(ids) {
                let found: Option<Picked> = match row_id(name) {
                    Some(id) => look
                        .query_row([id, q], |r| {
                            Ok(Picked {
                                id,
                                state: r.get(0)?,
                                uniq: r.get(1)?,
                                token: r.get(2)?,
                            })
                        })
                        .optional()
                        .map_err(db)?,
                    None => None,
                };
                let state = match (&found, row_id(name)) {
                    (Some(job), _) => Some(job.state),
                    (None, Some(id)) => kept
                        .query_row([id, q, ops::ms(tx.now)], |r| r.get(0))
                        .optional()
                        .map_err(db)?,
                    (None, None) => None,
                };
                match found {
                    Some(job) if states.contains(&job.state) => picked.push(job),
                    _ => skipped.push(Skipped {
                        id: name.clone(),
                        why: state
                            .and_then(state_of)
                            .map_or(Skip::NotFound, Skip::InState),
                    }),
                }
            }
            return Ok((picked, skipped, None));
        }
        JobFilter::Kind(kind) => Some(kind.as_str()),
        JobFilter::All => None,
        other => {
            return Err(Error::InvalidOption(format!(
                "this store cannot select jobs by {other:?}"
            )));
        }
    };
    let mut walk = tx
        .conn
        .prepare_cached(
            "SELECT id, rank, kind, uniq, token FROM jobs WHERE queue = ?1 AND state = ?2
             AND (rank, id) > (?3, ?4) ORDER BY rank, id LIMIT ?5",
        )
        .map_err(db)?;
    let mut examined = 0;
    let mut at = after.at.bound(false);
    for (n, state) in states.iter().enumerate().skip(after.state) {
        type Row = (i64, i64, String, Option<String>, Option<String>);
        let rows: Vec<Row> = walk
            .query_map(params![q, state, at.0, at.1, EXAMINE - examined], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .and_then(|rows| rows.collect())
            .map_err(db)?;
        for (id, rank, k, uniq, token) in rows {
            examined += 1;
            if kind.is_none_or(|kind| kind == k) {
                picked.push(Picked {
                    id,
                    state: *state,
                    uniq,
                    token,
                });
            }
            if picked.len() as i64 == STEP || examined == EXAMINE {
                return Ok((picked, Vec::new(), Some(Resume::cursor(n, rank, id))));
            }
        }
        // This state is done: the next one from its start.
        at = Position::START.bound(false);
    }
    Ok((picked, Vec::new(), None))
}

/// One step of a bulk operation on queue `queue`.
pub(crate) fn step(
    tx: &mut Tx<'_>,
    queue: &taskyard_core::QueueName,
    action: Action,
    filter: &JobFilter,
    after: Resume,
) -> Result<Step> {
    let Some(q) = tx.queue(queue)? else {
        // No such queue: none of the named jobs is in it.
        let skipped = match filter {
            JobFilter::Ids(ids) => once_each(ids)
                .map(|id| Skipped {
                    id: id.clone(),
                    why: Skip::NotFound,
                })
                .collect(),
            _ => Vec::new(),
        };
        return Ok(Step {
            skipped,
            ..Step::default()
        });
    };
    let (picked, mut skipped, next) = select(tx, q, action.states(), filter, after)?;
    let done = match action {
        Action::Redrive => {
            let mut ready = Vec::with_capacity(picked.len());
            // Keys taken by jobs of this step, which stay dead until its end (when a
            // lookup would take them for free).
            let mut taken: HashMap<String, i64> = HashMap::new();
            for job in picked {
                // A dead job holds no key (a period's aside, which redrive leaves be): it
                // takes its key again, or stays dead while another job holds it.
                let key = job.uniq.as_deref().and_then(unique::decode);
                if let Some(u) = key.filter(|u| !matches!(u.mode, UniqueMode::Period(_))) {
                    let holder = match taken.get(&u.key) {
                        Some(&id) => Some(id),
                        None => unique::holder(tx, q, &u.key)?.map(|h| h.id),
                    };
                    if let Some(holder) = holder {
                        skipped.push(Skipped {
                            id: JobId::new(job.id.to_string()),
                            why: Skip::KeyHeld(JobId::new(holder.to_string())),
                        });
                        continue;
                    }
                    unique::take(tx, q, job.id, &u, READY)?;
                    // A debounce key is held while scheduled only: a ready job has none.
                    if u.mode != UniqueMode::Debounce {
                        taken.insert(u.key, job.id);
                    }
                }
                ready.push(job.id);
            }
            make_ready(tx, &ready, true)?;
            ready.len()
        }
        Action::RunNow => {
            let ids: Vec<i64> = picked.iter().map(|job| job.id).collect();
            make_ready(tx, &ids, false)?;
            ids.len()
        }
        Action::Purge | Action::Delete => {
            // A waiter on a deleted job is woken (it finds the job gone). Dead jobs have
            // no waiter left: their end ended it.
            let waiters =
                action == Action::Delete && !picked.is_empty() && Gates::read(tx)?.waiters;
            for job in &picked {
                tx.conn
                    .prepare_cached("DELETE FROM jobs WHERE id = ?1")
                    .and_then(|mut s| s.execute([job.id]))
                    .map_err(db)?;
                // Dead jobs hold no key but a period's, which outlasts its job.
                if action == Action::Delete {
                    unique::left(tx, q, job.id, job.uniq.as_deref(), Left::Deleted)?;
                }
                if waiters {
                    ops::end_wait(tx, job.id)?;
                }
            }
            ops::signal(tx)?;
            picked.len()
        }
        Action::Cancel => cancel(tx, q, &picked)?,
    };
    Ok(Step {
        done: done as u64,
        next,
        skipped,
    })
}

/// Ends the picked jobs (ready, scheduled or running) `cancelled`, at once: ranked by
/// now, attempts and errors kept, progress dropped, unique key freed as a delete frees
/// it. A running one leaves its lease: its outcome is then refused (it is not running),
/// its lease's heartbeats report it, and cancel waiters are signalled, here after commit
/// and in other processes through the `cancels` counter. The cancelled set is then kept
/// within the queue's dead-set limits.
fn cancel(tx: &mut Tx<'_>, q: i64, picked: &[Picked]) -> Result<usize> {
    if picked.is_empty() {
        return Ok(0);
    }
    let waiters = Gates::read(tx)?.waiters;
    for job in picked {
        tx.conn
            .prepare_cached(
                "UPDATE jobs SET state = ?2, rank = ?3, token = NULL, progress = NULL
                 WHERE id = ?1",
            )
            .and_then(|mut s| s.execute(params![job.id, CANCELLED, ops::ms(tx.now)]))
            .map_err(db)?;
        if job.state == RUNNING
            && let Some(token) = &job.token
        {
            tx.conn
                .prepare_cached(
                    "UPDATE leases SET running = running - 1,
                                       cancelled = ifnull(cancelled || ',', '') || ?2
                     WHERE token = ?1",
                )
                .and_then(|mut s| s.execute(params![token, job.id.to_string()]))
                .map_err(db)?;
            tx.cancelled = true;
        }
        unique::left(tx, q, job.id, job.uniq.as_deref(), Left::Deleted)?;
        if waiters {
            ops::end_wait(tx, job.id)?;
        }
    }
    ops::signal(tx)?;
    let c = crate::read::queue_row(tx.conn, q)?
        .unwrap_or_default()
        .config;
    ops::trim(tx, q, CANCELLED, c.dead_max, c.dead_max_age_ms)?;
    Ok(picked.len())
}

/// One step of deleting a queue: at most [`STEP`] of its jobs (whatever their state), of
/// its unique keys, of its leases, of its results, of its waiters and of its schedules;
/// once none is left,
/// its row (name, settings, paused). Every job examined goes, so each step starts again from the start.
pub(crate) fn delete_queue(tx: &mut Tx<'_>, queue: &taskyard_core::QueueName) -> Result<Step> {
    let Some(q) = tx.queue(queue)? else {
        return Ok(Step::default());
    };
    // Jobs first, then (once they are gone) the keys, then the leases: a key row or a
    // lease never goes before the jobs it belongs to, so if the deletion stops between
    // steps no job of the queue loses its key (another job could take it) or its lease
    // (a running job would never expire). A key row whose job is gone reads as free.
    // Results and waiters last: both only ever name jobs that are gone or going; then
    // the queue's schedules.
    let mut counts = [0; 6];
    for (i, sql) in [
        "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE queue = ?1 LIMIT ?2)",
        "DELETE FROM uniques WHERE queue = ?1 AND key IN
            (SELECT key FROM uniques WHERE queue = ?1 LIMIT ?2)",
        "DELETE FROM leases WHERE token IN (SELECT token FROM leases WHERE queue = ?1 LIMIT ?2)",
        "DELETE FROM results WHERE job IN (SELECT job FROM results WHERE queue = ?1 LIMIT ?2)",
        "DELETE FROM waiters WHERE job IN (SELECT job FROM waiters WHERE queue = ?1 LIMIT ?2)",
        "DELETE FROM schedules WHERE queue = ?1 AND name IN
            (SELECT name FROM schedules WHERE queue = ?1 LIMIT ?2)",
    ]
    .into_iter()
    .enumerate()
    {
        if counts[..i].contains(&STEP) {
            break;
        }
        counts[i] = tx
            .conn
            .prepare_cached(sql)
            .and_then(|mut s| s.execute([q, STEP]))
            .map_err(db)? as i64;
    }
    let more = counts.contains(&STEP);
    if !more {
        tx.conn
            .prepare_cached("DELETE FROM queues WHERE id = ?1")
            .and_then(|mut s| s.execute([q]))
            .map_err(db)?;
        tx.forget_queue(queue);
    }
    Ok(Step {
        done: counts[0] as u64,
        next: more.then(Cursor::start),
        skipped: Vec::new(),
    })
}
