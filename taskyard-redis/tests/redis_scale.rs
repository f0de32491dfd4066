//! Operator paths on a queue of a million jobs: no script call of a lookup, listing,
//! stats, redrive, purge, run-now or delete holds Redis for 10 ms or more (what `SLOWLOG` at
//! `slowlog-log-slower-than 10000` would record), however long the backlog and the dead
//! set. Prints each operation's calls, slowest call and end-to-end time (the figures in
//! docs/redis.md, "Operator paths"). Takes about 10 s in a debug build (5–9 s of it
//! filling the queue), and about 200 MB of Redis memory.

use std::time::{Duration, Instant};

use taskyard_conformance::RedisServer;
use taskyard_core::{
    Cursor, DeadFilter, EnqueueOptions, JobFilter, JobId, JobState, LeaseToken, NewJob, Outcome,
    QueueConfig, QueueName, RetryPolicy, Step, Store,
};
use taskyard_redis::RedisStore;

const READY: u64 = 1_000_000;
const DEAD_PER_KIND: u64 = 25_000;
const KINDS: [&str; 4] = ["a", "b", "c", "d"];
/// What `slowlog-log-slower-than 10000` records.
const SLOW_US: u64 = 10_000;

/// About the bench's 120-byte payload.
fn job(kind: &str, n: u64) -> NewJob {
    let payload = format!(r#"{{"n":{n:>12},"body":"{}"}}"#, "x".repeat(94)).into_bytes();
    NewJob::new(
        kind,
        payload,
        &EnqueueOptions::default(),
        RetryPolicy::default(),
    )
    .unwrap()
}

type Conn = redis::aio::MultiplexedConnection;

/// Script calls since the last reset, oldest first, as (Redis µs, the command), read
/// from SLOWLOG at threshold 0. Commands a script calls are logged too; their time is
/// part of their script's.
async fn script_calls(conn: &mut Conn) -> Vec<u64> {
    let entries: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query_async(conn)
        .await
        .unwrap();
    let mut out = Vec::new();
    for e in entries.into_iter().rev() {
        let redis::Value::Array(fields) = e else {
            panic!("a slowlog entry that is not an array: {e:?}")
        };
        let us: u64 = redis::from_redis_value(fields[2].clone()).unwrap();
        let args: Vec<String> = redis::from_redis_value(fields[3].clone()).unwrap();
        if args[0].eq_ignore_ascii_case("evalsha") || args[0].eq_ignore_ascii_case("eval") {
            out.push(us);
        }
    }
    out
}

async fn reset(conn: &mut Conn) {
    let _: () = redis::cmd("SLOWLOG")
        .arg("RESET")
        .query_async(conn)
        .await
        .unwrap();
}

/// CPU time Redis's main thread has used, in µs: unlike SLOWLOG's wall time, not
/// inflated when the machine gives the CPU to another process mid-call.
async fn cpu_us(conn: &mut Conn) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(conn)
        .await
        .unwrap();
    let field = |name: &str| -> f64 {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    };
    ((field("used_cpu_user_main_thread") + field("used_cpu_sys_main_thread")) * 1e6) as u64
}

fn line(what: &str, calls: &[u64], wall: Duration, extra: &str) -> String {
    let slowest = calls.iter().max().copied().unwrap_or(0);
    let redis_ms = calls.iter().sum::<u64>() as f64 / 1000.0;
    format!(
        "{what:<38} {:>4} calls, slowest {slowest:>5} µs{extra}, Redis {redis_ms:>6.1} ms, \
         end to end {:>7.1} ms",
        calls.len(),
        wall.as_secs_f64() * 1000.0
    )
}

/// Runs a read-only operation and checks that none of its script calls took 10 ms.
/// SLOWLOG measures wall time, so on a busy machine a call preempted half-way can pass
/// 10 ms without doing that much work: a slow run is measured again, up to three times
/// (a call that does 10 ms of work is slow every time).
async fn measure<T>(
    conn: &mut Conn,
    report: &mut Report,
    what: &str,
    mut op: impl AsyncFnMut() -> T,
) -> T {
    for attempt in 1..=3 {
        reset(conn).await;
        let start = Instant::now();
        let out = op().await;
        let wall = start.elapsed();
        let calls = script_calls(conn).await;
        assert!(!calls.is_empty(), "{what}: no script call was seen");
        let l = line(what, &calls, wall, "");
        println!("{l}");
        if calls.iter().all(|&us| us < SLOW_US) {
            report.lines.push(l);
            return out;
        }
        println!("  ^ a call over 10 ms (attempt {attempt} of 3)");
    }
    panic!("{what}: a script call took 10 ms or more in three runs");
}

/// Walks a redrive or purge to its end step by step, as `Client::redrive` and
/// `Client::purge` do (without their 1 ms pause between steps), and checks that each
/// step did under 10 ms of work. A step cannot be run again, so a walk with a step over
/// 10 ms is noted in `over` and the whole test runs again on a fresh server (a step
/// that does 10 ms of work is slow every time).
async fn measure_walk(
    conn: &mut Conn,
    report: &mut Report,
    what: &str,
    mut step: impl AsyncFnMut(&Cursor) -> Step,
) -> u64 {
    reset(conn).await;
    let (mut done, mut after, mut cpu) = (0, Cursor::start(), Vec::new());
    let start = Instant::now();
    loop {
        let before = cpu_us(conn).await;
        let s = step(&after).await;
        cpu.push(cpu_us(conn).await - before);
        done += s.done;
        match s.next {
            Some(next) => after = next,
            None => break,
        }
    }
    let wall = start.elapsed();
    let calls = script_calls(conn).await;
    assert_eq!(calls.len(), cpu.len(), "{what}: one script call per step");
    // A step's own work is at most the lesser of its wall time (SLOWLOG: the command
    // alone, but inflated when the machine preempts Redis mid-call) and the CPU Redis
    // used between the two INFO calls around it (not inflated by preemption, but holding
    // whatever else ran on the main thread then: serverCron's rehashing, the INFOs).
    let most = cpu
        .iter()
        .zip(&calls)
        .map(|(&cpu, &wall)| cpu.min(wall))
        .max()
        .unwrap_or(0);
    let l = line(what, &calls, wall, &format!(" (work {most:>5} µs)"));
    println!("{l}");
    report.lines.push(l);
    if most >= SLOW_US {
        report
            .over
            .push(format!("{what}: a step did {most} µs of work"));
    }
    done
}

/// What one run of the test measured: a line per operation, and the walks that had a
/// step over 10 ms.
#[derive(Default)]
struct Report {
    lines: Vec<String>,
    over: Vec<String>,
}

/// Kills `n` jobs from the head of ready, 1,000 per claim.
async fn kill(store: &RedisStore, q: &QueueName, n: u64) {
    let mut left = n;
    while left > 0 {
        let token = LeaseToken::mint("killer").unwrap();
        let claim = store
            .claim(q, left.min(1000) as usize, Duration::from_secs(600), &token)
            .await
            .unwrap();
        assert!(!claim.jobs.is_empty());
        left -= claim.jobs.len() as u64;
        let outcomes: Vec<_> = claim
            .jobs
            .into_iter()
            .map(|j| {
                (
                    j.lease,
                    Outcome::Dead {
                        error: "boom".into(),
                    },
                )
            })
            .collect();
        assert!(store.finish(&outcomes).await.unwrap().iter().all(|ok| *ok));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_paths_on_a_million_jobs_stay_under_10_ms_per_call() {
    let mut seen = Vec::new();
    for run in 1..=3 {
        let report = walk_a_million().await;
        println!("\nsummary:\n{}", report.lines.join("\n"));
        if report.over.is_empty() {
            return;
        }
        println!("over 10 ms (run {run} of 3): {:?}", report.over);
        seen.extend(report.over);
    }
    panic!("a bulk step did 10 ms of work or more in three runs: {seen:?}");
}

/// One run of the test on a fresh server: fills it, then measures every operator path.
async fn walk_a_million() -> Report {
    let began = Instant::now();
    let server = RedisServer::start_with(&["--slowlog-max-len", "100000"]);
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let q = QueueName::new("big").unwrap();
    store
        .configure(
            &q,
            &QueueConfig {
                dead_max: 1_000_000,
                ..QueueConfig::default()
            },
        )
        .await
        .unwrap();

    // 100,000 dead jobs, their kinds interleaved, then a ready backlog of 1,000,000.
    let mut n = 0;
    for _ in 0..(DEAD_PER_KIND * 4 / 10_000) {
        let batch: Vec<_> = (0..10_000)
            .map(|i| job(KINDS[i % 4], n + i as u64))
            .collect();
        n += 10_000;
        store.enqueue(&q, batch).await.unwrap();
    }
    kill(&store, &q, DEAD_PER_KIND * 4).await;
    let mut first_ready = None;
    let mut last_ready = None;
    for _ in 0..(READY / 10_000) {
        let batch: Vec<_> = (0..10_000).map(|i| job("a", n + i)).collect();
        n += 10_000;
        let ids = store.enqueue(&q, batch).await.unwrap();
        first_ready.get_or_insert_with(|| ids[0].clone());
        last_ready = ids.last().cloned();
    }
    let (first_ready, last_ready) = (first_ready.unwrap(), last_ready.unwrap());
    let stats = store.stats(&q).await.unwrap();
    assert_eq!((stats.ready, stats.dead), (READY, DEAD_PER_KIND * 4));
    println!("filled in {:.1} s", began.elapsed().as_secs_f64());

    let _: () = redis::cmd("CONFIG")
        .arg(&["SET", "slowlog-log-slower-than", "0"])
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut report = Report::default();
    let r = &mut report;
    let c = &mut conn;

    let s = measure(c, r, "stats", async || store.stats(&q).await.unwrap()).await;
    assert_eq!(s.ready, READY);

    // Lookups by id: the head and the tail of the backlog, a dead job, no such job.
    let found = measure(c, r, "find: a ready job at the head", async || {
        store.find(&first_ready).await.unwrap()
    })
    .await;
    assert_eq!(found.map(|j| j.state), Some(JobState::Ready));
    let found = measure(c, r, "find: a ready job at the tail of 1M", async || {
        store.find(&last_ready).await.unwrap()
    })
    .await;
    let found = found.expect("the last ready job is found");
    assert_eq!((found.state, &found.id), (JobState::Ready, &last_ready));
    let dead_page = store
        .list(&q, JobState::Dead, &Cursor::start(), 1)
        .await
        .unwrap();
    let dead_id = dead_page.jobs[0].id.clone();
    let found = measure(c, r, "find: a dead job", async || {
        store.find(&dead_id).await.unwrap()
    })
    .await;
    assert_eq!(found.map(|j| j.state), Some(JobState::Dead));
    let missing = JobId::new("987654321987");
    let found = measure(c, r, "find: no such job (walks all 1M)", async || {
        store.find(&missing).await.unwrap()
    })
    .await;
    assert!(found.is_none());

    // Listing: first pages and deep pages.
    let page = measure(c, r, "list ready: first page of 100", async || {
        store
            .list(&q, JobState::Ready, &Cursor::start(), 100)
            .await
            .unwrap()
    })
    .await;
    assert_eq!(page.jobs[0].id, first_ready);
    let page = measure(c, r, "list ready: page of 100 at 999,900", async || {
        store
            .list(&q, JobState::Ready, &Cursor::new("999900"), 100)
            .await
            .unwrap()
    })
    .await;
    assert_eq!(page.jobs.last().map(|j| &j.id), Some(&last_ready));
    let page = measure(c, r, "list dead: first page of 100", async || {
        store
            .list(&q, JobState::Dead, &Cursor::start(), 100)
            .await
            .unwrap()
    })
    .await;
    let next = page.next.expect("more dead jobs");
    let page = measure(c, r, "list dead: next page of 100", async || {
        store.list(&q, JobState::Dead, &next, 100).await.unwrap()
    })
    .await;
    assert_eq!(page.jobs.len(), 100);

    // Bulk operations on the dead set, in bounded steps.
    let (kind_a, kind_b) = (DeadFilter::Kind("a".into()), DeadFilter::Kind("b".into()));
    let moved = measure_walk(c, r, "redrive kind a (25k of 100k dead)", async |at| {
        store.redrive(&q, &kind_a, at).await.unwrap()
    })
    .await;
    assert_eq!(moved, DEAD_PER_KIND);
    let gone = measure_walk(c, r, "purge kind b (25k of 75k dead)", async |at| {
        store.purge(&q, &kind_b, at).await.unwrap()
    })
    .await;
    assert_eq!(gone, DEAD_PER_KIND);
    let moved = measure_walk(c, r, "redrive all (50k dead)", async |at| {
        store.redrive(&q, &DeadFilter::All, at).await.unwrap()
    })
    .await;
    assert_eq!(moved, 2 * DEAD_PER_KIND);
    kill(&store, &q, 50_000).await;
    let gone = measure_walk(c, r, "purge all (50k dead)", async |at| {
        store.purge(&q, &DeadFilter::All, at).await.unwrap()
    })
    .await;
    assert_eq!(gone, 50_000);
    let s = store.stats(&q).await.unwrap();
    let ready = READY + 3 * DEAD_PER_KIND - 50_000;
    assert_eq!((s.ready, s.dead), (ready, 0));

    // Operator actions on ready and scheduled jobs. One ready job near the tail of the
    // list: a walk of it, deleted by a tombstone.
    let one = JobFilter::Ids(vec![last_ready.clone()]);
    let gone = measure_walk(
        c,
        r,
        "delete: a ready job near the tail of 1M",
        async |at| store.delete(&q, &one, at).await.unwrap(),
    )
    .await;
    assert_eq!(gone, 1);
    assert!(store.job(&q, &last_ready).await.unwrap().is_none());
    // 20,000 scheduled jobs of two kinds; run-now of one kind, then a delete of that
    // kind, which walks the scheduled set and all of the ready list.
    let later = EnqueueOptions::default().delay(Duration::from_secs(3600));
    for b in 0..2 {
        let batch: Vec<_> = (0..10_000)
            .map(|i| {
                let payload = format!(r#"{{"n":{}}}"#, n + b * 10_000 + i).into_bytes();
                let kind = KINDS[1 + (i % 2) as usize];
                NewJob::new(kind, payload, &later, RetryPolicy::default()).unwrap()
            })
            .collect();
        store.enqueue(&q, batch).await.unwrap();
    }
    let (kind_b, kind_c) = (JobFilter::Kind("b".into()), JobFilter::Kind("c".into()));
    let moved = measure_walk(c, r, "run-now kind b (10k of 20k scheduled)", async |at| {
        store.run_now(&q, &kind_b, at).await.unwrap()
    })
    .await;
    assert_eq!(moved, 10_000);
    let gone = measure_walk(c, r, "delete kind b (10k ready of 1M)", async |at| {
        store.delete(&q, &kind_b, at).await.unwrap()
    })
    .await;
    assert_eq!(gone, 10_000);
    // Kind c: 10,000 scheduled, and the 25,000 redriven ones at the tail of ready.
    let gone = measure_walk(c, r, "delete kind c (10k sched., 25k ready)", async |at| {
        store.delete(&q, &kind_c, at).await.unwrap()
    })
    .await;
    assert_eq!(gone, 10_000 + DEAD_PER_KIND);
    let s = store.stats(&q).await.unwrap();
    assert_eq!((s.ready, s.scheduled), (ready - 1 - DEAD_PER_KIND, 0));

    // 100,000 prioritised jobs (below the default, so behind the whole list), kind p:
    // nothing keys them by id, so a lookup or a delete by id walks prio by score before
    // the list, 2,000 a call, and a delete by kind walks prio, then the list.
    let low = EnqueueOptions::default().priority(20);
    let mut last_prio = None;
    for b in 0..10 {
        let batch: Vec<_> = (0..10_000)
            .map(|i| {
                let payload = format!(r#"{{"n":{}}}"#, n + b * 10_000 + i).into_bytes();
                NewJob::new("p", payload, &low, RetryPolicy::default()).unwrap()
            })
            .collect();
        last_prio = store.enqueue(&q, batch).await.unwrap().pop();
    }
    let last_prio = last_prio.unwrap();
    let found = measure(c, r, "find: the last of 100k prioritised", async || {
        store.find(&last_prio).await.unwrap()
    })
    .await;
    assert_eq!(found.map(|j| j.state), Some(JobState::Ready));
    let one = JobFilter::Ids(vec![last_prio.clone()]);
    let gone = measure_walk(c, r, "delete: the last of 100k prioritised", async |at| {
        store.delete(&q, &one, at).await.unwrap()
    })
    .await;
    assert_eq!(gone, 1);
    let kind_p = JobFilter::Kind("p".into());
    let gone = measure_walk(c, r, "delete kind p (100k prioritised)", async |at| {
        store.delete(&q, &kind_p, at).await.unwrap()
    })
    .await;
    assert_eq!(gone, 99_999);
    assert_eq!(store.stats(&q).await.unwrap().ready, s.ready);
    println!("whole run {:.1} s", began.elapsed().as_secs_f64());
    report
}

/// A lookup walks the ready list over many calls while claims pop its head and releases
/// push to it: each call finds where the last one stopped again, so no job is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_keeps_its_place_while_claims_and_releases_move_the_list() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let q = QueueName::new("moving").unwrap();
    let mut ids = Vec::new();
    for b in 0..10 {
        let batch = (0..10_000).map(|i| job("a", b * 10_000 + i)).collect();
        ids.extend(store.enqueue(&q, batch).await.unwrap());
    }
    let targets: Vec<JobId> = (0..20).map(|k| ids[20_007 + 4_000 * k].clone()).collect();
    // Claims 1,000 from the head and releases them back to it, again and again: between
    // two calls of a walk the list may have moved 1,000 either way.
    let moves = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mover = {
        let (store, q, stop, moves) = (store.clone(), q.clone(), stop.clone(), moves.clone());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let token = LeaseToken::mint("mover").unwrap();
                let claim = store
                    .claim(&q, 1000, Duration::from_secs(600), &token)
                    .await
                    .unwrap();
                let back: Vec<_> = claim.jobs.iter().map(|j| j.lease.clone()).collect();
                store.release(&back).await.unwrap();
                moves.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let before = moves.load(std::sync::atomic::Ordering::Relaxed);
    for id in &targets {
        let found = store.job(&q, id).await.unwrap();
        assert_eq!(
            found.map(|j| (j.state, j.id)),
            Some((JobState::Ready, id.clone())),
            "job {id} was skipped"
        );
    }
    let during = moves.load(std::sync::atomic::Ordering::Relaxed) - before;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    mover.await.unwrap();
    assert!(
        during >= 20,
        "the list moved only {during} times during the lookups"
    );
    println!("20 lookups found their jobs while the head moved 1,000 jobs {during} times");
}
