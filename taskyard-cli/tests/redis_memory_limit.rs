//! `taskyard enqueue` against a Redis at its memory limit: one line saying what to do,
//! a failure exit, and nothing written.

use std::process::Command;

use taskyard::redis::RedisStore;
use taskyard::{EnqueueOptions, Error, NewJob, QueueName, RetryPolicy, Store};
use taskyard_conformance::RedisServer;

#[tokio::test]
async fn enqueue_into_a_full_redis_fails_with_one_line() {
    let server =
        RedisServer::start_with(&["--maxmemory", "3mb", "--maxmemory-policy", "noeviction"]);
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let q = QueueName::new("q").unwrap();
    let batch = || {
        (0..200)
            .map(|_| {
                let payload = format!(r#"{{"body":"{}"}}"#, "x".repeat(100)).into_bytes();
                NewJob::new(
                    "mail",
                    payload,
                    &EnqueueOptions::default(),
                    RetryPolicy::default(),
                )
                .unwrap()
            })
            .collect::<Vec<_>>()
    };
    let mut refused = None;
    for _ in 0..1000 {
        if let Err(e) = store.enqueue(&q, batch()).await {
            refused = Some(e);
            break;
        }
    }
    assert!(matches!(refused, Some(Error::MemoryFull)), "{refused:?}");
    let before = store.stats(&q).await.unwrap().ready;

    let out = Command::new(env!("CARGO_BIN_EXE_taskyard"))
        .args(["enqueue", "mail", r#"{"to":"ada"}"#, "--queue", "q"])
        .env("TASKYARD_STORE", server.url())
        .output()
        .expect("run taskyard");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the enqueue succeeded: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("memory limit") && stderr.contains("raise maxmemory"),
        "{stderr}"
    );
    assert_eq!(store.stats(&q).await.unwrap().ready, before, "it wrote");
}
