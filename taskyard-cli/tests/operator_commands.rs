//! Priorities, unique keys and the operator commands on jobs and queues, through the
//! real binary on both stores: `enqueue --priority/--unique`, `enqueue --jsonl`,
//! `jobs run-now`, `jobs delete`, `queue delete` — and their bad input, which fails with
//! one clear line, a non-zero exit, and nothing changed.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;
use taskyard_conformance::{RedisServer, TempDir};

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn taskyard(store: &str, args: &[&str]) -> Run {
    taskyard_with_input(store, args, "")
}

fn taskyard_with_input(store: &str, args: &[&str], input: &str) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_taskyard"))
        .args(args)
        .env("TASKYARD_STORE", store)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run taskyard");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ok(store: &str, args: &[&str]) -> String {
    let run = taskyard(store, args);
    assert!(run.ok, "{args:?}: {}", run.stderr);
    run.stdout
}

/// (ready, scheduled, running, completed, dead) of a queue.
fn counts(store: &str, queue: &str) -> (u64, u64, u64, u64, u64) {
    let v: Value =
        serde_json::from_str(ok(store, &["stats", "--json", "--queue", queue]).trim()).unwrap();
    let n = |k: &str| v[0][k].as_u64().unwrap();
    (
        n("ready"),
        n("scheduled"),
        n("running"),
        n("completed"),
        n("dead"),
    )
}

fn show(store: &str, queue: &str, id: &str) -> Value {
    serde_json::from_str(&ok(store, &["jobs", "show", id, "--queue", queue])).unwrap()
}

/// Runs `check` on a fresh file store and a fresh Redis.
fn both(check: impl Fn(&str)) {
    let dir = TempDir::new();
    let server = RedisServer::start();
    check(&dir.path().join("t.db").display().to_string());
    check(&server.url());
}

fn refused(store: &str, args: &[&str], says: &str) {
    let run = taskyard(store, args);
    assert!(!run.ok, "{args:?} should fail: {}", run.stdout);
    assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
}

#[test]
fn enqueue_takes_a_priority_and_a_unique_key_and_refuses_bad_ones() {
    both(|store| {
        let q = ["--queue", "opts"];
        let low = ok(
            store,
            &[&["enqueue", "k", r#"{"n":1}"#, "--priority", "5"][..], &q].concat(),
        );
        let high = ok(
            store,
            &[&["enqueue", "k", r#"{"n":2}"#, "--priority", "95"][..], &q].concat(),
        );
        assert_eq!(show(store, "opts", low.trim())["priority"], 5);
        assert_eq!(show(store, "opts", high.trim())["priority"], 95);

        let first = ok(
            store,
            &[&["enqueue", "k", "{}", "--unique", "user:7"][..], &q].concat(),
        );
        let again = ok(
            store,
            &[&["enqueue", "k", "{}", "--unique", "user:7"][..], &q].concat(),
        );
        assert_eq!(again.trim(), format!("{}\tduplicate", first.trim()));
        let job = show(store, "opts", first.trim());
        assert_eq!(job["unique"]["key"], "user:7");
        assert_eq!(job["unique"]["mode"], "finished");
        let period = ok(
            store,
            &[
                &[
                    "enqueue",
                    "k",
                    "{}",
                    "--unique",
                    "p",
                    "--unique-mode",
                    "period",
                    "--unique-period",
                    "1h",
                ][..],
                &q,
            ]
            .concat(),
        );
        assert_eq!(
            show(store, "opts", period.trim())["unique"]["period_ms"],
            3_600_000
        );
        let before = counts(store, "opts");
        assert_eq!(before.0, 4);

        for (args, says) in [
            (vec!["--priority", "101"], "priority 101 is out of range"),
            (vec!["--priority", "-1"], "priority -1 is out of range"),
            (vec!["--unique", ""], "unique key is empty"),
            (
                vec!["--unique", &"x".repeat(300)],
                "over the limit of 256 bytes",
            ),
            (
                vec!["--unique", "a", "--unique-mode", "forever"],
                "unknown unique mode",
            ),
            (
                vec!["--unique", "a", "--unique-mode", "period"],
                "needs a period",
            ),
            (
                vec![
                    "--unique",
                    "a",
                    "--unique-mode",
                    "period",
                    "--unique-period",
                    "0s",
                ],
                "below 1 ms",
            ),
            (vec!["--unique-mode", "queued"], "--unique"),
        ] {
            refused(
                store,
                &[&["enqueue", "k", "{}"][..], &q, &args].concat(),
                says,
            );
        }
        assert_eq!(counts(store, "opts"), before, "bad input changed nothing");

        // --jsonl: the same options per line; a duplicate in a batch names the first.
        let lines = [
            r#"{"kind":"k","priority":80,"unique":"j1"}"#,
            r#"{"kind":"k","unique":"j1"}"#,
            r#"{"kind":"k","unique":"j2","unique_mode":"period","unique_period_ms":60000}"#,
        ]
        .join("\n");
        let run = taskyard_with_input(
            store,
            &["enqueue", "--jsonl", "-", "--queue", "jsonl"],
            &lines,
        );
        assert!(run.ok, "{}", run.stderr);
        let out: Vec<&str> = run.stdout.lines().collect();
        assert_eq!(out.len(), 3, "{}", run.stdout);
        assert_eq!(out[1], format!("{}\tduplicate", out[0]));
        assert_eq!(show(store, "jsonl", out[0])["priority"], 80);
        for (line, says) in [
            (
                r#"{"kind":"k","priority":"high"}"#,
                "priority must be a whole number",
            ),
            (r#"{"kind":"k","priority":200}"#, "out of range"),
            (
                r#"{"kind":"k","unique_mode":"queued"}"#,
                "unique_mode needs a unique key",
            ),
            (
                r#"{"kind":"k","unique":"a","unique_mode":"sometimes"}"#,
                "unknown unique mode",
            ),
        ] {
            let run = taskyard_with_input(
                store,
                &["enqueue", "--jsonl", "-", "--queue", "jsonl"],
                line,
            );
            assert!(
                !run.ok && run.stderr.contains(says),
                "{line}: {}",
                run.stderr
            );
        }
        assert_eq!(counts(store, "jsonl").0, 2);
    });
}

#[test]
fn operators_run_scheduled_jobs_now_delete_jobs_and_delete_queues() {
    both(|store| {
        let q = ["--queue", "ops"];
        let later = |kind: &str| {
            ok(
                store,
                &[&["enqueue", kind, "{}", "--delay", "1h"][..], &q].concat(),
            )
            .trim()
            .to_string()
        };
        let (a, b, c) = (later("a"), later("b"), later("b"));
        let ready = ok(store, &[&["enqueue", "a", "{}"][..], &q].concat())
            .trim()
            .to_string();

        // Named jobs that cannot be acted on: refused whole, nothing changed.
        refused(
            store,
            &[&["jobs", "run-now", &a, "404"][..], &q].concat(),
            "job 404: no such job",
        );
        refused(
            store,
            &[&["jobs", "run-now", &ready][..], &q].concat(),
            "already ready",
        );
        refused(
            store,
            &[&["jobs", "run-now"][..], &q].concat(),
            "say which scheduled jobs",
        );
        assert_eq!(counts(store, "ops"), (1, 3, 0, 0, 0));

        assert!(
            ok(store, &[&["jobs", "run-now", &a][..], &q].concat()).contains("made ready 1 jobs")
        );
        assert_eq!(show(store, "ops", &a)["state"], "ready");
        assert!(
            ok(
                store,
                &[&["jobs", "run-now", "--kind", "b"][..], &q].concat()
            )
            .contains("made ready 2 jobs")
        );
        assert_eq!(counts(store, "ops"), (4, 0, 0, 0, 0));

        refused(
            store,
            &[&["jobs", "delete", &b, "404"][..], &q].concat(),
            "no such job",
        );
        assert!(ok(store, &[&["jobs", "delete", &b][..], &q].concat()).contains("deleted 1 jobs"));
        refused(
            store,
            &[&["jobs", "delete", &b][..], &q].concat(),
            &format!("job {b}: no such job"),
        );
        assert!(
            ok(
                store,
                &[&["jobs", "delete", "--kind", "a"][..], &q].concat()
            )
            .contains("deleted 2 jobs")
        );
        assert_eq!(counts(store, "ops"), (1, 0, 0, 0, 0));
        assert_eq!(show(store, "ops", &c)["state"], "ready");

        // A queue is deleted only with --yes; without, it says what it holds.
        refused(store, &["queue", "delete", "ops"], "holds 1 jobs");
        assert_eq!(counts(store, "ops").0, 1);
        assert!(
            ok(store, &["queue", "delete", "ops", "--yes"])
                .contains("deleted queue ops and its 1 jobs")
        );
        assert_eq!(counts(store, "ops"), (0, 0, 0, 0, 0));
        assert!(!ok(store, &["stats"]).contains("ops"));
    });
}

/// `jobs cancel` ends ready and scheduled jobs `cancelled` and refuses a finished or
/// unknown job naming it, changing nothing; `jobs wait` prints what became of a job,
/// fails unless it completed, and gives up at its timeout; `queue config --result-ttl`
/// sets the result TTL.
#[test]
fn operators_cancel_jobs_and_wait_for_them() {
    both(|store| {
        let q = "cq";
        let enq = |args: &[&str]| {
            let mut all = vec!["enqueue", "ping", "{}", "--queue", q];
            all.extend_from_slice(args);
            ok(store, &all).trim().to_string()
        };
        let ready = enq(&[]);
        let later = enq(&["--delay", "1h"]);
        let other = enq(&["--delay", "1h"]);

        // A wait that runs out says where the job is, and changes nothing.
        let run = taskyard(store, &["jobs", "wait", &later, "--timeout", "200ms"]);
        assert!(!run.ok);
        assert!(run.stderr.contains("has not finished"), "{}", run.stderr);
        assert!(run.stderr.contains("scheduled"), "{}", run.stderr);
        refused(
            store,
            &["jobs", "wait", &later, "--timeout=-1s"],
            "invalid duration",
        );
        refused(store, &["jobs", "wait", "404404"], "no job 404404");

        let out = ok(store, &["jobs", "cancel", &ready, &later, "--queue", q]);
        assert!(out.contains("cancelled 2 jobs"), "{out}");
        assert_eq!(show(store, q, &ready)["state"], "cancelled");
        assert_eq!(show(store, q, &later)["state"], "cancelled");
        let v: Value =
            serde_json::from_str(ok(store, &["stats", "--json", "--queue", q]).trim()).unwrap();
        assert_eq!(v[0]["cancelled"], 2);
        assert_eq!(v[0]["scheduled"], 1);

        // A finished or unknown job fails the whole command; the other job stays.
        let run = taskyard(
            store,
            &["jobs", "cancel", &other, &ready, "404404", "--queue", q],
        );
        assert!(!run.ok);
        assert!(
            run.stderr.contains("already finished (cancelled)"),
            "{}",
            run.stderr
        );
        assert!(run.stderr.contains("no such job"), "{}", run.stderr);
        assert_eq!(show(store, q, &other)["state"], "scheduled");

        // Waiting for a cancelled job: it says so, and fails.
        let run = taskyard(store, &["jobs", "wait", &ready]);
        assert!(!run.ok);
        assert_eq!(run.stdout.trim(), r#"{"state":"cancelled"}"#);

        let out = ok(store, &["queue", "config", q, "--result-ttl", "1h"]);
        let config: Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(config["result_ttl_ms"], 3_600_000);
    });
}

/// `taskyard cron`: add declares a schedule (again: unchanged; another definition of the
/// same version: refused, nothing changed; a higher version: replaced); list shows it
/// with its next run; pause, resume, run (a job now, apart from the ticks) and remove act
/// on it; bad input and unknown names are refused in one line.
#[test]
fn operators_list_pause_resume_run_and_remove_schedules_from_the_shell() {
    both(|store| {
        let q = "crq";
        let add = |expr: &str, payload: &str, extra: &[&str]| {
            let mut all = vec!["cron", "add", "nightly", expr, "report", payload, "-q", q];
            all.extend_from_slice(extra);
            taskyard(store, &all)
        };
        let tz = ["--tz", "Europe/Berlin"];
        assert_eq!(add("0 30 2 * * *", "{}", &tz).stdout.trim(), "created");
        assert_eq!(add("0 30 2 * * *", "{}", &tz).stdout.trim(), "unchanged");
        let run = add("0 30 3 * * *", "{}", &tz);
        assert!(!run.ok);
        assert!(
            run.stderr.contains("another definition of version 1"),
            "{}",
            run.stderr
        );
        let listed = ok(store, &["cron", "list", "--json"]);
        let v: Value = serde_json::from_str(listed.trim()).unwrap();
        assert_eq!(
            (v["cron"].as_str(), v["tz"].as_str()),
            (Some("0 30 2 * * *"), Some("Europe/Berlin"))
        );
        assert!(v["next_ms"].as_u64().is_some() && v["last_ms"].is_null());
        assert_eq!(v["paused"], false);
        let more = ["--tz", "Europe/Berlin", "--version", "2"];
        assert_eq!(add("0 30 3 * * *", "{}", &more).stdout.trim(), "replaced");
        let table = ok(store, &["cron", "list"]);
        assert!(
            table.contains("nightly") && table.contains("0 30 3 * * *") && table.contains("active"),
            "{table}"
        );

        ok(store, &["cron", "pause", "nightly", "-q", q]);
        assert!(ok(store, &["cron", "list", "-q", q]).contains("paused"));
        let id = ok(store, &["cron", "run", "nightly", "-q", q])
            .trim()
            .to_string();
        assert_eq!(show(store, q, &id)["kind"], "report");
        ok(store, &["cron", "resume", "nightly", "-q", q]);
        assert!(ok(store, &["cron", "list", "-q", q]).contains("active"));
        ok(store, &["cron", "remove", "nightly", "-q", q]);
        assert_eq!(ok(store, &["cron", "list", "--json"]).trim(), "");

        for (args, says) in [
            (
                vec!["cron", "pause", "nightly", "-q", q],
                "no schedule \"nightly\"",
            ),
            (
                vec!["cron", "add", "x", "61 * * * *", "k"],
                "cron expression",
            ),
            (
                vec![
                    "cron",
                    "add",
                    "x",
                    "* * * * *",
                    "k",
                    "{}",
                    "--tz",
                    "Mars/Base",
                ],
                "unknown time zone",
            ),
            (
                vec!["cron", "add", "x", "* * * * *", "k", "not json"],
                "not JSON",
            ),
            (
                vec![
                    "cron",
                    "add",
                    "x",
                    "* * * * *",
                    "k",
                    "{}",
                    "--misfire",
                    "never",
                ],
                "misfire policy",
            ),
            (
                vec!["cron", "add", "a b", "* * * * *", "k"],
                "schedule name",
            ),
        ] {
            refused(store, &args, says);
        }
        assert_eq!(
            ok(store, &["cron", "list", "--json"]).trim(),
            "",
            "nothing was added"
        );
    });
}

/// A deploy, as processes: eight `taskyard cron add` processes declare one schedule at
/// once — one stores it, seven find it unchanged; then four declare version 2 and four
/// version 1 at once — one replaces it, no process fails, and version 2 is what stays.
#[test]
fn declaring_one_schedule_from_several_processes_at_once_stores_it_once() {
    both(|store| {
        // The store exists before the race, as it does in a deploy.
        ok(store, &["enqueue", "warm", "{}", "-q", "dq"]);
        let declare_at_once = |versions: &[&str]| {
            let children: Vec<_> = versions
                .iter()
                .map(|v| {
                    Command::new(env!("CARGO_BIN_EXE_taskyard"))
                        .args(["cron", "add", "deploy", "*/5 * * * *", "k", "{}"])
                        .args(["-q", "dq", "--version", v, "--tz", "UTC"])
                        .env("TASKYARD_STORE", store)
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped())
                        .spawn()
                        .expect("run taskyard")
                })
                .collect();
            let mut said: Vec<String> = children
                .into_iter()
                .map(|c| {
                    let out = c.wait_with_output().unwrap();
                    assert!(
                        out.status.success(),
                        "{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    String::from_utf8_lossy(&out.stdout).trim().to_string()
                })
                .collect();
            said.sort();
            said
        };
        let mut want = vec!["unchanged"; 7];
        want.insert(0, "created");
        assert_eq!(declare_at_once(&["1"; 8]), want);
        let said = declare_at_once(&["2", "1", "2", "1", "2", "1", "2", "1"]);
        assert_eq!(
            said.iter().filter(|s| *s == "replaced").count(),
            1,
            "{said:?}"
        );
        let listed = ok(store, &["cron", "list", "--json", "-q", "dq"]);
        let v: Value = serde_json::from_str(listed.trim()).unwrap();
        assert_eq!(v["version"], 2, "{listed}");
    });
}
