//! What the Redis store promises beyond the conformance suite: large redrives and purges
//! go in chunks of 1,000 (other clients get in between), and ids come from a per-queue
//! counter that only deleting the queue's keys resets.

use taskyard_conformance::{RedisServer, bury};
use taskyard_core::{DeadFilter, EnqueueOptions, NewJob, QueueName, RetryPolicy, Store};
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
async fn redrive_and_purge_run_in_chunks_of_1000() {
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
        let moved = if what == "redrive" {
            store.redrive(&q, &filter).await.unwrap()
        } else {
            store.purge(&q, &filter).await.unwrap()
        };
        assert_eq!(moved, 2500, "{what}");
        assert_eq!(
            scripts_run(&mut conn).await,
            3,
            "{what}: 1,000 + 1,000 + 500"
        );
        if what == "redrive" {
            bury(&store, &q).await;
        }
    }
    assert_eq!(store.stats(&q).await.unwrap().dead, 0);
}

#[tokio::test]
async fn ids_count_up_per_queue_until_its_keys_are_deleted() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let (a, b) = (QueueName::new("a").unwrap(), QueueName::new("b").unwrap());
    let first = store.enqueue(&a, jobs(3)).await.unwrap();
    assert_eq!(store.enqueue(&b, jobs(1)).await.unwrap()[0].as_str(), "1");
    store.purge(&a, &DeadFilter::All).await.unwrap();
    bury(&store, &a).await;
    store.purge(&a, &DeadFilter::All).await.unwrap();
    let next = store.enqueue(&a, jobs(1)).await.unwrap();
    assert_eq!(
        (first[2].as_str(), next[0].as_str()),
        ("3", "4"),
        "the counter outlives the jobs"
    );
    // Deleting a queue deletes its counter too: its ids start again.
    store.delete_queue(&a).await.unwrap();
    assert_eq!(store.enqueue(&a, jobs(1)).await.unwrap()[0].as_str(), "1");
}
