//! A worker waiting for a scheduled job starts it at its due time, not on Redis's tick:
//! Redis ends a blocked call's timeout on its periodic tick (`hz`), so the store wakes its
//! own wait on time (`CLIENT UNBLOCK`).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use taskyard_conformance::RedisServer;
use taskyard_core::{EnqueueOptions, JobError, NewJob, QueueName, RetryPolicy, Store, Worker};
use taskyard_redis::RedisStore;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn a_scheduled_job_starts_at_its_due_time_not_on_the_servers_tick() {
    // One tick a second: a wait left to end on the server's tick would start each job
    // 500 ms late on average, up to 1 s.
    let server = RedisServer::start_with(&["--hz", "1"]);
    let store: Arc<dyn Store> = Arc::new(RedisStore::connect(&server.url()).await.unwrap());
    let q = QueueName::new("due").unwrap();
    let (tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    let worker = Worker::builder(store.clone())
        .queue(q.as_str())
        .concurrency(1)
        .handle_raw("timed", move |_ctx, _payload| {
            let _ = tx.send(now_ms());
            async { Ok::<(), JobError>(()) }
        })
        .build()
        .unwrap();
    let running = worker.spawn();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut late = Vec::new();
    for _ in 0..5 {
        let due = now_ms() + 400;
        let opts = EnqueueOptions::default().run_at(UNIX_EPOCH + Duration::from_millis(due));
        let job = NewJob::new("timed", b"{}".to_vec(), &opts, RetryPolicy::default()).unwrap();
        store.enqueue(&q, vec![job]).await.unwrap();
        let at = tokio::time::timeout(Duration::from_secs(5), started.recv())
            .await
            .expect("the job started")
            .unwrap();
        assert!(at >= due, "started {} ms early", due - at);
        late.push(at - due);
    }
    running.shutdown().await.unwrap();
    assert!(late.iter().all(|ms| *ms < 300), "ms late per job: {late:?}");
}
