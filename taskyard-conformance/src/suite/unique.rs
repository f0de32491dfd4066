//! Unique jobs: a key, scoped to a queue, that keeps a second job of the same key out
//! while its mode holds it — and is given back on every path out of that mode.

use std::sync::Arc;
use std::time::Duration;

use taskyard_core::{
    Client, Cursor, EnqueueOptions, Enqueued, JobFilter, JobId, JobState, NewJob, Outcome,
    QueueConfig, QueueName, Skip, Store, UniqueMode,
};

use super::common::{LEASE, SOON, claim, new_job_with, payload_n, stats};
use crate::{Subject, eventually, unique_queue};

fn keyed(n: u64, key: &str, mode: UniqueMode) -> NewJob {
    new_job_with(n, EnqueueOptions::default().unique(key, mode))
}

async fn add(store: &Arc<dyn Store>, q: &QueueName, jobs: Vec<NewJob>) -> Vec<Enqueued> {
    store.enqueue_report(q, jobs).await.expect("enqueue")
}

async fn add_one(
    store: &Arc<dyn Store>,
    q: &QueueName,
    n: u64,
    key: &str,
    mode: UniqueMode,
) -> Enqueued {
    add(store, q, vec![keyed(n, key, mode)])
        .await
        .pop()
        .expect("one answer")
}

/// Asserts that the key is free: a new job with it is added (and then deleted again).
async fn assert_free(store: &Arc<dyn Store>, q: &QueueName, key: &str, mode: UniqueMode) {
    let e = add_one(store, q, 999, key, mode).await;
    assert!(!e.duplicate, "key {key:?} should be free");
    let done = store
        .delete(q, &JobFilter::Ids(vec![e.id]), &Cursor::start())
        .await
        .unwrap();
    assert_eq!(done.done, 1, "the probe job is deleted");
}

async fn assert_held_by(
    store: &Arc<dyn Store>,
    q: &QueueName,
    key: &str,
    mode: UniqueMode,
    holder: &JobId,
) {
    let e = add_one(store, q, 998, key, mode).await;
    assert_eq!(
        (e.duplicate, &e.id),
        (true, holder),
        "key {key:?} should be held"
    );
}

async fn finish_one(store: &Arc<dyn Store>, q: &QueueName, outcome: Outcome) -> JobId {
    let job = claim(store, q, 1, LEASE, "w")
        .await
        .pop()
        .expect("a job to claim");
    let id = job.lease.id.clone();
    assert_eq!(store.finish(&[(job.lease, outcome)]).await.unwrap(), [true]);
    id
}

/// A duplicate adds nothing and answers with the holder's id; in a batch the first of
/// several jobs with one key wins; keys are scoped to their queue.
pub async fn a_duplicate_answers_with_the_holders_id_and_adds_nothing(s: Subject) {
    let (q, other) = (unique_queue(), unique_queue());
    let f = UniqueMode::Finished;
    let a = add_one(&s.store, &q, 1, "user:7", f).await;
    assert!(!a.duplicate);
    let b = add_one(&s.store, &q, 2, "user:7", f).await;
    assert_eq!((b.duplicate, &b.id), (true, &a.id));
    assert!(
        !add_one(&s.store, &other, 3, "user:7", f).await.duplicate,
        "another queue, another scope"
    );

    let batch = add(
        &s.store,
        &q,
        vec![
            keyed(4, "k1", f),
            keyed(5, "k1", f),
            keyed(6, "k2", f),
            new_job_with(7, EnqueueOptions::default()),
            keyed(8, "user:7", f),
        ],
    )
    .await;
    assert_eq!(
        batch.iter().map(|e| e.duplicate).collect::<Vec<_>>(),
        [false, true, false, false, true]
    );
    assert_eq!(batch[1].id, batch[0].id, "the first of the batch wins");
    assert_eq!(batch[4].id, a.id);
    assert_eq!(stats(&s.store, &q).await.ready, 4, "duplicates add nothing");
    let info = s.store.job(&q, &a.id).await.unwrap().unwrap();
    assert_eq!(
        info.unique.as_ref().map(|u| (u.key.as_str(), u.mode)),
        Some(("user:7", f))
    );
    assert_eq!(
        payload_n(info.payload.as_bytes()),
        1,
        "the holder keeps its payload"
    );

    // Duplicates do not count toward the max length.
    let config = QueueConfig {
        max_len: 4,
        ..QueueConfig::default()
    };
    s.store.configure(&q, &config).await.unwrap();
    assert!(add_one(&s.store, &q, 9, "k2", f).await.duplicate);
}

/// `queued`: the key is free once a worker claims the job.
pub async fn a_queued_key_is_free_once_the_job_is_claimed(s: Subject) {
    let q = unique_queue();
    let m = UniqueMode::Queued;
    let a = add_one(&s.store, &q, 1, "k", m).await;
    assert_held_by(&s.store, &q, "k", m, &a.id).await;
    let delayed = add_one(&s.store, &q, 2, "later", m).await;
    let opts = EnqueueOptions::default()
        .delay(Duration::from_secs(3600))
        .unique("later", m);
    assert!(
        add(&s.store, &q, vec![new_job_with(3, opts)]).await[0].duplicate,
        "a scheduled job holds it too"
    );
    let _ = delayed;
    let running = claim(&s.store, &q, 1, LEASE, "w").await;
    assert_eq!(running[0].lease.id, a.id);
    assert_free(&s.store, &q, "k", m).await;
}

/// `finished`: retries keep the key; completion gives it back.
pub async fn a_finished_key_is_held_through_retries_and_freed_on_completion(s: Subject) {
    let q = unique_queue();
    let m = UniqueMode::Finished;
    let opts = EnqueueOptions::default().unique("k", m).max_attempts(3);
    let a = add(&s.store, &q, vec![new_job_with(1, opts)])
        .await
        .remove(0);
    finish_one(
        &s.store,
        &q,
        Outcome::Retry {
            delay_ms: 0,
            error: "again".into(),
        },
    )
    .await;
    assert_held_by(&s.store, &q, "k", m, &a.id).await;
    let job = claim(&s.store, &q, 1, LEASE, "w")
        .await
        .pop()
        .expect("the retry");
    assert_held_by(&s.store, &q, "k", m, &a.id).await;
    assert_eq!(
        s.store
            .finish(&[(job.lease, Outcome::Completed)])
            .await
            .unwrap(),
        [true]
    );
    assert_free(&s.store, &q, "k", m).await;
}

/// `finished`: a job that dies — by its outcome, its attempts spent, or its lease
/// expiring on its last attempt — gives its key back.
pub async fn a_finished_key_is_freed_when_the_job_dies_by_any_path(s: Subject) {
    let q = unique_queue();
    let m = UniqueMode::Finished;
    add_one(&s.store, &q, 1, "dead", m).await;
    finish_one(&s.store, &q, Outcome::Dead { error: "no".into() }).await;
    assert_free(&s.store, &q, "dead", m).await;

    let opts = EnqueueOptions::default().unique("spent", m).max_attempts(1);
    add(&s.store, &q, vec![new_job_with(2, opts)]).await;
    finish_one(
        &s.store,
        &q,
        Outcome::Retry {
            delay_ms: 0,
            error: "x".into(),
        },
    )
    .await;
    assert_eq!(stats(&s.store, &q).await.dead, 2);
    assert_free(&s.store, &q, "spent", m).await;

    let opts = EnqueueOptions::default()
        .unique("expired", m)
        .max_attempts(1);
    let e = add(&s.store, &q, vec![new_job_with(3, opts)])
        .await
        .remove(0);
    claim(&s.store, &q, 1, Duration::from_millis(100), "w").await;
    assert_held_by(&s.store, &q, "expired", m, &e.id).await;
    let (store, q2) = (s.store.clone(), q.clone());
    assert!(
        eventually(SOON, || {
            let (store, q) = (store.clone(), q2.clone());
            async move { store.maintain(&q).await.unwrap().expired == 1 }
        })
        .await
    );
    assert_eq!(
        s.store.job(&q, &e.id).await.unwrap().unwrap().state,
        JobState::Dead
    );
    assert_free(&s.store, &q, "expired", m).await;

    // Purging the dead jobs keeps every key free.
    Client::new(s.store.clone())
        .purge(&q, &JobFilter::All)
        .await
        .unwrap();
    assert_free(&s.store, &q, "dead", m).await;
}

/// Deleting the holder — ready, scheduled, or with its whole queue — frees the key.
pub async fn a_key_is_freed_when_its_job_or_queue_is_deleted(s: Subject) {
    let q = unique_queue();
    let m = UniqueMode::Finished;
    let ready = add_one(&s.store, &q, 1, "ready", m).await;
    let opts = EnqueueOptions::default()
        .delay(Duration::from_secs(3600))
        .unique("scheduled", m);
    let scheduled = add(&s.store, &q, vec![new_job_with(2, opts)])
        .await
        .remove(0);
    let step = s
        .store
        .delete(
            &q,
            &JobFilter::Ids(vec![ready.id, scheduled.id]),
            &Cursor::start(),
        )
        .await
        .unwrap();
    assert_eq!(step.done, 2);
    assert_free(&s.store, &q, "ready", m).await;
    assert_free(&s.store, &q, "scheduled", m).await;

    let held = add_one(&s.store, &q, 3, "queue", m).await;
    let running = add_one(&s.store, &q, 4, "running", m).await;
    claim(&s.store, &q, 1, LEASE, "w").await;
    assert_held_by(&s.store, &q, "queue", m, &held.id).await;
    let _ = running;
    Client::new(s.store.clone()).delete_queue(&q).await.unwrap();
    assert_free(&s.store, &q, "queue", m).await;
    assert_free(&s.store, &q, "running", m).await;
}

/// Redriving a dead job takes its key again; while another job holds the key, the dead
/// job stays dead and the step says so.
pub async fn a_redriven_job_takes_its_key_again_or_stays_dead_while_another_holds_it(s: Subject) {
    let q = unique_queue();
    let m = UniqueMode::Finished;
    let a = add_one(&s.store, &q, 1, "k", m).await;
    finish_one(&s.store, &q, Outcome::Dead { error: "no".into() }).await;
    let b = add_one(&s.store, &q, 2, "k", m).await;
    assert!(!b.duplicate);

    let step = s
        .store
        .redrive(&q, &JobFilter::Ids(vec![a.id.clone()]), &Cursor::start())
        .await
        .unwrap();
    assert_eq!(step.done, 0);
    assert_eq!(step.skipped.len(), 1);
    assert_eq!(step.skipped[0].why, Skip::KeyHeld(b.id.clone()));
    assert_eq!(
        s.store.job(&q, &a.id).await.unwrap().unwrap().state,
        JobState::Dead
    );
    let step = s
        .store
        .redrive(&q, &JobFilter::All, &Cursor::start())
        .await
        .unwrap();
    assert_eq!(
        (step.done, step.skipped.len()),
        (0, 1),
        "a redrive of all skips it too"
    );

    finish_one(&s.store, &q, Outcome::Completed).await;
    assert_eq!(
        Client::new(s.store.clone())
            .redrive(&q, &JobFilter::All)
            .await
            .unwrap(),
        1
    );
    assert_held_by(&s.store, &q, "k", m, &a.id).await;
}

/// `period`: the key is held for its period after enqueue, whatever the job does.
pub async fn a_period_key_is_held_for_its_period_whatever_the_job_does(s: Subject) {
    let q = unique_queue();
    let m = UniqueMode::Period(Duration::from_millis(600));
    let a = add_one(&s.store, &q, 1, "k", m).await;
    let enqueued = s.store.now_ms().await.unwrap();
    finish_one(&s.store, &q, Outcome::Completed).await;
    let again = add_one(&s.store, &q, 2, "k", m).await;
    let now = s.store.now_ms().await.unwrap();
    if now < enqueued + 500 {
        assert_eq!(
            (again.duplicate, &again.id),
            (true, &a.id),
            "completed, but within its period"
        );
    }
    let store = s.store.clone();
    assert!(
        eventually(SOON, || {
            let store = store.clone();
            async move { store.now_ms().await.unwrap() > enqueued + 700 }
        })
        .await
    );
    let later = add_one(&s.store, &q, 3, "k", m).await;
    assert!(!later.duplicate, "the period is over");
}

/// `debounce`: a duplicate of a scheduled holder replaces its payload and due time; once
/// the holder is due, the key is free.
pub async fn a_debounced_duplicate_replaces_the_scheduled_jobs_payload_and_due_time(s: Subject) {
    let q = unique_queue();
    let m = UniqueMode::Debounce;
    let after = |ms| {
        EnqueueOptions::default()
            .unique("k", m)
            .delay(Duration::from_millis(ms))
    };
    let a = add(&s.store, &q, vec![new_job_with(1, after(60_000))])
        .await
        .remove(0);
    let first_due = s
        .store
        .job(&q, &a.id)
        .await
        .unwrap()
        .unwrap()
        .at_ms
        .unwrap();
    let b = add(&s.store, &q, vec![new_job_with(2, after(120_000))])
        .await
        .remove(0);
    assert_eq!((b.duplicate, &b.id), (true, &a.id));
    let info = s.store.job(&q, &a.id).await.unwrap().unwrap();
    assert_eq!(
        payload_n(info.payload.as_bytes()),
        2,
        "the latest payload wins"
    );
    assert!(
        info.at_ms.unwrap() >= first_due + 50_000,
        "the due time moved with it"
    );
    assert_eq!(stats(&s.store, &q).await.scheduled, 1);

    // Only the payload and due time are the duplicate's: the holder keeps its priority.
    let opts = EnqueueOptions::default()
        .unique("k", m)
        .delay(Duration::from_secs(120))
        .priority(90);
    let p = add(&s.store, &q, vec![new_job_with(5, opts)])
        .await
        .remove(0);
    assert_eq!((p.duplicate, &p.id), (true, &a.id));
    let info = s.store.job(&q, &a.id).await.unwrap().unwrap();
    assert_eq!((payload_n(info.payload.as_bytes()), info.priority), (5, 50));

    // A duplicate due now makes the holder ready at once, with its payload.
    let c = add(
        &s.store,
        &q,
        vec![new_job_with(3, EnqueueOptions::default().unique("k", m))],
    )
    .await
    .remove(0);
    assert_eq!((c.duplicate, &c.id), (true, &a.id));
    let st = stats(&s.store, &q).await;
    assert_eq!((st.ready, st.scheduled), (1, 0));
    // Ready now, it holds the key no more: the next one starts a new debounce.
    let d = add(&s.store, &q, vec![new_job_with(4, after(60_000))])
        .await
        .remove(0);
    assert!(!d.duplicate);
    let job = claim(&s.store, &q, 1, LEASE, "w")
        .await
        .pop()
        .expect("the holder");
    assert_eq!((job.lease.id.clone(), payload_n(&job.payload)), (a.id, 3));
}

/// A duplicate adds nothing, so a queue past its max length (releases are never refused)
/// still answers it with its holder's id.
pub async fn a_duplicate_is_answered_on_a_queue_past_its_max_length(s: Subject) {
    let q = unique_queue();
    let m = UniqueMode::Finished;
    let config = QueueConfig {
        max_len: 2,
        ..QueueConfig::default()
    };
    s.store.configure(&q, &config).await.unwrap();
    let a = add_one(&s.store, &q, 1, "k", m).await;
    add(
        &s.store,
        &q,
        vec![new_job_with(2, EnqueueOptions::default())],
    )
    .await;
    let running = claim(&s.store, &q, 2, LEASE, "w").await;
    add(
        &s.store,
        &q,
        (3..5)
            .map(|n| new_job_with(n, EnqueueOptions::default()))
            .collect(),
    )
    .await;
    let leases: Vec<_> = running.into_iter().map(|j| j.lease).collect();
    assert_eq!(s.store.release(&leases).await.unwrap(), [true, true]);
    assert_eq!(stats(&s.store, &q).await.ready, 4, "past its max length");
    assert_held_by(&s.store, &q, "k", m, &a.id).await;
    let err = add_one_err(&s.store, &q).await;
    assert!(
        matches!(err, taskyard_core::Error::QueueFull { .. }),
        "{err}"
    );
}

async fn add_one_err(store: &Arc<dyn Store>, q: &QueueName) -> taskyard_core::Error {
    store
        .enqueue_report(q, vec![keyed(7, "new", UniqueMode::Finished)])
        .await
        .unwrap_err()
}
