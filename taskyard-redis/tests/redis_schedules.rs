//! Periodic jobs on Redis, beyond the conformance suite: a queue's schedules are one hash
//! (`taskyard:2:{q}:schedules`), every change is a compare-and-set on the revision, and a
//! fire enqueues its jobs and moves the schedule in one script, or does neither.

use std::time::Duration;

use bytes::Bytes;
use taskyard_conformance::RedisServer;
use taskyard_core::schedule::StoredSchedule;
use taskyard_core::{
    Cursor, EnqueueOptions, Error, JobId, LeaseToken, NewJob, QueueConfig, QueueName, RetryPolicy,
    Store, UniqueMode,
};
use taskyard_redis::RedisStore;

fn job(opts: &EnqueueOptions) -> NewJob {
    NewJob::new("tick", b"{}".to_vec(), opts, RetryPolicy::default()).unwrap()
}

fn plain(n: usize) -> Vec<NewJob> {
    (0..n).map(|_| job(&EnqueueOptions::default())).collect()
}

/// A schedule not stored yet (revision 0); its definition holds a newline, which a
/// record must keep.
fn new_schedule(name: &str) -> StoredSchedule {
    StoredSchedule {
        name: name.to_string(),
        definition: Bytes::from_static(b"{\"cron\":\"* * * * *\",\n\"tab\":\"\t\"}\n"),
        next_ms: 1_000,
        last_ms: None,
        last_job: None,
        paused: false,
        rev: 0,
    }
}

async fn stored(store: &RedisStore, q: &QueueName, name: &str) -> Option<StoredSchedule> {
    store
        .schedules(q)
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.name == name)
}

async fn connect() -> (RedisServer, RedisStore) {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    (server, store)
}

#[tokio::test]
async fn put_schedule_is_a_compare_and_set_on_the_revision() {
    let (server, store) = connect().await;
    let q = QueueName::new("cas").unwrap();
    assert!(store.schedules(&q).await.unwrap().is_empty());
    let s = new_schedule("nightly");
    assert!(store.put_schedule(&q, &s).await.unwrap(), "created");
    // Registered as enqueue registers a queue.
    assert_eq!(store.queues().await.unwrap(), std::slice::from_ref(&q));
    let got = stored(&store, &q, "nightly").await.unwrap();
    assert_eq!(
        got,
        StoredSchedule {
            rev: 1,
            ..s.clone()
        }
    );

    // A second create (revision 0) finds one stored.
    let other = StoredSchedule {
        next_ms: 5,
        ..new_schedule("nightly")
    };
    assert!(!store.put_schedule(&q, &other).await.unwrap());
    assert_eq!(stored(&store, &q, "nightly").await.unwrap(), got);

    // With the current revision: written, revision one higher, every value kept.
    let changed = StoredSchedule {
        definition: Bytes::from_static(b"second\nline\n\nthird"),
        next_ms: u64::MAX,
        last_ms: Some(123_456_789_012),
        last_job: Some(JobId::new("42".to_string())),
        paused: true,
        ..got.clone()
    };
    assert!(store.put_schedule(&q, &changed).await.unwrap());
    let got2 = stored(&store, &q, "nightly").await.unwrap();
    assert_eq!(
        got2,
        StoredSchedule {
            rev: 2,
            ..changed.clone()
        }
    );

    // A stale revision (1) writes nothing.
    let stale = StoredSchedule {
        paused: false,
        ..got.clone()
    };
    assert!(!store.put_schedule(&q, &stale).await.unwrap());
    assert_eq!(stored(&store, &q, "nightly").await.unwrap(), got2);
    // A revision ahead of the stored one neither.
    let ahead = StoredSchedule {
        rev: 7,
        ..got2.clone()
    };
    assert!(!store.put_schedule(&q, &ahead).await.unwrap());
    // Nor one naming a revision where none is stored, and that leaves the queue alone.
    let ghost = QueueName::new("ghost").unwrap();
    let none = StoredSchedule {
        rev: 3,
        ..new_schedule("x")
    };
    assert!(!store.put_schedule(&ghost, &none).await.unwrap());
    assert!(store.schedules(&ghost).await.unwrap().is_empty());
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let ghost_keys: Vec<String> = redis::cmd("KEYS")
        .arg("taskyard:2:{ghost}:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ghost_keys.is_empty(), "{ghost_keys:?}");

    // Back to None and not paused, revision 3.
    let back = StoredSchedule {
        last_ms: None,
        last_job: None,
        paused: false,
        definition: Bytes::new(),
        ..got2.clone()
    };
    assert!(store.put_schedule(&q, &back).await.unwrap());
    assert_eq!(
        stored(&store, &q, "nightly").await.unwrap(),
        StoredSchedule { rev: 3, ..back }
    );

    // Listed by name, each with its own revision.
    for name in ["b", "a", "c.d:e-f_g"] {
        assert!(store.put_schedule(&q, &new_schedule(name)).await.unwrap());
    }
    let names: Vec<String> = store
        .schedules(&q)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["a", "b", "c.d:e-f_g", "nightly"]);
    // Another queue's schedules are its own.
    assert!(store.schedules(&ghost).await.unwrap().is_empty());
}

#[tokio::test]
async fn remove_schedule_says_whether_there_was_one() {
    let (_server, store) = connect().await;
    let q = QueueName::new("rm").unwrap();
    assert!(!store.remove_schedule(&q, "nope").await.unwrap());
    store.put_schedule(&q, &new_schedule("a")).await.unwrap();
    store.put_schedule(&q, &new_schedule("b")).await.unwrap();
    assert!(store.remove_schedule(&q, "a").await.unwrap());
    assert!(!store.remove_schedule(&q, "a").await.unwrap());
    assert_eq!(store.schedules(&q).await.unwrap().len(), 1);
    // Created again from revision 0.
    assert!(store.put_schedule(&q, &new_schedule("a")).await.unwrap());
    assert_eq!(stored(&store, &q, "a").await.unwrap().rev, 1);
}

#[tokio::test]
async fn fire_enqueues_and_moves_the_schedule_once_per_revision() {
    let (_server, store) = connect().await;
    let q = QueueName::new("fire").unwrap();
    store.put_schedule(&q, &new_schedule("s")).await.unwrap();
    let s = stored(&store, &q, "s").await.unwrap();

    // Jobs with options (a priority, a timeout, attempts, a retry policy) and without.
    let rich = EnqueueOptions::default()
        .priority(80)
        .max_attempts(7)
        .timeout(Duration::from_secs(9))
        .retry(
            RetryPolicy::default()
                .max_attempts(7)
                .base(Duration::from_millis(10))
                .cap(Duration::from_millis(20)),
        );
    let jobs = vec![
        job(&EnqueueOptions::default()),
        job(&rich),
        job(&EnqueueOptions::default()),
    ];
    let ids = store
        .fire(&q, "s", s.rev, 2_000, Some(1_000), jobs)
        .await
        .unwrap()
        .expect("fired");
    assert_eq!(ids.len(), 3);
    assert_eq!(store.stats(&q).await.unwrap().ready, 3);
    let after = stored(&store, &q, "s").await.unwrap();
    assert_eq!(
        after,
        StoredSchedule {
            next_ms: 2_000,
            last_ms: Some(1_000),
            last_job: Some(ids[2].clone()),
            rev: s.rev + 1,
            ..s.clone()
        }
    );
    // Jobs as an enqueue makes them: ids in order, options kept.
    let a: u64 = ids[0].as_str().parse().unwrap();
    let c: u64 = ids[2].as_str().parse().unwrap();
    assert_eq!(c, a + 2);
    let info = store.job(&q, &ids[1]).await.unwrap().expect("the job");
    assert_eq!((info.priority, info.max_attempts), (80, 7));
    let token = LeaseToken::mint("w").unwrap();
    let claim = store
        .claim(&q, 10, Duration::from_secs(30), &token)
        .await
        .unwrap();
    let first = &claim.jobs[0];
    assert_eq!(first.lease.id, ids[1], "the higher priority first");
    assert_eq!(first.timeout, Some(Duration::from_secs(9)));
    assert_eq!(first.max_attempts, 7);
    assert_eq!(
        claim
            .jobs
            .iter()
            .map(|j| j.lease.id.clone())
            .collect::<Vec<_>>(),
        [ids[1].clone(), ids[0].clone(), ids[2].clone()]
    );

    // The same revision again: another worker's fire of that tick. Nothing happens.
    assert_eq!(
        store
            .fire(&q, "s", s.rev, 3_000, Some(2_000), plain(2))
            .await
            .unwrap(),
        None
    );
    let stats = store.stats(&q).await.unwrap();
    assert_eq!((stats.ready, stats.running), (0, 3));
    assert_eq!(stored(&store, &q, "s").await.unwrap(), after);

    // The new revision fires again.
    let more = store
        .fire(&q, "s", after.rev, 3_000, Some(2_000), plain(1))
        .await
        .unwrap()
        .expect("fired");
    assert_eq!(more.len(), 1);
    let again = stored(&store, &q, "s").await.unwrap();
    assert_eq!(
        (again.rev, again.last_job),
        (after.rev + 1, Some(more[0].clone()))
    );
}

#[tokio::test]
async fn fire_refuses_a_paused_changed_or_removed_schedule() {
    let (_server, store) = connect().await;
    let q = QueueName::new("refuse").unwrap();
    // Never stored.
    assert_eq!(
        store.fire(&q, "s", 0, 1, None, plain(1)).await.unwrap(),
        None
    );
    assert_eq!(
        store.fire(&q, "s", 1, 1, None, plain(1)).await.unwrap(),
        None
    );

    store.put_schedule(&q, &new_schedule("s")).await.unwrap();
    let s = stored(&store, &q, "s").await.unwrap();
    let paused = StoredSchedule {
        paused: true,
        ..s.clone()
    };
    assert!(store.put_schedule(&q, &paused).await.unwrap());
    let paused = stored(&store, &q, "s").await.unwrap();
    // Paused: neither the revision read before the pause nor the current one fires.
    for rev in [s.rev, paused.rev] {
        assert_eq!(
            store
                .fire(&q, "s", rev, 9, Some(8), plain(2))
                .await
                .unwrap(),
            None
        );
    }
    assert_eq!(
        store
            .fire(&q, "s", paused.rev, 9, None, Vec::new())
            .await
            .unwrap(),
        None
    );
    assert_eq!(stored(&store, &q, "s").await.unwrap(), paused);
    assert_eq!(store.stats(&q).await.unwrap().ready, 0);

    // Removed.
    let resumed = StoredSchedule {
        paused: false,
        ..paused.clone()
    };
    assert!(store.put_schedule(&q, &resumed).await.unwrap());
    let rev = stored(&store, &q, "s").await.unwrap().rev;
    assert!(store.remove_schedule(&q, "s").await.unwrap());
    assert_eq!(
        store.fire(&q, "s", rev, 9, None, plain(1)).await.unwrap(),
        None
    );
    assert!(store.schedules(&q).await.unwrap().is_empty());
    assert_eq!(store.stats(&q).await.unwrap().ready, 0);

    // A fired job cannot hold a unique key.
    store.put_schedule(&q, &new_schedule("u")).await.unwrap();
    let unique = job(&EnqueueOptions::default().unique("k", UniqueMode::Queued));
    let e = store
        .fire(&q, "u", 1, 9, None, vec![unique])
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidOption(_)), "{e:?}");
    assert_eq!(stored(&store, &q, "u").await.unwrap().rev, 1);
}

#[tokio::test]
async fn a_fire_with_no_jobs_moves_only_the_record() {
    let (_server, store) = connect().await;
    let q = QueueName::new("skip").unwrap();
    let mut s = new_schedule("s");
    s.last_ms = Some(500);
    s.last_job = Some(JobId::new("17".to_string()));
    store.put_schedule(&q, &s).await.unwrap();
    let s = stored(&store, &q, "s").await.unwrap();
    assert_eq!(
        store
            .fire(&q, "s", s.rev, 7_000, Some(6_000), Vec::new())
            .await
            .unwrap(),
        Some(Vec::new())
    );
    let after = stored(&store, &q, "s").await.unwrap();
    assert_eq!(
        after,
        StoredSchedule {
            next_ms: 7_000,
            last_ms: Some(6_000),
            rev: s.rev + 1,
            // The last job stays: no job was enqueued.
            ..s.clone()
        }
    );
    let stats = store.stats(&q).await.unwrap();
    assert_eq!((stats.ready, stats.scheduled), (0, 0));
    // Still a compare-and-set: the old revision is refused.
    assert_eq!(
        store
            .fire(&q, "s", s.rev, 1, None, Vec::new())
            .await
            .unwrap(),
        None
    );
    assert_eq!(stored(&store, &q, "s").await.unwrap(), after);
    // Last tick kept as given, None included; u64::MAX for no tick left.
    assert_eq!(
        store
            .fire(&q, "s", after.rev, u64::MAX, None, Vec::new())
            .await
            .unwrap(),
        Some(Vec::new())
    );
    let end = stored(&store, &q, "s").await.unwrap();
    assert_eq!(
        (end.next_ms, end.last_ms, end.rev),
        (u64::MAX, None, after.rev + 1)
    );
}

#[tokio::test]
async fn a_fire_into_a_full_queue_is_queue_full_and_changes_nothing() {
    let (_server, store) = connect().await;
    let q = QueueName::new("full").unwrap();
    store
        .configure(
            &q,
            &QueueConfig {
                max_len: 3,
                ..QueueConfig::default()
            },
        )
        .await
        .unwrap();
    store.enqueue(&q, plain(2)).await.unwrap();
    store.put_schedule(&q, &new_schedule("s")).await.unwrap();
    let s = stored(&store, &q, "s").await.unwrap();

    for jobs in [
        plain(2),
        vec![job(&EnqueueOptions::default().priority(90)); 2],
    ] {
        let e = store
            .fire(&q, "s", s.rev, 2_000, Some(1_000), jobs)
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::QueueFull {
                    len: 2,
                    max_len: 3,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            stored(&store, &q, "s").await.unwrap(),
            s,
            "the schedule moved"
        );
        assert_eq!(store.stats(&q).await.unwrap().ready, 2);
    }
    // One job fits: fired.
    let ids = store
        .fire(&q, "s", s.rev, 2_000, Some(1_000), plain(1))
        .await
        .unwrap()
        .expect("fired");
    assert_eq!(store.stats(&q).await.unwrap().ready, 3);
    assert_eq!(
        stored(&store, &q, "s").await.unwrap().last_job,
        Some(ids[0].clone())
    );
    // A full queue does not stop a fire with no jobs (missed ticks skipped).
    let rev = s.rev + 1;
    assert_eq!(
        store
            .fire(&q, "s", rev, 3_000, Some(2_000), Vec::new())
            .await
            .unwrap(),
        Some(Vec::new())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_fires_of_one_revision_let_exactly_one_through() {
    let (server, store) = connect().await;
    // Two processes (stores), as two workers would be.
    let other = RedisStore::connect(&server.url()).await.unwrap();
    let q = QueueName::new("race").unwrap();
    store.put_schedule(&q, &new_schedule("s")).await.unwrap();
    for round in 0..20u64 {
        let s = stored(&store, &q, "s").await.unwrap();
        let next = 2_000 + round;
        let (a, b) = tokio::join!(
            store.fire(&q, "s", s.rev, next, Some(round), plain(2)),
            other.fire(&q, "s", s.rev, next, Some(round), plain(2)),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(a.is_some() != b.is_some(), "round {round}: {a:?} {b:?}");
        let after = stored(&store, &q, "s").await.unwrap();
        assert_eq!(after.rev, s.rev + 1);
        assert_eq!(after.last_job, a.or(b).unwrap().pop());
    }
    assert_eq!(store.stats(&q).await.unwrap().ready, 40);
}

#[tokio::test]
async fn deleting_a_queue_removes_its_schedules() {
    let (server, store) = connect().await;
    let q = QueueName::new("gone").unwrap();
    let kept = QueueName::new("kept").unwrap();
    store.put_schedule(&q, &new_schedule("s")).await.unwrap();
    store.put_schedule(&kept, &new_schedule("s")).await.unwrap();
    store.enqueue(&q, plain(1)).await.unwrap();
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let key = "taskyard:2:{gone}:schedules";
    let exists: i64 = redis::cmd("EXISTS")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, 1);
    store.delete_queue(&q, &Cursor::default()).await.unwrap();
    let exists: i64 = redis::cmd("EXISTS")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, 0);
    assert!(store.schedules(&q).await.unwrap().is_empty());
    assert_eq!(store.queues().await.unwrap(), std::slice::from_ref(&kept));
    assert_eq!(store.schedules(&kept).await.unwrap().len(), 1);
    // Declared again after the delete: the queue is named again.
    assert!(store.put_schedule(&q, &new_schedule("s")).await.unwrap());
    assert_eq!(store.queues().await.unwrap(), [q, kept]);
}

/// Redis at its memory limit refuses a fire (it adds jobs) before it writes anything,
/// while pausing, resuming and removing a schedule still work.
#[tokio::test]
async fn a_full_redis_refuses_a_fire_and_still_pauses_a_schedule() {
    let server =
        RedisServer::start_with(&["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"]);
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let q = QueueName::new("oom").unwrap();
    store.put_schedule(&q, &new_schedule("s")).await.unwrap();
    store.put_schedule(&q, &new_schedule("t")).await.unwrap();
    let payload = format!(r#"{{"body":"{}"}}"#, "x".repeat(100)).into_bytes();
    let big = || {
        (0..200)
            .map(|_| {
                NewJob::new(
                    "k",
                    payload.clone(),
                    &EnqueueOptions::default(),
                    RetryPolicy::default(),
                )
                .unwrap()
            })
            .collect::<Vec<_>>()
    };
    let mut n = 0;
    loop {
        match store.enqueue(&q, big()).await {
            Ok(ids) => n += ids.len(),
            Err(Error::MemoryFull) => break,
            Err(e) => panic!("{e:?}"),
        }
        assert!(n < 1_000_000);
    }
    // Pin the limit under what is used, so every call below meets a full Redis.
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await
        .unwrap();
    let used: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(used - 65_536)
        .query_async(&mut conn)
        .await
        .unwrap();

    let s = stored(&store, &q, "s").await.unwrap();
    for jobs in [plain(1), Vec::new()] {
        let e = store
            .fire(&q, "s", s.rev, 9, Some(8), jobs)
            .await
            .unwrap_err();
        assert!(matches!(e, Error::MemoryFull), "{e:?}");
        assert_eq!(stored(&store, &q, "s").await.unwrap(), s);
    }
    assert_eq!(store.stats(&q).await.unwrap().ready, n as u64);
    let paused = StoredSchedule {
        paused: true,
        ..s.clone()
    };
    assert!(
        store
            .put_schedule(&q, &paused)
            .await
            .expect("pause at the limit")
    );
    assert!(stored(&store, &q, "s").await.unwrap().paused);
    assert!(
        store
            .remove_schedule(&q, "t")
            .await
            .expect("remove at the limit")
    );
}

/// Real ticks every second with two workers, and redis-server killed and restarted
/// (append-only file, fsync always) between ticks: the schedule comes back with the
/// file, the workers reconnect, and every tick from the first to the last ran once —
/// none twice (a firing whose answer the kill cut off moved the revision, so no worker
/// fires that tick again), none skipped (ticks due while Redis was down run when it is
/// back, within the grace).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_run_once_each_across_a_redis_restart() {
    use std::sync::{Arc, Mutex};
    use taskyard_conformance::{eventually, suite::Ping};
    use taskyard_core::schedule::{Declared, Schedule};
    use taskyard_core::{Client, JobContext, JobError, Worker};

    let mut server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let q = QueueName::new("ticks").unwrap();
    let client = Client::new(store.clone());
    let every_second = Schedule::of(
        "every-second",
        "* * * * * *",
        &Ping { n: 1 },
        &EnqueueOptions::default().queue(q.as_str()),
    )
    .unwrap();
    assert_eq!(
        client.schedule(&every_second).await.unwrap(),
        Declared::Created
    );
    let first = store.schedules(&q).await.unwrap()[0].next_ms;
    let runs: Arc<Mutex<Vec<u64>>> = Arc::default();
    let mut workers = Vec::new();
    for _ in 0..2 {
        let runs = runs.clone();
        let w = Worker::builder(store.clone())
            .queue(q.as_str())
            .maintenance_every(Duration::from_millis(100))
            .handle(move |_: Ping, ctx: JobContext| {
                runs.lock().unwrap().push(ctx.enqueued_at_ms());
                async { Ok::<(), JobError>(()) }
            })
            .build()
            .unwrap()
            .spawn();
        workers.push(w);
    }
    let ran = |n: usize| {
        let runs = runs.clone();
        async move {
            eventually(Duration::from_secs(20), async || {
                runs.lock().unwrap().len() >= n
            })
            .await
        }
    };
    assert!(ran(3).await, "three ticks before the restart");
    server.restart();
    assert!(ran(7).await, "four more after it");
    for w in workers {
        w.shutdown().await.unwrap();
    }
    let stored = store.schedules(&q).await.unwrap().remove(0);
    let last = stored.last_ms.expect("a last run");
    let ticks = (last - first) / 1000 + 1;
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len() as u64, ticks, "ticks {first}..={last}: {runs:?}");
    assert_eq!(store.stats(&q).await.unwrap().ready, 0);
}
