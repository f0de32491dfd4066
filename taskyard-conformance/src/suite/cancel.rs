//! Cancellation: ready, scheduled and running jobs end `cancelled` — by id, by kind, or
//! all — a running job's handler hears of it at once, and a cancelled job never completes
//! and is never retried.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use taskyard_core::{
    Client, Cursor, EnqueueOptions, Finished, JobContext, JobError, JobFilter, JobId, JobState,
    NewJob, Outcome, QueueConfig, Skip, Skipped, StopReason, UniqueMode,
};

use super::common::{LEASE, Ping, Pong, claim, enqueue, new_job, new_job_with, stats, worker};
use crate::{Subject, eventually, unique_queue};

fn later(n: u64) -> NewJob {
    new_job_with(
        n,
        EnqueueOptions::default().delay(Duration::from_secs(3600)),
    )
}

fn sorted(mut skipped: Vec<Skipped>) -> Vec<Skipped> {
    skipped.sort_by(|a, b| a.id.cmp(&b.id));
    skipped
}

fn skipped(id: &JobId, why: Skip) -> Skipped {
    Skipped {
        id: id.clone(),
        why,
    }
}

/// Ready (plain and prioritised) and scheduled jobs end `cancelled`, are listed and
/// counted as such, are never claimed; jobs already finished or unknown are named in
/// `skipped`; by kind and all cancel the rest.
pub async fn cancel_ends_ready_and_scheduled_jobs_by_id_kind_and_all(s: Subject) {
    let q = unique_queue();
    let client = Client::new(s.store.clone());
    let prio = EnqueueOptions::default().priority(80);
    let pong = NewJob::from_job(&Pong { n: 9 }, &EnqueueOptions::default()).unwrap();
    let ids = enqueue(
        &s.store,
        &q,
        vec![
            new_job(1),
            later(2),
            new_job_with(3, prio),
            new_job(4),
            new_job(5),
            pong,
        ],
    )
    .await;
    // Job 4 goes dead first.
    let dead = enqueue(&s.store, &q, vec![new_job(6)]).await;
    let claimed = claim(&s.store, &q, 6, LEASE, "t").await;
    let six = claimed.iter().find(|j| j.lease.id == dead[0]).unwrap();
    let error = "boom".to_string();
    assert_eq!(
        s.store
            .finish(&[(six.lease.clone(), Outcome::Dead { error })])
            .await
            .unwrap(),
        vec![true]
    );
    // Everything else claimed goes back, unchanged, for the test.
    let back: Vec<_> = claimed
        .iter()
        .filter(|j| j.lease.id != dead[0])
        .map(|j| j.lease.clone())
        .collect();
    s.store.release(&back).await.unwrap();

    let unknown = JobId::new("404404");
    let done = client
        .cancel(
            &q,
            &JobFilter::Ids(vec![
                ids[0].clone(),
                ids[1].clone(),
                ids[2].clone(),
                dead[0].clone(),
                unknown.clone(),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(done.done, 3);
    assert_eq!(
        sorted(done.skipped),
        sorted(vec![
            skipped(&dead[0], Skip::InState(JobState::Dead)),
            skipped(&unknown, Skip::NotFound),
        ])
    );
    let st = stats(&s.store, &q).await;
    assert_eq!(
        (st.ready, st.scheduled, st.cancelled, st.dead),
        (3, 0, 3, 1)
    );
    for id in &ids[..3] {
        let job = s.store.job(&q, id).await.unwrap().expect("kept");
        assert_eq!(job.state, JobState::Cancelled, "job {id}");
        assert!(job.at_ms.is_some(), "when it was cancelled");
    }
    let listed = s
        .store
        .list(&q, JobState::Cancelled, &Cursor::start(), 10)
        .await
        .unwrap();
    assert_eq!(listed.jobs.len(), 3);
    // Cancelling again is an answer, not a change.
    let again = client
        .cancel(&q, &JobFilter::Ids(vec![ids[0].clone()]))
        .await
        .unwrap();
    assert_eq!(again.done, 0);
    assert_eq!(
        again.skipped,
        vec![skipped(&ids[0], Skip::InState(JobState::Cancelled))]
    );

    // The cancelled are never claimed: only 4, 5 and the pong are left to run.
    let by_kind = client
        .cancel(&q, &JobFilter::Kind("pong".into()))
        .await
        .unwrap();
    assert_eq!(by_kind.done, 1);
    let mut left: Vec<JobId> = claim(&s.store, &q, 10, LEASE, "t")
        .await
        .into_iter()
        .map(|j| j.lease.id)
        .collect();
    left.sort();
    assert_eq!(left, vec![ids[3].clone(), ids[4].clone()]);

    // All: what is left, running jobs included.
    let all = client.cancel(&q, &JobFilter::All).await.unwrap();
    assert_eq!(all.done, 2);
    let st = stats(&s.store, &q).await;
    assert_eq!(
        (st.ready, st.scheduled, st.running, st.cancelled, st.dead),
        (0, 0, 0, 6, 1)
    );
}

/// A running job cancelled ends `cancelled` at once: its heartbeat says so while the
/// claim's other job stays held, its outcome is refused, and when its lease runs out it
/// is not retried.
pub async fn a_cancelled_running_job_ends_cancelled_and_its_outcome_is_refused(s: Subject) {
    let q = unique_queue();
    let client = Client::new(s.store.clone());
    let ids = enqueue(&s.store, &q, vec![new_job(1), new_job(2)]).await;
    let lease = Duration::from_millis(600);
    let jobs = claim(&s.store, &q, 2, lease, "t").await;
    assert_eq!(jobs.len(), 2);
    let done = client
        .cancel(&q, &JobFilter::Ids(vec![ids[0].clone()]))
        .await
        .unwrap();
    assert_eq!((done.done, done.skipped.len()), (1, 0));
    let job = s.store.job(&q, &ids[0]).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(job.attempt, 1, "the attempt it was cancelled in counts");

    let beat = s
        .store
        .heartbeat(&[jobs[0].lease.clone()], lease, &[])
        .await
        .unwrap();
    assert_eq!(beat.held, vec![true], "the claim's other job is still held");
    assert_eq!(beat.cancelled, vec![(q.clone(), ids[0].clone())]);

    let one = jobs.iter().find(|j| j.lease.id == ids[0]).unwrap();
    let two = jobs.iter().find(|j| j.lease.id == ids[1]).unwrap();
    let answers = s
        .store
        .finish(&[
            (one.lease.clone(), Outcome::Completed),
            (two.lease.clone(), Outcome::Completed),
        ])
        .await
        .unwrap();
    assert_eq!(answers, vec![false, true]);
    // The claim's last running job is done; the claim stays with its lease, so its
    // worker still hears of the cancel (not of a lost lease).
    let beat = s
        .store
        .heartbeat(&[jobs[0].lease.clone()], lease, &[])
        .await
        .unwrap();
    assert_eq!(beat.held, vec![true]);
    assert_eq!(beat.cancelled, vec![(q.clone(), ids[0].clone())]);
    assert_eq!(
        s.store.job(&q, &ids[0]).await.unwrap().unwrap().state,
        JobState::Cancelled
    );
    let failed = s
        .store
        .finish(&[(
            one.lease.clone(),
            Outcome::Retry {
                delay_ms: 0,
                error: "late".into(),
            },
        )])
        .await
        .unwrap();
    assert_eq!(
        failed,
        vec![false],
        "a failure after the cancel is refused too"
    );
    assert_eq!(
        s.store
            .release(std::slice::from_ref(&one.lease))
            .await
            .unwrap(),
        vec![false]
    );

    // Past its lease, maintenance finds nothing to bring back.
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    s.store.maintain(&q).await.unwrap();
    let st = stats(&s.store, &q).await;
    assert_eq!(
        (st.ready, st.scheduled, st.running, st.cancelled),
        (0, 0, 0, 1)
    );
    assert!(claim(&s.store, &q, 10, LEASE, "t").await.is_empty());
}

/// A cancel reaches a running handler at once — well before its worker's next heartbeat
/// (every 10 s with a 30 s lease) — with the reason `Cancelled`, through `stopped()` and
/// the cancellation token; the handler's `Ok` afterwards is refused, and the job ends
/// `cancelled`, never retried.
pub async fn a_running_handler_hears_of_its_cancel_at_once(s: Subject) {
    let q = unique_queue();
    let client = Client::new(s.store.clone());
    let heard: Arc<Mutex<Option<(StopReason, bool, Instant)>>> = Arc::default();
    let runs = Arc::new(Mutex::new(0u32));
    let (h, r) = (heard.clone(), runs.clone());
    let w = worker(&s, &q)
        .lease(LEASE)
        .handle(move |_: Ping, ctx: JobContext| {
            let (heard, runs) = (h.clone(), r.clone());
            async move {
                *runs.lock().unwrap() += 1;
                let token = ctx.cancellation_token();
                let why = ctx.stopped().await;
                *heard.lock().unwrap() = Some((why, token.is_cancelled(), Instant::now()));
                // Returns Ok anyway: the store must refuse it.
                Ok::<(), JobError>(())
            }
        })
        .build()
        .unwrap();
    let counters = w.counters();
    let handle = w.spawn();
    let ids = enqueue(&s.store, &q, vec![new_job(1)]).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            stats(&s.store, &q).await.running == 1
        })
        .await
    );
    // Give the worker's wait for cancels time to be in place.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = Instant::now();
    let done = client
        .cancel(&q, &JobFilter::Ids(vec![ids[0].clone()]))
        .await
        .unwrap();
    assert_eq!(done.done, 1);
    assert!(
        eventually(Duration::from_secs(5), || async {
            heard.lock().unwrap().is_some()
        })
        .await,
        "the handler never heard of the cancel"
    );
    let (why, token, at) = heard.lock().unwrap().unwrap();
    assert_eq!(why, StopReason::Cancelled);
    assert!(token, "the cancellation token fired too");
    let took = at.duration_since(sent);
    assert!(
        took < Duration::from_secs(2),
        "the cancel took {took:?} to reach the handler: it waited for a heartbeat"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            counters.cancelled() == 1
        })
        .await
    );
    assert_eq!((counters.completed(), counters.stale()), (0, 0));
    assert_eq!(
        client.result(&ids[0]).await.unwrap(),
        Some(Finished::Cancelled)
    );
    handle.shutdown().await.unwrap();
    assert_eq!(*runs.lock().unwrap(), 1, "never run again");
}

/// A cancelled job's unique key is free at once, whether the job was scheduled or
/// running.
pub async fn a_cancelled_jobs_unique_key_is_free(s: Subject) {
    let q = unique_queue();
    let client = Client::new(s.store.clone());
    let keyed = |delay: u64| {
        new_job_with(
            1,
            EnqueueOptions::default()
                .delay(Duration::from_secs(delay))
                .unique("k", UniqueMode::Finished),
        )
    };
    let first = s.store.enqueue_report(&q, vec![keyed(3600)]).await.unwrap();
    client
        .cancel(&q, &JobFilter::Ids(vec![first[0].id.clone()]))
        .await
        .unwrap();
    let second = s.store.enqueue_report(&q, vec![keyed(0)]).await.unwrap();
    assert!(
        !second[0].duplicate,
        "the scheduled holder's cancel freed the key"
    );

    let running = claim(&s.store, &q, 1, LEASE, "t").await;
    assert_eq!(running[0].lease.id, second[0].id);
    client
        .cancel(&q, &JobFilter::Ids(vec![second[0].id.clone()]))
        .await
        .unwrap();
    let third = s.store.enqueue_report(&q, vec![keyed(0)]).await.unwrap();
    assert!(
        !third[0].duplicate,
        "the running holder's cancel freed the key"
    );
}

/// Cancelled jobs are kept under the dead set's limits, counted apart from it.
pub async fn cancelled_jobs_are_kept_under_the_dead_sets_limits(s: Subject) {
    let q = unique_queue();
    let client = Client::new(s.store.clone());
    s.store
        .configure(
            &q,
            &QueueConfig {
                dead_max: 2,
                ..QueueConfig::default()
            },
        )
        .await
        .unwrap();
    enqueue(&s.store, &q, (0..5).map(new_job).collect()).await;
    let done = client.cancel(&q, &JobFilter::All).await.unwrap();
    assert_eq!(done.done, 5);
    s.store.maintain(&q).await.unwrap();
    let st = stats(&s.store, &q).await;
    assert_eq!((st.cancelled, st.dead, st.ready), (2, 0, 0));
}
