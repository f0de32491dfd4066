//! The scenarios of `taskyard bench --scenario` that prove a semantic (not a speed), run
//! short on both stores with real worker processes: jobs longer than their lease, a
//! poison job among healthy ones, workers SIGKILLed under load, a zombie worker, a job
//! that kills its process, connections cut mid-batch. Speed targets (concurrency,
//! backlog, add-worker) are checked by the benchmark, not here.

use std::process::Command;

use serde_json::Value;
use taskyard_conformance::{RedisServer, TempDir};

/// Runs one scenario; returns its figures (whatever its verdict: the test says what
/// must hold).
fn scenario(store: &str, name: &str) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_taskyard"))
        .args([
            "bench",
            "--scenario",
            name,
            "--quick",
            "--json",
            "--store",
            store,
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_else(|| {
        panic!(
            "{name} on {store} printed nothing: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let verdict: Value = serde_json::from_str(line).unwrap();
    assert_eq!(verdict["scenario"], name);
    verdict
}

struct Stores {
    _dir: TempDir,
    _server: RedisServer,
    file: String,
    redis: String,
}

fn stores() -> Stores {
    let dir = TempDir::new();
    let server = RedisServer::start();
    Stores {
        file: dir.path().join("taskyard.db").display().to_string(),
        redis: server.url(),
        _dir: dir,
        _server: server,
    }
}

fn both(check: impl Fn(&str)) {
    let s = stores();
    check(&s.file);
    check(&s.redis);
}

#[test]
fn long_jobs_complete_once_under_heartbeats() {
    both(|store| {
        let v = scenario(store, "long-jobs");
        let f = &v["figures"];
        assert_eq!(v["ok"], true, "{v}");
        // Numbers, not two missing fields.
        let jobs = f["jobs"].as_u64().expect("jobs");
        assert!(jobs > 0, "{v}");
        assert_eq!(f["completed"].as_u64(), Some(jobs), "{v}");
        assert_eq!(f["redelivered"], 0, "{v}");
        assert_eq!(f["stale_outcomes"], 0, "{v}");
    });
}

#[test]
fn poison_job_dies_while_healthy_jobs_flow() {
    both(|store| {
        let v = scenario(store, "poison");
        let f = &v["figures"];
        assert_eq!(v["ok"], true, "{v}");
        let healthy = f["healthy"].as_u64().expect("healthy");
        assert!(healthy > 0, "{v}");
        assert_eq!(f["healthy_completed"].as_u64(), Some(healthy), "{v}");
        assert_eq!(f["poison_state"], "dead", "{v}");
        assert_eq!(f["poison_attempts"], 5, "{v}");
    });
}

#[test]
fn workers_killed_under_load_lose_nothing() {
    both(|store| {
        let v = scenario(store, "kill-under-load");
        let f = &v["figures"];
        // The books must balance; the longest pause is a timing figure (reported, and
        // checked by the benchmark on an unloaded machine).
        assert!(f["kills"].as_u64().unwrap() >= 3, "{v}");
        assert_eq!(f["lost"], 0, "{v}");
        assert_eq!(f["unexpected"], 0, "{v}");
        assert_eq!(f["dead"], 0, "{v}");
        // Only runs the killed worker held at its kill came back (or runs whose outcome
        // the store refused): no recorded completion came back.
        assert_eq!(f["unexplained_reruns"], 0, "{v}");
        assert_eq!(f["reruns_within_bound"], true, "{v}");
        for k in f["per_kill"].as_array().unwrap() {
            let (ran, bound) = (k["ran_again"].as_u64(), k["held_recorded_runs"].as_u64());
            assert!(ran.unwrap() <= bound.unwrap(), "{k} in {v}");
        }
        // A kill leaves recorded, unreported runs (the jobs record themselves as they
        // start), so some came back, and the books counted those jobs.
        let after_kill = f["reruns_after_kill"].as_u64().unwrap();
        assert!(after_kill >= 1, "{v}");
        assert!(after_kill <= f["reruns_bound"].as_u64().unwrap(), "{v}");
        let duplicated = f["duplicated"].as_u64().unwrap();
        assert!(duplicated >= 1, "{v}");
        assert_eq!(f["rerun_jobs"].as_u64(), Some(duplicated), "{v}");
    });
}

#[test]
fn zombie_worker_cannot_complete_a_reclaimed_job() {
    both(|store| {
        let v = scenario(store, "zombie");
        let f = &v["figures"];
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(f["zombie_outcomes_rejected"], 1, "{v}");
        assert_eq!(f["zombie_runs"][0][1], 1, "{v}");
        // Refused while the other worker held the job: running, attempt 2, before the
        // zombie was resumed and after its refused report was answered.
        for at in ["job_before_resume", "job_after_refusal"] {
            assert_eq!(f[at]["state"], "running", "{at}: {v}");
            assert_eq!(f[at]["attempt"], 2, "{at}: {v}");
        }
        // Then the other completed it: its one run, attempt 2.
        assert_eq!(
            f["other_worker_runs"].as_array().map(Vec::len),
            Some(1),
            "{v}"
        );
        assert_eq!(f["other_worker_runs"][0][1], 2, "{v}");
        assert_eq!(f["other_completed"], 1, "{v}");
        assert_eq!(f["other_stale"], 0, "{v}");
        assert_eq!(f["dead"], 0, "{v}");
    });
}

#[test]
fn job_that_kills_its_worker_ends_dead() {
    both(|store| {
        let v = scenario(store, "poison-process");
        let f = &v["figures"];
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(f["poison_state"], "dead", "{v}");
        assert_eq!(f["worker_deaths"], 3, "{v}");
        assert_eq!(f["lease_expiries"], 3, "{v}");
        assert_eq!(f["lost"], 0, "{v}");
        // Only the poison job is dead.
        assert_eq!(f["dead"], 1, "{v}");
    });
}

#[test]
fn connections_cut_mid_batch_lose_nothing() {
    let s = stores();
    let v = scenario(&s.redis, "connection-cut");
    let f = &v["figures"];
    assert_eq!(v["ok"], true, "{v}");
    assert!(f["cut_rounds"].as_u64().unwrap() >= 3, "{v}");
    // Cuts that broke a store call in flight (a script sent and not answered), not only
    // idle BLPOP waits.
    assert!(f["cuts_in_flight"].as_u64().unwrap() >= 3, "{v}");
    assert_eq!(f["lost"], 0, "{v}");
    assert_eq!(f["unexpected"], 0, "{v}");
    assert_eq!(f["dead"], 0, "{v}");
    // A finish whose answer was cut is answered the same when retried, not refused; a
    // claim whose answer was cut is replayed with its token, so its jobs run on their
    // first attempt instead of coming back after their lease.
    assert_eq!(f["stale_outcomes"], 0, "{v}");
    assert_eq!(f["runs_on_a_later_attempt"], 0, "{v}");
    // On the embedded store there is no connection to cut: a clear refusal.
    let out = Command::new(env!("CARGO_BIN_EXE_taskyard"))
        .args([
            "bench",
            "--scenario",
            "connection-cut",
            "--quick",
            "--store",
            &s.file,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a redis:// store"));
}

#[test]
fn unique_keys_hold_while_producers_race_and_workers_are_killed() {
    both(|store| {
        let v = scenario(store, "unique");
        let f = &v["figures"];
        assert_eq!(v["ok"], true, "{v}");
        assert!(f["kills"].as_u64().unwrap() >= 2, "{v}");
        assert_eq!(f["lost"], 0, "{v}");
        assert_eq!(f["unexpected"], 0, "{v}");
        assert_eq!(f["overlaps"], 0, "{v}");
        assert_eq!(f["wrong_holder"], 0, "{v}");
        // The race was real: producers hit held keys, and keys ran several jobs in turn.
        assert!(f["duplicates"].as_u64().unwrap() > 0, "{v}");
        assert!(f["keys_with_several_jobs"].as_u64().unwrap() > 0, "{v}");
    });
}

#[test]
fn cancelled_jobs_never_complete_or_rerun_while_workers_are_killed() {
    both(|store| {
        let v = scenario(store, "cancel");
        let f = &v["figures"];
        assert_eq!(v["ok"], true, "{v}");
        assert!(f["kills"].as_u64().unwrap() >= 2, "{v}");
        assert_eq!(f["wrong_state"], 0, "{v}");
        assert_eq!(f["started_after_cancel"], 0, "{v}");
        assert_eq!(f["lost"], 0, "{v}");
        // Cancels reached jobs in each state, and running handlers heard of theirs.
        assert!(f["cancelled"].as_u64().unwrap() > 0, "{v}");
        assert!(f["running_cancels_heard"].as_u64().unwrap() > 0, "{v}");
    });
}
