//! A call retried after its answer was lost (the connection cut between the script and
//! its reply) answers as the first one did: a finish is not called stale for what it
//! applied, and its outcomes are not applied twice.

use std::time::Duration;

use taskyard_conformance::RedisServer;
use taskyard_core::{
    EnqueueOptions, JobState, LeaseToken, NewJob, Outcome, QueueName, RetryPolicy, Store,
};
use taskyard_redis::RedisStore;

#[tokio::test]
async fn a_finish_retried_after_its_answer_was_lost_answers_as_the_first_did() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let q = QueueName::new("replays").unwrap();
    let jobs = (0..3)
        .map(|_| {
            NewJob::new(
                "mail",
                b"{}".to_vec(),
                &EnqueueOptions::default(),
                RetryPolicy::default(),
            )
            .unwrap()
        })
        .collect();
    store.enqueue(&q, jobs).await.unwrap();
    let token = LeaseToken::mint("w").unwrap();
    let claimed = store
        .claim(&q, 3, Duration::from_secs(30), &token)
        .await
        .unwrap()
        .jobs;
    let lease = |i: usize| claimed[i].lease.clone();
    let call = [
        (lease(0), Outcome::Completed),
        (
            lease(1),
            Outcome::Retry {
                delay_ms: 60_000,
                error: "busy".into(),
            },
        ),
        (
            lease(2),
            Outcome::Dead {
                error: "bad".into(),
            },
        ),
    ];
    assert_eq!(store.finish(&call).await.unwrap(), vec![true; 3]);
    // The same call again, as the completer sends it when the answer did not arrive.
    assert_eq!(
        store.finish(&call).await.unwrap(),
        vec![true; 3],
        "a retry is not stale"
    );
    let st = store.stats(&q).await.unwrap();
    assert_eq!((st.ready, st.running, st.scheduled, st.dead), (0, 0, 1, 1));
    for i in [1, 2] {
        let info = store.job(&q, &claimed[i].lease.id).await.unwrap().unwrap();
        assert_eq!(info.attempt, 1, "the retry applied nothing twice");
        assert_eq!(info.errors.len(), 1);
    }
    assert_eq!(
        store
            .job(&q, &claimed[1].lease.id)
            .await
            .unwrap()
            .unwrap()
            .state,
        JobState::Scheduled
    );
    // Another call naming a job already finished is not a retry: refused.
    assert_eq!(store.finish(&call[..1]).await.unwrap(), vec![false]);

    // Each answer is kept for a minute, then Redis drops it.
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("taskyard:2:{replays}:call:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    for k in keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&k)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0 && ttl <= 60_000, "{k}: {ttl}");
    }
}
