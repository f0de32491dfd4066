//! The worker runtime's defaults and shutdown timings (docs/semantics.md), checked on a
//! paused clock: a worker built with no settings runs against a scripted store that notes
//! when each call came, and tokio's test clock jumps through the idle minutes at once.
//! What the stores do with these calls is the conformance suite's business; here it is
//! only when and with what the worker calls them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use taskyard_core::{
    Beat, Claim, ClaimedJob, Cursor, Enqueued, JobContext, JobError, JobFilter, JobId, JobInfo,
    JobState, Lease, LeaseToken, Maintenance, NewJob, Outcome, Page, QueueConfig, QueueName,
    QueueStats, Result, Step, Store, Worker,
};
use tokio::time::Instant;

/// One call the worker made.
#[derive(Debug, Clone, PartialEq)]
enum Call {
    Claim { max: usize, lease: Duration },
    Heartbeat { leases: usize, lease: Duration },
    Finish,
    Release { leases: usize },
    Maintain,
    Wait { timeout: Duration },
}

/// A store that hands out its ready jobs and answers everything else at once (or, with
/// `finish_hangs`, never answers a finish), noting when each call came (test clock).
struct Scripted {
    start: Instant,
    ready: Mutex<VecDeque<u64>>,
    calls: Mutex<Vec<(Duration, Call)>>,
    finish_hangs: bool,
}

impl Scripted {
    fn new(jobs: u64, finish_hangs: bool) -> Arc<Self> {
        Arc::new(Scripted {
            start: Instant::now(),
            ready: Mutex::new((1..=jobs).collect()),
            calls: Mutex::new(Vec::new()),
            finish_hangs,
        })
    }

    fn note(&self, call: Call) {
        let at = self.start.elapsed();
        self.calls.lock().unwrap().push((at, call));
    }

    fn calls(&self) -> Vec<(Duration, Call)> {
        self.calls.lock().unwrap().clone()
    }

    /// When each call matching `pick` came.
    fn times(&self, pick: impl Fn(&Call) -> bool) -> Vec<Duration> {
        self.calls()
            .into_iter()
            .filter(|(_, c)| pick(c))
            .map(|(t, _)| t)
            .collect()
    }
}

/// The store is shared with the test, which reads its notes.
struct Shared(Arc<Scripted>);

#[async_trait]
impl Store for Shared {
    async fn enqueue_report(&self, _: &QueueName, _: Vec<NewJob>) -> Result<Vec<Enqueued>> {
        Ok(Vec::new())
    }
    async fn claim(
        &self,
        queue: &QueueName,
        max: usize,
        lease: Duration,
        token: &LeaseToken,
    ) -> Result<Claim> {
        self.0.note(Call::Claim { max, lease });
        let mut ready = self.0.ready.lock().unwrap();
        let n = max.min(ready.len());
        let jobs = ready
            .drain(..n)
            .map(|id| ClaimedJob {
                lease: Lease {
                    queue: queue.clone(),
                    id: JobId::new(id.to_string()),
                    token: token.clone(),
                },
                kind: Arc::from("k"),
                payload: Bytes::from_static(b"{}"),
                attempt: 1,
                max_attempts: 25,
                backoff: None,
                enqueued_at_ms: 0,
                timeout: None,
            })
            .collect();
        Ok(Claim {
            jobs,
            next_due: None,
        })
    }
    async fn wait(&self, _: &[QueueName], timeout: Duration) -> Result<()> {
        self.0.note(Call::Wait { timeout });
        tokio::time::sleep(timeout).await;
        Ok(())
    }
    async fn heartbeat(
        &self,
        leases: &[Lease],
        lease: Duration,
        _: &[(Lease, Bytes)],
    ) -> Result<Beat> {
        self.0.note(Call::Heartbeat {
            leases: leases.len(),
            lease,
        });
        Ok(Beat {
            held: vec![true; leases.len()],
            cancelled: Vec::new(),
        })
    }
    async fn wait_cancel(&self, _: &[QueueName], timeout: Duration) -> Result<()> {
        tokio::time::sleep(timeout).await;
        Ok(())
    }
    async fn wait_job(&self, _: &QueueName, _: &JobId, timeout: Duration) -> Result<()> {
        tokio::time::sleep(timeout).await;
        Ok(())
    }
    async fn cancel(&self, _: &QueueName, _: &JobFilter, _: &Cursor) -> Result<Step> {
        Ok(Step::default())
    }
    async fn finish(&self, outcomes: &[(Lease, Outcome)]) -> Result<Vec<bool>> {
        self.0.note(Call::Finish);
        if self.0.finish_hangs {
            std::future::pending::<()>().await;
        }
        Ok(vec![true; outcomes.len()])
    }
    async fn release(&self, leases: &[Lease]) -> Result<Vec<bool>> {
        self.0.note(Call::Release {
            leases: leases.len(),
        });
        Ok(vec![true; leases.len()])
    }
    async fn maintain(&self, _: &QueueName) -> Result<Maintenance> {
        self.0.note(Call::Maintain);
        Ok(Maintenance::default())
    }
    async fn now_ms(&self) -> Result<u64> {
        Ok(0)
    }
    async fn queues(&self) -> Result<Vec<QueueName>> {
        Ok(Vec::new())
    }
    async fn stats(&self, _: &QueueName) -> Result<QueueStats> {
        Ok(QueueStats::default())
    }
    async fn list(&self, _: &QueueName, _: JobState, _: &Cursor, _: u64) -> Result<Page> {
        Ok(Page::default())
    }
    async fn job(&self, _: &QueueName, _: &JobId) -> Result<Option<JobInfo>> {
        Ok(None)
    }
    async fn redrive(&self, _: &QueueName, _: &JobFilter, _: &Cursor) -> Result<Step> {
        Ok(Step::default())
    }
    async fn purge(&self, _: &QueueName, _: &JobFilter, _: &Cursor) -> Result<Step> {
        Ok(Step::default())
    }
    async fn run_now(&self, _: &QueueName, _: &JobFilter, _: &Cursor) -> Result<Step> {
        Ok(Step::default())
    }
    async fn delete(&self, _: &QueueName, _: &JobFilter, _: &Cursor) -> Result<Step> {
        Ok(Step::default())
    }
    async fn delete_queue(&self, _: &QueueName, _: &Cursor) -> Result<Step> {
        Ok(Step::default())
    }
    async fn set_paused(&self, _: &QueueName, _: bool) -> Result<()> {
        Ok(())
    }
    async fn config(&self, _: &QueueName) -> Result<QueueConfig> {
        Ok(QueueConfig::default())
    }
    async fn configure(&self, _: &QueueName, _: &QueueConfig) -> Result<()> {
        Ok(())
    }
    async fn schedules(
        &self,
        _: &QueueName,
    ) -> Result<Vec<taskyard_core::schedule::StoredSchedule>> {
        Ok(Vec::new())
    }
    async fn put_schedule(
        &self,
        _: &QueueName,
        _: &taskyard_core::schedule::StoredSchedule,
    ) -> Result<bool> {
        Ok(true)
    }
    async fn remove_schedule(&self, _: &QueueName, _: &str) -> Result<bool> {
        Ok(false)
    }
    async fn fire(
        &self,
        _: &QueueName,
        _: &str,
        _: u64,
        _: u64,
        _: Option<u64>,
        _: Vec<NewJob>,
    ) -> Result<Option<Vec<JobId>>> {
        Ok(None)
    }
}

/// A worker with every default, whose handler never returns (`hang`) or succeeds at once.
/// Returns the sender that shuts it down and its task, which yields the test-clock time
/// at which `run` returned.
fn start(
    store: &Arc<Scripted>,
    hang: bool,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<(Duration, taskyard_core::Result<()>)>,
) {
    let worker = Worker::builder(Shared(store.clone()))
        .handle_raw("k", move |_ctx: JobContext, _payload: Bytes| async move {
            if hang {
                std::future::pending::<()>().await;
            }
            Ok::<(), JobError>(())
        })
        .build()
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let start = store.start;
    let task = tokio::spawn(async move {
        let result = worker
            .run(async {
                let _ = stopped.await;
            })
            .await;
        (start.elapsed(), result)
    });
    (stop, task)
}

/// Whether `at` is `expected` on the test clock (which only moves when every task waits,
/// so a few milliseconds cover the calls' own steps).
fn near(at: Duration, expected: Duration) -> bool {
    at >= expected && at < expected + Duration::from_millis(50)
}

/// Concurrency 10, leases of 30 s renewed every 10 s, maintenance every second (plus up
/// to 10% jitter, so that many workers do not run it in lockstep).
#[tokio::test(start_paused = true)]
async fn defaults_are_concurrency_10_lease_30s_heartbeat_every_10s_maintenance_every_1s() {
    let store = Scripted::new(25, false);
    let (_stop, _task) = start(&store, true);
    tokio::time::sleep(Duration::from_millis(35_020)).await;

    let claims: Vec<(usize, Duration)> = store
        .calls()
        .into_iter()
        .filter_map(|(_, c)| match c {
            Call::Claim { max, lease } => Some((max, lease)),
            _ => None,
        })
        .collect();
    assert_eq!(claims[0], (10, Duration::from_secs(30)), "{claims:?}");
    assert_eq!(claims.len(), 1, "all ten slots stay busy: {claims:?}");
    assert_eq!(
        store.ready.lock().unwrap().len(),
        15,
        "ten jobs held at once"
    );

    let beats: Vec<(Duration, Call)> = store
        .calls()
        .into_iter()
        .filter(|(_, c)| matches!(c, Call::Heartbeat { .. }))
        .collect();
    assert_eq!(beats.len(), 3, "{beats:?}");
    for ((at, call), secs) in beats.iter().zip([10, 20, 30]) {
        assert!(near(*at, Duration::from_secs(secs)), "{beats:?}");
        // The ten jobs came in one claim, under one token: it is renewed once.
        assert_eq!(
            *call,
            Call::Heartbeat {
                leases: 1,
                lease: Duration::from_secs(30)
            }
        );
    }

    let passes = store.times(|c| *c == Call::Maintain);
    assert!((32..=36).contains(&passes.len()), "{passes:?}");
    for pair in passes.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(1000) && gap < Duration::from_millis(1150),
            "{passes:?}"
        );
    }
}

/// An idle worker blocks in the store's wait, and makes a claim at least every 5 s
/// anyway: a safety net for a lost wakeup, not a poll.
#[tokio::test(start_paused = true)]
async fn an_idle_worker_waits_at_most_5s_between_claims() {
    let store = Scripted::new(0, false);
    let (_stop, _task) = start(&store, false);
    tokio::time::sleep(Duration::from_millis(30_020)).await;
    let waits: Vec<Duration> = store
        .calls()
        .into_iter()
        .filter_map(|(_, c)| match c {
            Call::Wait { timeout } => Some(timeout),
            _ => None,
        })
        .collect();
    assert!(!waits.is_empty());
    assert!(
        waits.iter().all(|t| *t == Duration::from_secs(5)),
        "{waits:?}"
    );
    let claims = store.times(|c| matches!(c, Call::Claim { .. }));
    assert_eq!(claims.len(), 7, "at 0, 5, 10, ... 30 s: {claims:?}");
    for pair in claims.windows(2) {
        assert!(
            near(pair[1] - pair[0], Duration::from_secs(5)),
            "{claims:?}"
        );
    }
}

/// Shutdown gives running jobs 30 s, then releases the rest, then returns.
#[tokio::test(start_paused = true)]
async fn shutdown_gives_running_jobs_30s_then_releases_them() {
    let store = Scripted::new(3, false);
    let (stop, task) = start(&store, true);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.send(()).unwrap();
    let (returned, result) = task.await.unwrap();
    result.unwrap();
    let releases: Vec<(Duration, Call)> = store
        .calls()
        .into_iter()
        .filter(|(_, c)| matches!(c, Call::Release { .. }))
        .collect();
    assert_eq!(releases.len(), 1, "{releases:?}");
    assert_eq!(releases[0].1, Call::Release { leases: 3 });
    assert!(near(releases[0].0, Duration::from_secs(31)), "{releases:?}");
    assert!(near(returned, Duration::from_secs(31)), "{returned:?}");
}

/// When the store does not answer, shutdown waits 30 s for the outcomes to be recorded,
/// then returns anyway.
#[tokio::test(start_paused = true)]
async fn shutdown_waits_30s_for_outcomes_then_returns() {
    let store = Scripted::new(1, true);
    let (stop, task) = start(&store, false);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(store.times(|c| *c == Call::Finish).len(), 1);
    stop.send(()).unwrap();
    let (returned, result) = task.await.unwrap();
    assert!(near(returned, Duration::from_secs(31)), "{returned:?}");
    // The outcome never recorded is reported, not dropped in silence.
    let err = result.unwrap_err().to_string();
    assert!(err.contains("not recorded within 30 s"), "{err}");
}
