//! The store conformance suite on the embedded store: each test gets its own file.

use taskyard_conformance::{Subject, TempDir};
use taskyard_sqlite::SqliteStore;

async fn subject() -> Subject {
    let dir = TempDir::new();
    let store = SqliteStore::open(dir.path().join("taskyard.db"))
        .await
        .expect("open");
    Subject::new(store, dir)
}

fn main() -> std::process::ExitCode {
    taskyard_conformance::run(subject)
}
