//! Results, waiting for a job's end, progress, and lifecycle hooks.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use taskyard_core::{
    Client, Ended, EnqueueOptions, Error, Finished, Hook, How, JobContext, JobError, JobState,
    Json, MAX_PROGRESS_BYTES, Next, Outcome, QueueConfig, RetryPolicy, RunResult, async_trait,
};

use super::common::{LEASE, Ping, SOON, claim, enqueue, new_job, new_job_with, worker};
use crate::{Subject, eventually, unique_queue};

/// A handler's value is the job's result, kept for the queue's result TTL apart from the
/// job (the queue keeps no completed jobs), then dropped by maintenance.
pub async fn a_handlers_value_is_kept_as_its_result_until_the_ttl_ends(s: Subject) {
    let q = unique_queue();
    let client = Client::new(s.store.clone());
    let w = worker(&s, &q)
        .handle(|job: Ping, _ctx: JobContext| async move {
            Ok::<_, JobError>(Json(serde_json::json!({ "double": job.n * 2 })))
        })
        .build()
        .unwrap();
    let handle = w.spawn();
    let ids = enqueue(&s.store, &q, vec![new_job(21)]).await;
    let done = client.wait_for(&ids[0], SOON).await.unwrap();
    assert_eq!(
        done,
        Finished::Completed {
            result: Some(r#"{"double":42}"#.into())
        }
    );
    assert_eq!(
        done.value::<serde_json::Value>().unwrap(),
        Some(serde_json::json!({ "double": 42 }))
    );
    assert_eq!(client.result(&ids[0]).await.unwrap(), Some(done));
    let job = s
        .store
        .job(&q, &ids[0])
        .await
        .unwrap()
        .expect("result kept");
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(job.kind, "ping");
    handle.shutdown().await.unwrap();
    let st = s.store.stats(&q).await.unwrap();
    assert_eq!(
        st.completed, 0,
        "the result is not a retained completed job"
    );

    // A short TTL: the result goes with maintenance once it has passed.
    s.store
        .configure(
            &q,
            &QueueConfig {
                result_ttl_ms: 300,
                ..QueueConfig::default()
            },
        )
        .await
        .unwrap();
    let ids = enqueue(&s.store, &q, vec![new_job(1)]).await;
    let jobs = claim(&s.store, &q, 1, LEASE, "t").await;
    let result = bytes::Bytes::from_static(b"7");
    s.store
        .finish(&[(jobs[0].lease.clone(), Outcome::CompletedWith { result })])
        .await
        .unwrap();
    assert_eq!(
        client.result(&ids[0]).await.unwrap(),
        Some(Finished::Completed {
            result: Some("7".into())
        })
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            s.store.maintain(&q).await.unwrap();
            s.store.job(&q, &ids[0]).await.unwrap().is_none()
        })
        .await,
        "the result outlived its TTL"
    );
    assert!(matches!(
        client.result(&ids[0]).await,
        Err(Error::UnknownJob(_))
    ));
}

/// With a result TTL of 0 no result is kept; the job completes as before.
pub async fn a_result_ttl_of_zero_keeps_no_result(s: Subject) {
    let q = unique_queue();
    s.store
        .configure(
            &q,
            &QueueConfig {
                result_ttl_ms: 0,
                ..QueueConfig::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(s.store.config(&q).await.unwrap().result_ttl_ms, 0);
    let ids = enqueue(&s.store, &q, vec![new_job(1)]).await;
    let jobs = claim(&s.store, &q, 1, LEASE, "t").await;
    let result = bytes::Bytes::from_static(b"7");
    let ok = s
        .store
        .finish(&[(jobs[0].lease.clone(), Outcome::CompletedWith { result })])
        .await
        .unwrap();
    assert_eq!(ok, vec![true]);
    assert!(s.store.job(&q, &ids[0]).await.unwrap().is_none());

    // A waiter still learns the job completed, with or without a value.
    let client = Client::new(s.store.clone());
    for value in [None, Some(bytes::Bytes::from_static(b"7"))] {
        let ids = enqueue(&s.store, &q, vec![new_job(2)]).await;
        let waiter = {
            let (client, id) = (client.clone(), ids[0].clone());
            tokio::spawn(async move { client.wait_for(&id, SOON).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let jobs = claim(&s.store, &q, 1, LEASE, "t").await;
        let outcome = match value {
            Some(result) => Outcome::CompletedWith { result },
            None => Outcome::Completed,
        };
        s.store
            .finish(&[(jobs[0].lease.clone(), outcome)])
            .await
            .unwrap();
        let done = waiter.await.unwrap();
        assert!(
            matches!(done, Ok(Finished::Completed { .. })),
            "with no result kept, a waiter still learns the job completed: {done:?}"
        );
    }
}

/// A wait started before the job runs is woken by its completion — even a completion
/// without a value on a queue that keeps no completed jobs — and long before its
/// timeout.
pub async fn a_wait_is_woken_by_the_jobs_completion(s: Subject) {
    let q = unique_queue();
    let client = Client::new(s.store.clone());
    let ids = enqueue(&s.store, &q, vec![new_job(1)]).await;
    let waiter = {
        let (client, id) = (client.clone(), ids[0].clone());
        tokio::spawn(async move {
            let started = Instant::now();
            (
                client.wait_for(&id, Duration::from_secs(30)).await,
                started.elapsed(),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let jobs = claim(&s.store, &q, 1, LEASE, "t").await;
    let finished = Instant::now();
    s.store
        .finish(&[(jobs[0].lease.clone(), Outcome::Completed)])
        .await
        .unwrap();
    let (answer, _) = waiter.await.unwrap();
    assert_eq!(answer.unwrap(), Finished::Completed { result: None });
    let took = finished.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "the wait ended {took:?} after the completion: it was not woken by it"
    );
}

/// A dead job reports its last error; a wait that runs out says so and changes nothing;
/// an unknown id is an error.
pub async fn a_dead_job_reports_its_last_error_and_a_wait_can_time_out(s: Subject) {
    let q = unique_queue();
    let client = Client::new(s.store.clone());
    let w = worker(&s, &q)
        .handle(|_: Ping, ctx: JobContext| async move {
            Err::<(), _>(JobError::retry(format!("boom {}", ctx.attempt())))
        })
        .build()
        .unwrap();
    let handle = w.spawn();
    let opts = EnqueueOptions::default().retry(
        RetryPolicy::default()
            .max_attempts(2)
            .base(Duration::from_millis(1)),
    );
    let ids = enqueue(&s.store, &q, vec![new_job_with(1, opts)]).await;
    let done = client.wait_for(&ids[0], SOON).await.unwrap();
    assert_eq!(
        done,
        Finished::Dead {
            error: "boom 2".into()
        }
    );
    handle.shutdown().await.unwrap();

    let later = new_job_with(
        2,
        EnqueueOptions::default().delay(Duration::from_secs(3600)),
    );
    let ids = enqueue(&s.store, &q, vec![later]).await;
    let started = Instant::now();
    match client.wait_for(&ids[0], Duration::from_millis(300)).await {
        Err(Error::WaitTimedOut { state, .. }) => assert_eq!(state, JobState::Scheduled),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(matches!(
        client.wait_for(&ids[0], Duration::ZERO).await,
        Err(Error::WaitTimedOut { .. })
    ));
    assert_eq!(client.result(&ids[0]).await.unwrap(), None);
    let job = s.store.job(&q, &ids[0]).await.unwrap().unwrap();
    assert_eq!((job.state, job.attempt), (JobState::Scheduled, 0));
    let unknown = taskyard_core::JobId::new("404404");
    assert!(matches!(
        client.wait_for(&unknown, SOON).await,
        Err(Error::UnknownJob(_))
    ));
}

/// A value over the result limit fails the run for good, with a clear error.
pub async fn a_result_over_the_limit_fails_the_run(s: Subject) {
    let q = unique_queue();
    let client = Client::new(s.store.clone());
    let w = worker(&s, &q)
        .handle(|_: Ping, _ctx: JobContext| async move {
            Ok::<_, JobError>(Json("x".repeat(70 * 1024)))
        })
        .build()
        .unwrap();
    let handle = w.spawn();
    let ids = enqueue(&s.store, &q, vec![new_job(1)]).await;
    match client.wait_for(&ids[0], SOON).await.unwrap() {
        Finished::Dead { error } => assert!(error.contains("over the limit"), "{error}"),
        other => panic!("expected dead, got {other:?}"),
    }
    handle.shutdown().await.unwrap();
}

/// Progress a handler reports shows on the running job after the next heartbeat; a value
/// over the limit is refused and the last one stands.
pub async fn progress_shows_on_the_running_job(s: Subject) {
    let q = unique_queue();
    let release = Arc::new(tokio::sync::Notify::new());
    let refused: Arc<Mutex<Option<String>>> = Arc::default();
    let (r, e) = (release.clone(), refused.clone());
    let w = worker(&s, &q)
        // Heartbeats every 300 ms.
        .lease(Duration::from_millis(900))
        .handle(move |_: Ping, ctx: JobContext| {
            let (release, refused) = (r.clone(), e.clone());
            async move {
                ctx.progress(&serde_json::json!({ "done": 5, "of": 10 }))
                    .unwrap();
                let big = "x".repeat(MAX_PROGRESS_BYTES);
                *refused.lock().unwrap() = ctx.progress(&big).err().map(|e| e.to_string());
                release.notified().await;
                Ok::<(), JobError>(())
            }
        })
        .build()
        .unwrap();
    let handle = w.spawn();
    let ids = enqueue(&s.store, &q, vec![new_job(1)]).await;
    let shown = eventually(SOON, || async {
        let job = s.store.job(&q, &ids[0]).await.unwrap().unwrap();
        job.progress.as_deref() == Some(r#"{"done":5,"of":10}"#)
    })
    .await;
    assert!(shown, "progress never showed");
    let refused = refused
        .lock()
        .unwrap()
        .clone()
        .expect("a big value is refused");
    assert!(refused.contains("over the limit"), "{refused}");
    let job = s.store.job(&q, &ids[0]).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Running);
    release.notify_one();
    handle.shutdown().await.unwrap();
}

/// Progress sent under a lease no longer held is not written.
pub async fn progress_under_a_stale_lease_is_not_written(s: Subject) {
    let q = unique_queue();
    let ids = enqueue(&s.store, &q, vec![new_job(1)]).await;
    let jobs = claim(&s.store, &q, 1, Duration::from_millis(300), "t").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    s.store.maintain(&q).await.unwrap();
    let again = claim(&s.store, &q, 1, LEASE, "t").await;
    assert_eq!(again.len(), 1);
    let old = (jobs[0].lease.clone(), bytes::Bytes::from_static(b"1"));
    let beat = s
        .store
        .heartbeat(&[jobs[0].lease.clone()], LEASE, &[old])
        .await
        .unwrap();
    assert_eq!(beat.held, vec![false]);
    let job = s.store.job(&q, &ids[0]).await.unwrap().unwrap();
    assert_eq!(job.progress, None);
    let new = (again[0].lease.clone(), bytes::Bytes::from_static(b"2"));
    s.store
        .heartbeat(&[again[0].lease.clone()], LEASE, &[new])
        .await
        .unwrap();
    let job = s.store.job(&q, &ids[0]).await.unwrap().unwrap();
    assert_eq!(job.progress.as_deref(), Some("2"));
}

/// What a hook saw: runs it wrapped, and ends it was told of.
#[derive(Default)]
struct Seen {
    around: Mutex<Vec<(u64, u32, &'static str)>>,
    ended: Mutex<Vec<(u32, How)>>,
}

struct Recorder(Arc<Seen>);

#[async_trait]
impl Hook for Recorder {
    async fn around(&self, ctx: &JobContext, next: Next) -> RunResult {
        let n = ctx.attempt();
        self.0.around.lock().unwrap().push((0, n, "before"));
        let result = next.run().await;
        let how = if result.is_ok() { "ok" } else { "err" };
        self.0.around.lock().unwrap().push((0, n, how));
        result
    }

    async fn ended(&self, end: &Ended) {
        self.0
            .ended
            .lock()
            .unwrap()
            .push((end.attempt, end.how.clone()));
    }
}

/// A hook wraps every run (before and after the handler) and hears of each end as the
/// store recorded it: a retry, then a death.
pub async fn hooks_wrap_every_run_and_hear_of_retries_and_deaths(s: Subject) {
    let q = unique_queue();
    let seen = Arc::new(Seen::default());
    let w = worker(&s, &q)
        .hook(Recorder(seen.clone()))
        .handle(|_: Ping, _ctx: JobContext| async move { Err::<(), _>(JobError::retry("no")) })
        .build()
        .unwrap();
    let handle = w.spawn();
    let opts = EnqueueOptions::default().retry(
        RetryPolicy::default()
            .max_attempts(2)
            .base(Duration::from_millis(1)),
    );
    enqueue(&s.store, &q, vec![new_job_with(1, opts)]).await;
    assert!(
        eventually(SOON, || async { seen.ended.lock().unwrap().len() == 2 }).await,
        "the hook heard of {:?}",
        seen.ended.lock().unwrap()
    );
    handle.shutdown().await.unwrap();
    assert_eq!(
        *seen.around.lock().unwrap(),
        vec![
            (0, 1, "before"),
            (0, 1, "err"),
            (0, 2, "before"),
            (0, 2, "err")
        ]
    );
    assert_eq!(
        *seen.ended.lock().unwrap(),
        vec![
            (1, How::Retrying { error: "no".into() }),
            (2, How::Dead { error: "no".into() }),
        ]
    );
}
