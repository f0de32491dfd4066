//! Opening the store a URL names.

use std::sync::Arc;

use taskyard::{Error, Store};
use taskyard_redis::RedisStore;

/// The store `--store` / `TASKYARD_STORE` names.
pub(crate) async fn store(url: Option<String>) -> Result<Arc<dyn Store>, Error> {
    let url = url.ok_or_else(|| {
        Error::InvalidOption(
            "no store given: pass --store redis://host:port or set TASKYARD_STORE".into(),
        )
    })?;
    Ok(Arc::new(redis(&url).await?))
}

/// A Redis store, or a clear error for anything else.
pub(crate) async fn redis(url: &str) -> Result<RedisStore, Error> {
    if url.starts_with("redis://") || url.starts_with("rediss://") {
        RedisStore::connect(url).await
    } else {
        Err(Error::InvalidOption(format!(
            "unsupported store {url:?}: use redis://… or rediss://…"
        )))
    }
}
