//! The behaviours every store must show. Each `pub async fn` is one test, taking a fresh
//! [`Subject`]; [`run`](crate::run) runs them all on a store. Helpers here are private.
//!
//! Times here are real: leases of a fraction of a second, and every wait is a condition
//! with a deadline.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use taskyard_core::{
    Client, DeadFilter, Due, EnqueueOptions, Error, Job, JobContext, JobError, JobId, JobState,
    Lease, LeaseToken, NewJob, Outcome, QueueConfig, QueueName, QueueOrder, RetryPolicy, Store,
    Worker,
};

use crate::{Running, Subject, eventually, unique_queue, until};

const LEASE: Duration = Duration::from_secs(30);
const SOON: Duration = Duration::from_secs(10);

/// The job most tests enqueue.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Ping {
    /// A number to tell jobs apart.
    pub n: u64,
}

impl Job for Ping {
    const KIND: &'static str = "ping";
}

/// A second kind, for filters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pong {
    /// A number to tell jobs apart.
    pub n: u64,
}

impl Job for Pong {
    const KIND: &'static str = "pong";
}

fn new_job(n: u64) -> NewJob {
    NewJob::from_job(&Ping { n }, &EnqueueOptions::default()).expect("valid job")
}

fn new_job_with(n: u64, opts: EnqueueOptions) -> NewJob {
    NewJob::from_job(&Ping { n }, &opts).expect("valid job")
}

async fn enqueue(store: &Arc<dyn Store>, q: &QueueName, jobs: Vec<NewJob>) -> Vec<JobId> {
    store.enqueue(q, jobs).await.expect("enqueue")
}

async fn claim(
    store: &Arc<dyn Store>,
    q: &QueueName,
    n: usize,
    lease: Duration,
    owner: &str,
) -> Vec<taskyard_core::ClaimedJob> {
    let token = LeaseToken::mint(owner).expect("a valid owner");
    store.claim(q, n, lease, &token).await.expect("claim").jobs
}

async fn stats(store: &Arc<dyn Store>, q: &QueueName) -> taskyard_core::QueueStats {
    store.stats(q).await.expect("stats")
}

fn payload_n(payload: &[u8]) -> u64 {
    serde_json::from_slice::<Ping>(payload)
        .expect("ping payload")
        .n
}

type Run = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), JobError>> + Send>>;

/// A handler that reports when it starts, then sleeps for `run` (for shutdown tests).
fn sleeper(
    run: Duration,
) -> (
    impl Fn(Ping, JobContext) -> Run + Send + Sync + 'static,
    tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    let (started_tx, started_rx) = tokio::sync::mpsc::unbounded_channel();
    let handler = move |_job: Ping, _ctx: JobContext| -> Run {
        let _ = started_tx.send(());
        Box::pin(async move {
            tokio::time::sleep(run).await;
            Ok(())
        })
    };
    (handler, started_rx)
}

/// Ids and attempts of the runs a handler saw.
type Seen = Arc<Mutex<Vec<(u64, u32)>>>;

fn recorder(
    seen: &Seen,
) -> impl Fn(Ping, JobContext) -> std::future::Ready<Result<(), JobError>> + Send + Sync + 'static {
    let seen = seen.clone();
    move |job: Ping, ctx: JobContext| {
        seen.lock().unwrap().push((job.n, ctx.attempt()));
        std::future::ready(Ok(()))
    }
}

fn count(seen: &Seen) -> usize {
    seen.lock().unwrap().len()
}

// ---------------------------------------------------------------- enqueue and claim

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

/// A retry puts the job in scheduled; it is claimable once its delay has passed.
pub async fn retry_schedules_the_job_after_its_delay(s: Subject) {
    let q = unique_queue();
    let ids = enqueue(&s.store, &q, vec![new_job(1)]).await;
    let job = claim(&s.store, &q, 1, LEASE, "w").await.remove(0);
    let retry = Outcome::Retry {
        delay_ms: 400,
        error: "flaky".into(),
    };
    let done = Instant::now();
    assert_eq!(
        s.store.finish(&[(job.lease, retry)]).await.unwrap(),
        vec![true]
    );
    let info = s.store.job(&q, &ids[0]).await.unwrap().unwrap();
    assert_eq!(info.state, JobState::Scheduled);
    assert!(
        claim(&s.store, &q, 1, LEASE, "w").await.is_empty(),
        "not before its delay"
    );
    let (store, q2) = (s.store.clone(), q.clone());
    let got = Arc::new(Mutex::new(None));
    let got2 = got.clone();
    assert!(
        eventually(SOON, || {
            let (store, q, got) = (store.clone(), q2.clone(), got2.clone());
            async move {
                let mut jobs = store
                    .claim(&q, 1, LEASE, &LeaseToken::mint("w").unwrap())
                    .await
                    .unwrap()
                    .jobs;
                match jobs.pop() {
                    Some(j) => {
                        *got.lock().unwrap() = Some(j);
                        true
                    }
                    None => false,
                }
            }
        })
        .await
    );
    assert!(
        done.elapsed() >= Duration::from_millis(350),
        "claimed only after the delay"
    );
    let job = got.lock().unwrap().take().unwrap();
    assert_eq!(job.attempt, 2);
}

/// A handler can ask for a retry at a given time.
pub async fn retry_at_a_given_time(s: Subject) {
    let q = unique_queue();
    let ids = enqueue(&s.store, &q, vec![new_job(1)]).await;
    let job = claim(&s.store, &q, 1, LEASE, "w").await.remove(0);
    let at_ms = s.store.now_ms().await.unwrap() + 60_000;
    let retry = Outcome::RetryAt {
        at_ms,
        error: "later".into(),
    };
    s.store.finish(&[(job.lease, retry)]).await.unwrap();
    let info = s.store.job(&q, &ids[0]).await.unwrap().unwrap();
    assert_eq!(info.state, JobState::Scheduled);
    assert_eq!(info.at_ms, Some(at_ms));
}

/// The last allowed failure sends the job to dead, with every attempt's error.
pub async fn failure_with_attempts_spent_goes_to_dead_with_history(s: Subject) {
    let q = unique_queue();
    let opts = EnqueueOptions::default().max_attempts(3);
    let ids = enqueue(&s.store, &q, vec![new_job_with(1, opts)]).await;
    for attempt in 1..=3u32 {
        let job = claim(&s.store, &q, 1, LEASE, "w").await.remove(0);
        assert_eq!(job.attempt, attempt);
        let retry = Outcome::Retry {
            delay_ms: 0,
            error: format!("boom {attempt}"),
        };
        s.store.finish(&[(job.lease, retry)]).await.unwrap();
    }
    let st = stats(&s.store, &q).await;
    assert_eq!((st.dead, st.ready, st.scheduled), (1, 0, 0));
    let info = s.store.job(&q, &ids[0]).await.unwrap().unwrap();
    assert_eq!(info.state, JobState::Dead);
    let msgs: Vec<_> = info
        .errors
        .iter()
        .map(|e| (e.attempt, e.message.as_str()))
        .collect();
    assert_eq!(msgs, vec![(1, "boom 1"), (2, "boom 2"), (3, "boom 3")]);
    assert_eq!(info.payload, r#"{"n":1}"#);
}

/// A permanent failure goes to dead whatever attempts are left.
pub async fn permanent_failure_goes_straight_to_dead(s: Subject) {
    let q = unique_queue();
    enqueue(&s.store, &q, vec![new_job(1)]).await;
    let job = claim(&s.store, &q, 1, LEASE, "w").await.remove(0);
    s.store
        .finish(&[(
            job.lease,
            Outcome::Dead {
                error: "no such user".into(),
            },
        )])
        .await
        .unwrap();
    let dead = s.store.list(&q, JobState::Dead, 0, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempt, 1);
    assert_eq!(dead[0].errors[0].message, "no such user");
}

async fn kill_all(store: &Arc<dyn Store>, q: &QueueName, n: usize) {
    let jobs = claim(store, q, n, LEASE, "w").await;
    let outcomes: Vec<_> = jobs
        .into_iter()
        .map(|j| (j.lease, Outcome::Dead { error: "x".into() }))
        .collect();
    store.finish(&outcomes).await.unwrap();
}

/// Redrive moves dead jobs back to ready with fresh attempts: one, by kind, or all.
pub async fn redrive_one_by_kind_and_all(s: Subject) {
    let q = unique_queue();
    let mut jobs: Vec<NewJob> = (0..4).map(new_job).collect();
    jobs.push(NewJob::from_job(&Pong { n: 9 }, &EnqueueOptions::default()).unwrap());
    jobs.push(NewJob::from_job(&Pong { n: 10 }, &EnqueueOptions::default()).unwrap());
    let ids = enqueue(&s.store, &q, jobs).await;
    kill_all(&s.store, &q, 6).await;
    assert_eq!(stats(&s.store, &q).await.dead, 6);

    let n = s
        .store
        .redrive(
            &q,
            &DeadFilter::Ids(vec![ids[0].clone(), ids[0].clone(), JobId::new("nope")]), // twice: moves once
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    let info = s.store.job(&q, &ids[0]).await.unwrap().unwrap();
    assert_eq!((info.state, info.attempt), (JobState::Ready, 0));
    assert_eq!(info.errors.len(), 1, "history is kept");

    assert_eq!(
        s.store
            .redrive(&q, &DeadFilter::Kind("pong".into()))
            .await
            .unwrap(),
        2
    );
    assert_eq!(stats(&s.store, &q).await.dead, 3);
    assert_eq!(s.store.redrive(&q, &DeadFilter::All).await.unwrap(), 3);
    let st = stats(&s.store, &q).await;
    assert_eq!((st.dead, st.ready), (0, 6));
    let again = claim(&s.store, &q, 6, LEASE, "w").await;
    assert!(
        again.iter().all(|j| j.attempt == 1),
        "redriven jobs start their attempts afresh"
    );
}

/// Purge deletes dead jobs for good.
pub async fn purge_deletes_dead_jobs(s: Subject) {
    let q = unique_queue();
    let ids = enqueue(&s.store, &q, (0..3).map(new_job).collect()).await;
    kill_all(&s.store, &q, 3).await;
    assert_eq!(
        s.store
            .purge(&q, &DeadFilter::Ids(vec![ids[1].clone()]))
            .await
            .unwrap(),
        1
    );
    assert!(s.store.job(&q, &ids[1]).await.unwrap().is_none());
    assert_eq!(s.store.purge(&q, &DeadFilter::All).await.unwrap(), 2);
    assert_eq!(stats(&s.store, &q).await.dead, 0);
    assert!(s.store.job(&q, &ids[0]).await.unwrap().is_none());
}

/// The dead set keeps at most its configured count, oldest dropped first.
pub async fn dead_set_is_trimmed_to_its_max(s: Subject) {
    let q = unique_queue();
    let config = QueueConfig {
        dead_max: 3,
        ..QueueConfig::default()
    };
    s.store.configure(&q, &config).await.unwrap();
    assert_eq!(s.store.config(&q).await.unwrap(), config);
    let ids = enqueue(&s.store, &q, (0..5).map(new_job).collect()).await;
    for _ in 0..5 {
        kill_all(&s.store, &q, 1).await;
    }
    s.store.maintain(&q).await.unwrap();
    assert_eq!(stats(&s.store, &q).await.dead, 3);
    assert!(
        s.store.job(&q, &ids[0]).await.unwrap().is_none(),
        "the oldest went first"
    );
    assert!(s.store.job(&q, &ids[4]).await.unwrap().is_some());
}

/// Dead jobs older than the configured age are dropped by maintenance.
pub async fn dead_jobs_past_their_age_are_dropped(s: Subject) {
    let q = unique_queue();
    let config = QueueConfig {
        dead_max_age_ms: 200,
        ..QueueConfig::default()
    };
    s.store.configure(&q, &config).await.unwrap();
    enqueue(&s.store, &q, (0..3).map(new_job).collect()).await;
    kill_all(&s.store, &q, 3).await;
    let (store, q2) = (s.store.clone(), q.clone());
    assert!(
        eventually(SOON, || {
            let (store, q) = (store.clone(), q2.clone());
            async move {
                store.maintain(&q).await.unwrap();
                store.stats(&q).await.unwrap().dead == 0
            }
        })
        .await
    );
    assert!(
        s.store
            .list(&q, JobState::Dead, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Completed jobs leave no trace by default; with retention they are kept, up to the max.
pub async fn completed_jobs_are_removed_unless_retained(s: Subject) {
    let q = unique_queue();
    let ids = enqueue(&s.store, &q, vec![new_job(1)]).await;
    let job = claim(&s.store, &q, 1, LEASE, "w").await.remove(0);
    s.store
        .finish(&[(job.lease, Outcome::Completed)])
        .await
        .unwrap();
    assert!(s.store.job(&q, &ids[0]).await.unwrap().is_none());
    assert_eq!(
        stats(&s.store, &q).await,
        taskyard_core::QueueStats {
            queue: q.to_string(),
            ..Default::default()
        }
    );

    let config = QueueConfig {
        completed_max: 2,
        ..QueueConfig::default()
    };
    s.store.configure(&q, &config).await.unwrap();
    let ids = enqueue(&s.store, &q, (0..3).map(new_job).collect()).await;
    for _ in 0..3 {
        let job = claim(&s.store, &q, 1, LEASE, "w").await.remove(0);
        s.store
            .finish(&[(job.lease, Outcome::Completed)])
            .await
            .unwrap();
    }
    assert_eq!(stats(&s.store, &q).await.completed, 2);
    let kept = s.store.job(&q, &ids[2]).await.unwrap().unwrap();
    assert_eq!(kept.state, JobState::Completed);

    // Completions reported together are kept alike (up to the count).
    let config = QueueConfig {
        completed_max: 10,
        ..QueueConfig::default()
    };
    s.store.configure(&q, &config).await.unwrap();
    let ids = enqueue(&s.store, &q, (0..3).map(new_job).collect()).await;
    let done: Vec<(Lease, Outcome)> = claim(&s.store, &q, 3, LEASE, "w")
        .await
        .into_iter()
        .map(|j| (j.lease, Outcome::Completed))
        .collect();
    assert_eq!(s.store.finish(&done).await.unwrap(), vec![true; 3]);
    for id in &ids {
        let job = s.store.job(&q, id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Completed, "{id}");
    }
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

/// A paused queue accepts enqueues but yields no claims until resumed.
pub async fn paused_queue_yields_no_claims_until_resumed(s: Subject) {
    let q = unique_queue();
    s.store.set_paused(&q, true).await.unwrap();
    enqueue(&s.store, &q, vec![new_job(1)]).await;
    assert!(stats(&s.store, &q).await.paused);
    assert!(claim(&s.store, &q, 1, LEASE, "w").await.is_empty());
    s.store.set_paused(&q, false).await.unwrap();
    assert!(!stats(&s.store, &q).await.paused);
    assert_eq!(claim(&s.store, &q, 1, LEASE, "w").await.len(), 1);
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

/// A job can be found by id in each state, and listed by state.
pub async fn job_lookup_in_every_state(s: Subject) {
    let q = unique_queue();
    let delayed = EnqueueOptions::default().delay(Duration::from_secs(3600));
    let ids = enqueue(
        &s.store,
        &q,
        vec![new_job(0), new_job(1), new_job(2), new_job_with(3, delayed)],
    )
    .await;
    let running = claim(&s.store, &q, 2, LEASE, "w").await;
    s.store
        .finish(&[(
            running[1].lease.clone(),
            Outcome::Dead { error: "x".into() },
        )])
        .await
        .unwrap();
    let state = |i: usize| {
        let (store, q, id) = (s.store.clone(), q.clone(), ids[i].clone());
        async move { store.job(&q, &id).await.unwrap().map(|j| j.state) }
    };
    assert_eq!(state(0).await, Some(JobState::Running));
    assert_eq!(state(1).await, Some(JobState::Dead));
    assert_eq!(state(2).await, Some(JobState::Ready));
    assert_eq!(state(3).await, Some(JobState::Scheduled));
    assert!(
        s.store
            .job(&q, &JobId::new("123456789"))
            .await
            .unwrap()
            .is_none()
    );
    for (st, id) in [
        (JobState::Running, 0),
        (JobState::Dead, 1),
        (JobState::Ready, 2),
        (JobState::Scheduled, 3),
    ] {
        let list = s.store.list(&q, st, 0, 10).await.unwrap();
        assert_eq!(list.len(), 1, "{st}");
        assert_eq!(list[0].id, ids[id]);
        assert_eq!(list[0].kind, "ping");
    }
    let running = s.store.job(&q, &ids[0]).await.unwrap().unwrap();
    assert!(running.at_ms.is_some(), "a running job shows its lease end");
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

/// An idle waiter wakes when a job is enqueued, long before its timeout.
pub async fn wait_returns_when_a_job_arrives(s: Subject) {
    let q = unique_queue();
    let store = s.store.clone();
    let qs = vec![q.clone()];
    let waiter = tokio::spawn(async move {
        let start = Instant::now();
        store.wait(&qs, Duration::from_secs(20)).await.unwrap();
        start.elapsed()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    enqueue(&s.store, &q, vec![new_job(1)]).await;
    let waited = tokio::time::timeout(SOON, waiter)
        .await
        .expect("wait returned")
        .unwrap();
    assert!(
        waited < Duration::from_secs(5),
        "woken by the enqueue, not the timeout: {waited:?}"
    );
}

// ---------------------------------------------------------------- the worker runtime

fn worker(s: &Subject, q: &QueueName) -> taskyard_core::WorkerBuilder {
    Worker::builder(s.store.clone())
        .queue(q.as_str())
        .maintenance_every(Duration::from_millis(100))
}

/// A worker runs every job once and the store ends empty.
pub async fn worker_completes_every_job(s: Subject) {
    let q = unique_queue();
    let seen: Seen = Default::default();
    let w = worker(&s, &q)
        .concurrency(20)
        .handle(recorder(&seen))
        .build()
        .unwrap();
    let counters = w.counters();
    let running = Running::start(w);
    Client::new(s.store.clone())
        .enqueue_many(
            (0..500).map(|n| Ping { n }),
            EnqueueOptions::default().queue(q.as_str()),
        )
        .await
        .unwrap();
    until(&counters, |c| c.completed() == 500).await;
    running.shutdown().await;
    let mut ns: Vec<u64> = seen.lock().unwrap().iter().map(|(n, _)| *n).collect();
    ns.sort();
    assert_eq!(
        ns,
        (0..500).collect::<Vec<_>>(),
        "each job ran exactly once"
    );
    let st = stats(&s.store, &q).await;
    assert_eq!((st.ready, st.running, st.scheduled, st.dead), (0, 0, 0, 0));
}

/// A failing handler is retried after its backoff until it succeeds.
pub async fn worker_retries_with_backoff_until_success(s: Subject) {
    let q = unique_queue();
    let seen: Seen = Default::default();
    let seen2 = seen.clone();
    let w = worker(&s, &q)
        .handle(move |job: Ping, ctx: JobContext| {
            seen2.lock().unwrap().push((job.n, ctx.attempt()));
            async move {
                if ctx.attempt() < 3 {
                    Err(JobError::retry("not yet"))
                } else {
                    Ok(())
                }
            }
        })
        .build()
        .unwrap();
    let counters = w.counters();
    let running = Running::start(w);
    let policy = RetryPolicy::default()
        .base(Duration::from_millis(50))
        .cap(Duration::from_millis(200));
    let id = Client::new(s.store.clone())
        .enqueue_with(
            &Ping { n: 7 },
            EnqueueOptions::default().queue(q.as_str()).retry(policy),
        )
        .await
        .unwrap();
    until(&counters, |c| c.completed() == 1).await;
    running.shutdown().await;
    assert_eq!(*seen.lock().unwrap(), vec![(7, 1), (7, 2), (7, 3)]);
    assert_eq!(counters.failed(), 2);
    assert!(s.store.job(&q, &id).await.unwrap().is_none());
}

/// A handler can ask for its retry at a given time, and fail for good.
pub async fn handler_chooses_retry_time_or_permanent_failure(s: Subject) {
    let q = unique_queue();
    let w = worker(&s, &q)
        .handle(move |job: Ping, _ctx: JobContext| async move {
            match job.n {
                0 => Err(JobError::retry_at(
                    SystemTime::now() + Duration::from_secs(3600),
                    "later",
                )),
                _ => Err(JobError::permanent("no such user")),
            }
        })
        .build()
        .unwrap();
    let counters = w.counters();
    let running = Running::start(w);
    let ids = enqueue(&s.store, &q, vec![new_job(0), new_job(1)]).await;
    until(&counters, |c| c.failed() == 2).await;
    running.shutdown().await;
    let later = s.store.job(&q, &ids[0]).await.unwrap().unwrap();
    assert_eq!(later.state, JobState::Scheduled);
    let now = s.store.now_ms().await.unwrap();
    let due = later.at_ms.unwrap();
    assert!(
        due > now + 3_500_000 && due < now + 3_700_000,
        "due {due}, now {now}"
    );
    let dead = s.store.job(&q, &ids[1]).await.unwrap().unwrap();
    assert_eq!((dead.state, dead.attempt), (JobState::Dead, 1));
    assert_eq!(dead.errors[0].message, "no such user");
}

/// A panic in a handler is a failed attempt; the worker keeps running jobs.
pub async fn handler_panic_is_a_failure_and_worker_lives_on(s: Subject) {
    let q = unique_queue();
    let attempts = Arc::new(AtomicU32::new(0));
    let a2 = attempts.clone();
    let w = worker(&s, &q)
        .handle(move |job: Ping, ctx: JobContext| {
            a2.fetch_add(1, Ordering::SeqCst);
            async move {
                if job.n == 0 && ctx.attempt() == 1 {
                    panic!("handler bug");
                }
                Ok(())
            }
        })
        .build()
        .unwrap();
    let counters = w.counters();
    let running = Running::start(w);
    let policy = RetryPolicy::default()
        .base(Duration::from_millis(10))
        .cap(Duration::from_millis(20));
    let opts = EnqueueOptions::default().queue(q.as_str()).retry(policy);
    Client::new(s.store.clone())
        .enqueue_many((0..5).map(|n| Ping { n }), opts)
        .await
        .unwrap();
    until(&counters, |c| c.completed() == 5).await;
    running.shutdown().await;
    assert_eq!(attempts.load(Ordering::SeqCst), 6);
    assert_eq!(counters.failed(), 1);
}

/// A payload that does not decode for its kind sends the job to dead with the error.
pub async fn undecodable_payload_goes_to_dead_with_decode_error(s: Subject) {
    let q = unique_queue();
    let seen: Seen = Default::default();
    let w = worker(&s, &q).handle(recorder(&seen)).build().unwrap();
    let counters = w.counters();
    let running = Running::start(w);
    let bad = NewJob::new(
        "ping",
        br#"{"n":"not a number"}"#.to_vec(),
        &EnqueueOptions::default(),
        RetryPolicy::default(),
    )
    .unwrap();
    let ids = enqueue(&s.store, &q, vec![bad, new_job(1)]).await;
    until(&counters, |c| c.completed() == 1 && c.failed() == 1).await;
    running.shutdown().await;
    let info = s.store.job(&q, &ids[0]).await.unwrap().unwrap();
    assert_eq!(info.state, JobState::Dead);
    assert_eq!(info.attempt, 1, "no retry for a payload that cannot decode");
    assert!(
        info.errors[0].message.contains("does not decode"),
        "{:?}",
        info.errors
    );
}

/// A job running several times its lease completes once: heartbeats keep it.
pub async fn long_job_is_kept_alive_by_heartbeats(s: Subject) {
    let q = unique_queue();
    let seen: Seen = Default::default();
    let seen2 = seen.clone();
    let w = worker(&s, &q)
        .lease(Duration::from_millis(400))
        .handle(move |job: Ping, ctx: JobContext| {
            seen2.lock().unwrap().push((job.n, ctx.attempt()));
            async move {
                tokio::time::sleep(Duration::from_millis(2000)).await;
                if ctx.lease_lost() {
                    Err(JobError::retry("lost"))
                } else {
                    Ok(())
                }
            }
        })
        .build()
        .unwrap();
    let counters = w.counters();
    let running = Running::start(w);
    enqueue(&s.store, &q, vec![new_job(1)]).await;
    until(&counters, |c| c.completed() == 1).await;
    running.shutdown().await;
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(1, 1)],
        "one run, never redelivered"
    );
    assert_eq!(counters.failed(), 0);
}

/// Shutdown stops claiming and lets running jobs finish within the grace period.
pub async fn shutdown_waits_for_running_jobs(s: Subject) {
    let q = unique_queue();
    let (handler, mut started_rx) = sleeper(Duration::from_millis(300));
    let w = worker(&s, &q)
        .grace(Duration::from_secs(10))
        .handle(handler)
        .build()
        .unwrap();
    let counters = w.counters();
    let running = Running::start(w);
    enqueue(&s.store, &q, vec![new_job(1)]).await;
    tokio::time::timeout(SOON, started_rx.recv()).await.unwrap();
    running.shutdown().await;
    assert_eq!(counters.completed(), 1);
    let st = stats(&s.store, &q).await;
    assert_eq!((st.running, st.ready), (0, 0));
}

/// Jobs still running when the grace period ends are released: back to ready, their
/// attempt not charged.
pub async fn shutdown_releases_jobs_past_grace(s: Subject) {
    let q = unique_queue();
    let (handler, mut started_rx) = sleeper(Duration::from_secs(3600));
    let w = worker(&s, &q)
        .grace(Duration::from_millis(200))
        .handle(handler)
        .build()
        .unwrap();
    let running = Running::start(w);
    let ids = enqueue(&s.store, &q, vec![new_job(1)]).await;
    tokio::time::timeout(SOON, started_rx.recv()).await.unwrap();
    running.shutdown().await;
    let info = s.store.job(&q, &ids[0]).await.unwrap().unwrap();
    assert_eq!((info.state, info.attempt), (JobState::Ready, 0));
}

/// An idle worker blocks in the store and starts a new job at once, not at its next poll.
pub async fn idle_worker_picks_up_without_polling(s: Subject) {
    let q = unique_queue();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let w = worker(&s, &q)
        .handle(move |_job: Ping, _ctx: JobContext| {
            let _ = tx.send(Instant::now());
            std::future::ready(Ok(()))
        })
        .build()
        .unwrap();
    let running = Running::start(w);
    // Let the worker go idle (its claim finds nothing, then it blocks).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut pickups = Vec::new();
    for n in 0..15 {
        let sent = Instant::now();
        enqueue(&s.store, &q, vec![new_job(n)]).await;
        let started = tokio::time::timeout(SOON, rx.recv())
            .await
            .unwrap()
            .unwrap();
        pickups.push(started - sent);
        // Pacing: each job finds the worker idle again, at a different point of any
        // cycle a poll would have (a fixed pause could fall in step with one).
        tokio::time::sleep(Duration::from_millis(40 + (37 * n) % 100)).await;
    }
    running.shutdown().await;
    // A wakeup answers in about a millisecond; a poll every P ms spreads pickups over
    // [0, P], so a median under 10 ms of 15 rules out a poll of 60 ms or slower (a 60 ms
    // poll would pass with a chance of about 1 in 250).
    pickups.sort();
    assert!(
        pickups[7] < Duration::from_millis(10),
        "pickups {pickups:?}"
    );
    assert!(
        pickups[14] < Duration::from_millis(250),
        "pickups {pickups:?}"
    );
}

/// Strict order: a worker drains its first queue before it takes from the second.
pub async fn strict_queue_order_drains_first_queue_first(s: Subject) {
    let (q1, q2) = (unique_queue(), unique_queue());
    let order = Arc::new(Mutex::new(Vec::new()));
    enqueue(&s.store, &q2, (100..110).map(new_job).collect()).await;
    enqueue(&s.store, &q1, (0..10).map(new_job).collect()).await;
    let o2 = order.clone();
    let w = Worker::builder(s.store.clone())
        .queue(q1.as_str())
        .queue(q2.as_str())
        .concurrency(1)
        .handle(move |job: Ping, _ctx: JobContext| {
            o2.lock().unwrap().push(job.n);
            std::future::ready(Ok(()))
        })
        .build()
        .unwrap();
    let counters = w.counters();
    let running = Running::start(w);
    until(&counters, |c| c.completed() == 20).await;
    running.shutdown().await;
    let order = order.lock().unwrap().clone();
    assert!(order[..10].iter().all(|n| *n < 100), "{order:?}");
}

/// Weighted order: both queues are served, the heavier one more often.
pub async fn worker_serves_several_queues_by_weight(s: Subject) {
    let (q1, q2) = (unique_queue(), unique_queue());
    enqueue(&s.store, &q1, (0..300).map(new_job).collect()).await;
    enqueue(&s.store, &q2, (1000..1300).map(new_job).collect()).await;
    let order = Arc::new(Mutex::new(Vec::new()));
    let o2 = order.clone();
    let w = Worker::builder(s.store.clone())
        .weighted_queue(q1.as_str(), 4)
        .weighted_queue(q2.as_str(), 1)
        .order(QueueOrder::Weighted)
        .concurrency(1)
        .handle(move |job: Ping, _ctx: JobContext| {
            o2.lock().unwrap().push(job.n);
            std::future::ready(Ok(()))
        })
        .build()
        .unwrap();
    let counters = w.counters();
    let running = Running::start(w);
    until(&counters, |c| c.completed() >= 200).await;
    running.shutdown().await;
    let order = order.lock().unwrap().clone();
    let first: Vec<_> = order[..200].to_vec();
    let heavy = first.iter().filter(|n| **n < 1000).count();
    assert!(
        heavy > 120 && heavy < 200,
        "weight 4:1 gave {heavy} of 200 from the heavy queue"
    );
}

/// A worker does not take jobs from a paused queue, and resumes when it is resumed.
pub async fn worker_skips_paused_queue_until_resumed(s: Subject) {
    let q = unique_queue();
    let other = unique_queue();
    let client = Client::new(s.store.clone());
    client.pause(&q).await.unwrap();
    let seen: Seen = Default::default();
    let w = worker(&s, &q)
        .queue(other.as_str())
        .handle(recorder(&seen))
        .build()
        .unwrap();
    let running = Running::start(w);
    enqueue(&s.store, &q, vec![new_job(1)]).await;
    // The worker serves the paused queue first and a live one second: once it has run
    // a job enqueued on the live one after the paused job, it has passed the paused
    // queue by with a job in it.
    enqueue(&s.store, &other, vec![new_job(2)]).await;
    let seen2 = seen.clone();
    assert!(
        eventually(SOON, || {
            let s = seen2.clone();
            async move { count(&s) == 1 }
        })
        .await
    );
    assert_eq!(
        *seen.lock().unwrap(),
        vec![(2, 1)],
        "paused: nothing of it runs"
    );
    assert_eq!(stats(&s.store, &q).await.ready, 1);
    client.resume(&q).await.unwrap();
    let seen2 = seen.clone();
    assert!(
        eventually(SOON, || {
            let s = seen2.clone();
            async move { count(&s) == 2 }
        })
        .await
    );
    running.shutdown().await;
}

/// A delayed job runs when it is due.
pub async fn worker_runs_delayed_job_when_due(s: Subject) {
    let q = unique_queue();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let w = worker(&s, &q)
        .handle(move |_job: Ping, _ctx: JobContext| {
            let _ = tx.send(Instant::now());
            std::future::ready(Ok(()))
        })
        .build()
        .unwrap();
    let running = Running::start(w);
    let sent = Instant::now();
    Client::new(s.store.clone())
        .enqueue_with(
            &Ping { n: 1 },
            EnqueueOptions::default()
                .queue(q.as_str())
                .delay(Duration::from_millis(700)),
        )
        .await
        .unwrap();
    let ran = tokio::time::timeout(SOON, rx.recv())
        .await
        .unwrap()
        .unwrap();
    running.shutdown().await;
    let after = ran - sent;
    assert!(after >= Duration::from_millis(650), "ran early: {after:?}");
    assert!(
        after < Duration::from_millis(700) + Duration::from_millis(1500),
        "ran late: {after:?}"
    );
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
    let running = Running::start(w);
    let (ran, attempt) = tokio::time::timeout(SOON, rx.recv())
        .await
        .unwrap()
        .unwrap();
    running.shutdown().await;
    assert_eq!(attempt, 2);
    assert!(
        ran - claimed_at < lease + Duration::from_secs(2),
        "took {:?}",
        ran - claimed_at
    );
}

// ---------------------------------------------------------------- promises of the docs

/// A job of a kind this worker has no handler for is a retryable failure (a rolling
/// deploy may not have the handler everywhere yet), not a permanent one: it is tried
/// again until its attempts are spent.
pub async fn job_without_a_handler_here_is_retried(s: Subject) {
    let q = unique_queue();
    let w = worker(&s, &q)
        .handle(recorder(&Seen::default()))
        .build()
        .unwrap();
    let counters = w.counters();
    let running = Running::start(w);
    let policy = RetryPolicy::default()
        .max_attempts(3)
        .base(Duration::from_millis(10))
        .cap(Duration::from_millis(20));
    let opts = EnqueueOptions::default().retry(policy);
    let job = NewJob::new("not.handled.here", b"{}".to_vec(), &opts, policy).unwrap();
    let id = enqueue(&s.store, &q, vec![job]).await.remove(0);
    until(&counters, |c| c.failed() == 3).await;
    running.shutdown().await;
    let job = s.store.job(&q, &id).await.unwrap().unwrap();
    assert_eq!((job.state, job.attempt), (JobState::Dead, 3));
    assert_eq!(job.errors.len(), 3, "three attempts, each a failure");
    for e in &job.errors {
        assert!(
            e.message.contains("no handler for kind not.handled.here"),
            "{e:?}"
        );
    }
}

/// `retry_after` and `retry_at` choose when, not whether: once the attempts are spent
/// the job is dead, with every attempt's error.
pub async fn chosen_retry_times_end_in_dead_when_attempts_are_spent(s: Subject) {
    let q = unique_queue();
    let w = worker(&s, &q)
        .handle(move |job: Ping, ctx: JobContext| async move {
            let msg = format!("attempt {}", ctx.attempt());
            match job.n {
                0 => Err(JobError::retry_after(Duration::from_millis(10), msg)),
                _ => Err(JobError::retry_at(SystemTime::now(), msg)),
            }
        })
        .build()
        .unwrap();
    let counters = w.counters();
    let running = Running::start(w);
    let opts = EnqueueOptions::default().max_attempts(3);
    let ids = enqueue(
        &s.store,
        &q,
        vec![new_job_with(0, opts.clone()), new_job_with(1, opts)],
    )
    .await;
    until(&counters, |c| c.failed() == 6).await;
    running.shutdown().await;
    for id in &ids {
        let job = s.store.job(&q, id).await.unwrap().unwrap();
        assert_eq!((job.state, job.attempt), (JobState::Dead, 3), "{job:?}");
        let messages: Vec<&str> = job.errors.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(messages, ["attempt 1", "attempt 2", "attempt 3"]);
    }
}

/// A failed attempt's message is kept as one line of at most 1 KiB, cut at a character
/// boundary.
pub async fn failure_message_is_kept_as_one_line_of_at_most_1_kib(s: Subject) {
    let q = unique_queue();
    let w = worker(&s, &q)
        .handle(|_job: Ping, _ctx: JobContext| async move {
            // Multi-line and far over 1 KiB, with multi-byte characters at the cut.
            let long = format!("first line\nsecond\tline\r\n{}", "é".repeat(2000));
            Err::<(), _>(JobError::permanent(long))
        })
        .build()
        .unwrap();
    let counters = w.counters();
    let running = Running::start(w);
    let id = enqueue(&s.store, &q, vec![new_job(1)]).await.remove(0);
    until(&counters, |c| c.failed() == 1).await;
    running.shutdown().await;
    let job = s.store.job(&q, &id).await.unwrap().unwrap();
    let message = &job.errors[0].message;
    assert!(!message.contains(['\n', '\r', '\t']), "{message:?}");
    assert!(
        message.starts_with("first line second line  é"),
        "{message:?}"
    );
    assert!(
        message.len() <= 1024 && message.len() > 1000,
        "{}",
        message.len()
    );
}

/// A queue nobody configured keeps dead jobs up to 10,000 and 30 days and removes
/// completed jobs at once (kept, when asked, up to 24 h).
pub async fn a_new_queue_has_the_default_retention(s: Subject) {
    let q = unique_queue();
    let config = s.store.config(&q).await.unwrap();
    assert_eq!(config.max_len, 0, "no max length");
    assert_eq!(config.dead_max, 10_000);
    assert_eq!(config.dead_max_age_ms, 30 * 24 * 3600 * 1000);
    assert_eq!(config.completed_max, 0);
    assert_eq!(config.completed_max_age_ms, 24 * 3600 * 1000);
    assert_eq!(config, QueueConfig::default());
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
            s.store.purge(&q, &DeadFilter::All).await.unwrap(),
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

/// The handler of a run whose lease was lost sees it (`JobContext::lease_lost`), and its
/// outcome is refused while the job's new holder keeps it.
pub async fn handler_sees_its_lease_lost_and_its_outcome_is_refused(s: Subject) {
    let q = unique_queue();
    let stalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let store: Arc<dyn Store> = Arc::new(StalledHeartbeats {
        inner: s.store.clone(),
        stalled: stalled.clone(),
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
    let running = Running::start(w);
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
    running.shutdown().await;
}

/// A store whose heartbeats can be made to vanish on the way (they answer "held" without
/// reaching it), as in a network stall; everything else goes through.
struct StalledHeartbeats {
    inner: Arc<dyn Store>,
    stalled: Arc<std::sync::atomic::AtomicBool>,
}

#[async_trait::async_trait]
impl Store for StalledHeartbeats {
    async fn enqueue(
        &self,
        queue: &QueueName,
        jobs: Vec<NewJob>,
    ) -> taskyard_core::Result<Vec<JobId>> {
        self.inner.enqueue(queue, jobs).await
    }
    async fn claim(
        &self,
        queue: &QueueName,
        max: usize,
        lease: Duration,
        token: &LeaseToken,
    ) -> taskyard_core::Result<taskyard_core::Claim> {
        self.inner.claim(queue, max, lease, token).await
    }
    async fn wait(&self, queues: &[QueueName], timeout: Duration) -> taskyard_core::Result<()> {
        self.inner.wait(queues, timeout).await
    }
    async fn heartbeat(
        &self,
        leases: &[Lease],
        lease: Duration,
    ) -> taskyard_core::Result<Vec<bool>> {
        if self.stalled.load(Ordering::SeqCst) {
            return Ok(vec![true; leases.len()]);
        }
        self.inner.heartbeat(leases, lease).await
    }
    async fn finish(&self, outcomes: &[(Lease, Outcome)]) -> taskyard_core::Result<Vec<bool>> {
        self.inner.finish(outcomes).await
    }
    async fn release(&self, leases: &[Lease]) -> taskyard_core::Result<Vec<bool>> {
        self.inner.release(leases).await
    }
    async fn maintain(
        &self,
        queue: &QueueName,
    ) -> taskyard_core::Result<taskyard_core::Maintenance> {
        self.inner.maintain(queue).await
    }
    async fn now_ms(&self) -> taskyard_core::Result<u64> {
        self.inner.now_ms().await
    }
    async fn queues(&self) -> taskyard_core::Result<Vec<QueueName>> {
        self.inner.queues().await
    }
    async fn stats(&self, queue: &QueueName) -> taskyard_core::Result<taskyard_core::QueueStats> {
        self.inner.stats(queue).await
    }
    async fn list(
        &self,
        queue: &QueueName,
        state: JobState,
        offset: u64,
        limit: u64,
    ) -> taskyard_core::Result<Vec<taskyard_core::JobInfo>> {
        self.inner.list(queue, state, offset, limit).await
    }
    async fn job(
        &self,
        queue: &QueueName,
        id: &JobId,
    ) -> taskyard_core::Result<Option<taskyard_core::JobInfo>> {
        self.inner.job(queue, id).await
    }
    async fn redrive(&self, queue: &QueueName, filter: &DeadFilter) -> taskyard_core::Result<u64> {
        self.inner.redrive(queue, filter).await
    }
    async fn purge(&self, queue: &QueueName, filter: &DeadFilter) -> taskyard_core::Result<u64> {
        self.inner.purge(queue, filter).await
    }
    async fn set_paused(&self, queue: &QueueName, paused: bool) -> taskyard_core::Result<()> {
        self.inner.set_paused(queue, paused).await
    }
    async fn config(&self, queue: &QueueName) -> taskyard_core::Result<QueueConfig> {
        self.inner.config(queue).await
    }
    async fn configure(
        &self,
        queue: &QueueName,
        config: &QueueConfig,
    ) -> taskyard_core::Result<()> {
        self.inner.configure(queue, config).await
    }
}

/// A kind whose own policy is far from the default: 2 attempts, every backoff drawn from
/// up to 100 hours.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Patient {
    /// A number to tell jobs apart.
    pub n: u64,
}

impl Job for Patient {
    const KIND: &'static str = "patient";
    fn retry_policy() -> RetryPolicy {
        let hours = Duration::from_secs(100 * 3600);
        RetryPolicy::default()
            .max_attempts(2)
            .base(hours)
            .cap(hours)
    }
}

/// A retry policy is set per kind (`Job::retry_policy`) or per job (`EnqueueOptions`);
/// the per-job values travel with the job, so any worker applies them.
pub async fn retry_policy_comes_from_the_kind_or_travels_with_the_job(s: Subject) {
    let q = unique_queue();
    let client = Client::new(s.store.clone());
    let opts = EnqueueOptions::default().queue(q.as_str());
    let by_kind = client
        .enqueue_with(&Patient { n: 0 }, opts.clone())
        .await
        .unwrap();
    let own = RetryPolicy::default()
        .max_attempts(7)
        .base(Duration::from_millis(10))
        .cap(Duration::from_millis(20));
    let by_job = client
        .enqueue_with(&Patient { n: 1 }, opts.clone().retry(own))
        .await
        .unwrap();
    let attempts_only = client
        .enqueue_with(&Patient { n: 2 }, opts.max_attempts(5))
        .await
        .unwrap();
    let max = async |id: &JobId| s.store.job(&q, id).await.unwrap().unwrap().max_attempts;
    assert_eq!(max(&by_kind).await, 2, "the kind's attempts");
    assert_eq!(max(&by_job).await, 7, "the job's own policy");
    assert_eq!(max(&attempts_only).await, 5, "the job's own attempts");

    // A worker applies them: the kind's backoff (up to 100 h, so past 1 s but for a
    // chance of 1 in 360,000), the job's own backoff (under 20 ms, so it is soon ready
    // again).
    let w = worker(&s, &q)
        .handle(|_job: Patient, _ctx: JobContext| async move {
            Err::<(), _>(JobError::retry("not yet"))
        })
        .build()
        .unwrap();
    let counters = w.counters();
    let running = Running::start(w);
    // One failure each, then at least one more run of the job with its own backoff.
    until(&counters, |c| c.failed() >= 4).await;
    running.shutdown().await;
    let now = s.store.now_ms().await.unwrap();
    for id in [&by_kind, &attempts_only] {
        let job = s.store.job(&q, id).await.unwrap().unwrap();
        assert_eq!((job.state, job.attempt), (JobState::Scheduled, 1));
        assert!(
            job.at_ms.unwrap() > now + 1000,
            "the kind's backoff: {job:?}"
        );
    }
    let job = s.store.job(&q, &by_job).await.unwrap().unwrap();
    assert!(
        job.attempt >= 2,
        "its own short backoff let it run again: {job:?}"
    );
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
