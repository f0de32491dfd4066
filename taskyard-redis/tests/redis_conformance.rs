//! The store conformance suite on Redis: each test gets its own `redis-server`.

use taskyard_conformance::{RedisServer, Subject};
use taskyard_redis::RedisStore;

async fn subject() -> Subject {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url()).await.expect("connect");
    Subject::new(store, server)
}

fn main() -> std::process::ExitCode {
    taskyard_conformance::run(subject)
}
