//! The one reading of a `--store` value for the file store, so every command, the library
//! and the CLI take `taskyard.db`, `/var/lib/jobs.db?synchronous=normal`, `file:jobs.db`
//! and `file:///var/lib/jobs.db` to mean the same file with the same options.

use std::path::{Path, PathBuf};

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use taskyard_core::{Error, Result};

use crate::{Options, Synchronous};

/// A file store's path and options, from a `--store` value:
///
/// - a plain path, as the file system reads it: `taskyard.db`, `/var/lib/jobs.db`;
/// - a `file:` URL (RFC 8089, as SQLite reads them): `file:jobs.db` (relative),
///   `file:/var/lib/jobs.db`, `file:///var/lib/jobs.db`, `file://localhost/var/…`;
///   `%XX` escapes are decoded (`file:my%20jobs.db`), and another host is refused;
/// - either with options after `?`: `synchronous=full` (the default) or `normal`;
///   `max_size=BYTES` and `reserve=BYTES` ([`Options::max_size`], [`Options::reserve`]).
///
/// Anything else after `?` (a misspelt option, SQLite's own `mode=ro`) is refused, so an
/// option is never silently dropped.
pub fn parse_url(url: &str) -> Result<(PathBuf, Options)> {
    let (rest, is_uri) = match url.strip_prefix("file:") {
        Some(rest) => (rest, true),
        None => (url, false),
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let path = if is_uri {
        let local = match path.strip_prefix("//") {
            Some(authority_and_path) => {
                let at = authority_and_path
                    .find('/')
                    .unwrap_or(authority_and_path.len());
                let (host, path) = authority_and_path.split_at(at);
                if !(host.is_empty() || host.eq_ignore_ascii_case("localhost")) {
                    return Err(Error::InvalidOption(format!(
                        "store {url:?} names the host {host:?}: the file store is on this \
                         machine; write file:///path/to/file.db or a plain path"
                    )));
                }
                path
            }
            None => path,
        };
        percent_decode_str(local)
            .decode_utf8()
            .map_err(|e| {
                Error::InvalidOption(format!(
                    "store {url:?} has a %-escape that is not UTF-8 ({e}): write the path plainly"
                ))
            })?
            .into_owned()
    } else {
        path.to_string()
    };
    if path.is_empty() {
        return Err(Error::InvalidOption(format!(
            "store {url:?} names no file: give a path, such as taskyard.db"
        )));
    }
    let mut options = Options::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let lower = pair.to_ascii_lowercase();
        let (name, value) = lower.split_once('=').unwrap_or((&lower, ""));
        let bytes = || {
            value.parse::<u64>().map_err(|_| {
                Error::InvalidOption(format!(
                    "invalid store option {pair:?}: {name} is a whole number of bytes"
                ))
            })
        };
        match (name, value) {
            ("synchronous", "full") => options.synchronous = Synchronous::Full,
            ("synchronous", "normal") => options.synchronous = Synchronous::Normal,
            ("max_size", _) => options.max_size = Some(bytes()?),
            ("reserve", _) => options.reserve = bytes()?,
            _ => {
                return Err(Error::InvalidOption(format!(
                    "unknown store option {pair:?}: the file store takes synchronous=full or \
                     synchronous=normal, max_size=BYTES and reserve=BYTES"
                )));
            }
        }
    }
    Ok((PathBuf::from(path), options))
}

/// Characters a path must not carry raw inside an SQLite URI.
const URI_RESERVED: &AsciiSet = &CONTROLS.add(b'%').add(b'?').add(b'#').add(b' ');

/// The SQLite URI that opens `path` read-only as an immutable file (no locks, no -wal or
/// -shm created); `None` for a path that is not UTF-8.
pub(crate) fn immutable_uri(path: &Path) -> Option<String> {
    let path = path.to_str()?;
    Some(format!(
        "file:{}?mode=ro&immutable=1",
        utf8_percent_encode(path, URI_RESERVED)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(url: &str) -> PathBuf {
        parse_url(url).unwrap().0
    }

    #[test]
    fn every_spelling_of_a_file_names_the_same_path() {
        assert_eq!(path("jobs.db"), PathBuf::from("jobs.db"));
        assert_eq!(path("file:jobs.db"), PathBuf::from("jobs.db"));
        assert_eq!(path("/tmp/x.db"), PathBuf::from("/tmp/x.db"));
        assert_eq!(path("file:/tmp/x.db"), PathBuf::from("/tmp/x.db"));
        assert_eq!(path("file:///tmp/x.db"), PathBuf::from("/tmp/x.db"));
        assert_eq!(
            path("file://localhost/tmp/x.db"),
            PathBuf::from("/tmp/x.db")
        );
        assert_eq!(path("file:my%20jobs.db"), PathBuf::from("my jobs.db"));
        let (p, o) = parse_url("file:x.db?synchronous=normal").unwrap();
        assert_eq!(
            (p, o.synchronous),
            (PathBuf::from("x.db"), Synchronous::Normal)
        );
        let (p, o) = parse_url("x.db?synchronous=NORMAL").unwrap();
        assert_eq!(
            (p, o.synchronous),
            (PathBuf::from("x.db"), Synchronous::Normal)
        );
        let (_, o) = parse_url("file:x.db?max_size=1000000000&reserve=1048576").unwrap();
        assert_eq!((o.max_size, o.reserve), (Some(1_000_000_000), 1_048_576));
    }

    #[test]
    fn what_cannot_be_read_is_refused() {
        for bad in [
            "",
            "file:",
            "?synchronous=full",
            "file://elsewhere/tmp/x.db",
            "x.db?mode=ro",
            "file:x.db?synchronus=normal",
            "file:%ff.db",
            "x.db?max_size=1GB",
            "x.db?reserve=-1",
            "x.db?synchronous",
        ] {
            assert!(
                matches!(parse_url(bad), Err(Error::InvalidOption(_))),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn a_path_with_uri_characters_is_escaped_for_sqlite() {
        assert_eq!(
            immutable_uri(Path::new("/tmp/a b?#%.db")).unwrap(),
            "file:/tmp/a%20b%3F%23%25.db?mode=ro&immutable=1"
        );
    }
}
