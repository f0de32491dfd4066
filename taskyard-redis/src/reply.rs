//! Decoding the scripts' replies.
//!
//! Redis hands a script's return value back as RESP: a Lua number as an integer, a string
//! as a bulk string, a table as an array (up to its first `nil`), `false` as nil. Values a
//! script read from a key come back as strings, so a number may arrive as either. These
//! helpers read one reply as what the script meant, and call anything else corrupt
//! ([`Error::Corrupt`]) instead of guessing; [`info`] reads the job that `find.lua` and
//! `list.lua` return, with its progress or result.

use bytes::Bytes;
use redis::Value;
use taskyard_core::store::support::history;
use taskyard_core::{Error, JobInfo, JobState, QueueName, Result};

use crate::envelope;

pub(crate) fn int(v: &Value) -> Result<i64> {
    match v {
        Value::Int(n) => Ok(*n),
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .map(|f| f as i64)
            .ok_or_else(|| Error::Corrupt(format!("expected a number, got {v:?}"))),
        Value::SimpleString(s) => s
            .parse::<f64>()
            .map(|f| f as i64)
            .map_err(|_| Error::Corrupt(format!("expected a number, got {v:?}"))),
        _ => Err(Error::Corrupt(format!("expected a number, got {v:?}"))),
    }
}

pub(crate) fn bytes(v: Value) -> Result<Bytes> {
    match v {
        Value::BulkString(b) => Ok(Bytes::from(b)),
        Value::SimpleString(s) => Ok(Bytes::from(s.into_bytes())),
        Value::Int(n) => Ok(Bytes::from(n.to_string().into_bytes())),
        other => Err(Error::Corrupt(format!("expected a string, got {other:?}"))),
    }
}

pub(crate) fn array(v: Value) -> Result<Vec<Value>> {
    match v {
        Value::Array(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(Error::Corrupt(format!("expected an array, got {other:?}"))),
    }
}

pub(crate) fn flags(v: Value) -> Result<Vec<bool>> {
    array(v)?.iter().map(|x| int(x).map(|n| n == 1)).collect()
}

pub(crate) fn info(
    queue: &QueueName,
    state: JobState,
    env: Value,
    at: Value,
    errors: Value,
    extra: Value,
) -> Result<JobInfo> {
    let env = envelope::parse(bytes(env)?)?;
    let at_ms = match &at {
        Value::BulkString(b) if b.is_empty() => None,
        Value::Nil => None,
        v => int(v).ok().map(|n| n as u64),
    };
    let errors = match errors {
        Value::BulkString(b) => history::parse(&b),
        _ => Vec::new(),
    };
    // A running job's progress or a completed job's result, as the scripts send it
    // ('' when there is none).
    let extra = match extra {
        Value::BulkString(b) if !b.is_empty() => Some(String::from_utf8_lossy(&b).into_owned()),
        _ => None,
    };
    Ok(JobInfo {
        id: env.id,
        queue: queue.to_string(),
        kind: env.kind.to_string(),
        state,
        payload: String::from_utf8_lossy(&env.payload).into_owned(),
        // A running job's envelope holds the attempts made before the current one.
        attempt: env.attempt + u32::from(state == JobState::Running),
        max_attempts: env.max_attempts,
        enqueued_at_ms: env.enqueued_at_ms,
        at_ms,
        errors,
        priority: env.priority,
        unique: env.unique,
        progress: extra.clone().filter(|_| state == JobState::Running),
        result: extra.filter(|_| state == JobState::Completed),
    })
}
