//! What the embedded store promises beyond the conformance suite: its durability
//! settings take effect, time comes from its clock, the file stays bounded, data outlives
//! the process, a file it cannot use gets a clear error, a queue deleted by another
//! process is made again where it is seen, and a redrive step hands a key to one job.

use std::sync::Arc;
use std::time::Duration;

use taskyard_conformance::{TempDir, bury};
use taskyard_core::{
    Client, Cursor, DeadFilter, EnqueueOptions, Error, JobFilter, JobId, JobState, LeaseToken,
    NewJob, Outcome, QueueName, RetryPolicy, Store, UniqueMode,
};
use taskyard_sqlite::{ManualClock, Options, SqliteStore, Synchronous};

fn job(n: usize) -> NewJob {
    sized_job(n, 100)
}

/// A job whose payload carries `pad` bytes of filler.
fn sized_job(n: usize, pad: usize) -> NewJob {
    let payload = format!(r#"{{"n":{n},"s":"{}"}}"#, "x".repeat(pad)).into_bytes();
    NewJob::new(
        "noop",
        payload,
        &EnqueueOptions::default(),
        RetryPolicy::default(),
    )
    .unwrap()
}

fn queue(name: &str) -> QueueName {
    QueueName::new(name).unwrap()
}

fn size_of(dir: &TempDir, file: &str) -> u64 {
    std::fs::metadata(dir.path().join(file))
        .map(|m| m.len())
        .unwrap_or(0)
}

/// Bytes on disk: the database file and its WAL.
fn file_size(dir: &TempDir) -> u64 {
    size_of(dir, "taskyard.db") + size_of(dir, "taskyard.db-wal")
}

#[tokio::test]
async fn durability_pragmas_take_effect() {
    let dir = TempDir::new();
    let store = SqliteStore::open(dir.path().join("taskyard.db"))
        .await
        .unwrap();
    let p = store.pragmas().await.unwrap();
    assert_eq!(p.journal_mode, "wal");
    assert_eq!(
        p.synchronous, 2,
        "FULL by default: commits survive power loss"
    );
    assert_eq!(p.auto_vacuum, 2, "INCREMENTAL, so the file can shrink");
    assert!(
        p.busy_timeout_ms > 0,
        "other processes' locks are waited out"
    );
    drop(store);

    let options = Options {
        synchronous: Synchronous::Normal,
        ..Options::default()
    };
    let store = SqliteStore::open_with(dir.path().join("taskyard.db"), options)
        .await
        .unwrap();
    assert_eq!(store.pragmas().await.unwrap().synchronous, 1, "NORMAL");
    let url = format!("{}?synchronous=normal", dir.path().join("b.db").display());
    let store = SqliteStore::open_url(&url).await.unwrap();
    assert_eq!(store.pragmas().await.unwrap().synchronous, 1);
    let bad = format!("{}?fsync=maybe", dir.path().join("c.db").display());
    assert!(matches!(
        SqliteStore::open_url(&bad).await,
        Err(Error::InvalidOption(_))
    ));
    assert!(
        !dir.path().join("c.db").exists(),
        "a bad option creates nothing"
    );
}

#[tokio::test]
async fn time_comes_from_the_stores_clock() {
    let dir = TempDir::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let options = Options {
        clock: clock.clone(),
        ..Options::default()
    };
    let store = SqliteStore::open_with(dir.path().join("taskyard.db"), options)
        .await
        .unwrap();
    let q = queue("clock");
    assert_eq!(store.now_ms().await.unwrap(), 1_000_000);

    // A delay is measured on the store's clock, however long the test really takes.
    let delayed = NewJob::new(
        "noop",
        b"{}".to_vec(),
        &EnqueueOptions::default().delay(Duration::from_secs(60)),
        RetryPolicy::default(),
    )
    .unwrap();
    let ids = store.enqueue(&q, vec![delayed, job(2)]).await.unwrap();
    let info = store.job(&q, &ids[0]).await.unwrap().unwrap();
    assert_eq!(info.state, JobState::Scheduled);
    assert_eq!(info.at_ms, Some(1_060_000));

    // A lease of a minute holds until the clock passes it.
    let claim = store
        .claim(
            &q,
            10,
            Duration::from_secs(60),
            &LeaseToken::mint("w").unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(claim.jobs.len(), 1, "the delayed job is not due");
    assert_eq!(claim.next_due, Some(Duration::from_secs(60)));
    clock.advance(Duration::from_secs(59));
    assert_eq!(store.maintain(&q).await.unwrap().expired, 0);
    clock.advance(Duration::from_secs(2));
    let m = store.maintain(&q).await.unwrap();
    assert_eq!((m.promoted, m.expired), (1, 1));
    let stats = store.stats(&q).await.unwrap();
    assert_eq!((stats.ready, stats.running), (2, 0));

    // A retry delay too.
    let claim = store
        .claim(
            &q,
            10,
            Duration::from_secs(60),
            &LeaseToken::mint("w").unwrap(),
        )
        .await
        .unwrap();
    let outcomes: Vec<_> = claim
        .jobs
        .iter()
        .map(|j| {
            let retry = Outcome::Retry {
                delay_ms: 5_000,
                error: "later".into(),
            };
            (j.lease.clone(), retry)
        })
        .collect();
    assert_eq!(store.finish(&outcomes).await.unwrap(), vec![true, true]);
    assert_eq!(store.stats(&q).await.unwrap().scheduled, 2);
    clock.advance(Duration::from_millis(4_999));
    assert!(
        store
            .claim(
                &q,
                10,
                Duration::from_secs(60),
                &LeaseToken::mint("w").unwrap()
            )
            .await
            .unwrap()
            .jobs
            .is_empty()
    );
    clock.advance(Duration::from_millis(1));
    assert_eq!(
        store
            .claim(
                &q,
                10,
                Duration::from_secs(60),
                &LeaseToken::mint("w").unwrap()
            )
            .await
            .unwrap()
            .jobs
            .len(),
        2
    );
}

#[tokio::test]
async fn jobs_and_completions_outlive_the_store_that_wrote_them() {
    let dir = TempDir::new();
    let path = dir.path().join("taskyard.db");
    let q = queue("persist");
    let ids = {
        let store = SqliteStore::open(&path).await.unwrap();
        let ids = store
            .enqueue(&q, (0..100).map(job).collect())
            .await
            .unwrap();
        // 40 completed, each completion recorded.
        assert_eq!(complete(&store, &q, 40).await, 40);
        store.set_paused(&q, true).await.unwrap();
        ids
    };
    let store = SqliteStore::open(&path).await.unwrap();
    let stats = store.stats(&q).await.unwrap();
    assert_eq!(
        (stats.ready, stats.running, stats.paused),
        (60, 0, true),
        "the 60 not run are there; the 40 completed do not come back"
    );
    let more = store.enqueue(&q, vec![job(100)]).await.unwrap();
    let last: u64 = ids[99].as_str().parse().unwrap();
    assert!(
        more[0].as_str().parse::<u64>().unwrap() > last,
        "ids are never reused"
    );
}

#[tokio::test]
async fn a_file_it_cannot_use_is_a_clear_error() {
    let dir = TempDir::new();
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![b'x'; 8192]).unwrap();
    let err = SqliteStore::open(&junk).await.err().expect("refused");
    assert!(err.to_string().contains("junk.db"), "{err}");
    assert_eq!(
        std::fs::read(&junk).unwrap(),
        vec![b'x'; 8192],
        "left as it was"
    );

    let missing = dir.path().join("no/such/dir/taskyard.db");
    let err = SqliteStore::open(&missing).await.err().expect("refused");
    assert!(err.to_string().contains("cannot open"), "{err}");

    let newer = dir.path().join("newer.db");
    drop(SqliteStore::open(&newer).await.unwrap());
    let conn = rusqlite::Connection::open(&newer).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = SqliteStore::open(&newer).await.err().expect("refused");
    assert!(err.to_string().contains("newer taskyard"), "{err}");
}

/// Claims up to `n` jobs and completes them; returns how many were recorded.
async fn complete(store: &SqliteStore, q: &QueueName, n: usize) -> usize {
    let claim = store
        .claim(
            q,
            n,
            Duration::from_secs(60),
            &LeaseToken::mint("w").unwrap(),
        )
        .await
        .unwrap();
    let done: Vec<_> = claim
        .jobs
        .iter()
        .map(|j| (j.lease.clone(), Outcome::Completed))
        .collect();
    store
        .finish(&done)
        .await
        .unwrap()
        .into_iter()
        .filter(|ok| *ok)
        .count()
}

/// Runs `n` jobs through: enqueue in batches, claim and complete them all.
async fn churn(store: &SqliteStore, q: &QueueName, n: usize) {
    for start in (0..n).step_by(1000) {
        store
            .enqueue(q, (start..start + 1000).map(job).collect())
            .await
            .unwrap();
    }
    loop {
        if complete(store, q, 500).await == 0 {
            break;
        }
    }
    store.maintain(q).await.unwrap();
}

#[tokio::test]
async fn the_file_stays_bounded_over_a_long_run() {
    let dir = TempDir::new();
    let store = SqliteStore::open(dir.path().join("taskyard.db"))
        .await
        .unwrap();
    let q = queue("long-run");
    // Steady churn: 20 rounds of 5,000 jobs reuse the same pages.
    churn(&store, &q, 5_000).await;
    let after_first = file_size(&dir);
    for _ in 0..19 {
        churn(&store, &q, 5_000).await;
    }
    let after_all = file_size(&dir);
    assert!(
        after_all <= after_first + 4 * 1024 * 1024,
        "100k jobs through: the file grew from {after_first} to {after_all} bytes"
    );
    assert_eq!(
        store.stats(&q).await.unwrap(),
        taskyard_core::QueueStats {
            queue: "long-run".into(),
            ..Default::default()
        }
    );

    // A large backlog grows the file; once it is drained, maintenance gives the space
    // back.
    let mut backlog = Vec::new();
    for start in (0..100_000).step_by(1000) {
        backlog.push(store.enqueue(&q, (start..start + 1000).map(job).collect()));
    }
    for b in backlog {
        b.await.unwrap();
    }
    let peak = size_of(&dir, "taskyard.db");
    assert!(
        peak > 10 * 1024 * 1024,
        "100k queued jobs take room: {peak}"
    );
    churn(&store, &q, 0).await;
    for _ in 0..20 {
        store.maintain(&q).await.unwrap();
    }
    let drained = size_of(&dir, "taskyard.db");
    assert!(
        drained < peak / 4,
        "after draining, the file shrank from {peak} only to {drained} bytes"
    );
    let wal = size_of(&dir, "taskyard.db-wal");
    assert!(wal < 16 * 1024 * 1024, "the WAL is kept small: {wal} bytes");
}

/// A full store refuses what does not fit, clearly, and a refused change leaves nothing
/// behind even when it shared a group commit with others: the jobs in the file are
/// exactly the acknowledged ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_refuses_cleanly_and_keeps_every_acknowledged_job() {
    let dir = TempDir::new();
    let options = Options {
        max_size: Some(2 * 1024 * 1024),
        reserve: 256 * 1024,
        ..Options::default()
    };
    let store = SqliteStore::open_with(dir.path().join("taskyard.db"), options)
        .await
        .unwrap();
    let q = queue("full");
    let big = |n: usize| sized_job(n, 2000);
    // Producers at once, so refused and accepted batches share commits.
    let producers: Vec<_> = (0..8)
        .map(|p| {
            let (store, q) = (store.clone(), q.clone());
            tokio::spawn(async move {
                let (mut acked, mut refused) = (Vec::new(), Vec::new());
                for b in 0..100 {
                    let size = if b % 2 == 0 { 20 } else { 1 };
                    match store
                        .enqueue(
                            &q,
                            (0..size).map(|i| big(p * 10_000 + b * 100 + i)).collect(),
                        )
                        .await
                    {
                        Ok(ids) => acked.extend(ids),
                        Err(e) => refused.push(e.to_string()),
                    }
                }
                (acked, refused)
            })
        })
        .collect();
    let (mut acked, mut refused) = (Vec::new(), Vec::new());
    for p in producers {
        let (a, r) = p.await.unwrap();
        acked.extend(a);
        refused.extend(r);
    }
    assert!(!refused.is_empty(), "the cap was reached");
    assert!(
        refused.iter().all(|e| e.contains("store is full")),
        "{:?}",
        refused.first()
    );
    assert_eq!(
        store.stats(&q).await.unwrap().ready,
        acked.len() as u64,
        "exactly the acknowledged jobs are in the file"
    );
    for id in acked.iter().step_by(25) {
        assert!(
            store.job(&q, id).await.unwrap().is_some(),
            "job {id} is kept"
        );
    }
    // Room made by finishing jobs is used again.
    assert!(complete(&store, &q, 200).await > 0);
    store.enqueue(&q, vec![big(1)]).await.expect("room again");
}

/// A store whose idle waiters look for other processes' work only once a minute: what
/// wakes them sooner is the store's own wakeup.
async fn without_poll(dir: &TempDir) -> SqliteStore {
    let options = Options {
        poll: Duration::from_secs(60),
        ..Options::default()
    };
    SqliteStore::open_with(dir.path().join("taskyard.db"), options)
        .await
        .unwrap()
}

/// An idle wait on `q` (up to 30 s) in the background; yields when it returned.
fn waiter(store: &SqliteStore, q: &QueueName) -> tokio::task::JoinHandle<std::time::Instant> {
    let (store, qs) = (store.clone(), vec![q.clone()]);
    tokio::spawn(async move {
        store.wait(&qs, Duration::from_secs(30)).await.unwrap();
        std::time::Instant::now()
    })
}

/// An enqueue through the store (or a clone of it) wakes its idle waiters at once: with
/// the look for other processes' work set to once a minute, the wakeup alone must do it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueue_in_the_same_process_wakes_idle_waiters_at_once() {
    let dir = TempDir::new();
    let store = without_poll(&dir).await;
    let q = queue("wake");
    for round in 0..5 {
        let waiter = waiter(&store, &q);
        // The waiter has looked and found nothing once the test's own look does too;
        // an extra moment lets it reach its sleep.
        assert_eq!(store.stats(&q).await.unwrap().ready, 0);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let sent = std::time::Instant::now();
        store.clone().enqueue(&q, vec![job(round)]).await.unwrap();
        let woke = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken by the enqueue, not by a look a minute later")
            .unwrap();
        assert!(woke.duration_since(sent) < Duration::from_secs(1));
        complete(&store, &q, 1).await;
    }
}

/// Resuming a paused queue that has jobs wakes the store's idle waiters at once (with the
/// look for other processes' work set to once a minute, the wakeup alone must do it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_a_queue_wakes_idle_waiters_at_once() {
    let dir = TempDir::new();
    let store = without_poll(&dir).await;
    let q = queue("resume");
    store.set_paused(&q, true).await.unwrap();
    store.enqueue(&q, vec![job(0)]).await.unwrap();
    let waiter = waiter(&store, &q);
    // Pacing: time for the waiter to look (a paused queue's job is no work) and go to
    // sleep; the check is this test's precondition, not a promise (waits may return
    // spuriously).
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished(), "the waiter went to sleep");
    store.set_paused(&q, false).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken by the resume, not by a look a minute later")
        .unwrap();
}

/// Another process's enqueue raises no wakeup here: idle waiters look for it every
/// 50 ms (by default) with one indexed read. Here the other process is a second store on
/// the same file, which shares nothing with the first but the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_processs_enqueue_is_seen_within_the_50_ms_poll() {
    let dir = TempDir::new();
    assert_eq!(Options::default().poll, Duration::from_millis(50));
    let no_pause = Options {
        poll: Duration::ZERO,
        ..Options::default()
    };
    let refused = SqliteStore::open_with(dir.path().join("taskyard.db"), no_pause).await;
    assert!(matches!(refused, Err(Error::InvalidOption(_))));
    let waiting = SqliteStore::open(dir.path().join("taskyard.db"))
        .await
        .unwrap();
    let other = SqliteStore::open(dir.path().join("taskyard.db"))
        .await
        .unwrap();
    let q = queue("poll");
    let mut delays = Vec::new();
    for round in 0..12 {
        let waiter = waiter(&waiting, &q);
        // Enqueue at a different point of the waiter's 50 ms cycle each round.
        tokio::time::sleep(Duration::from_millis(20 + 7 * round as u64)).await;
        other.enqueue(&q, vec![job(round)]).await.unwrap();
        let committed = std::time::Instant::now();
        let woke = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("seen long before the wait's timeout")
            .unwrap();
        delays.push(woke.saturating_duration_since(committed));
        complete(&other, &q, 1).await;
    }
    delays.sort();
    // A 50 ms cycle: half the rounds land in its first half. Loaded machines add a few
    // milliseconds; a slower poll (or none) would not pass.
    let median = delays[delays.len() / 2];
    assert!(median <= Duration::from_millis(45), "{delays:?}");
    assert!(
        delays[delays.len() - 1] < Duration::from_millis(250),
        "{delays:?}"
    );
}

/// A process holding the file's write lock holds up every other process's changes; after
/// `locked_for` (60 s by default) their calls fail with an error saying so, and write
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_locked_by_another_process_fails_calls_after_locked_for() {
    assert_eq!(Options::default().locked_for, Duration::from_secs(60));
    let dir = TempDir::new();
    let path = dir.path().join("taskyard.db");
    let options = Options {
        locked_for: Duration::from_secs(1),
        ..Options::default()
    };
    let store = SqliteStore::open_with(&path, options).await.unwrap();
    let q = queue("locked");
    store.enqueue(&q, vec![job(0)]).await.unwrap();
    // Another process (a plain SQLite connection) takes the write lock and keeps it.
    let holder = rusqlite::Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let start = std::time::Instant::now();
    let err = store.enqueue(&q, vec![job(1)]).await.expect_err("locked");
    let waited = start.elapsed();
    assert!(
        matches!(err, taskyard_core::Error::StoreLocked { seconds } if seconds == 1.0),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("stayed locked by another process for 1 s"),
        "{err}"
    );
    assert!(waited >= Duration::from_secs(1), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    // Reads go on meanwhile (WAL), and the refused enqueue wrote nothing.
    assert_eq!(store.stats(&q).await.unwrap().ready, 1);
    holder.execute_batch("ROLLBACK").unwrap();
    store.enqueue(&q, vec![job(2)]).await.unwrap();
    assert_eq!(store.stats(&q).await.unwrap().ready, 2);
}

/// Redrive and purge work 1,000 dead jobs per transaction, so a large one never holds
/// the writer (and every other caller) for long.
#[tokio::test]
async fn redrive_and_purge_commit_in_chunks_of_1000() {
    let dir = TempDir::new();
    let store = SqliteStore::open(dir.path().join("taskyard.db"))
        .await
        .unwrap();
    let q = queue("chunks");
    for start in (0..2500).step_by(500) {
        store
            .enqueue(&q, (start..start + 500).map(job).collect())
            .await
            .unwrap();
    }
    bury(&store, &q).await;
    assert_eq!(store.stats(&q).await.unwrap().dead, 2500);
    let before = store.commits();
    assert_eq!(
        Client::new(store.clone())
            .redrive(&q, &DeadFilter::All)
            .await
            .unwrap(),
        2500
    );
    assert_eq!(store.commits() - before, 3, "1,000 + 1,000 + 500");
    bury(&store, &q).await;
    let before = store.commits();
    let kind = DeadFilter::Kind("noop".into());
    assert_eq!(
        Client::new(store.clone()).purge(&q, &kind).await.unwrap(),
        2500
    );
    assert_eq!(store.commits() - before, 3, "1,000 + 1,000 + 500");
    assert_eq!(store.stats(&q).await.unwrap().dead, 0);
}

/// Settings the file cannot hold are refused with `InvalidOption` naming the value and
/// the range, instead of being cut down to fit.
#[tokio::test]
async fn settings_the_file_cannot_keep_are_refused_not_clamped() {
    let dir = TempDir::new();
    let path = dir.path().join("taskyard.db");
    let too_small = SqliteStore::open_with(
        &path,
        Options {
            max_size: Some(taskyard_sqlite::DEFAULT_RESERVE),
            ..Options::default()
        },
    )
    .await
    .err()
    .expect("a cap no bigger than the reserve is refused");
    assert!(
        matches!(&too_small, Error::InvalidOption(m) if m.contains("max_size 8388608")
            && m.contains("reserve")),
        "{too_small}"
    );
    assert!(!path.exists(), "the refused open created nothing");
    let no_poll = SqliteStore::open_with(
        &path,
        Options {
            poll: Duration::ZERO,
            ..Options::default()
        },
    )
    .await
    .err();
    assert!(matches!(no_poll, Some(Error::InvalidOption(_))));

    let store = SqliteStore::open(&path).await.unwrap();
    let q = queue("settings");
    for config in [
        taskyard_core::QueueConfig {
            max_len: u64::MAX,
            ..Default::default()
        },
        taskyard_core::QueueConfig {
            completed_max_age_ms: i64::MAX as u64 + 1,
            ..Default::default()
        },
    ] {
        let e = store.configure(&q, &config).await.unwrap_err();
        assert!(
            matches!(&e, Error::InvalidOption(m) if m.contains("out of range")
                && m.contains(&i64::MAX.to_string())),
            "{e}"
        );
    }
    assert_eq!(
        store.config(&q).await.unwrap(),
        taskyard_core::QueueConfig::default(),
        "a refused setting changed nothing"
    );
    let lease = store
        .claim(&q, 1, Duration::MAX, &LeaseToken::mint("t").unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(&lease, Error::InvalidOption(m) if m.contains("lease")),
        "{lease}"
    );
}

/// A queue deleted through one store (one process) while another store on the file has
/// its id cached: the other's next enqueue makes the queue again under a new id — its
/// jobs are listed and claimed — instead of writing them under the deleted id, where
/// nothing would ever see them.
#[tokio::test]
async fn a_queue_deleted_by_another_process_is_made_again_where_it_is_seen() {
    let dir = TempDir::new();
    let path = dir.path().join("taskyard.db");
    let (one, other) = (
        SqliteStore::open(&path).await.unwrap(),
        SqliteStore::open(&path).await.unwrap(),
    );
    let q = queue("shared");
    other.enqueue(&q, vec![job(1)]).await.unwrap();
    assert_eq!(Client::new(one.clone()).delete_queue(&q).await.unwrap(), 1);
    assert!(!one.queues().await.unwrap().contains(&q));

    let id = other.enqueue(&q, vec![job(2)]).await.unwrap().remove(0);
    assert_eq!(one.stats(&q).await.unwrap().ready, 1);
    assert!(one.job(&q, &id).await.unwrap().is_some());
    let token = LeaseToken::mint("w").unwrap();
    let claim = one
        .claim(&q, 10, Duration::from_secs(30), &token)
        .await
        .unwrap();
    assert_eq!(claim.jobs.len(), 1);
    assert_eq!(claim.jobs[0].lease.id, id);
}

/// Dead jobs with one finished key, redriven in one step: the first takes the key, the
/// others stay dead and say who holds it.
#[tokio::test]
async fn a_redrive_step_gives_a_key_to_one_of_its_dead_jobs() {
    let dir = TempDir::new();
    let store = SqliteStore::open(dir.path().join("taskyard.db"))
        .await
        .unwrap();
    let q = queue("keys");
    let mut dead = Vec::new();
    for _ in 0..3 {
        let opts = EnqueueOptions::default().unique("k", taskyard_core::UniqueMode::Finished);
        let job = NewJob::new("noop", b"{}".to_vec(), &opts, RetryPolicy::default()).unwrap();
        dead.push(store.enqueue(&q, vec![job]).await.unwrap().remove(0));
        bury(&store, &q).await;
    }
    let step = store
        .redrive(&q, &DeadFilter::All, &taskyard_core::Cursor::start())
        .await
        .unwrap();
    assert_eq!(step.done, 1);
    let held: Vec<_> = step.skipped.iter().map(|s| (&s.id, &s.why)).collect();
    let by_first = taskyard_core::Skip::KeyHeld(dead[0].clone());
    assert_eq!(held, [(&dead[1], &by_first), (&dead[2], &by_first)]);
    let st = store.stats(&q).await.unwrap();
    assert_eq!((st.ready, st.dead), (1, 2));
}

/// Deleting a queue goes in steps, jobs first: stopped after one step, the jobs left
/// still hold their unique keys and the running ones their lease.
#[tokio::test]
async fn a_queue_deletion_stopped_between_steps_leaves_keys_and_leases_with_their_jobs() {
    let dir = TempDir::new();
    let store = SqliteStore::open(dir.path().join("t.db")).await.unwrap();
    let q = QueueName::new("gone").unwrap();
    let keyed = |n: usize| {
        let opts = EnqueueOptions::default().unique(format!("k{n:04}"), UniqueMode::Finished);
        NewJob::new("noop", b"{}".to_vec(), &opts, RetryPolicy::default()).unwrap()
    };
    let ids = store
        .enqueue(&q, (0..1500).map(keyed).collect())
        .await
        .unwrap();
    let token = LeaseToken::mint("w").unwrap();
    let running = store
        .claim(&q, 10, Duration::from_secs(60), &token)
        .await
        .unwrap()
        .jobs;
    assert_eq!(running.len(), 10);

    let step = store.delete_queue(&q, &Cursor::start()).await.unwrap();
    assert_eq!(step.done, 1000);
    assert!(step.next.is_some());
    // Every job left still holds its key; the running ones keep their lease.
    let mut left = 0;
    for (n, id) in ids.iter().enumerate() {
        if store.job(&q, id).await.unwrap().is_some() {
            left += 1;
            let again = store.enqueue_report(&q, vec![keyed(n)]).await.unwrap();
            assert_eq!(
                (again[0].duplicate, &again[0].id),
                (true, id),
                "key k{n:04}"
            );
        }
    }
    assert_eq!(left, 500);
    let leases: Vec<_> = running.iter().map(|j| j.lease.clone()).collect();
    let held = store
        .heartbeat(&leases, Duration::from_secs(60), &[])
        .await
        .unwrap()
        .held;
    assert!(held.iter().all(|h| *h), "leases go after their jobs");

    assert_eq!(
        Client::new(store.clone()).delete_queue(&q).await.unwrap(),
        500
    );
    assert_eq!(store.stats(&q).await.unwrap().ready, 0);
    let fresh = store.enqueue_report(&q, vec![keyed(0)]).await.unwrap();
    assert!(!fresh[0].duplicate, "the keys went with the queue");
}

/// A job named twice, however it is spelt ("7", "07"), is acted on once.
#[tokio::test]
async fn a_job_named_twice_in_other_spellings_is_acted_on_once() {
    let dir = TempDir::new();
    let store = SqliteStore::open(dir.path().join("t.db")).await.unwrap();
    let q = QueueName::new("names").unwrap();
    let id = store.enqueue(&q, vec![job(1)]).await.unwrap().remove(0);
    let spellings = vec![
        id.clone(),
        JobId::new(format!("0{id}")),
        JobId::new(format!("+{id}")),
    ];
    let step = store
        .delete(&q, &JobFilter::Ids(spellings), &Cursor::start())
        .await
        .unwrap();
    assert_eq!((step.done, step.skipped.len()), (1, 0));
}
