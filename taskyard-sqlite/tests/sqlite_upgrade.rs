//! Formats that grow: a store file written by release 0.1 opens with this release and its
//! jobs carry on; every migration leads to the same schema; a file of a newer schema, of
//! another application, or half-migrated is refused and left as it is; a file migrated
//! by a newer release while this one runs makes this one stop writing.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use taskyard_conformance::TempDir;
use taskyard_conformance::fixtures;
use taskyard_core::{
    EnqueueOptions, Error, JobState, Lease, LeaseToken, NewJob, Outcome, QueueName, RetryPolicy,
    Store,
};
use taskyard_sqlite::{ManualClock, Options, SqliteStore};

fn queue(name: &str) -> QueueName {
    QueueName::new(name).unwrap()
}

fn job() -> NewJob {
    NewJob::new(
        "k",
        b"{}".to_vec(),
        &EnqueueOptions::default(),
        RetryPolicy::default(),
    )
    .unwrap()
}

fn pragma(path: &Path, name: &str) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.pragma_query_value(None, name, |r| r.get(0)).unwrap()
}

/// The migrations a file records: (version, release that ran it), in version order.
fn migrations(path: &Path) -> Vec<(i64, String)> {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.prepare("SELECT version, release FROM migrations ORDER BY version")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

async fn complete(store: &SqliteStore, leases: Vec<Lease>) {
    let outcomes: Vec<_> = leases
        .into_iter()
        .map(|l| (l, Outcome::Completed))
        .collect();
    let held = store.finish(&outcomes).await.unwrap();
    assert!(held.iter().all(|h| *h), "{held:?}");
}

#[tokio::test]
async fn a_store_file_written_by_0_1_opens_and_its_jobs_carry_on() {
    let dir = TempDir::new();
    let path = dir.path().join("store.db");
    std::fs::copy(fixtures::path("store-0.1.db"), &path).unwrap();
    assert_eq!(pragma(&path, "user_version"), 1);
    let manifest = fixtures::manifest();
    let end_ms = manifest["stores"]["sqlite"]["now_ms_at_end"]
        .as_u64()
        .unwrap();
    let clock = Arc::new(ManualClock::new(end_ms));
    let options = Options {
        clock: clock.clone(),
        ..Options::default()
    };
    let store = SqliteStore::open_with(&path, options).await.unwrap();
    assert_eq!(pragma(&path, "user_version"), 6);
    assert_eq!(pragma(&path, "application_id"), 0x7479_7264);
    let migrated = migrations(&path);
    let release = env!("CARGO_PKG_VERSION").to_string();
    assert_eq!(
        migrated,
        [
            (2, release.clone()),
            (3, release.clone()),
            (4, release.clone()),
            (5, release.clone()),
            (6, release)
        ]
    );

    // Every job reads as 0.1 left it.
    let jobs = fixtures::jobs("sqlite");
    fixtures::assert_as_0_1_left_them(&store, &jobs).await;
    fixtures::assert_queues_as_0_1_left_them(&store).await;
    let upgrade = queue("upgrade");

    // The running jobs' 1 s lease runs out: maintenance returns them, charged.
    clock.advance(Duration::from_secs(2));
    assert_eq!(store.maintain(&upgrade).await.unwrap().expired, 2);
    fixtures::carry_on(Arc::new(store.clone()), &jobs).await;

    // The scheduled ones run when their time comes: the retry ten years on, the report
    // in 2100.
    clock.advance(Duration::from_millis(4_102_444_800_000 - end_ms));
    let minute = Duration::from_secs(60);
    let claim = store
        .claim(&upgrade, 100, minute, &LeaseToken::mint("later").unwrap())
        .await
        .unwrap();
    let mut due: Vec<(&str, u32)> = claim.jobs.iter().map(|c| (&*c.kind, c.attempt)).collect();
    due.sort();
    assert_eq!(due, [("fixture.scheduled-retry", 2), ("report.yearly", 1)]);
    complete(&store, claim.jobs.into_iter().map(|c| c.lease).collect()).await;
    let end: [fixtures::End; 2] = [
        ("scheduled-retry", JobState::Completed, 2, &["try later"]),
        ("scheduled-2100", JobState::Completed, 1, &[]),
    ];
    fixtures::assert_ends(&store, &jobs, &end).await;

    // New ids never repeat 0.1's; the other queues carry on.
    let id = store.enqueue(&upgrade, vec![job()]).await.unwrap()[0].clone();
    let newest = jobs
        .iter()
        .map(|j| j.id.as_str().parse::<u64>().unwrap())
        .max();
    assert!(id.as_str().parse::<u64>().unwrap() > newest.unwrap());
    fixtures::other_queues_carry_on(&store, &jobs).await;

    // Migration 3's column: 0.1's jobs have no timeout of their own; a new job keeps its.
    let timed = queue("timed");
    let opts = EnqueueOptions::default().timeout(Duration::from_millis(2500));
    let with_timeout = NewJob::new("k", b"{}".to_vec(), &opts, RetryPolicy::default()).unwrap();
    store
        .enqueue(&timed, vec![job(), with_timeout])
        .await
        .unwrap();
    let claim = store
        .claim(&timed, 10, minute, &LeaseToken::mint("timed").unwrap())
        .await
        .unwrap();
    let timeouts: Vec<_> = claim.jobs.iter().map(|c| c.timeout).collect();
    assert_eq!(timeouts, [None, Some(Duration::from_millis(2500))]);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let old_timeouts: i64 = conn
        .query_row(
            "SELECT count(timeout_ms) FROM jobs WHERE queue != (SELECT id FROM queues WHERE name = 'timed')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(old_timeouts, 0, "0.1's jobs gained no timeout");
}

/// The schema as SQLite keeps it, to compare two files.
fn schema(path: &Path) -> Vec<(String, String, Option<String>)> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut rows: Vec<(String, String, Option<String>)> = conn
        .prepare("SELECT type, name, sql FROM sqlite_master ORDER BY name")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    rows.push((
        "pragma".into(),
        "user_version, application_id".into(),
        Some(format!(
            "{} {}",
            pragma(path, "user_version"),
            pragma(path, "application_id")
        )),
    ));
    rows
}

#[tokio::test]
async fn every_migration_leads_to_the_same_schema() {
    let dir = TempDir::new();
    // Schema 0 (a new file) through every migration.
    let fresh = dir.path().join("fresh.db");
    drop(SqliteStore::open(&fresh).await.unwrap());
    // Schema 1 (release 0.1's file) through migrations 2 to 4.
    let old = dir.path().join("old.db");
    std::fs::copy(fixtures::path("store-0.1.db"), &old).unwrap();
    drop(SqliteStore::open(&old).await.unwrap());
    assert_eq!(schema(&fresh), schema(&old));
    assert_eq!(pragma(&fresh, "user_version"), 6);
    let conn = rusqlite::Connection::open(&fresh).unwrap();
    let versions: Vec<i64> = conn
        .prepare("SELECT version FROM migrations ORDER BY version")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6]);
}

#[tokio::test]
async fn files_it_must_not_read_are_refused_and_left_unchanged() {
    let dir = TempDir::new();
    let refused = async |path: &Path| {
        let before = std::fs::read(path).unwrap();
        let err = SqliteStore::open(path).await.err().expect("refused");
        let after = std::fs::read(path).unwrap();
        assert!(after == before, "{} was changed", path.display());
        assert!(
            !path.with_extension("db-wal").exists(),
            "no WAL left by {}",
            path.display()
        );
        err
    };

    // A newer schema.
    let newer = dir.path().join("newer.db");
    drop(SqliteStore::open(&newer).await.unwrap());
    rusqlite::Connection::open(&newer)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = refused(&newer).await;
    assert!(
        matches!(&err, Error::Version { found, .. } if found == "schema 99"),
        "{err}"
    );

    // Another application's file, with tables of its own or its own application id.
    let foreign = dir.path().join("app.db");
    let conn = rusqlite::Connection::open(&foreign).unwrap();
    conn.execute_batch("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        .unwrap();
    drop(conn);
    let err = refused(&foreign).await;
    assert!(matches!(&err, Error::NotAStore { .. }), "{err}");
    assert!(err.to_string().contains("is not a taskyard store"), "{err}");
    let tagged = dir.path().join("tagged.db");
    let conn = rusqlite::Connection::open(&tagged).unwrap();
    conn.execute_batch(
        "PRAGMA application_id = 42; CREATE TABLE jobs (x); CREATE TABLE leases (y)",
    )
    .unwrap();
    drop(conn);
    let err = refused(&tagged).await.to_string();
    assert!(err.contains("application_id 0x2a"), "{err}");

    // Half-migrated: schema 1 by its number, yet migration 2's table already there.
    let half = dir.path().join("half.db");
    std::fs::copy(fixtures::path("store-0.1.db"), &half).unwrap();
    let conn = rusqlite::Connection::open(&half).unwrap();
    conn.execute_batch("CREATE TABLE migrations (version INTEGER PRIMARY KEY)")
        .unwrap();
    drop(conn);
    // The logical content: SQLite may bump the header's change counter when a write
    // transaction is rolled back, which changes no table, row or version.
    let content = |path: &Path| {
        let conn = rusqlite::Connection::open(path).unwrap();
        let rows: Vec<String> = conn
            .prepare("SELECT id || ' ' || state || ' ' || attempt || ' ' || hex(payload) FROM jobs")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        (schema(path), rows)
    };
    let before = content(&half);
    let err = SqliteStore::open(&half).await.err().expect("refused");
    assert!(
        matches!(&err, Error::Version { found, reads, .. }
            if found == "schema 1" && reads.contains("migration 2 failed")),
        "{err}"
    );
    assert!(
        content(&half) == before,
        "the half-migrated file was changed"
    );
    assert_eq!(pragma(&half, "user_version"), 1);
}

#[tokio::test]
async fn a_file_migrated_by_a_newer_release_stops_this_one_writing() {
    let dir = TempDir::new();
    let path = dir.path().join("store.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let q = queue("q");
    store.enqueue(&q, vec![job()]).await.unwrap();
    // What a newer release does when it migrates the file.
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let is_version = |e: Error| matches!(&e, Error::Version { found, .. } if found == "schema 99");
    assert!(is_version(
        store.enqueue(&q, vec![job()]).await.unwrap_err()
    ));
    let claim = store
        .claim(
            &q,
            5,
            Duration::from_secs(60),
            &LeaseToken::mint("w").unwrap(),
        )
        .await;
    assert!(is_version(claim.unwrap_err()));
    assert!(is_version(store.stats(&q).await.unwrap_err()));
    let conn = rusqlite::Connection::open(&path).unwrap();
    let (jobs, running): (i64, i64) = conn
        .query_row("SELECT count(*), count(token) FROM jobs", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((jobs, running), (1, 0), "nothing written after the change");
}

/// Migration 4 (priorities and unique keys) on a file of schema 3: its jobs keep their
/// claim order — a released job still first — and read as default priority without a
/// key, before (read as it is, read-only) and after; new prioritised jobs go around them.
#[tokio::test]
async fn migration_4_keeps_the_jobs_and_their_claim_order() {
    let dir = TempDir::new();
    let path = dir.path().join("store.db");
    std::fs::copy(fixtures::path("store-0.1.db"), &path).unwrap();
    // Schema 3 as the release before this one left a file: migrations 2 and 3 (they
    // never change once released), and a job it released to the head of ready (a
    // negative rank, from the same counter as ids).
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "BEGIN;
             PRAGMA application_id = 1954116196;
             CREATE TABLE migrations (version INTEGER PRIMARY KEY, applied_ms INTEGER NOT NULL,
                                      release TEXT NOT NULL);
             ALTER TABLE jobs ADD COLUMN timeout_ms INTEGER;
             INSERT INTO migrations VALUES (2, 0, '0.2.0'), (3, 0, '0.2.0');
             UPDATE seq SET last = last + 1;
             UPDATE jobs SET rank = -(SELECT last FROM seq) WHERE id = 15;
             PRAGMA user_version = 3;
             COMMIT;",
        )
        .unwrap();
    let upgrade = queue("upgrade");
    let expected = ["15", "9", "12", "13", "14"];
    let ready = async |store: &SqliteStore| {
        let page = store
            .list(
                &upgrade,
                JobState::Ready,
                &taskyard_core::Cursor::start(),
                100,
            )
            .await
            .unwrap();
        page.jobs
            .iter()
            .map(|j| {
                assert_eq!((j.priority, &j.unique), (50, &None), "job {}", j.id);
                j.id.to_string()
            })
            .collect::<Vec<_>>()
    };

    let reader = SqliteStore::open_read_only(&path).await.unwrap();
    assert_eq!(ready(&reader).await, expected, "read as it is");
    drop(reader);
    assert_eq!(pragma(&path, "user_version"), 3, "reading changed nothing");

    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(pragma(&path, "user_version"), 6);
    assert_eq!(ready(&store).await, expected, "migrated");
    let releases = migrations(&path);
    let release = env!("CARGO_PKG_VERSION").to_string();
    assert_eq!(
        releases,
        [
            (2, "0.2.0".to_string()),
            (3, "0.2.0".to_string()),
            (4, release.clone()),
            (5, release.clone()),
            (6, release)
        ]
    );

    let with = |priority| {
        let opts = EnqueueOptions::default().priority(priority);
        NewJob::new("k", b"{}".to_vec(), &opts, RetryPolicy::default()).unwrap()
    };
    let new = store
        .enqueue(&upgrade, vec![with(10), job(), with(90)])
        .await
        .unwrap();
    let claim = store
        .claim(
            &upgrade,
            100,
            Duration::from_secs(60),
            &LeaseToken::mint("w").unwrap(),
        )
        .await
        .unwrap();
    let order: Vec<String> = claim.jobs.iter().map(|c| c.lease.id.to_string()).collect();
    let mut want = vec![new[2].to_string()];
    want.extend(expected.iter().map(|id| id.to_string()));
    want.extend([new[1].to_string(), new[0].to_string()]);
    assert_eq!(
        order, want,
        "priority 90, the old jobs and a plain one, priority 10"
    );
}

/// Migrations 5 and 6 (cancels, progress, results, waits; schedules) on a file of schema
/// 4: read as it is by a read-only store (its queues read with the default result TTL,
/// nothing cancelled, no progress, result or schedule), then upgraded, after which its running claim carries on: one
/// of its jobs is cancelled and reported to the claim's heartbeat, the other completes
/// with a value that its retained record shows.
#[tokio::test]
async fn migration_5_reads_a_schema_4_file_as_it_is_then_carries_it_on() {
    let dir = TempDir::new();
    let path = dir.path().join("store.db");
    std::fs::copy(fixtures::path("store-0.1.db"), &path).unwrap();
    // Schema 4 as the release before this one left a file: migrations 2 to 4 as they were
    // released (they never change).
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "BEGIN;
             PRAGMA application_id = 1954116196;
             CREATE TABLE migrations (version INTEGER PRIMARY KEY, applied_ms INTEGER NOT NULL,
                                      release TEXT NOT NULL);
             ALTER TABLE jobs ADD COLUMN timeout_ms INTEGER;
             ALTER TABLE jobs ADD COLUMN priority INTEGER;
             ALTER TABLE jobs ADD COLUMN uniq TEXT;
             CREATE TABLE uniques (queue INTEGER NOT NULL, key TEXT NOT NULL,
                                   holder INTEGER NOT NULL, mode INTEGER NOT NULL,
                                   ends_ms INTEGER, PRIMARY KEY (queue, key)) WITHOUT ROWID;
             CREATE INDEX uniques_by_end ON uniques (queue, ends_ms) WHERE ends_ms IS NOT NULL;
             INSERT INTO migrations VALUES (2, 0, '0.2.0'), (3, 0, '0.2.0'), (4, 0, '0.2.0');
             PRAGMA user_version = 4;
             COMMIT;",
        )
        .unwrap();
    let jobs = fixtures::jobs("sqlite");
    let upgrade = queue("upgrade");

    let reader = SqliteStore::open_read_only(&path).await.unwrap();
    fixtures::assert_as_0_1_left_them(&reader, &jobs).await;
    fixtures::assert_queues_as_0_1_left_them(&reader).await;
    let config = reader.config(&upgrade).await.unwrap();
    assert_eq!(config.result_ttl_ms, taskyard_core::DEFAULT_RESULT_TTL_MS);
    assert_eq!(reader.stats(&upgrade).await.unwrap().cancelled, 0);
    let cancelled = reader
        .list(
            &upgrade,
            JobState::Cancelled,
            &taskyard_core::Cursor::start(),
            10,
        )
        .await
        .unwrap();
    assert!(cancelled.jobs.is_empty());
    assert!(reader.schedules(&upgrade).await.unwrap().is_empty());
    for job in &jobs {
        let found = reader.find(&job.id).await.unwrap().expect("found");
        assert_eq!(
            (found.progress, found.result),
            (None, None),
            "job {}",
            job.id
        );
    }
    // Nothing to signal in a file that has no counters: the wait lasts its timeout.
    reader
        .wait_cancel(std::slice::from_ref(&upgrade), Duration::from_millis(60))
        .await
        .unwrap();
    drop(reader);
    assert_eq!(pragma(&path, "user_version"), 4, "reading changed nothing");

    let end_ms = fixtures::manifest()["stores"]["sqlite"]["now_ms_at_end"]
        .as_u64()
        .unwrap();
    let options = Options {
        clock: Arc::new(ManualClock::new(end_ms)),
        ..Options::default()
    };
    let store = SqliteStore::open_with(&path, options).await.unwrap();
    assert_eq!(pragma(&path, "user_version"), 6);
    let release = env!("CARGO_PKG_VERSION").to_string();
    assert_eq!(
        migrations(&path),
        [
            (2, "0.2.0".to_string()),
            (3, "0.2.0".to_string()),
            (4, "0.2.0".to_string()),
            (5, release.clone()),
            (6, release)
        ]
    );
    fixtures::assert_as_0_1_left_them(&store, &jobs).await;
    // Migration 6: schedules, none yet; one can be stored.
    assert!(store.schedules(&upgrade).await.unwrap().is_empty());
    let daily = taskyard_core::schedule::StoredSchedule {
        name: "daily".into(),
        definition: bytes::Bytes::from_static(b"{}"),
        next_ms: end_ms + 1000,
        last_ms: None,
        last_job: None,
        paused: false,
        rev: 0,
    };
    assert!(store.put_schedule(&upgrade, &daily).await.unwrap());
    assert_eq!(store.schedules(&upgrade).await.unwrap()[0].rev, 1);

    // The running pair's claim, made by 0.1, carries on. Its token is renamed to one
    // this test can name (a token is only minted), the same in its lease and its jobs.
    let token = LeaseToken::mint("carry").unwrap();
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(&format!(
            "UPDATE jobs SET token = '{token}' WHERE token IS NOT NULL;
             UPDATE leases SET token = '{token}';"
        ))
        .unwrap();
    let lease = |role: &str| Lease {
        queue: upgrade.clone(),
        id: fixtures::by_role(&jobs, role).id.clone(),
        token: token.clone(),
    };
    let (retried, fresh) = (lease("running-retried"), lease("running-fresh"));
    let client = taskyard_core::Client::new(store.clone());
    let done = client
        .cancel(
            &upgrade,
            &taskyard_core::JobFilter::Ids(vec![retried.id.clone()]),
        )
        .await
        .unwrap();
    assert_eq!(done.done, 1);
    let progress = (fresh.clone(), bytes::Bytes::from_static(b"0.5"));
    let beat = store
        .heartbeat(
            std::slice::from_ref(&fresh),
            Duration::from_secs(60),
            &[progress],
        )
        .await
        .unwrap();
    assert_eq!(beat.held, [true]);
    assert_eq!(beat.cancelled, [(upgrade.clone(), retried.id.clone())]);
    let shown = store.job(&upgrade, &fresh.id).await.unwrap().unwrap();
    assert_eq!(shown.progress.as_deref(), Some("0.5"));
    let result = bytes::Bytes::from_static(b"{\"ok\":true}");
    let answers = store
        .finish(&[
            (retried.clone(), Outcome::Completed),
            (fresh.clone(), Outcome::CompletedWith { result }),
        ])
        .await
        .unwrap();
    assert_eq!(answers, [false, true]);
    let retried = store.job(&upgrade, &retried.id).await.unwrap().unwrap();
    assert_eq!(
        (retried.state, retried.attempt, retried.errors.len()),
        (JobState::Cancelled, 2, 1),
        "attempts and errors kept"
    );
    let fresh = store.job(&upgrade, &fresh.id).await.unwrap().unwrap();
    assert_eq!(
        (fresh.state, fresh.progress, fresh.result.as_deref()),
        (JobState::Completed, None, Some("{\"ok\":true}"))
    );
    let mut config = store.config(&upgrade).await.unwrap();
    config.result_ttl_ms = 5_000;
    store.configure(&upgrade, &config).await.unwrap();
    assert_eq!(store.config(&upgrade).await.unwrap(), config);
}
