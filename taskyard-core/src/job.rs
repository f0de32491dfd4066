//! The job model: kinds, ids, queue names, states, enqueue options and what the store
//! shows of a job.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Serialize, de::DeserializeOwned};

use crate::{Error, Result, RetryPolicy};

/// The largest payload accepted, in bytes of JSON: 512 KiB.
///
/// Larger inputs belong in object storage, with the job carrying a reference; a queue that
/// accepts them makes every other job wait behind them.
pub const MAX_PAYLOAD_BYTES: usize = 512 * 1024;

/// The largest progress value a handler may report, in bytes of JSON: 4 KiB. Progress is
/// a figure or a short status, written with every heartbeat; anything bigger belongs in
/// the result.
pub const MAX_PROGRESS_BYTES: usize = 4 * 1024;

/// The largest result a handler may return, in bytes of JSON: 64 KiB. A result is kept
/// in the store for the queue's result TTL; larger outputs belong in object storage, with
/// the result carrying a reference.
pub const MAX_RESULT_BYTES: usize = 64 * 1024;

/// How long a run may take when neither its job nor its kind sets a timeout: 30 minutes,
/// as Faktory's default reservation. Sidekiq and BullMQ set no limit at all; a queue with
/// none lets one hung handler hold a slot and a lease forever, so taskyard sets a long one
/// that no ordinary job meets. See docs/semantics.md, "Timeouts".
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The longest timeout accepted: 7 days. A longer run is not a background job; the limit
/// keeps every store's field and the worker's clock arithmetic far from overflow.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Checks a run's timeout: at least 1 ms, at most [`MAX_TIMEOUT`]. Returns it in whole
/// milliseconds, as the stores keep it.
pub fn validate_timeout(timeout: Duration) -> Result<u64> {
    if timeout < Duration::from_millis(1) {
        return Err(Error::InvalidOption(format!(
            "timeout {timeout:?} is below 1 ms: give a run at least 1 ms (e.g. 30s)"
        )));
    }
    if timeout > MAX_TIMEOUT {
        return Err(Error::InvalidOption(format!(
            "timeout {timeout:?} is above the longest allowed, 7 days: split the work into \
             shorter jobs"
        )));
    }
    Ok(timeout.as_millis() as u64)
}

/// The lowest priority: runs after every other job of its queue.
pub const PRIORITY_MIN: u8 = 0;

/// The highest priority: runs before every other job of its queue.
pub const PRIORITY_MAX: u8 = 100;

/// The priority of a job enqueued without one: the middle of the range, so producers
/// that never heard of priorities keep working beside "urgent" (above 50) and "bulk"
/// (below 50) jobs. See docs/semantics.md, "Priorities".
pub const DEFAULT_PRIORITY: u8 = 50;

/// The longest unique key accepted, in bytes.
pub const MAX_UNIQUE_KEY_BYTES: usize = 256;

/// The longest period a unique key may be held for ([`UniqueMode::Period`]): 30 days.
pub const MAX_UNIQUE_PERIOD: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long a unique key keeps a second job of the same key out of its queue.
/// See docs/semantics.md, "Unique jobs".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase", tag = "mode", content = "period_ms")]
pub enum UniqueMode {
    /// While the job waits (scheduled or ready): the key is free once a worker claims it
    /// (Sidekiq's "until executing").
    Queued,
    /// Until the job is finished: completed, dead, deleted or its queue deleted. Retries
    /// keep the key (Sidekiq's "until executed", BullMQ's deduplication).
    Finished,
    /// For this long after the job was enqueued, whatever becomes of it: a throttle.
    #[serde(serialize_with = "millis")]
    Period(Duration),
    /// While the job is scheduled, a duplicate replaces its payload and due time (the
    /// latest wins); once it is due, the key is free.
    Debounce,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

impl UniqueMode {
    /// The mode's name, as the CLI and `--jsonl` spell it.
    pub fn as_str(&self) -> &'static str {
        match self {
            UniqueMode::Queued => "queued",
            UniqueMode::Finished => "finished",
            UniqueMode::Period(_) => "period",
            UniqueMode::Debounce => "debounce",
        }
    }

    /// A mode by name; `period` needs `period` (and only it takes one).
    pub fn parse(name: &str, period: Option<Duration>) -> Result<Self> {
        let mode = match (name, period) {
            ("queued", None) => UniqueMode::Queued,
            ("finished", None) => UniqueMode::Finished,
            ("debounce", None) => UniqueMode::Debounce,
            ("period", Some(p)) => UniqueMode::Period(p),
            ("period", None) => {
                return Err(Error::InvalidOption(
                    "unique mode period needs a period (e.g. 60s)".into(),
                ));
            }
            ("queued" | "finished" | "debounce", Some(_)) => {
                return Err(Error::InvalidOption(format!(
                    "unique mode {name} takes no period (only mode period does)"
                )));
            }
            _ => {
                return Err(Error::InvalidOption(format!(
                    "unknown unique mode {name:?} (one of queued, finished, period, debounce)"
                )));
            }
        };
        Ok(mode)
    }
}

/// A job's unique key and how long it holds it, scoped to the job's queue.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Unique {
    /// The key: 1 to [`MAX_UNIQUE_KEY_BYTES`] bytes, no control characters.
    pub key: String,
    /// How long it holds the key.
    #[serde(flatten)]
    pub mode: UniqueMode,
}

impl Unique {
    /// Checks a key and a mode.
    pub fn new(key: impl Into<String>, mode: UniqueMode) -> Result<Self> {
        let key = key.into();
        if key.is_empty() {
            return Err(Error::InvalidOption("unique key is empty".into()));
        }
        if key.len() > MAX_UNIQUE_KEY_BYTES {
            return Err(Error::InvalidOption(format!(
                "unique key of {} bytes is over the limit of {MAX_UNIQUE_KEY_BYTES} bytes: \
                 use a hash of what makes the job unique",
                key.len()
            )));
        }
        if key.chars().any(char::is_control) {
            return Err(Error::InvalidOption(format!(
                "unique key {key:?} has control characters"
            )));
        }
        if let UniqueMode::Period(p) = mode {
            if p < Duration::from_millis(1) {
                return Err(Error::InvalidOption(format!(
                    "unique period {p:?} is below 1 ms: give a period (e.g. 60s)"
                )));
            }
            if p > MAX_UNIQUE_PERIOD {
                return Err(Error::InvalidOption(format!(
                    "unique period {p:?} is above the longest allowed, 30 days"
                )));
            }
        }
        Ok(Unique { key, mode })
    }
}

/// Checks a priority: [`PRIORITY_MIN`] to [`PRIORITY_MAX`].
pub fn validate_priority(priority: i64) -> Result<u8> {
    if (PRIORITY_MIN as i64..=PRIORITY_MAX as i64).contains(&priority) {
        Ok(priority as u8)
    } else {
        Err(Error::InvalidOption(format!(
            "priority {priority} is out of range: {PRIORITY_MIN} (last) to {PRIORITY_MAX} \
             (first), {DEFAULT_PRIORITY} when not given"
        )))
    }
}

/// A unit of work: a serde type with a stable kind name.
///
/// The kind names the handler a worker runs for it; keep it stable across deploys, since
/// queued jobs carry it.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use taskyard_core::{Job, RetryPolicy};
///
/// #[derive(Serialize, Deserialize)]
/// struct Resize { image: String, width: u32 }
///
/// impl Job for Resize {
///     const KIND: &'static str = "resize";
///     fn retry_policy() -> RetryPolicy { RetryPolicy::default().max_attempts(3) }
/// }
/// ```
pub trait Job: Serialize + DeserializeOwned + Send + 'static {
    /// The kind name, `[A-Za-z0-9_.:-]{1,128}`.
    const KIND: &'static str;

    /// The retry policy for jobs of this kind, unless a job is enqueued with its own.
    /// Defaults to [`RetryPolicy::default`].
    fn retry_policy() -> RetryPolicy {
        RetryPolicy::default()
    }
}

/// A job's id, unique within its queue. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(Arc<str>);

impl serde::Serialize for JobId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl JobId {
    /// Wraps an id as a store produced it. From a `&str`, one allocation (a worker makes
    /// one id per claimed job).
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        JobId(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // pad, not write_str: honours width and alignment in tables.
        f.pad(&self.0)
    }
}

/// A validated queue name: `[A-Za-z0-9_.-]{1,64}`. Cheap to clone.
///
/// ```
/// use taskyard_core::QueueName;
/// assert!(QueueName::new("emails").is_ok());
/// assert!(QueueName::new("bad{name}").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueName(Arc<str>);

impl QueueName {
    /// Checks and wraps a queue name.
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let reason = check_name(&name, 64, |c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
        });
        match reason {
            None => Ok(QueueName(Arc::from(name))),
            Some(reason) => Err(Error::InvalidQueue { name, reason }),
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for QueueName {
    /// The queue `default`.
    fn default() -> Self {
        QueueName(Arc::from("default"))
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // pad, not write_str: honours width and alignment in tables.
        f.pad(&self.0)
    }
}

/// Checks a job kind name: `[A-Za-z0-9_.:-]{1,128}`.
pub fn validate_kind(kind: &str) -> Result<()> {
    let reason = check_name(kind, 128, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')
    });
    match reason {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidKind {
            kind: kind.into(),
            reason,
        }),
    }
}

fn check_name(name: &str, max: usize, allowed: impl Fn(char) -> bool) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.len() > max {
        Some("it is too long")
    } else if !name.chars().all(allowed) {
        Some("it has characters outside the allowed set")
    } else {
        None
    }
}

/// Where a job stands.
///
/// ```text
///  enqueue ──► scheduled ──(due)──► ready ──(claim)──► running ──► completed
///     │                               ▲                   │
///     └───────────(no delay)──────────┘                   ├──(retry)──► scheduled
///                                                         ├──(lease expired)──► ready
///                                                         └──(attempts spent, permanent)──► dead ──(redrive)──► ready
///  scheduled, ready, running ──(cancel)──► cancelled
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum JobState {
    /// Due in the future: delayed, or waiting for a retry.
    Scheduled,
    /// Waiting for a worker.
    Ready,
    /// Claimed by a worker and leased.
    Running,
    /// Finished successfully (kept only when retention asks for it).
    Completed,
    /// Failed for good; kept in the dead set until redriven or purged.
    Dead,
    /// Cancelled by an operator or the application before it finished; never runs
    /// again. Kept under the dead set's retention limits, in a set of its own.
    Cancelled,
}

impl JobState {
    /// Every state, in life order.
    pub const ALL: [JobState; 6] = [
        JobState::Scheduled,
        JobState::Ready,
        JobState::Running,
        JobState::Completed,
        JobState::Dead,
        JobState::Cancelled,
    ];

    /// The state's name as used in the CLI and docs.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Ready => "ready",
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for JobState {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                Error::InvalidOption(format!(
                    "unknown state {s:?} (one of scheduled, ready, running, completed, dead, cancelled)"
                ))
            })
    }
}

/// Options for one enqueue. Defaults to the queue `default`, no delay, and the kind's
/// retry policy.
///
/// ```
/// use std::time::Duration;
/// use taskyard_core::{EnqueueOptions, RetryPolicy};
///
/// let opts = EnqueueOptions::default()
///     .queue("emails")
///     .delay(Duration::from_secs(30))
///     .retry(RetryPolicy::default().max_attempts(5));
/// ```
#[derive(Debug, Clone, Default)]
pub struct EnqueueOptions {
    pub(crate) queue: Option<String>,
    pub(crate) due: Due,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) priority: Option<i64>,
    pub(crate) unique: Option<(String, UniqueMode)>,
}

impl EnqueueOptions {
    /// The queue to put the job on. Defaults to `default`.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Runs the job no sooner than `delay` from now (the store's now).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.due = Due::After(delay.as_millis() as u64);
        self
    }

    /// Runs the job no sooner than `at`.
    pub fn run_at(mut self, at: SystemTime) -> Self {
        self.due = Due::At(system_time_ms(at));
        self
    }

    /// Overrides the max attempts of the kind's policy.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    /// Gives this job its own retry policy (attempts, base, cap).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// How long one run of this job may take, overriding its kind's timeout on the
    /// worker (see [`WorkerBuilder::timeout_for`](crate::WorkerBuilder::timeout_for)).
    /// Between 1 ms and [`MAX_TIMEOUT`]; checked when the job is built.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Its priority within its queue, [`PRIORITY_MIN`] to [`PRIORITY_MAX`]: higher runs
    /// first, first in first out within a priority; [`DEFAULT_PRIORITY`] when not given.
    /// Checked when the job is built.
    pub fn priority(mut self, priority: i64) -> Self {
        self.priority = Some(priority);
        self
    }

    /// A unique key, scoped to the job's queue: while `mode` holds it, enqueuing another
    /// job with the key adds nothing and answers with the holder's id (see
    /// [`Enqueued`](crate::Enqueued)). Checked when the job is built.
    pub fn unique(mut self, key: impl Into<String>, mode: UniqueMode) -> Self {
        self.unique = Some((key.into(), mode));
        self
    }
}

/// When a new job becomes ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Due {
    /// At once.
    #[default]
    Now,
    /// This many milliseconds after the store's current time.
    After(u64),
    /// At this Unix time in milliseconds.
    At(u64),
}

/// A job as handed to [`Store::enqueue`](crate::Store::enqueue): checked and encoded.
///
/// Valid by construction: the only way to make one is [`NewJob::new`] (or
/// [`NewJob::from_job`]), which checks the kind, payload size, attempts and backoff, and
/// the fields are read-only — so a store never has to check a job again.
#[derive(Debug, Clone)]
pub struct NewJob {
    kind: String,
    payload: Vec<u8>,
    due: Due,
    max_attempts: u32,
    backoff: Option<Backoff>,
    timeout_ms: Option<u64>,
    priority: u8,
    unique: Option<Unique>,
}

/// Backoff bounds carried by a job that has its own retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Base delay in milliseconds.
    pub base_ms: u64,
    /// Cap in milliseconds.
    pub cap_ms: u64,
}

impl NewJob {
    /// Builds a job from a kind name, a JSON payload and options, checking all three.
    ///
    /// `policy` is the kind's retry policy, used where the options give none.
    pub fn new(
        kind: &str,
        payload: Vec<u8>,
        opts: &EnqueueOptions,
        policy: RetryPolicy,
    ) -> Result<Self> {
        let own = opts.retry;
        let policy = own.unwrap_or(policy);
        policy.validate()?;
        let job = NewJob {
            kind: kind.into(),
            payload,
            due: opts.due,
            max_attempts: opts.max_attempts.unwrap_or(policy.max_attempts),
            backoff: own.map(|p| Backoff {
                base_ms: p.base.as_millis() as u64,
                cap_ms: p.cap.as_millis() as u64,
            }),
            timeout_ms: opts.timeout.map(validate_timeout).transpose()?,
            priority: match opts.priority {
                Some(p) => validate_priority(p)?,
                None => DEFAULT_PRIORITY,
            },
            unique: match &opts.unique {
                Some((key, mode)) => Some(Unique::new(key.clone(), *mode)?),
                None => None,
            },
        };
        job.validate()?;
        Ok(job)
    }

    fn validate(&self) -> Result<()> {
        validate_kind(&self.kind)?;
        if self.payload.len() > MAX_PAYLOAD_BYTES {
            return Err(Error::PayloadTooLarge {
                size: self.payload.len(),
                limit: MAX_PAYLOAD_BYTES,
            });
        }
        if self.max_attempts == 0 {
            return Err(Error::InvalidOption(
                "max_attempts must be at least 1".into(),
            ));
        }
        if let Some(b) = self.backoff
            && b.base_ms > b.cap_ms
        {
            return Err(Error::InvalidOption(format!(
                "retry base {} ms is larger than its cap {} ms",
                b.base_ms, b.cap_ms
            )));
        }
        Ok(())
    }

    /// The kind name.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The JSON payload.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// When it becomes ready.
    pub fn due(&self) -> Due {
        self.due
    }

    /// Attempts in all.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Its own backoff (base, cap), if it has one; else the worker's policy for its kind.
    pub fn backoff(&self) -> Option<Backoff> {
        self.backoff
    }

    /// Its own timeout, if it was given one; else the worker's for its kind.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout_ms.map(Duration::from_millis)
    }

    /// Its priority ([`DEFAULT_PRIORITY`] unless it was given one).
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// Its unique key and mode, if it has one.
    pub fn unique(&self) -> Option<&Unique> {
        self.unique.as_ref()
    }

    /// Encodes a typed job with its kind's policy.
    pub fn from_job<J: Job>(job: &J, opts: &EnqueueOptions) -> Result<Self> {
        let payload = serde_json::to_vec(job)?;
        NewJob::new(J::KIND, payload, opts, J::retry_policy())
    }
}

/// One failed attempt, as kept in a job's history.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AttemptError {
    /// The attempt that failed (1-based).
    pub attempt: u32,
    /// When it failed, Unix ms (store time).
    pub at_ms: u64,
    /// What the handler (or the runtime) said.
    pub message: String,
}

/// What the store shows of one job.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobInfo {
    /// Its id.
    pub id: JobId,
    /// Its queue.
    pub queue: String,
    /// Its kind.
    pub kind: String,
    /// Where it stands.
    pub state: JobState,
    /// The JSON payload, as text (lossy if it is not UTF-8).
    pub payload: String,
    /// Attempts made so far (claims).
    pub attempt: u32,
    /// Attempts in all.
    pub max_attempts: u32,
    /// When it was enqueued, Unix ms.
    pub enqueued_at_ms: u64,
    /// Scheduled: when it is due; running: when its lease ends; dead or completed: when it
    /// got there. Unix ms.
    pub at_ms: Option<u64>,
    /// The errors of its failed attempts, oldest first.
    pub errors: Vec<AttemptError>,
    /// Its priority ([`DEFAULT_PRIORITY`] unless it was given one).
    pub priority: u8,
    /// Its unique key and mode, if it has one.
    pub unique: Option<Unique>,
    /// Running: the latest progress its handler reported (JSON text), as of the last
    /// heartbeat.
    pub progress: Option<String>,
    /// Completed: the value its handler returned (JSON text), while the queue's result
    /// TTL keeps it; `None` if it returned none.
    pub result: Option<String>,
}

/// What came of enqueuing one job.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Enqueued {
    /// The job's id: the new job's, or, for a duplicate, the id of the job that holds its
    /// unique key.
    pub id: JobId,
    /// Whether the job was a duplicate of one holding its unique key: nothing was added
    /// (a debounced duplicate replaced the holder's payload and due time instead).
    pub duplicate: bool,
}

/// Milliseconds since the Unix epoch.
pub fn system_time_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_are_checked() {
        assert!(QueueName::new("a-b_c.d9").is_ok());
        for bad in ["", "a b", "a{b}", "a:b", &"x".repeat(65)] {
            assert!(
                matches!(QueueName::new(bad), Err(Error::InvalidQueue { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn kinds_are_checked() {
        assert!(validate_kind("mail:send").is_ok());
        assert!(matches!(
            validate_kind("a\tb"),
            Err(Error::InvalidKind { .. })
        ));
    }

    #[test]
    fn oversized_payload_is_rejected() {
        let big = vec![b'x'; MAX_PAYLOAD_BYTES + 1];
        let err =
            NewJob::new("k", big, &EnqueueOptions::default(), RetryPolicy::default()).unwrap_err();
        assert!(matches!(err, Error::PayloadTooLarge { .. }));
    }

    #[test]
    fn priorities_and_unique_keys_are_checked() {
        let job = |o: EnqueueOptions| NewJob::new("k", b"{}".to_vec(), &o, RetryPolicy::default());
        let d = EnqueueOptions::default;
        assert_eq!(job(d()).unwrap().priority(), DEFAULT_PRIORITY);
        assert_eq!(job(d().priority(0)).unwrap().priority(), 0);
        assert_eq!(job(d().priority(100)).unwrap().priority(), 100);
        for bad in [-1, 101, i64::MAX] {
            let err = job(d().priority(bad)).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidOption(m) if m.contains("priority")),
                "{bad}"
            );
        }
        let u = job(d().unique("user:7", UniqueMode::Finished)).unwrap();
        assert_eq!(u.unique().unwrap().key, "user:7");
        let long = "k".repeat(MAX_UNIQUE_KEY_BYTES + 1);
        for (key, mode) in [
            ("", UniqueMode::Queued),
            (long.as_str(), UniqueMode::Queued),
            ("a\tb", UniqueMode::Queued),
            ("a\nb", UniqueMode::Queued),
            ("a", UniqueMode::Period(Duration::ZERO)),
            (
                "a",
                UniqueMode::Period(MAX_UNIQUE_PERIOD + Duration::from_millis(1)),
            ),
        ] {
            assert!(job(d().unique(key, mode)).is_err(), "{key:?} {mode:?}");
        }
        assert!(UniqueMode::parse("forever", None).is_err());
        assert!(UniqueMode::parse("period", None).is_err());
        assert!(UniqueMode::parse("queued", Some(Duration::from_secs(1))).is_err());
        assert_eq!(
            UniqueMode::parse("period", Some(Duration::from_secs(1))).unwrap(),
            UniqueMode::Period(Duration::from_secs(1))
        );
    }

    #[test]
    fn unique_keys_show_as_key_mode_and_period() {
        let json = |mode| serde_json::to_value(Unique::new("k", mode).unwrap()).unwrap();
        assert_eq!(
            json(UniqueMode::Finished),
            serde_json::json!({"key": "k", "mode": "finished"})
        );
        assert_eq!(
            json(UniqueMode::Period(Duration::from_secs(60))),
            serde_json::json!({"key": "k", "mode": "period", "period_ms": 60000})
        );
    }

    #[test]
    fn timeouts_are_checked() {
        let job = |d| {
            NewJob::new(
                "k",
                b"{}".to_vec(),
                &EnqueueOptions::default().timeout(d),
                RetryPolicy::default(),
            )
        };
        assert_eq!(
            job(Duration::from_secs(30)).unwrap().timeout(),
            Some(Duration::from_secs(30))
        );
        assert_eq!(job(MAX_TIMEOUT).unwrap().timeout(), Some(MAX_TIMEOUT));
        for bad in [
            Duration::ZERO,
            Duration::from_micros(999),
            MAX_TIMEOUT + Duration::from_millis(1),
            Duration::MAX,
        ] {
            let err = job(bad).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidOption(m) if m.contains("timeout")),
                "{bad:?}: {err}"
            );
        }
    }
}
