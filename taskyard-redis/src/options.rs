//! taskyard's own options in a Redis URL's query: `wait_replicas` and `wait_timeout_ms`
//! (see [`RedisStore::with_replica_ack`](crate::RedisStore::with_replica_ack)).
//!
//! Why here: one URL is all an application passes (`AnyStore::open`, the CLI's
//! `--store`), so the options of the store itself ride in its query. They are taken out
//! before redis-rs reads the URL; every other query pair is left for redis-rs, which reads
//! the query with the same `url` crate, so what it decodes is what the user wrote.

use std::time::Duration;

use taskyard_core::{Error, Result};
use url::Url;

use crate::ReplicaAck;

/// `WAIT`'s timeout when the URL names replicas but no `wait_timeout_ms`.
const DEFAULT_WAIT_TIMEOUT_MS: u64 = 1000;

/// Takes taskyard's own `wait_replicas` and `wait_timeout_ms` out of a URL's query.
///
/// Returns the URL for redis-rs and the replica acknowledgement asked for, if any
/// (`wait_replicas=0` asks for none). A URL without these options is returned as it came.
pub(crate) fn replica_ack_of(url: &str) -> Result<(String, Option<ReplicaAck>)> {
    // A URL that does not parse is left whole: redis-rs parses it with the same crate and
    // says what is wrong with it.
    let Ok(mut parsed) = Url::parse(url) else {
        return Ok((url.to_string(), None));
    };
    let (mut replicas, mut timeout_ms, mut rest, mut taken) =
        (None, DEFAULT_WAIT_TIMEOUT_MS, Vec::new(), false);
    for (name, value) in parsed.query_pairs() {
        let bad = |expected: &str| {
            Error::InvalidOption(format!(
                "invalid Redis URL option {name}={value:?}: expected {expected}"
            ))
        };
        match &*name {
            "wait_replicas" => {
                replicas = Some(
                    value
                        .parse::<u32>()
                        .map_err(|_| bad("a whole number of replicas"))?,
                );
                taken = true;
            }
            "wait_timeout_ms" => {
                timeout_ms = value
                    .parse::<u64>()
                    .ok()
                    // 0 would make WAIT block forever.
                    .filter(|t| *t > 0)
                    .ok_or_else(|| bad("a whole number of milliseconds above 0"))?;
                taken = true;
            }
            _ => rest.push((name.into_owned(), value.into_owned())),
        }
    }
    let url = if !taken {
        url.to_string()
    } else {
        if rest.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(rest);
        }
        parsed.into()
    };
    let ack = replicas.filter(|n| *n > 0).map(|replicas| ReplicaAck {
        replicas,
        timeout: Duration::from_millis(timeout_ms),
    });
    Ok((url, ack))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(replicas: u32, timeout_ms: u64) -> Option<ReplicaAck> {
        Some(ReplicaAck {
            replicas,
            timeout: Duration::from_millis(timeout_ms),
        })
    }

    /// The query pairs redis-rs will see in a URL, decoded.
    fn pairs(url: &str) -> Vec<(String, String)> {
        Url::parse(url)
            .unwrap()
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    #[test]
    fn taskyard_options_are_taken_out_and_the_others_kept() {
        let (url, got) = replica_ack_of(
            "redis://:secret@127.0.0.1:6379/0?protocol=resp3&wait_replicas=2&wait_timeout_ms=250",
        )
        .unwrap();
        assert_eq!(url, "redis://:secret@127.0.0.1:6379/0?protocol=resp3");
        assert_eq!(got, ack(2, 250));

        // Only taskyard's options: no query is left; the timeout defaults to 1,000 ms.
        let (url, got) = replica_ack_of("rediss://127.0.0.1:6380/?wait_replicas=1").unwrap();
        assert_eq!(url, "rediss://127.0.0.1:6380/");
        assert_eq!(got, ack(1, 1000));

        // The fragment (redis-rs reads `#insecure` there) stays the URL's, not the last
        // option's value.
        let (url, got) = replica_ack_of("rediss://h/?wait_replicas=1#insecure").unwrap();
        assert_eq!(url, "rediss://h/#insecure");
        assert_eq!(got, ack(1, 1000));

        // No replicas asked for: no acknowledgement, and the options are still taken out.
        let (url, got) = replica_ack_of("redis://h/1?wait_replicas=0&a=1").unwrap();
        assert_eq!(url, "redis://h/1?a=1");
        assert_eq!(got, None);
    }

    #[test]
    fn other_pairs_keep_their_meaning_percent_encoding_included() {
        let (url, got) =
            replica_ack_of("redis://h/?x=a%26b%3Dc&wait_replicas=1&y=%C3%A9+z&x=2").unwrap();
        assert_eq!(got, ack(1, 1000));
        assert_eq!(
            pairs(&url),
            [("x", "a&b=c"), ("y", "é z"), ("x", "2")].map(|(k, v)| (k.into(), v.into()))
        );
    }

    #[test]
    fn a_url_without_taskyard_options_is_left_as_it_came() {
        for url in [
            "redis://127.0.0.1:6379",
            "redis://u:p%40ss@127.0.0.1:6379/2?protocol=3",
            "redis://h/?",
            "not a url",
        ] {
            assert_eq!(replica_ack_of(url).unwrap(), (url.to_string(), None));
        }
    }

    #[test]
    fn a_bad_value_is_refused() {
        for (url, says) in [
            ("redis://h/?wait_replicas=two", "wait_replicas=\"two\""),
            ("redis://h/?wait_replicas=-1", "wait_replicas=\"-1\""),
            ("redis://h/?wait_replicas", "wait_replicas=\"\""),
            (
                "redis://h/?wait_replicas=1&wait_timeout_ms=0",
                "wait_timeout_ms=\"0\"",
            ),
            ("redis://h/?wait_timeout_ms=1.5", "wait_timeout_ms=\"1.5\""),
        ] {
            match replica_ack_of(url) {
                Err(Error::InvalidOption(msg)) => assert!(msg.contains(says), "{url}: {msg}"),
                other => panic!("{url}: expected InvalidOption, got {other:?}"),
            }
        }
    }
}
