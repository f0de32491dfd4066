//! The [`Store`] implementation: each operation builds a script's arguments, runs the
//! script on the queue's keys, and decodes its reply.
//!
//! Operations on many leases or outcomes group them by queue (one script call per queue,
//! since a script touches only one queue's keys) and put the results back in the caller's
//! order. The argument layouts are the ones each script's header names.

use std::hash::{Hash, Hasher};
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use redis::{Script, Value};
use taskyard_core::schedule::StoredSchedule;
use taskyard_core::store::support::history;
use taskyard_core::{
    Beat, Claim, ClaimedJob, Cursor, DEFAULT_PRIORITY, Due, Enqueued, Error, JobFilter, JobId,
    JobInfo, JobState, Lease, LeaseToken, Maintenance, NewJob, Outcome, Page, QueueConfig,
    QueueName, QueueStats, Result, Skip, Skipped, Step, Store,
};

use crate::reply::{array, bytes, flags, info, int};
use crate::scripts::{events_channel, store_err};
use crate::{QUEUES_KEY, RedisStore, envelope};

#[async_trait::async_trait]
impl Store for RedisStore {
    async fn enqueue_report(&self, queue: &QueueName, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        self.remember(queue).await?;
        let n = jobs.len();
        let first = self.ids(n as u64).await?;
        let mut args = Vec::new();
        job_args(&mut args, &jobs, first);
        let out = match self.replica_ack {
            None => self.run(&self.inner.scripts.enqueue, queue, args).await?,
            Some(ack) => self.enqueue_acked(queue, args, ack).await?,
        };
        self.remember_again(queue, &out).await?;
        enqueued(queue, n, out)
    }

    async fn claim(
        &self,
        queue: &QueueName,
        max: usize,
        lease: Duration,
        token: &LeaseToken,
    ) -> Result<Claim> {
        let args = vec![
            max.to_string().into_bytes(),
            lease.as_millis().to_string().into_bytes(),
            token.as_bytes().to_vec(),
        ];
        let mut out = array(self.run(&self.inner.scripts.claim, queue, args).await?)?.into_iter();
        let _now = out.next();
        let next_due = match out.next().map(|v| int(&v)).transpose()? {
            Some(ms) if ms >= 0 => Some(Duration::from_millis(ms as u64)),
            _ => None,
        };
        let envs = array(out.next().unwrap_or(Value::Nil))?;
        let mut jobs = Vec::with_capacity(envs.len());
        let mut kind = None;
        for v in envs {
            // One unreadable envelope must not strand the rest of the batch: skip it, and
            // its lease expiry takes it to dead once its attempts are spent.
            let env = match bytes(v).and_then(|raw| envelope::parse_sharing(raw, &mut kind)) {
                Ok(env) => env,
                Err(e) => {
                    tracing::error!(queue = %queue, error = %e, "skipping an unreadable job");
                    continue;
                }
            };
            jobs.push(ClaimedJob {
                lease: Lease {
                    queue: queue.clone(),
                    token: token.clone(),
                    id: env.id,
                },
                kind: env.kind,
                payload: env.payload,
                // A running job's envelope holds the attempts made before this claim.
                attempt: env.attempt + 1,
                max_attempts: env.max_attempts,
                backoff: env.backoff,
                enqueued_at_ms: env.enqueued_at_ms,
                timeout: env.timeout,
            });
        }
        Ok(Claim { jobs, next_due })
    }

    async fn wait(&self, queues: &[QueueName], timeout: Duration) -> Result<()> {
        if queues.is_empty() {
            tokio::time::sleep(timeout).await;
            return Ok(());
        }
        self.wait_for_signal(queues, timeout).await
    }

    async fn heartbeat(
        &self,
        leases: &[Lease],
        lease: Duration,
        progress: &[(Lease, Bytes)],
    ) -> Result<Beat> {
        let mut beat = Beat {
            held: vec![false; leases.len()],
            cancelled: Vec::new(),
        };
        for (queue, idx) in by_queue(leases, |l| &l.queue) {
            // The worker sends each claim's token once (the core de-duplicates).
            let mut args = vec![
                lease.as_millis().to_string().into_bytes(),
                idx.len().to_string().into_bytes(),
            ];
            args.extend(idx.iter().map(|&i| arg(&leases[i].token)));
            // A report comes with its job's lease, whose token is among these.
            for (l, value) in progress.iter().filter(|(l, _)| l.queue == queue) {
                args.extend([arg(&l.token), arg(l.id.as_str()), value.to_vec()]);
            }
            let mut out = array(
                self.run(&self.inner.scripts.heartbeat, &queue, args)
                    .await?,
            )?
            .into_iter();
            let held = flags(out.next().unwrap_or(Value::Nil))?;
            for (&i, ok) in idx.iter().zip(held) {
                beat.held[i] = ok;
            }
            for id in array(out.next().unwrap_or(Value::Nil))? {
                beat.cancelled.push((queue.clone(), JobId::new(text(id)?)));
            }
        }
        Ok(beat)
    }

    async fn wait_cancel(&self, queues: &[QueueName], timeout: Duration) -> Result<()> {
        if queues.is_empty() {
            tokio::time::sleep(timeout).await;
            return Ok(());
        }
        let hub = &self.inner.events;
        let channels: Vec<String> = queues.iter().map(events_channel).collect();
        let deadline = tokio::time::Instant::now() + timeout;
        // Receivers first: a cancel published once they exist wakes this wait.
        let mut rxs: Vec<_> = channels.iter().map(|c| hub.cancels(c)).collect();
        match tokio::time::timeout_at(deadline, hub.subscribe(&channels)).await {
            Ok(r) => r?,
            Err(_) => return Ok(()),
        };
        let any = futures::future::select_all(rxs.iter_mut().map(|rx| Box::pin(rx.changed())));
        let _ = tokio::time::timeout_at(deadline, any).await;
        Ok(())
    }

    async fn wait_job(&self, queue: &QueueName, id: &JobId, timeout: Duration) -> Result<()> {
        let hub = &self.inner.events;
        let channel = events_channel(queue);
        let deadline = tokio::time::Instant::now() + timeout;
        let mut wait = hub.job(&channel, id.as_str());
        // Registered first (wait.lua), so an end from then on leaves its mark even before
        // the subscription is in place; checked again once it is, if that took a round
        // trip. An end before the registration, with no mark, is not seen here: the
        // caller found the job unfinished just before (see docs/redis.md).
        let args = vec![
            arg(id.as_str()),
            timeout.as_millis().max(1).to_string().into_bytes(),
        ];
        if int(&self
            .run(&self.inner.scripts.wait, queue, args.clone())
            .await?)?
            == 1
        {
            return Ok(());
        }
        let live =
            match tokio::time::timeout_at(deadline, hub.subscribe(std::slice::from_ref(&channel)))
                .await
            {
                Ok(r) => r?,
                Err(_) => return Ok(()),
            };
        if !live && int(&self.run(&self.inner.scripts.wait, queue, args).await?)? == 1 {
            return Ok(());
        }
        let _ = tokio::time::timeout_at(deadline, wait.ended()).await;
        Ok(())
    }

    async fn finish(&self, outcomes: &[(Lease, Outcome)]) -> Result<Vec<bool>> {
        let mut result = vec![false; outcomes.len()];
        for (queue, idx) in by_queue(outcomes, |(l, _)| &l.queue) {
            // Completed runs grouped by lease token, so the script handles each group
            // with a few variadic calls; then each failed run with its details.
            // A completion with a value goes with the failed runs: one item each.
            let (done, failed): (Vec<usize>, Vec<usize>) = idx
                .iter()
                .partition(|&&i| outcomes[i].1 == Outcome::Completed);
            let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
            for &i in &done {
                let token = &*outcomes[i].0.token;
                match groups.iter_mut().find(|(t, _)| *t == token) {
                    Some((_, members)) => members.push(i),
                    None => groups.push((token, vec![i])),
                }
            }
            let mut args = Vec::with_capacity(2 + groups.len() * 2 + done.len() + failed.len() * 5);
            // ARGV[1], the replay flag, is set below: the call's identity is the rest.
            args.push(Vec::new());
            args.push(groups.len().to_string().into_bytes());
            for (token, members) in &groups {
                args.push(arg(token));
                args.push(members.len().to_string().into_bytes());
                args.extend(members.iter().map(|&i| arg(outcomes[i].0.id.as_str())));
            }
            for &i in &failed {
                let (lease, outcome) = &outcomes[i];
                let (code, number, text) = match outcome {
                    Outcome::Completed => ("c", 0, Vec::new()),
                    Outcome::CompletedWith { result } => ("v", 0, result.to_vec()),
                    Outcome::Retry { delay_ms, error } => {
                        ("r", *delay_ms, history::clean(error).into_bytes())
                    }
                    Outcome::RetryAt { at_ms, error } => {
                        ("a", *at_ms, history::clean(error).into_bytes())
                    }
                    Outcome::Dead { error } => ("d", 0, history::clean(error).into_bytes()),
                    other => {
                        return Err(Error::InvalidOption(format!(
                            "this store cannot record the outcome {other:?}"
                        )));
                    }
                };
                args.push(arg(&lease.token));
                args.push(arg(lease.id.as_str()));
                args.push(arg(code));
                args.push(number.to_string().into_bytes());
                args.push(text);
            }
            // A call whose answer was lost (the connection failed after it was sent) is
            // retried by the worker with the same outcomes: known here by a hash of its
            // arguments, it runs as a replay, which counts a run whose job is no longer
            // held as recorded — the first call did it (finish.lua). The hash is taken
            // only when it is needed (some call's answer was lost, or this one's is):
            // hashing every call cost the worker ~1% of its time.
            let call = |args: &[Vec<u8>]| {
                let mut hasher = std::hash::DefaultHasher::new();
                args[1..].hash(&mut hasher);
                hasher.finish()
            };
            let replay = {
                let mut unanswered = self
                    .inner
                    .unanswered
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                !unanswered.is_empty() && unanswered.remove(&call(&args))
            };
            if replay {
                args[0] = b"r".to_vec();
            }
            let answer = self
                .run_borrowed(&self.inner.scripts.finish, &queue, &args)
                .await;
            let dropped = answer.is_ok() && self.inner.lose_answer.swap(false, Ordering::SeqCst);
            let recorded = match answer {
                Ok(v) if !dropped => flags(v)?,
                Ok(_) => {
                    self.unanswered(call(&args));
                    return Err(Error::Store(
                        "the answer was lost (a test dropped it)".into(),
                    ));
                }
                Err(e) => {
                    if answer_may_be_lost(&e) {
                        self.unanswered(call(&args));
                    }
                    return Err(e);
                }
            };
            let order = groups
                .iter()
                .flat_map(|(_, m)| m.iter())
                .chain(failed.iter());
            for (&i, ok) in order.zip(recorded) {
                result[i] = ok;
            }
        }
        Ok(result)
    }

    async fn release(&self, leases: &[Lease]) -> Result<Vec<bool>> {
        let mut result = vec![false; leases.len()];
        for (queue, idx) in by_queue(leases, |l| &l.queue) {
            let args = idx
                .iter()
                .flat_map(|&i| [arg(&leases[i].token), arg(leases[i].id.as_str())])
                .collect();
            let done = flags(self.run(&self.inner.scripts.release, &queue, args).await?)?;
            for (&i, ok) in idx.iter().zip(done) {
                result[i] = ok;
            }
        }
        Ok(result)
    }

    async fn maintain(&self, queue: &QueueName) -> Result<Maintenance> {
        let out = array(
            self.run(&self.inner.scripts.maintain, queue, Vec::new())
                .await?,
        )?;
        let get = |i: usize| {
            out.get(i)
                .map(int)
                .transpose()
                .map(|n| n.unwrap_or(0) as u64)
        };
        if get(2)? == 1 {
            tracing::error!(
                queue = %queue,
                "a taskyard 0.1 process wrote to this queue after it was upgraded: its jobs \
                 are under 0.1's keys, where this release does not look; stop every 0.1 \
                 process (see docs/upgrading.md)"
            );
        }
        Ok(Maintenance {
            promoted: get(0)?,
            expired: get(1)?,
        })
    }

    async fn now_ms(&self) -> Result<u64> {
        let mut conn = self.conn();
        let (secs, micros): (u64, u64) = redis::cmd("TIME")
            .query_async(&mut conn)
            .await
            .map_err(store_err)?;
        Ok(secs * 1000 + micros / 1000)
    }

    async fn queues(&self) -> Result<Vec<QueueName>> {
        let mut conn = self.conn();
        let mut names: Vec<String> = redis::cmd("SMEMBERS")
            .arg(QUEUES_KEY)
            .query_async(&mut conn)
            .await
            .map_err(store_err)?;
        names.sort();
        names.into_iter().map(QueueName::new).collect()
    }

    async fn stats(&self, queue: &QueueName) -> Result<QueueStats> {
        let out = array(
            self.run(&self.inner.scripts.stats, queue, Vec::new())
                .await?,
        )?;
        let n: Vec<u64> = out
            .iter()
            .map(|v| int(v).map(|n| n as u64))
            .collect::<Result<_>>()?;
        if n.len() != 7 {
            return Err(Error::Corrupt("stats returned the wrong count".into()));
        }
        Ok(QueueStats {
            queue: queue.to_string(),
            ready: n[0],
            scheduled: n[1],
            running: n[2],
            completed: n[3],
            dead: n[4],
            cancelled: n[6],
            paused: n[5] == 1,
        })
    }

    async fn list(
        &self,
        queue: &QueueName,
        state: JobState,
        after: &Cursor,
        limit: u64,
    ) -> Result<Page> {
        if limit == 0 {
            return Ok(Page::default());
        }
        let args = vec![
            state.as_str().as_bytes().to_vec(),
            after.as_str().as_bytes().to_vec(),
            limit.to_string().into_bytes(),
        ];
        let out = array(self.run(&self.inner.scripts.list, queue, args).await?)?;
        let mut it = out.into_iter();
        let next = match it.next() {
            Some(v) => String::from_utf8_lossy(&bytes(v)?).into_owned(),
            None => String::new(),
        };
        let mut jobs = Vec::new();
        while let (Some(env), Some(at), Some(errs), Some(extra)) =
            (it.next(), it.next(), it.next(), it.next())
        {
            jobs.push(info(queue, state, env, at, errs, extra)?);
        }
        Ok(Page {
            jobs,
            next: (!next.is_empty()).then(|| Cursor::new(next)),
        })
    }

    async fn job(&self, queue: &QueueName, id: &JobId) -> Result<Option<JobInfo>> {
        // A ready job is found by walking the ready list, a bounded step per script call
        // (find.lua), so a lookup on a long queue never holds Redis for long.
        let mut after = Vec::new();
        let out = loop {
            let args = vec![id.as_str().as_bytes().to_vec(), after];
            let out = array(self.run(&self.inner.scripts.find, queue, args).await?)?;
            if out.len() != 1 {
                break out;
            }
            after = bytes(out.into_iter().next().unwrap_or(Value::Nil))?.to_vec();
        };
        let mut it = out.into_iter();
        let (Some(state), Some(env), Some(at), Some(errs), Some(extra)) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        else {
            return Ok(None);
        };
        let state: JobState = String::from_utf8_lossy(&bytes(state)?).parse()?;
        info(queue, state, env, at, errs, extra).map(Some)
    }

    async fn redrive(&self, queue: &QueueName, filter: &JobFilter, after: &Cursor) -> Result<Step> {
        self.dead_step(&self.inner.scripts.redrive, queue, filter, after)
            .await
    }

    async fn purge(&self, queue: &QueueName, filter: &JobFilter, after: &Cursor) -> Result<Step> {
        self.dead_step(&self.inner.scripts.purge, queue, filter, after)
            .await
    }

    async fn run_now(&self, queue: &QueueName, filter: &JobFilter, after: &Cursor) -> Result<Step> {
        self.act("run", queue, filter, after).await
    }

    async fn delete(&self, queue: &QueueName, filter: &JobFilter, after: &Cursor) -> Result<Step> {
        self.act("delete", queue, filter, after).await
    }

    async fn cancel(&self, queue: &QueueName, filter: &JobFilter, after: &Cursor) -> Result<Step> {
        self.act("cancel", queue, filter, after).await
    }

    async fn delete_queue(&self, queue: &QueueName, _after: &Cursor) -> Result<Step> {
        // One call: UNLINK frees a queue of any size off Redis's main thread.
        Ok(Step {
            done: self.drop_queue(queue).await?,
            next: None,
            skipped: Vec::new(),
        })
    }

    async fn set_paused(&self, queue: &QueueName, paused: bool) -> Result<()> {
        self.remember(queue).await?;
        let op = if paused { "pause" } else { "resume" };
        let out = self
            .run(&self.inner.scripts.settings, queue, vec![arg(op)])
            .await?;
        self.remember_again(queue, &out).await
    }

    async fn config(&self, queue: &QueueName) -> Result<QueueConfig> {
        const NAMES: [&str; 6] = [
            "max_len",
            "dead_max",
            "dead_max_age_ms",
            "completed_max",
            "completed_max_age_ms",
            "result_ttl_ms",
        ];
        let mut args = vec![arg("get")];
        args.extend(NAMES.iter().map(|n| arg(n)));
        let v = array(self.run(&self.inner.scripts.settings, queue, args).await?)?;
        let d = QueueConfig::default();
        let get = |i: usize, default: u64| -> Result<u64> {
            match v.get(i) {
                None | Some(Value::Nil) => Ok(default),
                Some(x) => int(x).map(|n| n as u64),
            }
        };
        Ok(QueueConfig {
            max_len: get(0, d.max_len)?,
            dead_max: get(1, d.dead_max)?,
            dead_max_age_ms: get(2, d.dead_max_age_ms)?,
            completed_max: get(3, d.completed_max)?,
            completed_max_age_ms: get(4, d.completed_max_age_ms)?,
            result_ttl_ms: get(5, d.result_ttl_ms)?,
        })
    }

    async fn configure(&self, queue: &QueueName, config: &QueueConfig) -> Result<()> {
        crate::options::check_config(config)?;
        self.remember(queue).await?;
        let mut args = vec![arg("set")];
        for (name, value) in config.settings() {
            args.push(arg(name));
            args.push(value.to_string().into_bytes());
        }
        let out = self.run(&self.inner.scripts.settings, queue, args).await?;
        self.remember_again(queue, &out).await
    }

    async fn schedules(&self, queue: &QueueName) -> Result<Vec<StoredSchedule>> {
        let out = array(
            self.run(&self.inner.scripts.schedules, queue, Vec::new())
                .await?,
        )?;
        let mut it = out.into_iter();
        let mut all = Vec::new();
        while let (Some(name), Some(record)) = (it.next(), it.next()) {
            all.push(schedule_of(text(name)?, &bytes(record)?)?);
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    async fn put_schedule(&self, queue: &QueueName, schedule: &StoredSchedule) -> Result<bool> {
        self.remember(queue).await?;
        let args = vec![
            arg("put"),
            arg(&schedule.name),
            schedule.rev.to_string().into_bytes(),
            next_rev(schedule.rev)?,
            schedule.next_ms.to_string().into_bytes(),
            optional(schedule.last_ms),
            schedule
                .last_job
                .as_ref()
                .map(|id| arg(id.as_str()))
                .unwrap_or_default(),
            arg(if schedule.paused { "1" } else { "0" }),
            schedule.definition.to_vec(),
        ];
        let out = self.run(&self.inner.scripts.schedule, queue, args).await?;
        self.remember_again(queue, &out).await?;
        Ok(int(&out)? >= 1)
    }

    async fn remove_schedule(&self, queue: &QueueName, name: &str) -> Result<bool> {
        let args = vec![arg("remove"), arg(name)];
        let out = self.run(&self.inner.scripts.schedule, queue, args).await?;
        Ok(int(&out)? == 1)
    }

    async fn fire(
        &self,
        queue: &QueueName,
        name: &str,
        rev: u64,
        next_ms: u64,
        last_ms: Option<u64>,
        jobs: Vec<NewJob>,
    ) -> Result<Option<Vec<JobId>>> {
        // fire.lua checks the max length for enqueue.lua, which is exact only when every
        // job is added: no job may be a duplicate.
        if jobs.iter().any(|j| j.unique().is_some()) {
            return Err(Error::InvalidOption(format!(
                "schedule {name:?}: a fired job cannot hold a unique key"
            )));
        }
        self.remember(queue).await?;
        let n = jobs.len();
        // Ids are taken even when the schedule turns out not to fire: they stay unused,
        // as a duplicate's does.
        let first = if n == 0 { 0 } else { self.ids(n as u64).await? };
        let mut args = vec![
            arg(name),
            rev.to_string().into_bytes(),
            next_rev(rev)?,
            next_ms.to_string().into_bytes(),
            optional(last_ms),
        ];
        job_args(&mut args, &jobs, first);
        // Not waited for by replicas, even with `wait_replicas`: the jobs and the
        // schedule's move replicate as one script, so a failover loses both or neither,
        // and a lost fire is fired again from the new primary.
        let out = self.run(&self.inner.scripts.fire, queue, args).await?;
        self.remember_again(queue, &out).await?;
        let fired = match &out {
            Value::Array(v) => v.first().map(int).transpose()?,
            _ => None,
        };
        match fired {
            Some(-1) => Ok(None),
            Some(_) if n == 0 => Ok(Some(Vec::new())),
            Some(_) => Ok(Some(
                enqueued(queue, n, out)?.into_iter().map(|e| e.id).collect(),
            )),
            None => Err(Error::Corrupt(format!("fire answered {out:?}"))),
        }
    }
}

impl RedisStore {
    /// One step of a redrive or purge (see `select_in` in `common.lua`).
    async fn dead_step(
        &self,
        script: &Script,
        queue: &QueueName,
        filter: &JobFilter,
        after: &Cursor,
    ) -> Result<Step> {
        let named = match filter {
            JobFilter::Ids(ids) => self.not_dead(queue, ids).await?,
            _ => Vec::new(),
        };
        let mut args = filter_args(filter)?;
        args.insert(2, arg(after.as_str()));
        let mut out = array(self.run(script, queue, args).await?)?.into_iter();
        let mut step = step_of(&mut out)?;
        step.skipped = named;
        // Then per job a redrive left dead: its id and the holder of its key.
        while let (Some(id), Some(holder)) = (out.next(), out.next()) {
            step.skipped.push(Skipped {
                id: JobId::new(text(id)?),
                why: Skip::KeyHeld(JobId::new(text(holder)?)),
            });
        }
        Ok(step)
    }

    /// The named jobs that are not dead, with where they are, for a redrive or purge by
    /// ids to report: one `ZMSCORE` on the dead set, then a lookup of each job not in it
    /// (rare: operators name dead jobs).
    async fn not_dead(&self, queue: &QueueName, ids: &[JobId]) -> Result<Vec<Skipped>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let dead_key = &crate::scripts::keys(queue)[4];
        let scores: Vec<Option<f64>> = redis::cmd("ZMSCORE")
            .arg(dead_key)
            .arg(ids.iter().map(|id| id.as_str()).collect::<Vec<_>>())
            .query_async(&mut self.conn())
            .await
            .map_err(store_err)?;
        let mut out = Vec::new();
        for (id, score) in ids.iter().zip(scores) {
            if score.is_some() {
                continue;
            }
            let why = match self.job(queue, id).await? {
                Some(job) => Skip::InState(job.state),
                None => Skip::NotFound,
            };
            out.push(Skipped {
                id: id.clone(),
                why,
            });
        }
        Ok(out)
    }

    /// One step of a run-now (`op` "run"), a delete ("delete") or a cancel ("cancel"):
    /// `act.lua`.
    async fn act(
        &self,
        op: &str,
        queue: &QueueName,
        filter: &JobFilter,
        after: &Cursor,
    ) -> Result<Step> {
        let mut args = filter_args(filter)?;
        args.insert(0, arg(op));
        args.insert(3, arg(after.as_str()));
        let mut out = array(self.run(&self.inner.scripts.act, queue, args).await?)?.into_iter();
        let mut step = step_of(&mut out)?;
        // Then per named job not acted on: its id and its state ('' = no such job).
        while let (Some(id), Some(state)) = (out.next(), out.next()) {
            let state = text(state)?;
            step.skipped.push(Skipped {
                id: JobId::new(text(id)?),
                why: if state.is_empty() {
                    Skip::NotFound
                } else {
                    Skip::InState(state.parse()?)
                },
            });
        }
        Ok(step)
    }
}

/// A filter as the scripts take it: mode, kind, then (after the cursor the caller puts
/// in) the ids.
fn filter_args(filter: &JobFilter) -> Result<Vec<Vec<u8>>> {
    Ok(match filter {
        JobFilter::Ids(ids) => {
            let mut args = vec![arg("ids"), Vec::new()];
            args.extend(ids.iter().map(|id| arg(id.as_str())));
            args
        }
        JobFilter::Kind(kind) => vec![arg("kind"), arg(kind)],
        JobFilter::All => vec![arg("all"), Vec::new()],
        other => {
            return Err(Error::InvalidOption(format!(
                "this store cannot select jobs by {other:?}"
            )));
        }
    })
}

/// A step's first two replies: how many jobs it acted on, where the next resumes.
fn step_of(out: &mut impl Iterator<Item = Value>) -> Result<Step> {
    let done = int(&out.next().unwrap_or(Value::Nil))? as u64;
    let next = match out.next() {
        Some(v) => text(v)?,
        None => String::new(),
    };
    Ok(Step {
        done,
        next: (!next.is_empty()).then(|| Cursor::new(next)),
        skipped: Vec::new(),
    })
}

/// Appends enqueue.lua's arguments for `jobs`, their ids `first` on: the count, the first
/// id, then per job its due time and tail; a batch with a priority or a unique key
/// anywhere gives each job three more (enqueue.lua).
fn job_args(args: &mut Vec<Vec<u8>>, jobs: &[NewJob], first: u64) {
    let n = jobs.len();
    // A batch with no option keeps the plain layout, two arguments per job.
    let options = jobs
        .iter()
        .any(|j| j.priority() != DEFAULT_PRIORITY || j.unique().is_some());
    args.reserve(2 + if options { 5 } else { 2 } * n);
    args.push(n.to_string().into_bytes());
    args.push(first.to_string().into_bytes());
    for job in jobs {
        args.push(match job.due() {
            Due::Now => Vec::new(),
            Due::After(ms) => format!("+{ms}").into_bytes(),
            Due::At(ms) => format!("@{ms}").into_bytes(),
        });
        args.push(envelope::tail(job));
        if options {
            args.push(if job.priority() == DEFAULT_PRIORITY {
                Vec::new()
            } else {
                job.priority().to_string().into_bytes()
            });
            match job.unique() {
                Some(u) => {
                    args.push(envelope::mode_code(u.mode).into_bytes());
                    args.push(arg(&u.key));
                }
                None => args.extend([Vec::new(), Vec::new()]),
            }
        }
    }
}

/// Reads enqueue.lua's reply for a batch of `n` jobs: their ids, or `QueueFull`.
fn enqueued(queue: &QueueName, n: usize, out: Value) -> Result<Vec<Enqueued>> {
    let mut out = array(out)?.into_iter();
    let written = out.next().unwrap_or(Value::Nil);
    let second = out.next().unwrap_or(Value::Nil);
    if int(&written)? == 0 {
        return Err(Error::QueueFull {
            queue: queue.to_string(),
            len: int(&second).unwrap_or(0) as u64,
            max_len: out.next().map(|v| int(&v)).transpose()?.unwrap_or(0) as u64,
        });
    }
    let first = int(&second)?;
    let mut answers: Vec<Enqueued> = (0..n as i64)
        .map(|i| Enqueued {
            id: JobId::new((first + i).to_string()),
            duplicate: false,
        })
        .collect();
    // Then per duplicate: its 1-based index and its holder's id.
    while let (Some(index), Some(holder)) = (out.next(), out.next()) {
        let index = int(&index)? as usize;
        let answer = answers
            .get_mut(index.wrapping_sub(1))
            .ok_or_else(|| Error::Corrupt(format!("enqueue named job {index} of {n}")))?;
        *answer = Enqueued {
            id: JobId::new(String::from_utf8_lossy(&bytes(holder)?).into_owned()),
            duplicate: true,
        };
    }
    Ok(answers)
}

/// The revision a write stores: one past the one read.
fn next_rev(rev: u64) -> Result<Vec<u8>> {
    rev.checked_add(1)
        .map(|r| r.to_string().into_bytes())
        .ok_or_else(|| Error::InvalidOption(format!("schedule revision {rev} cannot grow")))
}

/// An optional number as the scripts take it: '' for none.
fn optional(n: Option<u64>) -> Vec<u8> {
    n.map(|n| n.to_string().into_bytes()).unwrap_or_default()
}

/// A schedule from its record in the schedules hash (schedule.lua):
/// "rev\tnext_ms\tlast_ms\tlast_job\tpaused\n" then the definition.
fn schedule_of(name: String, record: &Bytes) -> Result<StoredSchedule> {
    let corrupt = || Error::Corrupt(format!("schedule {name:?} has a malformed record"));
    let nl = record
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(corrupt)?;
    let head = std::str::from_utf8(&record[..nl]).map_err(|_| corrupt())?;
    let f: Vec<&str> = head.split('\t').collect();
    let [rev, next_ms, last_ms, last_job, paused] = f[..] else {
        return Err(corrupt());
    };
    let number = |s: &str| s.parse::<u64>().map_err(|_| corrupt());
    Ok(StoredSchedule {
        rev: number(rev)?,
        next_ms: number(next_ms)?,
        last_ms: (!last_ms.is_empty()).then(|| number(last_ms)).transpose()?,
        last_job: (!last_job.is_empty()).then(|| JobId::new(last_job.to_string())),
        paused: match paused {
            "0" => false,
            "1" => true,
            _ => return Err(corrupt()),
        },
        definition: record.slice(nl + 1..),
        name,
    })
}

fn text(v: Value) -> Result<String> {
    Ok(String::from_utf8_lossy(&bytes(v)?).into_owned())
}

fn arg(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// Whether a failed call may have run on Redis with its answer lost on the way back:
/// the connection failed or timed out once it was sent.
fn answer_may_be_lost(e: &Error) -> bool {
    let Error::Store(source) = e else {
        return false;
    };
    source
        .downcast_ref::<redis::RedisError>()
        .is_some_and(|re| re.is_io_error() || re.is_timeout() || re.is_connection_dropped())
}

impl RedisStore {
    /// Remembers a finish call whose answer may have been lost, so its retry is a replay.
    fn unanswered(&self, call: u64) {
        let mut calls = self
            .inner
            .unanswered
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // Bounded: a worker retries a call until it is answered, so only a store that
        // stays unreachable piles these up.
        if calls.len() >= 10_000 {
            calls.clear();
        }
        calls.insert(call);
    }
}

/// Groups items by queue, keeping each item's index to put results back in order.
fn by_queue<T>(items: &[T], queue: impl Fn(&T) -> &QueueName) -> Vec<(QueueName, Vec<usize>)> {
    let mut groups: Vec<(QueueName, Vec<usize>)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let q = queue(item);
        match groups.iter_mut().find(|(g, _)| g == q) {
            Some((_, idx)) => idx.push(i),
            None => groups.push((q.clone(), vec![i])),
        }
    }
    groups
}
