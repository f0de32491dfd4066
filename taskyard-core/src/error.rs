//! The one error type of the library, with messages a user can act on.

/// Everything that can go wrong when talking to taskyard.
///
/// Input errors ([`Error::InvalidQueue`], [`Error::InvalidKind`],
/// [`Error::PayloadTooLarge`], [`Error::QueueFull`], [`Error::InvalidOption`]) are raised
/// before anything is written: the store is unchanged when you see them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A queue name is empty, too long, or has characters outside `[A-Za-z0-9_.-]`.
    #[error("invalid queue name {name:?}: {reason}")]
    InvalidQueue {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A job kind is empty, too long, or has characters outside `[A-Za-z0-9_.:-]`.
    #[error("invalid job kind {kind:?}: {reason}")]
    InvalidKind {
        /// The kind as given.
        kind: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A payload is larger than [`MAX_PAYLOAD_BYTES`](crate::MAX_PAYLOAD_BYTES).
    #[error("payload of {size} bytes is over the limit of {limit} bytes")]
    PayloadTooLarge {
        /// Encoded size of the payload.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The queue has a max length and this enqueue would pass it; nothing was written.
    #[error("queue {queue} is full: {len} jobs waiting, max length {max_len}")]
    QueueFull {
        /// The queue.
        queue: String,
        /// Jobs waiting (ready and scheduled) when the enqueue was refused.
        len: u64,
        /// The configured max length.
        max_len: u64,
    },
    /// No schedule of this name in this queue.
    #[error("no schedule {name:?} in queue {queue}: `taskyard cron list` shows them")]
    UnknownSchedule {
        /// The queue.
        queue: String,
        /// The name asked for.
        name: String,
    },
    /// A schedule was declared with a definition other than the stored one of the same
    /// version: nothing changed. A new definition takes a higher version.
    #[error(
        "schedule {name:?} in queue {queue} is stored with another definition of version \
         {version}: nothing changed; give the new definition a higher version (it then \
         replaces the stored one), or remove the schedule first"
    )]
    ScheduleConflict {
        /// The queue.
        queue: String,
        /// The schedule.
        name: String,
        /// The version both definitions carry.
        version: u32,
    },
    /// An option or argument has a value that makes no sense (zero attempts, ...).
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// The payload could not be encoded as JSON.
    #[error("could not encode the payload as JSON: {0}")]
    Encode(#[from] serde_json::Error),
    /// The store could not be reached or answered with an error.
    #[error("store error: {0}")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store holds data this version cannot read.
    #[error("store holds malformed data: {0}")]
    Corrupt(String),
    /// A file that is not a taskyard store (another application's SQLite file): refused
    /// before anything could change it.
    #[error("{path} is not a taskyard store ({found}): refusing to touch it")]
    NotAStore {
        /// The file.
        path: String,
        /// What it holds instead.
        found: String,
    },
    /// Redis may evict keys when full (`maxmemory-policy` other than `noeviction`), which
    /// could drop acknowledged jobs; the store refuses to connect.
    #[error(
        "Redis evicts keys when full (maxmemory-policy {policy}), so acknowledged jobs could \
         vanish: set maxmemory-policy noeviction (CONFIG SET maxmemory-policy noeviction, \
         and in redis.conf), or add allow_eviction=true to the URL to accept the risk"
    )]
    EvictionPolicy {
        /// The policy Redis reported.
        policy: String,
    },
    /// The store has no room for new jobs: its file reached its size cap less the reserve
    /// kept for claims and finishes, or its disk is (nearly) full. The refused change
    /// wrote nothing; workers still claim and finish jobs, which frees room.
    #[error(
        "store is full: {reason}; nothing was written. Workers still claim and finish \
         jobs, which frees room; or free disk space, or raise the store's size cap"
    )]
    StoreFull {
        /// What is full, with the figures.
        reason: String,
    },
    /// An enqueue was written on the Redis primary but fewer replicas than asked for
    /// (`wait_replicas`) confirmed it in time: a failover could lose it, and retrying may
    /// duplicate it.
    #[error(
        "enqueue written on the primary but confirmed by {confirmed} of {wanted} replicas \
         within {timeout_ms} ms: a failover could lose it, and retrying may duplicate it; \
         check the replicas (INFO replication) or raise wait_timeout_ms"
    )]
    ReplicasNotConfirmed {
        /// Replicas that confirmed.
        confirmed: u32,
        /// Replicas asked for.
        wanted: u32,
        /// How long the store waited.
        timeout_ms: u64,
    },
    /// Another process held the store file's write lock longer than the store waits
    /// (`Options::locked_for`); nothing was written.
    #[error(
        "the store file stayed locked by another process for {seconds} s: nothing was \
         written; find the stuck process (a stopped worker, a long transaction) and retry"
    )]
    StoreLocked {
        /// How long the store waited.
        seconds: f64,
    },
    /// Redis is at its memory limit (`maxmemory`, with `noeviction`): it refused to take
    /// more jobs, and nothing was written. Workers keep claiming and finishing jobs at
    /// the limit, which frees memory; then enqueues succeed again.
    #[error(
        "Redis is at its memory limit (maxmemory) and took no more jobs; nothing was \
         written: let workers drain the queues, purge dead jobs, or raise maxmemory, then \
         retry"
    )]
    MemoryFull,
    /// No job has this id: it was never enqueued, or it is gone (deleted, purged, or
    /// finished and past its queue's retention and result TTL).
    #[error("no job {0}: never enqueued, or gone (deleted, or finished and no longer kept)")]
    UnknownJob(crate::JobId),
    /// A wait for a job's end ran out before the job ended; the job is unchanged.
    #[error("job {id} has not finished after {after:?} (it is {state})")]
    WaitTimedOut {
        /// The job.
        id: crate::JobId,
        /// How long the wait lasted.
        after: std::time::Duration,
        /// Where the job stood when the wait gave up.
        state: crate::JobState,
    },
    /// Something went wrong inside a worker: one of its tasks panicked, or outcomes could
    /// not be recorded before shutdown ended (those jobs run again after their leases).
    #[error("worker failed: {0}")]
    Worker(String),
    /// The store (or one of its queues or jobs) is in a format this release does not
    /// read: written by a newer taskyard, or left half-upgraded. Nothing was changed.
    #[error("{what} is in format {found}; this taskyard reads {reads}")]
    Version {
        /// What has the format: a store file, a queue, a job.
        what: String,
        /// The version found.
        found: String,
        /// The version(s) this release reads.
        reads: String,
    },
}

impl Error {
    /// Wraps an error of a store's engine (a Redis error, an SQLite error, ...).
    pub fn store(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Store(Box::new(err))
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
