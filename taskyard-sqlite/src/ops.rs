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
    Backoff, Beat, ClaimedJob, DEFAULT_PRIORITY, Due, Enqueued, Error, JobId, Lease, LeaseToken,
    Maintenance, NewJob, Outcome, QueueConfig, QueueName, Result, UniqueMode,
};

use crate::db::{CANCELLED, COMPLETED, DEAD, READY, SCHEDULED, db};
use crate::read::{self, row_id};
use crate::unique::{self, Left};
use crate::writer::Tx;

/// Work per call is bounded, as in the Redis scripts: promotions, expired leases,
/// trimmed jobs and bulk steps go 1,000 (leases 100) at a time.
pub(crate) const STEP: i64 = taskyard_core::store::support::STEP as i64;

pub(crate) fn ms(n: u64) -> i64 {
    n.min(i64::MAX as u64) as i64
}

/// A ready job's rank is its priority's band plus a sequence number (the order it
/// became ready; negated when released, to go first): bands are 2^56 apart and sequence
/// numbers stay below 2^55 (ids and ranks come from one counter), so every job of a
/// higher priority goes before every job of a lower one, first in first out within one.
/// The default priority's band is 0: a plain job's rank is its sequence number, as
/// before priorities, and claims keep their one query on the `(queue, state, rank)`
/// index.
const BAND: i64 = 1 << 56;

fn band(priority: u8) -> i64 {
    (DEFAULT_PRIORITY as i64 - priority as i64) * BAND
}

/// [`band`] in SQL, of a row's `priority` (NULL: the default), for statements to
/// `concat!`. Checked against [`band`] by a test.
macro_rules! band_sql {
    () => {
        "(50 - ifnull(priority, 50)) * 72057594037927936"
    };
}

/// When a job enqueued at `now` is due, if later than now.
fn due_at(due: Due, now: u64) -> Option<u64> {
    let at = match due {
        Due::Now => return None,
        Due::After(d) => now.saturating_add(d),
        Due::At(at) => at,
    };
    (at > now).then_some(at)
}

pub(crate) fn enqueue(
    tx: &mut Tx<'_>,
    queue: &QueueName,
    jobs: &[NewJob],
) -> Result<Vec<Enqueued>> {
    let (q, row) = tx.ensure(queue)?;
    let max_len = row.config.max_len;
    // Only batches with a key look at the unique table; theirs is known once each job
    // is looked at, so their length is checked after (a refusal undoes the whole batch).
    let keyed = jobs.iter().any(|j| j.unique().is_some());
    let len = if max_len > 0 {
        read::count(tx.conn, q, READY)? + read::count(tx.conn, q, SCHEDULED)?
    } else {
        0
    };
    let full = |added: u64| {
        (max_len > 0 && len + added > max_len).then(|| Error::QueueFull {
            queue: queue.to_string(),
            len,
            max_len,
        })
    };
    if !keyed && let Some(e) = full(jobs.len() as u64) {
        return Err(e);
    }
    let first = tx.fresh(jobs.len())?;
    let now = tx.now;
    let conn = tx.conn;
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO jobs (id, queue, state, rank, attempt, max_attempts, enqueued_ms, kind,
                               backoff, payload, timeout_ms, priority, uniq)
             VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )
        .map_err(db)?;
    let mut out = Vec::with_capacity(jobs.len());
    let mut added = 0;
    for (i, job) in jobs.iter().enumerate() {
        let id = first + i as i64;
        let due = due_at(job.due(), now);
        if let Some(u) = job.unique()
            && let Some(holder) = unique::holder(tx, q, &u.key)?
        {
            if holder.debounce && u.mode == UniqueMode::Debounce {
                debounce(tx, holder.id, job, due)?;
            }
            out.push(Enqueued {
                id: JobId::new(holder.id.to_string()),
                duplicate: true,
            });
            continue;
        }
        let (state, rank) = match due {
            Some(at) => (SCHEDULED, ms(at)),
            None => (READY, band(job.priority()) + id),
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
                job.timeout().map(|t| ms(t.as_millis() as u64)),
                // NULL for the default: a plain job's row grows by a header byte only.
                (job.priority() != DEFAULT_PRIORITY).then_some(job.priority()),
                job.unique().map(unique::encode),
            ])
            .map_err(db)?;
        if let Some(u) = job.unique() {
            unique::take(tx, q, id, u, state)?;
        }
        added += 1;
        out.push(Enqueued {
            id: JobId::new(id.to_string()),
            duplicate: false,
        });
    }
    // A batch of duplicates only adds nothing, so a queue over its length (retries and
    // releases are not refused) still answers it.
    if added > 0
        && let Some(e) = full(added)
    {
        return Err(e);
    }
    tx.wake = true;
    Ok(out)
}

/// A debounced duplicate of scheduled job `id`: its payload and due time replace the
/// job's; due now (or past), the job is ready at once (and holds its key no more).
fn debounce(tx: &mut Tx<'_>, id: i64, job: &NewJob, due: Option<u64>) -> Result<()> {
    let (state, rank) = match due {
        Some(at) => (SCHEDULED, ms(at)),
        None => (READY, tx.fresh(1)?),
    };
    tx.conn
        .prepare_cached(concat!(
            "UPDATE jobs SET payload = ?2, state = ?3,
                             rank = ?4 + CASE ?3 WHEN 0 THEN ",
            band_sql!(),
            " ELSE 0 END WHERE id = ?1"
        ))
        .and_then(|mut s| s.execute(params![id, job.payload(), state, rank]))
        .map_err(db)?;
    Ok(())
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

/// Puts jobs at the tail of ready at their priority (or, `reset`, with a fresh count of
/// attempts).
pub(crate) fn make_ready(tx: &mut Tx<'_>, ids: &[i64], reset: bool) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let first = tx.fresh(ids.len())?;
    let sql = if reset {
        concat!(
            "UPDATE jobs SET state = 0, rank = ?2 + ",
            band_sql!(),
            ", token = NULL, attempt = 0 WHERE id = ?1"
        )
    } else {
        concat!(
            "UPDATE jobs SET state = 0, rank = ?2 + ",
            band_sql!(),
            ", token = NULL WHERE id = ?1"
        )
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
    let Some((q, row)) = tx.settings(queue)? else {
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
    if max == 0 || row.paused {
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
    // Queued and debounce keys are free once a worker has the job: looked up only where
    // keys are held, so a plain claim reads what it did before unique keys existed.
    if unique::any_held(tx)? {
        let mut uniq_of = tx
            .conn
            .prepare_cached("SELECT uniq FROM jobs WHERE id = ?1")
            .map_err(db)?;
        let mut keyed = Vec::new();
        for job in &jobs {
            let Some(id) = row_id(&job.lease.id) else {
                continue;
            };
            let uniq: Option<String> = uniq_of.query_row([id], |r| r.get(0)).map_err(db)?;
            if uniq.is_some() {
                keyed.push((id, uniq));
            }
        }
        drop(uniq_of);
        for (id, uniq) in keyed {
            unique::left(tx, q, id, uniq.as_deref(), Left::Claimed)?;
        }
    }
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

/// A claimed job, from a row of [`CLAIMED`] columns. `kind`: the last kind read, shared
/// with the next job of the same kind rather than allocated again.
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

/// Renews each lease (one per claim token) and records the progress of jobs still held
/// under their lease's token. The renewal returns the lease's cancelled jobs in the same
/// statement, so a plain heartbeat runs what it ran before cancels existed.
pub(crate) fn heartbeat(
    tx: &mut Tx<'_>,
    leases: &[Lease],
    lease_ms: u64,
    progress: &[(Lease, Bytes)],
) -> Result<Beat> {
    let ends = ms(tx.now.saturating_add(lease_ms));
    let mut beat = Beat {
        held: Vec::with_capacity(leases.len()),
        cancelled: Vec::new(),
    };
    {
        let mut renew = tx
            .conn
            .prepare_cached("UPDATE leases SET ends_ms = ?1 WHERE token = ?2 RETURNING cancelled")
            .map_err(db)?;
        for lease in leases {
            let found: Option<Option<String>> = renew
                .query_row(params![ends, &*lease.token], |r| r.get(0))
                .optional()
                .map_err(db)?;
            beat.held.push(found.is_some());
            for id in found.flatten().iter().flat_map(|ids| ids.split(',')) {
                beat.cancelled
                    .push((lease.queue.clone(), JobId::new(id.to_string())));
            }
        }
    }
    if !progress.is_empty() {
        let mut record = tx
            .conn
            .prepare_cached(
                "UPDATE jobs SET progress = ?3 WHERE id = ?1 AND token = ?2 AND state = 2",
            )
            .map_err(db)?;
        for (lease, value) in progress {
            let Some(id) = row_id(&lease.id) else {
                continue;
            };
            record
                .execute(params![id, &*lease.token, String::from_utf8_lossy(value)])
                .map_err(db)?;
        }
    }
    Ok(beat)
}

/// Jobs of a batch that left running: forget the lease once none of its jobs is left —
/// unless some were cancelled, which its heartbeats report until it expires.
fn settle(tx: &Tx<'_>, token: &str, n: i64) -> Result<()> {
    tx.conn
        .prepare_cached("UPDATE leases SET running = running - ?1 WHERE token = ?2")
        .and_then(|mut s| s.execute(params![n, token]))
        .and_then(|_| {
            tx.conn.prepare_cached(
                "DELETE FROM leases WHERE token = ?1 AND running <= 0 AND cancelled IS NULL",
            )
        })
        .and_then(|mut s| s.execute([token]))
        .map(|_| ())
        .map_err(db)
}

/// A job running under a token, as a failure needs it.
struct Run {
    queue: i64,
    attempt: u32,
    max_attempts: u32,
    errors: Option<String>,
    priority: Option<u8>,
    uniq: Option<String>,
}

/// Job `id` if it is still running under `token`.
fn running(tx: &Tx<'_>, id: i64, token: &str) -> Result<Option<Run>> {
    tx.conn
        .prepare_cached(
            "SELECT queue, attempt, max_attempts, errors, priority, uniq FROM jobs
             WHERE id = ?1 AND token = ?2 AND state = 2",
        )
        .and_then(|mut s| {
            s.query_row(params![id, token], |r| {
                Ok(Run {
                    queue: r.get(0)?,
                    attempt: r.get(1)?,
                    max_attempts: r.get(2)?,
                    errors: r.get(3)?,
                    priority: r.get(4)?,
                    uniq: r.get(5)?,
                })
            })
            .optional()
        })
        .map_err(db)
}

/// Where a failed run goes, with its attempts counted and its error kept: back to ready
/// at its priority, scheduled, or dead (giving back a finished key).
fn fail(tx: &mut Tx<'_>, id: i64, run: Run, code: Fail) -> Result<i64> {
    let now = tx.now;
    let mut errors = run.errors.unwrap_or_default();
    history::push(&mut errors, run.attempt, now, code.message());
    let (state, rank) = match code {
        Fail::Dead(_) => (DEAD, ms(now)),
        _ if run.attempt >= run.max_attempts => (DEAD, ms(now)),
        Fail::At(at, _) if at > now => (SCHEDULED, ms(at)),
        _ => (
            READY,
            tx.fresh(1)? + band(run.priority.unwrap_or(DEFAULT_PRIORITY)),
        ),
    };
    tx.conn
        .prepare_cached(
            "UPDATE jobs SET state = ?2, rank = ?3, token = NULL, errors = ?4, progress = NULL
             WHERE id = ?1",
        )
        .and_then(|mut s| s.execute(params![id, state, rank, errors]))
        .map_err(db)?;
    if state == DEAD {
        unique::left(tx, run.queue, id, run.uniq.as_deref(), Left::Finished)?;
    } else {
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

/// What a call must look after beyond a plain job's rows, asked once per call (one
/// statement) and only by calls that may need it: whether any unique key is held (a
/// completion may free one) and whether anyone waits on a job (an end must be marked and
/// signalled).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Gates {
    pub(crate) keys: bool,
    pub(crate) waiters: bool,
}

impl Gates {
    pub(crate) fn read(tx: &Tx<'_>) -> Result<Gates> {
        tx.conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM uniques), EXISTS (SELECT 1 FROM waiters)")
            .and_then(|mut s| {
                s.query_row([], |r| {
                    Ok(Gates {
                        keys: r.get(0)?,
                        waiters: r.get(1)?,
                    })
                })
            })
            .map_err(db)
    }
}

/// The gates of this call, read on first use.
fn gates(tx: &Tx<'_>, cached: &mut Option<Gates>) -> Result<Gates> {
    match cached {
        Some(g) => Ok(*g),
        None => Ok(*cached.insert(Gates::read(tx)?)),
    }
}

/// Until when job `id` is waited on, if it is. Only asked where [`Gates::waiters`] says
/// someone waits.
fn waited(tx: &Tx<'_>, id: i64) -> Result<Option<i64>> {
    tx.conn
        .prepare_cached("SELECT until_ms FROM waiters WHERE job = ?1")
        .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
        .map_err(db)
}

/// Job `id` ended (completed, dead, cancelled or deleted): if someone waits on it, its
/// wait is over — the waiter row goes and the end is signalled after commit, here and
/// (through the `ends` counter, bumped once per call by [`signal`]) to other processes.
/// Returns whether it was waited on.
pub(crate) fn end_wait(tx: &mut Tx<'_>, id: i64) -> Result<bool> {
    let n = tx
        .conn
        .prepare_cached("DELETE FROM waiters WHERE job = ?1")
        .and_then(|mut s| s.execute([id]))
        .map_err(db)?;
    if n > 0 {
        tx.ended = true;
    }
    Ok(n > 0)
}

/// Bumps the counters other processes poll, once per call, for what the call raised:
/// a cancel of a running job, an end of a waited job.
pub(crate) fn signal(tx: &Tx<'_>) -> Result<()> {
    if !tx.cancelled && !tx.ended {
        return Ok(());
    }
    tx.conn
        .prepare_cached("UPDATE signals SET cancels = cancels + ?1, ends = ends + ?2 WHERE one = 1")
        .and_then(|mut s| s.execute([tx.cancelled as i64, tx.ended as i64]))
        .map_err(db)?;
    Ok(())
}

/// How long a completion's empty result is kept for a waiter past its wait, at least: a
/// waiter woken at the end of its wait still finds it when it looks.
const WAITED_GRACE_MS: u64 = 60_000;

/// Keeps what job `id`, still running under `token`, completed with, apart from its row:
/// `value` for the queue's result TTL, and for a waiter an empty result at least until
/// its wait is over. Run just before the statement that completes the job, under the
/// same conditions, so it writes nothing if that one finds nothing.
fn keep_result(
    tx: &Tx<'_>,
    id: i64,
    token: &str,
    ttl_ms: u64,
    value: Option<&[u8]>,
    waited_until: Option<i64>,
) -> Result<()> {
    let value = value.filter(|_| ttl_ms > 0);
    let mut ends = value.map(|_| ms(tx.now.saturating_add(ttl_ms)));
    if let Some(until) = waited_until {
        let mark =
            ms(tx.now.saturating_add(ttl_ms)).max(until.saturating_add(WAITED_GRACE_MS as i64));
        ends = Some(ends.map_or(mark, |e| e.max(mark)));
    }
    let Some(ends) = ends else {
        return Ok(());
    };
    tx.conn
        .prepare_cached(
            "INSERT OR REPLACE INTO results
                 (job, queue, kind, attempt, max_attempts, enqueued_ms, done_ms, ends_ms, value)
             SELECT id, queue, kind, attempt, max_attempts, enqueued_ms, ?3, ?4, ?5 FROM jobs
             WHERE id = ?1 AND token = ?2 AND state = 2",
        )
        .and_then(|mut s| {
            s.execute(params![
                id,
                token,
                ms(tx.now),
                ends,
                value.map(String::from_utf8_lossy)
            ])
        })
        .map_err(db)?;
    Ok(())
}

pub(crate) fn finish(tx: &mut Tx<'_>, outcomes: &[(Lease, Outcome)]) -> Result<Vec<bool>> {
    let mut result = Vec::with_capacity(outcomes.len());
    let mut settled: HashMap<&str, i64> = HashMap::new();
    let mut retention: HashMap<&QueueName, QueueConfig> = HashMap::new();
    let mut trims: Vec<(i64, i64, u64, u64)> = Vec::new();
    let mut cached: Option<Gates> = None;
    for (lease, outcome) in outcomes {
        let Some(id) = row_id(&lease.id) else {
            result.push(false);
            continue;
        };
        let token = &*lease.token;
        let ok = match outcome {
            Outcome::Completed | Outcome::CompletedWith { .. } => {
                let config = match retention.get(&lease.queue) {
                    Some(c) => *c,
                    None => {
                        let (q, c) = match tx.settings(&lease.queue)? {
                            Some((q, row)) => (q, row.config),
                            None => (-1, QueueConfig::default()),
                        };
                        retention.insert(&lease.queue, c);
                        if c.completed_max > 0 {
                            trims.push((q, COMPLETED, c.completed_max, c.completed_max_age_ms));
                        }
                        c
                    }
                };
                let keep = config.completed_max > 0;
                // Where keys are held, the row's key comes back with it, so a finished key
                // is given back; elsewhere the plain statements. Measured with bench/ab.sh:
                // RETURNING on every completion (and the claim reading the key) took the
                // process rate to 0.82 of release 0.1's; without them, 0.96.
                let gates = gates(tx, &mut cached)?;
                let keyed = gates.keys;
                // A value, or a waiter: kept apart from the row. A plain completion with
                // no waiter in the file writes nothing more than before.
                let value = match outcome {
                    Outcome::CompletedWith { result } => Some(&result[..]),
                    _ => None,
                };
                let waited_until = if gates.waiters { waited(tx, id)? } else { None };
                if value.is_some() || waited_until.is_some() {
                    keep_result(tx, id, token, config.result_ttl_ms, value, waited_until)?;
                }
                let done: Option<(i64, Option<String>)> = match (keep, keyed) {
                    (true, true) => tx
                        .conn
                        .prepare_cached(
                            "UPDATE jobs SET state = 4, rank = ?3, token = NULL, progress = NULL
                             WHERE id = ?1 AND token = ?2 AND state = 2 RETURNING queue, uniq",
                        )
                        .and_then(|mut s| {
                            s.query_row(params![id, token, ms(tx.now)], |r| {
                                Ok((r.get(0)?, r.get(1)?))
                            })
                            .optional()
                        }),
                    (false, true) => tx
                        .conn
                        .prepare_cached(
                            "DELETE FROM jobs WHERE id = ?1 AND token = ?2 AND state = 2
                             RETURNING queue, uniq",
                        )
                        .and_then(|mut s| {
                            s.query_row(params![id, token], |r| Ok((r.get(0)?, r.get(1)?)))
                                .optional()
                        }),
                    (true, false) => tx
                        .conn
                        .prepare_cached(
                            "UPDATE jobs SET state = 4, rank = ?3, token = NULL, progress = NULL
                             WHERE id = ?1 AND token = ?2 AND state = 2",
                        )
                        .and_then(|mut s| s.execute(params![id, token, ms(tx.now)]))
                        .map(|n| (n == 1).then_some((-1, None))),
                    (false, false) => tx
                        .conn
                        .prepare_cached(
                            "DELETE FROM jobs WHERE id = ?1 AND token = ?2 AND state = 2",
                        )
                        .and_then(|mut s| s.execute(params![id, token]))
                        .map(|n| (n == 1).then_some((-1, None))),
                }
                .map_err(db)?;
                if let Some((q, Some(uniq))) = &done {
                    unique::left(tx, *q, id, Some(uniq), Left::Finished)?;
                }
                if done.is_some() && waited_until.is_some() {
                    end_wait(tx, id)?;
                }
                done.is_some()
            }
            failed => match running(tx, id, token)? {
                None => false,
                Some(run) => {
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
                    let q = run.queue;
                    if fail(tx, id, run, code)? == DEAD {
                        if gates(tx, &mut cached)?.waiters {
                            end_wait(tx, id)?;
                        }
                        let c = read::queue_row(tx.conn, q)?.unwrap_or_default().config;
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
    signal(tx)?;
    Ok(result)
}

pub(crate) fn release(tx: &mut Tx<'_>, leases: &[Lease]) -> Result<Vec<bool>> {
    let mut result = Vec::with_capacity(leases.len());
    for lease in leases {
        let Some(id) = row_id(&lease.id) else {
            result.push(false);
            continue;
        };
        // To the head of ready at its priority, the attempt not charged: the latest
        // released goes first.
        let rank = -tx.fresh(1)?;
        let n = tx
            .conn
            .prepare_cached(concat!(
                "UPDATE jobs SET state = 0, rank = ?3 + ",
                band_sql!(),
                ", token = NULL, attempt = attempt - 1, progress = NULL
                 WHERE id = ?1 AND token = ?2 AND state = 2"
            ))
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

/// Keeps a finished state (dead, completed or cancelled) within its count and age, oldest
/// first.
pub(crate) fn trim(tx: &Tx<'_>, q: i64, state: i64, max: u64, max_age_ms: u64) -> Result<()> {
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
    let Some((q, row)) = tx.settings(queue)? else {
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
    let mut cached = None;
    for (token, ids) in &leases {
        for id in ids.split(',').filter_map(|s| s.parse::<i64>().ok()) {
            if let Some(run) = running(tx, id, token)? {
                if fail(tx, id, run, Fail::At(0, LEASE_EXPIRED))? == DEAD
                    && gates(tx, &mut cached)?.waiters
                {
                    end_wait(tx, id)?;
                }
                expired += 1;
            }
        }
        tx.conn
            .prepare_cached("DELETE FROM leases WHERE token = ?1")
            .and_then(|mut s| s.execute([token]))
            .map_err(db)?;
    }
    let c = row.config;
    trim(tx, q, DEAD, c.dead_max, c.dead_max_age_ms)?;
    trim(tx, q, COMPLETED, c.completed_max, c.completed_max_age_ms)?;
    // Cancelled jobs are kept as dead ones are, counted apart.
    trim(tx, q, CANCELLED, c.dead_max, c.dead_max_age_ms)?;
    unique::expire(tx, q)?;
    for sql in [
        "DELETE FROM results WHERE job IN
            (SELECT job FROM results WHERE queue = ?1 AND ends_ms <= ?2 LIMIT ?3)",
        "DELETE FROM waiters WHERE job IN
            (SELECT job FROM waiters WHERE queue = ?1 AND until_ms <= ?2 LIMIT ?3)",
    ] {
        tx.conn
            .prepare_cached(sql)
            .and_then(|mut s| s.execute([q, ms(tx.now), STEP]))
            .map_err(db)?;
    }
    signal(tx)?;
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

/// Registers a wait on job `id` of `queue` until `until_ms`. Returns the `ends` counter
/// as of this commit, to compare later reads with — or `None` when the job is not
/// running or due to run (unknown, or already ended): nothing to wait for.
pub(crate) fn wait_job(
    tx: &mut Tx<'_>,
    queue: &QueueName,
    id: &JobId,
    until_ms: u64,
) -> Result<Option<i64>> {
    let (Some(q), Some(id)) = (tx.queue(queue)?, row_id(id)) else {
        return Ok(None);
    };
    let live: bool = tx
        .conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE id = ?1 AND queue = ?2 AND state IN (0, 1, 2))",
        )
        .and_then(|mut s| s.query_row([id, q], |r| r.get(0)))
        .map_err(db)?;
    if !live {
        return Ok(None);
    }
    // Several waiters of one job (in any process) share its row, kept for the longest.
    tx.conn
        .prepare_cached(
            "INSERT INTO waiters (job, queue, until_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (job) DO UPDATE SET until_ms = max(until_ms, excluded.until_ms)",
        )
        .and_then(|mut s| s.execute([id, q, ms(until_ms)]))
        .map_err(db)?;
    read::signals(tx.conn).map(|(_, ends)| Some(ends))
}

pub(crate) fn set_paused(tx: &mut Tx<'_>, queue: &QueueName, paused: bool) -> Result<()> {
    let (q, _) = tx.ensure(queue)?;
    tx.conn
        .prepare_cached("UPDATE queues SET paused = ?2 WHERE id = ?1")
        .and_then(|mut s| s.execute(params![q, paused]))
        .map_err(db)?;
    // Resumed: wake idle workers, who would otherwise sleep until their wait times out.
    tx.wake = !paused;
    Ok(())
}

pub(crate) fn configure(tx: &mut Tx<'_>, queue: &QueueName, c: &QueueConfig) -> Result<()> {
    let (q, _) = tx.ensure(queue)?;
    tx.conn
        .prepare_cached(
            "UPDATE queues SET max_len = ?2, dead_max = ?3, dead_max_age_ms = ?4,
                               completed_max = ?5, completed_max_age_ms = ?6,
                               result_ttl_ms = ?7
             WHERE id = ?1",
        )
        .and_then(|mut s| {
            s.execute(params![
                q,
                ms(c.max_len),
                ms(c.dead_max),
                ms(c.dead_max_age_ms),
                ms(c.completed_max),
                ms(c.completed_max_age_ms),
                ms(c.result_ttl_ms)
            ])
        })
        .map_err(db)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_band_in_sql_is_the_band() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for priority in [Some(0), Some(1), None, Some(50), Some(99), Some(100)] {
            let sql: i64 = conn
                .query_row(
                    concat!("SELECT ", band_sql!(), " FROM (SELECT ?1 AS priority)"),
                    [priority],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(
                sql,
                band(priority.unwrap_or(DEFAULT_PRIORITY)),
                "{priority:?}"
            );
        }
        // Sequence numbers below 2^55, released ones (negated) included, keep each band's
        // ranks apart from the next band's, and within an i64.
        let seq = (1 << 55) - 1;
        assert!(band(100) + seq < band(99) - seq);
        assert!(band(1) + seq < band(0) - seq);
        assert!(band(0).checked_add(seq).is_some() && band(100).checked_sub(seq).is_some());
    }
}
