//! Periodic jobs: each tick of a schedule is enqueued once however many workers run, a
//! schedule keeps producing when its runs die, declaring it from many processes at once
//! neither duplicates nor skips a tick, missed ticks follow the schedule's policy, and
//! operators list, pause, resume, remove and run schedules. Ticks here are real: a
//! schedule every second.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use taskyard_core::schedule::{Declared, Misfire, Schedule, StoredSchedule};
use taskyard_core::{Client, EnqueueOptions, Error, JobContext, JobError, JobState, QueueName};

use super::common::{Ping, stats, worker};
use crate::{Subject, eventually, unique_queue};

fn every_second(q: &QueueName, name: &str, n: u64) -> Schedule {
    Schedule::of(
        name,
        "* * * * * *",
        &Ping { n },
        &EnqueueOptions::default().queue(q.as_str()),
    )
    .expect("a valid schedule")
}

/// The runs a handler saw: (payload n, when its job was enqueued, store ms).
type Runs = Arc<Mutex<Vec<(u64, u64)>>>;

fn recorder(
    runs: &Runs,
) -> impl Fn(Ping, JobContext) -> std::future::Ready<Result<(), JobError>> + Send + Sync + 'static {
    let runs = runs.clone();
    move |job: Ping, ctx: JobContext| {
        runs.lock().unwrap().push((job.n, ctx.enqueued_at_ms()));
        std::future::ready(Ok(()))
    }
}

/// Each tick of an every-second schedule from `first` (its first tick) to its last run
/// ran once: as many runs as ticks, none twice, none skipped.
async fn each_tick_ran_once(s: &Subject, q: &QueueName, name: &str, first: u64, runs: &Runs) {
    let stored = s.store.schedules(q).await.unwrap();
    let last = stored
        .iter()
        .find(|x| x.name == name)
        .unwrap()
        .last_ms
        .expect("a last run");
    let ticks = (last - first) / 1000 + 1;
    let ran = runs.lock().unwrap().len() as u64;
    assert_eq!(
        ran,
        ticks,
        "ticks {first}..={last}: {:?}",
        runs.lock().unwrap()
    );
    assert_eq!(
        stats(&s.store, q).await.ready,
        0,
        "nothing fired that did not run"
    );
}

/// The first tick of a schedule just declared.
async fn first_tick(s: &Subject, q: &QueueName, name: &str) -> u64 {
    let stored = s.store.schedules(q).await.unwrap();
    stored.iter().find(|x| x.name == name).unwrap().next_ms
}

/// Three workers on one queue, one schedule every second: each tick runs once, one
/// tick after another, and the schedule's last run is the last tick.
pub async fn each_tick_is_enqueued_once_however_many_workers_run(s: Subject) {
    let q = unique_queue();
    let runs: Runs = Arc::default();
    let client = Client::new(s.store.clone());
    let tick = every_second(&q, "tick", 1);
    assert_eq!(client.schedule(&tick).await.unwrap(), Declared::Created);
    let first = first_tick(&s, &q, "tick").await;
    let mut workers = Vec::new();
    for _ in 0..3 {
        // Each declares it too, as every process of an application does.
        let w = worker(&s, &q)
            .schedule(tick.clone())
            .handle(recorder(&runs))
            .build()
            .unwrap()
            .spawn();
        workers.push(w);
    }
    assert!(
        eventually(Duration::from_secs(10), async || runs.lock().unwrap().len()
            >= 4)
        .await
    );
    for w in workers {
        w.shutdown().await.unwrap();
    }
    each_tick_ran_once(&s, &q, "tick", first, &runs).await;
    let listed = client.schedules(&q).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].next_ms.unwrap() > listed[0].last_ms.unwrap());
}

/// Every run of the schedule goes dead (one attempt, the handler fails): the schedule
/// goes on producing.
pub async fn a_schedule_keeps_producing_when_its_runs_die(s: Subject) {
    let q = unique_queue();
    let once = Schedule::of(
        "doomed",
        "* * * * * *",
        &Ping { n: 0 },
        &EnqueueOptions::default().queue(q.as_str()).max_attempts(1),
    )
    .unwrap();
    let w = worker(&s, &q)
        .schedule(once)
        .handle(|_: Ping, _: JobContext| async { Err::<(), _>(JobError::retry("always fails")) })
        .build()
        .unwrap()
        .spawn();
    assert!(
        eventually(Duration::from_secs(10), async || stats(&s.store, &q)
            .await
            .dead
            >= 3)
        .await,
        "three runs died, one per tick"
    );
    w.shutdown().await.unwrap();
}

/// A deploy: eight processes declare the schedule again and again while two workers fire
/// it; halfway, the new release's processes declare version 2 (another payload) while
/// the old ones go on declaring version 1. Every tick runs once, none is skipped, and
/// once version 2 ran, version 1 never runs again.
pub async fn declaring_from_many_processes_at_once_neither_duplicates_nor_skips_a_tick(s: Subject) {
    let q = unique_queue();
    let runs: Runs = Arc::default();
    let v1 = every_second(&q, "deploy", 1);
    let v2 = every_second(&q, "deploy", 2).version(2);
    let client = Client::new(s.store.clone());
    assert_eq!(client.schedule(&v1).await.unwrap(), Declared::Created);
    let first = first_tick(&s, &q, "deploy").await;
    let mut workers = Vec::new();
    for _ in 0..2 {
        workers.push(
            worker(&s, &q)
                .handle(recorder(&runs))
                .build()
                .unwrap()
                .spawn(),
        );
    }
    let new_release = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut declarers = Vec::new();
    for i in 0..8 {
        let (client, new_release) = (client.clone(), new_release.clone());
        let (v1, v2) = (v1.clone(), v2.clone());
        declarers.push(tokio::spawn(async move {
            let mut seen = BTreeSet::new();
            for _ in 0..60 {
                let newer = i % 2 == 0 && new_release.load(std::sync::atomic::Ordering::Relaxed);
                let d = client
                    .schedule(if newer { &v2 } else { &v1 })
                    .await
                    .unwrap();
                seen.insert(format!("{d:?}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            seen
        }));
    }
    assert!(
        eventually(Duration::from_secs(10), async || runs.lock().unwrap().len()
            >= 2)
        .await
    );
    new_release.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut outcomes = BTreeSet::new();
    for d in declarers {
        outcomes.extend(d.await.unwrap());
    }
    let seen_v2 = async || runs.lock().unwrap().iter().filter(|r| r.0 == 2).count() >= 2;
    assert!(eventually(Duration::from_secs(10), seen_v2).await);
    for w in workers {
        w.shutdown().await.unwrap();
    }
    each_tick_ran_once(&s, &q, "deploy", first, &runs).await;
    // In the order the ticks fired.
    let mut fired = runs.lock().unwrap().clone();
    fired.sort_by_key(|r| r.1);
    let payloads: Vec<u64> = fired.iter().map(|r| r.0).collect();
    let first_v2 = payloads.iter().position(|&n| n == 2).unwrap();
    assert!(
        payloads[first_v2..].iter().all(|&n| n == 2),
        "version 1 ran after version 2: {payloads:?}"
    );
    for d in ["Unchanged", "Replaced", "Older"] {
        assert!(outcomes.contains(d), "{d} among {outcomes:?}");
    }
}

/// Another definition under the same name and version is refused with a clear error, and
/// the stored one stays; a bad cron expression or time zone is refused before anything
/// is written.
pub async fn a_different_definition_of_the_same_version_is_refused(s: Subject) {
    let q = unique_queue();
    let client = Client::new(s.store.clone());
    let first = every_second(&q, "same", 1);
    assert_eq!(client.schedule(&first).await.unwrap(), Declared::Created);
    assert_eq!(client.schedule(&first).await.unwrap(), Declared::Unchanged);
    let before = s.store.schedules(&q).await.unwrap();
    let other = every_second(&q, "same", 2);
    let refused = client.schedule(&other).await;
    assert!(
        matches!(&refused, Err(Error::ScheduleConflict { version: 1, .. })),
        "{refused:?}"
    );
    assert_eq!(
        s.store.schedules(&q).await.unwrap(),
        before,
        "nothing changed"
    );
    let opts = EnqueueOptions::default().queue(q.as_str());
    assert!(Schedule::of("bad", "61 * * * *", &Ping { n: 0 }, &opts).is_err());
    let zone = Schedule::of("bad", "* * * * *", &Ping { n: 0 }, &opts)
        .unwrap()
        .time_zone("Nowhere/Atlantis");
    assert!(matches!(zone, Err(Error::InvalidOption(_))), "{zone:?}");
    assert_eq!(s.store.schedules(&q).await.unwrap(), before);
}

/// A schedule whose ticks were missed for ten minutes (its next tick stored ten minutes
/// back, as if no worker had run since), every minute: by default the latest missed tick
/// runs once; `All` runs all eleven; `Skip` none. Each goes on at its next tick.
pub async fn missed_ticks_follow_the_schedules_policy(s: Subject) {
    let q = unique_queue();
    let client = Client::new(s.store.clone());
    let opts = EnqueueOptions::default().queue(q.as_str());
    let now = s.store.now_ms().await.unwrap();
    let minute = 60_000;
    // The tick of the minute before now, then ten minutes back.
    let last_tick = now / minute * minute;
    for (name, misfire, n) in [
        ("latest", Misfire::Latest, 1),
        ("all", Misfire::All, 2),
        ("skip", Misfire::Skip, 3),
    ] {
        let def = Schedule::of(name, "* * * * *", &Ping { n }, &opts)
            .unwrap()
            .misfire(misfire);
        assert_eq!(client.schedule(&def).await.unwrap(), Declared::Created);
        let mut stored = s.store.schedules(&q).await.unwrap();
        let mut back = stored.drain(..).find(|x| x.name == name).unwrap();
        back.next_ms = last_tick - 10 * minute;
        assert!(s.store.put_schedule(&q, &back).await.unwrap());
    }
    let runs: Runs = Arc::default();
    let w = worker(&s, &q)
        .handle(recorder(&runs))
        .build()
        .unwrap()
        .spawn();
    let fired = async || {
        s.store
            .schedules(&q)
            .await
            .unwrap()
            .iter()
            .all(|x| x.next_ms > now)
    };
    assert!(eventually(Duration::from_secs(10), fired).await);
    assert!(
        eventually(Duration::from_secs(10), async || runs.lock().unwrap().len()
            >= 12)
        .await
    );
    w.shutdown().await.unwrap();
    let count = |n: u64| runs.lock().unwrap().iter().filter(|r| r.0 == n).count();
    // A minute may turn while the test runs: its tick then runs too, on time.
    let turned = (s.store.now_ms().await.unwrap() / minute * minute > last_tick) as usize;
    assert!((1..=1 + turned).contains(&count(1)), "latest: {}", count(1));
    assert!((11..=11 + turned).contains(&count(2)), "all: {}", count(2));
    assert!(count(3) <= turned, "skip: {}", count(3));
    for x in client.schedules(&q).await.unwrap() {
        assert!(x.next_ms.unwrap() > now, "{} goes on", x.schedule.name());
    }
}

/// Operators list schedules with their next and last run, pause (no ticks), resume
/// (ticks again, from the next one), run one now (its next tick unchanged), and remove
/// one; a name that is not there is `UnknownSchedule`.
pub async fn operators_list_pause_resume_run_and_remove_schedules(s: Subject) {
    let q = unique_queue();
    let client = Client::new(s.store.clone());
    let runs: Runs = Arc::default();
    let w = worker(&s, &q)
        .schedule(every_second(&q, "op", 1))
        .handle(recorder(&runs))
        .build()
        .unwrap()
        .spawn();
    assert!(
        eventually(Duration::from_secs(10), async || !runs
            .lock()
            .unwrap()
            .is_empty())
        .await
    );
    client.pause_schedule(&q, "op").await.unwrap();
    let listed = client.schedules(&q).await.unwrap();
    assert!(listed[0].paused);
    // Paused: a tick may have been on its way; after it, nothing for two seconds.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let paused_at = runs.lock().unwrap().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        runs.lock().unwrap().len(),
        paused_at,
        "no tick while paused"
    );
    // Run now: one job, the schedule still paused and its next tick unchanged.
    let before = s.store.schedules(&q).await.unwrap()[0].clone();
    let id = client.run_schedule(&q, "op").await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), async || runs.lock().unwrap().len()
            == paused_at + 1)
        .await
    );
    let after = s.store.schedules(&q).await.unwrap()[0].clone();
    assert_eq!(
        (after.next_ms, after.paused, after.rev),
        (before.next_ms, true, before.rev)
    );
    assert!(
        s.store
            .job(&q, &id)
            .await
            .unwrap()
            .is_none_or(|j| j.state == JobState::Completed)
    );
    client.resume_schedule(&q, "op").await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), async || runs.lock().unwrap().len()
            >= paused_at + 2)
        .await
    );
    let listed = client.schedules(&q).await.unwrap();
    assert!(!listed[0].paused);
    assert!(listed[0].last_ms.is_some() && listed[0].next_ms.is_some());
    client.remove_schedule(&q, "op").await.unwrap();
    assert!(client.schedules(&q).await.unwrap().is_empty());
    for refused in [
        client.remove_schedule(&q, "op").await.err(),
        client.pause_schedule(&q, "nope").await.err(),
        client.resume_schedule(&q, "nope").await.err(),
        client.run_schedule(&q, "nope").await.err(),
    ] {
        assert!(
            matches!(refused, Some(Error::UnknownSchedule { .. })),
            "{refused:?}"
        );
    }
    w.shutdown().await.unwrap();
}

/// The store's part: a change holds only on the revision it read; a firing enqueues
/// and moves the schedule in one step, once per revision, never while paused, never
/// past a full queue.
pub async fn a_schedule_changes_only_from_the_revision_it_was_read_at(s: Subject) {
    let q = unique_queue();
    let def = every_second(&q, "cas", 1);
    let stored = StoredSchedule {
        name: "cas".into(),
        definition: def.encode(),
        next_ms: 1_000,
        last_ms: None,
        last_job: None,
        paused: false,
        rev: 0,
    };
    assert!(s.store.put_schedule(&q, &stored).await.unwrap());
    assert!(
        !s.store.put_schedule(&q, &stored).await.unwrap(),
        "already there"
    );
    let read = s.store.schedules(&q).await.unwrap().remove(0);
    assert_eq!(read.rev, 1);
    assert_eq!(read.definition, def.encode());
    let job = || vec![def.job().unwrap()];
    let fired = s
        .store
        .fire(&q, "cas", 1, 2_000, Some(1_000), job())
        .await
        .unwrap();
    let ids = fired.expect("fired at its revision");
    assert_eq!(ids.len(), 1);
    assert_eq!(stats(&s.store, &q).await.ready, 1);
    // The same revision again (another worker that read it before): nothing.
    assert_eq!(
        s.store
            .fire(&q, "cas", 1, 2_000, Some(1_000), job())
            .await
            .unwrap(),
        None
    );
    assert_eq!(stats(&s.store, &q).await.ready, 1);
    let read = s.store.schedules(&q).await.unwrap().remove(0);
    assert_eq!(
        (read.rev, read.next_ms, read.last_ms, read.last_job.as_ref()),
        (2, 2_000, Some(1_000), ids.last())
    );
    // Two at once on the same revision: one fires.
    let (a, b) = tokio::join!(
        s.store.fire(&q, "cas", 2, 3_000, Some(2_000), job()),
        s.store.fire(&q, "cas", 2, 3_000, Some(2_000), job()),
    );
    assert_eq!(
        [a.unwrap().is_some(), b.unwrap().is_some()]
            .iter()
            .filter(|x| **x)
            .count(),
        1
    );
    assert_eq!(stats(&s.store, &q).await.ready, 2);
    // Paused: no firing.
    let mut paused = s.store.schedules(&q).await.unwrap().remove(0);
    paused.paused = true;
    assert!(s.store.put_schedule(&q, &paused).await.unwrap());
    assert_eq!(
        s.store
            .fire(&q, "cas", 4, 5_000, Some(4_000), job())
            .await
            .unwrap(),
        None
    );
    // A full queue: refused, the schedule unchanged.
    let mut resumed = s.store.schedules(&q).await.unwrap().remove(0);
    resumed.paused = false;
    assert!(s.store.put_schedule(&q, &resumed).await.unwrap());
    let config = taskyard_core::QueueConfig {
        max_len: 2,
        ..s.store.config(&q).await.unwrap()
    };
    s.store.configure(&q, &config).await.unwrap();
    let full = s.store.fire(&q, "cas", 5, 6_000, Some(5_000), job()).await;
    assert!(matches!(full, Err(Error::QueueFull { .. })), "{full:?}");
    let read = s.store.schedules(&q).await.unwrap().remove(0);
    assert_eq!((read.rev, read.next_ms), (5, 3_000));
    // No jobs (missed ticks skipped): only the schedule moves.
    assert_eq!(
        s.store
            .fire(&q, "cas", 5, 9_000, Some(8_000), Vec::new())
            .await
            .unwrap(),
        Some(Vec::new())
    );
    let read = s.store.schedules(&q).await.unwrap().remove(0);
    assert_eq!(
        (read.rev, read.next_ms, read.last_ms),
        (6, 9_000, Some(8_000))
    );
    assert_eq!(stats(&s.store, &q).await.ready, 2);
    assert!(s.store.remove_schedule(&q, "cas").await.unwrap());
    assert!(!s.store.remove_schedule(&q, "cas").await.unwrap());
    assert_eq!(
        s.store
            .fire(&q, "cas", 6, 10_000, None, job())
            .await
            .unwrap(),
        None
    );
}
