//! A Redis set up so that it could lose jobs is refused at connect; one that hides its
//! settings is used with a warning; an unknown option in the URL is refused.

use taskyard_conformance::RedisServer;
use taskyard_core::{EnqueueOptions, Error, NewJob, QueueName, RetryPolicy, Store};
use taskyard_redis::RedisStore;

fn job() -> NewJob {
    NewJob::new(
        "k",
        b"{}".to_vec(),
        &EnqueueOptions::default(),
        RetryPolicy::default(),
    )
    .unwrap()
}

async fn enqueues(store: &RedisStore) -> bool {
    let q = QueueName::new("q").unwrap();
    store.enqueue(&q, vec![job()]).await.is_ok()
}

#[tokio::test]
async fn a_redis_that_may_evict_keys_is_refused_unless_allowed() {
    for policy in ["allkeys-lru", "volatile-ttl"] {
        let server = RedisServer::start_with(&["--maxmemory-policy", policy]);
        let err = RedisStore::connect(&server.url())
            .await
            .err()
            .expect("refused");
        assert!(
            matches!(&err, Error::EvictionPolicy { policy: p } if p == policy),
            "{err}"
        );
        assert!(
            err.to_string().contains("set maxmemory-policy noeviction"),
            "{err}"
        );
        let allowed = format!("{}?allow_eviction=true", server.url());
        assert!(enqueues(&RedisStore::connect(&allowed).await.unwrap()).await);
    }
    let server = RedisServer::start_with(&["--maxmemory-policy", "noeviction"]);
    assert!(enqueues(&RedisStore::connect(&server.url()).await.unwrap()).await);
}

#[tokio::test]
async fn a_redis_that_forbids_config_get_is_used_with_a_warning() {
    // An account without CONFIG, as managed services give.
    let server = RedisServer::start_with(&["--maxmemory-policy", "allkeys-lru"]);
    let mut admin = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all", "-config",
        ])
        .query_async(&mut admin)
        .await
        .unwrap();
    let url = format!("redis://app:pw@127.0.0.1:{}", server.port());
    let mut app = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let denied: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
        .arg(&["GET", "maxmemory-policy"])
        .query_async(&mut app)
        .await;
    assert!(denied.is_err(), "the account can read the config");
    // The policy cannot be read, so it cannot be refused: the store connects.
    assert!(enqueues(&RedisStore::connect(&url).await.unwrap()).await);
}

#[tokio::test]
async fn an_unknown_url_option_is_refused() {
    let server = RedisServer::start();
    let url = format!("{}?wait_replica=1", server.url());
    let err = RedisStore::connect(&url).await.err().expect("refused");
    assert!(
        matches!(&err, Error::InvalidOption(m) if m.contains("\"wait_replica\"")),
        "{err}"
    );
}
