//! The README's quickstart, with unit tests of its handler: `cargo run --example
//! quickstart` runs it (Ctrl-C stops the worker), `cargo test --example quickstart` runs
//! the tests, on a throwaway embedded store (`taskyard::testing`) — no Redis, no sleeps.

use serde::{Deserialize, Serialize};
use taskyard::{Client, Job, JobContext, JobError, Worker};

#[derive(Serialize, Deserialize)]
struct SendEmail {
    to: String,
}

impl Job for SendEmail {
    const KIND: &'static str = "send_email";
}

/// The handler: an address without `@` can never be mailed, so it fails for good.
async fn send_email(job: SendEmail, ctx: JobContext) -> Result<(), JobError> {
    if !job.to.contains('@') {
        return Err(JobError::permanent(format!("not an address: {:?}", job.to)));
    }
    println!("mailing {} (attempt {})", job.to, ctx.attempt());
    Ok(())
}

#[tokio::main]
async fn main() -> taskyard::Result<()> {
    // The embedded store in ./taskyard.db; or "redis://127.0.0.1:6379" (feature `redis`).
    let store = taskyard::AnyStore::open("taskyard.db").await?;
    Client::new(store.clone())
        .enqueue(&SendEmail {
            to: "ada@example.com".into(),
        })
        .await?;

    Worker::builder(store)
        .concurrency(20)
        .handle(send_email)
        .build()?
        .run(taskyard::shutdown_signal())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskyard::testing::TestQueue;
    use taskyard::{Finished, JobState};

    #[tokio::test]
    async fn an_address_is_mailed_on_the_first_attempt() {
        let t = TestQueue::new().await.unwrap();
        let to = "ada@example.com".to_string();
        let id = t.enqueue(&SendEmail { to }).await.unwrap();
        t.run(|w| w.handle(send_email)).await.unwrap();
        let job = t.job(&id).await.unwrap();
        assert_eq!((job.state, job.attempt), (JobState::Completed, 1));
        assert_eq!(
            t.result(&id).await.unwrap(),
            Finished::Completed { result: None }
        );
    }

    #[tokio::test]
    async fn a_malformed_address_goes_dead_without_a_retry() {
        let t = TestQueue::new().await.unwrap();
        let id = t.enqueue(&SendEmail { to: "ada".into() }).await.unwrap();
        t.run(|w| w.handle(send_email)).await.unwrap();
        let job = t.job(&id).await.unwrap();
        assert_eq!((job.state, job.attempt), (JobState::Dead, 1));
        assert_eq!(
            t.result(&id).await.unwrap(),
            Finished::Dead {
                error: r#"not an address: "ada""#.into()
            }
        );
    }
}
