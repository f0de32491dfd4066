//! A full store drains: enqueues are refused with `Error::StoreFull` and write nothing,
//! while a real worker claims, fails, retries and completes every acknowledged job in the
//! room kept for it. Once through the size cap (with SQLite's own "full" injected on top),
//! which runs everywhere, and once on a small file system the test mounts where it may.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use taskyard_conformance::TempDir;
use taskyard_core::{
    Cursor, DeadFilter, EnqueueOptions, Error, JobError, JobId, JobState, Lease, LeaseToken,
    NewJob, Outcome, QueueName, RetryPolicy, Store, Worker,
};
use taskyard_sqlite::{Options, SqliteStore};

const KIND: &str = "flaky";

/// A job of about 2 KB that may be retried soon after a failure.
fn job(n: usize) -> NewJob {
    let payload = format!(r#"{{"n":{n},"s":"{}"}}"#, "x".repeat(2000)).into_bytes();
    let retry = RetryPolicy::default()
        .max_attempts(5)
        .base(Duration::from_millis(10))
        .cap(Duration::from_millis(50));
    NewJob::new(KIND, payload, &EnqueueOptions::default(), retry).unwrap()
}

fn queue() -> QueueName {
    QueueName::new("full").unwrap()
}

/// Enqueues batches of 20, then single jobs, until the store refuses them; returns the
/// acknowledged ids and the last refusal's reason. Every refusal must be `StoreFull`, and
/// once a single job is refused, the next one is too.
async fn fill(store: &SqliteStore, q: &QueueName) -> (Vec<JobId>, String) {
    let mut acked = Vec::new();
    let mut n = 0;
    for size in [20, 1] {
        loop {
            n += size;
            match store
                .enqueue(q, (0..size).map(|i| job(n + i)).collect())
                .await
            {
                Ok(ids) => acked.extend(ids),
                Err(Error::StoreFull { .. }) => break,
                Err(e) => panic!("a full store must say StoreFull, not: {e}"),
            }
            assert!(n < 1_000_000, "the store never filled");
        }
    }
    match store.enqueue(q, vec![job(0)]).await {
        Err(Error::StoreFull { reason }) => (acked, reason),
        other => panic!("a full store stays full: {other:?}"),
    }
}

/// Every change but an enqueue works on the full store, and every read: claim, heartbeat,
/// release, a failure to dead, redrive, maintenance, pause and resume, stats and listing.
/// Leaves the acknowledged jobs ready, as they were.
async fn everything_but_enqueue_works(store: &SqliteStore, q: &QueueName, acked: usize) {
    let stats = store.stats(q).await.expect("stats on a full store");
    assert_eq!(
        stats.ready, acked as u64,
        "exactly the acknowledged jobs are in the file"
    );
    let page = store
        .list(q, JobState::Ready, &Cursor::start(), 10)
        .await
        .expect("list on a full store");
    assert_eq!(page.jobs.len(), 10);
    store.set_paused(q, true).await.expect("pause when full");
    assert!(store.stats(q).await.unwrap().paused);
    store.set_paused(q, false).await.expect("resume when full");

    let token = LeaseToken::mint("full-test").unwrap();
    let claim = store
        .claim(q, 2, Duration::from_secs(30), &token)
        .await
        .expect("claim when full");
    assert_eq!(claim.jobs.len(), 2);
    let leases: Vec<Lease> = claim.jobs.iter().map(|j| j.lease.clone()).collect();
    assert_eq!(
        store
            .heartbeat(&leases, Duration::from_secs(30), &[])
            .await
            .expect("heartbeat when full")
            .held,
        [true, true]
    );
    assert_eq!(
        store
            .release(&leases[..1])
            .await
            .expect("release when full"),
        [true]
    );
    let dead = Outcome::Dead {
        error: "sent to dead while the store was full".into(),
    };
    assert_eq!(
        store
            .finish(&[(leases[1].clone(), dead)])
            .await
            .expect("a failure to dead when full"),
        [true]
    );
    assert_eq!(store.stats(q).await.unwrap().dead, 1);
    store
        .redrive(q, &DeadFilter::All, &Cursor::start())
        .await
        .expect("redrive when full");
    store.maintain(q).await.expect("maintenance when full");
    let stats = store.stats(q).await.unwrap();
    assert_eq!(
        (stats.ready, stats.running, stats.dead),
        (acked as u64, 0, 0),
        "the claimed jobs are back: {stats:?}"
    );
}

/// Runs a real worker on `store` whose handler fails each job's first attempt and
/// completes its second; returns once every acknowledged job completed (or fails the
/// test after two minutes).
async fn drain(store: &SqliteStore, q: &QueueName, acked: &[JobId]) {
    let completed = Arc::new(Mutex::new(HashSet::new()));
    let seen = completed.clone();
    let worker = Worker::builder(store.clone())
        .queue(q.as_str())
        .concurrency(20)
        .lease(Duration::from_secs(10))
        .maintenance_every(Duration::from_millis(20))
        .handle_raw(KIND, move |ctx, _payload| {
            let seen = seen.clone();
            async move {
                if ctx.attempt() == 1 {
                    return Err(JobError::retry("the first attempt fails"));
                }
                seen.lock().unwrap().insert(ctx.id().clone());
                Ok(())
            }
        })
        .build()
        .unwrap();
    let counters = worker.counters();
    let running = worker.spawn();
    let deadline = Instant::now() + Duration::from_secs(120);
    while completed.lock().unwrap().len() < acked.len() {
        assert!(
            Instant::now() < deadline,
            "the full store did not drain: {} of {} completed, {} failures recorded",
            completed.lock().unwrap().len(),
            acked.len(),
            counters.failed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running
        .shutdown()
        .await
        .expect("the worker shut down cleanly");
    let completed = completed.lock().unwrap().clone();
    let expected: HashSet<JobId> = acked.iter().cloned().collect();
    assert_eq!(completed, expected, "every acknowledged job completed");
    assert!(
        counters.failed() >= acked.len() as u64,
        "each job failed once first: {} failures for {} jobs",
        counters.failed(),
        acked.len()
    );
    let stats = store.stats(q).await.unwrap();
    assert_eq!(
        (stats.ready, stats.scheduled, stats.running, stats.dead),
        (0, 0, 0, 0),
        "nothing left behind: {stats:?}"
    );
}

/// The always-running path. The store's cap is 4 MiB with 1 MiB kept in reserve:
/// enqueues stop at 3 MiB with `StoreFull`. Then the error a full disk gives is injected:
/// a second store on the same file, capped at the file's current size with no reserve
/// (SQLite's `max_page_count`), enqueues until SQLite itself answers `SQLITE_FULL` — the
/// code the unix VFS returns on ENOSPC — which must also be `StoreFull` and write
/// nothing. A worker then drains every job (each fails once, retries, completes), and
/// enqueues work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_filled_to_its_cap_drains_with_a_worker_and_takes_jobs_again() {
    let dir = TempDir::new();
    let path = dir.path().join("taskyard.db");
    let options = Options {
        max_size: Some(4 * 1024 * 1024),
        reserve: 1024 * 1024,
        ..Options::default()
    };
    let store = SqliteStore::open_with(&path, options).await.unwrap();
    let q = queue();
    let (acked, reason) = fill(&store, &q).await;
    assert!(
        reason.contains("max_size"),
        "the refusal names the cap: {reason}"
    );
    assert!(acked.len() > 500, "the file held jobs: {}", acked.len());

    // SQLite's own "full" (what ENOSPC becomes), with no reserve of ours in the way: a
    // cap at the database's size now. Its pages may still be in the WAL (a checkpoint
    // comes every 1,000 pages), so the size is SQLite's count, not the file's length.
    let size = {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let pages: i64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        let page: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        (pages * page) as u64
    };
    let hard = SqliteStore::open_with(
        &path,
        Options {
            max_size: Some(size),
            reserve: 0,
            ..Options::default()
        },
    )
    .await
    .unwrap();
    // 300 jobs, about 600 KB: more than the few free pages a filled file has.
    let injected = match hard.enqueue(&q, (0..300).map(job).collect()).await {
        Ok(ids) => panic!("{} jobs fit past the file's size", ids.len()),
        Err(Error::StoreFull { reason }) => reason,
        Err(e) => panic!("SQLITE_FULL must be StoreFull, not: {e}"),
    };
    assert!(
        injected.contains("SQLite could not grow"),
        "the refusal came from SQLite: {injected}"
    );
    assert_eq!(
        store.stats(&q).await.unwrap().ready,
        acked.len() as u64,
        "the refused batch wrote nothing"
    );
    drop(hard);

    everything_but_enqueue_works(&store, &q, acked.len()).await;
    drain(&store, &q, &acked).await;
    store
        .enqueue(&q, vec![job(1)])
        .await
        .expect("a drained store takes jobs again");
}

/// Removes the mount when the test ends, however it ends.
struct Mounted<'a>(&'a Path);

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0)
            .status();
    }
}

/// The real thing: a 24 MiB tmpfs mounted for the test, filled by enqueues until the
/// store refuses them (fewer than `reserve`, 8 MiB, bytes left on it), then drained by a
/// worker using that reserve. Where the test may not mount (not root, no CAP_SYS_ADMIN,
/// no `mount`), it says it skipped this variant and passes: the capped test above covers
/// the same path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_small_file_system_drains_with_a_worker_when_it_may_be_mounted() {
    let dir = TempDir::new();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(&mnt)
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!(
            "SKIPPED the mount variant: cannot mount a tmpfs here (needs root or \
             CAP_SYS_ADMIN); the size-cap variant still ran"
        );
        return;
    }
    let _guard = Mounted(&mnt);
    let store = SqliteStore::open(mnt.join("taskyard.db")).await.unwrap();
    let q = queue();
    let (acked, reason) = fill(&store, &q).await;
    assert!(
        reason.contains("free on the disk"),
        "the refusal names the disk: {reason}"
    );
    assert!(acked.len() > 3000, "the disk held jobs: {}", acked.len());
    let free = nix::sys::statvfs::statvfs(&mnt).unwrap();
    let free = free.blocks_available() as u64 * free.fragment_size() as u64;
    assert!(
        free < taskyard_sqlite::DEFAULT_RESERVE + 1024 * 1024,
        "the disk was filled down to about the reserve: {free} bytes free"
    );
    everything_but_enqueue_works(&store, &q, acked.len()).await;
    drain(&store, &q, &acked).await;
    store
        .enqueue(&q, vec![job(1)])
        .await
        .expect("a drained store takes jobs again");
    eprintln!(
        "tmpfs of 24 MiB: {} jobs acknowledged before the refusal, {free} bytes free then",
        acked.len()
    );
    drop(store);
}
