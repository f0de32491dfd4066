//! The state transitions, each run by the writer inside a group transaction.
//!
//! Same semantics as the Redis scripts (the conformance suite holds both to them); the
//! difference is bookkeeping: here a job is one row whose `state` and `rank` move it
//! between states, and its attempt count includes the running attempt.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use rusqlite::{OptionalExtension, params};
use taskyard_core::store::support::{LEASE_EXPIRED, history};
use taskyard_core::{
    Backoff, ClaimedJob, Cursor, DeadFilter, Due, Error, JobId, Lease, LeaseToken, Maintenance,
    NewJob, Outcome, QueueConfig, QueueName, Result, Step,
};

use crate::db::{COMPLETED, DEAD, READY, SCHEDULED, db};
use crate::read::{self, Position, row_id};
use crate::writer::Tx;

/// Work per call is bounded, as in the Redis scripts: promotions, expired leases,
/// trimmed jobs and redriven jobs go 1,000 (leases 100) at a time.
const STEP: i64 = taskyard_core::store::support::STEP as i64;

/// The most dead jobs one step by kind examines.
const EXAMINE: i64 = 10 * STEP;

fn ms(n: u64) -> i64 {
    n.min(i64::MAX as u64) as i64
}

pub(crate) fn enqueue(tx: &mut Tx<'_>, queue: &QueueName, jobs: &[NewJob]) -> Result<Vec<JobId>> {
    let q = tx.ensure_queue(queue)?;
    let config = read::config_of(tx.conn, q)?;
    if config.max_len > 0 {
        let len = read::count(tx.conn, q, READY)? + read::count(tx.conn, q, SCHEDULED)?;
        if len + jobs.len() as u64 > config.max_len {
            return Err(Error::QueueFull {
                queue: queue.to_string(),
                len,
                max_len: config.max_len,
            });
        }
    }
    let first = tx.fresh(jobs.len())?;
    let now = tx.now;
    let mut insert = tx
        .conn
        .prepare_cached(
            "INSERT INTO jobs (id, queue, state, rank, attempt, max_attempts, enqueued_ms, kind,
                               backoff, payload, timeout_ms)
             VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?7, ?8, ?9, ?10)",
        )
        .map_err(db)?;
    let mut ids = Vec::with_capacity(jobs.len());
    for (i, job) in jobs.iter().enumerate() {
        let id = first + i as i64;
        let due = match job.due() {
            Due::Now => None,
            Due::After(d) => Some(now.saturating_add(d)),
            Due::At(at) => Some(at),
        };
        let (state, rank) = match due {
            Some(at) if at > now => (SCHEDULED, ms(at)),
            _ => (READY, id),
        };
        let backoff = job.backoff().map(|b| format!("{},{}", b.base_ms, b.cap_ms));
        insert
            .execute(params![
                id,
                q,
                state,
                rank,
                job.max_attempts(),
                ms(now),
                job.kind(),
                backoff,
                job.payload(),
                // At most 7 days in ms (`MAX_TIMEOUT`): fits an INTEGER.
                job.timeout().map(|t| ms(t.as_millis() as u64))
            ])
            .map_err(db)?;
        ids.push(JobId::new(id.to_string()));
    }
    tx.wake = true;
    Ok(ids)
}

/// Moves due scheduled jobs to the tail of ready. Returns how many.
fn promote(tx: &mut Tx<'_>, q: i64) -> Result<u64> {
    let due: Vec<i64> = tx
        .conn
        .prepare_cached(
            "SELECT id FROM jobs WHERE queue = ?1 AND state = 1 AND rank <= ?2
             ORDER BY rank LIMIT ?3",
        )
        .and_then(|mut s| s.query_map([q, ms(tx.now), STEP], |r| r.get(0))?.collect())
        .map_err(db)?;
    make_ready(tx, &due, false)?;
    Ok(due.len() as u64)
}

/// Puts jobs at the tail of ready (or, `reset`, with a fresh count of attempts).
fn make_ready(tx: &mut Tx<'_>, ids: &[i64], reset: bool) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let first = tx.fresh(ids.len())?;
    let sql = if reset {
        "UPDATE jobs SET state = 0, rank = ?2, token = NULL, attempt = 0 WHERE id = ?1"
    } else {
        "UPDATE jobs SET state = 0, rank = ?2, token = NULL WHERE id = ?1"
    };
    let mut update = tx.conn.prepare_cached(sql).map_err(db)?;
    for (i, id) in ids.iter().enumerate() {
        update.execute([*id, first + i as i64]).map_err(db)?;
    }
    tx.wake = true;
    Ok(())
}

/// The columns a claimed job is read from, in the order [`claimed`] reads them.
const CLAIMED: &str =
    "rank, id, attempt, max_attempts, enqueued_ms, kind, backoff, payload, timeout_ms";

/// What a claim took, and when the next scheduled job is due (ms from now).
pub(crate) fn claim(
    tx: &mut Tx<'_>,
    queue: &QueueName,
    max: usize,
    lease_ms: u64,
    token: &LeaseToken,
) -> Result<(Vec<ClaimedJob>, Option<u64>)> {
    let Some(q) = tx.queue(queue)? else {
        return Ok((Vec::new(), None));
    };
    promote(tx, q)?;
    let next: Option<i64> = tx
        .conn
        .prepare_cached(
            "SELECT rank FROM jobs WHERE queue = ?1 AND state = 1 ORDER BY rank LIMIT 1",
        )
        .and_then(|mut s| s.query_row([q], |r| r.get(0)).optional())
        .map_err(db)?;
    let next_due = next.map(|at| (at.max(0) as u64).saturating_sub(tx.now));
    let ends = ms(tx.now.saturating_add(lease_ms));
    // A token already in use names a claim made before: this call is its retry after the
    // answer was lost. Answer with the jobs it still holds, lease renewed, and claim
    // nothing more (see `Store::claim`).
    let held: Option<String> = tx
        .conn
        .prepare_cached(
            "UPDATE leases SET ends_ms = ?2 WHERE token = ?1 AND queue = ?3 RETURNING ids",
        )
        .and_then(|mut s| {
            s.query_row(params![&**token, ends, q], |r| r.get(0))
                .optional()
        })
        .map_err(db)?;
    if let Some(ids) = held {
        let mut one = tx
            .conn
            .prepare_cached(&format!(
                "SELECT {CLAIMED} FROM jobs WHERE id = ?1 AND token = ?2 AND state = 2"
            ))
            .map_err(db)?;
        let mut kind: Arc<str> = Arc::from("");
        let mut jobs = Vec::new();
        for id in ids.split(',').filter_map(|id| id.parse::<i64>().ok()) {
            let mut rows = one.query(params![id, &**token]).map_err(db)?;
            if let Some(r) = rows.next().map_err(db)? {
                jobs.push(claimed(r, queue, token, &mut kind)?.1);
            }
        }
        return Ok((jobs, next_due));
    }
    if max == 0 || read::paused(tx.conn, q)? {
        return Ok((Vec::new(), next_due));
    }
    let mut rows: Vec<(i64, ClaimedJob)> = Vec::with_capacity(max);
    {
        let mut take = tx
            .conn
            .prepare_cached(&format!(
                "UPDATE jobs SET state = 2, token = ?1, attempt = attempt + 1
                 WHERE id IN (SELECT id FROM jobs WHERE queue = ?2 AND state = 0
                              ORDER BY rank LIMIT ?3)
                 RETURNING {CLAIMED}"
            ))
            .map_err(db)?;
        let mut out = take
            .query(params![&**token, q, max.min(i64::MAX as usize) as i64])
            .map_err(db)?;
        // Most batches hold one kind: share its name rather than allocate one per job.
        let mut kind: Arc<str> = Arc::from("");
        while let Some(r) = out.next().map_err(db)? {
            rows.push(claimed(r, queue, token, &mut kind)?);
        }
    }
    if rows.is_empty() {
        return Ok((Vec::new(), next_due));
    }
    rows.sort_unstable_by_key(|(rank, _)| *rank);
    let jobs: Vec<ClaimedJob> = rows.into_iter().map(|(_, job)| job).collect();
    let ids: Vec<&str> = jobs.iter().map(|j| j.lease.id.as_str()).collect();
    tx.conn
        .prepare_cached(
            "INSERT INTO leases (token, queue, ends_ms, ids, running) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut s| s.execute(params![&**token, q, ends, ids.join(","), jobs.len() as i64]))
        .map_err(db)?;
    // Work left behind: wake another idle worker of this process.
    if jobs.len() == max {
        tx.wake = true;
    }
    Ok((jobs, next_due))
}

/// A claimed job and its rank, from a row of [`CLAIMED`] columns. `kind`: the last kind
/// read, shared with the next job of the same kind rather than allocated again.
fn claimed(
    r: &rusqlite::Row<'_>,
    queue: &QueueName,
    token: &LeaseToken,
    kind: &mut Arc<str>,
) -> Result<(i64, ClaimedJob)> {
    let k: String = r.get(5).map_err(db)?;
    if **kind != *k {
        *kind = Arc::from(k);
    }
    let backoff: Option<String> = r.get(6).map_err(db)?;
    let id: i64 = r.get(1).map_err(db)?;
    let payload: Vec<u8> = r.get(7).map_err(db)?;
    let timeout: Option<i64> = r.get(8).map_err(db)?;
    Ok((
        r.get(0).map_err(db)?,
        ClaimedJob {
            lease: Lease {
                queue: queue.clone(),
                id: JobId::new(id.to_string()),
                token: token.clone(),
            },
            kind: kind.clone(),
            payload: Bytes::from(payload),
            attempt: r.get(2).map_err(db)?,
            max_attempts: r.get(3).map_err(db)?,
            backoff: backoff.as_deref().and_then(parse_backoff),
            enqueued_at_ms: r.get::<_, i64>(4).map_err(db)? as u64,
            timeout: timeout.map(|t| std::time::Duration::from_millis(t.max(1) as u64)),
        },
    ))
}

fn parse_backoff(s: &str) -> Option<Backoff> {
    let (base, cap) = s.split_once(',')?;
    Some(Backoff {
        base_ms: base.parse().ok()?,
        cap_ms: cap.parse().ok()?,
    })
}

pub(crate) fn heartbeat(tx: &mut Tx<'_>, tokens: &[&str], lease_ms: u64) -> Result<Vec<bool>> {
    let ends = ms(tx.now.saturating_add(lease_ms));
    let mut renew = tx
        .conn
        .prepare_cached("UPDATE leases SET ends_ms = ?1 WHERE token = ?2")
        .map_err(db)?;
    tokens
        .iter()
        .map(|t| renew.execute(params![ends, t]).map(|n| n == 1).map_err(db))
        .collect()
}

/// Jobs of a batch that left running: forget the lease once none of its jobs is left.
fn settle(tx: &Tx<'_>, token: &str, n: i64) -> Result<()> {
    tx.conn
        .prepare_cached("UPDATE leases SET running = running - ?1 WHERE token = ?2")
        .and_then(|mut s| s.execute(params![n, token]))
        .and_then(|_| {
            tx.conn
                .prepare_cached("DELETE FROM leases WHERE token = ?1 AND running <= 0")
        })
        .and_then(|mut s| s.execute([token]))
        .map(|_| ())
        .map_err(db)
}

/// A job still running under `token`: its attempt, max attempts and error history.
fn running(tx: &Tx<'_>, id: i64, token: &str) -> Result<Option<(u32, u32, Option<String>)>> {
    tx.conn
        .prepare_cached(
            "SELECT attempt, max_attempts, errors FROM jobs WHERE id = ?1 AND token = ?2 AND state = 2",
        )
        .and_then(|mut s| {
            s.query_row(params![id, token], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
        .map_err(db)
}

/// Where a failed run goes, with its attempts counted and its error kept.
fn fail(
    tx: &mut Tx<'_>,
    id: i64,
    attempt: u32,
    max: u32,
    errors: Option<String>,
    code: Fail,
) -> Result<i64> {
    let now = tx.now;
    let mut errors = errors.unwrap_or_default();
    history::push(&mut errors, attempt, now, code.message());
    let (state, rank) = match code {
        Fail::Dead(_) => (DEAD, ms(now)),
        _ if attempt >= max => (DEAD, ms(now)),
        Fail::At(at, _) if at > now => (SCHEDULED, ms(at)),
        _ => (READY, tx.fresh(1)?),
    };
    tx.conn
        .prepare_cached(
            "UPDATE jobs SET state = ?2, rank = ?3, token = NULL, errors = ?4 WHERE id = ?1",
        )
        .and_then(|mut s| s.execute(params![id, state, rank, errors]))
        .map_err(db)?;
    if state != DEAD {
        tx.wake = true;
    }
    Ok(state)
}

enum Fail<'a> {
    At(u64, &'a str),
    Dead(&'a str),
}

impl Fail<'_> {
    fn message(&self) -> &str {
        match self {
            Fail::At(_, m) | Fail::Dead(m) => m,
        }
    }
}

pub(crate) fn finish(tx: &mut Tx<'_>, outcomes: &[(Lease, Outcome)]) -> Result<Vec<bool>> {
    let mut result = Vec::with_capacity(outcomes.len());
    let mut settled: HashMap<&str, i64> = HashMap::new();
    let mut retention: HashMap<&QueueName, (i64, QueueConfig)> = HashMap::new();
    let mut trims: Vec<(i64, i64, u64, u64)> = Vec::new();
    for (lease, outcome) in outcomes {
        let Some(id) = row_id(&lease.id) else {
            result.push(false);
            continue;
        };
        let token = &*lease.token;
        let ok = match outcome {
            Outcome::Completed => {
                let keep = match retention.get(&lease.queue) {
                    Some((_, c)) => c.completed_max > 0,
                    None => {
                        let q = tx.queue(&lease.queue)?.unwrap_or(-1);
                        let c = read::config_of(tx.conn, q)?;
                        retention.insert(&lease.queue, (q, c));
                        if c.completed_max > 0 {
                            trims.push((q, COMPLETED, c.completed_max, c.completed_max_age_ms));
                        }
                        c.completed_max > 0
                    }
                };
                let done = if keep {
                    tx.conn
                        .prepare_cached(
                            "UPDATE jobs SET state = 4, rank = ?3, token = NULL
                             WHERE id = ?1 AND token = ?2 AND state = 2",
                        )
                        .and_then(|mut s| s.execute(params![id, token, ms(tx.now)]))
                } else {
                    tx.conn
                        .prepare_cached(
                            "DELETE FROM jobs WHERE id = ?1 AND token = ?2 AND state = 2",
                        )
                        .and_then(|mut s| s.execute(params![id, token]))
                };
                done.map_err(db)? == 1
            }
            failed => match running(tx, id, token)? {
                None => false,
                Some((attempt, max, errors)) => {
                    let code = match failed {
                        Outcome::Retry { delay_ms, error } => {
                            Fail::At(tx.now.saturating_add(*delay_ms), error)
                        }
                        Outcome::RetryAt { at_ms, error } => Fail::At(*at_ms, error),
                        Outcome::Dead { error } => Fail::Dead(error),
                        other => {
                            return Err(Error::InvalidOption(format!(
                                "this store cannot record the outcome {other:?}"
                            )));
                        }
                    };
                    if fail(tx, id, attempt, max, errors, code)? == DEAD {
                        let q = tx.queue(&lease.queue)?.unwrap_or(-1);
                        let c = read::config_of(tx.conn, q)?;
                        trims.push((q, DEAD, c.dead_max, c.dead_max_age_ms));
                    }
                    true
                }
            },
        };
        if ok {
            *settled.entry(token).or_default() += 1;
        }
        result.push(ok);
    }
    for (token, n) in settled {
        settle(tx, token, n)?;
    }
    trims.sort_unstable();
    trims.dedup();
    for (q, state, max, age) in trims {
        trim(tx, q, state, max, age)?;
    }
    Ok(result)
}

pub(crate) fn release(tx: &mut Tx<'_>, leases: &[Lease]) -> Result<Vec<bool>> {
    let mut result = Vec::with_capacity(leases.len());
    for lease in leases {
        let Some(id) = row_id(&lease.id) else {
            result.push(false);
            continue;
        };
        // To the head of ready, the attempt not charged: the latest released goes first.
        let rank = -tx.fresh(1)?;
        let n = tx
            .conn
            .prepare_cached(
                "UPDATE jobs SET state = 0, rank = ?3, token = NULL, attempt = attempt - 1
                 WHERE id = ?1 AND token = ?2 AND state = 2",
            )
            .and_then(|mut s| s.execute(params![id, &*lease.token, rank]))
            .map_err(db)?;
        if n == 1 {
            settle(tx, &lease.token, 1)?;
            tx.wake = true;
        }
        result.push(n == 1);
    }
    Ok(result)
}

/// Keeps a finished state (dead or completed) within its count and age, oldest first.
fn trim(tx: &Tx<'_>, q: i64, state: i64, max: u64, max_age_ms: u64) -> Result<()> {
    // The newest job past the count: it and every older one go.
    let over: Option<(i64, i64)> = tx
        .conn
        .prepare_cached(
            "SELECT rank, id FROM jobs WHERE queue = ?1 AND state = ?2
             ORDER BY rank DESC, id DESC LIMIT 1 OFFSET ?3",
        )
        .and_then(|mut s| {
            s.query_row(params![q, state, ms(max)], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(db)?;
    if let Some((rank, id)) = over {
        tx.conn
            .prepare_cached(
                "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE queue = ?1 AND state = ?2
                                               AND (rank, id) <= (?3, ?4)
                                               ORDER BY rank, id LIMIT ?5)",
            )
            .and_then(|mut s| s.execute(params![q, state, rank, id, STEP]))
            .map_err(db)?;
    }
    let cutoff = ms(tx.now.saturating_sub(max_age_ms));
    tx.conn
        .prepare_cached(
            "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE queue = ?1 AND state = ?2
                                           AND rank <= ?3 ORDER BY rank LIMIT ?4)",
        )
        .and_then(|mut s| s.execute(params![q, state, cutoff, STEP]))
        .map_err(db)?;
    Ok(())
}

pub(crate) fn maintain(tx: &mut Tx<'_>, queue: &QueueName) -> Result<Maintenance> {
    let Some(q) = tx.queue(queue)? else {
        return Ok(Maintenance::default());
    };
    let promoted = promote(tx, q)?;
    let leases: Vec<(String, String)> = tx
        .conn
        .prepare_cached(
            "SELECT token, ids FROM leases WHERE queue = ?1 AND ends_ms < ?2 ORDER BY ends_ms LIMIT 100",
        )
        .and_then(|mut s| {
            s.query_map([q, ms(tx.now)], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
        .map_err(db)?;
    let mut expired = 0;
    for (token, ids) in &leases {
        for id in ids.split(',').filter_map(|s| s.parse::<i64>().ok()) {
            if let Some((attempt, max, errors)) = running(tx, id, token)? {
                fail(tx, id, attempt, max, errors, Fail::At(0, LEASE_EXPIRED))?;
                expired += 1;
            }
        }
        tx.conn
            .prepare_cached("DELETE FROM leases WHERE token = ?1")
            .and_then(|mut s| s.execute([token]))
            .map_err(db)?;
    }
    let c = read::config_of(tx.conn, q)?;
    trim(tx, q, DEAD, c.dead_max, c.dead_max_age_ms)?;
    trim(tx, q, COMPLETED, c.completed_max, c.completed_max_age_ms)?;
    vacuum(tx)?;
    Ok(Maintenance { promoted, expired })
}

/// Gives free pages back to the file system once they are a large share of the file
/// (after a backlog drained), a bounded number per call, so the file does not stay at
/// its high-water mark.
fn vacuum(tx: &Tx<'_>) -> Result<()> {
    let pragma = |name: &str| -> Result<i64> {
        tx.conn
            .pragma_query_value(None, name, |r| r.get(0))
            .map_err(db)
    };
    let free = pragma("freelist_count")?;
    if free >= 256 && free * 4 >= pragma("page_count")? {
        // Each step frees one page: step to the end.
        let mut stmt = tx
            .conn
            .prepare_cached("PRAGMA incremental_vacuum(2048)")
            .map_err(db)?;
        let mut rows = stmt.query([]).map_err(db)?;
        while rows.next().map_err(db)?.is_some() {}
    }
    Ok(())
}

/// Dead jobs a step of a bulk operation acts on, and where the next step resumes. Ids:
/// the given ones that are dead (the caller sends at most [`STEP`]); all: the oldest
/// [`STEP`] (those it acts on leave the set, so the next step starts again at the start);
/// a kind: the matching ones among at most [`EXAMINE`] examined from `after` on, so a
/// step never reads the whole dead set.
fn select_dead(
    tx: &Tx<'_>,
    q: i64,
    filter: &DeadFilter,
    after: Position,
) -> Result<(Vec<i64>, Option<Cursor>)> {
    let conn = tx.conn;
    match filter {
        DeadFilter::Ids(ids) => {
            let mut out = Vec::new();
            let mut check = conn
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM jobs WHERE id = ?1 AND queue = ?2 AND state = 3)",
                )
                .map_err(db)?;
            for id in ids.iter().filter_map(row_id) {
                // An id given twice is moved once: a job must never be in two places.
                if !out.contains(&id) && check.query_row([id, q], |r| r.get(0)).map_err(db)? {
                    out.push(id);
                }
            }
            Ok((out, None))
        }
        DeadFilter::All => {
            let ids: Vec<i64> = conn
                .prepare_cached(
                    "SELECT id FROM jobs WHERE queue = ?1 AND state = 3 ORDER BY rank, id LIMIT ?2",
                )
                .and_then(|mut s| s.query_map([q, STEP], |r| r.get(0))?.collect())
                .map_err(db)?;
            let next = (ids.len() as i64 == STEP).then(Cursor::start);
            Ok((ids, next))
        }
        DeadFilter::Kind(kind) => {
            let (rank, id) = after.bound(false);
            let rows: Vec<(i64, i64, String)> = conn
                .prepare_cached(
                    "SELECT id, rank, kind FROM jobs WHERE queue = ?1 AND state = 3
                     AND (rank, id) > (?2, ?3) ORDER BY rank, id LIMIT ?4",
                )
                .and_then(|mut s| {
                    s.query_map(params![q, rank, id, EXAMINE], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })?
                    .collect()
                })
                .map_err(db)?;
            let mut out = Vec::new();
            let mut last = None;
            for (id, rank, k) in &rows {
                last = Some(Position::cursor(*rank, *id));
                if k == kind {
                    out.push(*id);
                    if out.len() as i64 == STEP {
                        break;
                    }
                }
            }
            let done = out.len() as i64 == STEP || rows.len() as i64 == EXAMINE;
            Ok((out, if done { last } else { None }))
        }
        other => Err(Error::InvalidOption(format!(
            "this store cannot select dead jobs by {other:?}"
        ))),
    }
}

/// Moves up to [`STEP`] dead jobs to ready with a fresh count of attempts (`redrive`) or
/// deletes them: one step of a bulk operation.
pub(crate) fn dead_step(
    tx: &mut Tx<'_>,
    queue: &QueueName,
    filter: &DeadFilter,
    after: Position,
    redrive: bool,
) -> Result<Step> {
    let Some(q) = tx.queue(queue)? else {
        return Ok(Step::default());
    };
    let (ids, next) = select_dead(tx, q, filter, after)?;
    if redrive {
        make_ready(tx, &ids, true)?;
    } else {
        let mut delete = tx
            .conn
            .prepare_cached("DELETE FROM jobs WHERE id = ?1")
            .map_err(db)?;
        for id in &ids {
            delete.execute([id]).map_err(db)?;
        }
    }
    Ok(Step {
        done: ids.len() as u64,
        next,
        skipped: Vec::new(),
    })
}

pub(crate) fn set_paused(tx: &mut Tx<'_>, queue: &QueueName, paused: bool) -> Result<()> {
    let q = tx.ensure_queue(queue)?;
    tx.conn
        .prepare_cached("UPDATE queues SET paused = ?2 WHERE id = ?1")
        .and_then(|mut s| s.execute(params![q, paused]))
        .map_err(db)?;
    // Resumed: wake idle workers, who would otherwise sleep until their wait times out.
    tx.wake = !paused;
    Ok(())
}

pub(crate) fn configure(tx: &mut Tx<'_>, queue: &QueueName, c: &QueueConfig) -> Result<()> {
    let q = tx.ensure_queue(queue)?;
    tx.conn
        .prepare_cached(
            "UPDATE queues SET max_len = ?2, dead_max = ?3, dead_max_age_ms = ?4,
                               completed_max = ?5, completed_max_age_ms = ?6
             WHERE id = ?1",
        )
        .and_then(|mut s| {
            s.execute(params![
                q,
                ms(c.max_len),
                ms(c.dead_max),
                ms(c.dead_max_age_ms),
                ms(c.completed_max),
                ms(c.completed_max_age_ms)
            ])
        })
        .map_err(db)?;
    Ok(())
}

pub(crate) fn delete_queue(tx: &mut Tx<'_>, queue: &QueueName) -> Result<()> {
    let Some(q) = tx.queue(queue)? else {
        return Ok(());
    };
    for sql in [
        "DELETE FROM jobs WHERE queue = ?1",
        "DELETE FROM leases WHERE queue = ?1",
        "DELETE FROM queues WHERE id = ?1",
    ] {
        tx.conn.execute(sql, [q]).map_err(db)?;
    }
    tx.forget_queues();
    Ok(())
}
