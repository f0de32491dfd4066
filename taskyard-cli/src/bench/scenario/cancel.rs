//! `--scenario cancel`: cancels of ready, scheduled and running jobs at random while
//! worker processes are SIGKILLed, and the record that shows no cancelled job completed
//! or ran again after its cancel returned, how fast a running handler heard of its
//! cancel, and that no other job was lost.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use taskyard::{
    Cursor, EnqueueOptions, JobFilter, JobId, JobState, NewJob, QueueConfig, RetryPolicy,
};

use super::Outcome;
use super::context::Ctx;

/// What became of one cancel the store acted on.
struct Cancelled {
    /// When the cancel call was sent and when it returned, Unix µs.
    sent_us: u128,
    returned_us: u128,
    /// The listing it was picked from: running, scheduled or ready (it may have moved
    /// on before the cancel reached it).
    picked_from: JobState,
}

/// Three worker processes (5 slots each) run 100–500 ms `span` jobs that a producer
/// enqueues (100 a second, a third of them delayed 0.5–3 s, more than the workers keep
/// up with) while a canceller cancels, every 25 ms, a job picked at
/// random among those running, scheduled or just enqueued; one worker is SIGKILLed
/// every 2 s and restarted. Afterwards: every job a cancel acted on is `cancelled` and
/// no run of it started after the cancel returned; every other job completed; the time
/// from a running job's cancel to its handler hearing of it, median and p99.
pub(super) async fn run(c: &Ctx) -> Outcome {
    let length = c.size.pick(Duration::from_secs(30), Duration::from_secs(6));
    let every = c.size.pick(Duration::from_secs(2), Duration::from_secs(1));
    // Every job is kept at its end, so its final state can be read.
    c.client()
        .configure(
            &c.queue,
            &QueueConfig {
                completed_max: 1_000_000,
                dead_max: 1_000_000,
                ..QueueConfig::default()
            },
        )
        .await?;
    // Fewer slots (15) than the producer's pace needs, so a backlog of ready jobs
    // builds up for the canceller to pick from.
    let args = ["--concurrency", "5", "--lease", "2s"];
    let names = ["w0", "w1", "w2"];
    let mut workers = c.spawn_all(&names, &args)?;

    let end = Instant::now() + length;
    let producer = tokio::spawn(produce(c.client(), c.queue.clone(), end));
    let canceller = tokio::spawn(cancel(c.client(), c.queue.clone(), end));
    let (kills, all_names) = c
        .kill_in_turn(&mut workers, &names, &args, every, end)
        .await?;
    let enqueued = producer.await.map_err(|e| e.to_string())??;
    let cancels = canceller.await.map_err(|e| e.to_string())??;
    // Killed workers' jobs come back after their 2 s lease; delayed jobs come due.
    c.drained(Duration::from_secs(90)).await?;
    for w in &mut workers {
        w.stop()?;
    }

    let record = read_record(c, &all_names);
    let mut wrong_state = Vec::new();
    let mut started_after_cancel = Vec::new();
    let mut lost = Vec::new();
    let mut heard_ms: Vec<f64> = Vec::new();
    let store = c.store.shared();
    for id in &enqueued {
        let job = store.job(&c.queue, id).await?;
        let state = job.as_ref().map(|j| j.state);
        let attempts = job.as_ref().map_or(0, |j| j.attempt);
        let runs = record.get(id.as_str());
        match cancels.get(id) {
            Some(cancel) => {
                if state != Some(JobState::Cancelled) {
                    wrong_state.push(format!("job {id} cancelled, then {state:?}"));
                }
                // A run after the cancel is an attempt the store did not count, or one
                // that began well after the cancel returned (a claim's run starts within
                // a millisecond of it; a lease given back by a killed worker returns
                // after 2 s).
                let late = runs
                    .into_iter()
                    .flat_map(|r| &r.starts)
                    .filter(|(attempt, us)| {
                        *attempt > attempts || *us > cancel.returned_us + 1_000_000
                    })
                    .count();
                if late > 0 {
                    started_after_cancel.push(format!("job {id}: {late} runs"));
                }
                // A handler that heard of its cancel was running when it was sent.
                if let Some(heard) = runs.and_then(|r| r.cancelled.iter().min()) {
                    heard_ms.push(heard.saturating_sub(cancel.sent_us) as f64 / 1000.0);
                }
            }
            None if state != Some(JobState::Completed) => {
                lost.push(format!("job {id}: {state:?}"));
            }
            None => {}
        }
    }
    heard_ms.sort_by(f64::total_cmp);
    let pct = |p: f64| -> Option<f64> {
        let i = ((heard_ms.len() as f64 - 1.0) * p).round() as usize;
        heard_ms.get(i).map(|v| (v * 10.0).round() / 10.0)
    };
    let by_state = |s: JobState| cancels.values().filter(|c| c.picked_from == s).count();
    let median = pct(0.5);
    let ok = wrong_state.is_empty()
        && started_after_cancel.is_empty()
        && lost.is_empty()
        && kills >= 2
        && by_state(JobState::Running) > 0
        && by_state(JobState::Scheduled) > 0
        && by_state(JobState::Ready) > 0
        && median.is_some_and(|m| m <= 100.0);
    Ok((
        ok,
        "cancels of ready, scheduled and running jobs while workers are SIGKILLed: every \
         cancelled job ends cancelled and no run of it starts after its cancel returned; \
         every other job completes; a running handler hears of its cancel within 100 ms \
         (median)",
        json!({
            "seconds": length.as_secs(), "kills": kills, "enqueued": enqueued.len(),
            "cancelled": cancels.len(),
            "picked_from_ready": by_state(JobState::Ready),
            "picked_from_scheduled": by_state(JobState::Scheduled),
            "picked_from_running": by_state(JobState::Running),
            "running_cancels_heard": heard_ms.len(),
            "heard_ms_median": median, "heard_ms_p99": pct(0.99),
            "heard_ms_max": heard_ms.last(),
            "wrong_state": wrong_state.len(),
            "started_after_cancel": started_after_cancel.len(),
            "lost": lost.len(),
            "examples": wrong_state.iter().chain(&started_after_cancel).chain(&lost)
                .take(10).collect::<Vec<_>>(),
        }),
    ))
}

fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

/// Enqueues 10 jobs every 100 ms until `end`, a third of them delayed; returns every id.
async fn produce(
    client: taskyard::Client,
    queue: taskyard::QueueName,
    end: Instant,
) -> taskyard::Result<Vec<JobId>> {
    let mut ids = Vec::new();
    let mut n = 0u64;
    while Instant::now() < end {
        let batch = (0..10)
            .map(|_| {
                n += 1;
                let ms = rand::random_range(100..500);
                let payload = json!({"key": "c", "ms": ms}).to_string().into_bytes();
                let mut opts = EnqueueOptions::default();
                if n.is_multiple_of(3) {
                    opts = opts.delay(Duration::from_millis(rand::random_range(500..3000)));
                }
                NewJob::new("span", payload, &opts, RetryPolicy::default())
            })
            .collect::<taskyard::Result<Vec<_>>>()?;
        ids.extend(
            client
                .enqueue_raw(&queue, batch)
                .await?
                .into_iter()
                .map(|e| e.id),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(ids)
}

/// Every 25 ms, cancels one job picked at random from the running, scheduled or ready
/// jobs (in turn); returns the cancels the store acted on.
async fn cancel(
    client: taskyard::Client,
    queue: taskyard::QueueName,
    end: Instant,
) -> taskyard::Result<HashMap<JobId, Cancelled>> {
    let states = [JobState::Running, JobState::Scheduled, JobState::Ready];
    let mut done = HashMap::new();
    let mut tried: HashSet<JobId> = HashSet::new();
    let mut turn = 0;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let state = states[turn % states.len()];
        turn += 1;
        let page = client.list(&queue, state, &Cursor::start(), 50).await?;
        let fresh: Vec<_> = page
            .jobs
            .iter()
            .filter(|j| !tried.contains(&j.id))
            .collect();
        if fresh.is_empty() {
            continue;
        }
        let id = fresh[rand::random_range(0..fresh.len())].id.clone();
        tried.insert(id.clone());
        let sent_us = now_us();
        let bulk = client
            .cancel(&queue, &JobFilter::Ids(vec![id.clone()]))
            .await?;
        let returned_us = now_us();
        // A job that moved on meanwhile (completed, say) is skipped: not a cancel.
        if bulk.done == 1 {
            done.insert(
                id,
                Cancelled {
                    sent_us,
                    returned_us,
                    picked_from: state,
                },
            );
        }
    }
    Ok(done)
}

/// The runs of one job, from the workers' record lines (Unix µs).
#[derive(Default)]
struct Runs {
    /// (attempt, Unix µs) of each start.
    starts: Vec<(u32, u128)>,
    cancelled: Vec<u128>,
}

/// The record lines of every worker generation, by job id.
fn read_record(c: &Ctx, names: &[String]) -> HashMap<String, Runs> {
    let mut runs: HashMap<String, Runs> = HashMap::new();
    for line in c.span_lines(names) {
        let r = runs.entry(line.id).or_default();
        match line.what.as_str() {
            "start" => r.starts.push((line.attempt, line.us)),
            "cancelled" => r.cancelled.push(line.us),
            _ => {}
        }
    }
    runs
}
