//! Priorities, unique keys and deletes on Redis, beyond the conformance suite: a queue
//! that uses none of them (nor cancels, progress, results or waits) gets none of their
//! keys (so its scripts run as before), what each option costs in memory per job, and
//! listings and claims across prio, the ready list and tombstones.

use std::time::Duration;

use taskyard_conformance::RedisServer;
use taskyard_core::{
    Client, Cursor, EnqueueOptions, JobFilter, JobId, JobState, LeaseToken, NewJob, Outcome,
    QueueName, RetryPolicy, Store, UniqueMode,
};
use taskyard_redis::RedisStore;

type Conn = redis::aio::MultiplexedConnection;

fn job(n: u64, opts: &EnqueueOptions) -> NewJob {
    let payload = format!(r#"{{"n":{n:>12},"body":"{}"}}"#, "x".repeat(94)).into_bytes();
    NewJob::new("a", payload, opts, RetryPolicy::default()).unwrap()
}

fn n_of(payload: &[u8]) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
    v["n"].as_u64().unwrap()
}

async fn conn(server: &RedisServer) -> Conn {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Which of the options' keys a queue has.
async fn option_keys(conn: &mut Conn, q: &str) -> Vec<&'static str> {
    let mut out = Vec::new();
    for name in [
        "prio",
        "unique",
        "uexp",
        "deleted",
        "cancelled",
        "progress",
        "revoked",
        "results",
        "rexp",
        "waiting",
    ] {
        let n: i64 = redis::cmd("EXISTS")
            .arg(format!("taskyard:2:{{{q}}}:{name}"))
            .query_async(conn)
            .await
            .unwrap();
        if n == 1 {
            out.push(name);
        }
    }
    out
}

async fn used_memory(conn: &mut Conn) -> i64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

async fn claim(store: &RedisStore, q: &QueueName, n: usize) -> Vec<taskyard_core::ClaimedJob> {
    let token = LeaseToken::mint("w").unwrap();
    store
        .claim(q, n, Duration::from_secs(30), &token)
        .await
        .unwrap()
        .jobs
}

#[tokio::test]
async fn a_queue_using_no_option_gets_none_of_their_keys() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let mut c = conn(&server).await;
    let q = QueueName::new("plain").unwrap();
    let d = EnqueueOptions::default().max_attempts(2);
    store
        .enqueue(&q, (0..20).map(|n| job(n, &d)).collect())
        .await
        .unwrap();
    let later = d.clone().delay(Duration::from_millis(1));
    store.enqueue(&q, vec![job(20, &later)]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let jobs = claim(&store, &q, 10).await;
    // A heartbeat with no progress, as a worker whose handlers report none sends.
    let beat = store
        .heartbeat(&[jobs[0].lease.clone()], Duration::from_secs(30), &[])
        .await
        .unwrap();
    assert_eq!((beat.held, beat.cancelled), (vec![true], Vec::new()));
    let mut outcomes: Vec<_> = jobs
        .iter()
        .map(|j| (j.lease.clone(), Outcome::Completed))
        .collect();
    outcomes[0].1 = Outcome::Retry {
        delay_ms: 0,
        error: "again".into(),
    };
    outcomes[1].1 = Outcome::Dead { error: "no".into() };
    store.finish(&outcomes).await.unwrap();
    let jobs = claim(&store, &q, 2).await;
    store.release(&[jobs[0].lease.clone()]).await.unwrap();
    store.maintain(&q).await.unwrap();
    let client = Client::new(store.clone());
    client.redrive(&q, &JobFilter::All).await.unwrap();
    client.run_now(&q, &JobFilter::All).await.unwrap();
    assert_eq!(option_keys(&mut c, "plain").await, Vec::<&str>::new());

    // A prioritised job brings prio, a unique key unique; both go once they are empty.
    let opts = EnqueueOptions::default()
        .priority(70)
        .unique("k", UniqueMode::Queued);
    store.enqueue(&q, vec![job(30, &opts)]).await.unwrap();
    assert_eq!(option_keys(&mut c, "plain").await, ["prio", "unique"]);
    let jobs = claim(&store, &q, 1).await;
    assert_eq!(n_of(&jobs[0].payload), 30);
    assert_eq!(option_keys(&mut c, "plain").await, Vec::<&str>::new());
}

/// Prints what each option adds to a ready job in memory (the figures of docs/redis.md)
/// and checks them loosely. A prioritised job is a prio member and a jobs field instead
/// of a list entry; a unique key is a field of unique (and of uexp, for a period).
#[tokio::test]
async fn what_an_option_costs_per_job() {
    const N: u64 = 20_000;
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let mut c = conn(&server).await;
    type Options = fn(u64) -> EnqueueOptions;
    let cases: [(&str, Options); 4] = [
        ("plain", |_| EnqueueOptions::default()),
        ("priority", |_| EnqueueOptions::default().priority(90)),
        ("unique", |n| {
            EnqueueOptions::default().unique(format!("user:{n:08}"), UniqueMode::Finished)
        }),
        ("period", |n| {
            EnqueueOptions::default().unique(
                format!("user:{n:08}"),
                UniqueMode::Period(Duration::from_secs(3600)),
            )
        }),
    ];
    let mut per_job = Vec::new();
    for (name, opts) in cases {
        let q = QueueName::new(name).unwrap();
        // The queue's keys exist first, so only the jobs are measured.
        store.enqueue(&q, vec![job(0, &opts(0))]).await.unwrap();
        let before = used_memory(&mut c).await;
        for b in 0..N / 1000 {
            let batch = (1..=1000).map(|i| job(b * 1000 + i, &opts(b * 1000 + i)));
            store.enqueue(&q, batch.collect()).await.unwrap();
        }
        let bytes = (used_memory(&mut c).await - before) / N as i64;
        println!("{name:<9} {bytes:>4} bytes per ready job");
        per_job.push(bytes);
    }
    let plain = per_job[0];
    for (name, bytes) in ["priority", "unique", "period"].iter().zip(&per_job[1..]) {
        println!("{name:<9} +{:>3} bytes over a plain job", bytes - plain);
        assert!(bytes - plain < 400, "{name}: {bytes} bytes against {plain}");
    }
}

/// A listing of ready jobs pages in claim order across prio and the ready list, leaving
/// out deleted jobs; claims drop a long run of tombstones at the head and keep the order.
#[tokio::test]
async fn listings_and_claims_go_across_priorities_and_past_tombstones() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let q = QueueName::new("mixed").unwrap();
    let at = |p| EnqueueOptions::default().priority(p);
    let d = EnqueueOptions::default();
    // n: 1xx high, 2xx default, 3xx low.
    let plan = [
        (300, at(10)),
        (200, d.clone()),
        (100, at(90)),
        (201, d.clone()),
        (301, at(10)),
        (202, d.clone()),
        (101, at(90)),
        (203, d.clone()),
    ];
    let mut ids = Vec::new();
    for (n, opts) in &plan {
        ids.extend(store.enqueue(&q, vec![job(*n, opts)]).await.unwrap());
    }
    // The default-priority job 200 (the second enqueued) is deleted: a tombstone.
    let step = store
        .delete(&q, &JobFilter::Ids(vec![ids[1].clone()]), &Cursor::start())
        .await
        .unwrap();
    assert_eq!(step.done, 1);
    let mut listed = Vec::new();
    let mut after = Cursor::start();
    loop {
        let page = store.list(&q, JobState::Ready, &after, 2).await.unwrap();
        listed.extend(page.jobs.iter().map(|j| n_of(j.payload.as_bytes())));
        match page.next {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(listed, [100, 101, 201, 202, 203, 300, 301]);
    assert_eq!(store.stats(&q).await.unwrap().ready, 7);

    // 3,000 jobs, the first 2,500 deleted by kind: claims skip them in one call.
    let q = QueueName::new("tombstones").unwrap();
    let doomed = EnqueueOptions::default();
    let batch: Vec<_> = (0..3000)
        .map(|n| {
            let kind = if n < 2500 { "doomed" } else { "kept" };
            let payload = format!(r#"{{"n":{n}}}"#).into_bytes();
            NewJob::new(kind, payload, &doomed, RetryPolicy::default()).unwrap()
        })
        .collect();
    store.enqueue(&q, batch).await.unwrap();
    let client = Client::new(store.clone());
    let gone = client
        .delete(&q, &JobFilter::Kind("doomed".into()))
        .await
        .unwrap();
    assert_eq!(gone.done, 2500);
    assert_eq!(store.stats(&q).await.unwrap().ready, 500);
    let jobs = claim(&store, &q, 3).await;
    let got: Vec<u64> = jobs.iter().map(|j| n_of(&j.payload)).collect();
    assert_eq!(got, [2500, 2501, 2502]);
    let rest = claim(&store, &q, 1000).await;
    assert_eq!(rest.len(), 497);
    assert_eq!(n_of(&rest[0].payload), 2503);
    // Deleting a job twice, or a job a claim took meanwhile, deletes nothing.
    let taken: JobId = rest[0].lease.id.clone();
    let step = client
        .delete(&q, &JobFilter::Ids(vec![taken.clone()]))
        .await
        .unwrap();
    assert_eq!(step.done, 0);
}

/// Prio holds the envelopes of prioritised ready jobs and nothing is keyed by their id:
/// lookups, deletes and run-nows by id walk it (2,000 members a call, then on into the
/// ready list), a delete by kind walks it by score, and claims and releases keep the
/// order of priorities with first in first out within one.
#[tokio::test]
async fn prioritised_jobs_are_found_and_acted_on_by_walks_of_prio() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let client = Client::new(store.clone());
    let mut c = conn(&server).await;
    let q = QueueName::new("walked").unwrap();
    let at = |p| EnqueueOptions::default().priority(p);
    let of = |kind: &str, n: u64, opts: &EnqueueOptions| {
        let payload = format!(r#"{{"n":{n}}}"#).into_bytes();
        NewJob::new(kind, payload, opts, RetryPolicy::default()).unwrap()
    };
    // n: 1xxxx priority 80, 2xxxx the default, 3xxxx priority 20 (kinds a and b in turn).
    let mut ids = std::collections::HashMap::new();
    for (base, opts, count) in [
        (10_000, at(80), 3000),
        (20_000, at(50), 1000),
        (30_000, at(20), 3000),
    ] {
        for chunk in (0..count).collect::<Vec<u64>>().chunks(1000) {
            let batch = chunk
                .iter()
                .map(|i| of(if i % 2 == 0 { "a" } else { "b" }, base + i, &opts))
                .collect();
            let got = store.enqueue(&q, batch).await.unwrap();
            ids.extend(chunk.iter().map(|i| base + i).zip(got));
        }
    }
    assert_eq!(store.stats(&q).await.unwrap().ready, 7000);

    // Lookups past the first chunk of prio, and in the list after it.
    for n in [12_999, 32_998, 20_500] {
        let found = store.job(&q, &ids[&n]).await.unwrap().expect("found");
        assert_eq!(
            (found.state, n_of(found.payload.as_bytes())),
            (JobState::Ready, n)
        );
    }
    // Run-now names ready jobs as such; a delete by id removes a prio member exactly.
    let named = vec![
        ids[&32_999].clone(),
        ids[&20_001].clone(),
        JobId::new("987654321"),
    ];
    let ran = client
        .run_now(&q, &JobFilter::Ids(named.clone()))
        .await
        .unwrap();
    assert_eq!(ran.done, 0);
    assert_eq!(ran.skipped.len(), 3);
    let gone = client.delete(&q, &JobFilter::Ids(named)).await.unwrap();
    assert_eq!((gone.done, gone.skipped.len()), (2, 1));
    assert!(store.job(&q, &ids[&32_999]).await.unwrap().is_none());
    assert_eq!(store.stats(&q).await.unwrap().ready, 6998);

    // Kind b in both priorities and the list: 1,500 + 1,500 - 1 + 500 - 1.
    let gone = client
        .delete(&q, &JobFilter::Kind("b".into()))
        .await
        .unwrap();
    assert_eq!(gone.done, 3498);
    assert_eq!(store.stats(&q).await.unwrap().ready, 3500);

    // Claim order: 80 (kind a, oldest first), then the list, then 20; a released job
    // goes back to the head of its priority.
    let first = claim(&store, &q, 2).await;
    let got: Vec<u64> = first.iter().map(|j| n_of(&j.payload)).collect();
    assert_eq!(got, [10_000, 10_002]);
    store.release(&[first[1].lease.clone()]).await.unwrap();
    let next = claim(&store, &q, 1501).await;
    let got: Vec<u64> = next.iter().map(|j| n_of(&j.payload)).collect();
    assert_eq!(&got[..2], [10_002, 10_004]);
    assert_eq!((got[1498], got[1499], got[1500]), (12_998, 20_000, 20_002));
    let rest = claim(&store, &q, 2000).await;
    let got: Vec<u64> = rest.iter().map(|j| n_of(&j.payload)).collect();
    assert_eq!((got[497], got[498], got[499]), (20_998, 30_000, 30_002));
    assert_eq!((got.len(), store.stats(&q).await.unwrap().ready), (1998, 0));
    assert_eq!(option_keys(&mut c, "walked").await, Vec::<&str>::new());
}

/// A queue another process deleted is named again by this one's next enqueue, although
/// this process remembers having named it.
#[tokio::test]
async fn a_queue_deleted_elsewhere_is_named_again_when_used() {
    let server = RedisServer::start();
    let here = RedisStore::connect(&server.url()).await.unwrap();
    let there = RedisStore::connect(&server.url()).await.unwrap();
    let q = QueueName::new("again").unwrap();
    let d = EnqueueOptions::default();
    here.enqueue(&q, vec![job(1, &d)]).await.unwrap();
    assert_eq!(Client::new(there).delete_queue(&q).await.unwrap(), 1);
    assert!(!here.queues().await.unwrap().contains(&q));
    here.enqueue(&q, vec![job(2, &d)]).await.unwrap();
    assert!(here.queues().await.unwrap().contains(&q));
    assert_eq!(here.stats(&q).await.unwrap().ready, 1);
}

/// A claim drops at most 10,000 tombstones per call; one that stops there with nothing
/// taken signals, so an idle worker's wait ends at once and the next claim goes on, and
/// lower priorities do not jump the default-priority jobs still behind the tombstones.
#[tokio::test]
async fn a_claim_stopped_by_tombstones_signals_and_keeps_the_order() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let q = QueueName::new("tombs").unwrap();
    let plain = EnqueueOptions::default();
    let imports: Vec<NewJob> = (0..25_000)
        .map(|_| NewJob::new("import", b"{}".to_vec(), &plain, RetryPolicy::default()).unwrap())
        .collect();
    for chunk in imports.chunks(5_000) {
        store.enqueue(&q, chunk.to_vec()).await.unwrap();
    }
    store
        .enqueue(&q, (1..=10).map(|n| job(n, &plain)).collect())
        .await
        .unwrap();
    store
        .enqueue(&q, vec![job(99, &plain.clone().priority(20))])
        .await
        .unwrap();
    let deleted = Client::new(store.clone())
        .delete(&q, &JobFilter::Kind("import".into()))
        .await
        .unwrap();
    assert_eq!(deleted.done, 25_000);

    let mut order = Vec::new();
    for _ in 0..4 {
        // Whatever the last claim took, work may remain: the wait must not sit it out.
        let start = std::time::Instant::now();
        store
            .wait(std::slice::from_ref(&q), Duration::from_secs(5))
            .await
            .unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "waited {:?}",
            start.elapsed()
        );
        order.extend(claim(&store, &q, 20).await.iter().map(|j| n_of(&j.payload)));
        if order.len() == 11 {
            break;
        }
    }
    assert_eq!(order, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 99]);
}
