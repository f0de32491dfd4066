//! Redis-specific behaviour: restarts, a lost script cache, authentication, and batching
//! (one round trip per batch), each against a real `redis-server` started by the test.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use taskyard_conformance::{RedisServer, eventually, until};
use taskyard_core::{
    Client, EnqueueOptions, Error, Job, JobContext, JobError, LeaseToken, NewJob, QueueName, Store,
    Worker,
};
use taskyard_redis::RedisStore;

#[derive(Serialize, Deserialize)]
struct Ping {
    n: u64,
}

impl Job for Ping {
    const KIND: &'static str = "ping";
}

async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn calls(conn: &mut redis::aio::MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn jobs(range: std::ops::Range<u64>) -> Vec<NewJob> {
    range
        .map(|n| NewJob::from_job(&Ping { n }, &EnqueueOptions::default()).unwrap())
        .collect()
}

#[tokio::test]
async fn bulk_enqueue_and_claim_are_one_script_call_each() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let q = QueueName::new("batch").unwrap();
    store.enqueue(&q, jobs(0..1)).await.unwrap(); // loads the script, registers the queue
    let mut conn = raw(&server).await;
    let before = calls(&mut conn, "evalsha").await + calls(&mut conn, "eval").await;
    store.enqueue(&q, jobs(0..5000)).await.unwrap();
    let claimed = store
        .claim(
            &q,
            1000,
            Duration::from_secs(30),
            &LeaseToken::mint("w").unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(claimed.jobs.len(), 1000);
    let leases: Vec<_> = claimed.jobs.iter().map(|j| j.lease.clone()).collect();
    assert!(
        store
            .heartbeat(&leases, Duration::from_secs(30), &[])
            .await
            .unwrap()
            .held
            .iter()
            .all(|ok| *ok)
    );
    let done: Vec<_> = leases
        .into_iter()
        .map(|l| (l, taskyard_core::Outcome::Completed))
        .collect();
    assert!(store.finish(&done).await.unwrap().iter().all(|ok| *ok));
    let after = calls(&mut conn, "evalsha").await + calls(&mut conn, "eval").await;
    assert_eq!(
        after - before,
        4,
        "enqueue, claim, heartbeat and finish: one call each"
    );
}

#[tokio::test]
async fn lost_script_cache_is_reloaded() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let q = QueueName::new("noscript").unwrap();
    store.enqueue(&q, jobs(0..2)).await.unwrap();
    let mut conn = raw(&server).await;
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    store.enqueue(&q, jobs(2..3)).await.unwrap();
    let claimed = store
        .claim(
            &q,
            10,
            Duration::from_secs(30),
            &LeaseToken::mint("w").unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(claimed.jobs.len(), 3);
}

#[tokio::test]
async fn password_in_url_authenticates_and_a_wrong_one_is_a_clear_error() {
    let server = RedisServer::start_with(&["--requirepass", "s3cret"]);
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let q = QueueName::new("auth").unwrap();
    store.enqueue(&q, jobs(0..1)).await.unwrap();
    assert_eq!(store.stats(&q).await.unwrap().ready, 1);

    let wrong = format!("redis://:nope@127.0.0.1:{}", server.port());
    let err = match RedisStore::connect(&wrong).await {
        Ok(store) => store.stats(&q).await.unwrap_err(),
        Err(e) => e,
    };
    assert!(matches!(err, Error::Store(_)), "{err}");
    let msg = err.to_string().to_lowercase();
    assert!(msg.contains("auth") || msg.contains("password"), "{msg}");

    let err = RedisStore::connect("redis://127.0.0.1:notaport")
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Error::InvalidOption(_)), "{err}");
}

#[tokio::test]
async fn worker_reconnects_after_redis_restart_and_keeps_acknowledged_jobs() {
    let mut server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let q = QueueName::new("restart").unwrap();
    let w = Worker::builder(store.clone())
        .queue(q.as_str())
        .concurrency(8)
        .handle(|_job: Ping, _ctx: JobContext| async { Ok::<(), JobError>(()) })
        .build()
        .unwrap();
    let counters = w.counters();
    let running = w.spawn();
    let client = Client::new(store.clone());
    let opts = || EnqueueOptions::default().queue("restart");
    client
        .enqueue_many((0..100).map(|n| Ping { n }), opts())
        .await
        .unwrap();
    until(&counters, |c| c.completed() == 100).await;

    // Jobs acknowledged while the worker is paused survive the restart (AOF, fsync always).
    client.pause(&q).await.unwrap();
    client
        .enqueue_many((100..150).map(|n| Ping { n }), opts())
        .await
        .unwrap();
    server.restart();
    let store2: Arc<dyn Store> = Arc::new(store.clone());
    assert!(
        eventually(Duration::from_secs(10), || {
            let s = store2.clone();
            let q = q.clone();
            async move { matches!(s.stats(&q).await, Ok(st) if st.ready == 50) }
        })
        .await,
        "the acknowledged jobs are still there after the restart"
    );
    client.resume(&q).await.unwrap();
    client
        .enqueue_many((150..200).map(|n| Ping { n }), opts())
        .await
        .unwrap();
    until(&counters, |c| c.completed() == 200).await;
    running
        .shutdown()
        .await
        .expect("the worker shut down cleanly");
}

#[tokio::test]
async fn finished_work_leaves_no_keys_behind() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let q = QueueName::new("clean").unwrap();
    let w = Worker::builder(store.clone())
        .queue(q.as_str())
        .concurrency(16)
        .handle(|job: Ping, ctx: JobContext| async move {
            // Every third job fails once, so error history is written and must go too.
            if job.n.is_multiple_of(3) && ctx.attempt() == 1 {
                Err(JobError::retry_after(Duration::ZERO, "once"))
            } else {
                Ok(())
            }
        })
        .build()
        .unwrap();
    let counters = w.counters();
    let running = w.spawn();
    let opts = EnqueueOptions::default().queue("clean");
    Client::new(store.clone())
        .enqueue_many((0..3000).map(|n| Ping { n }), opts)
        .await
        .unwrap();
    until(&counters, |c| c.completed() == 3000).await;
    running
        .shutdown()
        .await
        .expect("the worker shut down cleanly");
    let mut conn = raw(&server).await;
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("taskyard:*{clean}:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    // The id counter lives in meta; the signal list holds at most one element.
    keys.retain(|k| !k.ends_with(":meta") && !k.ends_with(":signal"));
    assert!(keys.is_empty(), "left behind: {keys:?}");
}
