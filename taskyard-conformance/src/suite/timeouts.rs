//! Hung handlers and lost contact: a run past its timeout is told to stop, aborted after
//! the grace and retried as "timed out"; the job's own timeout beats its kind's, which
//! beats the worker's; a handler that blocks its thread keeps its slot and is reported;
//! leases no heartbeat renewed for a lease are treated as lost and their handlers told.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use taskyard_core::{
    EnqueueOptions, JobContext, JobError, JobState, NewJob, RetryPolicy, StopReason, Store,
};

use super::common::{Ping, Pong, SOON, enqueue, new_job_with, stats, worker};
use super::logs;
use super::stalled::{Faults, Faulty};
use crate::{Subject, eventually, unique_queue, until};

/// Quick retries, so a test sees several attempts within a second.
fn quick_retries(attempts: u32) -> RetryPolicy {
    RetryPolicy::default()
        .max_attempts(attempts)
        .base(Duration::from_millis(10))
        .cap(Duration::from_millis(20))
}

/// Runs' attempts, the reason their token gave, and when it fired.
type Fired = Arc<Mutex<Vec<(u32, Option<StopReason>, Instant)>>>;

/// Notes when a handler's future is dropped: an aborted run drops it at its `.await`.
struct OnDrop(Arc<Mutex<Vec<Instant>>>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        self.0.lock().unwrap().push(Instant::now());
    }
}

/// A run past its kind's timeout has its token fired with `StopReason::Timeout`; one that
/// stops fails as "timed out" even when it says its failure is permanent, one that goes
/// on awaiting is dropped at its `.await` one grace later; both are retried (attempts
/// counted), and the third attempt completes.
pub async fn a_run_past_its_timeout_is_stopped_and_retried(s: Subject) {
    let q = unique_queue();
    let timeout = Duration::from_millis(300);
    let grace = Duration::from_millis(200);
    let fired: Fired = Default::default();
    let dropped: Arc<Mutex<Vec<Instant>>> = Default::default();
    let (fired2, dropped2) = (fired.clone(), dropped.clone());
    let w = worker(&s, &q)
        .timeout_for("ping", timeout)
        .timeout_grace(grace)
        .handle(move |_job: Ping, ctx: JobContext| {
            let (fired, dropped) = (fired2.clone(), dropped2.clone());
            async move {
                if ctx.attempt() >= 3 {
                    return Ok(());
                }
                let _guard = OnDrop(dropped);
                ctx.cancellation_token().cancelled().await;
                fired
                    .lock()
                    .unwrap()
                    .push((ctx.attempt(), ctx.stop_reason(), Instant::now()));
                if ctx.attempt() == 1 {
                    // Stops when told, and calls it permanent: still a retry.
                    return Err(JobError::permanent("gave up"));
                }
                // Ignores it: aborted at this `.await` after the grace.
                std::future::pending::<()>().await;
                Ok(())
            }
        })
        .build()
        .unwrap();
    let counters = w.counters();
    let running = w.spawn();
    let opts = EnqueueOptions::default().retry(quick_retries(5));
    let started = Instant::now();
    enqueue(&s.store, &q, vec![new_job_with(1, opts)]).await;
    until(&counters, |c| c.completed() == 1).await;
    running
        .shutdown()
        .await
        .expect("the worker shut down cleanly");

    let fired = fired.lock().unwrap().clone();
    let attempts: Vec<(u32, Option<StopReason>)> = fired.iter().map(|f| (f.0, f.1)).collect();
    assert_eq!(
        attempts,
        [
            (1, Some(StopReason::Timeout)),
            (2, Some(StopReason::Timeout))
        ]
    );
    assert!(
        fired[0].2 - started >= timeout,
        "the token fired before the timeout: {:?}",
        fired[0].2 - started
    );
    // The second run was dropped one grace after its token fired, not before, and not
    // long after.
    let dropped = dropped.lock().unwrap().clone();
    assert_eq!(dropped.len(), 2, "both hung runs' futures were dropped");
    let waited = dropped[1] - fired[1].2;
    assert!(
        waited >= grace - Duration::from_millis(20) && waited < grace + Duration::from_secs(1),
        "the run was aborted {waited:?} after its token fired (grace {grace:?})"
    );
    assert_eq!(counters.timed_out(), 2);
    assert_eq!(counters.failed(), 2, "two failures recorded, both retried");
    let st = stats(&s.store, &q).await;
    assert_eq!((st.ready, st.running, st.scheduled, st.dead), (0, 0, 0, 0));
}

/// A job that always hangs goes dead once its attempts are spent, each attempt recorded
/// as timed out after the job's own timeout.
pub async fn a_job_that_always_hangs_goes_dead_timed_out(s: Subject) {
    let q = unique_queue();
    let w = worker(&s, &q)
        .timeout_grace(Duration::from_millis(100))
        .handle(|_job: Ping, _ctx: JobContext| async move {
            std::future::pending::<()>().await;
            Ok::<(), JobError>(())
        })
        .build()
        .unwrap();
    let counters = w.counters();
    let running = w.spawn();
    let opts = EnqueueOptions::default()
        .retry(quick_retries(2))
        .timeout(Duration::from_millis(200));
    let id = enqueue(&s.store, &q, vec![new_job_with(1, opts)])
        .await
        .remove(0);
    until(&counters, |c| c.failed() == 2).await;
    running
        .shutdown()
        .await
        .expect("the worker shut down cleanly");
    let job = s.store.job(&q, &id).await.unwrap().expect("kept as dead");
    assert_eq!((job.state, job.attempt), (JobState::Dead, 2));
    let errors: Vec<&str> = job.errors.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(errors, ["timed out after 200ms", "timed out after 200ms"]);
    assert_eq!(counters.timed_out(), 2);
}

/// The job's own timeout beats its kind's on the worker, which beats the worker's
/// default: each run is timed out (or not) by the one that applies, and its error names
/// it.
pub async fn a_jobs_timeout_beats_its_kinds_which_beats_the_default(s: Subject) {
    let q = unique_queue();
    let run = Duration::from_millis(700);
    let done: Arc<Mutex<Vec<String>>> = Default::default();
    let (d1, d2) = (done.clone(), done.clone());
    let w = worker(&s, &q)
        .concurrency(4)
        .default_timeout(Duration::from_millis(400))
        .timeout_for("ping", Duration::from_millis(300))
        .timeout_grace(Duration::from_millis(100))
        .handle(move |job: Ping, _ctx: JobContext| {
            let done = d1.clone();
            async move {
                tokio::time::sleep(run).await;
                done.lock().unwrap().push(format!("ping {}", job.n));
                Ok(())
            }
        })
        .handle(move |job: Pong, _ctx: JobContext| {
            let done = d2.clone();
            async move {
                tokio::time::sleep(run).await;
                done.lock().unwrap().push(format!("pong {}", job.n));
                Ok(())
            }
        })
        .build()
        .unwrap();
    let counters = w.counters();
    let running = w.spawn();
    let once = EnqueueOptions::default().max_attempts(1);
    let long = once.clone().timeout(Duration::from_secs(5));
    let jobs = vec![
        NewJob::from_job(&Ping { n: 1 }, &once).unwrap(), // the kind's 300 ms
        NewJob::from_job(&Ping { n: 2 }, &long).unwrap(), // its own 5 s
        NewJob::from_job(&Pong { n: 3 }, &once).unwrap(), // the worker's 400 ms
        NewJob::from_job(&Pong { n: 4 }, &long).unwrap(), // its own 5 s
    ];
    let ids = enqueue(&s.store, &q, jobs).await;
    until(&counters, |c| c.completed() + c.failed() == 4).await;
    running
        .shutdown()
        .await
        .expect("the worker shut down cleanly");
    let mut done = done.lock().unwrap().clone();
    done.sort();
    assert_eq!(done, ["ping 2", "pong 4"], "the runs with 5 s completed");
    assert_eq!((counters.completed(), counters.timed_out()), (2, 2));
    for (id, says) in [
        (&ids[0], "timed out after 300ms"),
        (&ids[2], "timed out after 400ms"),
    ] {
        let job = s.store.job(&q, id).await.unwrap().expect("kept as dead");
        assert_eq!(job.state, JobState::Dead);
        let errors: Vec<&str> = job.errors.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(errors, [says]);
    }
}

/// A handler that blocks its thread (synchronous sleep in async code) cannot be
/// aborted: it is reported as an error naming its job and kind, again while it blocks,
/// and keeps its slot — no more than `concurrency` handlers ever run at once. Its job is
/// failed as timed out and retried meanwhile; what it returns once it unblocks is
/// dropped.
pub async fn a_handler_blocking_its_thread_keeps_its_slot_and_is_reported(s: Subject) {
    logs::capture();
    let q = unique_queue();
    let concurrency = 2;
    let block = Duration::from_secs(3);
    let running_now = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let blocked_returned = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<(u64, u32, bool)>>> = Default::default();
    let (r, m, b, seen2) = (
        running_now.clone(),
        most.clone(),
        blocked_returned.clone(),
        seen.clone(),
    );
    let w = worker(&s, &q)
        .concurrency(concurrency)
        .timeout_for("ping", Duration::from_millis(300))
        .timeout_grace(Duration::from_millis(200))
        .handle(move |job: Ping, ctx: JobContext| {
            let (r, m, b, seen) = (r.clone(), m.clone(), b.clone(), seen2.clone());
            async move {
                // For the blocker's retry: whether its first run still blocks.
                let first_blocks = !b.load(Ordering::SeqCst);
                seen.lock()
                    .unwrap()
                    .push((job.n, ctx.attempt(), first_blocks));
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                if job.n == 0 && ctx.attempt() == 1 {
                    // Blocks the runtime thread: no abort reaches it.
                    std::thread::sleep(block);
                    b.store(true, Ordering::SeqCst);
                } else {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
                r.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .build()
        .unwrap();
    let counters = w.counters();
    let running = w.spawn();
    let quick = EnqueueOptions::default().retry(quick_retries(3));
    let blocker = enqueue(&s.store, &q, vec![new_job_with(0, quick.clone())])
        .await
        .remove(0);
    assert!(
        eventually(SOON, || async { running_now.load(Ordering::SeqCst) == 1 }).await,
        "the blocking job started"
    );
    let jobs = (1..=40).map(|n| new_job_with(n, quick.clone())).collect();
    enqueue(&s.store, &q, jobs).await;

    // Reported while it blocks: once a grace after it was aborted, and again.
    let reported = || {
        logs::lines_with(&[
            "ERROR",
            &format!("queue={q} id={blocker} "),
            "kind=ping",
            "is blocking its thread",
        ])
        .len()
    };
    assert!(
        eventually(SOON, || async {
            counters.blocked() == 1 && reported() >= 1
        })
        .await,
        "the blocked handler was not reported"
    );
    assert!(
        eventually(SOON, || async { reported() >= 2 }).await,
        "the report was not repeated while it blocked"
    );
    assert!(
        !blocked_returned.load(Ordering::SeqCst),
        "reported after it returned"
    );
    // The other jobs and the blocker's retry run in the one slot left.
    until(&counters, |c| c.completed() == 41).await;
    assert!(
        eventually(SOON, || async { counters.blocked() == 0 }).await,
        "the handler's return was not noticed"
    );
    assert!(blocked_returned.load(Ordering::SeqCst));
    running
        .shutdown()
        .await
        .expect("the worker shut down cleanly");

    assert!(
        most.load(Ordering::SeqCst) <= concurrency,
        "{} handlers ran at once with concurrency {concurrency}",
        most.load(Ordering::SeqCst)
    );
    assert_eq!(
        most.load(Ordering::SeqCst),
        concurrency,
        "both slots were used"
    );
    let blocker_runs: Vec<(u32, bool)> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(n, _, _)| *n == 0)
        .map(|(_, a, blocks)| (*a, *blocks))
        .collect();
    assert_eq!(
        blocker_runs,
        [(1, true), (2, true)],
        "timed out, and retried while the first run still blocked"
    );
    // The blocked run's own success (it returned Ok) was not recorded: one timed-out
    // failure, 41 completions (40 jobs and the blocker's second attempt).
    assert_eq!(
        (
            counters.timed_out(),
            counters.failed(),
            counters.completed()
        ),
        (1, 1, 41)
    );
    let st = stats(&s.store, &q).await;
    assert_eq!((st.ready, st.running, st.scheduled, st.dead), (0, 0, 0, 0));
}

/// When no heartbeat reaches the store for longer than the lease (a partition), the
/// worker treats the leases as lost: each running handler's token fires with
/// `StopReason::LeaseLost` within about a lease, and a warning says how many jobs. Once
/// the store is reachable again, the jobs run again and complete.
pub async fn a_partition_longer_than_the_lease_fires_lease_lost(s: Subject) {
    logs::capture();
    let q = unique_queue();
    let lease = Duration::from_millis(600);
    let faults = Faults::default();
    let failing = faults.failing.clone();
    let store: Arc<dyn Store> = Arc::new(Faulty {
        inner: s.store.clone(),
        faults,
    });
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    let stopped: Arc<Mutex<Vec<(u32, StopReason, Instant)>>> = Default::default();
    let stopped2 = stopped.clone();
    let w = taskyard_core::Worker::builder(store)
        .queue(q.as_str())
        .concurrency(5)
        .lease(lease)
        .maintenance_every(Duration::from_millis(100))
        .handle(move |_job: Ping, ctx: JobContext| {
            let (started_tx, stopped) = (started_tx.clone(), stopped2.clone());
            async move {
                if ctx.attempt() > 1 {
                    return Ok(());
                }
                let _ = started_tx.send(());
                let token = ctx.cancellation_token();
                tokio::select! {
                    _ = token.cancelled() => {}
                    _ = tokio::time::sleep(SOON) => {}
                }
                let reason = ctx.stop_reason().expect("stopped early");
                stopped
                    .lock()
                    .unwrap()
                    .push((ctx.attempt(), reason, Instant::now()));
                Err(JobError::retry(format!("stopped: {reason:?}")))
            }
        })
        .build()
        .unwrap();
    let counters = w.counters();
    let running = w.spawn();
    let opts = EnqueueOptions::default().retry(quick_retries(5));
    enqueue(
        &s.store,
        &q,
        (1..=3).map(|n| new_job_with(n, opts.clone())).collect(),
    )
    .await;
    for _ in 0..3 {
        tokio::time::timeout(SOON, started.recv())
            .await
            .expect("three jobs started");
    }
    // Heartbeats go through for a while (the leases are renewed), then fail.
    tokio::time::sleep(lease).await;
    assert_eq!(
        counters.leases_lost(),
        0,
        "lost while heartbeats went through"
    );
    failing.store(true, Ordering::SeqCst);
    let cut = Instant::now();
    assert!(
        eventually(SOON, || async { stopped.lock().unwrap().len() == 3 }).await,
        "the handlers were not told"
    );
    failing.store(false, Ordering::SeqCst);
    for (attempt, reason, at) in stopped.lock().unwrap().iter() {
        assert_eq!((*attempt, *reason), (1, StopReason::LeaseLost));
        let after = *at - cut;
        // The last renewal was at most lease/3 before the cut; a watchdog tick later.
        assert!(
            after >= lease / 2 && after <= lease * 2,
            "told {after:?} after the cut, lease {lease:?}"
        );
    }
    assert_eq!(counters.leases_lost(), 3);
    let warned = logs::lines_with(&[
        "WARN",
        &format!("queues={q} "),
        "jobs=3",
        "treating the leases of 3 running jobs as lost",
    ]);
    assert_eq!(warned.len(), 1, "one warning naming 3 jobs: {warned:?}");
    // The jobs run again once the store is reachable, and complete.
    until(&counters, |c| c.completed() == 3).await;
    running
        .shutdown()
        .await
        .expect("the worker shut down cleanly");
    let st = stats(&s.store, &q).await;
    assert_eq!((st.ready, st.running, st.scheduled, st.dead), (0, 0, 0, 0));
}

/// Bad timeouts are refused when the worker is built or the job made, with a message
/// that names what is wrong; nothing is enqueued.
pub async fn bad_timeouts_are_refused(s: Subject) {
    let q = unique_queue();
    let handler = |_job: Ping, _ctx: JobContext| async { Ok::<(), JobError>(()) };
    let cases = [
        (
            worker(&s, &q)
                .timeout_for("ping", Duration::ZERO)
                .handle(handler),
            "kind ping: timeout 0ns is below 1 ms",
        ),
        (
            worker(&s, &q)
                .default_timeout(Duration::from_secs(8 * 24 * 3600))
                .handle(handler),
            "default_timeout: timeout 691200s is above the longest allowed, 7 days",
        ),
        (
            worker(&s, &q)
                .timeout_for("pnig", Duration::from_secs(1))
                .handle(handler),
            "a timeout is set for kind pnig, which has no handler on this worker",
        ),
        (
            worker(&s, &q).timeout_grace(Duration::ZERO).handle(handler),
            "timeout grace must be above zero",
        ),
    ];
    for (builder, says) in cases {
        let err = builder.build().err().expect("refused");
        assert!(
            matches!(&err, taskyard_core::Error::InvalidOption(m) if m.contains(says)),
            "{err}"
        );
    }
    let bad = EnqueueOptions::default()
        .queue(q.as_str())
        .timeout(Duration::from_micros(10));
    let err = taskyard_core::Client::new(s.store.clone())
        .enqueue_with(&Ping { n: 1 }, bad)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("below 1 ms"), "{err}");
    let st = stats(&s.store, &q).await;
    assert_eq!(st.ready + st.scheduled, 0, "nothing was enqueued");
}
