//! The files of the embedded store through the library: a read-only store never writes
//! and sees a live writer's commits, a foreign or missing file is refused read-only too,
//! and a store closed after a worker's shutdown is one file again.

use std::time::Duration;

use taskyard_conformance::{TempDir, file_names, files_in};
use taskyard_core::{
    Client, EnqueueOptions, Error, JobContext, JobState, NewJob, QueueName, RetryPolicy, Store,
    Worker,
};
use taskyard_sqlite::{Options, SqliteStore};

fn job(n: usize) -> NewJob {
    NewJob::new(
        "noop",
        format!(r#"{{"n":{n}}}"#).into_bytes(),
        &EnqueueOptions::default(),
        RetryPolicy::default(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_read_only_store_never_writes_and_sees_a_live_writers_commits() {
    let dir = TempDir::new();
    let path = dir.path().join("taskyard.db");
    let q = QueueName::new("q").unwrap();

    let missing = SqliteStore::open_read_only(&path).await.err().unwrap();
    assert!(
        missing.to_string().contains("no taskyard store at"),
        "{missing}"
    );
    assert!(file_names(dir.path()).is_empty());

    let writer = SqliteStore::open(&path).await.unwrap();
    writer.enqueue(&q, (0..3).map(job).collect()).await.unwrap();
    drop(writer);
    assert_eq!(file_names(dir.path()), ["taskyard.db"], "closed: one file");
    let before = files_in(dir.path());

    let reader = SqliteStore::open_read_only(&path).await.unwrap();
    assert!(reader.is_read_only());
    assert_eq!(reader.stats(&q).await.unwrap().ready, 3);
    for refused in [
        reader.enqueue(&q, vec![job(9)]).await.err(),
        reader.set_paused(&q, true).await.err(),
        reader.maintain(&q).await.err(),
    ] {
        assert!(
            matches!(&refused, Some(Error::InvalidOption(m)) if m.contains("read-only")),
            "{refused:?}"
        );
    }
    assert!(
        files_in(dir.path()) == before,
        "{:?}",
        file_names(dir.path())
    );

    // A writer opens the file while the reader is open: the reader sees its commits
    // through its WAL, and adds no file of its own.
    let writer = SqliteStore::open(&path).await.unwrap();
    writer.enqueue(&q, (3..5).map(job).collect()).await.unwrap();
    assert_eq!(reader.stats(&q).await.unwrap().ready, 5);
    let page = reader
        .list(&q, JobState::Ready, &taskyard_core::Cursor::start(), 10)
        .await
        .unwrap();
    assert_eq!(page.jobs.len(), 5);
    drop(writer);
    assert_eq!(reader.stats(&q).await.unwrap().ready, 5);
    drop(reader);
    assert_eq!(file_names(dir.path()), ["taskyard.db"]);
}

#[tokio::test]
async fn a_foreign_file_is_refused_read_only_and_left_unchanged() {
    let dir = TempDir::new();
    let path = dir.path().join("other.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE notes (body TEXT);
             INSERT INTO notes VALUES ('mine');",
        )
        .unwrap();
    }
    let before = files_in(dir.path());
    let refused = SqliteStore::open_read_only(&path).await.err().unwrap();
    assert!(matches!(refused, Error::NotAStore { .. }), "{refused}");
    assert!(
        files_in(dir.path()) == before,
        "{:?}",
        file_names(dir.path())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_closed_after_its_workers_shutdown_is_one_file() {
    let dir = TempDir::new();
    let path = dir.path().join("taskyard.db");
    let store = SqliteStore::open_with(&path, Options::default())
        .await
        .unwrap();
    let client = Client::new(store.clone());
    let q = QueueName::new("default").unwrap();
    store.enqueue(&q, (0..50).map(job).collect()).await.unwrap();
    let worker = Worker::builder(store.clone())
        .concurrency(5)
        .handle_raw("noop", |_ctx: JobContext, _payload| async { Ok(()) })
        .build()
        .unwrap();
    let counters = worker.counters();
    let running = worker.spawn();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while counters.completed() < 50 {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        file_names(dir.path()).contains(&"taskyard.db-wal".to_string()),
        "in use, the store has its WAL: {:?}",
        file_names(dir.path())
    );
    running.shutdown().await.unwrap();
    drop((client, store));
    assert_eq!(file_names(dir.path()), ["taskyard.db"]);
    let again = SqliteStore::open_read_only(&path).await.unwrap();
    assert_eq!(
        again.stats(&q).await.unwrap().ready,
        0,
        "the completions are in the file"
    );
}
