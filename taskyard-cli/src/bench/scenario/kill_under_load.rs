//! `--scenario kill-under-load`: worker processes SIGKILLed and restarted under load,
//! and the books that explain every run that came back.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use taskyard::{Cursor, JobState};
use taskyard_cli::process::records;

use super::Outcome;
use super::books::books;
use super::context::{Ctx, ms};

/// Three worker processes, one killed with SIGKILL at random points every few seconds
/// and restarted: the others never stop completing, the books balance, and the only runs
/// that come back are those the killed worker held at its kill.
pub(super) async fn run(c: &Ctx) -> Outcome {
    // Three workers of concurrency 20 run at most 3,000 of these jobs a second: the quick
    // run lasts at least 3 s, time for four kills.
    let n = c.size.pick(30_000, 9_000);
    let every = c
        .size
        .pick(Duration::from_secs(2), Duration::from_millis(500));
    // 20 ms jobs that record themselves as they start: a worker's running jobs are
    // recorded and not yet reported, so a kill leaves runs that must come back.
    let ids = c
        .enqueue(n, "record", r#"{"after_ms":20}"#, &c.opts())
        .await?;
    let args = ["--concurrency", "20", "--lease", "2s"];
    let names = ["w0", "w1", "w2"];
    let mut workers = c.spawn_all(&names, &args)?;
    // Each worker process is a generation with a record file of its own: w0, w0-1, …
    let mut current: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut all_names = current.clone();
    let mut kills: Vec<Kill> = Vec::new();
    let mut next_kill = Instant::now() + every;
    let mut last_total = 0;
    let mut last_change = Instant::now();
    let mut longest_gap = Duration::ZERO;
    loop {
        let refs: Vec<&str> = all_names.iter().map(|s| s.as_str()).collect();
        let runs = records(&c.dir, &refs);
        let done: HashSet<&str> = runs.iter().map(|(id, _)| id.as_str()).collect();
        // A gap counts while jobs wait: at the end, when only the jobs of a killed
        // worker are left (back after their lease), idle survivors are not stopped.
        if runs.len() != last_total {
            last_total = runs.len();
            last_change = Instant::now();
        } else if c.stats().await?.ready > 0 {
            longest_gap = longest_gap.max(last_change.elapsed());
        }
        if done.len() >= n {
            break;
        }
        if Instant::now() >= next_kill {
            let victim = kills.len() % workers.len();
            workers[victim].kill9()?;
            // Right after the kill, what the store still has running: the killed
            // worker's leases stay until they expire (2 s), so every run it held is here,
            // with the attempt it ran under.
            let running = c
                .store
                .shared()
                .list(&c.queue, JobState::Running, &Cursor::start(), u64::MAX >> 1)
                .await?
                .jobs
                .into_iter()
                .map(|j| (j.id.to_string(), j.attempt))
                .collect();
            kills.push(Kill {
                worker: current[victim].clone(),
                running,
            });
            let name = format!("{}-{}", names[victim], kills.len());
            workers[victim] = c.spawn(&name, &args)?;
            current[victim] = name.clone();
            all_names.push(name);
            // At random points: the next kill lands anywhere in [every/2, 3*every/2].
            next_kill = Instant::now() + every / 2 + every.mul_f64(rand::random::<f64>());
        }
        if last_change.elapsed() > Duration::from_secs(60) {
            return Err("no completion for 60 s".into());
        }
        // Reading the books costs CPU the workers need: look every 50 ms.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.drained(Duration::from_secs(30)).await?;
    for w in &mut workers {
        w.stop()?;
    }
    let refs: Vec<&str> = all_names.iter().map(|s| s.as_str()).collect();
    let (lost, unexpected, duplicated) = books(&ids, &records(&c.dir, &refs));
    let reruns = reruns(&c.dir, &all_names, &kills);
    let dead = c.stats().await?.dead;
    let within_bound = reruns.per_kill.iter().all(|k| k.ran_again <= k.bound);
    let ok = lost == 0
        && unexpected == 0
        && dead == 0
        && reruns.unexplained.is_empty()
        && within_bound
        && reruns.jobs == duplicated
        && longest_gap < Duration::from_secs(1);
    let bound: usize = reruns.per_kill.iter().map(|k| k.bound).sum();
    let after_kill: usize = reruns.per_kill.iter().map(|k| k.ran_again).sum();
    Ok((
        ok,
        "with a worker SIGKILLed every few seconds: lost 0, unexpected 0, nothing dead; a run \
         comes back only if the killed worker held it at its kill (or the store refused its \
         outcome); completions never stop for 1 s",
        json!({
            "jobs": n, "kills": kills.len(), "lost": lost, "unexpected": unexpected,
            "duplicated": duplicated, "dead": dead, "longest_gap_ms": ms(longest_gap),
            "reruns_after_kill": after_kill, "reruns_bound": bound,
            "reruns_within_bound": within_bound,
            "reruns_after_refusal": reruns.after_refusal,
            "rerun_jobs": reruns.jobs,
            "unexplained_reruns": reruns.unexplained.len(),
            "unexplained_examples": reruns.unexplained.iter().take(10).collect::<Vec<_>>(),
            "per_kill": reruns.per_kill.iter().map(|k| json!({
                "worker": k.worker, "running_at_kill": k.running_at_kill,
                "held_recorded_runs": k.bound, "ran_again": k.ran_again,
            })).collect::<Vec<_>>(),
        }),
    ))
}

/// One SIGKILL: the worker process killed, and the store's running jobs (id, attempt)
/// read right after it.
struct Kill {
    worker: String,
    running: HashSet<(String, u32)>,
}

/// The figures of one kill.
struct KillFigures {
    worker: String,
    running_at_kill: usize,
    /// The killed worker's recorded runs still running under its claim after the kill:
    /// recorded, their completion not recorded. The most of its runs that may come back.
    bound: usize,
    /// Its recorded runs that ran again.
    ran_again: usize,
}

/// Which runs came back, and why.
struct Reruns {
    per_kill: Vec<KillFigures>,
    /// Runs that came back whose outcome the store had refused (the worker's lease
    /// expired first: it logs "outcome rejected").
    after_refusal: usize,
    /// Runs that came back with neither reason: a recorded completion came back.
    unexplained: Vec<String>,
    /// Jobs that ran more than once.
    jobs: usize,
}

/// Checks every run that was followed by another run of the same job (a later attempt):
/// its worker was SIGKILLed and the job was still running under that attempt right after
/// the kill, or the store refused its outcome. Anything else is a recorded completion that
/// came back, or two runs of one claim.
fn reruns(dir: &Path, workers: &[String], kills: &[Kill]) -> Reruns {
    let mut by_job: HashMap<String, Vec<(u32, &str)>> = HashMap::new();
    let mut recorded: HashMap<&str, Vec<(String, u32)>> = HashMap::new();
    for w in workers {
        let runs = records(dir, &[w.as_str()]);
        for (id, attempt) in &runs {
            by_job
                .entry(id.clone())
                .or_default()
                .push((*attempt, w.as_str()));
        }
        recorded.insert(w.as_str(), runs);
    }
    let refused = |w: &str, id: &str| {
        std::fs::read_to_string(dir.join(format!("{w}.stderr")))
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("outcome rejected") && l.contains(id))
    };
    let killed: HashMap<&str, &Kill> = kills.iter().map(|k| (k.worker.as_str(), k)).collect();
    let mut ran_again: HashMap<&str, usize> = HashMap::new();
    let (mut after_refusal, mut unexplained, mut jobs) = (0, Vec::new(), 0);
    for (id, runs) in &mut by_job {
        if runs.len() < 2 {
            continue;
        }
        jobs += 1;
        runs.sort_unstable();
        let last = runs.len() - 1;
        for (i, &(attempt, w)) in runs.iter().enumerate().take(last) {
            let later_attempt = runs[i + 1].0 > attempt;
            let held_at_kill = killed
                .get(w)
                .is_some_and(|k| k.running.contains(&(id.clone(), attempt)));
            if later_attempt && held_at_kill {
                *ran_again.entry(w).or_default() += 1;
            } else if later_attempt && refused(w, id) {
                after_refusal += 1;
            } else {
                unexplained.push(format!("{id} attempt {attempt} by {w}"));
            }
        }
    }
    let per_kill = kills
        .iter()
        .map(|k| KillFigures {
            worker: k.worker.clone(),
            running_at_kill: k.running.len(),
            bound: recorded.get(k.worker.as_str()).map_or(0, |runs| {
                runs.iter().filter(|r| k.running.contains(*r)).count()
            }),
            ran_again: ran_again.get(k.worker.as_str()).copied().unwrap_or(0),
        })
        .collect();
    Reruns {
        per_kill,
        after_refusal,
        unexplained,
        jobs,
    }
}
