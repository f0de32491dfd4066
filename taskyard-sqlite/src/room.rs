//! Room for new jobs: enqueues stop short of the file's size cap and of a full disk, so
//! claims, finishes, releases, heartbeats and maintenance always have a reserve left to
//! drain the backlog with.
//!
//! In WAL mode every write, a claim too, appends pages to the WAL and may need a page of
//! the file (a row that grows with an error message, an index page that splits). A store
//! that let enqueues take the last byte would leave nothing for the writes that free
//! room, so enqueues alone are held to `limit - reserve`:
//!
//! - with `Options::max_size`, an enqueue is refused once the pages in use would pass
//!   `max_size - reserve`; every other change may use the whole cap (SQLite's
//!   `max_page_count`);
//! - on the disk, an enqueue that grows the file is refused once the file system has
//!   less than `reserve` bytes free (statvfs). One that fits in the file's free pages
//!   needs no disk and is accepted.

use std::path::{Path, PathBuf};

use rusqlite::Connection;
use taskyard_core::{Error, Result};

use crate::db::db;

/// The smallest room a capped file must have for jobs beyond its reserve: the schema
/// takes a few pages, and a cap below this would refuse nearly every enqueue.
pub(crate) const MIN_DATA: u64 = 256 * 1024;

/// Where enqueues stop.
#[derive(Debug, Clone)]
pub(crate) struct Room {
    /// The directory holding the file: the file system whose free space counts.
    dir: PathBuf,
    reserve: u64,
    max_size: Option<u64>,
}

/// The file's size in pages, its free pages, and the page size.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pages {
    pub(crate) count: i64,
    pub(crate) free: i64,
    pub(crate) size: i64,
}

impl Pages {
    /// One cached statement: it runs twice per enqueue.
    pub(crate) fn read(conn: &Connection) -> Result<Pages> {
        conn.prepare_cached(
            "SELECT (SELECT page_count FROM pragma_page_count()),
                    (SELECT freelist_count FROM pragma_freelist_count()),
                    (SELECT page_size FROM pragma_page_size())",
        )
        .and_then(|mut s| {
            s.query_row([], |r| {
                Ok(Pages {
                    count: r.get(0)?,
                    free: r.get(1)?,
                    size: r.get(2)?,
                })
            })
        })
        .map_err(db)
    }

    fn used_bytes(self) -> u64 {
        ((self.count - self.free).max(0) * self.size) as u64
    }
}

impl Room {
    /// Checks the settings: a cap must leave room for jobs beyond the reserve.
    pub(crate) fn new(path: &Path, reserve: u64, max_size: Option<u64>) -> Result<Room> {
        if let Some(max) = max_size
            && max < reserve.saturating_add(MIN_DATA)
        {
            return Err(Error::InvalidOption(format!(
                "Options::max_size {max} bytes is too small: it must be at least the reserve \
                 ({reserve} bytes, Options::reserve) plus {MIN_DATA} bytes; raise max_size or \
                 lower reserve"
            )));
        }
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Ok(Room {
            dir,
            reserve,
            max_size,
        })
    }

    /// Run after an enqueue's inserts, inside its savepoint: refuses it (the savepoint is
    /// then rolled back, so it wrote nothing) when it took room the reserve keeps.
    pub(crate) fn check_enqueue(&self, conn: &Connection, before: Pages) -> Result<()> {
        let after = Pages::read(conn)?;
        if let Some(max) = self.max_size {
            let limit = max - self.reserve;
            if after.used_bytes() > limit {
                return Err(Error::StoreFull {
                    reason: format!(
                        "the file would hold {} bytes of data; enqueues stop at {limit} \
                         (max_size {max} less the reserve of {} kept for claims and finishes)",
                        after.used_bytes(),
                        self.reserve
                    ),
                });
            }
        }
        if after.count > before.count
            && let Some(free) = disk_free(&self.dir)
            && free < self.reserve
        {
            return Err(Error::StoreFull {
                reason: format!(
                    "{free} bytes free on the disk holding {}; enqueues stop below {} \
                     (the reserve kept for claims and finishes)",
                    self.dir.display(),
                    self.reserve
                ),
            });
        }
        Ok(())
    }
}

/// Bytes an unprivileged process may still write on the file system holding `dir`;
/// `None` where it cannot be known (then only SQLite's own full error stops enqueues).
#[cfg(unix)]
fn disk_free(dir: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    Some((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

#[cfg(not(unix))]
fn disk_free(_dir: &Path) -> Option<u64> {
    None
}
