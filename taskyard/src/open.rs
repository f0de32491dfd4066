//! Opening a store from a URL: the one switch an application (and the `taskyard`
//! command) needs, so none writes its own.

use std::sync::Arc;

use taskyard_core::{Error, IntoStore, QueueName, Result, Store};

/// A store of whichever kind a URL names.
///
/// - `redis://[user:password@]host[:port][/db]` and `rediss://…` (TLS): Redis, with the
///   `redis` feature; taskyard's own options go in the query (`?wait_replicas=1`).
/// - anything else is a file path or a `file:` URL for the embedded store, with the
///   `sqlite` feature (on by default); its options go in the query too
///   (`taskyard.db?synchronous=normal`). Every command reads it the same way
///   (`taskyard_sqlite::parse_url`).
///
/// Cheap to clone; pass it to [`Client::new`](crate::Client::new) and
/// [`Worker::builder`](crate::Worker::builder).
#[derive(Clone)]
#[non_exhaustive]
pub enum AnyStore {
    /// The embedded store.
    #[cfg(feature = "sqlite")]
    Sqlite(taskyard_sqlite::SqliteStore),
    /// Redis or Valkey.
    #[cfg(feature = "redis")]
    Redis(taskyard_redis::RedisStore),
}

impl AnyStore {
    /// Opens the store `url` names, creating the file of an embedded store if missing.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_as(url, Access::Create).await
    }

    /// Opens the store `url` names, but a missing file is an error rather than a new,
    /// empty store: for tools that change an existing store (redrive, purge), where a
    /// mistyped path must not pass.
    pub async fn open_existing(url: &str) -> Result<Self> {
        Self::open_as(url, Access::Existing).await
    }

    /// Opens the store `url` names to read it only: for commands that only look (stats,
    /// listings). An embedded store's file is opened read-only and nothing is created or
    /// changed beside it (see `SqliteStore::open_read_only`); a missing file is an error.
    /// Redis is connected to as usual.
    pub async fn open_read_only(url: &str) -> Result<Self> {
        Self::open_as(url, Access::ReadOnly).await
    }

    async fn open_as(url: &str, access: Access) -> Result<Self> {
        if url.starts_with("redis://") || url.starts_with("rediss://") {
            #[cfg(feature = "redis")]
            return Ok(AnyStore::Redis(
                taskyard_redis::RedisStore::connect(url).await?,
            ));
            #[cfg(not(feature = "redis"))]
            return Err(Error::InvalidOption(format!(
                "{url:?} is a Redis URL, but this build of taskyard has no Redis store \
                 (enable the crate's `redis` feature)"
            )));
        }
        if url.contains("://") && !url.starts_with("file:") {
            return Err(Error::InvalidOption(format!(
                "unsupported store {url:?}: use redis://…, rediss://…, a file path or file:…"
            )));
        }
        #[cfg(feature = "sqlite")]
        {
            use taskyard_sqlite::SqliteStore;
            // One reading of the path and its options for every command.
            let (path, options) = taskyard_sqlite::parse_url(url)?;
            let store = match access {
                Access::ReadOnly => SqliteStore::open_read_only(&path).await?,
                Access::Existing if !path.is_file() => {
                    return Err(Error::InvalidOption(format!(
                        "no taskyard store at {}: nothing has been enqueued there yet",
                        path.display()
                    )));
                }
                Access::Existing | Access::Create => SqliteStore::open_with(&path, options).await?,
            };
            Ok(AnyStore::Sqlite(store))
        }
        #[cfg(not(feature = "sqlite"))]
        {
            let _ = access;
            Err(Error::InvalidOption(format!(
                "{url:?} is a file path, but this build of taskyard has no embedded store \
                 (enable the crate's `sqlite` feature)"
            )))
        }
    }

    /// The store behind the [`Store`] trait.
    pub fn shared(&self) -> Arc<dyn Store> {
        match self {
            #[cfg(feature = "sqlite")]
            AnyStore::Sqlite(s) => Arc::new(s.clone()),
            #[cfg(feature = "redis")]
            AnyStore::Redis(s) => Arc::new(s.clone()),
        }
    }

    /// The kind of store: `"sqlite"` or `"redis"`.
    pub fn kind(&self) -> &'static str {
        match self {
            #[cfg(feature = "sqlite")]
            AnyStore::Sqlite(_) => "sqlite",
            #[cfg(feature = "redis")]
            AnyStore::Redis(_) => "redis",
        }
    }

    /// Bytes the store uses for data: Redis `used_memory`, or the file's pages in use.
    pub async fn used_bytes(&self) -> Result<u64> {
        match self {
            #[cfg(feature = "sqlite")]
            AnyStore::Sqlite(s) => s.used_bytes().await,
            #[cfg(feature = "redis")]
            AnyStore::Redis(s) => s.used_memory().await,
        }
    }

    /// Deletes a queue and every job in it, whatever their state; there is no undo.
    pub async fn delete_queue(&self, queue: &QueueName) -> Result<()> {
        taskyard_core::Client::new(self.clone().into_store())
            .delete_queue(queue)
            .await
            .map(drop)
    }
}

/// How a command opens a store.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Create,
    Existing,
    ReadOnly,
}

impl IntoStore for AnyStore {
    fn into_store(self) -> Arc<dyn Store> {
        self.shared()
    }
}
