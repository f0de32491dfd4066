//! Stores written by release 0.1 (`fixtures/0.1/` at the repository's root), and what
//! 0.1 said was in them (`manifest.json`), for the tests that this release opens them.

use std::path::PathBuf;

use taskyard_core::{JobId, JobState, QueueName};

/// A file of `fixtures/0.1/`.
pub fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/0.1")
        .join(name)
}

/// One job of a fixture as release 0.1 reported it right after writing it.
#[derive(Debug, Clone)]
pub struct Job {
    /// What the job is for (`dead-poison`, `ready-mail-1`, ...); its payload names it.
    pub role: String,
    /// Its queue.
    pub queue: QueueName,
    /// Its id in that store.
    pub id: JobId,
    /// Its kind.
    pub kind: String,
    /// Its payload, as text.
    pub payload: String,
    /// Its state.
    pub state: JobState,
    /// Attempts made (a running job's includes the current one).
    pub attempt: u32,
    /// Attempts in all.
    pub max_attempts: u32,
    /// When it was enqueued (store time, Unix ms).
    pub enqueued_at_ms: u64,
    /// Due time, lease end or time it finished, by state; none for ready jobs.
    pub at_ms: Option<u64>,
    /// Its error history: attempt and message per failed attempt.
    pub errors: Vec<(u32, String)>,
}

/// The fixture's whole manifest.
pub fn manifest() -> serde_json::Value {
    let text = std::fs::read_to_string(path("manifest.json")).expect("read manifest.json");
    serde_json::from_str(&text).expect("manifest.json is JSON")
}

/// Every job of one store's fixture (`"redis"` or `"sqlite"`).
pub fn jobs(store: &str) -> Vec<Job> {
    let m = manifest();
    let list = m["stores"][store]["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("manifest has no jobs for {store}"));
    let num = |v: &serde_json::Value, what: &str| {
        v.as_u64()
            .unwrap_or_else(|| panic!("manifest: {what} is not a number: {v}"))
    };
    list.iter()
        .map(|j| Job {
            role: j["role"].as_str().expect("role").to_string(),
            queue: QueueName::new(j["queue"].as_str().expect("queue")).expect("queue name"),
            id: JobId::new(j["id"].as_str().expect("id")),
            kind: j["kind"].as_str().expect("kind").to_string(),
            payload: j["payload"].as_str().expect("payload").to_string(),
            state: j["state"]
                .as_str()
                .expect("state")
                .parse()
                .expect("a state"),
            attempt: num(&j["attempt"], "attempt") as u32,
            max_attempts: num(&j["max_attempts"], "max_attempts") as u32,
            enqueued_at_ms: num(&j["enqueued_at_ms"], "enqueued_at_ms"),
            at_ms: j["at_ms"].as_u64(),
            errors: j["errors"]
                .as_array()
                .expect("errors")
                .iter()
                .map(|e| {
                    (
                        num(&e["attempt"], "attempt") as u32,
                        e["message"].as_str().expect("message").to_string(),
                    )
                })
                .collect(),
        })
        .collect()
}

/// The job of a role.
pub fn by_role<'a>(jobs: &'a [Job], role: &str) -> &'a Job {
    jobs.iter()
        .find(|j| j.role == role)
        .unwrap_or_else(|| panic!("no fixture job {role}"))
}

/// Checks that the store reports every fixture job as 0.1 did: state, attempts, kind,
/// payload, times and error history.
pub async fn assert_as_0_1_left_them(store: &dyn taskyard_core::Store, jobs: &[Job]) {
    for job in jobs {
        let info = store
            .job(&job.queue, &job.id)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", job.role))
            .unwrap_or_else(|| panic!("{} ({}/{}) is gone", job.role, job.queue, job.id));
        let role = &job.role;
        assert_eq!(info.state, job.state, "{role}: state");
        assert_eq!(info.attempt, job.attempt, "{role}: attempt");
        assert_eq!(info.max_attempts, job.max_attempts, "{role}: max attempts");
        assert_eq!(info.kind, job.kind, "{role}: kind");
        assert_eq!(info.payload, job.payload, "{role}: payload");
        assert_eq!(
            info.enqueued_at_ms, job.enqueued_at_ms,
            "{role}: enqueued at"
        );
        assert_eq!(info.at_ms, job.at_ms, "{role}: at");
        let errors: Vec<(u32, String)> = info
            .errors
            .iter()
            .map(|e| (e.attempt, e.message.clone()))
            .collect();
        assert_eq!(errors, job.errors, "{role}: error history");
    }
}
