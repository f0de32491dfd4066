//! Cancels, progress, results and waits on Redis, beyond the conformance suite: a cancel
//! reaches workers of another process over pub/sub within milliseconds, a wait with
//! nothing to hear sleeps (no polling), the subscriber comes back after a restart,
//! progress goes with every way out of running, cancels walk long lists and many running
//! jobs in bounded steps, and what each costs in memory per job.

use std::time::{Duration, Instant};

use bytes::Bytes;
use taskyard_conformance::{RedisServer, eventually};
use taskyard_core::{
    Client, Cursor, EnqueueOptions, JobFilter, JobId, JobState, LeaseToken, NewJob, Outcome,
    QueueName, RetryPolicy, Store,
};
use taskyard_redis::RedisStore;

type Conn = redis::aio::MultiplexedConnection;

fn job(n: u64) -> NewJob {
    let payload = format!(r#"{{"n":{n:>12},"body":"{}"}}"#, "x".repeat(94)).into_bytes();
    NewJob::new(
        "a",
        payload,
        &EnqueueOptions::default(),
        RetryPolicy::default(),
    )
    .unwrap()
}

async fn conn(server: &RedisServer) -> Conn {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn info_field(conn: &mut Conn, section: &str, field: &str) -> i64 {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

async fn reset_stats(conn: &mut Conn) {
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(conn)
        .await
        .unwrap();
}

/// Scripts run since the statistics were reset.
async fn scripts_run(conn: &mut Conn) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

async fn key_exists(conn: &mut Conn, q: &QueueName, name: &str) -> bool {
    let n: i64 = redis::cmd("EXISTS")
        .arg(format!("taskyard:2:{{{}}}:{name}", q.as_str()))
        .query_async(conn)
        .await
        .unwrap();
    n == 1
}

async fn enqueue_many(store: &RedisStore, q: &QueueName, n: u64) -> Vec<JobId> {
    let mut ids = Vec::new();
    for b in 0..n.div_ceil(1000) {
        let batch = (b * 1000..((b + 1) * 1000).min(n)).map(job).collect();
        ids.extend(store.enqueue(q, batch).await.unwrap());
    }
    ids
}

const LEASE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_wakes_a_waiting_worker_of_another_process_within_milliseconds() {
    let server = RedisServer::start();
    let worker = RedisStore::connect(&server.url()).await.unwrap();
    let operator = RedisStore::connect(&server.url()).await.unwrap();
    let q = QueueName::new("wake").unwrap();
    let mut took = Vec::new();
    for i in 0..20 {
        let ids = operator.enqueue(&q, vec![job(i)]).await.unwrap();
        let token = LeaseToken::mint("w").unwrap();
        let jobs = worker.claim(&q, 1, LEASE, &token).await.unwrap().jobs;
        let waiter = {
            let (worker, q) = (worker.clone(), q.clone());
            tokio::spawn(async move {
                worker
                    .wait_cancel(&[q], Duration::from_secs(5))
                    .await
                    .unwrap();
                Instant::now()
            })
        };
        // The first wait opens the subscriber; later ones find it in place.
        let settle = if i == 0 { 300 } else { 30 };
        tokio::time::sleep(Duration::from_millis(settle)).await;
        let sent = Instant::now();
        let step = operator
            .cancel(&q, &JobFilter::Ids(ids.clone()), &Cursor::start())
            .await
            .unwrap();
        assert_eq!(step.done, 1);
        let woke = waiter.await.unwrap();
        took.push(
            woke.checked_duration_since(sent)
                .expect("the wait returned before the cancel: it did not wait"),
        );
        // The job was the claim's only one: the claim stays held, its heartbeat names it.
        let beat = worker
            .heartbeat(&[jobs[0].lease.clone()], LEASE, &[])
            .await
            .unwrap();
        assert_eq!(beat.held, vec![true]);
        assert_eq!(beat.cancelled, vec![(q.clone(), ids[0].clone())]);
    }
    took.sort();
    let median = took[took.len() / 2];
    println!(
        "cancel to wake: median {median:?}, max {:?}",
        took[took.len() - 1]
    );
    assert!(median < Duration::from_millis(100), "median {median:?}");
}

#[tokio::test]
async fn a_wait_for_cancels_sleeps_when_nothing_running_there_is_cancelled() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let other = RedisStore::connect(&server.url()).await.unwrap();
    let mut c = conn(&server).await;
    let (q, elsewhere) = (
        QueueName::new("quiet").unwrap(),
        QueueName::new("elsewhere").unwrap(),
    );
    // Subscribed once.
    store
        .wait_cancel(std::slice::from_ref(&q), Duration::from_millis(10))
        .await
        .unwrap();
    let ready = other.enqueue(&q, vec![job(1)]).await.unwrap();
    let running = other.enqueue(&elsewhere, vec![job(2)]).await.unwrap();
    let token = LeaseToken::mint("w").unwrap();
    assert_eq!(
        other
            .claim(&elsewhere, 1, LEASE, &token)
            .await
            .unwrap()
            .jobs
            .len(),
        1
    );
    let waiter = {
        let (store, q) = (store.clone(), q.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            store
                .wait_cancel(&[q], Duration::from_millis(500))
                .await
                .unwrap();
            started.elapsed()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A ready job of the queue and a running one of another: neither wakes it.
    for (queue, ids) in [(&q, &ready), (&elsewhere, &running)] {
        let step = other
            .cancel(queue, &JobFilter::Ids(ids.clone()), &Cursor::start())
            .await
            .unwrap();
        assert_eq!(step.done, 1);
    }
    let waited = waiter.await.unwrap();
    assert!(
        waited >= Duration::from_millis(480),
        "woke after {waited:?}"
    );

    // A wait costs no commands while it waits: nothing is polled.
    reset_stats(&mut c).await;
    store
        .wait_cancel(std::slice::from_ref(&q), Duration::from_millis(300))
        .await
        .unwrap();
    let commands = info_field(&mut c, "stats", "total_commands_processed").await;
    assert!(commands <= 2, "{commands} commands during a quiet wait");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscriber_comes_back_after_a_restart_and_wakes_its_waiters() {
    let mut server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let q = QueueName::new("restart").unwrap();
    store
        .wait_cancel(std::slice::from_ref(&q), Duration::from_millis(10))
        .await
        .unwrap();
    let waiter = {
        let (store, q) = (store.clone(), q.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let _ = store.wait_cancel(&[q], Duration::from_secs(20)).await;
            started.elapsed()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.restart();
    let waited = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("a wait through a restart must end early (messages may be lost)")
        .unwrap();
    assert!(waited < Duration::from_secs(10), "{waited:?}");

    // The next waits connect again and hear cancels as before.
    let operator = RedisStore::connect(&server.url()).await.unwrap();
    let ids = operator.enqueue(&q, vec![job(1)]).await.unwrap();
    let token = LeaseToken::mint("w").unwrap();
    let ok = eventually(Duration::from_secs(10), || async {
        store.claim(&q, 1, LEASE, &token).await.is_ok()
    })
    .await;
    assert!(ok, "the store did not reconnect");
    let ok = eventually(Duration::from_secs(10), || async {
        store
            .wait_cancel(std::slice::from_ref(&q), Duration::from_millis(10))
            .await
            .is_ok()
    })
    .await;
    assert!(ok, "the subscriber did not come back");
    let waiter = {
        let (store, q) = (store.clone(), q.clone());
        tokio::spawn(async move {
            store
                .wait_cancel(&[q], Duration::from_secs(20))
                .await
                .unwrap();
            Instant::now()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sent = Instant::now();
    let step = operator
        .cancel(&q, &JobFilter::Ids(ids), &Cursor::start())
        .await
        .unwrap();
    assert_eq!(step.done, 1);
    let woke = waiter.await.unwrap();
    assert!(woke.duration_since(sent) < Duration::from_secs(1));
}

#[tokio::test]
async fn progress_goes_when_its_job_leaves_running_by_any_path() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let mut c = conn(&server).await;
    let q = QueueName::new("progress").unwrap();
    let ids = store.enqueue(&q, (0..5).map(job).collect()).await.unwrap();
    let lease = Duration::from_millis(800);
    let token = LeaseToken::mint("w").unwrap();
    let jobs = store.claim(&q, 5, lease, &token).await.unwrap().jobs;
    let leases: Vec<_> = jobs.iter().map(|j| j.lease.clone()).collect();
    let reports: Vec<_> = leases
        .iter()
        .map(|l| (l.clone(), Bytes::from_static(b"{\"done\":1}")))
        .collect();
    let beat = store
        .heartbeat(&leases[..1], lease, &reports)
        .await
        .unwrap();
    assert_eq!(beat.held, vec![true]);
    let count = |c: &mut Conn| {
        let mut c = c.clone();
        let key = format!("taskyard:2:{{{}}}:progress", q.as_str());
        async move {
            redis::cmd("HLEN")
                .arg(key)
                .query_async::<i64>(&mut c)
                .await
                .unwrap()
        }
    };
    assert_eq!(count(&mut c).await, 5);
    let page = store
        .list(&q, JobState::Running, &Cursor::start(), 10)
        .await
        .unwrap();
    assert_eq!(page.jobs.len(), 5);
    assert!(
        page.jobs
            .iter()
            .all(|j| j.progress.as_deref() == Some("{\"done\":1}"))
    );
    let result = Bytes::from_static(b"1");
    let outcomes = [
        (leases[0].clone(), Outcome::Completed),
        (leases[1].clone(), Outcome::CompletedWith { result }),
        (
            leases[2].clone(),
            Outcome::Retry {
                delay_ms: 60_000,
                error: "again".into(),
            },
        ),
    ];
    assert_eq!(
        store.finish(&outcomes).await.unwrap(),
        vec![true, true, true]
    );
    assert_eq!(count(&mut c).await, 2);
    assert_eq!(store.release(&leases[3..4]).await.unwrap(), vec![true]);
    assert_eq!(count(&mut c).await, 1);
    let job = store.job(&q, &ids[4]).await.unwrap().unwrap();
    assert_eq!(job.progress.as_deref(), Some("{\"done\":1}"));
    let step = store
        .cancel(&q, &JobFilter::Ids(vec![ids[4].clone()]), &Cursor::start())
        .await
        .unwrap();
    assert_eq!(step.done, 1);
    assert!(!key_exists(&mut c, &q, "progress").await);
    let job = store.job(&q, &ids[4]).await.unwrap().unwrap();
    assert_eq!((job.state, job.progress), (JobState::Cancelled, None));
    assert!(key_exists(&mut c, &q, "revoked").await);

    // Expiry: progress of a job whose lease ran out goes too, and the claim's cancels
    // are forgotten with it.
    let token = LeaseToken::mint("w").unwrap();
    let again = store.claim(&q, 1, lease, &token).await.unwrap().jobs;
    let report = (again[0].lease.clone(), Bytes::from_static(b"2"));
    store
        .heartbeat(std::slice::from_ref(&again[0].lease), lease, &[report])
        .await
        .unwrap();
    assert_eq!(count(&mut c).await, 1);
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    assert_eq!(store.maintain(&q).await.unwrap().expired, 1);
    for key in ["progress", "revoked"] {
        assert!(!key_exists(&mut c, &q, key).await, "{key} is left");
    }
}

#[tokio::test]
async fn a_cancel_by_id_walks_a_long_ready_list_in_steps() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let mut c = conn(&server).await;
    let q = QueueName::new("long").unwrap();
    let ids = enqueue_many(&store, &q, 5000).await;
    let last = ids[4999].clone();
    reset_stats(&mut c).await;
    let done = Client::new(store.clone())
        .cancel(&q, &JobFilter::Ids(vec![last.clone()]))
        .await
        .unwrap();
    assert_eq!((done.done, done.skipped.len()), (1, 0));
    // 2,000 entries a call: the walk takes three.
    assert_eq!(scripts_run(&mut c).await, 3);
    let st = store.stats(&q).await.unwrap();
    assert_eq!((st.ready, st.cancelled), (4999, 1));
    let job = store.job(&q, &last).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(job.payload, String::from_utf8(job_payload(4999)).unwrap());
    let token = LeaseToken::mint("w").unwrap();
    let claimed = store.claim(&q, 6000, LEASE, &token).await.unwrap().jobs;
    assert_eq!(claimed.len(), 4999);
    assert!(claimed.iter().all(|j| j.lease.id != last));
}

fn job_payload(n: u64) -> Vec<u8> {
    job(n).payload().to_vec()
}

#[tokio::test]
async fn cancelling_many_running_jobs_goes_in_bounded_steps() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let q = QueueName::new("many").unwrap();
    enqueue_many(&store, &q, 2500).await;
    let token = LeaseToken::mint("w").unwrap();
    let jobs = store.claim(&q, 2500, LEASE, &token).await.unwrap().jobs;
    assert_eq!(jobs.len(), 2500);
    let (mut total, mut steps) = (0, 0);
    let mut after = Cursor::start();
    loop {
        let step = store.cancel(&q, &JobFilter::All, &after).await.unwrap();
        assert!(step.done <= 1000, "a step cancelled {}", step.done);
        total += step.done;
        steps += 1;
        match step.next {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(total, 2500);
    assert!(
        steps >= 3 + 3,
        "scheduled, prio, list, then running: {steps} steps"
    );
    let st = store.stats(&q).await.unwrap();
    assert_eq!((st.running, st.cancelled), (0, 2500));
    let beat = store
        .heartbeat(&[jobs[0].lease.clone()], LEASE, &[])
        .await
        .unwrap();
    assert_eq!(beat.held, vec![true]);
    assert_eq!(beat.cancelled.len(), 2500);
    let leases: Vec<_> = jobs
        .iter()
        .map(|j| (j.lease.clone(), Outcome::Completed))
        .collect();
    assert!(store.finish(&leases).await.unwrap().iter().all(|ok| !ok));
}

/// A completion with no value while nobody waits writes nothing new; while a waiter is
/// registered it keeps an empty result for the TTL (the job shows completed, no value),
/// and maintenance drops the waiter once its wait is over.
#[tokio::test]
async fn a_completion_keeps_an_empty_result_only_while_waited_for() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let mut c = conn(&server).await;
    let q = QueueName::new("waited").unwrap();
    let ids = store.enqueue(&q, vec![job(1), job(2)]).await.unwrap();
    let waiter = {
        let (store, q, id) = (store.clone(), q.clone(), ids[1].clone());
        tokio::spawn(async move {
            store
                .wait_job(&q, &id, Duration::from_millis(400))
                .await
                .unwrap();
            Instant::now()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(key_exists(&mut c, &q, "waiting").await);
    let token = LeaseToken::mint("w").unwrap();
    let jobs = store.claim(&q, 2, LEASE, &token).await.unwrap().jobs;
    let outcomes: Vec<_> = jobs
        .iter()
        .map(|j| (j.lease.clone(), Outcome::Completed))
        .collect();
    let finished = Instant::now();
    store.finish(&outcomes).await.unwrap();
    let woke = waiter.await.unwrap();
    assert!(woke.duration_since(finished) < Duration::from_millis(200));
    assert!(
        store.job(&q, &ids[0]).await.unwrap().is_none(),
        "not waited for"
    );
    // Listed as completed only while kept as a job: the mark is not a retained job.
    let page = store
        .list(&q, JobState::Completed, &Cursor::start(), 10)
        .await
        .unwrap();
    assert!(page.jobs.is_empty());
    let job = store.job(&q, &ids[1]).await.unwrap().expect("the mark");
    assert_eq!((job.state, job.result), (JobState::Completed, None));
    assert_eq!(job.kind, "a");
    assert!(job.at_ms.is_some());
    tokio::time::sleep(Duration::from_millis(400)).await;
    store.maintain(&q).await.unwrap();
    assert!(!key_exists(&mut c, &q, "waiting").await);
}

/// What cancelled jobs, results and progress cost in memory (the figures of
/// docs/redis.md), checked loosely.
#[tokio::test]
async fn what_cancels_results_and_progress_cost_per_job() {
    const N: u64 = 10_000;
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let mut c = conn(&server).await;
    let mem = |c: &mut Conn| {
        let mut c = c.clone();
        async move { info_field(&mut c, "memory", "used_memory").await }
    };

    // Cancelled ready jobs, against the same jobs ready.
    let q = QueueName::new("cancelled").unwrap();
    store.enqueue(&q, vec![job(0)]).await.unwrap();
    Client::new(store.clone())
        .cancel(&q, &JobFilter::All)
        .await
        .unwrap();
    let before = mem(&mut c).await;
    enqueue_many(&store, &q, N).await;
    let ready = (mem(&mut c).await - before) / N as i64;
    Client::new(store.clone())
        .cancel(&q, &JobFilter::All)
        .await
        .unwrap();
    let cancelled = (mem(&mut c).await - before) / N as i64;
    println!("ready     {ready:>4} bytes per job; cancelled {cancelled:>4}");
    assert!(cancelled < 400, "{cancelled}");

    // Results of 11 bytes, kept apart from jobs no longer kept.
    let q = QueueName::new("results").unwrap();
    let before = mem(&mut c).await;
    enqueue_many(&store, &q, N).await;
    let token = LeaseToken::mint("w").unwrap();
    let jobs = store
        .claim(&q, N as usize, LEASE, &token)
        .await
        .unwrap()
        .jobs;
    let outcomes: Vec<_> = jobs
        .iter()
        .map(|j| {
            let result = Bytes::from_static(b"{\"ok\":true}");
            (j.lease.clone(), Outcome::CompletedWith { result })
        })
        .collect();
    store.finish(&outcomes).await.unwrap();
    let result = (mem(&mut c).await - before) / N as i64;
    println!("result    {result:>4} bytes per completed job (11-byte value)");
    assert!(result < 300, "{result}");

    // Progress of 10 bytes on running jobs.
    let q = QueueName::new("progress").unwrap();
    enqueue_many(&store, &q, N).await;
    let token = LeaseToken::mint("w").unwrap();
    let jobs = store
        .claim(&q, N as usize, LEASE, &token)
        .await
        .unwrap()
        .jobs;
    let before = mem(&mut c).await;
    let reports: Vec<_> = jobs
        .iter()
        .map(|j| (j.lease.clone(), Bytes::from_static(b"{\"done\":1}")))
        .collect();
    store
        .heartbeat(&[jobs[0].lease.clone()], LEASE, &reports)
        .await
        .unwrap();
    let progress = (mem(&mut c).await - before) / N as i64;
    println!("progress  {progress:>4} bytes per running job (10-byte value)");
    assert!(progress < 200, "{progress}");
}
