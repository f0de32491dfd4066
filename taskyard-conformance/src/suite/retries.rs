//! Retries, failures and dead: when a failed job runs again, when it goes to dead instead,
//! and what its history keeps; through the store and through a worker's handlers.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use taskyard_core::{
    Client, Cursor, EnqueueOptions, Job, JobContext, JobError, JobId, JobState, LeaseToken, NewJob,
    Outcome, RetryPolicy,
};

use super::common::{
    LEASE, Ping, SOON, Seen, claim, enqueue, new_job, new_job_with, recorder, stats, worker,
};
use crate::{Subject, eventually, unique_queue, until};

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
    let dead = s
        .store
        .list(&q, JobState::Dead, &Cursor::start(), 10)
        .await
        .unwrap()
        .jobs;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempt, 1);
    assert_eq!(dead[0].errors[0].message, "no such user");
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
    let running = w.spawn();
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
    running
        .shutdown()
        .await
        .expect("the worker shut down cleanly");
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
                0 => Err::<(), _>(JobError::retry_at(
                    SystemTime::now() + Duration::from_secs(3600),
                    "later",
                )),
                _ => Err(JobError::permanent("no such user")),
            }
        })
        .build()
        .unwrap();
    let counters = w.counters();
    let running = w.spawn();
    let ids = enqueue(&s.store, &q, vec![new_job(0), new_job(1)]).await;
    until(&counters, |c| c.failed() == 2).await;
    running
        .shutdown()
        .await
        .expect("the worker shut down cleanly");
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
    let running = w.spawn();
    let policy = RetryPolicy::default()
        .base(Duration::from_millis(10))
        .cap(Duration::from_millis(20));
    let opts = EnqueueOptions::default().queue(q.as_str()).retry(policy);
    Client::new(s.store.clone())
        .enqueue_many((0..5).map(|n| Ping { n }), opts)
        .await
        .unwrap();
    until(&counters, |c| c.completed() == 5).await;
    running
        .shutdown()
        .await
        .expect("the worker shut down cleanly");
    assert_eq!(attempts.load(Ordering::SeqCst), 6);
    assert_eq!(counters.failed(), 1);
}

/// A raw handler that panics before it returns its future (in its own synchronous code)
/// fails that attempt like any panic: the job is retried, then dead with the panic's
/// message, and the worker keeps running other jobs.
pub async fn raw_handler_panic_before_its_future_is_a_failure(s: Subject) {
    let q = unique_queue();
    let calls = Arc::new(AtomicU32::new(0));
    let c2 = calls.clone();
    let w = worker(&s, &q)
        .handle_raw("ping", move |_ctx: JobContext, payload: bytes::Bytes| {
            c2.fetch_add(1, Ordering::SeqCst);
            let job: Ping = serde_json::from_slice(&payload).unwrap();
            if job.n == 0 {
                panic!("raw handler bug");
            }
            async { Ok::<(), JobError>(()) }
        })
        .build()
        .unwrap();
    let counters = w.counters();
    let running = w.spawn();
    let policy = RetryPolicy::default()
        .max_attempts(2)
        .base(Duration::from_millis(10))
        .cap(Duration::from_millis(20));
    let opts = EnqueueOptions::default().queue(q.as_str()).retry(policy);
    let client = Client::new(s.store.clone());
    let bad = client
        .enqueue_with(&Ping { n: 0 }, opts.clone())
        .await
        .unwrap();
    client.enqueue_with(&Ping { n: 1 }, opts).await.unwrap();
    until(&counters, |c| c.completed() == 1 && c.failed() == 2).await;
    running
        .shutdown()
        .await
        .expect("the worker shut down cleanly");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let info = s.store.job(&q, &bad).await.unwrap().unwrap();
    assert_eq!((info.state, info.attempt), (JobState::Dead, 2));
    assert!(
        info.errors[0].message.contains("raw handler bug"),
        "{:?}",
        info.errors
    );
}

/// A payload that does not decode for its kind sends the job to dead with the error.
pub async fn undecodable_payload_goes_to_dead_with_decode_error(s: Subject) {
    let q = unique_queue();
    let seen: Seen = Default::default();
    let w = worker(&s, &q).handle(recorder(&seen)).build().unwrap();
    let counters = w.counters();
    let running = w.spawn();
    let bad = NewJob::new(
        "ping",
        br#"{"n":"not a number"}"#.to_vec(),
        &EnqueueOptions::default(),
        RetryPolicy::default(),
    )
    .unwrap();
    let ids = enqueue(&s.store, &q, vec![bad, new_job(1)]).await;
    until(&counters, |c| c.completed() == 1 && c.failed() == 1).await;
    running
        .shutdown()
        .await
        .expect("the worker shut down cleanly");
    let info = s.store.job(&q, &ids[0]).await.unwrap().unwrap();
    assert_eq!(info.state, JobState::Dead);
    assert_eq!(info.attempt, 1, "no retry for a payload that cannot decode");
    assert!(
        info.errors[0].message.contains("does not decode"),
        "{:?}",
        info.errors
    );
}

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
    let running = w.spawn();
    let policy = RetryPolicy::default()
        .max_attempts(3)
        .base(Duration::from_millis(10))
        .cap(Duration::from_millis(20));
    let opts = EnqueueOptions::default().retry(policy);
    let job = NewJob::new("not.handled.here", b"{}".to_vec(), &opts, policy).unwrap();
    let id = enqueue(&s.store, &q, vec![job]).await.remove(0);
    until(&counters, |c| c.failed() == 3).await;
    running
        .shutdown()
        .await
        .expect("the worker shut down cleanly");
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
                0 => Err::<(), _>(JobError::retry_after(Duration::from_millis(10), msg)),
                _ => Err(JobError::retry_at(SystemTime::now(), msg)),
            }
        })
        .build()
        .unwrap();
    let counters = w.counters();
    let running = w.spawn();
    let opts = EnqueueOptions::default().max_attempts(3);
    let ids = enqueue(
        &s.store,
        &q,
        vec![new_job_with(0, opts.clone()), new_job_with(1, opts)],
    )
    .await;
    until(&counters, |c| c.failed() == 6).await;
    running
        .shutdown()
        .await
        .expect("the worker shut down cleanly");
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
    let running = w.spawn();
    let id = enqueue(&s.store, &q, vec![new_job(1)]).await.remove(0);
    until(&counters, |c| c.failed() == 1).await;
    running
        .shutdown()
        .await
        .expect("the worker shut down cleanly");
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
    let running = w.spawn();
    // One failure each, then at least one more run of the job with its own backoff.
    until(&counters, |c| c.failed() >= 4).await;
    running
        .shutdown()
        .await
        .expect("the worker shut down cleanly");
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
