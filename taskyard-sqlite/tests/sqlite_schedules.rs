//! Periodic jobs on the store's own clock: the embedded store's manual clock moves, a real
//! worker fires the ticks — each once, a missed stretch by the schedule's policy, and
//! across daylight-saving changes in the schedule's time zone by the documented rule.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use taskyard_conformance::suite::Ping;
use taskyard_conformance::{TempDir, eventually};
use taskyard_core::schedule::{Declared, Schedule};
use taskyard_core::{Client, EnqueueOptions, JobContext, JobError, Worker};
use taskyard_sqlite::{ManualClock, Options, SqliteStore};

const MINUTE: u64 = 60_000;
/// 2026-01-01T00:00:00Z.
const NEW_YEAR: u64 = 1_767_225_600_000;

const TICK: Ping = Ping { n: 0 };

/// When each run's job was enqueued (store ms).
type Runs = Arc<Mutex<Vec<u64>>>;

async fn setup(at: u64) -> (TempDir, Arc<ManualClock>, SqliteStore) {
    let dir = TempDir::new();
    let clock = Arc::new(ManualClock::new(at));
    let options = Options {
        clock: clock.clone(),
        ..Options::default()
    };
    let store = SqliteStore::open_with(dir.path().join("taskyard.db"), options)
        .await
        .unwrap();
    (dir, clock, store)
}

fn worker(store: &SqliteStore, runs: &Runs) -> taskyard_core::WorkerHandle {
    let runs = runs.clone();
    Worker::builder(store.clone())
        .maintenance_every(Duration::from_millis(10))
        .handle(move |_: Ping, ctx: JobContext| {
            runs.lock().unwrap().push(ctx.enqueued_at_ms());
            async { Ok::<(), JobError>(()) }
        })
        .build()
        .unwrap()
        .spawn()
}

async fn ran(runs: &Runs, n: usize) -> bool {
    eventually(Duration::from_secs(5), async || {
        runs.lock().unwrap().len() >= n
    })
    .await
}

/// Every minute on a clock that moves a minute at a time: one run per tick, enqueued at
/// its tick; the clock held still between ticks, nothing more. Ten minutes at once (no
/// step saw them): the latest of them runs once (the default policy).
#[tokio::test]
async fn ticks_follow_the_stores_clock_and_run_once_each() {
    let (_dir, clock, store) = setup(NEW_YEAR).await;
    let client = Client::new(store.clone());
    let every_minute = Schedule::of("m", "* * * * *", &TICK, &EnqueueOptions::default()).unwrap();
    assert_eq!(
        client.schedule(&every_minute).await.unwrap(),
        Declared::Created
    );
    let runs: Runs = Arc::default();
    let w = worker(&store, &runs);
    for i in 1..=5 {
        clock.advance(Duration::from_millis(MINUTE));
        assert!(ran(&runs, i).await, "tick {i}");
        // The clock holds still: no second run of this tick.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(runs.lock().unwrap().len(), i);
    }
    let ticks: Vec<u64> = (1..=5).map(|i| NEW_YEAR + i * MINUTE).collect();
    assert_eq!(*runs.lock().unwrap(), ticks);
    // The worker missed ten minutes (the clock jumped past them).
    clock.advance(Duration::from_millis(10 * MINUTE));
    assert!(ran(&runs, 6).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        runs.lock().unwrap().len(),
        6,
        "the latest missed tick, once"
    );
    let listed = client.schedules(&Default::default()).await.unwrap();
    assert_eq!(listed[0].last_ms, Some(NEW_YEAR + 15 * MINUTE));
    assert_eq!(listed[0].next_ms, Some(NEW_YEAR + 16 * MINUTE));
    w.shutdown().await.unwrap();
}

/// `30 2 * * *` in Europe/Berlin across 2026's changes: on 29 March 02:30 does not exist
/// (02:00 → 03:00), and the tick runs once at the end of the gap, 03:00 CEST (01:00
/// UTC); on 25 October 02:30 happens twice (03:00 → 02:00), and the tick runs once, at
/// the first (00:30 UTC), not at the second (01:30 UTC).
#[tokio::test]
async fn a_fixed_time_schedule_keeps_the_daylight_saving_rule() {
    for (start, fires, not_again, next) in [
        // 2026-03-28T12:00Z, fires 2026-03-29T01:00Z, next 2026-03-30T00:30Z.
        (
            1_774_699_200_000,
            1_774_746_000_000,
            None,
            1_774_830_600_000,
        ),
        // 2026-10-24T12:00Z, fires 2026-10-25T00:30Z, not 01:30Z, next 2026-10-26T01:30Z.
        (
            1_792_843_200_000,
            1_792_888_200_000,
            Some(1_792_891_800_000),
            1_792_978_200_000,
        ),
    ] {
        let (_dir, clock, store) = setup(start).await;
        let client = Client::new(store.clone());
        let nightly = Schedule::of("nightly", "30 2 * * *", &TICK, &EnqueueOptions::default())
            .unwrap()
            .time_zone("Europe/Berlin")
            .unwrap();
        client.schedule(&nightly).await.unwrap();
        let listed = client.schedules(&Default::default()).await.unwrap();
        assert_eq!(listed[0].next_ms, Some(fires));
        let runs: Runs = Arc::default();
        let w = worker(&store, &runs);
        clock.advance(Duration::from_millis(fires - start));
        assert!(ran(&runs, 1).await);
        if let Some(second_pass) = not_again {
            clock.advance(Duration::from_millis(second_pass - fires));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(*runs.lock().unwrap(), [fires], "once");
        let listed = client.schedules(&Default::default()).await.unwrap();
        assert_eq!(listed[0].next_ms, Some(next));
        w.shutdown().await.unwrap();
    }
}
