//! The options in a Redis URL's query: taskyard's own — `wait_replicas`, `wait_timeout_ms`
//! (see [`RedisStore::with_replica_ack`](crate::RedisStore::with_replica_ack)) and
//! `allow_eviction` — and redis-rs's one for TCP, `protocol`. Any other name is refused,
//! as the embedded store refuses an unknown option: a misspelt `wait_replica=1` must not
//! silently drop the guarantee it asked for.
//!
//! Why here: one URL is all an application passes (`AnyStore::open`, the CLI's
//! `--store`), so the options of the store itself ride in its query. They are taken out
//! before redis-rs reads the URL, which reads the rest with the same `url` crate.

use std::time::Duration;

use taskyard_core::{Error, QueueConfig, Result};
use url::Url;

use crate::ReplicaAck;

/// `WAIT`'s timeout when the URL names replicas but no `wait_timeout_ms`.
const DEFAULT_WAIT_TIMEOUT_MS: u64 = 1000;

/// The query names redis-rs reads from a `redis://` or `rediss://` URL.
const REDIS_RS_OPTIONS: [&str; 1] = ["protocol"];

/// What a URL's query asks of the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Options {
    /// Replicas that must confirm an enqueue (`wait_replicas`, `wait_timeout_ms`).
    pub(crate) replica_ack: Option<ReplicaAck>,
    /// Connect even when Redis may evict keys (`allow_eviction=true`).
    pub(crate) allow_eviction: bool,
}

/// Takes taskyard's options out of a URL's query and refuses names nobody reads.
///
/// Returns the URL for redis-rs and the options. A URL without taskyard's options is
/// returned as it came.
pub(crate) fn options_of(url: &str) -> Result<(String, Options)> {
    // A URL that does not parse is left whole: redis-rs parses it with the same crate and
    // says what is wrong with it.
    let Ok(mut parsed) = Url::parse(url) else {
        return Ok((url.to_string(), Options::default()));
    };
    let (mut replicas, mut timeout_ms, mut rest, mut taken) =
        (None, DEFAULT_WAIT_TIMEOUT_MS, Vec::new(), false);
    let mut options = Options::default();
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
            }
            "wait_timeout_ms" => {
                timeout_ms = value
                    .parse::<u64>()
                    .ok()
                    // 0 would make WAIT block forever.
                    .filter(|t| *t > 0)
                    .ok_or_else(|| bad("a whole number of milliseconds above 0"))?;
            }
            "allow_eviction" => {
                options.allow_eviction = match &*value {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(bad("true or false")),
                };
            }
            known if REDIS_RS_OPTIONS.contains(&known) => {
                rest.push((name.into_owned(), value.into_owned()));
                continue;
            }
            unknown => {
                return Err(Error::InvalidOption(format!(
                    "unknown Redis URL option {unknown:?}: the options are wait_replicas, \
                     wait_timeout_ms, allow_eviction and protocol"
                )));
            }
        }
        taken = true;
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
    options.replica_ack = replicas.filter(|n| *n > 0).map(|replicas| ReplicaAck {
        replicas,
        timeout: Duration::from_millis(timeout_ms),
    });
    Ok((url, options))
}

/// The largest number Redis's scripts keep exactly: they read numbers as doubles, whose
/// whole numbers are exact up to 2^53.
pub(crate) const MAX_EXACT: u64 = 1 << 53;

/// Refuses queue settings the scripts would round (rather than keep them rounded).
pub(crate) fn check_config(config: &QueueConfig) -> Result<()> {
    config.check_at_most(MAX_EXACT, "the Redis store (exactly)")
}

/// Refuses a `WAIT` timeout Redis would read as "forever" (under 1 ms).
pub(crate) fn check_wait_timeout(timeout: Duration) -> Result<()> {
    if timeout.as_millis() == 0 {
        return Err(Error::InvalidOption(format!(
            "replica wait timeout {timeout:?} is out of range: it must be at least 1 ms \
             (Redis reads a 0 ms WAIT as wait forever)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_redis_would_round_or_read_as_forever_are_refused() {
        let mut config = QueueConfig {
            max_len: MAX_EXACT,
            ..QueueConfig::default()
        };
        assert!(check_config(&config).is_ok());
        config.dead_max_age_ms = MAX_EXACT + 1;
        let e = check_config(&config).unwrap_err().to_string();
        assert!(
            e.contains("dead_max_age_ms") && e.contains(&MAX_EXACT.to_string()),
            "{e}"
        );
        assert!(check_wait_timeout(Duration::from_millis(1)).is_ok());
        for t in [Duration::ZERO, Duration::from_micros(999)] {
            let e = check_wait_timeout(t).unwrap_err().to_string();
            assert!(e.contains("at least 1 ms"), "{e}");
        }
    }

    fn ack(replicas: u32, timeout_ms: u64) -> Option<ReplicaAck> {
        Some(ReplicaAck {
            replicas,
            timeout: Duration::from_millis(timeout_ms),
        })
    }

    fn replica_ack_of(url: &str) -> Result<(String, Option<ReplicaAck>)> {
        options_of(url).map(|(url, o)| (url, o.replica_ack))
    }

    #[test]
    fn taskyard_options_are_taken_out_and_redis_rs_ones_kept() {
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
        let (url, got) = replica_ack_of("redis://h/1?wait_replicas=0&protocol=2").unwrap();
        assert_eq!(url, "redis://h/1?protocol=2");
        assert_eq!(got, None);

        let (url, o) = options_of("redis://h/?allow_eviction=true").unwrap();
        assert_eq!((url.as_str(), o.allow_eviction), ("redis://h/", true));
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
    fn a_bad_value_or_an_unknown_option_is_refused() {
        for (url, says) in [
            ("redis://h/?wait_replicas=two", "wait_replicas=\"two\""),
            ("redis://h/?wait_replicas=-1", "wait_replicas=\"-1\""),
            ("redis://h/?wait_replicas", "wait_replicas=\"\""),
            (
                "redis://h/?wait_replicas=1&wait_timeout_ms=0",
                "wait_timeout_ms=\"0\"",
            ),
            ("redis://h/?wait_timeout_ms=1.5", "wait_timeout_ms=\"1.5\""),
            (
                "redis://h/?allow_eviction=maybe",
                "allow_eviction=\"maybe\"",
            ),
            (
                "redis://h/?wait_replica=1",
                "unknown Redis URL option \"wait_replica\"",
            ),
            (
                "redis://h/?protocol=3&x=a%26b",
                "unknown Redis URL option \"x\"",
            ),
        ] {
            match options_of(url) {
                Err(Error::InvalidOption(msg)) => assert!(msg.contains(says), "{url}: {msg}"),
                other => panic!("{url}: expected InvalidOption, got {other:?}"),
            }
        }
    }
}
