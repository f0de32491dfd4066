//! Enqueue, due times and ids: what a batch writes (or refuses to), when its jobs become
//! claimable, and ids that are never handed out twice.

use std::time::{Duration, Instant, SystemTime};

use taskyard_core::{
    Client, DeadFilter, Due, EnqueueOptions, Error, JobState, Lease, LeaseToken, NewJob, Outcome,
    QueueConfig, RetryPolicy,
};

use super::common::{LEASE, Ping, SOON, claim, enqueue, new_job, new_job_with, payload_n, stats};
use crate::{Subject, eventually, unique_queue};

/// Bulk enqueue returns one distinct id per job, in input order, and every job is ready.
pub async fn enqueue_returns_ids_in_input_order(s: Subject) {
    let q = unique_queue();
    let ids = enqueue(&s.store, &q, (0..3).map(new_job).collect()).await;
    assert_eq!(ids.len(), 3);
    assert_eq!(
        ids.iter().collect::<std::collections::HashSet<_>>().len(),
        3
    );
    let jobs = claim(&s.store, &q, 3, LEASE, "w").await;
    let claimed: Vec<_> = jobs.iter().map(|j| j.lease.id.clone()).collect();
    assert_eq!(
        claimed, ids,
        "claims come in enqueue order with the ids enqueue returned"
    );
    assert_eq!(
        jobs.iter()
            .map(|j| payload_n(&j.payload))
            .collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
}

/// A batch of thousands is written in one call.
pub async fn bulk_enqueue_writes_every_job(s: Subject) {
    let q = unique_queue();
    let ids = enqueue(&s.store, &q, (0..5000).map(new_job).collect()).await;
    assert_eq!(ids.len(), 5000);
    assert_eq!(stats(&s.store, &q).await.ready, 5000);
    assert!(s.store.queues().await.unwrap().contains(&q));
}

/// A delayed job is scheduled, not claimable before it is due, and claimable after.
pub async fn delayed_job_is_not_claimed_before_due(s: Subject) {
    let q = unique_queue();
    let opts = EnqueueOptions::default().delay(Duration::from_millis(500));
    let start = Instant::now();
    let ids = enqueue(&s.store, &q, vec![new_job_with(1, opts), new_job(2)]).await;
    let first = claim(&s.store, &q, 10, LEASE, "w").await;
    assert_eq!(first.len(), 1);
    assert_eq!(payload_n(&first[0].payload), 2);
    let info = s.store.job(&q, &ids[0]).await.unwrap().unwrap();
    assert_eq!(info.state, JobState::Scheduled);
    let claim_res = s
        .store
        .claim(&q, 10, LEASE, &LeaseToken::mint("w").unwrap())
        .await
        .unwrap();
    assert!(claim_res.jobs.is_empty() || start.elapsed() >= Duration::from_millis(450));
    assert!(
        claim_res.next_due.is_some(),
        "claim says when the next job is due"
    );
    let (store, q2) = (s.store.clone(), q.clone());
    assert!(
        eventually(SOON, || {
            let (store, q) = (store.clone(), q2.clone());
            async move {
                !store
                    .claim(&q, 1, LEASE, &LeaseToken::mint("w").unwrap())
                    .await
                    .unwrap()
                    .jobs
                    .is_empty()
            }
        })
        .await
    );
    assert!(start.elapsed() >= Duration::from_millis(450));
}

/// A run-at time in the past means ready now.
pub async fn run_at_in_the_past_is_ready_at_once(s: Subject) {
    let q = unique_queue();
    let past = SystemTime::now() - Duration::from_secs(3600);
    enqueue(
        &s.store,
        &q,
        vec![new_job_with(1, EnqueueOptions::default().run_at(past))],
    )
    .await;
    assert_eq!(stats(&s.store, &q).await.ready, 1);
    let epoch = SystemTime::UNIX_EPOCH;
    let job = new_job_with(2, EnqueueOptions::default().run_at(epoch));
    assert_eq!(job.due(), Due::At(0));
    enqueue(&s.store, &q, vec![job]).await;
    assert_eq!(claim(&s.store, &q, 5, LEASE, "w").await.len(), 2);
}

/// Past its max length a queue refuses enqueues with `QueueFull`, writing nothing.
pub async fn full_queue_rejects_enqueue_and_writes_nothing(s: Subject) {
    let q = unique_queue();
    let config = QueueConfig {
        max_len: 3,
        ..QueueConfig::default()
    };
    s.store.configure(&q, &config).await.unwrap();
    let full = async |jobs: Vec<NewJob>, expected_len: u64| match s.store.enqueue(&q, jobs).await {
        Err(Error::QueueFull { len, max_len, .. }) => {
            assert_eq!((len, max_len), (expected_len, 3))
        }
        other => panic!("expected QueueFull, got {other:?}"),
    };
    // A scheduled job counts: 1 + 3 would pass 3.
    let later = EnqueueOptions::default().delay(Duration::from_secs(3600));
    enqueue(&s.store, &q, vec![new_job_with(0, later)]).await;
    full((1..4).map(new_job).collect(), 1).await;
    let st = stats(&s.store, &q).await;
    assert_eq!(
        (st.ready, st.scheduled),
        (0, 1),
        "the refused batch wrote nothing"
    );
    // 1 + 2 reaches the limit exactly: accepted; then one more is refused.
    enqueue(&s.store, &q, (1..3).map(new_job).collect()).await;
    full(vec![new_job(9)], 3).await;
    assert_eq!(stats(&s.store, &q).await.ready, 2);
    // A running job does not count.
    claim(&s.store, &q, 1, LEASE, "w").await;
    enqueue(&s.store, &q, vec![new_job(10)]).await;
    assert_eq!(stats(&s.store, &q).await.ready, 2);
}

/// Bad input gets a typed error and changes nothing.
pub async fn bad_input_is_rejected_and_changes_nothing(s: Subject) {
    let client = Client::new(s.store.clone());
    let q = unique_queue();
    let err = client
        .enqueue_with(&Ping { n: 1 }, EnqueueOptions::default().queue("no spaces"))
        .await;
    assert!(matches!(err, Err(Error::InvalidQueue { .. })));
    let big = vec![b'x'; taskyard_core::MAX_PAYLOAD_BYTES + 1];
    let err = NewJob::new(
        "ping",
        big,
        &EnqueueOptions::default(),
        RetryPolicy::default(),
    );
    assert!(matches!(err, Err(Error::PayloadTooLarge { .. })));
    let err = client
        .enqueue_with(
            &Ping { n: 1 },
            EnqueueOptions::default().queue(q.as_str()).max_attempts(0),
        )
        .await;
    assert!(matches!(err, Err(Error::InvalidOption(_))));
    let err = NewJob::new(
        "bad kind",
        b"{}".to_vec(),
        &EnqueueOptions::default(),
        RetryPolicy::default(),
    );
    assert!(matches!(err, Err(Error::InvalidKind { .. })));
    // A NewJob cannot be made invalid: its fields are read-only, so the checks above
    // are the only ones a store relies on.
    let zero_attempts = NewJob::new(
        "k",
        b"{}".to_vec(),
        &EnqueueOptions::default().max_attempts(0),
        RetryPolicy::default(),
    );
    assert!(matches!(zero_attempts, Err(Error::InvalidOption(_))));
    assert_eq!(stats(&s.store, &q).await.ready, 0);
}

/// Ids are never handed out twice in a queue: not after the job completed, died, was
/// purged or its queue drained.
pub async fn ids_are_not_reused_after_jobs_leave(s: Subject) {
    let q = unique_queue();
    let mut seen = std::collections::HashSet::new();
    for round in 0..3 {
        let ids = enqueue(&s.store, &q, (0..10).map(new_job).collect()).await;
        let jobs = claim(&s.store, &q, 10, LEASE, "ids").await;
        let outcomes: Vec<(Lease, Outcome)> = jobs
            .into_iter()
            .enumerate()
            .map(|(i, j)| {
                let outcome = if i % 2 == 0 {
                    Outcome::Completed
                } else {
                    Outcome::Dead {
                        error: "gone".into(),
                    }
                };
                (j.lease, outcome)
            })
            .collect();
        s.store.finish(&outcomes).await.unwrap();
        assert_eq!(
            Client::new(s.store.clone())
                .purge(&q, &DeadFilter::All)
                .await
                .unwrap(),
            5,
            "round {round}"
        );
        let st = stats(&s.store, &q).await;
        assert_eq!(
            (st.ready, st.scheduled, st.running, st.completed, st.dead),
            (0, 0, 0, 0, 0),
            "round {round}: the queue is empty"
        );
        for id in ids {
            assert!(seen.insert(id.clone()), "id {id} handed out twice");
        }
    }
}

/// Scheduled jobs that come due join the back of ready in the order they were due, after
/// the jobs that were ready before them.
pub async fn due_jobs_join_ready_in_due_order(s: Subject) {
    let q = unique_queue();
    let now = s.store.now_ms().await.unwrap();
    let at = |ms: u64| {
        EnqueueOptions::default().run_at(std::time::UNIX_EPOCH + Duration::from_millis(now + ms))
    };
    // Enqueued out of due order, and after a job that is ready at once.
    enqueue(
        &s.store,
        &q,
        vec![
            new_job(0),
            new_job_with(3, at(400)),
            new_job_with(1, at(200)),
            new_job_with(2, at(300)),
        ],
    )
    .await;
    let store = s.store.clone();
    assert!(
        eventually(SOON, || {
            let store = store.clone();
            async move { store.now_ms().await.unwrap() > now + 450 }
        })
        .await
    );
    let mut order = Vec::new();
    for _ in 0..4 {
        let job = claim(&s.store, &q, 1, LEASE, "w").await.remove(0);
        order.push(payload_n(&job.payload));
    }
    assert_eq!(order, [0, 1, 2, 3]);
}
