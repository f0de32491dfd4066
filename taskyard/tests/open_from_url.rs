//! One way to open a store: `AnyStore::open` takes a file path, `redis://…` or
//! `rediss://…`, and the same client code runs on what it returns.

use serde::{Deserialize, Serialize};
use taskyard::{AnyStore, Client, Error, Job, QueueName};
use taskyard_conformance::TempDir;

#[derive(Serialize, Deserialize)]
struct Ping {
    n: u32,
}

impl Job for Ping {
    const KIND: &'static str = "ping";
}

async fn enqueue_and_count(store: AnyStore) -> u64 {
    let client = Client::new(store);
    client.enqueue(&Ping { n: 1 }).await.unwrap();
    let q = QueueName::new("default").unwrap();
    client.stats(&q).await.unwrap().ready
}

#[tokio::test]
async fn a_file_path_opens_the_embedded_store_and_a_missing_one_is_refused_when_asked() {
    let dir = TempDir::new();
    let path = dir.path().join("jobs.db");
    let url = path.to_str().unwrap().to_string();
    let missing = AnyStore::open_existing(&url).await.err().expect("refused");
    assert!(matches!(&missing, Error::InvalidOption(m) if m.starts_with("no taskyard store at")));
    assert!(!path.exists(), "open_existing created the file");

    let store = AnyStore::open(&format!("{url}?synchronous=normal"))
        .await
        .unwrap();
    assert_eq!(store.kind(), "sqlite");
    assert_eq!(enqueue_and_count(store).await, 1);
    let again = AnyStore::open_existing(&url).await.unwrap();
    assert_eq!(enqueue_and_count(again).await, 2);

    let bad = AnyStore::open(&format!("{url}?synchronus=normal"))
        .await
        .err();
    assert!(matches!(bad, Some(Error::InvalidOption(_))), "{bad:?}");
    let other = AnyStore::open("postgres://localhost/db")
        .await
        .err()
        .expect("refused");
    assert!(other.to_string().contains("unsupported store"), "{other}");
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn a_redis_url_opens_the_redis_store() {
    let server = taskyard_conformance::RedisServer::start();
    let store = AnyStore::open(&server.url()).await.unwrap();
    assert_eq!(store.kind(), "redis");
    assert_eq!(enqueue_and_count(store).await, 1);
}
