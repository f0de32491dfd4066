//! Formats that grow: a Redis written by release 0.1 opens with this release and its jobs
//! carry on; a large 0.1 queue is upgraded in bounded steps; a queue or job envelope of a
//! format this release does not know is refused and left as it is.

use std::sync::Arc;
use std::time::Duration;

use taskyard_conformance::fixtures::{self, by_role};
use taskyard_conformance::{RedisServer, TempDir};
use taskyard_core::{
    Cursor, DeadFilter, EnqueueOptions, Error, JobId, JobState, LeaseToken, NewJob, Outcome,
    QueueConfig, QueueName, RetryPolicy, Store,
};
use taskyard_redis::RedisStore;

fn queue(name: &str) -> QueueName {
    QueueName::new(name).unwrap()
}

fn job(kind: &str) -> NewJob {
    NewJob::new(
        kind,
        b"{}".to_vec(),
        &EnqueueOptions::default(),
        RetryPolicy::default(),
    )
    .unwrap()
}

async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn keys(conn: &mut redis::aio::MultiplexedConnection, pattern: &str) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(pattern)
        .query_async(conn)
        .await
        .unwrap();
    keys.sort();
    keys
}

#[tokio::test]
async fn a_redis_written_by_0_1_opens_and_its_jobs_carry_on() {
    let dir = TempDir::new();
    std::fs::copy(
        fixtures::path("redis-7.0.15.rdb"),
        dir.path().join("dump.rdb"),
    )
    .unwrap();
    let dir_arg = dir.path().to_str().unwrap().to_string();
    let server = RedisServer::start_with(&["--dir", &dir_arg, "--dbfilename", "dump.rdb"]);
    let mut conn = raw(&server).await;
    assert!(
        !keys(&mut conn, "taskyard:{*").await.is_empty(),
        "0.1's keys loaded"
    );
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let jobs = fixtures::jobs("redis");

    // Every job reads as 0.1 left it. The first call on each queue upgrades it.
    fixtures::assert_as_0_1_left_them(&store, &jobs).await;
    fixtures::assert_queues_as_0_1_left_them(&store).await;
    let upgrade = queue("upgrade");
    assert_eq!(
        keys(&mut conn, "taskyard:{*").await,
        Vec::<String>::new(),
        "0.1's keys are all moved"
    );

    // The running jobs' 1 s leases ran out long ago: maintenance returns them, charged.
    assert_eq!(store.maintain(&upgrade).await.unwrap().expired, 2);
    fixtures::carry_on(Arc::new(store.clone()), &jobs).await;
    // The scheduled ones wait for their time, which Redis's clock cannot be moved to.
    let end: [fixtures::End; 2] = [
        ("scheduled-retry", JobState::Scheduled, 1, &["try later"]),
        ("scheduled-2100", JobState::Scheduled, 0, &[]),
    ];
    fixtures::assert_ends(&store, &jobs, &end).await;
    let due_2100 = store
        .job(&upgrade, &by_role(&jobs, "scheduled-2100").id)
        .await
        .unwrap();
    assert_eq!(due_2100.unwrap().at_ms, Some(4_102_444_800_000));

    // New ids carry on after 0.1's, so no id is handed out twice.
    let ids = store.enqueue(&upgrade, vec![job("new")]).await.unwrap();
    assert_eq!(ids, [JobId::new("13")]);

    fixtures::other_queues_carry_on(&store, &jobs).await;

    // A job's own timeout, an optional envelope field, goes in and comes back out.
    let timed = queue("timed");
    let opts = EnqueueOptions::default().timeout(Duration::from_millis(2500));
    let with_timeout = NewJob::new("k", b"{}".to_vec(), &opts, RetryPolicy::default()).unwrap();
    store
        .enqueue(&timed, vec![job("k"), with_timeout])
        .await
        .unwrap();
    let claim = store
        .claim(
            &timed,
            10,
            Duration::from_secs(60),
            &LeaseToken::mint("timed").unwrap(),
        )
        .await
        .unwrap();
    let timeouts: Vec<_> = claim.jobs.iter().map(|c| c.timeout).collect();
    assert_eq!(timeouts, [None, Some(Duration::from_millis(2500))]);

    // A 0.1 process writing after the upgrade (against the upgrade notes) is not picked
    // up blindly: its ids come from 0.1's counter and could collide with new ones.
    let _: () = redis::pipe()
        .hset("taskyard:{upgrade}:meta", "seq", 13)
        .rpush(
            "taskyard:{upgrade}:ready",
            "13\t0\t1700000000000\t25\tstray\t\n{}",
        )
        .query_async(&mut conn)
        .await
        .unwrap();
    let ready_before = store.stats(&upgrade).await.unwrap().ready;
    store.maintain(&upgrade).await.unwrap();
    assert_eq!(store.stats(&upgrade).await.unwrap().ready, ready_before);
    assert_eq!(
        keys(&mut conn, "taskyard:{upgrade}:*").await.len(),
        2,
        "left as written"
    );
}

/// Scripts run on the server so far (`EVALSHA` and `EVAL`).
async fn scripts_run(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
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

#[tokio::test]
async fn a_large_0_1_queue_is_upgraded_in_bounded_steps_and_keeps_its_order() {
    let server = RedisServer::start();
    let mut conn = raw(&server).await;
    // 5,000 ready and 2,500 dead jobs in 0.1's layout, as 0.1 writes them.
    let mut pipe = redis::pipe();
    for id in 1..=5000 {
        pipe.rpush(
            "taskyard:{big}:ready",
            format!("{id}\t0\t1700000000000\t25\tk\t\n{{}}"),
        )
        .ignore();
    }
    for id in 5001..=7500 {
        pipe.hset(
            "taskyard:{big}:jobs",
            id,
            format!("{id}\t3\t1700000000000\t3\tk\t\n{{}}"),
        )
        .ignore();
        pipe.zadd("taskyard:{big}:dead", id, 1_700_000_000_000u64 + id as u64)
            .ignore();
    }
    pipe.hset("taskyard:{big}:meta", "seq", 7500).ignore();
    pipe.sadd("taskyard:queues", "big").ignore();
    pipe.query_async::<()>(&mut conn).await.unwrap();

    let store = RedisStore::connect(&server.url()).await.unwrap();
    let before = scripts_run(&mut conn).await;
    let big = queue("big");
    let stats = store.stats(&big).await.unwrap();
    assert_eq!((stats.ready, stats.dead), (5000, 2500));
    // One refused stats call, then steps of at most 1,000 jobs (5 ready, 3 dead, the
    // last one finishing), then stats again: never one script over the whole queue.
    let steps = scripts_run(&mut conn).await - before - 2;
    assert!(steps >= 9, "{steps} upgrade steps");
    let claim = store
        .claim(
            &big,
            3,
            Duration::from_secs(60),
            &LeaseToken::mint("w").unwrap(),
        )
        .await
        .unwrap();
    let ids: Vec<&str> = claim.jobs.iter().map(|c| c.lease.id.as_str()).collect();
    assert_eq!(ids, ["1", "2", "3"]);
    assert_eq!(
        store.enqueue(&big, vec![job("k")]).await.unwrap(),
        [JobId::new("7501")]
    );
}

/// Every key of the server with its serialized value, to show nothing was changed.
async fn snapshot(conn: &mut redis::aio::MultiplexedConnection) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for key in keys(conn, "*").await {
        let dump: Vec<u8> = redis::cmd("DUMP")
            .arg(&key)
            .query_async(conn)
            .await
            .unwrap();
        out.push((key, dump));
    }
    out
}

fn is_version(err: Error, found: &str) -> bool {
    matches!(&err, Error::Version { found: f, reads, .. } if f == found && reads == "2")
}

#[tokio::test]
async fn a_queue_of_a_newer_layout_is_refused_and_left_unchanged() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let q = queue("newer");
    store.enqueue(&q, vec![job("a"), job("b")]).await.unwrap();
    let claim = store
        .claim(
            &q,
            1,
            Duration::from_secs(60),
            &LeaseToken::mint("w").unwrap(),
        )
        .await
        .unwrap();
    let lease = claim.jobs[0].lease.clone();
    let mut conn = raw(&server).await;
    // What a later release writes when it changes the layout.
    redis::cmd("HSET")
        .arg("taskyard:2:{newer}:meta")
        .arg("layout")
        .arg("3")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let before = snapshot(&mut conn).await;

    let minute = Duration::from_secs(60);
    let id = JobId::new("2");
    assert!(is_version(
        store.enqueue(&q, vec![job("c")]).await.unwrap_err(),
        "3"
    ));
    assert!(is_version(
        store
            .claim(&q, 5, minute, &LeaseToken::mint("x").unwrap())
            .await
            .unwrap_err(),
        "3"
    ));
    let l = std::slice::from_ref(&lease);
    assert!(is_version(
        store.heartbeat(l, minute, &[]).await.unwrap_err(),
        "3"
    ));
    let done = [(lease.clone(), Outcome::Completed)];
    assert!(is_version(store.finish(&done).await.unwrap_err(), "3"));
    assert!(is_version(store.release(l).await.unwrap_err(), "3"));
    assert!(is_version(store.maintain(&q).await.unwrap_err(), "3"));
    assert!(is_version(store.stats(&q).await.unwrap_err(), "3"));
    assert!(is_version(
        store
            .list(&q, JobState::Ready, &Cursor::start(), 10)
            .await
            .unwrap_err(),
        "3"
    ));
    assert!(is_version(store.job(&q, &id).await.unwrap_err(), "3"));
    assert!(is_version(
        store
            .redrive(&q, &DeadFilter::All, &Cursor::start())
            .await
            .unwrap_err(),
        "3"
    ));
    assert!(is_version(
        store
            .purge(&q, &DeadFilter::All, &Cursor::start())
            .await
            .unwrap_err(),
        "3"
    ));
    assert!(is_version(
        store.set_paused(&q, true).await.unwrap_err(),
        "3"
    ));
    assert!(is_version(store.config(&q).await.unwrap_err(), "3"));
    let config = QueueConfig::default();
    assert!(is_version(
        store.configure(&q, &config).await.unwrap_err(),
        "3"
    ));
    let err = store.stats(&q).await.unwrap_err().to_string();
    assert!(err.contains("format 3") && err.contains("reads 2"), "{err}");
    assert_eq!(snapshot(&mut conn).await, before, "nothing was written");
}

#[tokio::test]
async fn a_job_envelope_of_an_unknown_version_is_refused_not_misread() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let q = queue("envelopes");
    store.enqueue(&q, vec![job("a")]).await.unwrap();
    let mut conn = raw(&server).await;
    redis::cmd("RPUSH")
        .arg("taskyard:2:{envelopes}:ready")
        .arg("9\t77\t0\t1700000000000\t3\tb\t\tnew=1\n{}")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let err = store.job(&q, &JobId::new("77")).await.unwrap_err();
    assert!(is_version(err, "9"));
    // A claim runs the jobs it can read and leaves the other to its lease.
    let claim = store
        .claim(
            &q,
            5,
            Duration::from_secs(60),
            &LeaseToken::mint("w").unwrap(),
        )
        .await
        .unwrap();
    let kinds: Vec<&str> = claim.jobs.iter().map(|c| &*c.kind).collect();
    assert_eq!(kinds, ["a"]);
    assert_eq!(store.stats(&q).await.unwrap().running, 2);
}

/// Two builds on one Redis, as in a rolling deploy across a layout change: this release's
/// scripts and a later release's (layout 3). Each refuses the other's queues before
/// touching them, instead of misreading them.
#[tokio::test]
async fn two_builds_of_different_layouts_refuse_each_others_queues() {
    let server = RedisServer::start();
    let this = RedisStore::connect(&server.url()).await.unwrap();
    let next = RedisStore::connect_as_layout(&server.url(), 3)
        .await
        .unwrap();
    let (ours, theirs) = (queue("ours"), queue("theirs"));
    this.enqueue(&ours, vec![job("a")]).await.unwrap();
    next.enqueue(&theirs, vec![job("b")]).await.unwrap();
    let mut conn = raw(&server).await;
    let before = snapshot(&mut conn).await;

    let minute = Duration::from_secs(60);
    let token = LeaseToken::mint("w").unwrap();
    let refused = |e: Error, found: &str, reads: &str| matches!(&e, Error::Version { found: f, reads: r, .. } if f == found && r == reads);
    // This release on the later one's queue, and the later one on this release's.
    let e = this.enqueue(&theirs, vec![job("c")]).await.unwrap_err();
    assert!(refused(e, "3", "2"));
    let e = this.claim(&theirs, 5, minute, &token).await.unwrap_err();
    assert!(refused(e, "3", "2"));
    let e = this.stats(&theirs).await.unwrap_err();
    assert!(refused(e, "3", "2"));
    let e = next.claim(&ours, 5, minute, &token).await.unwrap_err();
    assert!(refused(e, "2", "3"));
    let e = next.maintain(&ours).await.unwrap_err();
    assert!(refused(e, "2", "3"));
    assert_eq!(snapshot(&mut conn).await, before, "nothing was written");
    // Each still runs its own.
    assert_eq!(
        this.claim(&ours, 5, minute, &token)
            .await
            .unwrap()
            .jobs
            .len(),
        1
    );
}
