//! Operator actions on any job: run a scheduled job now, delete ready and scheduled
//! jobs, delete a whole queue — by id and in bulk, with a clear answer for jobs the
//! action does not apply to.

use std::time::Duration;

use taskyard_core::{
    Client, Cursor, EnqueueOptions, JobFilter, JobId, JobState, NewJob, Outcome, QueueConfig, Skip,
    Skipped,
};

use super::common::{LEASE, Pong, claim, enqueue, new_job, new_job_with, payload_n, stats};
use crate::{Subject, unique_queue};

fn later(n: u64) -> NewJob {
    new_job_with(
        n,
        EnqueueOptions::default().delay(Duration::from_secs(3600)),
    )
}

fn pong_later(n: u64) -> NewJob {
    let opts = EnqueueOptions::default().delay(Duration::from_secs(3600));
    NewJob::from_job(&Pong { n }, &opts).unwrap()
}

fn skipped(id: &JobId, why: Skip) -> Skipped {
    Skipped {
        id: id.clone(),
        why,
    }
}

/// Skipped jobs in id order: the order a step reports them in is the store's (each finds
/// named jobs its own way).
fn sorted(mut skipped: Vec<Skipped>) -> Vec<Skipped> {
    skipped.sort_by(|a, b| a.id.cmp(&b.id));
    skipped
}

/// Run-now makes scheduled jobs ready at once — one by id, by kind, or all — and says
/// which named jobs were not scheduled.
pub async fn run_now_makes_scheduled_jobs_ready_by_id_kind_and_all(s: Subject) {
    let q = unique_queue();
    let client = Client::new(s.store.clone());
    let ids = enqueue(
        &s.store,
        &q,
        vec![later(1), later(2), pong_later(3), pong_later(4), new_job(5)],
    )
    .await;
    let prio = enqueue(
        &s.store,
        &q,
        vec![new_job_with(
            6,
            EnqueueOptions::default()
                .delay(Duration::from_secs(3600))
                .priority(80),
        )],
    )
    .await;

    let done = client
        .run_now(
            &q,
            &JobFilter::Ids(vec![ids[1].clone(), ids[4].clone(), JobId::new("404")]),
        )
        .await
        .unwrap();
    assert_eq!(done.done, 1);
    assert_eq!(
        sorted(done.skipped),
        sorted(vec![
            skipped(&ids[4], Skip::InState(JobState::Ready)),
            skipped(&JobId::new("404"), Skip::NotFound),
        ])
    );
    let st = stats(&s.store, &q).await;
    assert_eq!((st.ready, st.scheduled), (2, 4));
    let info = s.store.job(&q, &ids[1]).await.unwrap().unwrap();
    assert_eq!((info.state, info.attempt), (JobState::Ready, 0));

    assert_eq!(
        client
            .run_now(&q, &JobFilter::Kind("pong".into()))
            .await
            .unwrap()
            .done,
        2
    );
    assert_eq!(client.run_now(&q, &JobFilter::All).await.unwrap().done, 2);
    assert_eq!(stats(&s.store, &q).await.scheduled, 0);
    let order: Vec<u64> = claim(&s.store, &q, 10, LEASE, "w")
        .await
        .iter()
        .map(|j| payload_n(&j.payload))
        .collect();
    assert_eq!(order[0], 6, "a job made ready keeps its priority");
    assert_eq!(order.len(), 6);
    let _ = prio;
}

/// Delete removes ready and scheduled jobs — by id, by kind, or all — frees nothing
/// else, and answers for named jobs it did not delete with where they are.
pub async fn delete_removes_ready_and_scheduled_jobs_by_id_kind_and_all(s: Subject) {
    let q = unique_queue();
    let client = Client::new(s.store.clone());
    let ids = enqueue(&s.store, &q, (0..6).map(new_job).collect()).await;
    let later_ids = enqueue(
        &s.store,
        &q,
        vec![later(10), pong_later(11), pong_later(12)],
    )
    .await;
    let pongs = enqueue(
        &s.store,
        &q,
        vec![NewJob::from_job(&Pong { n: 13 }, &EnqueueOptions::default()).unwrap()],
    )
    .await;

    // A job in the middle of the ready list, a scheduled one, and one unknown.
    let done = client
        .delete(
            &q,
            &JobFilter::Ids(vec![
                ids[2].clone(),
                later_ids[0].clone(),
                JobId::new("404"),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(done.done, 2);
    assert_eq!(done.skipped, [skipped(&JobId::new("404"), Skip::NotFound)]);
    assert!(s.store.job(&q, &ids[2]).await.unwrap().is_none());
    assert!(s.store.job(&q, &later_ids[0]).await.unwrap().is_none());
    let st = stats(&s.store, &q).await;
    assert_eq!((st.ready, st.scheduled), (6, 2));
    let listed = s
        .store
        .list(&q, JobState::Ready, &Cursor::start(), 100)
        .await
        .unwrap();
    assert!(
        listed.jobs.iter().all(|j| j.id != ids[2]),
        "a deleted job is not listed"
    );
    assert_eq!(listed.jobs.len(), 6);

    // Deleting it again: gone.
    let again = client
        .delete(&q, &JobFilter::Ids(vec![ids[2].clone()]))
        .await
        .unwrap();
    assert_eq!(
        (again.done, again.skipped.clone()),
        (0, vec![skipped(&ids[2], Skip::NotFound)])
    );

    // By kind: ready and scheduled pongs.
    assert_eq!(
        client
            .delete(&q, &JobFilter::Kind("pong".into()))
            .await
            .unwrap()
            .done,
        3
    );
    assert!(s.store.job(&q, &pongs[0]).await.unwrap().is_none());
    let claimed: Vec<u64> = claim(&s.store, &q, 2, LEASE, "w")
        .await
        .iter()
        .map(|j| payload_n(&j.payload))
        .collect();
    assert_eq!(
        claimed,
        [0, 1],
        "claims skip deleted jobs and keep the order"
    );

    // A running job is not deleted; the rest are.
    let running = JobId::new(claimed_id(&s, &q, &ids).await);
    let all = client.delete(&q, &JobFilter::All).await.unwrap();
    assert_eq!(all.done, 3);
    let st = stats(&s.store, &q).await;
    assert_eq!((st.ready, st.scheduled, st.running), (0, 0, 2));
    let named = client
        .delete(&q, &JobFilter::Ids(vec![running.clone()]))
        .await
        .unwrap();
    assert_eq!(
        named.skipped,
        [skipped(&running, Skip::InState(JobState::Running))]
    );
    assert!(claim(&s.store, &q, 10, LEASE, "w").await.is_empty());
}

async fn claimed_id(s: &Subject, q: &taskyard_core::QueueName, ids: &[JobId]) -> String {
    for id in ids {
        if let Some(info) = s.store.job(q, id).await.unwrap()
            && info.state == JobState::Running
        {
            return id.to_string();
        }
    }
    panic!("no running job");
}

/// Actions on finished jobs answer "finished" (completed, dead) and change nothing.
pub async fn actions_on_finished_jobs_say_where_they_are_and_change_nothing(s: Subject) {
    let q = unique_queue();
    let client = Client::new(s.store.clone());
    let config = QueueConfig {
        completed_max: 10,
        ..QueueConfig::default()
    };
    s.store.configure(&q, &config).await.unwrap();
    let ids = enqueue(&s.store, &q, vec![new_job(1), new_job(2)]).await;
    let jobs = claim(&s.store, &q, 2, LEASE, "w").await;
    let outcomes: Vec<_> = jobs
        .into_iter()
        .map(|j| {
            let o = if j.lease.id == ids[0] {
                Outcome::Completed
            } else {
                Outcome::Dead { error: "x".into() }
            };
            (j.lease, o)
        })
        .collect();
    s.store.finish(&outcomes).await.unwrap();
    for bulk in [
        client
            .delete(&q, &JobFilter::Ids(ids.clone()))
            .await
            .unwrap(),
        client
            .run_now(&q, &JobFilter::Ids(ids.clone()))
            .await
            .unwrap(),
    ] {
        assert_eq!(bulk.done, 0);
        assert_eq!(
            sorted(bulk.skipped),
            sorted(vec![
                skipped(&ids[0], Skip::InState(JobState::Completed)),
                skipped(&ids[1], Skip::InState(JobState::Dead))
            ])
        );
    }
    let st = stats(&s.store, &q).await;
    assert_eq!((st.completed, st.dead), (1, 1));
}

/// Deleting a queue removes its jobs in every state, its settings and its name; a
/// worker still running one of its jobs has its outcome refused; the name can be used
/// again from scratch.
pub async fn deleting_a_queue_removes_everything_and_refuses_late_outcomes(s: Subject) {
    let q = unique_queue();
    let keep = unique_queue();
    let client = Client::new(s.store.clone());
    let config = QueueConfig {
        completed_max: 10,
        max_len: 50,
        ..QueueConfig::default()
    };
    s.store.configure(&q, &config).await.unwrap();
    enqueue(&s.store, &keep, vec![new_job(100)]).await;
    let ids = enqueue(&s.store, &q, (0..4).map(new_job).collect()).await;
    enqueue(&s.store, &q, vec![later(5)]).await;
    let done = claim(&s.store, &q, 1, LEASE, "w").await.pop().unwrap();
    s.store
        .finish(&[(done.lease, Outcome::Completed)])
        .await
        .unwrap();
    let dead = claim(&s.store, &q, 1, LEASE, "w").await.pop().unwrap();
    s.store
        .finish(&[(dead.lease, Outcome::Dead { error: "x".into() })])
        .await
        .unwrap();
    let running = claim(&s.store, &q, 1, LEASE, "w").await.pop().unwrap();
    s.store.set_paused(&q, true).await.unwrap();
    let st = stats(&s.store, &q).await;
    assert_eq!(
        (st.ready, st.scheduled, st.running, st.completed, st.dead),
        (1, 1, 1, 1, 1)
    );

    assert_eq!(client.delete_queue(&q).await.unwrap(), 5);
    let st = stats(&s.store, &q).await;
    assert_eq!(
        (
            st.ready,
            st.scheduled,
            st.running,
            st.completed,
            st.dead,
            st.paused
        ),
        (0, 0, 0, 0, 0, false)
    );
    assert!(
        !s.store.queues().await.unwrap().contains(&q),
        "its name is gone"
    );
    assert!(
        s.store.queues().await.unwrap().contains(&keep),
        "other queues stay"
    );
    assert_eq!(stats(&s.store, &keep).await.ready, 1);
    for id in &ids {
        assert!(s.store.job(&q, id).await.unwrap().is_none());
    }
    assert_eq!(
        s.store.config(&q).await.unwrap(),
        QueueConfig::default(),
        "settings are gone"
    );
    assert_eq!(
        s.store
            .heartbeat(std::slice::from_ref(&running.lease), LEASE, &[])
            .await
            .unwrap()
            .held,
        [false]
    );
    assert_eq!(
        s.store
            .finish(&[(running.lease, Outcome::Completed)])
            .await
            .unwrap(),
        [false]
    );
    assert_eq!(
        stats(&s.store, &q).await.completed,
        0,
        "a late outcome writes nothing"
    );
    assert_eq!(s.store.maintain(&q).await.unwrap().expired, 0);

    let fresh = enqueue(&s.store, &q, vec![new_job(9)]).await;
    let again = claim(&s.store, &q, 5, LEASE, "w").await;
    assert_eq!(again.len(), 1, "the name starts afresh, unpaused");
    assert_eq!(again[0].lease.id, fresh[0]);
    assert_eq!(
        client.delete_queue(&unique_queue()).await.unwrap(),
        0,
        "an unknown queue is nothing to delete"
    );
}

/// Redrive and purge by id say which named jobs were not dead, and where they are.
pub async fn redrive_and_purge_by_id_say_which_named_jobs_are_not_dead(s: Subject) {
    let q = unique_queue();
    let ids = enqueue(&s.store, &q, vec![new_job(1), new_job(2), new_job(3)]).await;
    let job = claim(&s.store, &q, 1, LEASE, "w").await.pop().unwrap();
    s.store
        .finish(&[(job.lease.clone(), Outcome::Dead { error: "x".into() })])
        .await
        .unwrap();
    let running = claim(&s.store, &q, 1, LEASE, "w").await.pop().unwrap();
    let unknown = JobId::new("404");
    let named = vec![
        job.lease.id.clone(),
        ids[2].clone(),
        running.lease.id.clone(),
        unknown.clone(),
    ];
    let expected = sorted(vec![
        skipped(&ids[2], Skip::InState(JobState::Ready)),
        skipped(&running.lease.id, Skip::InState(JobState::Running)),
        skipped(&unknown, Skip::NotFound),
    ]);
    let step = s
        .store
        .purge(&q, &JobFilter::Ids(named.clone()), &Cursor::start())
        .await
        .unwrap();
    assert_eq!((step.done, sorted(step.skipped)), (1, expected.clone()));
    assert!(s.store.job(&q, &job.lease.id).await.unwrap().is_none());
    let step = s
        .store
        .redrive(&q, &JobFilter::Ids(named), &Cursor::start())
        .await
        .unwrap();
    let mut expected = expected;
    expected.push(skipped(&job.lease.id, Skip::NotFound));
    assert_eq!((step.done, sorted(step.skipped)), (0, sorted(expected)));
    assert_eq!(stats(&s.store, &q).await.ready, 1, "nothing else moved");
}
