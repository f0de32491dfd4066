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
use super::stalled::StalledHeartbeats;
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
            .heartbeat(&leases, Duration::from_millis(600))
            .await
            .unwrap();
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
            .heartbeat(std::slice::from_ref(&old), LEASE)
            .await
            .unwrap(),
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
    let stalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let store: Arc<dyn Store> = Arc::new(StalledHeartbeats {
        inner: s.store.clone(),
        stalled: stalled.clone(),
        failing: Default::default(),
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
        s.store.heartbeat(rest, LEASE).await.unwrap(),
        vec![true, true],
        "two jobs of the claim still run"
    );
    let error = "no".to_string();
    let failed = [(rest[0].clone(), Outcome::Dead { error })];
    assert_eq!(s.store.finish(&failed).await.unwrap(), vec![true]);
    assert_eq!(s.store.release(&rest[1..]).await.unwrap(), vec![true]);
    assert_eq!(
        s.store.heartbeat(&leases, LEASE).await.unwrap(),
        vec![false, false, false],
        "completed, dead and released: nothing is held"
    );
}
