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

/// Checks the queues as 0.1 left them: `upgrade`'s counts per state and its setting
/// (completed jobs kept), `paused` still paused.
pub async fn assert_queues_as_0_1_left_them(store: &dyn taskyard_core::Store) {
    let upgrade = QueueName::new("upgrade").unwrap();
    let s = store.stats(&upgrade).await.unwrap();
    let counts = (s.ready, s.scheduled, s.running, s.completed, s.dead);
    assert_eq!(
        counts,
        (5, 2, 2, 1, 2),
        "ready, scheduled, running, completed, dead"
    );
    assert_eq!(store.config(&upgrade).await.unwrap().completed_max, 100);
    let paused = QueueName::new("paused").unwrap();
    assert!(store.stats(&paused).await.unwrap().paused);
}

/// The queues besides `upgrade` carry on: `other`'s two jobs run, in order; `paused`
/// yields nothing until resumed, then its job.
pub async fn other_queues_carry_on(store: &dyn taskyard_core::Store, jobs: &[Job]) {
    use taskyard_core::LeaseToken;
    let lease = std::time::Duration::from_secs(60);
    let claim = async |q: &QueueName| {
        let token = LeaseToken::mint("other").unwrap();
        store.claim(q, 10, lease, &token).await.unwrap().jobs
    };
    let payloads = |claimed: &[taskyard_core::ClaimedJob]| -> Vec<String> {
        claimed
            .iter()
            .map(|c| String::from_utf8_lossy(&c.payload).into_owned())
            .collect()
    };
    let role = |r: &str| by_role(jobs, r).payload.clone();
    let other = claim(&QueueName::new("other").unwrap()).await;
    assert_eq!(payloads(&other), [role("other-1"), role("other-2")]);
    let paused = QueueName::new("paused").unwrap();
    assert!(
        claim(&paused).await.is_empty(),
        "a paused queue yields nothing"
    );
    store.set_paused(&paused, false).await.unwrap();
    assert_eq!(payloads(&claim(&paused).await), [role("paused-ready")]);
}

/// The end state of a fixture job: its state, attempts and error messages.
pub type End<'a> = (&'a str, JobState, u32, &'a [&'a str]);

/// Checks each role's end state, attempts, error history and payload.
pub async fn assert_ends(store: &dyn taskyard_core::Store, jobs: &[Job], ends: &[End<'_>]) {
    for (role, state, attempt, errors) in ends {
        let job = by_role(jobs, role);
        let info = store
            .job(&job.queue, &job.id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{role} is gone"));
        let messages: Vec<&str> = info.errors.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            (info.state, info.attempt, messages.as_slice()),
            (*state, *attempt, *errors),
            "{role}"
        );
        assert_eq!(info.payload, job.payload, "{role}");
    }
}

/// Once the leases of 0.1's running jobs have run out and maintenance returned them: claims
/// queue `upgrade`'s ready jobs (0.1's in 0.1's order, then the returned ones) and
/// completes them, redrives the dead ones (fresh attempts, history kept) and completes
/// them, then checks every job that is not scheduled ended completed, with its attempts,
/// history and payload.
pub async fn carry_on(store: std::sync::Arc<dyn taskyard_core::Store>, jobs: &[Job]) {
    use taskyard_core::{Client, DeadFilter, Lease, LeaseToken, Outcome};
    let upgrade = QueueName::new("upgrade").unwrap();
    let lease = std::time::Duration::from_secs(60);
    let complete = async |leases: Vec<Lease>| {
        let outcomes: Vec<_> = leases
            .into_iter()
            .map(|l| (l, Outcome::Completed))
            .collect();
        let held = store.finish(&outcomes).await.unwrap();
        assert!(held.iter().all(|h| *h), "{held:?}");
    };
    let token = LeaseToken::mint("after").unwrap();
    let claim = store.claim(&upgrade, 100, lease, &token).await.unwrap();
    let roles: Vec<&str> = claim
        .jobs
        .iter()
        .map(|c| {
            let job = jobs.iter().find(|j| j.id == c.lease.id).unwrap();
            assert_eq!(&*c.payload, job.payload.as_bytes(), "{}", job.role);
            job.role.as_str()
        })
        .collect();
    let in_order = [
        "ready-retried",
        "ready-mail-1",
        "ready-mail-2",
        "ready-mail-3",
        "ready-backoff",
    ];
    assert_eq!(roles[..5], in_order);
    assert!(
        claim.jobs.iter().all(|c| c.timeout.is_none()),
        "0.1's jobs have no timeout of their own: the worker's for their kind applies"
    );
    let mut returned = roles[5..].to_vec();
    returned.sort();
    assert_eq!(returned, ["running-fresh", "running-retried"]);
    let backoff = claim
        .jobs
        .iter()
        .find(|c| &*c.kind == "ready.backoff")
        .unwrap();
    assert_eq!(
        backoff.backoff.map(|b| (b.base_ms, b.cap_ms)),
        Some((10, 90))
    );
    complete(claim.jobs.into_iter().map(|c| c.lease).collect()).await;

    let client = Client::new(store.clone());
    assert_eq!(client.redrive(&upgrade, &DeadFilter::All).await.unwrap(), 2);
    let token = LeaseToken::mint("redriven").unwrap();
    let claim = store.claim(&upgrade, 100, lease, &token).await.unwrap();
    assert_eq!(claim.jobs.len(), 2);
    assert!(claim.jobs.iter().all(|c| c.attempt == 1));
    complete(claim.jobs.into_iter().map(|c| c.lease).collect()).await;

    let expired = taskyard_core::store::support::LEASE_EXPIRED;
    let done = JobState::Completed;
    assert_ends(
        store.as_ref(),
        jobs,
        &[
            ("dead-poison", done, 1, &["poison pill"]),
            ("dead-spent", done, 1, &["boom 1", "boom 2"]),
            ("completed", done, 1, &[]),
            ("running-retried", done, 3, &["first try", expired]),
            ("running-fresh", done, 2, &[expired]),
            ("ready-retried", done, 2, &["flaky 1"]),
            ("ready-mail-1", done, 1, &[]),
            ("ready-mail-2", done, 1, &[]),
            ("ready-mail-3", done, 1, &[]),
            ("ready-backoff", done, 1, &[]),
        ],
    )
    .await;
}
