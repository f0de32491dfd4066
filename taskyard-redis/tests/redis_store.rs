//! What the Redis store promises beyond the conformance suite: large redrives and purges
//! go in steps of 1,000 (other clients get in between), and ids come from one counter per
//! server, in blocks per process, unique across queues and never started again.

use taskyard_conformance::{RedisServer, bury};
use taskyard_core::{
    Client, DeadFilter, EnqueueOptions, JobId, NewJob, QueueName, RetryPolicy, Store,
};
use taskyard_redis::RedisStore;

fn jobs(n: usize) -> Vec<NewJob> {
    (0..n)
        .map(|_| {
            NewJob::new(
                "mail",
                b"{}".to_vec(),
                &EnqueueOptions::default(),
                RetryPolicy::default(),
            )
            .unwrap()
        })
        .collect()
}

/// Scripts run on the server since its statistics were reset (`EVALSHA` and `EVAL`).
async fn scripts_run(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            let calls = l.split("calls=").nth(1)?;
            calls.split(',').next()?.parse::<u64>().ok()
        })
        .sum()
}

#[tokio::test]
async fn redrive_and_purge_run_in_bounded_steps() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let q = QueueName::new("chunks").unwrap();
    store.enqueue(&q, jobs(2500)).await.unwrap();
    bury(&store, &q).await;
    assert_eq!(store.stats(&q).await.unwrap().dead, 2500);

    for (what, filter) in [
        ("redrive", DeadFilter::All),
        ("purge", DeadFilter::Kind("mail".into())),
    ] {
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut conn)
            .await
            .unwrap();
        let client = Client::new(store.clone());
        let moved = if what == "redrive" {
            client.redrive(&q, &filter).await.unwrap()
        } else {
            client.purge(&q, &filter).await.unwrap()
        };
        assert_eq!(moved, 2500, "{what}");
        // A redrive step moves at most 500 (each job is parsed for its unique key and
        // priority): five full steps, then one that finds the set empty. A purge step
        // takes 1,000: 1,000 + 1,000 + 500.
        let steps = if what == "redrive" { 6 } else { 3 };
        assert_eq!(scripts_run(&mut conn).await, steps, "{what}");
        if what == "redrive" {
            bury(&store, &q).await;
        }
    }
    assert_eq!(store.stats(&q).await.unwrap().dead, 0);
}

#[tokio::test]
async fn ids_are_unique_across_queues_and_never_start_again() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let (a, b) = (QueueName::new("a").unwrap(), QueueName::new("b").unwrap());
    let first = store.enqueue(&a, jobs(3)).await.unwrap();
    let ids = |v: &[taskyard_core::JobId]| v.iter().map(|id| id.to_string()).collect::<Vec<_>>();
    assert_eq!(ids(&first), ["1", "2", "3"]);
    // Another queue draws from the same counter.
    assert_eq!(ids(&store.enqueue(&b, jobs(1)).await.unwrap()), ["4"]);
    // Neither purging nor deleting a queue starts its ids again.
    bury(&store, &a).await;
    Client::new(store.clone())
        .purge(&a, &DeadFilter::All)
        .await
        .unwrap();
    Client::new(store.clone()).delete_queue(&a).await.unwrap();
    assert_eq!(ids(&store.enqueue(&a, jobs(1)).await.unwrap()), ["5"]);
    // Another process takes a block of its own: no id is handed out twice.
    let other = RedisStore::connect(&server.url()).await.unwrap();
    assert_eq!(
        ids(&other.enqueue(&a, jobs(2)).await.unwrap()),
        ["10001", "10002"]
    );
    // Found by id alone, whatever its queue.
    let found = Client::new(store.clone()).find(&first[0]).await.unwrap();
    assert!(found.is_none(), "job 1 was purged");
    let b4 = Client::new(store)
        .find(&JobId::new("4"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b4.queue, "b");
}
