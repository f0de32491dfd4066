//! What an acknowledged enqueue survives on Redis (docs/guarantees.md): a crash of the
//! server under each persistence setting, and a failover to a replica with and without
//! replica acknowledgement (`WAIT`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use taskyard_conformance::{RedisServer, Signal};
use taskyard_core::{
    EnqueueOptions, Error, JobState, Lease, LeaseToken, NewJob, Outcome, QueueName, RetryPolicy,
    Store,
};
use taskyard_redis::RedisStore;

fn jobs(n: usize) -> Vec<NewJob> {
    (0..n)
        .map(|i| {
            let payload = format!(r#"{{"n":{i}}}"#).into_bytes();
            NewJob::new(
                "mail",
                payload,
                &EnqueueOptions::default(),
                RetryPolicy::default(),
            )
            .unwrap()
        })
        .collect()
}

fn queue() -> QueueName {
    QueueName::new("durable").unwrap()
}

async fn ready_after_reconnect(url: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(store) = RedisStore::connect(url).await
            && let Ok(stats) = store.stats(&queue()).await
        {
            return stats.ready;
        }
        assert!(Instant::now() < deadline, "the server did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Enqueues 1,000 jobs in 20 acknowledged batches.
async fn enqueue_acknowledged(store: &RedisStore) {
    for _ in 0..20 {
        store
            .enqueue(&queue(), jobs(50))
            .await
            .expect("acknowledged");
    }
}

#[tokio::test]
async fn acknowledged_enqueues_and_completions_survive_a_redis_crash_under_each_appendfsync() {
    for policy in ["always", "everysec", "no"] {
        let mut server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", policy]);
        let store = RedisStore::connect(&server.url()).await.unwrap();
        enqueue_acknowledged(&store).await;
        // 400 jobs completed and recorded (the store accepted each completion), 100 left
        // running under their lease.
        let mut completed = Vec::new();
        for _ in 0..4 {
            let claim = store
                .claim(
                    &queue(),
                    100,
                    Duration::from_secs(60),
                    &LeaseToken::mint("w").unwrap(),
                )
                .await
                .unwrap();
            let outcomes: Vec<(Lease, Outcome)> = claim
                .jobs
                .into_iter()
                .map(|j| (j.lease, Outcome::Completed))
                .collect();
            assert_eq!(store.finish(&outcomes).await.unwrap(), vec![true; 100]);
            completed.extend(outcomes.into_iter().map(|(l, _)| l.id));
        }
        let running = store
            .claim(
                &queue(),
                100,
                Duration::from_secs(60),
                &LeaseToken::mint("w").unwrap(),
            )
            .await
            .unwrap()
            .jobs;
        assert_eq!(running.len(), 100);
        // SIGKILL: a crash of the Redis process (not of the machine). Redis writes the
        // append-only file before it replies, so the page cache holds every acknowledged
        // write whatever the fsync policy; the policy matters for a power loss.
        server.restart();
        assert_eq!(
            ready_after_reconnect(&server.url()).await,
            500,
            "appendfsync {policy}: the jobs neither claimed nor completed"
        );
        let store = RedisStore::connect(&server.url()).await.unwrap();
        let stats = store.stats(&queue()).await.unwrap();
        assert_eq!(stats.running, 100, "appendfsync {policy}: the running jobs");
        for id in &completed {
            assert!(
                store.job(&queue(), id).await.unwrap().is_none(),
                "appendfsync {policy}: completed job {id} came back"
            );
        }
        for job in &running {
            let info = store.job(&queue(), &job.lease.id).await.unwrap().unwrap();
            assert_eq!(info.state, JobState::Running, "appendfsync {policy}");
        }
    }
}

#[tokio::test]
async fn without_persistence_a_redis_restart_loses_every_job() {
    let mut server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    enqueue_acknowledged(&store).await;
    server.restart();
    assert_eq!(ready_after_reconnect(&server.url()).await, 0);
}

/// A TCP proxy between the replica and its primary: `partition` cuts the link and keeps
/// it cut, as a network partition would.
struct Link {
    port: u16,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Link {
    async fn to(port: u16) -> Link {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = listener.local_addr().unwrap().port();
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let list = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                list.lock().unwrap().push(task.abort_handle());
            }
        });
        Link {
            port: local,
            conns,
            accept,
        }
    }

    fn partition(&self) {
        self.accept.abort();
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

/// Waits until the server's `INFO replication` satisfies `holds`, or fails saying `what`.
async fn until_replication(server: &RedisServer, what: &str, holds: impl Fn(&str) -> bool) {
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut conn)
            .await
            .unwrap();
        if holds(&info) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {info}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn replication_is(replica: &RedisServer, status: &str) {
    let wanted = format!("master_link_status:{status}");
    until_replication(
        replica,
        &format!("the replica's link is not {status}"),
        |info| info.contains(&wanted),
    )
    .await;
}

/// Waits until the primary's one replica has confirmed the primary's whole stream.
async fn acknowledged_everything(primary: &RedisServer) {
    until_replication(primary, "the replica did not catch up", |info| {
        let field = |line_start: &str, key: &str| -> Option<u64> {
            let line = info.lines().find(|l| l.starts_with(line_start))?;
            let rest = &line[line.find(key)? + key.len()..];
            rest.split([',', '\r']).next()?.parse().ok()
        };
        let primary_offset = field("master_repl_offset:", "master_repl_offset:");
        primary_offset.is_some() && primary_offset == field("slave0:", "offset=")
    })
    .await;
}

/// A primary and a replica that has caught up with it, through a link the test can cut.
async fn primary_and_replica() -> (RedisServer, RedisServer, Link) {
    let primary = RedisServer::start();
    let link = Link::to(primary.port()).await;
    let port = link.port.to_string();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]);
    replication_is(&replica, "up").await;
    (primary, replica, link)
}

/// The primary dies; the replica is promoted (what Sentinel or an operator does).
async fn fail_over(primary: &mut RedisServer, replica: &RedisServer) {
    primary.kill();
    let client = redis::Client::open(replica.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_without_replica_ack_can_lose_acknowledged_enqueues() {
    let (mut primary, replica, link) = primary_and_replica().await;
    let store = RedisStore::connect(&primary.url()).await.unwrap();
    // A partition cuts the replica off; the primary acknowledges anyway, then dies.
    link.partition();
    replication_is(&replica, "down").await;
    enqueue_acknowledged(&store).await;
    fail_over(&mut primary, &replica).await;
    assert_eq!(
        ready_after_reconnect(&replica.url()).await,
        0,
        "1,000 acknowledged jobs lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_with_replica_ack_keeps_acknowledged_enqueues() {
    let (mut primary, replica, link) = primary_and_replica().await;
    let url = format!("{}?wait_replicas=1&wait_timeout_ms=500", primary.url());
    let store = RedisStore::connect(&url).await.unwrap();
    let mut acked = Vec::new();
    for _ in 0..20 {
        acked.extend(
            store
                .enqueue(&queue(), jobs(50))
                .await
                .expect("acknowledged"),
        );
    }

    // A replica that is stopped but still connected: the write reaches the primary, but
    // no replica confirms it, so it is not acknowledged. The replica has confirmed every
    // earlier write first, so that a WAIT before the write (or none) would let this
    // enqueue be acknowledged and fail the test.
    acknowledged_everything(&primary).await;
    replica.signal(Signal::SIGSTOP);
    let err = store
        .enqueue(&queue(), jobs(1))
        .await
        .expect_err("not confirmed by the stopped replica");
    replica.signal(Signal::SIGCONT);
    assert!(
        matches!(
            err,
            Error::ReplicasNotConfirmed {
                confirmed: 0,
                wanted: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("confirmed by 0 of 1 replicas"),
        "{err}"
    );

    // Once the replica is cut off, nothing more is acknowledged either.
    link.partition();
    replication_is(&replica, "down").await;
    let err = store
        .enqueue(&queue(), jobs(1))
        .await
        .expect_err("not confirmed");
    assert!(
        err.to_string().contains("confirmed by 0 of 1 replicas"),
        "{err}"
    );

    fail_over(&mut primary, &replica).await;
    assert!(ready_after_reconnect(&replica.url()).await >= 1000);
    let promoted = RedisStore::connect(&replica.url()).await.unwrap();
    for id in &acked {
        assert!(
            promoted.job(&queue(), id).await.unwrap().is_some(),
            "acknowledged job {id} is on the promoted replica"
        );
    }
}
