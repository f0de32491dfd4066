//! `rediss://`: a TLS-only `redis-server` whose certificate is signed by a test CA.

use std::time::Duration;

use taskyard_conformance::RedisServer;
use taskyard_core::{EnqueueOptions, LeaseToken, NewJob, QueueName, RetryPolicy, Store};
use taskyard_redis::RedisStore;

#[tokio::test]
async fn rediss_url_works_and_the_server_certificate_is_verified() {
    let server = RedisServer::start_tls();
    let ca = std::fs::read(server.ca_file()).unwrap();
    let store = RedisStore::connect_with_root_ca(&server.url(), &ca)
        .await
        .expect("TLS connect");
    let q = QueueName::new("tls").unwrap();
    let job = NewJob::new(
        "k",
        b"{}".to_vec(),
        &EnqueueOptions::default(),
        RetryPolicy::default(),
    )
    .unwrap();
    store.enqueue(&q, vec![job]).await.unwrap();
    let claim = store
        .claim(
            &q,
            10,
            Duration::from_secs(30),
            &LeaseToken::mint("w").unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(claim.jobs.len(), 1);

    // Without the test CA the certificate is not trusted, and the plain protocol is
    // refused on the TLS port.
    for url in [server.url(), format!("redis://127.0.0.1:{}", server.port())] {
        let refused = match RedisStore::connect(&url).await {
            Ok(s) => s.stats(&q).await.is_err(),
            Err(_) => true,
        };
        assert!(refused, "{url} should not work");
    }
}
