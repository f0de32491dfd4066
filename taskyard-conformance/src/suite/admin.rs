//! Inspection and admin: looking jobs up and listing them, redrive and purge of the dead,
//! retention of dead and completed jobs, pause, and a queue's configuration.

use std::sync::Arc;
use std::time::Duration;

use taskyard_core::{
    Client, Cursor, DeadFilter, EnqueueOptions, Error, JobId, JobState, Lease, NewJob, Outcome,
    QueueConfig, QueueName, Store,
};

use super::common::{LEASE, Pong, SOON, claim, enqueue, new_job, new_job_with, stats};
use crate::{Subject, eventually, unique_queue};

async fn kill_all(store: &Arc<dyn Store>, q: &QueueName, n: usize) {
    let jobs = claim(store, q, n, LEASE, "w").await;
    let outcomes: Vec<_> = jobs
        .into_iter()
        .map(|j| (j.lease, Outcome::Dead { error: "x".into() }))
        .collect();
    store.finish(&outcomes).await.unwrap();
}

/// Redrive moves dead jobs back to ready with fresh attempts: one, by kind, or all.
pub async fn redrive_one_by_kind_and_all(s: Subject) {
    let q = unique_queue();
    let mut jobs: Vec<NewJob> = (0..4).map(new_job).collect();
    jobs.push(NewJob::from_job(&Pong { n: 9 }, &EnqueueOptions::default()).unwrap());
    jobs.push(NewJob::from_job(&Pong { n: 10 }, &EnqueueOptions::default()).unwrap());
    let ids = enqueue(&s.store, &q, jobs).await;
    kill_all(&s.store, &q, 6).await;
    assert_eq!(stats(&s.store, &q).await.dead, 6);

    let n = Client::new(s.store.clone())
        .redrive(
            &q,
            &DeadFilter::Ids(vec![ids[0].clone(), ids[0].clone(), JobId::new("nope")]), // twice: moves once
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    let info = s.store.job(&q, &ids[0]).await.unwrap().unwrap();
    assert_eq!((info.state, info.attempt), (JobState::Ready, 0));
    assert_eq!(info.errors.len(), 1, "history is kept");

    assert_eq!(
        Client::new(s.store.clone())
            .redrive(&q, &DeadFilter::Kind("pong".into()))
            .await
            .unwrap(),
        2
    );
    assert_eq!(stats(&s.store, &q).await.dead, 3);
    assert_eq!(
        Client::new(s.store.clone())
            .redrive(&q, &DeadFilter::All)
            .await
            .unwrap(),
        3
    );
    let st = stats(&s.store, &q).await;
    assert_eq!((st.dead, st.ready), (0, 6));
    let again = claim(&s.store, &q, 6, LEASE, "w").await;
    assert!(
        again.iter().all(|j| j.attempt == 1),
        "redriven jobs start their attempts afresh"
    );
}

/// Purge deletes dead jobs for good.
pub async fn purge_deletes_dead_jobs(s: Subject) {
    let q = unique_queue();
    let ids = enqueue(&s.store, &q, (0..3).map(new_job).collect()).await;
    kill_all(&s.store, &q, 3).await;
    assert_eq!(
        Client::new(s.store.clone())
            .purge(&q, &DeadFilter::Ids(vec![ids[1].clone()]))
            .await
            .unwrap(),
        1
    );
    assert!(s.store.job(&q, &ids[1]).await.unwrap().is_none());
    assert_eq!(
        Client::new(s.store.clone())
            .purge(&q, &DeadFilter::All)
            .await
            .unwrap(),
        2
    );
    assert_eq!(stats(&s.store, &q).await.dead, 0);
    assert!(s.store.job(&q, &ids[0]).await.unwrap().is_none());
}

/// The dead set keeps at most its configured count, oldest dropped first.
pub async fn dead_set_is_trimmed_to_its_max(s: Subject) {
    let q = unique_queue();
    let config = QueueConfig {
        dead_max: 3,
        ..QueueConfig::default()
    };
    s.store.configure(&q, &config).await.unwrap();
    assert_eq!(s.store.config(&q).await.unwrap(), config);
    let ids = enqueue(&s.store, &q, (0..5).map(new_job).collect()).await;
    for _ in 0..5 {
        kill_all(&s.store, &q, 1).await;
    }
    s.store.maintain(&q).await.unwrap();
    assert_eq!(stats(&s.store, &q).await.dead, 3);
    assert!(
        s.store.job(&q, &ids[0]).await.unwrap().is_none(),
        "the oldest went first"
    );
    assert!(s.store.job(&q, &ids[4]).await.unwrap().is_some());
}

/// Dead jobs older than the configured age are dropped by maintenance.
pub async fn dead_jobs_past_their_age_are_dropped(s: Subject) {
    let q = unique_queue();
    let config = QueueConfig {
        dead_max_age_ms: 200,
        ..QueueConfig::default()
    };
    s.store.configure(&q, &config).await.unwrap();
    enqueue(&s.store, &q, (0..3).map(new_job).collect()).await;
    kill_all(&s.store, &q, 3).await;
    let (store, q2) = (s.store.clone(), q.clone());
    assert!(
        eventually(SOON, || {
            let (store, q) = (store.clone(), q2.clone());
            async move {
                store.maintain(&q).await.unwrap();
                store.stats(&q).await.unwrap().dead == 0
            }
        })
        .await
    );
    assert!(
        s.store
            .list(&q, JobState::Dead, &Cursor::start(), 10)
            .await
            .unwrap()
            .jobs
            .is_empty()
    );
}

/// Completed jobs leave no trace by default; with retention they are kept, up to the max.
pub async fn completed_jobs_are_removed_unless_retained(s: Subject) {
    let q = unique_queue();
    let ids = enqueue(&s.store, &q, vec![new_job(1)]).await;
    let job = claim(&s.store, &q, 1, LEASE, "w").await.remove(0);
    s.store
        .finish(&[(job.lease, Outcome::Completed)])
        .await
        .unwrap();
    assert!(s.store.job(&q, &ids[0]).await.unwrap().is_none());
    assert_eq!(
        stats(&s.store, &q).await,
        taskyard_core::QueueStats {
            queue: q.to_string(),
            ..Default::default()
        }
    );

    let config = QueueConfig {
        completed_max: 2,
        ..QueueConfig::default()
    };
    s.store.configure(&q, &config).await.unwrap();
    let ids = enqueue(&s.store, &q, (0..3).map(new_job).collect()).await;
    for _ in 0..3 {
        let job = claim(&s.store, &q, 1, LEASE, "w").await.remove(0);
        s.store
            .finish(&[(job.lease, Outcome::Completed)])
            .await
            .unwrap();
    }
    assert_eq!(stats(&s.store, &q).await.completed, 2);
    let kept = s.store.job(&q, &ids[2]).await.unwrap().unwrap();
    assert_eq!(kept.state, JobState::Completed);

    // Completions reported together are kept alike (up to the count).
    let config = QueueConfig {
        completed_max: 10,
        ..QueueConfig::default()
    };
    s.store.configure(&q, &config).await.unwrap();
    let ids = enqueue(&s.store, &q, (0..3).map(new_job).collect()).await;
    let done: Vec<(Lease, Outcome)> = claim(&s.store, &q, 3, LEASE, "w")
        .await
        .into_iter()
        .map(|j| (j.lease, Outcome::Completed))
        .collect();
    assert_eq!(s.store.finish(&done).await.unwrap(), vec![true; 3]);
    for id in &ids {
        let job = s.store.job(&q, id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Completed, "{id}");
    }
}

/// A paused queue accepts enqueues but yields no claims until resumed.
pub async fn paused_queue_yields_no_claims_until_resumed(s: Subject) {
    let q = unique_queue();
    s.store.set_paused(&q, true).await.unwrap();
    enqueue(&s.store, &q, vec![new_job(1)]).await;
    assert!(stats(&s.store, &q).await.paused);
    assert!(claim(&s.store, &q, 1, LEASE, "w").await.is_empty());
    s.store.set_paused(&q, false).await.unwrap();
    assert!(!stats(&s.store, &q).await.paused);
    assert_eq!(claim(&s.store, &q, 1, LEASE, "w").await.len(), 1);
}

/// A job can be found by id in each state, and listed by state.
pub async fn job_lookup_in_every_state(s: Subject) {
    let q = unique_queue();
    let delayed = EnqueueOptions::default().delay(Duration::from_secs(3600));
    let ids = enqueue(
        &s.store,
        &q,
        vec![new_job(0), new_job(1), new_job(2), new_job_with(3, delayed)],
    )
    .await;
    let running = claim(&s.store, &q, 2, LEASE, "w").await;
    s.store
        .finish(&[(
            running[1].lease.clone(),
            Outcome::Dead { error: "x".into() },
        )])
        .await
        .unwrap();
    let state = |i: usize| {
        let (store, q, id) = (s.store.clone(), q.clone(), ids[i].clone());
        async move { store.job(&q, &id).await.unwrap().map(|j| j.state) }
    };
    assert_eq!(state(0).await, Some(JobState::Running));
    assert_eq!(state(1).await, Some(JobState::Dead));
    assert_eq!(state(2).await, Some(JobState::Ready));
    assert_eq!(state(3).await, Some(JobState::Scheduled));
    assert!(
        s.store
            .job(&q, &JobId::new("123456789"))
            .await
            .unwrap()
            .is_none()
    );
    for (st, id) in [
        (JobState::Running, 0),
        (JobState::Dead, 1),
        (JobState::Ready, 2),
        (JobState::Scheduled, 3),
    ] {
        let list = s
            .store
            .list(&q, st, &Cursor::start(), 10)
            .await
            .unwrap()
            .jobs;
        assert_eq!(list.len(), 1, "{st}");
        assert_eq!(list[0].id, ids[id]);
        assert_eq!(list[0].kind, "ping");
    }
    let running = s.store.job(&q, &ids[0]).await.unwrap().unwrap();
    assert!(running.at_ms.is_some(), "a running job shows its lease end");
}

/// A queue nobody configured keeps dead jobs up to 10,000 and 30 days and removes
/// completed jobs at once (kept, when asked, up to 24 h).
pub async fn a_new_queue_has_the_default_retention(s: Subject) {
    let q = unique_queue();
    let config = s.store.config(&q).await.unwrap();
    assert_eq!(config.max_len, 0, "no max length");
    assert_eq!(config.dead_max, 10_000);
    assert_eq!(config.dead_max_age_ms, 30 * 24 * 3600 * 1000);
    assert_eq!(config.completed_max, 0);
    assert_eq!(config.completed_max_age_ms, 24 * 3600 * 1000);
    assert_eq!(config, QueueConfig::default());
}

/// Every page of `state`, from the start, `limit` at a time: the ids in order.
async fn walk(store: &Arc<dyn Store>, q: &QueueName, state: JobState, limit: u64) -> Vec<JobId> {
    let (mut after, mut out) = (Cursor::start(), Vec::new());
    loop {
        let page = store.list(q, state, &after, limit).await.unwrap();
        assert!(
            page.jobs.len() as u64 <= limit,
            "a page holds at most its limit"
        );
        out.extend(page.jobs.iter().map(|j| j.id.clone()));
        match page.next {
            Some(next) => after = next,
            None => return out,
        }
    }
}

/// Listings come a page at a time, each resuming after the last: every job that stays in
/// a state is seen once, in the state's order, even when the job a cursor names leaves;
/// a cursor the store did not write is refused.
pub async fn listings_walk_a_state_a_page_at_a_time(s: Subject) {
    let q = unique_queue();
    let ids = enqueue(&s.store, &q, (0..25).map(new_job).collect()).await;
    assert_eq!(walk(&s.store, &q, JobState::Ready, 10).await, ids);
    assert_eq!(walk(&s.store, &q, JobState::Ready, 25).await, ids);

    kill_all(&s.store, &q, 25).await;
    let first = s
        .store
        .list(&q, JobState::Dead, &Cursor::start(), 10)
        .await
        .unwrap();
    assert_eq!(first.jobs.len(), 10);
    // The job the cursor names leaves the set before the next page.
    let named = first.jobs.last().unwrap().id.clone();
    Client::new(s.store.clone())
        .purge(&q, &DeadFilter::Ids(vec![named]))
        .await
        .unwrap();
    let mut seen: Vec<JobId> = first.jobs.iter().map(|j| j.id.clone()).collect();
    let mut after = first.next.expect("more than one page");
    loop {
        let page = s.store.list(&q, JobState::Dead, &after, 10).await.unwrap();
        seen.extend(page.jobs.iter().map(|j| j.id.clone()));
        match page.next {
            Some(next) => after = next,
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    sorted.dedup();
    assert_eq!(sorted.len(), seen.len(), "no job seen twice");
    let mut all = ids.clone();
    all.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    assert_eq!(sorted, all, "every job seen");

    let bogus = s
        .store
        .list(&q, JobState::Dead, &Cursor::new("bogus"), 10)
        .await;
    assert!(matches!(bogus, Err(Error::InvalidOption(_))), "{bogus:?}");
}

/// Bulk operations on the dead set go in bounded steps, each resuming where the last one
/// stopped: a step acts on at most 1,000 jobs (a store may take fewer: Redis redrives 500
/// a step), and a walk by kind takes every match once.
pub async fn redrive_and_purge_go_in_bounded_steps(s: Subject) {
    let q = unique_queue();
    let mut jobs: Vec<NewJob> = (0..2400).map(new_job).collect();
    for n in 0..7u64 {
        let pong = NewJob::from_job(&Pong { n }, &EnqueueOptions::default()).unwrap();
        jobs.insert(n as usize * 300, pong);
    }
    enqueue(&s.store, &q, jobs).await;
    kill_all(&s.store, &q, 2407).await;

    let step = s
        .store
        .redrive(&q, &DeadFilter::Kind("ping".into()), &Cursor::start())
        .await
        .unwrap();
    assert!(
        (1..=1000).contains(&step.done),
        "one step moves at most 1,000: {}",
        step.done
    );
    assert!(step.next.is_some(), "and says where to go on");
    let client = Client::new(s.store.clone());
    assert_eq!(
        client
            .purge(&q, &DeadFilter::Kind("pong".into()))
            .await
            .unwrap(),
        7
    );
    assert_eq!(
        client
            .redrive(&q, &DeadFilter::Kind("ping".into()))
            .await
            .unwrap(),
        2400 - step.done
    );
    let st = stats(&s.store, &q).await;
    assert_eq!((st.dead, st.ready), (0, 2400));
}

/// Job ids are unique per store: a job is found by its id alone, in whichever queue.
pub async fn jobs_are_found_by_id_alone(s: Subject) {
    let (a, b) = (unique_queue(), unique_queue());
    let in_a = enqueue(&s.store, &a, (0..3).map(new_job).collect()).await;
    let in_b = enqueue(&s.store, &b, (0..3).map(new_job).collect()).await;
    assert!(
        in_a.iter().all(|id| !in_b.contains(id)),
        "ids are unique across queues"
    );
    let found = s.store.find(&in_b[1]).await.unwrap().unwrap();
    assert_eq!((found.queue.as_str(), &found.id), (b.as_str(), &in_b[1]));
    assert!(
        s.store
            .find(&JobId::new("999999999"))
            .await
            .unwrap()
            .is_none()
    );
}
