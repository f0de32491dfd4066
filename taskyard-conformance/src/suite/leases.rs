//! Claims, leases and fencing: a claim counts the attempt and leases the job, heartbeats
//! keep the lease, an expired lease gives the job back, and a stale token changes nothing.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use taskyard_core::{
    EnqueueOptions, JobContext, JobState, Lease, LeaseToken, Outcome, Store, Worker,
};

use super::common::{
    LEASE, Ping, SOON, claim, enqueue, new_job, new_job_with, payload_n, stats, worker,
};
use super::stalled::{Faults, Faulty};
use crate::{Subject, eventually, unique_queue, until};

/// Claim counts the attempt, leases the job, and takes the oldest first.
pub async fn claim_counts_attempt_and_leases_oldest_first(s: Subject) {
    let q = unique_queue();
    enqueue(&s.store, &q, (0..3).map(new_job).collect()).await;
    let jobs = claim(&s.store, &q, 2, LEASE, "w1").await;
    assert_eq!(jobs.len(), 2);
    assert_eq!(payload_n(&jobs[0].payload), 0);
    assert!(
        jobs.iter()
            .all(|j| j.attempt == 1 && &*j.kind == "ping" && j.max_attempts == 25)
    );
    assert!(!jobs[0].lease.token.is_empty(), "a claim issues a token");
    let st = stats(&s.store, &q).await;
    assert_eq!((st.ready, st.running), (1, 2));
    let rest = claim(&s.store, &q, 10, LEASE, "w2").await;
    assert_eq!(
        rest.len(),
        1,
        "asking for more than is ready gives what there is"
    );
    assert!(claim(&s.store, &q, 10, LEASE, "w2").await.is_empty());
}

/// Heartbeat renews every lease still held, in one call, and refuses stale tokens.
pub async fn heartbeat_renews_held_leases_and_rejects_stale_tokens(s: Subject) {
    let q = unique_queue();
    enqueue(&s.store, &q, (0..2).map(new_job).collect()).await;
    let jobs = claim(&s.store, &q, 2, Duration::from_millis(600), "w").await;
    let mut leases: Vec<Lease> = jobs.iter().map(|j| j.lease.clone()).collect();
    let mut forged = leases[0].clone();
    // A well-formed token the store never issued.
    forged.token = LeaseToken::mint("forged").unwrap();
    leases.push(forged);
    // Renew past the first lease end; maintenance must not take the jobs back.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let held = s
            .store
            .heartbeat(&leases, Duration::from_millis(600), &[])
            .await
            .unwrap()
            .held;
        assert_eq!(held, vec![true, true, false]);
        s.store.maintain(&q).await.unwrap();
    }
    assert_eq!(stats(&s.store, &q).await.running, 2);
}

/// After a lease expires and another worker claims the job, the first worker's token
/// is refused for heartbeat, complete and fail, and changes nothing.
pub async fn stale_token_cannot_complete_fail_or_heartbeat(s: Subject) {
    let q = unique_queue();
    enqueue(&s.store, &q, vec![new_job(1)]).await;
    let first = claim(&s.store, &q, 1, Duration::from_millis(200), "zombie")
        .await
        .remove(0);
    let store = s.store.clone();
    let q2 = q.clone();
    assert!(
        eventually(SOON, || {
            let store = store.clone();
            let q = q2.clone();
            async move { store.maintain(&q).await.unwrap().expired == 1 }
        })
        .await
    );
    let second = claim(&s.store, &q, 1, LEASE, "alive").await.remove(0);
    assert_eq!(second.attempt, 2);
    let old = first.lease.clone();
    assert_eq!(
        s.store
            .heartbeat(std::slice::from_ref(&old), LEASE, &[])
            .await
            .unwrap()
            .held,
        vec![false]
    );
    assert_eq!(
        s.store
            .finish(&[(old.clone(), Outcome::Completed)])
            .await
            .unwrap(),
        vec![false]
    );
    let now = s.store.now_ms().await.unwrap();
    for stale in [
        Outcome::Dead {
            error: "zombie says no".into(),
        },
        Outcome::Retry {
            delay_ms: 0,
            error: "zombie retries".into(),
        },
        Outcome::RetryAt {
            at_ms: now,
            error: "zombie retries at".into(),
        },
    ] {
        assert_eq!(
            s.store
                .finish(&[(old.clone(), stale.clone())])
                .await
                .unwrap(),
            vec![false],
            "{stale:?}"
        );
    }
    assert_eq!(
        s.store.release(std::slice::from_ref(&old)).await.unwrap(),
        vec![false],
        "a stale release"
    );
    let st = stats(&s.store, &q).await;
    assert_eq!(
        (st.running, st.dead, st.ready, st.scheduled),
        (1, 0, 0, 0),
        "the stale calls changed nothing"
    );
    let job = s.store.job(&q, &second.lease.id).await.unwrap().unwrap();
    assert_eq!((job.state, job.attempt), (JobState::Running, 2));
    assert_eq!(job.errors.len(), 1, "only the expiry is in the history");
    assert_eq!(
        s.store
            .finish(&[(second.lease, Outcome::Completed)])
            .await
            .unwrap(),
        vec![true]
    );
    assert_eq!(stats(&s.store, &q).await.running, 0);
}

/// An expired lease returns the job to ready, attempt kept, error recorded.
pub async fn expired_lease_returns_job_to_ready(s: Subject) {
    let q = unique_queue();
    let ids = enqueue(&s.store, &q, vec![new_job(1)]).await;
    claim(&s.store, &q, 1, Duration::from_millis(300), "w").await;
    let store = s.store.clone();
    let q2 = q.clone();
    let started = Instant::now();
    assert!(
        eventually(SOON, || {
            let (store, q) = (store.clone(), q2.clone());
            async move {
                store.maintain(&q).await.unwrap();
                store.stats(&q).await.unwrap().ready == 1
            }
        })
        .await
    );
    assert!(started.elapsed() < Duration::from_millis(300) + Duration::from_secs(2));
    let info = s.store.job(&q, &ids[0]).await.unwrap().expect("job exists");
    assert_eq!(info.state, JobState::Ready);
    assert_eq!(info.attempt, 1);
    assert_eq!(info.errors.len(), 1);
    assert!(info.errors[0].message.contains("lease expired"));
    let again = claim(&s.store, &q, 1, LEASE, "w").await;
    assert_eq!(again[0].attempt, 2);
}

/// A job whose lease expires on its last attempt goes to dead: a job that crashes its
/// worker cannot loop forever.
pub async fn expired_lease_with_attempts_spent_goes_to_dead(s: Subject) {
    let q = unique_queue();
    let opts = EnqueueOptions::default().max_attempts(1);
    let ids = enqueue(&s.store, &q, vec![new_job_with(1, opts)]).await;
    claim(&s.store, &q, 1, Duration::from_millis(200), "w").await;
    let (store, q2) = (s.store.clone(), q.clone());
    assert!(
        eventually(SOON, || {
            let (store, q) = (store.clone(), q2.clone());
            async move {
                store.maintain(&q).await.unwrap();
                store.stats(&q).await.unwrap().dead == 1
            }
        })
        .await
    );
    let info = s.store.job(&q, &ids[0]).await.unwrap().unwrap();
    assert_eq!(info.state, JobState::Dead);
    assert_eq!(stats(&s.store, &q).await.ready, 0);
}

/// Release gives a job back to the head of ready without charging its attempt.
pub async fn release_returns_job_without_charging_attempt(s: Subject) {
    let q = unique_queue();
    enqueue(&s.store, &q, (0..2).map(new_job).collect()).await;
    let job = claim(&s.store, &q, 1, LEASE, "w").await.remove(0);
    assert_eq!(
        s.store
            .release(std::slice::from_ref(&job.lease))
            .await
            .unwrap(),
        vec![true]
    );
    assert_eq!(
        s.store.release(&[job.lease]).await.unwrap(),
        vec![false],
        "a lease is released once"
    );
    let again = claim(&s.store, &q, 1, LEASE, "w").await.remove(0);
    assert_eq!((payload_n(&again.payload), again.attempt), (0, 1));
}

/// A job held by a worker that died (claimed, never heartbeated) is taken by a live
/// worker once the lease expires, within lease + 2 s, with no leader involved.
pub async fn dead_workers_job_is_reclaimed_by_another_worker(s: Subject) {
    let q = unique_queue();
    enqueue(&s.store, &q, vec![new_job(1)]).await;
    let lease = Duration::from_millis(500);
    let claimed_at = Instant::now();
    claim(&s.store, &q, 1, lease, "crashed-worker").await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let w = worker(&s, &q)
        .maintenance_every(Duration::from_secs(1))
        .handle(move |_job: Ping, ctx: JobContext| {
            let _ = tx.send((Instant::now(), ctx.attempt()));
            std::future::ready(Ok(()))
        })
        .build()
        .unwrap();
    let running = w.spawn();
    let (ran, attempt) = tokio::time::timeout(SOON, rx.recv())
        .await
        .unwrap()
        .unwrap();
    running
        .shutdown()
        .await
        .expect("the worker shut down cleanly");
    assert_eq!(attempt, 2);
    assert!(
        ran - claimed_at < lease + Duration::from_secs(2),
        "took {:?}",
        ran - claimed_at
    );
}

/// The handler of a run whose lease was lost sees it (`JobContext::lease_lost`), and its
/// outcome is refused while the job's new holder keeps it.
pub async fn handler_sees_its_lease_lost_and_its_outcome_is_refused(s: Subject) {
    let q = unique_queue();
    let faults = Faults::default();
    let stalled = faults.stalled.clone();
    let store: Arc<dyn Store> = Arc::new(Faulty {
        inner: s.store.clone(),
        faults,
    });
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    let (lost_tx, mut lost) = tokio::sync::mpsc::unbounded_channel();
    let w = Worker::builder(store)
        .queue(q.as_str())
        .concurrency(1)
        .lease(Duration::from_millis(600))
        .maintenance_every(Duration::from_millis(100))
        .handle(move |_job: Ping, ctx: JobContext| {
            let (started_tx, lost_tx) = (started_tx.clone(), lost_tx.clone());
            async move {
                let _ = started_tx.send(ctx.attempt());
                let deadline = Instant::now() + SOON;
                while !ctx.lease_lost() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                let _ = lost_tx.send(ctx.lease_lost());
                Ok(())
            }
        })
        .build()
        .unwrap();
    let counters = w.counters();
    let running = w.spawn();
    let id = enqueue(&s.store, &q, vec![new_job(1)]).await.remove(0);
    assert_eq!(started.recv().await, Some(1));
    // The worker's heartbeats stop reaching the store (a network stall): the lease
    // expires, maintenance returns the job, and another claimant takes it.
    stalled.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + SOON;
    let thief = loop {
        let _ = s.store.maintain(&q).await;
        if let Some(job) = claim(&s.store, &q, 1, LEASE, "thief").await.pop() {
            break job;
        }
        assert!(Instant::now() < deadline, "the job was not reclaimed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(thief.attempt, 2);
    // The stall ends: the next heartbeat is refused, the handler sees the lease lost.
    stalled.store(false, Ordering::SeqCst);
    let saw = tokio::time::timeout(SOON, lost.recv())
        .await
        .expect("handler ended");
    assert_eq!(saw, Some(true), "lease_lost() was true in the handler");
    until(&counters, |c| c.stale() == 1).await;
    assert_eq!(counters.completed(), 0, "its completion was refused");
    let job = s.store.job(&q, &id).await.unwrap().unwrap();
    assert_eq!(
        (job.state, job.attempt),
        (JobState::Running, 2),
        "still the thief's"
    );
    assert_eq!(
        s.store
            .finish(&[(thief.lease, Outcome::Completed)])
            .await
            .unwrap(),
        vec![true]
    );
    running
        .shutdown()
        .await
        .expect("the worker shut down cleanly");
}

/// Once every job of a claim has finished, its lease is gone: a heartbeat with its token
/// is refused (the store keeps no lease for work that is over).
pub async fn a_claim_whose_jobs_all_finished_holds_no_lease(s: Subject) {
    let q = unique_queue();
    enqueue(&s.store, &q, (0..3).map(new_job).collect()).await;
    let jobs = claim(&s.store, &q, 3, LEASE, "w").await;
    let leases: Vec<Lease> = jobs.iter().map(|j| j.lease.clone()).collect();
    let (first, rest) = leases.split_at(1);
    let done = [(first[0].clone(), Outcome::Completed)];
    assert_eq!(s.store.finish(&done).await.unwrap(), vec![true]);
    assert_eq!(
        s.store.heartbeat(rest, LEASE, &[]).await.unwrap().held,
        vec![true, true],
        "two jobs of the claim still run"
    );
    let error = "no".to_string();
    let failed = [(rest[0].clone(), Outcome::Dead { error })];
    assert_eq!(s.store.finish(&failed).await.unwrap(), vec![true]);
    assert_eq!(s.store.release(&rest[1..]).await.unwrap(), vec![true]);
    assert_eq!(
        s.store.heartbeat(&leases, LEASE, &[]).await.unwrap().held,
        vec![false, false, false],
        "completed, dead and released: nothing is held"
    );
}

/// A completion or failure names its job, not only its claim: once a job was released
/// (or failed), its token no longer holds it, even while another job of the same claim
/// still runs, and the outcome changes nothing.
pub async fn an_outcome_for_a_released_job_is_refused_while_its_claim_runs_on(s: Subject) {
    let q = unique_queue();
    enqueue(&s.store, &q, (0..3).map(new_job).collect()).await;
    let jobs = claim(&s.store, &q, 3, LEASE, "w").await;
    let (a, b) = (jobs[0].lease.clone(), jobs[1].lease.clone());
    assert_eq!(a.token, b.token, "one claim, one token");
    assert_eq!(
        s.store.release(std::slice::from_ref(&a)).await.unwrap(),
        vec![true]
    );
    let late = [
        (a.clone(), Outcome::Completed),
        (
            a.clone(),
            Outcome::Retry {
                delay_ms: 0,
                error: "late".into(),
            },
        ),
        (
            a.clone(),
            Outcome::Dead {
                error: "late".into(),
            },
        ),
    ];
    for outcome in late {
        assert_eq!(
            s.store
                .finish(std::slice::from_ref(&outcome))
                .await
                .unwrap(),
            vec![false],
            "{:?} of a released job was recorded",
            outcome.1
        );
    }
    let st = stats(&s.store, &q).await;
    assert_eq!((st.ready, st.running, st.dead), (1, 2, 0));
    let info = s.store.job(&q, &a.id).await.unwrap().expect("the job");
    assert_eq!(info.state, JobState::Ready);
    assert_eq!(
        info.attempt, 0,
        "a release charges nothing, a refused outcome neither"
    );
    assert!(
        info.errors.is_empty(),
        "a refused failure leaves no error behind"
    );
    // A job of the batch that failed is not its token's either: a completion of it
    // afterwards changes nothing.
    let c = jobs[2].lease.clone();
    let failed = Outcome::Retry {
        delay_ms: 60_000,
        error: "busy".into(),
    };
    assert_eq!(
        s.store.finish(&[(c.clone(), failed)]).await.unwrap(),
        vec![true]
    );
    assert_eq!(
        s.store
            .finish(&[(c.clone(), Outcome::Completed)])
            .await
            .unwrap(),
        vec![false],
        "a completion of a job that failed was recorded"
    );
    assert_eq!(
        s.store
            .job(&q, &c.id)
            .await
            .unwrap()
            .expect("the job")
            .state,
        JobState::Scheduled
    );
    // The batch's other job is still its own: its completion counts.
    assert_eq!(
        s.store.finish(&[(b, Outcome::Completed)]).await.unwrap(),
        vec![true]
    );
    let again = claim(&s.store, &q, 1, LEASE, "w2").await;
    assert_eq!((again[0].lease.id.clone(), again[0].attempt), (a.id, 1));
}

/// A claim retried with its token after the answer was lost answers with the jobs that
/// token holds, lease renewed: no attempt counted twice, no other job handed out — even
/// on a queue paused meanwhile.
pub async fn a_replayed_claim_answers_with_the_same_jobs_and_charges_nothing(s: Subject) {
    let q = unique_queue();
    enqueue(&s.store, &q, (0..5).map(new_job).collect()).await;
    let token = LeaseToken::mint("w").unwrap();
    let short = Duration::from_millis(400);
    let first = s.store.claim(&q, 2, short, &token).await.unwrap().jobs;
    let ids = |jobs: &[taskyard_core::ClaimedJob]| {
        jobs.iter()
            .map(|j| (j.lease.id.clone(), j.attempt))
            .collect::<Vec<_>>()
    };
    assert_eq!(first.len(), 2);
    s.store.set_paused(&q, true).await.unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let replay = s.store.claim(&q, 3, LEASE, &token).await.unwrap().jobs;
    assert_eq!(
        ids(&replay),
        ids(&first),
        "the replay answers the same jobs"
    );
    assert!(replay.iter().all(|j| j.attempt == 1));
    let st = stats(&s.store, &q).await;
    assert_eq!((st.ready, st.running), (3, 2), "nothing more was claimed");
    // The replay renewed the lease: past the first claim's lease end nothing expires.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.store.maintain(&q).await.unwrap().expired, 0);
    // A replay after one of the jobs finished answers with the one still held.
    assert_eq!(
        s.store
            .finish(&[(first[0].lease.clone(), Outcome::Completed)])
            .await
            .unwrap(),
        vec![true]
    );
    let rest = s.store.claim(&q, 2, LEASE, &token).await.unwrap().jobs;
    assert_eq!(ids(&rest), ids(&first[1..]));
    s.store.set_paused(&q, false).await.unwrap();
    let next = claim(&s.store, &q, 5, LEASE, "w2").await;
    assert_eq!(next.len(), 3);
    assert!(next.iter().all(|j| j.attempt == 1));
}

/// A worker whose claim's answer is lost (the call reached the store) sends it again with
/// the same token and runs those very jobs on their first attempt: none waits out a lease
/// or is charged an attempt for the lost answer.
pub async fn a_worker_whose_claim_answer_was_lost_runs_those_jobs_on_their_first_attempt(
    s: Subject,
) {
    let q = unique_queue();
    let faults = Faults::default();
    faults.lose_claim.store(true, Ordering::SeqCst);
    let lose_claim = faults.lose_claim.clone();
    let store: Arc<dyn Store> = Arc::new(Faulty {
        inner: s.store.clone(),
        faults,
    });
    let seen = super::common::Seen::default();
    let w = Worker::builder(store)
        .queue(q.as_str())
        .concurrency(4)
        .maintenance_every(Duration::from_millis(100))
        .handle(super::common::recorder(&seen))
        .build()
        .unwrap();
    let counters = w.counters();
    enqueue(&s.store, &q, (0..10).map(new_job).collect()).await;
    let running = w.spawn();
    until(&counters, |c| c.completed() >= 10).await;
    assert!(!lose_claim.load(Ordering::SeqCst), "no answer was lost");
    running.shutdown().await.unwrap();
    let mut runs = seen.lock().unwrap().clone();
    runs.sort();
    assert_eq!(
        runs,
        (0..10).map(|n| (n, 1)).collect::<Vec<_>>(),
        "each job ran once, on attempt 1"
    );
    assert_eq!((counters.completed(), counters.stale()), (10, 0));
}
