//! Priorities within a queue: higher runs first, first in first out within a priority,
//! and a job keeps its priority through every path back to ready.

use std::sync::Arc;
use std::time::Duration;

use taskyard_core::{
    Client, Cursor, DEFAULT_PRIORITY, EnqueueOptions, JobFilter, JobState, Outcome, QueueConfig,
    QueueName, Store,
};

use super::common::{LEASE, SOON, claim, enqueue, new_job_with, payload_n, stats};
use crate::{Subject, eventually, unique_queue};

fn at(priority: i64) -> EnqueueOptions {
    EnqueueOptions::default().priority(priority)
}

/// The payload numbers of the next `n` jobs claimed one call at a time.
async fn claim_order(store: &Arc<dyn Store>, q: &QueueName, n: usize) -> Vec<u64> {
    let mut order = Vec::new();
    for _ in 0..n {
        let jobs = claim(store, q, 1, LEASE, "w").await;
        order.extend(jobs.iter().map(|j| payload_n(&j.payload)));
    }
    order
}

/// Jobs run highest priority first and in enqueue order within a priority; a job with no
/// priority sits in the middle of the range, so old producers and new ones mix.
pub async fn higher_priority_runs_first_and_fifo_within_a_priority(s: Subject) {
    let q = unique_queue();
    // n encodes the expected place: 1xx first ... 5xx last.
    let plan: [(u64, Option<i64>); 10] = [
        (300, None),
        (400, Some(10)),
        (200, Some(90)),
        (301, Some(DEFAULT_PRIORITY as i64)),
        (100, Some(100)),
        (500, Some(0)),
        (201, Some(90)),
        (302, None),
        (401, Some(10)),
        (101, Some(100)),
    ];
    let jobs = plan
        .iter()
        .map(|(n, p)| new_job_with(*n, p.map_or_else(EnqueueOptions::default, at)))
        .collect();
    // Two batches, so order holds across enqueue calls too.
    let mut jobs: Vec<_> = jobs;
    let second = jobs.split_off(5);
    enqueue(&s.store, &q, jobs).await;
    enqueue(&s.store, &q, second).await;
    assert_eq!(
        stats(&s.store, &q).await.ready,
        10,
        "every priority counts as ready"
    );

    let page = s
        .store
        .list(&q, JobState::Ready, &Cursor::start(), 100)
        .await
        .unwrap();
    let listed: Vec<u8> = page.jobs.iter().map(|j| j.priority).collect();
    assert_eq!(listed.len(), 10, "the ready listing shows every job");
    let first = s.store.job(&q, &page.jobs[0].id).await.unwrap().unwrap();
    assert!(
        [100, 90, 50, 10, 0].contains(&first.priority),
        "a job's info carries its priority"
    );

    let batch = claim(&s.store, &q, 4, LEASE, "w").await;
    let batch: Vec<u64> = batch.iter().map(|j| payload_n(&j.payload)).collect();
    assert_eq!(
        batch,
        [100, 101, 200, 201],
        "one claim takes the highest first"
    );
    assert_eq!(
        claim_order(&s.store, &q, 7).await,
        [300, 301, 302, 400, 401, 500]
    );
}

/// A delayed job, a retried job, a released job, a job whose lease expired and a
/// redriven job all come back at their own priority.
pub async fn every_path_back_to_ready_keeps_the_priority(s: Subject) {
    let q = unique_queue();
    let opts = at(90).delay(Duration::from_millis(200)).max_attempts(3);
    enqueue(&s.store, &q, vec![new_job_with(1, opts)]).await;
    enqueue(
        &s.store,
        &q,
        (10..13)
            .map(|n| new_job_with(n, EnqueueOptions::default()))
            .collect(),
    )
    .await;
    let due = s
        .store
        .list(&q, JobState::Scheduled, &Cursor::start(), 1)
        .await
        .unwrap()
        .jobs[0]
        .at_ms
        .expect("a scheduled job has a due time");
    let store = s.store.clone();
    assert!(
        eventually(SOON, || {
            let store = store.clone();
            async move { store.now_ms().await.unwrap() >= due }
        })
        .await
    );
    // Delayed: due now, it goes ahead of the three waiting defaults.
    let mut jobs = claim(&s.store, &q, 1, LEASE, "w").await;
    let job = jobs.pop().expect("the delayed job is claimed");
    assert_eq!(payload_n(&job.payload), 1);

    // Retried without delay: ahead again.
    let retry = Outcome::Retry {
        delay_ms: 0,
        error: "again".into(),
    };
    assert_eq!(s.store.finish(&[(job.lease, retry)]).await.unwrap(), [true]);
    let job = claim(&s.store, &q, 1, LEASE, "w")
        .await
        .pop()
        .expect("retried job");
    assert_eq!((payload_n(&job.payload), job.attempt), (1, 2));

    // Released: ahead again, attempt not charged.
    assert_eq!(s.store.release(&[job.lease]).await.unwrap(), [true]);
    let job = claim(&s.store, &q, 1, Duration::from_millis(150), "w")
        .await
        .pop()
        .expect("released job");
    assert_eq!((payload_n(&job.payload), job.attempt), (1, 2));

    // Lease expired: back to ready at its priority (its last attempt still to come).
    let store = s.store.clone();
    let q2 = q.clone();
    assert!(
        eventually(SOON, || {
            let (store, q) = (store.clone(), q2.clone());
            async move { store.maintain(&q).await.unwrap().expired == 1 }
        })
        .await
    );
    let job = claim(&s.store, &q, 1, LEASE, "w")
        .await
        .pop()
        .expect("expired job");
    assert_eq!((payload_n(&job.payload), job.attempt), (1, 3));

    // Dead, then redriven: ahead of the defaults once more.
    let dead = Outcome::Dead { error: "no".into() };
    assert_eq!(s.store.finish(&[(job.lease, dead)]).await.unwrap(), [true]);
    assert_eq!(
        Client::new(s.store.clone())
            .redrive(&q, &JobFilter::All)
            .await
            .unwrap(),
        1
    );
    let info = s
        .store
        .job(&q, &job_id_of(&s, &q, 1).await)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((info.state, info.priority), (JobState::Ready, 90));
    assert_eq!(claim_order(&s.store, &q, 4).await, [1, 10, 11, 12]);
}

async fn job_id_of(s: &Subject, q: &QueueName, n: u64) -> taskyard_core::JobId {
    for state in JobState::ALL {
        let page = s
            .store
            .list(q, state, &Cursor::start(), 1000)
            .await
            .unwrap();
        if let Some(j) = page
            .jobs
            .iter()
            .find(|j| payload_n(j.payload.as_bytes()) == n)
        {
            return j.id.clone();
        }
    }
    panic!("no job with n = {n}");
}

/// A queue's max length counts prioritised jobs like any others.
pub async fn prioritised_jobs_count_toward_the_max_length(s: Subject) {
    let q = unique_queue();
    let config = QueueConfig {
        max_len: 3,
        ..QueueConfig::default()
    };
    s.store.configure(&q, &config).await.unwrap();
    enqueue(
        &s.store,
        &q,
        vec![new_job_with(1, at(99)), new_job_with(2, at(1))],
    )
    .await;
    enqueue(
        &s.store,
        &q,
        vec![new_job_with(3, EnqueueOptions::default())],
    )
    .await;
    let err = s
        .store
        .enqueue(&q, vec![new_job_with(4, at(99))])
        .await
        .unwrap_err();
    assert!(
        matches!(err, taskyard_core::Error::QueueFull { len: 3, .. }),
        "{err}"
    );
    assert_eq!(claim_order(&s.store, &q, 3).await, [1, 3, 2]);
}
