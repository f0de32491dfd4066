//! The store a `--store` value (or `TASKYARD_STORE`) names — `./taskyard.db` with neither —
//! opened through the library's [`AnyStore`], as an application opens it.

use taskyard::sqlite::DEFAULT_PATH;
use taskyard::{AnyStore, Client, Error};

/// Whether a command may create the store file when it does not exist. Commands that
/// only look (stats, jobs, dead) say no: a typo in a path is an error, not a new file.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Create {
    Yes,
    No,
}

/// Opens the store a command names.
pub(crate) async fn open(url: Option<&str>, create: Create) -> Result<AnyStore, Error> {
    let url = url.unwrap_or(DEFAULT_PATH);
    match create {
        Create::Yes => AnyStore::open(url).await,
        Create::No => AnyStore::open_existing(url).await.map_err(|e| match e {
            Error::InvalidOption(msg) if msg.starts_with("no store at") => Error::InvalidOption(
                format!("{msg} (pass --store or set TASKYARD_STORE to use another)"),
            ),
            other => other,
        }),
    }
}

/// The client for a command: the CLI goes through the same API as an application.
pub(crate) async fn client(url: Option<String>, create: Create) -> Result<Client, Error> {
    Ok(Client::new(open(url.as_deref(), create).await?))
}
