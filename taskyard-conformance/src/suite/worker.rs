//! The worker runtime: handlers run every job once, heartbeats keep long jobs, shutdown
//! waits for running jobs (and releases those past its grace), queues are served in order
//! or by weight, paused queues are passed by, delayed jobs run when due.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use taskyard_core::{Client, EnqueueOptions, JobContext, JobError, JobState, QueueOrder, Worker};

use super::common::{Ping, SOON, Seen, count, enqueue, new_job, recorder, stats, worker};
use crate::{Subject, eventually, unique_queue, until};

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
    let running = w.spawn();
    Client::new(s.store.clone())
        .enqueue_many(
            (0..500).map(|n| Ping { n }),
            EnqueueOptions::default().queue(q.as_str()),
        )
        .await
        .unwrap();
    until(&counters, |c| c.completed() == 500).await;
    running
        .shutdown()
        .await
        .expect("the worker shut down cleanly");
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
    let running = w.spawn();
    enqueue(&s.store, &q, vec![new_job(1)]).await;
    until(&counters, |c| c.completed() == 1).await;
    running
        .shutdown()
        .await
        .expect("the worker shut down cleanly");
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
    let running = w.spawn();
    enqueue(&s.store, &q, vec![new_job(1)]).await;
    tokio::time::timeout(SOON, started_rx.recv()).await.unwrap();
    running
        .shutdown()
        .await
        .expect("the worker shut down cleanly");
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
    let running = w.spawn();
    let ids = enqueue(&s.store, &q, vec![new_job(1)]).await;
    tokio::time::timeout(SOON, started_rx.recv()).await.unwrap();
    running
        .shutdown()
        .await
        .expect("the worker shut down cleanly");
    let info = s.store.job(&q, &ids[0]).await.unwrap().unwrap();
    assert_eq!((info.state, info.attempt), (JobState::Ready, 0));
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
    let running = w.spawn();
    until(&counters, |c| c.completed() == 20).await;
    running
        .shutdown()
        .await
        .expect("the worker shut down cleanly");
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
    let running = w.spawn();
    until(&counters, |c| c.completed() >= 200).await;
    running
        .shutdown()
        .await
        .expect("the worker shut down cleanly");
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
    let running = w.spawn();
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
    running
        .shutdown()
        .await
        .expect("the worker shut down cleanly");
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
    let running = w.spawn();
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
    running
        .shutdown()
        .await
        .expect("the worker shut down cleanly");
    let after = ran - sent;
    assert!(after >= Duration::from_millis(650), "ran early: {after:?}");
    assert!(
        after < Duration::from_millis(700) + Duration::from_millis(1500),
        "ran late: {after:?}"
    );
}
