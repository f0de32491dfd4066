//! The `Store` trait: the batch-oriented operations every store implements.
//!
//! A store is a thin translation of these operations into its engine. Each operation works
//! on a batch, because throughput comes from amortising round trips: a worker claims up to
//! its free slots in one call, renews all its leases in one call, and reports many
//! completions in one call. The conformance suite (`taskyard-conformance`) states what each
//! operation must do; a store is done when the whole suite passes on it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::schedule::StoredSchedule;
use crate::{Enqueued, JobId, JobInfo, JobState, NewJob, QueueName, Result};

/// The token of one claim call, shared by the jobs it claimed: minted here, in the core,
/// so every store gets tokens of one format and only judges whether a token still holds.
///
/// The format is `owner.instance.n`: the claimer's name (`[A-Za-z0-9_-]`, at most 64
/// characters), a random number per process and a counter per process — unique across
/// processes and claims, and free of the `|` and `,` that stores use as separators.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseToken(Arc<str>);

impl LeaseToken {
    /// A new token for a claim by `owner`.
    pub fn mint(owner: &str) -> Result<Self> {
        static INSTANCE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let ok = !owner.is_empty()
            && owner.len() <= 64
            && owner
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return Err(crate::Error::InvalidOption(format!(
                "lease token owner {owner:?} must be 1-64 characters of [A-Za-z0-9_-]"
            )));
        }
        let instance = *INSTANCE.get_or_init(rand::random);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(LeaseToken(Arc::from(format!("{owner}.{instance:08x}.{n}"))))
    }

    /// The token as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for LeaseToken {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for LeaseToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A claimed job's proof of ownership: its id, queue and the lease token issued at claim.
///
/// The store rejects every later transition that names a token other than the current one,
/// so a worker paused past its lease cannot complete a job another worker now holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lease {
    /// The job's queue.
    pub queue: QueueName,
    /// The job's id.
    pub id: JobId,
    /// The token of the claim: one per claim call, shared by the jobs it claimed.
    pub token: LeaseToken,
}

/// A job handed to a worker by [`Store::claim`].
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    /// The lease that proves this claim.
    pub lease: Lease,
    /// The kind name.
    pub kind: Arc<str>,
    /// The JSON payload.
    pub payload: Bytes,
    /// This attempt's number, 1-based (attempts are counted at claim).
    pub attempt: u32,
    /// Attempts in all.
    pub max_attempts: u32,
    /// The job's own backoff, if it was enqueued with one.
    pub backoff: Option<crate::Backoff>,
    /// When it was enqueued, Unix ms (store time).
    pub enqueued_at_ms: u64,
    /// The job's own timeout, if it was enqueued with one; else the worker's for its
    /// kind.
    pub timeout: Option<Duration>,
}

/// What a heartbeat found, per lease token and per job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Beat {
    /// Per lease asked about (one per claim token), whether it is still held and was
    /// renewed.
    pub held: Vec<bool>,
    /// Jobs of these claims that were cancelled while they ran: their outcomes will be
    /// refused, so their handlers may stop. A job may be reported by more than one
    /// heartbeat.
    pub cancelled: Vec<(QueueName, JobId)>,
}

/// What came of a claim.
#[derive(Debug, Clone, Default)]
pub struct Claim {
    /// The jobs claimed, at most the number asked for.
    pub jobs: Vec<ClaimedJob>,
    /// How long until the next scheduled job of the queue is due, if there is one.
    pub next_due: Option<Duration>,
}

/// How a run ended, as reported to [`Store::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Success: the job is removed (or kept, if the queue retains completed jobs).
    Completed,
    /// Success with a value (JSON, at most [`MAX_RESULT_BYTES`](crate::MAX_RESULT_BYTES)):
    /// completed as [`Outcome::Completed`], and the value kept for the queue's result TTL
    /// ([`QueueConfig::result_ttl_ms`]), whatever the retention of completed jobs.
    CompletedWith {
        /// The handler's value, as JSON.
        result: Bytes,
    },
    /// Failure: retry after `delay_ms` (store time), or go to dead if the attempts are spent.
    Retry {
        /// The delay before the next attempt.
        delay_ms: u64,
        /// What went wrong, kept in the job's history.
        error: String,
    },
    /// Failure: retry at a Unix time in ms, or go to dead if the attempts are spent.
    RetryAt {
        /// When to try again.
        at_ms: u64,
        /// What went wrong.
        error: String,
    },
    /// Permanent failure: straight to dead, whatever attempts are left.
    Dead {
        /// What went wrong.
        error: String,
    },
}

/// Which jobs a bulk operation applies to, among those of the state it acts on (dead
/// for a redrive or purge; scheduled for run-now; ready and scheduled for a delete).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobFilter {
    /// These jobs.
    Ids(Vec<JobId>),
    /// Every job of this kind.
    Kind(String),
    /// Every job.
    All,
}

/// The name release 0.1 gave [`JobFilter`], when it applied to dead jobs only.
pub type DeadFilter = JobFilter;

/// Why a bulk step passed over a job it was asked to act on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "why", content = "detail")]
#[non_exhaustive]
pub enum Skip {
    /// No job of the queue has this id (never enqueued, or gone: deleted, purged, or
    /// completed without retention).
    NotFound,
    /// The job is in a state the operation does not act on (running, completed, already
    /// ready for a run-now, ...).
    InState(JobState),
    /// A redrive left the dead job dead: another job holds its unique key.
    KeyHeld(JobId),
}

/// A job a bulk step was asked about and did not act on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    /// The job.
    pub id: JobId,
    /// Why.
    #[serde(flatten)]
    pub why: Skip,
}

/// Where a walk over a set of jobs resumes: each page or step of the admin API returns
/// one, and the next call takes it back. Opaque to callers — a store writes its own
/// position in it (a rank and an id, a score and a member) — so every listing, search and
/// bulk operation has one shape, and a later filter is a new argument, not a new API.
///
/// A walk sees every job that stays in the set from its start to its end once; jobs that
/// enter or leave the set meanwhile may or may not be seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Cursor(String);

impl Cursor {
    /// The start of a set.
    pub fn start() -> Self {
        Cursor(String::new())
    }

    /// A cursor as a store writes it, or as a user passes one back (the CLI's `--after`).
    pub fn new(position: impl Into<String>) -> Self {
        Cursor(position.into())
    }

    /// Whether this is the start of a set.
    pub fn is_start(&self) -> bool {
        self.0.is_empty()
    }

    /// The cursor as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// The jobs, in the set's order.
    pub jobs: Vec<JobInfo>,
    /// Where the next page starts; `None` at the end of the set.
    pub next: Option<Cursor>,
}

/// One bounded step of a bulk operation (redrive, purge, run-now, delete).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Step {
    /// Jobs the step acted on.
    pub done: u64,
    /// Where the next step resumes; `None` when nothing is left.
    pub next: Option<Cursor>,
    /// Jobs named by id the step did not act on, and jobs a redrive left dead because
    /// another job holds their unique key.
    pub skipped: Vec<Skipped>,
}

/// Counts per state of one queue, and its settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueStats {
    /// The queue.
    pub queue: String,
    /// Jobs waiting for a worker.
    pub ready: u64,
    /// Jobs due in the future.
    pub scheduled: u64,
    /// Jobs leased by a worker.
    pub running: u64,
    /// Completed jobs retained.
    pub completed: u64,
    /// Jobs in the dead set.
    pub dead: u64,
    /// Cancelled jobs retained.
    pub cancelled: u64,
    /// Whether claims are paused.
    pub paused: bool,
}

/// Settings of one queue, kept in the store so every worker and the CLI agree.
///
/// Defaults: no max length, dead jobs (and, apart, cancelled jobs) kept up to 10,000
/// and 30 days, completed jobs not kept, results kept 24 hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct QueueConfig {
    /// Ready plus scheduled jobs past which enqueue fails with `QueueFull`; 0 = no limit.
    pub max_len: u64,
    /// Dead jobs kept; the oldest are dropped past this count.
    pub dead_max: u64,
    /// Dead jobs older than this are dropped (ms).
    pub dead_max_age_ms: u64,
    /// Completed jobs kept; 0 removes them at once.
    pub completed_max: u64,
    /// Completed jobs older than this are dropped (ms).
    pub completed_max_age_ms: u64,
    /// How long a handler's returned value is kept after its job completed (ms); 0 keeps
    /// none. Kept apart from the job, so a queue that keeps no completed jobs still
    /// answers [`Client::result`](crate::Client::result).
    pub result_ttl_ms: u64,
}

impl QueueConfig {
    /// The settings by name, in a fixed order: what a store writes and checks.
    pub fn settings(&self) -> [(&'static str, u64); 6] {
        [
            ("max_len", self.max_len),
            ("dead_max", self.dead_max),
            ("dead_max_age_ms", self.dead_max_age_ms),
            ("completed_max", self.completed_max),
            ("completed_max_age_ms", self.completed_max_age_ms),
            ("result_ttl_ms", self.result_ttl_ms),
        ]
    }

    /// Refuses a setting above `max`, the largest `store` keeps exactly, rather than
    /// have the store cut it down or round it: `Error::InvalidOption` naming the setting
    /// and the range.
    pub fn check_at_most(&self, max: u64, store: &str) -> crate::Result<()> {
        match self.settings().into_iter().find(|(_, v)| *v > max) {
            Some((name, value)) => Err(crate::Error::InvalidOption(format!(
                "queue setting {name} = {value} is out of range: {store} keeps 0 to {max}"
            ))),
            None => Ok(()),
        }
    }
}

/// How long results are kept unless a queue says otherwise: 24 hours (ms).
pub const DEFAULT_RESULT_TTL_MS: u64 = 24 * 3600 * 1000;

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_len: 0,
            dead_max: 10_000,
            dead_max_age_ms: 30 * 24 * 3600 * 1000,
            completed_max: 0,
            completed_max_age_ms: 24 * 3600 * 1000,
            result_ttl_ms: DEFAULT_RESULT_TTL_MS,
        }
    }
}

/// What one maintenance pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Maintenance {
    /// Scheduled jobs made ready.
    pub promoted: u64,
    /// Expired leases returned to ready (or dead).
    pub expired: u64,
}

/// The operations a store implements. Every method works on a batch where it can.
///
/// One trait in three sections — the worker protocol (enqueue to maintain), inspection
/// (now to job) and administration (redrive to configure) — because every store must
/// provide all three and the API reaches them through one `Arc<dyn Store>`; applications
/// call them through [`Client`](crate::Client) and [`Worker`](crate::Worker), not here.
/// Inspection and administration walk sets with a [`Cursor`], in bounded steps.
///
/// Times are the store's: lease deadlines and due times come from the store's clock,
/// never from the caller's, so workers with skewed clocks agree.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // The worker protocol.

    /// Adds jobs to a queue atomically: all are written, or (on `QueueFull`) none.
    /// Answers in input order with each job's id and whether it was a duplicate: a job
    /// whose unique key another job holds (one queued before, or an earlier one of the
    /// same batch) is not added, and answers with the holder's id — except that a
    /// debounced duplicate of a scheduled holder replaces the holder's payload and due
    /// time. Only new jobs count toward the max length.
    async fn enqueue_report(&self, queue: &QueueName, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>>;

    /// [`Store::enqueue_report`], answering with the ids alone.
    async fn enqueue(&self, queue: &QueueName, jobs: Vec<NewJob>) -> Result<Vec<JobId>> {
        Ok(self
            .enqueue_report(queue, jobs)
            .await?
            .into_iter()
            .map(|e| e.id)
            .collect())
    }

    /// Claims up to `max` ready jobs, highest priority first and oldest first within a
    /// priority: counts an attempt on each and leases
    /// them for `lease` under `token` (minted for this call). Due scheduled jobs are
    /// promoted first. A paused queue yields nothing.
    ///
    /// A token already in use names an earlier claim: the call is its retry after the
    /// answer was lost (a cut connection), so it answers with the jobs that token still
    /// holds, their lease renewed for `lease`, and claims nothing more — no attempt is
    /// counted twice and no other job is handed out.
    async fn claim(
        &self,
        queue: &QueueName,
        max: usize,
        lease: Duration,
        token: &LeaseToken,
    ) -> Result<Claim>;

    /// Waits until work may be ready on one of `queues` (an enqueue, a resume, a claim
    /// that left jobs behind) or `timeout` passes. Spurious returns are allowed.
    async fn wait(&self, queues: &[QueueName], timeout: Duration) -> Result<()>;

    /// Extends the leases by `lease` from now, and records the latest progress of the
    /// jobs in `progress` that are still held under their lease's token. Answers, per
    /// lease, whether it was still held (`false`: stale token, the jobs are no longer
    /// this worker's), and which jobs of these claims were cancelled while running. A
    /// lease belongs to a claim call, so the worker sends each token once, whatever the
    /// number of jobs it claimed.
    async fn heartbeat(
        &self,
        leases: &[Lease],
        lease: Duration,
        progress: &[(Lease, Bytes)],
    ) -> Result<Beat>;

    /// Waits until a running job of one of `queues` may have been cancelled (so a worker
    /// holding jobs there heartbeats at once to learn which), or `timeout` passes.
    /// Spurious returns are allowed; one signal wakes every waiting worker.
    async fn wait_cancel(&self, queues: &[QueueName], timeout: Duration) -> Result<()>;

    /// Waits until job `id` of `queue` may have ended (completed, dead or cancelled), or
    /// `timeout` passes; spurious returns are allowed. While it waits the job's end is
    /// signalled to it, and a completion without a value keeps an empty result for the
    /// result TTL, so a waiter that missed the moment still learns the job completed.
    async fn wait_job(&self, queue: &QueueName, id: &JobId, timeout: Duration) -> Result<()>;

    /// Records how runs ended. Returns, per item, whether its job was still held under
    /// its lease's token (a job released or failed meanwhile is not, even while other
    /// jobs of the same claim run); a stale item changes nothing. A call retried with the
    /// same outcomes after its answer was lost answers as the first did (a store whose
    /// calls can lose answers remembers such calls), so `false` means the store refused
    /// the outcome, never that it applied it before.
    async fn finish(&self, outcomes: &[(Lease, Outcome)]) -> Result<Vec<bool>>;

    /// Gives leases back without charging the attempt: the jobs return to the head of
    /// ready. Used at shutdown for jobs that did not finish in the grace period.
    async fn release(&self, leases: &[Lease]) -> Result<Vec<bool>>;

    /// Promotes due scheduled jobs and returns expired leases to ready (or dead once
    /// their attempts are spent); trims dead and completed jobs past retention.
    /// Idempotent and safe to run from every worker at once.
    async fn maintain(&self, queue: &QueueName) -> Result<Maintenance>;

    // Inspection.

    /// The store's current time, Unix ms.
    async fn now_ms(&self) -> Result<u64>;

    /// The queues that have been used.
    async fn queues(&self) -> Result<Vec<QueueName>>;

    /// Counts per state of one queue.
    async fn stats(&self, queue: &QueueName) -> Result<QueueStats>;

    /// A page of at most `limit` jobs of one queue in one state, after `after`, in that
    /// state's order (ready and scheduled: next first; running: earliest lease end
    /// first; dead and completed: newest first). A cursor this store did not write is
    /// `Error::InvalidOption`.
    async fn list(
        &self,
        queue: &QueueName,
        state: JobState,
        after: &Cursor,
        limit: u64,
    ) -> Result<Page>;

    /// One job by id, in whatever state it is.
    async fn job(&self, queue: &QueueName, id: &JobId) -> Result<Option<JobInfo>>;

    /// One job by its id alone, in whichever queue and state. Ids are unique per store;
    /// an id release 0.1 gave in two queues (it numbered Redis jobs per queue) is found in
    /// the first of them by name — ask [`Store::job`] with the queue to tell them apart.
    /// By default this asks each queue in turn; a store with an index by id overrides it.
    async fn find(&self, id: &JobId) -> Result<Option<JobInfo>> {
        for queue in self.queues().await? {
            if let Some(job) = self.job(&queue, id).await? {
                return Ok(Some(job));
            }
        }
        Ok(None)
    }

    // Administration.

    /// One step of a redrive: moves at most [`support::STEP`] dead jobs matching `filter`
    /// (from `after` on) back to ready with a fresh count of attempts (their error
    /// history is kept), examining a bounded number of them. `JobFilter::Ids` carries at
    /// most `STEP` ids. [`Client::redrive`](crate::Client::redrive) walks the whole set.
    /// A dead job with a unique key (other than a period) takes its key again; while
    /// another job holds the key it stays dead and is reported as skipped.
    async fn redrive(&self, queue: &QueueName, filter: &JobFilter, after: &Cursor) -> Result<Step>;

    /// One step of a purge: deletes dead jobs, as [`Store::redrive`] moves them.
    async fn purge(&self, queue: &QueueName, filter: &JobFilter, after: &Cursor) -> Result<Step>;

    /// One step of a run-now: makes scheduled jobs matching `filter` ready at once, in
    /// bounded steps as [`Store::redrive`]; they keep their priority and attempts. Named
    /// jobs that are not scheduled are reported as skipped, with their state.
    async fn run_now(&self, queue: &QueueName, filter: &JobFilter, after: &Cursor) -> Result<Step>;

    /// One step of a delete: removes ready and scheduled jobs matching `filter`, in
    /// bounded steps as [`Store::redrive`], freeing their unique keys (a period key runs
    /// its period out: it counts enqueues, whatever became of the job). Never proportional
    /// to the backlog for one job. Named jobs in another state are reported as skipped
    /// (a running job is not stopped; a dead one is purged, not deleted).
    async fn delete(&self, queue: &QueueName, filter: &JobFilter, after: &Cursor) -> Result<Step>;

    /// One step of a cancel: ends ready, scheduled and running jobs matching `filter` in
    /// the state `cancelled`, in bounded steps as [`Store::redrive`], freeing their unique
    /// keys (a period key runs its period out). Never proportional to the backlog for one
    /// job. A running job's lease is ended: its outcome is refused, it is never retried,
    /// the heartbeats of its claim report it and workers waiting in
    /// [`Store::wait_cancel`] are woken. Named jobs already finished (completed, dead,
    /// cancelled) are reported as skipped, with their state.
    async fn cancel(&self, queue: &QueueName, filter: &JobFilter, after: &Cursor) -> Result<Step>;

    /// One step of deleting a whole queue: its jobs in every state, their unique keys,
    /// its settings and its name; `next` is `None` once nothing of it is left. Outcomes
    /// of jobs that were running are refused afterwards (their leases are gone). An
    /// enqueue afterwards starts the queue afresh.
    async fn delete_queue(&self, queue: &QueueName, after: &Cursor) -> Result<Step>;

    /// Pauses (no claims) or resumes a queue. Enqueues still succeed while paused.
    async fn set_paused(&self, queue: &QueueName, paused: bool) -> Result<()>;

    /// The queue's settings.
    async fn config(&self, queue: &QueueName) -> Result<QueueConfig>;

    /// Changes the queue's settings.
    async fn configure(&self, queue: &QueueName, config: &QueueConfig) -> Result<()>;

    // Periodic jobs (see the `schedule` module). A queue's schedules are few (declared
    // by the application), so they are read whole.

    /// The schedules of a queue, by name.
    async fn schedules(&self, queue: &QueueName) -> Result<Vec<StoredSchedule>>;

    /// Stores `schedule` (definition, next and last tick, paused) if the stored one's
    /// revision is still `schedule.rev` (0: none is stored), and answers whether it did;
    /// the stored revision is then one higher. Registers the queue's name, as an
    /// enqueue does.
    async fn put_schedule(&self, queue: &QueueName, schedule: &StoredSchedule) -> Result<bool>;

    /// Removes a schedule; answers whether there was one.
    async fn remove_schedule(&self, queue: &QueueName, name: &str) -> Result<bool>;

    /// Fires a schedule: in one atomic step, enqueues `jobs` (as [`Store::enqueue`]; none
    /// when missed ticks are skipped) and moves the schedule to `next_ms` with `last_ms`
    /// its last tick and the last of the jobs its last job — if its stored revision is
    /// still `rev` and it is not paused. Answers the jobs' ids, or `None` when it was not
    /// (another worker fired that tick, or the schedule changed, was paused or removed):
    /// then nothing was written. An enqueue's refusals (`QueueFull`, `StoreFull`,
    /// `MemoryFull`) leave the schedule unchanged too.
    async fn fire(
        &self,
        queue: &QueueName,
        name: &str,
        rev: u64,
        next_ms: u64,
        last_ms: Option<u64>,
        jobs: Vec<NewJob>,
    ) -> Result<Option<Vec<JobId>>>;
}

/// What a store implementation shares with every other, so no store writes it again.
/// Not for applications.
pub mod support {
    /// The error recorded for an attempt whose lease expired.
    pub const LEASE_EXPIRED: &str = "lease expired: the worker died or stalled";

    /// The most jobs one redrive or purge step moves: stores work through large dead sets
    /// in steps this size, letting other clients in between.
    pub const STEP: usize = 1000;

    /// A job's error history as stores keep it: one line per failed attempt,
    /// `attempt\tat_ms\tmessage\n`, oldest first.
    pub mod history {
        use crate::AttemptError;

        /// One line, bounded: a message is kept per attempt, so it must stay small. Tabs and
        /// line breaks become spaces; past 1 KiB it is cut at a character boundary.
        pub fn clean(msg: &str) -> String {
            let mut s: String = msg
                .chars()
                .map(|c| {
                    if matches!(c, '\n' | '\t' | '\r') {
                        ' '
                    } else {
                        c
                    }
                })
                .collect();
            if s.len() > 1024 {
                let mut cut = 1024;
                while !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                s.truncate(cut);
            }
            s
        }

        /// Appends one failed attempt to a history.
        pub fn push(history: &mut String, attempt: u32, at_ms: u64, msg: &str) {
            use std::fmt::Write;
            let _ = writeln!(history, "{attempt}\t{at_ms}\t{}", clean(msg));
        }

        /// Reads a history back; malformed lines are skipped.
        pub fn parse(raw: &[u8]) -> Vec<AttemptError> {
            String::from_utf8_lossy(raw)
                .lines()
                .filter_map(|line| {
                    let mut f = line.splitn(3, '\t');
                    Some(AttemptError {
                        attempt: f.next()?.parse().ok()?,
                        at_ms: f.next()?.parse().ok()?,
                        message: f.next()?.to_string(),
                    })
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LeaseToken;

    #[test]
    fn tokens_are_unique_and_their_owner_is_checked() {
        let a = LeaseToken::mint("worker-1").unwrap();
        let b = LeaseToken::mint("worker-1").unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("worker-1."));
        assert!(!a.contains('|') && !a.contains(','));
        for bad in ["", "a|b", "a,b", "a.b", "ü", &"x".repeat(65)] {
            assert!(LeaseToken::mint(bad).is_err(), "{bad:?} accepted");
        }
    }
}
