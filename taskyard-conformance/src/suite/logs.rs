//! What the worker logs, kept in memory so a test can check that a warning or an error
//! was said (a blocked handler, leases treated as lost). One subscriber for the whole
//! test process, installed by the first test that asks; tests tell their lines apart by
//! their own queue name and job ids.

use std::io::Write;
use std::sync::{Mutex, Once};

static LINES: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Memory;

impl Write for Memory {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LINES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Starts keeping what is logged at warning level and above (once per process).
pub(crate) fn capture() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let installed = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(|| Memory)
            .try_init();
        assert!(
            installed.is_ok(),
            "another tracing subscriber is installed: the log checks cannot see the worker"
        );
    });
}

/// The logged lines that contain every one of `parts`.
pub(crate) fn lines_with(parts: &[&str]) -> Vec<String> {
    let all = LINES.lock().unwrap_or_else(|e| e.into_inner());
    String::from_utf8_lossy(&all)
        .lines()
        .filter(|line| parts.iter().all(|p| line.contains(p)))
        .map(str::to_string)
        .collect()
}
