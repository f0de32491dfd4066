//! Opening the store a `--store` value (or `TASKYARD_STORE`) names: `redis://…` and
//! `rediss://…` are Redis; anything else is a file path for the embedded store, and with
//! neither flag nor variable it is `./taskyard.db`.

use std::sync::Arc;

use taskyard::{Error, QueueName, Store};
use taskyard_redis::RedisStore;
use taskyard_sqlite::{DEFAULT_PATH, SqliteStore};

/// An open store, of either kind.
#[derive(Clone)]
pub(crate) enum Opened {
    Redis(RedisStore),
    Sqlite(SqliteStore),
}

/// Whether a command may create the store file when it does not exist. Commands that
/// only look (stats, jobs, dead) say no: a typo in a path is an error, not a new file.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Create {
    Yes,
    No,
}

impl Opened {
    pub(crate) async fn open(url: Option<&str>, create: Create) -> Result<Opened, Error> {
        let url = url.unwrap_or(DEFAULT_PATH);
        if url.starts_with("redis://") || url.starts_with("rediss://") {
            return Ok(Opened::Redis(RedisStore::connect(url).await?));
        }
        if url.contains("://") {
            return Err(Error::InvalidOption(format!(
                "unsupported store {url:?}: use redis://…, rediss://… or a file path"
            )));
        }
        let path = url.split_once('?').map(|(p, _)| p).unwrap_or(url);
        if create == Create::No && !std::path::Path::new(path).exists() {
            return Err(Error::InvalidOption(format!(
                "no store at {path}: nothing has been enqueued there yet \
                 (pass --store or set TASKYARD_STORE to use another)"
            )));
        }
        Ok(Opened::Sqlite(SqliteStore::open_url(url).await?))
    }

    /// The store behind the `Store` trait.
    pub(crate) fn shared(&self) -> Arc<dyn Store> {
        match self {
            Opened::Redis(s) => Arc::new(s.clone()),
            Opened::Sqlite(s) => Arc::new(s.clone()),
        }
    }

    /// The store's name in reports.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Opened::Redis(_) => "redis",
            Opened::Sqlite(_) => "sqlite",
        }
    }

    /// Bytes the store uses for data: Redis `used_memory`, or the file's pages in use.
    pub(crate) async fn used_bytes(&self) -> Result<u64, Error> {
        match self {
            Opened::Redis(s) => s.used_memory().await,
            Opened::Sqlite(s) => s.used_bytes().await,
        }
    }

    /// Deletes a queue and all its jobs (benchmarks clean up after themselves).
    pub(crate) async fn delete_queue(&self, queue: &QueueName) -> Result<(), Error> {
        match self {
            Opened::Redis(s) => s.delete_queue(queue).await,
            Opened::Sqlite(s) => s.delete_queue(queue).await,
        }
    }
}

/// The store for a command, behind the `Store` trait.
pub(crate) async fn store(url: Option<String>, create: Create) -> Result<Arc<dyn Store>, Error> {
    Ok(Opened::open(url.as_deref(), create).await?.shared())
}
