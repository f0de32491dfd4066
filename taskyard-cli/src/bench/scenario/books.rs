//! The books of a run: which expected jobs were lost, which ran unexpected, which ran
//! more than once.

use std::collections::{HashMap, HashSet};

use taskyard::JobId;

/// Lost (expected, never run), unexpected (run, never enqueued) and duplicated (run
/// more than once) jobs.
pub(super) fn books(expected: &[JobId], runs: &[(String, u32)]) -> (usize, usize, usize) {
    let expected: HashSet<&str> = expected.iter().map(|id| id.as_str()).collect();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (id, _) in runs {
        *seen.entry(id.as_str()).or_default() += 1;
    }
    let lost = expected.iter().filter(|id| !seen.contains_key(*id)).count();
    let unexpected = seen.keys().filter(|id| !expected.contains(*id)).count();
    let duplicated = seen.values().filter(|n| **n > 1).count();
    (lost, unexpected, duplicated)
}

/// The number after `what ` in a worker's books line ("…; completed 0, failed 0, stale 1").
pub(super) fn count_in(books: &str, what: &str) -> Option<u64> {
    let (_, rest) = books.split_once(&format!(" {what} "))?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}
