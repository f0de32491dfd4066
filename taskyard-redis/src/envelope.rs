//! The envelope: one job as one string, `id\tattempt\tenqueued_ms\tmax_attempts\tkind\tbackoff\npayload`.
//!
//! Why one string: a ready job then costs a single list entry — its own bytes and a few of
//! framing — instead of a hash per job and its id in several structures. The scripts read
//! the fixed fields with plain string search; the payload is never parsed in Redis.

use bytes::Bytes;
use taskyard::{Backoff, Error, JobId, NewJob, Result};

/// The fields of an envelope.
#[derive(Debug, Clone)]
pub(crate) struct Envelope {
    pub(crate) id: JobId,
    pub(crate) attempt: u32,
    pub(crate) enqueued_at_ms: u64,
    pub(crate) max_attempts: u32,
    pub(crate) kind: std::sync::Arc<str>,
    pub(crate) backoff: Option<Backoff>,
    pub(crate) payload: Bytes,
}

/// The part of a new job's envelope the client writes; the script puts the id, attempt
/// and enqueue time in front.
pub(crate) fn tail(job: &NewJob) -> Vec<u8> {
    let backoff = match job.backoff {
        Some(b) => format!("{}:{}", b.base_ms, b.cap_ms),
        None => String::new(),
    };
    let mut out = Vec::with_capacity(job.kind.len() + job.payload.len() + 16);
    out.extend_from_slice(format!("{}\t{}\t{}\n", job.max_attempts, job.kind, backoff).as_bytes());
    out.extend_from_slice(&job.payload);
    out
}

pub(crate) fn parse(raw: Bytes) -> Result<Envelope> {
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
    let id = JobId::new(next()?);
    let attempt = next()?.parse().map_err(|_| bad())?;
    let enqueued_at_ms = next()?.parse().map_err(|_| bad())?;
    let max_attempts = next()?.parse().map_err(|_| bad())?;
    let kind = std::sync::Arc::from(next()?);
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
    Ok(Envelope {
        id,
        attempt,
        enqueued_at_ms,
        max_attempts,
        kind,
        backoff,
        payload: raw.slice(nl + 1..),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskyard::{EnqueueOptions, RetryPolicy};

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
        let mut raw = b"42\t3\t1700000000000\t".to_vec();
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
        assert_eq!(&env.payload[..], &job.payload[..]);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse(Bytes::from_static(b"nope")).is_err());
    }
}
