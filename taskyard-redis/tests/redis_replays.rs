//! A finish call whose answer was lost (the connection failed after Redis ran it) is
//! retried by the worker; the store knows the retry by its arguments and answers as the
//! first call did: what that call recorded is not called stale, and nothing is applied
//! twice. A call that is not a retry gets no such allowance.

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
    let jobs = (0..4)
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
        .claim(&q, 4, Duration::from_secs(30), &token)
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
    // Redis runs the call; its answer never arrives.
    store.lose_next_finish_answer();
    store.finish(&call).await.expect_err("the answer was lost");
    // The worker sends the same call again: every run was recorded, once.
    assert_eq!(
        store.finish(&call).await.unwrap(),
        vec![true; 3],
        "a retry is not stale"
    );
    let st = store.stats(&q).await.unwrap();
    assert_eq!((st.ready, st.running, st.scheduled, st.dead), (0, 1, 1, 1));
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
    // Not a retry: a second report of the failed job is refused.
    assert_eq!(store.finish(&call[1..2]).await.unwrap(), vec![false]);
    // The batch's last job: the call that completes it (and ends the batch) loses its
    // answer too; the retry still answers "recorded".
    store.lose_next_finish_answer();
    let last = [(lease(3), Outcome::Completed)];
    store.finish(&last).await.expect_err("the answer was lost");
    assert_eq!(store.finish(&last).await.unwrap(), vec![true]);
    assert_eq!(store.stats(&q).await.unwrap().running, 0);
}
