//! Issue 12 on the embedded store, beyond the conformance suite: cancels and job ends
//! reach waiters in another process (a second store on the same file) within the 50 ms
//! poll and in this one at once; waits with nothing to report sleep, they do not spin; a
//! queue using none of it writes nothing new; a lone cancelled running job is reported to
//! its heartbeats until its lease runs out; progress goes when a job leaves running.

use std::sync::Arc;
use std::time::{Duration, Instant};

use taskyard_conformance::TempDir;
use taskyard_core::{
    Client, EnqueueOptions, Finished, JobFilter, JobId, JobState, Lease, LeaseToken, NewJob,
    Outcome, QueueConfig, QueueName, RetryPolicy, Store,
};
use taskyard_sqlite::{ManualClock, Options, SqliteStore};

const MINUTE: Duration = Duration::from_secs(60);

fn job(n: usize) -> NewJob {
    let opts = EnqueueOptions::default().retry(RetryPolicy::default().max_attempts(2));
    NewJob::new(
        "k",
        format!("{n}").into_bytes(),
        &opts,
        RetryPolicy::default(),
    )
    .unwrap()
}

fn queue(name: &str) -> QueueName {
    QueueName::new(name).unwrap()
}

async fn open(dir: &TempDir) -> SqliteStore {
    SqliteStore::open(dir.path().join("taskyard.db"))
        .await
        .unwrap()
}

/// A store that looks at the file's counters only once a minute: what wakes its waiters
/// sooner is its own signal.
async fn without_poll(dir: &TempDir) -> SqliteStore {
    let options = Options {
        poll: MINUTE,
        ..Options::default()
    };
    SqliteStore::open_with(dir.path().join("taskyard.db"), options)
        .await
        .unwrap()
}

async fn claim(store: &SqliteStore, q: &QueueName, n: usize, token: &str) -> Vec<Lease> {
    store
        .claim(q, n, MINUTE, &LeaseToken::mint(token).unwrap())
        .await
        .unwrap()
        .jobs
        .into_iter()
        .map(|j| j.lease)
        .collect()
}

async fn cancel(store: &SqliteStore, q: &QueueName, id: &JobId) {
    let client = Client::new(store.clone());
    let done = client
        .cancel(q, &JobFilter::Ids(vec![id.clone()]))
        .await
        .unwrap();
    assert_eq!(done.done, 1);
}

/// What a file holds of issue 12's bookkeeping: results, waiters, the signal counters,
/// jobs with progress, leases with cancelled jobs.
fn bookkeeping(dir: &TempDir) -> [i64; 6] {
    let conn = rusqlite::Connection::open(dir.path().join("taskyard.db")).unwrap();
    conn.query_row(
        "SELECT (SELECT count(*) FROM results), (SELECT count(*) FROM waiters),
                (SELECT cancels FROM signals), (SELECT ends FROM signals),
                (SELECT count(progress) FROM jobs), (SELECT count(cancelled) FROM leases)",
        [],
        |r| {
            Ok([
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ])
        },
    )
    .unwrap()
}

/// A cancel of a running job wakes `wait_cancel` in this process at once (its poll set
/// to a minute), and in another process within its 50 ms poll: median under 45 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaches_waiters_here_at_once_and_elsewhere_within_the_poll() {
    let dir = TempDir::new();
    let here = without_poll(&dir).await;
    let elsewhere = open(&dir).await;
    let q = queue("cancels");
    let mut delays = (Vec::new(), Vec::new());
    for round in 0..12 {
        let ids = here.enqueue(&q, vec![job(round)]).await.unwrap();
        claim(&here, &q, 1, "w").await;
        let wait = |store: &SqliteStore| {
            let (store, qs) = (store.clone(), vec![q.clone()]);
            tokio::spawn(async move {
                store
                    .wait_cancel(&qs, Duration::from_secs(30))
                    .await
                    .unwrap();
                Instant::now()
            })
        };
        let (near, far) = (wait(&here), wait(&elsewhere));
        // A different point of the far waiter's 50 ms cycle each round.
        tokio::time::sleep(Duration::from_millis(20 + 7 * round as u64)).await;
        assert!(
            !near.is_finished() && !far.is_finished(),
            "nothing happened yet"
        );
        cancel(&here, &q, &ids[0]).await;
        let committed = Instant::now();
        let near = tokio::time::timeout(Duration::from_secs(5), near)
            .await
            .expect("woken by the cancel here, not a look a minute later")
            .unwrap();
        let far = tokio::time::timeout(Duration::from_secs(5), far)
            .await
            .expect("woken long before the wait's timeout")
            .unwrap();
        delays.0.push(near.saturating_duration_since(committed));
        delays.1.push(far.saturating_duration_since(committed));
    }
    delays.0.sort();
    delays.1.sort();
    println!("here: {:?}\nelsewhere: {:?}", delays.0, delays.1);
    assert!(delays.0[11] < Duration::from_millis(100), "{:?}", delays.0);
    assert!(delays.1[6] <= Duration::from_millis(45), "{:?}", delays.1);
    assert!(delays.1[11] < Duration::from_millis(250), "{:?}", delays.1);
    assert_eq!(bookkeeping(&dir)[2], 12, "one count per cancelling step");
}

/// Waits with nothing to report sleep out their timeout: a cancel of a ready job (no
/// handler to tell) and the end of a job nobody waits on wake no cancel waiter, and a
/// wait on a job that does not end lasts its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_with_nothing_to_report_sleep_out_their_timeout() {
    let dir = TempDir::new();
    let store = open(&dir).await;
    let other = open(&dir).await;
    let q = queue("quiet");
    let ids = store
        .enqueue(&q, vec![job(0), job(1), job(2)])
        .await
        .unwrap();
    let started = Instant::now();
    let waits = {
        let (a, b, qs) = (store.clone(), other.clone(), vec![q.clone()]);
        let id = ids[2].clone();
        let q = q.clone();
        tokio::spawn(async move {
            let t = Duration::from_millis(400);
            tokio::join!(
                a.wait_cancel(&qs, t),
                b.wait_cancel(&qs, t),
                b.wait_job(&q, &id, t)
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    cancel(&store, &q, &ids[0]).await;
    let leases = claim(&store, &q, 1, "w").await;
    assert_eq!(leases[0].id, ids[1]);
    store
        .finish(&[(leases[0].clone(), Outcome::Completed)])
        .await
        .unwrap();
    let (a, b, c) = waits.await.unwrap();
    a.and(b).and(c).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(
        bookkeeping(&dir)[2..4],
        [0, 0],
        "no running job cancelled, no waited end"
    );
    // A wait on a job already ended, or unknown, returns at once.
    let started = Instant::now();
    store.wait_job(&q, &ids[0], MINUTE).await.unwrap();
    store.wait_job(&q, &ids[1], MINUTE).await.unwrap();
    store
        .wait_job(&q, &JobId::new("404404"), MINUTE)
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A waited job's end in another process wakes the wait within the poll; a completion
/// without a value leaves an empty result the waiter finds, and the waiter row goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_ending_in_another_process_wakes_its_waiter() {
    let dir = TempDir::new();
    let waiting = open(&dir).await;
    let other = open(&dir).await;
    let q = queue("ends");
    for (round, how) in ["completed", "dead", "cancelled"].into_iter().enumerate() {
        let ids = other.enqueue(&q, vec![job(round)]).await.unwrap();
        let wait = {
            let (store, q, id) = (waiting.clone(), q.clone(), ids[0].clone());
            tokio::spawn(async move {
                store
                    .wait_job(&q, &id, Duration::from_secs(30))
                    .await
                    .unwrap();
                Instant::now()
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(bookkeeping(&dir)[1], 1, "the wait is registered");
        let leases = claim(&other, &q, 1, "w").await;
        let outcome = match how {
            "completed" => Outcome::Completed,
            _ => Outcome::Dead { error: "no".into() },
        };
        if how == "cancelled" {
            cancel(&other, &q, &ids[0]).await;
        } else {
            other.finish(&[(leases[0].clone(), outcome)]).await.unwrap();
        }
        let ended = Instant::now();
        let woke = tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .expect("woken by the end")
            .unwrap();
        assert!(
            woke.saturating_duration_since(ended) < Duration::from_millis(250),
            "{how}"
        );
        let found = Client::new(waiting.clone()).result(&ids[0]).await.unwrap();
        let want = match how {
            "completed" => Finished::Completed { result: None },
            "dead" => Finished::Dead { error: "no".into() },
            _ => Finished::Cancelled,
        };
        assert_eq!(found, Some(want), "{how}");
        assert_eq!(bookkeeping(&dir)[1], 0, "the waiter row went with the end");
    }
    let [results, _, _, ends, _, _] = bookkeeping(&dir);
    assert_eq!(
        (results, ends),
        (1, 3),
        "the empty result of the completion"
    );
}

/// A queue that uses none of issue 12 writes nothing of it: jobs enqueued, claimed,
/// heartbeaten, completed, released, retried, dead and expired leave no result, waiter,
/// progress or cancelled lease, and the counters stay at zero.
#[tokio::test]
async fn a_plain_queue_writes_nothing_new() {
    let dir = TempDir::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let options = Options {
        clock: clock.clone(),
        ..Options::default()
    };
    let store = SqliteStore::open_with(dir.path().join("taskyard.db"), options)
        .await
        .unwrap();
    let q = queue("plain");
    store.enqueue(&q, (0..6).map(job).collect()).await.unwrap();
    let leases = claim(&store, &q, 6, "a").await;
    let beat = store.heartbeat(&leases[..1], MINUTE, &[]).await.unwrap();
    assert_eq!((beat.held, beat.cancelled), (vec![true], vec![]));
    let dead = Outcome::Dead { error: "x".into() };
    let retry = Outcome::Retry {
        delay_ms: 0,
        error: "x".into(),
    };
    store
        .finish(&[
            (leases[0].clone(), Outcome::Completed),
            (leases[1].clone(), dead),
            (leases[2].clone(), retry),
        ])
        .await
        .unwrap();
    store.release(&leases[3..4]).await.unwrap();
    clock.advance(2 * MINUTE);
    assert_eq!(store.maintain(&q).await.unwrap().expired, 2);
    assert_eq!(bookkeeping(&dir), [0; 6]);
}

/// A claim whose only job is cancelled keeps its lease row for its heartbeats, which
/// report the cancel (held: the token is not stale) until the lease runs out; then it is
/// gone like any other.
#[tokio::test]
async fn a_lone_cancelled_job_is_reported_until_its_lease_runs_out() {
    let dir = TempDir::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let options = Options {
        clock: clock.clone(),
        ..Options::default()
    };
    let store = SqliteStore::open_with(dir.path().join("taskyard.db"), options)
        .await
        .unwrap();
    let q = queue("lone");
    let ids = store.enqueue(&q, vec![job(0)]).await.unwrap();
    let leases = claim(&store, &q, 1, "w").await;
    cancel(&store, &q, &ids[0]).await;
    for _ in 0..2 {
        let beat = store.heartbeat(&leases, MINUTE, &[]).await.unwrap();
        assert_eq!(beat.held, vec![true]);
        assert_eq!(beat.cancelled, vec![(q.clone(), ids[0].clone())]);
    }
    let refused = store
        .finish(&[(leases[0].clone(), Outcome::Completed)])
        .await
        .unwrap();
    assert_eq!(refused, vec![false]);
    clock.advance(2 * MINUTE);
    assert_eq!(store.maintain(&q).await.unwrap().expired, 0);
    let beat = store.heartbeat(&leases, MINUTE, &[]).await.unwrap();
    assert_eq!((beat.held, beat.cancelled), (vec![false], vec![]));
    let job = store.job(&q, &ids[0]).await.unwrap().unwrap();
    assert_eq!((job.state, job.attempt), (JobState::Cancelled, 1));
}

/// Progress shows while the job runs and goes with every way out of running: release,
/// retry, completion (kept by retention) and cancel.
#[tokio::test]
async fn progress_goes_when_a_job_leaves_running() {
    let dir = TempDir::new();
    let store = open(&dir).await;
    let q = queue("progress");
    store
        .configure(
            &q,
            &QueueConfig {
                completed_max: 10,
                ..QueueConfig::default()
            },
        )
        .await
        .unwrap();
    let ids = store.enqueue(&q, vec![job(0)]).await.unwrap();
    let report = async |lease: &Lease, n: u32| {
        let value = bytes::Bytes::from(format!("{{\"n\":{n}}}"));
        store
            .heartbeat(
                std::slice::from_ref(lease),
                MINUTE,
                &[(lease.clone(), value)],
            )
            .await
            .unwrap();
        let shown = store.job(&q, &ids[0]).await.unwrap().unwrap().progress;
        assert_eq!(shown, Some(format!("{{\"n\":{n}}}")));
    };
    let retry = Outcome::Retry {
        delay_ms: 0,
        error: "x".into(),
    };
    for (n, out) in ["release", "retry", "complete"].into_iter().enumerate() {
        let leases = claim(&store, &q, 1, out).await;
        report(&leases[0], n as u32).await;
        match out {
            "release" => assert_eq!(store.release(&leases).await.unwrap(), [true]),
            "retry" => {
                let done = store.finish(&[(leases[0].clone(), retry.clone())]).await;
                assert_eq!(done.unwrap(), [true]);
            }
            _ => {
                let done = store
                    .finish(&[(leases[0].clone(), Outcome::Completed)])
                    .await;
                assert_eq!(done.unwrap(), [true]);
            }
        }
        assert_eq!(bookkeeping(&dir)[4], 0, "after {out}");
        assert_eq!(
            store.job(&q, &ids[0]).await.unwrap().unwrap().progress,
            None
        );
    }
    let ids = store.enqueue(&q, vec![job(1)]).await.unwrap();
    let leases = claim(&store, &q, 1, "c").await;
    let value = bytes::Bytes::from_static(b"1");
    store
        .heartbeat(&leases, MINUTE, &[(leases[0].clone(), value)])
        .await
        .unwrap();
    assert_eq!(bookkeeping(&dir)[4], 1);
    cancel(&store, &q, &ids[0]).await;
    assert_eq!(bookkeeping(&dir)[4], 0, "after cancel");
}
