//! `--scenario unique`: producers racing on a few thousand unique keys while worker
//! processes are SIGKILLed, and the spans that show no two jobs of one key overlapped.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::json;
use taskyard::{EnqueueOptions, JobId, NewJob, RetryPolicy, UniqueMode};

use super::Outcome;
use super::context::Ctx;

/// The runs of one job, from the workers' span lines: (attempt, start µs) and
/// (attempt, end µs).
#[derive(Default)]
struct Spans {
    key: String,
    starts: Vec<(u32, u128)>,
    ends: Vec<(u32, u128)>,
}

/// Four producers enqueue jobs keyed (mode `finished`) on a few thousand keys as fast
/// as they can for the run's length, three worker processes run them, one of them is
/// SIGKILLed every 2 s and restarted. Every job the store took runs to completion, and
/// for every key each job's first run starts after the previous job of the key
/// completed: while a key's job is in scope, no second job of that key runs.
pub(super) async fn run(c: &Ctx) -> Outcome {
    let keys = c.size.pick(3000, 500);
    let length = c.size.pick(Duration::from_secs(30), Duration::from_secs(6));
    let every = c.size.pick(Duration::from_secs(2), Duration::from_secs(1));
    let args = ["--concurrency", "20", "--lease", "2s"];
    let names = ["w0", "w1", "w2"];
    let mut workers = c.spawn_all(&names, &args)?;

    let end = Instant::now() + length;
    let producers: Vec<_> = (0..4)
        .map(|_| tokio::spawn(produce(c.client(), c.queue.clone(), keys, end)))
        .collect();
    let (kills, all_names) = c
        .kill_in_turn(&mut workers, &names, &args, every, end)
        .await?;
    // Every answer: (id, key, duplicate).
    let mut answers: Vec<(JobId, String, bool)> = Vec::new();
    for p in producers {
        answers.extend(p.await.map_err(|e| e.to_string())??);
    }
    // Killed workers' jobs come back after their 2 s lease.
    c.drained(Duration::from_secs(60)).await?;
    for w in &mut workers {
        w.stop()?;
    }

    let spans = read_spans(c, &all_names);
    let accepted: HashMap<&str, &str> = answers
        .iter()
        .filter(|(_, _, dup)| !dup)
        .map(|(id, key, _)| (id.as_str(), key.as_str()))
        .collect();
    let duplicates = answers.iter().filter(|(_, _, dup)| *dup).count();
    // A duplicate answers with the id of a job of its own key.
    let wrong_holder = answers
        .iter()
        .filter(|(id, key, dup)| *dup && accepted.get(id.as_str()) != Some(&key.as_str()))
        .count();
    let lost = accepted
        .keys()
        .filter(|id| spans.get(**id).is_none_or(|s| s.ends.is_empty()))
        .count();
    let unexpected = spans
        .keys()
        .filter(|id| !accepted.contains_key(id.as_str()))
        .count();
    let reruns = spans.values().filter(|s| s.starts.len() > 1).count();
    // Per key, jobs in the order they first started; each must start after the one
    // before it completed (its last end).
    let mut by_key: BTreeMap<&str, Vec<(u128, u128, &str)>> = BTreeMap::new();
    for (id, s) in &spans {
        let (Some(first), Some(last)) = (
            s.starts.iter().map(|(_, t)| *t).min(),
            s.ends.iter().map(|(_, t)| *t).max(),
        ) else {
            continue;
        };
        by_key.entry(&s.key).or_default().push((first, last, id));
    }
    let mut overlaps = Vec::new();
    for (key, jobs) in &mut by_key {
        jobs.sort_unstable();
        for pair in jobs.windows(2) {
            let ((_, a_end, a), (b_start, _, b)) = (pair[0], pair[1]);
            if b_start < a_end {
                overlaps.push(format!(
                    "key {key}: job {b} started {} µs before job {a} completed",
                    a_end - b_start
                ));
            }
        }
    }
    let dead = c.stats().await?.dead;
    let ok = lost == 0
        && unexpected == 0
        && overlaps.is_empty()
        && wrong_holder == 0
        && dead == 0
        && kills >= 2;
    Ok((
        ok,
        "producers racing on unique keys (mode finished) while workers are SIGKILLed: every \
         job taken runs to completion, no second job of a key runs while the first is in \
         scope, every duplicate names its key's holder",
        json!({
            "keys": keys, "seconds": length.as_secs(), "kills": kills,
            "enqueue_calls_jobs": answers.len(), "accepted": accepted.len(),
            "duplicates": duplicates, "wrong_holder": wrong_holder,
            "lost": lost, "unexpected": unexpected, "dead": dead,
            "jobs_run_again_after_a_kill": reruns,
            "keys_with_several_jobs": by_key.values().filter(|j| j.len() > 1).count(),
            "overlaps": overlaps.len(),
            "overlap_examples": overlaps.iter().take(10).collect::<Vec<_>>(),
        }),
    ))
}

/// Enqueues batches of 20 jobs on random keys until `end`; returns every answer.
async fn produce(
    client: taskyard::Client,
    queue: taskyard::QueueName,
    keys: usize,
    end: Instant,
) -> taskyard::Result<Vec<(JobId, String, bool)>> {
    let mut out = Vec::new();
    while Instant::now() < end {
        let picked: Vec<String> = (0..20)
            .map(|_| format!("k{}", rand::random_range(0..keys)))
            .collect();
        let batch = picked
            .iter()
            .map(|key| {
                let payload = json!({"key": key, "ms": 20}).to_string().into_bytes();
                let opts = EnqueueOptions::default().unique(key.clone(), UniqueMode::Finished);
                NewJob::new("span", payload, &opts, RetryPolicy::default())
            })
            .collect::<taskyard::Result<Vec<_>>>()?;
        let done = client.enqueue_raw(&queue, batch).await?;
        out.extend(
            done.into_iter()
                .zip(picked)
                .map(|(e, key)| (e.id, key, e.duplicate)),
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(out)
}

/// The span lines of every worker generation, by job id.
fn read_spans(c: &Ctx, names: &[String]) -> HashMap<String, Spans> {
    let mut spans: HashMap<String, Spans> = HashMap::new();
    for line in c.span_lines(names) {
        let s = spans.entry(line.id).or_default();
        s.key = line.key;
        match line.what.as_str() {
            "start" => s.starts.push((line.attempt, line.us)),
            "end" => s.ends.push((line.attempt, line.us)),
            _ => {}
        }
    }
    spans
}
