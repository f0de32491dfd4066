//! A Redis at its memory limit (`maxmemory` with `noeviction`) refuses new jobs with
//! `Error::MemoryFull` and writes nothing, while every path that drains the queue keeps
//! working, so a full Redis empties instead of jamming (docs/redis.md, "Memory limit").

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use taskyard_conformance::{RedisServer, eventually};
use taskyard_core::{
    Client, DeadFilter, EnqueueOptions, Error, Job, JobContext, JobError, LeaseToken, NewJob,
    Outcome, QueueName, Store, Worker,
};
use taskyard_redis::RedisStore;

#[derive(Serialize, Deserialize)]
struct Letter {
    n: u64,
    body: String,
}

impl Job for Letter {
    const KIND: &'static str = "letter";
}

/// Jobs with about the bench's 120-byte payload.
fn letters(from: u64, n: u64) -> Vec<NewJob> {
    (from..from + n)
        .map(|n| {
            let job = Letter {
                n,
                body: "x".repeat(96),
            };
            NewJob::from_job(&job, &EnqueueOptions::default()).unwrap()
        })
        .collect()
}

/// A digest of every key and value in the server but the id counter: equal digests,
/// nothing written. (A refused enqueue may have reserved ids first; reserved ids that are
/// never handed out are skipped, as when a process ends with some of its block unused.)
async fn digest(conn: &mut redis::aio::MultiplexedConnection) -> Vec<(String, String)> {
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(conn).await.unwrap();
    keys.retain(|k| k != "taskyard:ids");
    keys.sort();
    let mut out = Vec::new();
    for k in keys {
        let d: Vec<String> = redis::cmd("DEBUG")
            .arg("DIGEST-VALUE")
            .arg(&k)
            .query_async(conn)
            .await
            .unwrap();
        out.push((k, d.concat()));
    }
    out
}

async fn memory(conn: &mut redis::aio::MultiplexedConnection) -> (u64, u64) {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .unwrap();
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    };
    (field("used_memory"), field("maxmemory"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_refuses_enqueues_and_drains_with_a_worker() {
    let server = RedisServer::start_with(&[
        "--maxmemory",
        "4mb",
        "--maxmemory-policy",
        "noeviction",
        "--enable-debug-command",
        "local",
    ]);
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let q = QueueName::new("full").unwrap();

    // Fill to refusal in batches of 200.
    let mut enqueued = 0u64;
    let refusal = loop {
        match store.enqueue(&q, letters(enqueued, 200)).await {
            Ok(ids) => enqueued += ids.len() as u64,
            Err(e) => break e,
        }
        assert!(enqueued < 1_000_000, "a 4 MB Redis took a million jobs");
    };
    assert!(matches!(refusal, Error::MemoryFull), "{refusal:?}");
    let line = refusal.to_string();
    assert!(
        !line.contains('\n') && line.contains("memory limit"),
        "{line}"
    );
    let (used, max) = memory(&mut conn).await;
    // At the limit, give or take the request buffers Redis counted when it refused.
    assert!(
        used > max / 10 * 9,
        "refused far below the limit: {used} of {max}"
    );
    println!("filled to refusal: {enqueued} jobs, used_memory {used} of maxmemory {max}");
    assert!(enqueued > 5_000, "only {enqueued} jobs fit");
    // Refused, the batch gives back what its own request took, and used_memory hovers
    // within a few hundred bytes of the limit: a smaller enqueue may then fit or not.
    // Pin the limit 64 KiB under what is used, so every enqueue below meets a full Redis.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(used - 65_536)
        .query_async(&mut conn)
        .await
        .unwrap();

    // The refused enqueue wrote nothing, whether it needed new ids or not.
    let before = digest(&mut conn).await;
    for n in [1, 20_000] {
        let e = store.enqueue(&q, letters(0, n)).await.unwrap_err();
        assert!(matches!(e, Error::MemoryFull), "{e:?}");
    }
    assert_eq!(digest(&mut conn).await, before, "a refused enqueue wrote");
    assert_eq!(store.stats(&q).await.unwrap().ready, enqueued);

    // At the limit: claim, heartbeat, release, fail to dead, maintenance all work.
    let token = LeaseToken::mint("hand").unwrap();
    let claim = store
        .claim(&q, 100, Duration::from_secs(30), &token)
        .await
        .expect("claim at the limit");
    assert_eq!(claim.jobs.len(), 100);
    let leases: Vec<_> = claim.jobs.iter().map(|j| j.lease.clone()).collect();
    assert_eq!(
        store
            .heartbeat(&leases[..1], Duration::from_secs(30), &[])
            .await
            .expect("heartbeat at the limit")
            .held,
        vec![true]
    );
    assert_eq!(
        store
            .finish(&[(
                leases[0].clone(),
                Outcome::Dead {
                    error: "dead-lettered at the limit".into()
                }
            )])
            .await
            .expect("dead-letter at the limit"),
        vec![true]
    );
    assert!(
        store
            .release(&leases[1..])
            .await
            .expect("release at the limit")
            .into_iter()
            .all(|ok| ok)
    );
    store.maintain(&q).await.expect("maintenance at the limit");
    let stats = store.stats(&q).await.unwrap();
    assert_eq!(
        (stats.ready, stats.dead, stats.running),
        (enqueued - 1, 1, 0)
    );
    // An operator in another process can pause and resume the queue at the limit.
    let operator = RedisStore::connect(&server.url()).await.unwrap();
    operator
        .set_paused(&q, true)
        .await
        .expect("pause at the limit");
    assert!(store.stats(&q).await.unwrap().paused);
    operator
        .set_paused(&q, false)
        .await
        .expect("resume at the limit");
    // Redrive adds work to the queue: refused at the limit like an enqueue.
    let client = Client::new(store.clone());
    let e = client.redrive(&q, &DeadFilter::All).await.unwrap_err();
    assert!(matches!(e, Error::MemoryFull), "{e:?}");
    assert_eq!(store.stats(&q).await.unwrap().dead, 1);

    // A worker drains the full Redis: every job fails once (retried after a short delay,
    // through the scheduled set) and completes on its second attempt.
    let seen: Arc<Mutex<HashMap<String, Vec<u32>>>> = Arc::default();
    let log = seen.clone();
    let w = Worker::builder(store.clone())
        .queue(q.as_str())
        .concurrency(32)
        .lease(Duration::from_secs(5))
        .handle(move |_job: Letter, ctx: JobContext| {
            let log = log.clone();
            async move {
                let attempt = ctx.attempt();
                log.lock()
                    .unwrap()
                    .entry(ctx.id().to_string())
                    .or_default()
                    .push(attempt);
                if attempt == 1 {
                    Err(JobError::retry_after(Duration::from_millis(5), "once"))
                } else {
                    Ok(())
                }
            }
        })
        .build()
        .unwrap();
    let counters = w.counters();
    // How far past the limit the draining scripts take Redis, sampled while it drains.
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let peak = peak.clone();
        let mut conn = conn.clone();
        tokio::spawn(async move {
            loop {
                let (used, _) = memory(&mut conn).await;
                peak.fetch_max(used, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let running = w.spawn();
    let drained = |want: u64| {
        let counters = counters.clone();
        move || {
            let counters = counters.clone();
            async move { counters.completed() == want }
        }
    };
    assert!(
        eventually(Duration::from_secs(120), drained(enqueued - 1)).await,
        "the worker did not drain the full Redis: {} of {} completed",
        counters.completed(),
        enqueued - 1
    );

    sampler.abort();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "drained {} jobs; peak used_memory while draining {peak} ({:.0}% of maxmemory)",
        enqueued - 1,
        peak as f64 * 100.0 / max as f64
    );
    // Drained, Redis takes work again: the dead-lettered job is redriven and completes.
    assert_eq!(client.redrive(&q, &DeadFilter::All).await.unwrap(), 1);
    assert!(
        eventually(Duration::from_secs(30), drained(enqueued)).await,
        "the redriven job did not complete"
    );
    running.shutdown().await.expect("a clean shutdown");

    let stats = store.stats(&q).await.unwrap();
    assert_eq!(
        (stats.ready, stats.scheduled, stats.running, stats.dead),
        (0, 0, 0, 0)
    );
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert_eq!(seen.len() as u64, enqueued, "every job ran");
    for (id, attempts) in &seen {
        assert_eq!(attempts, &vec![1, 2], "job {id}");
    }
    let (used, max) = memory(&mut conn).await;
    assert!(used < max, "drained, yet used_memory {used} of {max}");
    store
        .enqueue(&q, letters(0, 200))
        .await
        .expect("enqueue after the drain");
}
