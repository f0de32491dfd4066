//! taskyard's own options in a Redis URL's query: `wait_replicas` and `wait_timeout_ms`
//! (see [`RedisStore::with_replica_ack`](crate::RedisStore::with_replica_ack)).
//!
//! Why here: one URL is all an application passes (`AnyStore::open`, the CLI's
//! `--store`), so the options of the store itself ride in its query. They are taken out
//! before redis-rs reads the URL; every other query pair is left for redis-rs.

use std::time::Duration;

use taskyard_core::{Error, Result};

use crate::ReplicaAck;

/// Takes taskyard's own `wait_replicas` and `wait_timeout_ms` out of a URL's query.
pub(crate) fn replica_ack_of(url: &str) -> Result<(String, Option<ReplicaAck>)> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), None));
    };
    let (mut replicas, mut timeout_ms, mut rest) = (None, 1000, Vec::new());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let bad = || Error::InvalidOption(format!("invalid Redis URL option {pair:?}"));
        match pair.split_once('=') {
            Some(("wait_replicas", n)) => replicas = Some(n.parse::<u32>().map_err(|_| bad())?),
            // 0 would make WAIT block forever.
            Some(("wait_timeout_ms", n)) => {
                timeout_ms = n.parse::<u64>().ok().filter(|t| *t > 0).ok_or_else(bad)?
            }
            _ => rest.push(pair),
        }
    }
    let url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    let ack = replicas.filter(|n| *n > 0).map(|replicas| ReplicaAck {
        replicas,
        timeout: Duration::from_millis(timeout_ms),
    });
    Ok((url, ack))
}
