//! The store a `--store` value (or `TASKYARD_STORE`) names — `./taskyard.db` with neither —
//! opened through the library's [`AnyStore`], as an application opens it.

use taskyard::sqlite::DEFAULT_PATH;
use taskyard::{AnyStore, Client, Error};

/// How a command opens the store. Commands that only look (stats, jobs, dead list) open
/// it read-only: nothing is created or changed, and a typo in a path is an error, not a
/// new file.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Create {
    /// Created when missing (enqueue, queue pause, workers, bench).
    Yes,
    /// Must exist; may be changed (dead redrive, purge).
    No,
    /// Must exist; only read.
    ReadOnly,
}

/// Opens the store a command names.
pub(crate) async fn open(url: Option<&str>, create: Create) -> Result<AnyStore, Error> {
    let url = url.unwrap_or(DEFAULT_PATH);
    let opened = match create {
        Create::Yes => return AnyStore::open(url).await,
        Create::No => AnyStore::open_existing(url).await,
        Create::ReadOnly => AnyStore::open_read_only(url).await,
    };
    opened.map_err(|e| match e {
        Error::InvalidOption(msg) if msg.starts_with("no taskyard store at") => {
            Error::InvalidOption(format!(
                "{msg} (pass --store or set TASKYARD_STORE to use another)"
            ))
        }
        other => other,
    })
}

/// The client for a command: the CLI goes through the same API as an application.
pub(crate) async fn client(url: Option<String>, create: Create) -> Result<Client, Error> {
    Ok(Client::new(open(url.as_deref(), create).await?))
}
