//! The envelope: one job as one string,
//! `2\tid\tattempt\tenqueued_ms\tmax_attempts\tkind\tbackoff[\tname=value…]\npayload`.
//!
//! Why one string: a ready job then costs a single list entry — its own bytes and a few of
//! framing — instead of a hash per job and its id in several structures. A ready job with
//! a priority other than the default is the same string as a member of the queue's
//! `prio` sorted set, and nothing else. The scripts read the fixed fields with plain
//! string search; the payload is never parsed in Redis.
//!
//! The first field is the envelope's version, always one character, so the scripts find
//! every later field from a fixed place. The fields up to `backoff` are the same in
//! every version (so any script can move any job); a later version adds optional
//! `name=value` fields after them, which scripts that do not use them carry through
//! untouched. Release 0.1 wrote the same fields without the version (`upgrade.lua` adds
//! it). An envelope of a version this build does not know is refused, never guessed at.
//!
//! Optional fields written so far, each only when the job has it, so a job without
//! options costs no byte for them:
//!
//! - `timeout=MS`: a job's own execution timeout (only the worker reads it);
//! - `priority=P`: a priority other than the default (50); the scripts route a job back
//!   to ready by it (`head_priority` in common.lua);
//! - `unique=M:KEY`: a unique key, M its mode (`q` queued, `f` finished, `d` debounce,
//!   `p<ms>` period). Always the last field: the key may hold any character but a
//!   control one (so no tab or newline), `:` included; the mode never holds `:`.

use bytes::Bytes;
use std::time::Duration;

use taskyard_core::{Backoff, DEFAULT_PRIORITY, Error, JobId, NewJob, Result, Unique, UniqueMode};

/// The envelope version this build writes and reads.
pub(crate) const VERSION: &str = "2";

/// The fields of an envelope.
#[derive(Debug, Clone)]
pub(crate) struct Envelope {
    pub(crate) id: JobId,
    pub(crate) attempt: u32,
    pub(crate) enqueued_at_ms: u64,
    pub(crate) max_attempts: u32,
    pub(crate) kind: std::sync::Arc<str>,
    pub(crate) backoff: Option<Backoff>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) priority: u8,
    pub(crate) unique: Option<Unique>,
    pub(crate) payload: Bytes,
}

/// A unique mode as the envelope and the enqueue script spell it.
pub(crate) fn mode_code(mode: UniqueMode) -> String {
    match mode {
        UniqueMode::Queued => "q".into(),
        UniqueMode::Finished => "f".into(),
        UniqueMode::Debounce => "d".into(),
        UniqueMode::Period(p) => format!("p{}", p.as_millis()),
    }
}

fn mode_of(code: &str) -> Option<UniqueMode> {
    Some(match code {
        "q" => UniqueMode::Queued,
        "f" => UniqueMode::Finished,
        "d" => UniqueMode::Debounce,
        p => UniqueMode::Period(Duration::from_millis(p.strip_prefix('p')?.parse().ok()?)),
    })
}

/// The part of a new job's envelope the client writes; the script puts the version, id,
/// attempt and enqueue time in front.
pub(crate) fn tail(job: &NewJob) -> Vec<u8> {
    let backoff = match job.backoff() {
        Some(b) => format!("{}:{}", b.base_ms, b.cap_ms),
        None => String::new(),
    };
    let (kind, payload) = (job.kind(), job.payload());
    let mut options = String::new();
    if let Some(t) = job.timeout() {
        options.push_str(&format!("\ttimeout={}", t.as_millis()));
    }
    if job.priority() != DEFAULT_PRIORITY {
        options.push_str(&format!("\tpriority={}", job.priority()));
    }
    if let Some(u) = job.unique() {
        options.push_str(&format!("\tunique={}:{}", mode_code(u.mode), u.key));
    }
    let mut out = Vec::with_capacity(kind.len() + payload.len() + 16);
    out.extend_from_slice(
        format!("{}\t{kind}\t{backoff}{options}\n", job.max_attempts()).as_bytes(),
    );
    out.extend_from_slice(payload);
    out
}

pub(crate) fn parse(raw: Bytes) -> Result<Envelope> {
    parse_sharing(raw, &mut None)
}

/// [`parse`], taking the kind from `last` when it is the same name, and leaving this
/// envelope's kind there: the jobs of one claim mostly share a kind, so they share one
/// allocation of its name.
pub(crate) fn parse_sharing(
    raw: Bytes,
    last: &mut Option<std::sync::Arc<str>>,
) -> Result<Envelope> {
    let bad = || {
        Error::Corrupt(format!(
            "malformed envelope: {:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(80)])
        ))
    };
    let nl = raw.iter().position(|&b| b == b'\n').ok_or_else(bad)?;
    let head = std::str::from_utf8(&raw[..nl]).map_err(|_| bad())?;
    let mut f = head.split('\t');
    let mut next = || f.next().ok_or_else(bad);
    let version = next()?;
    if version != VERSION {
        return Err(Error::Version {
            what: "a job envelope".into(),
            found: version.chars().take(16).collect(),
            reads: VERSION.into(),
        });
    }
    let id = JobId::new(next()?);
    let attempt = next()?.parse().map_err(|_| bad())?;
    let enqueued_at_ms = next()?.parse().map_err(|_| bad())?;
    let max_attempts = next()?.parse().map_err(|_| bad())?;
    let kind = match (next()?, last.as_ref()) {
        (name, Some(kind)) if **kind == *name => kind.clone(),
        (name, _) => {
            let kind: std::sync::Arc<str> = std::sync::Arc::from(name);
            *last = Some(kind.clone());
            kind
        }
    };
    let backoff = match next()? {
        "" => None,
        b => {
            let (base, cap) = b.split_once(':').ok_or_else(bad)?;
            Some(Backoff {
                base_ms: base.parse().map_err(|_| bad())?,
                cap_ms: cap.parse().map_err(|_| bad())?,
            })
        }
    };
    // Optional fields follow as `name=value`; one this build does not know (a newer
    // release's) is carried by the scripts, not read here.
    let (mut timeout, mut priority, mut unique) = (None, DEFAULT_PRIORITY, None);
    for field in f {
        if let Some(ms) = field.strip_prefix("timeout=") {
            timeout = Some(Duration::from_millis(ms.parse().map_err(|_| bad())?));
        } else if let Some(p) = field.strip_prefix("priority=") {
            priority = p.parse().map_err(|_| bad())?;
        } else if let Some(u) = field.strip_prefix("unique=") {
            let (mode, key) = u.split_once(':').ok_or_else(bad)?;
            let mode = mode_of(mode).ok_or_else(bad)?;
            unique = Some(Unique {
                key: key.to_string(),
                mode,
            });
        }
    }
    Ok(Envelope {
        id,
        attempt,
        enqueued_at_ms,
        max_attempts,
        kind,
        backoff,
        timeout,
        priority,
        unique,
        payload: raw.slice(nl + 1..),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskyard_core::{EnqueueOptions, RetryPolicy, UniqueMode};

    #[test]
    fn tail_and_parse_round_trip() {
        let opts = EnqueueOptions::default().retry(
            RetryPolicy::default()
                .max_attempts(4)
                .base(std::time::Duration::from_millis(10))
                .cap(std::time::Duration::from_millis(90)),
        );
        let job = NewJob::new(
            "k:x",
            b"{\"a\":\"t\\tb\\n\"}".to_vec(),
            &opts,
            RetryPolicy::default(),
        )
        .unwrap();
        let mut raw = b"2\t42\t3\t1700000000000\t".to_vec();
        raw.extend(tail(&job));
        let env = parse(Bytes::from(raw)).unwrap();
        assert_eq!(env.id.as_str(), "42");
        assert_eq!(env.attempt, 3);
        assert_eq!(env.max_attempts, 4);
        assert_eq!(&*env.kind, "k:x");
        assert_eq!(
            env.backoff,
            Some(Backoff {
                base_ms: 10,
                cap_ms: 90
            })
        );
        assert_eq!(&env.payload[..], job.payload());
        assert_eq!(env.timeout, None);
    }

    /// The jobs of one claim share one allocation of a kind they share, and a job of
    /// another kind gets its own.
    #[test]
    fn envelopes_of_one_kind_share_its_name() {
        let mut last = None;
        let a = parse_sharing(Bytes::from_static(b"2\t1\t0\t1\t3\tk\t\n{}"), &mut last).unwrap();
        let b = parse_sharing(Bytes::from_static(b"2\t2\t0\t1\t3\tk\t\n{}"), &mut last).unwrap();
        let c = parse_sharing(Bytes::from_static(b"2\t3\t0\t1\t3\tj\t\n{}"), &mut last).unwrap();
        assert!(std::sync::Arc::ptr_eq(&a.kind, &b.kind));
        assert_eq!((&*a.kind, &*c.kind), ("k", "j"));
        assert_eq!(
            (a.id.as_str(), b.id.as_str(), c.id.as_str()),
            ("1", "2", "3")
        );
    }

    #[test]
    fn timeout_is_an_optional_field() {
        let opts = EnqueueOptions::default().timeout(std::time::Duration::from_millis(1500));
        let job = NewJob::new("k", b"{}".to_vec(), &opts, RetryPolicy::default()).unwrap();
        let tail = tail(&job);
        assert!(tail.starts_with(b"25\tk\t\ttimeout=1500\n"), "{tail:?}");
        let mut raw = b"2\t9\t0\t1\t".to_vec();
        raw.extend(tail);
        let env = parse(Bytes::from(raw)).unwrap();
        assert_eq!(env.timeout, Some(std::time::Duration::from_millis(1500)));
        assert_eq!(&env.payload[..], b"{}");
        // Among other optional fields, in any order.
        let env = parse(Bytes::from_static(
            b"2\t7\t0\t1\t3\tk\t\tpriority=5\ttimeout=20\n{}",
        ))
        .unwrap();
        assert_eq!(env.timeout, Some(std::time::Duration::from_millis(20)));
        assert!(parse(Bytes::from_static(b"2\t7\t0\t1\t3\tk\t\ttimeout=x\n{}")).is_err());
    }

    #[test]
    fn priority_and_unique_key_are_optional_fields_the_key_last() {
        let plain = NewJob::new(
            "k",
            b"{}".to_vec(),
            &EnqueueOptions::default(),
            RetryPolicy::default(),
        )
        .unwrap();
        assert_eq!(
            tail(&plain),
            b"25\tk\t\n{}",
            "the default priority writes nothing"
        );
        let period = UniqueMode::Period(Duration::from_millis(600));
        let opts = EnqueueOptions::default()
            .priority(90)
            .unique("user:7 = ü:x", period);
        let job = NewJob::new("k", b"{}".to_vec(), &opts, RetryPolicy::default()).unwrap();
        let tail = tail(&job);
        assert!(
            tail.starts_with("25\tk\t\tpriority=90\tunique=p600:user:7 = ü:x\n".as_bytes()),
            "{:?}",
            String::from_utf8_lossy(&tail)
        );
        let mut raw = b"2\t9\t0\t1\t".to_vec();
        raw.extend(tail);
        let env = parse(Bytes::from(raw)).unwrap();
        assert_eq!(env.priority, 90);
        assert_eq!(
            env.unique,
            Some(Unique {
                key: "user:7 = ü:x".into(),
                mode: period
            })
        );
        for mode in [
            UniqueMode::Queued,
            UniqueMode::Finished,
            UniqueMode::Debounce,
        ] {
            assert_eq!(mode_of(&mode_code(mode)), Some(mode));
        }
        assert!(parse(Bytes::from_static(b"2\t7\t0\t1\t3\tk\t\tunique=x:k\n{}")).is_err());
        assert!(parse(Bytes::from_static(b"2\t7\t0\t1\t3\tk\t\tpriority=500\n{}")).is_err());
    }

    #[test]
    fn optional_fields_are_skipped_and_unknown_versions_refused() {
        let env = parse(Bytes::from_static(b"2\t7\t0\t1\t3\tk\t\tpriority=5\n{}")).unwrap();
        assert_eq!(
            (env.id.as_str(), &*env.kind, &env.payload[..]),
            ("7", "k", &b"{}"[..])
        );
        let err = parse(Bytes::from_static(b"3\t7\t0\t1\t3\tk\t\n{}")).unwrap_err();
        assert!(
            matches!(&err, Error::Version { found, reads, .. } if found == "3" && reads == "2"),
            "{err}"
        );
        // Release 0.1's envelope (no version) is not read as one: it is upgraded first.
        assert!(parse(Bytes::from_static(b"7\t0\t1\t3\tk\t\n{}")).is_err());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse(Bytes::from_static(b"nope")).is_err());
    }
}
