//! Periodic jobs: schedules the application declares, kept in the store, each tick
//! enqueued once by whichever worker gets there first — no leader.
//!
//! A [`Schedule`] names a cron expression, a time zone and the job to enqueue. The store
//! keeps each schedule with its next tick and a revision ([`StoredSchedule`]); a worker
//! that finds a tick due enqueues its job and moves the schedule to its next tick in one
//! atomic step that holds only if the revision it read is still the stored one
//! ([`Store::fire`](crate::Store::fire)). Every other worker's step for that tick finds
//! the revision moved and enqueues nothing, so a tick runs once however many workers
//! run, and a dead run changes nothing about the schedule.
//!
//! Time is the store's (Unix ms); the cron expression is read in the schedule's time
//! zone. Daylight-saving changes follow the rule of ISC cron and OCPS (see
//! docs/semantics.md, "Periodic jobs"): a schedule whose second, minute and hour are
//! single values ("fixed time", e.g. `30 2 * * *`) runs once in a repeated hour (its
//! first pass) and, when its time does not exist that day, once at the end of the gap;
//! any other schedule follows the clock: a repeated hour runs twice, a skipped one not
//! at all.

use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use std::sync::Arc;

use crate::{
    Client, EnqueueOptions, Error, Job, JobId, NewJob, QueueName, Result, RetryPolicy, Store,
};

/// What a worker does with due ticks when the oldest of them is overdue by more than
/// [`MISFIRE_GRACE`] — they were missed: no worker ran, or none could reach the store.
/// Within the grace every due tick runs, whatever the policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Misfire {
    /// The latest missed tick runs once; the others are dropped. The default: a report
    /// that was due every hour while the workers were down for a day runs once.
    #[default]
    Latest,
    /// Every missed tick runs, oldest first ([`MAX_CATCH_UP`] per step of the worker, so
    /// a long outage is caught up in steps).
    All,
    /// Missed ticks do not run; the schedule goes on with its first tick after now.
    Skip,
}

impl FromStr for Misfire {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "latest" => Ok(Misfire::Latest),
            "all" => Ok(Misfire::All),
            "skip" => Ok(Misfire::Skip),
            _ => Err(Error::InvalidOption(format!(
                "misfire policy {s:?} is none of latest, all, skip"
            ))),
        }
    }
}

/// How late a tick may be enqueued and still count as on time: 60 s. Past it the tick
/// was missed, and the schedule's [`Misfire`] policy decides.
pub const MISFIRE_GRACE: Duration = Duration::from_secs(60);

/// The most ticks one worker enqueues for a schedule in one step (with
/// [`Misfire::All`] after an outage); the rest come in the next steps.
pub const MAX_CATCH_UP: usize = 100;

/// The longest schedule name, in bytes.
pub const MAX_SCHEDULE_NAME: usize = 128;

/// A periodic job as the application declares it: a name (unique within its queue), a
/// cron expression, a time zone, and the job each tick enqueues.
///
/// ```
/// use taskyard_core::{EnqueueOptions, Job, schedule::Schedule};
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Report { daily: bool }
/// impl Job for Report { const KIND: &'static str = "report"; }
///
/// let s = Schedule::of("nightly-report", "0 30 2 * * *", &Report { daily: true },
///                      &EnqueueOptions::default().queue("reports"))
///     .unwrap()
///     .time_zone("Europe/Berlin")
///     .unwrap();
/// assert_eq!(s.queue().as_str(), "reports");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    name: String,
    cron: String,
    tz: String,
    queue: String,
    kind: String,
    payload: String,
    max_attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    backoff: Option<[u64; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u64>,
    priority: u8,
    #[serde(default)]
    misfire: Misfire,
    version: u32,
}

impl Schedule {
    /// A schedule of a typed job: its kind, payload and retry policy, with `opts`
    /// (queue, priority, attempts, retry policy, timeout). A delay or a unique key makes
    /// no sense for a tick and is refused. Time zone UTC, [`Misfire::Latest`], version 1
    /// until told otherwise.
    pub fn of<J: Job>(name: &str, cron: &str, job: &J, opts: &EnqueueOptions) -> Result<Self> {
        let payload = serde_json::to_vec(job)?;
        Self::raw(name, cron, J::KIND, payload, opts, J::retry_policy())
    }

    /// A schedule of a job given by kind and JSON payload (what the CLI declares), with
    /// `policy` where the options give no attempts or retry policy.
    pub fn raw(
        name: &str,
        cron: &str,
        kind: &str,
        payload: Vec<u8>,
        opts: &EnqueueOptions,
        policy: RetryPolicy,
    ) -> Result<Self> {
        check_name(name)?;
        parse_cron(cron)?;
        if opts.due != crate::Due::Now {
            return Err(Error::InvalidOption(format!(
                "schedule {name:?}: a delay makes no sense for a periodic job (its cron \
                 expression says when it runs)"
            )));
        }
        if opts.unique.is_some() {
            return Err(Error::InvalidOption(format!(
                "schedule {name:?}: a unique key makes no sense for a periodic job (each \
                 tick is enqueued once already)"
            )));
        }
        let queue = QueueName::new(opts.queue.clone().unwrap_or_else(|| "default".into()))?;
        let job = NewJob::new(kind, payload, opts, policy)?;
        if serde_json::from_slice::<serde::de::IgnoredAny>(job.payload()).is_err() {
            return Err(Error::InvalidOption(format!(
                "schedule {name:?}: the payload is not JSON"
            )));
        }
        Ok(Schedule {
            name: name.to_string(),
            cron: cron.trim().to_string(),
            tz: "UTC".into(),
            queue: queue.as_str().to_string(),
            kind: kind.to_string(),
            payload: String::from_utf8_lossy(job.payload()).into_owned(),
            max_attempts: job.max_attempts(),
            backoff: job.backoff().map(|b| [b.base_ms, b.cap_ms]),
            timeout_ms: job.timeout().map(|t| t.as_millis() as u64),
            priority: job.priority(),
            misfire: Misfire::default(),
            version: 1,
        })
    }

    /// Reads the cron expression in this IANA time zone (`Europe/Berlin`); `UTC` unless
    /// told. An unknown zone is `Error::InvalidOption`.
    pub fn time_zone(mut self, tz: &str) -> Result<Self> {
        zone(tz)?;
        self.tz = tz.to_string();
        Ok(self)
    }

    /// What happens to ticks missed while no worker ran ([`Misfire::Latest`] unless told).
    pub fn misfire(mut self, misfire: Misfire) -> Self {
        self.misfire = misfire;
        self
    }

    /// The definition's version (1 unless told): when two processes declare different
    /// definitions under one name — a rolling deploy — the higher version wins and a
    /// lower one is ignored; two different definitions of the same version are an error.
    pub fn version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its cron expression.
    pub fn cron(&self) -> &str {
        &self.cron
    }

    /// Its time zone.
    pub fn tz(&self) -> &str {
        &self.tz
    }

    /// The queue its jobs go to.
    pub fn queue(&self) -> QueueName {
        QueueName::new(self.queue.clone())
            .expect("a schedule's queue name is checked when it is made and when it is read")
    }

    /// The kind of its jobs.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The payload of its jobs (JSON text).
    pub fn payload(&self) -> &str {
        &self.payload
    }

    /// Its misfire policy.
    pub fn misfire_policy(&self) -> Misfire {
        self.misfire
    }

    /// Its version.
    pub fn definition_version(&self) -> u32 {
        self.version
    }

    /// The job one tick enqueues.
    pub fn job(&self) -> Result<NewJob> {
        let mut opts = EnqueueOptions::default()
            .max_attempts(self.max_attempts)
            .priority(i64::from(self.priority));
        if let Some([base, cap]) = self.backoff {
            opts = opts.retry(
                RetryPolicy::default()
                    .max_attempts(self.max_attempts)
                    .base(Duration::from_millis(base))
                    .cap(Duration::from_millis(cap)),
            );
        }
        if let Some(t) = self.timeout_ms {
            opts = opts.timeout(Duration::from_millis(t));
        }
        NewJob::new(
            &self.kind,
            self.payload.clone().into_bytes(),
            &opts,
            RetryPolicy::default(),
        )
    }

    /// The definition as the store keeps it (JSON).
    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("a schedule encodes"))
    }

    /// A definition as the store kept it, checked again.
    pub fn decode(raw: &[u8]) -> Result<Self> {
        let s: Schedule = serde_json::from_slice(raw)
            .map_err(|e| Error::Corrupt(format!("a stored schedule: {e}")))?;
        check_name(&s.name)?;
        QueueName::new(s.queue.clone())?;
        parse_cron(&s.cron)?;
        zone(&s.tz)?;
        Ok(s)
    }

    /// The first tick strictly after `after_ms` (Unix ms), or `None` when the expression
    /// has no later tick (a year field in the past).
    pub fn next_after(&self, after_ms: u64) -> Result<Option<u64>> {
        let cron = parse_cron(&self.cron)?;
        let tz = zone(&self.tz)?;
        next_tick(&cron, &tz, after_ms)
    }

    /// What a worker does for this schedule at `now_ms` when its next tick is
    /// `next_ms` (due: `next_ms <= now_ms`): the ticks to enqueue, by its misfire policy,
    /// and where the schedule goes next.
    pub fn plan(&self, next_ms: u64, now_ms: u64) -> Result<Plan> {
        let cron = parse_cron(&self.cron)?;
        let tz = zone(&self.tz)?;
        if next_ms > now_ms {
            return Ok(Plan {
                ticks: Vec::new(),
                next_ms: Some(next_ms),
            });
        }
        // Ticks from `from` (a tick) on, up to now, at most MAX_CATCH_UP; and the tick
        // after the last of them (still due when the cap cut the run short).
        let run = |from: u64| -> Result<(Vec<u64>, Option<u64>)> {
            let mut ticks = vec![from];
            loop {
                match next_tick(&cron, &tz, *ticks.last().expect("a tick"))? {
                    Some(t) if t <= now_ms && ticks.len() < MAX_CATCH_UP => ticks.push(t),
                    next => return Ok((ticks, next)),
                }
            }
        };
        let grace = MISFIRE_GRACE.as_millis() as u64;
        // Within the grace nothing was missed (the workers were busy, or a step came a
        // little late): every due tick runs. Past it, the workers were down or cut off,
        // and the policy decides.
        let missed = next_ms < now_ms.saturating_sub(grace);
        let (ticks, next) = match self.misfire {
            _ if !missed => run(next_ms)?,
            Misfire::All => run(next_ms)?,
            Misfire::Latest => {
                // The latest due tick, straight: a day of missed ticks every second is
                // one search, not 86,400.
                let latest = prev_tick(&cron, &tz, now_ms)?
                    .filter(|&t| t >= next_ms)
                    .unwrap_or(next_ms);
                (vec![latest], next_tick(&cron, &tz, now_ms)?)
            }
            Misfire::Skip => (Vec::new(), next_tick(&cron, &tz, now_ms)?),
        };
        Ok(Plan {
            ticks,
            next_ms: next,
        })
    }
}

/// What one worker's step does for a due schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The ticks to enqueue a job for (Unix ms), oldest first; may be empty (missed
    /// ticks skipped).
    pub ticks: Vec<u64>,
    /// The schedule's next tick; `None` when the expression has no more.
    pub next_ms: Option<u64>,
}

/// A schedule as a store keeps it: the definition (opaque to the store) and the state
/// the store decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSchedule {
    /// The schedule's name, unique within its queue.
    pub name: String,
    /// The definition, as [`Schedule::encode`] wrote it.
    pub definition: Bytes,
    /// The next tick (Unix ms, store time); `u64::MAX` when it has none left.
    pub next_ms: u64,
    /// The last tick a job was enqueued for.
    pub last_ms: Option<u64>,
    /// The job that tick enqueued.
    pub last_job: Option<JobId>,
    /// Whether it is paused (no tick is enqueued while it is).
    pub paused: bool,
    /// Bumped by the store on every change: a change names the revision it read and
    /// holds only while that is still the stored one. 0 = not stored.
    pub rev: u64,
}

/// A schedule as listed: its definition and where it stands.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleInfo {
    /// The definition.
    #[serde(flatten)]
    pub schedule: Schedule,
    /// The next tick, Unix ms; `None` when the expression has no more.
    pub next_ms: Option<u64>,
    /// The last tick a job was enqueued for, Unix ms.
    pub last_ms: Option<u64>,
    /// The job that tick enqueued.
    pub last_job: Option<JobId>,
    /// Whether it is paused.
    pub paused: bool,
}

impl ScheduleInfo {
    /// Reads a stored schedule.
    pub fn from_stored(s: &StoredSchedule) -> Result<Self> {
        Ok(ScheduleInfo {
            schedule: Schedule::decode(&s.definition)?,
            next_ms: (s.next_ms != u64::MAX).then_some(s.next_ms),
            last_ms: s.last_ms,
            last_job: s.last_job.clone(),
            paused: s.paused,
        })
    }
}

/// What declaring a schedule did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Declared {
    /// It was new: stored, its first tick the first after now.
    Created,
    /// The store holds this very definition: nothing changed (its next tick stays).
    Unchanged,
    /// The store held a lower version: replaced, its last run kept.
    Replaced,
    /// The store holds a higher version (a process of the next release declared it):
    /// nothing changed.
    Older,
}

/// Declaring, listing and acting on schedules: the library side of `taskyard cron`.
impl Client {
    /// Declares a schedule (the application does this at start, from every process):
    /// stores it if it is new, with its first tick the first after now; does nothing if
    /// the store holds the same definition; replaces a lower version (its last run
    /// kept, its next tick the new expression's first after the old next tick or now,
    /// whichever is earlier, so a due tick is neither lost nor run twice); ignores a
    /// higher one. The same version with another definition is
    /// [`Error::ScheduleConflict`], and nothing changes. Safe to call from many
    /// processes at once.
    pub async fn schedule(&self, schedule: &Schedule) -> Result<Declared> {
        let queue = schedule.queue();
        loop {
            let now = self.store().now_ms().await?;
            let stored = self.stored(&queue, schedule.name()).await?;
            let (put, declared) = match stored {
                None => {
                    let put = StoredSchedule {
                        name: schedule.name().to_string(),
                        definition: schedule.encode(),
                        next_ms: schedule.next_after(now)?.unwrap_or(u64::MAX),
                        last_ms: None,
                        last_job: None,
                        paused: false,
                        rev: 0,
                    };
                    (put, Declared::Created)
                }
                Some(old) => {
                    let def = Schedule::decode(&old.definition)?;
                    if def.version > schedule.version {
                        return Ok(Declared::Older);
                    }
                    if def.version == schedule.version {
                        if def == *schedule {
                            return Ok(Declared::Unchanged);
                        }
                        return Err(Error::ScheduleConflict {
                            queue: queue.to_string(),
                            name: schedule.name().to_string(),
                            version: schedule.version,
                        });
                    }
                    let from = old.next_ms.saturating_sub(1).min(now);
                    let put = StoredSchedule {
                        definition: schedule.encode(),
                        next_ms: schedule.next_after(from)?.unwrap_or(u64::MAX),
                        ..old
                    };
                    (put, Declared::Replaced)
                }
            };
            // `put.rev` is the revision read: the write holds only if it is still the
            // stored one; otherwise another process changed it, and we look again.
            if self.store().put_schedule(&queue, &put).await? {
                return Ok(declared);
            }
        }
    }

    /// The schedules of a queue, by name.
    pub async fn schedules(&self, queue: &QueueName) -> Result<Vec<ScheduleInfo>> {
        let mut out = Vec::new();
        for s in self.store().schedules(queue).await? {
            out.push(ScheduleInfo::from_stored(&s)?);
        }
        Ok(out)
    }

    /// The schedules of every queue, by queue and name.
    pub async fn all_schedules(&self) -> Result<Vec<ScheduleInfo>> {
        let mut out = Vec::new();
        for queue in self.store().queues().await? {
            out.extend(self.schedules(&queue).await?);
        }
        Ok(out)
    }

    /// Pauses a schedule: no tick is enqueued until it is resumed (ticks meanwhile are
    /// not run later). Pausing a paused schedule changes nothing.
    pub async fn pause_schedule(&self, queue: &QueueName, name: &str) -> Result<()> {
        self.change(queue, name, |s, _| {
            s.paused = true;
            Ok(())
        })
        .await
    }

    /// Resumes a schedule: its next tick is the first after now. Resuming a running
    /// schedule changes nothing.
    pub async fn resume_schedule(&self, queue: &QueueName, name: &str) -> Result<()> {
        self.change(queue, name, |s, now| {
            if s.paused {
                let def = Schedule::decode(&s.definition)?;
                s.paused = false;
                s.next_ms = def.next_after(now)?.unwrap_or(u64::MAX);
            }
            Ok(())
        })
        .await
    }

    /// Removes a schedule (its jobs already enqueued stay). A process that declares it
    /// again stores it again.
    pub async fn remove_schedule(&self, queue: &QueueName, name: &str) -> Result<()> {
        if self.store().remove_schedule(queue, name).await? {
            Ok(())
        } else {
            Err(unknown(queue, name))
        }
    }

    /// Enqueues a schedule's job now, apart from its ticks: its next tick and last run
    /// stay as they are.
    pub async fn run_schedule(&self, queue: &QueueName, name: &str) -> Result<JobId> {
        let stored = self
            .stored(queue, name)
            .await?
            .ok_or_else(|| unknown(queue, name))?;
        let def = Schedule::decode(&stored.definition)?;
        let mut ids = self.store().enqueue(queue, vec![def.job()?]).await?;
        ids.pop()
            .ok_or_else(|| Error::Corrupt("an enqueue answered no id".into()))
    }

    async fn stored(&self, queue: &QueueName, name: &str) -> Result<Option<StoredSchedule>> {
        Ok(self
            .store()
            .schedules(queue)
            .await?
            .into_iter()
            .find(|s| s.name == name))
    }

    /// Reads a schedule, changes it and writes it back if no one changed it meanwhile;
    /// else reads it again.
    async fn change(
        &self,
        queue: &QueueName,
        name: &str,
        f: impl Fn(&mut StoredSchedule, u64) -> Result<()>,
    ) -> Result<()> {
        loop {
            let now = self.store().now_ms().await?;
            let Some(mut s) = self.stored(queue, name).await? else {
                return Err(unknown(queue, name));
            };
            let before = s.clone();
            f(&mut s, now)?;
            if s == before || self.store().put_schedule(queue, &s).await? {
                return Ok(());
            }
        }
    }
}

fn unknown(queue: &QueueName, name: &str) -> Error {
    Error::UnknownSchedule {
        queue: queue.to_string(),
        name: name.to_string(),
    }
}

/// One worker's step on a queue's schedules: fires every due one (the store lets one
/// worker per tick through), and answers the store's time and the earliest next tick
/// of the schedules not paused, for the worker to sleep until.
pub(crate) async fn fire_due(
    store: &Arc<dyn Store>,
    queue: &QueueName,
) -> Result<(u64, Option<u64>)> {
    let now = store.now_ms().await?;
    let mut earliest: Option<u64> = None;
    for s in store.schedules(queue).await? {
        if s.paused {
            continue;
        }
        let mut next = s.next_ms;
        if s.next_ms <= now {
            let def = match Schedule::decode(&s.definition) {
                Ok(def) => def,
                Err(e) => {
                    tracing::warn!(queue = %queue, schedule = %s.name, error = %e, "a schedule this worker cannot read: skipped");
                    continue;
                }
            };
            let plan = def.plan(s.next_ms, now)?;
            let jobs = plan
                .ticks
                .iter()
                .map(|_| def.job())
                .collect::<Result<Vec<_>>>()?;
            next = plan.next_ms.unwrap_or(u64::MAX);
            let last = plan.ticks.last().copied().or(s.last_ms);
            let fired = store.fire(queue, &s.name, s.rev, next, last, jobs).await?;
            match fired {
                Some(ids) if !ids.is_empty() => {
                    tracing::debug!(queue = %queue, schedule = %s.name, jobs = ids.len(), "schedule fired")
                }
                Some(_) => {
                    tracing::info!(queue = %queue, schedule = %s.name, "missed ticks skipped")
                }
                // Another worker fired it (or it changed): its next tick is read next time.
                None => {}
            }
        }
        if next != u64::MAX {
            earliest = Some(earliest.map_or(next, |e| e.min(next)));
        }
    }
    Ok((now, earliest))
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_SCHEDULE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidOption(format!(
            "schedule name {name:?} must be 1-{MAX_SCHEDULE_NAME} characters of \
             [A-Za-z0-9_.:-]"
        )))
    }
}

/// A cron expression: five fields (minute to weekday) or six (seconds first), with
/// names, ranges, steps, lists, `L`, `W`, `#` and the `@daily` nicknames.
fn parse_cron(expr: &str) -> Result<Cron> {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .build()
        .parse(expr.trim())
        .map_err(|e| Error::InvalidOption(format!("cron expression {expr:?}: {e}")))
}

fn zone(tz: &str) -> Result<TimeZone> {
    TimeZone::get(tz).map_err(|_| {
        Error::InvalidOption(format!(
            "unknown time zone {tz:?}: give an IANA name such as UTC or Europe/Berlin"
        ))
    })
}

/// The last tick at or before `at_ms`.
fn prev_tick(cron: &Cron, tz: &TimeZone, at_ms: u64) -> Result<Option<u64>> {
    let at = Timestamp::from_millisecond(at_ms as i64)
        .map_err(|e| Error::InvalidOption(format!("time {at_ms} ms: {e}")))?
        .to_zoned(tz.clone());
    match cron.find_previous_occurrence(&at, true) {
        Ok(prev) => {
            let ms = prev.timestamp().as_millisecond();
            Ok((ms >= 0 && ms <= at_ms as i64).then_some(ms as u64))
        }
        Err(_) => Ok(None),
    }
}

fn next_tick(cron: &Cron, tz: &TimeZone, after_ms: u64) -> Result<Option<u64>> {
    let at = Timestamp::from_millisecond(after_ms as i64)
        .map_err(|e| Error::InvalidOption(format!("time {after_ms} ms: {e}")))?
        .to_zoned(tz.clone());
    match cron.find_next_occurrence(&at, false) {
        Ok(next) => {
            let ms = next.timestamp().as_millisecond();
            Ok((ms > after_ms as i64).then_some(ms as u64))
        }
        Err(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn at(tz: &str, y: i16, mo: i8, d: i8, h: i8, mi: i8) -> u64 {
        let tz = TimeZone::get(tz).unwrap();
        tz.to_ambiguous_zoned(date(y, mo, d).at(h, mi, 0, 0))
            .earlier()
            .unwrap()
            .timestamp()
            .as_millisecond() as u64
    }

    /// A schedule of an empty job, by name and expression.
    fn def(name: &str, expr: &str) -> Result<Schedule> {
        Schedule::raw(
            name,
            expr,
            "k",
            b"{}".to_vec(),
            &EnqueueOptions::default(),
            RetryPolicy::default(),
        )
    }

    fn ticks(expr: &str, tz: &str, from: u64, n: usize) -> Vec<String> {
        let s = def("t", expr).unwrap().time_zone(tz).unwrap();
        let zone = TimeZone::get(tz).unwrap();
        let mut out = Vec::new();
        let mut after = from;
        for _ in 0..n {
            let Some(t) = s.next_after(after).unwrap() else {
                break;
            };
            let z = Timestamp::from_millisecond(t as i64)
                .unwrap()
                .to_zoned(zone.clone());
            out.push(z.strftime("%d %H:%M:%S%z").to_string());
            after = t;
        }
        out
    }

    #[test]
    fn a_fixed_time_runs_at_the_end_of_a_spring_gap_and_once_in_a_repeated_hour() {
        // Europe/Berlin: 2026-03-29 02:00 -> 03:00, 2026-10-25 03:00 -> 02:00.
        let spring = at("Europe/Berlin", 2026, 3, 28, 12, 0);
        assert_eq!(
            ticks("30 2 * * *", "Europe/Berlin", spring, 3),
            ["29 03:00:00+0200", "30 02:30:00+0200", "31 02:30:00+0200"]
        );
        let fall = at("Europe/Berlin", 2026, 10, 24, 12, 0);
        assert_eq!(
            ticks("30 2 * * *", "Europe/Berlin", fall, 2),
            ["25 02:30:00+0200", "26 02:30:00+0100"]
        );
    }

    #[test]
    fn a_schedule_that_follows_the_clock_skips_a_gap_and_runs_a_repeated_hour_twice() {
        let spring = at("Europe/Berlin", 2026, 3, 29, 1, 0);
        assert_eq!(
            ticks("*/30 * * * *", "Europe/Berlin", spring, 3),
            ["29 01:30:00+0100", "29 03:00:00+0200", "29 03:30:00+0200"]
        );
        let fall = at("Europe/Berlin", 2026, 10, 25, 1, 50);
        assert_eq!(
            ticks("*/30 * * * *", "Europe/Berlin", fall, 5),
            [
                "25 02:00:00+0200",
                "25 02:30:00+0200",
                "25 02:00:00+0100",
                "25 02:30:00+0100",
                "25 03:00:00+0100"
            ]
        );
        // An hour range is not a fixed time: it follows the clock too.
        let spring = at("Europe/Berlin", 2026, 3, 29, 0, 0);
        assert_eq!(
            ticks("15 1-3 * * *", "Europe/Berlin", spring, 2),
            ["29 01:15:00+0100", "29 03:15:00+0200"]
        );
    }

    #[test]
    fn seconds_are_optional_and_utc_is_the_default() {
        let from = at("UTC", 2026, 1, 1, 0, 0);
        assert_eq!(
            ticks("*/20 * * * * *", "UTC", from, 3),
            ["01 00:00:20+0000", "01 00:00:40+0000", "01 00:01:00+0000"]
        );
        assert_eq!(ticks("@hourly", "UTC", from, 1), ["01 01:00:00+0000"]);
    }

    #[test]
    fn bad_definitions_are_refused_with_what_is_wrong() {
        let raw = def;
        for expr in ["61 * * * *", "* * *", "every day", "*/0 * * * *", ""] {
            let e = raw("n", expr).unwrap_err().to_string();
            assert!(e.contains("cron expression"), "{expr:?}: {e}");
        }
        for name in ["", "a b", "ü", &"x".repeat(129)] {
            let e = raw(name, "* * * * *").unwrap_err().to_string();
            assert!(e.contains("schedule name"), "{name:?}: {e}");
        }
        let e = raw("n", "* * * * *")
            .unwrap()
            .time_zone("Mars/Olympus")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown time zone"), "{e}");
        let opts = EnqueueOptions::default().delay(Duration::from_secs(1));
        let e = Schedule::raw(
            "n",
            "* * * * *",
            "k",
            b"{}".to_vec(),
            &opts,
            RetryPolicy::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("delay"), "{e}");
        let e = Schedule::raw(
            "n",
            "* * * * *",
            "k",
            b"not json".to_vec(),
            &EnqueueOptions::default(),
            RetryPolicy::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not JSON"), "{e}");
        // A stored definition is checked again when read: a queue name it could not
        // have been made with is refused, not read as another queue.
        let mut stored: serde_json::Value =
            serde_json::from_slice(&def("n", "* * * * *").unwrap().encode()).unwrap();
        stored["queue"] = "a{b}".into();
        let raw = serde_json::to_vec(&stored).unwrap();
        assert!(Schedule::decode(&raw).is_err());
        let bad_queue = EnqueueOptions::default().queue("a{b}");
        assert!(
            Schedule::raw(
                "n",
                "* * * * *",
                "k",
                b"{}".to_vec(),
                &bad_queue,
                RetryPolicy::default()
            )
            .is_err()
        );
    }

    fn every_minute(misfire: Misfire) -> Schedule {
        def("m", "* * * * *").unwrap().misfire(misfire)
    }

    #[test]
    fn a_tick_on_time_runs_whatever_the_policy() {
        let t = at("UTC", 2026, 1, 1, 0, 0);
        for m in [Misfire::Latest, Misfire::All, Misfire::Skip] {
            let p = every_minute(m).plan(t, t + 3).unwrap();
            assert_eq!(p.ticks, [t], "{m:?}");
            assert_eq!(p.next_ms, Some(t + 60_000));
        }
    }

    #[test]
    fn missed_ticks_follow_the_policy() {
        let t = at("UTC", 2026, 1, 1, 0, 0);
        // Ten minutes down: ticks at t .. t+10 min are due, t+10 min on time.
        let now = t + 10 * 60_000 + 5;
        let latest = every_minute(Misfire::Latest).plan(t, now).unwrap();
        assert_eq!(latest.ticks, [t + 10 * 60_000]);
        assert_eq!(latest.next_ms, Some(t + 11 * 60_000));
        let all = every_minute(Misfire::All).plan(t, now).unwrap();
        assert_eq!(
            all.ticks,
            (0..=10).map(|i| t + i * 60_000).collect::<Vec<_>>()
        );
        let skip = every_minute(Misfire::Skip).plan(t, now).unwrap();
        assert!(skip.ticks.is_empty());
        assert_eq!(skip.next_ms, Some(t + 11 * 60_000));
        // Late within the grace (a busy worker, not an outage): every due tick runs.
        let busy = every_minute(Misfire::Skip).plan(t, t + 59_000).unwrap();
        assert_eq!(busy.ticks, [t]);
        let busy = def("s", "* * * * * *").unwrap().plan(t, t + 2_500).unwrap();
        assert_eq!(busy.ticks, [t, t + 1000, t + 2000]);
        assert_eq!(busy.next_ms, Some(t + 3000));
        let hourly = def("h", "0 * * * *").unwrap().misfire(Misfire::Skip);
        let skip = hourly.plan(t, t + 150 * 60_000).unwrap();
        assert!(skip.ticks.is_empty(), "all missed");
        assert_eq!(skip.next_ms, Some(t + 3 * 3_600_000));
        // A day down: All catches up MAX_CATCH_UP at a time; Latest runs the latest
        // once, in one step.
        let now = t + 24 * 3_600_000;
        let all = every_minute(Misfire::All).plan(t, now).unwrap();
        assert_eq!(all.ticks.len(), MAX_CATCH_UP);
        assert_eq!(all.next_ms, Some(t + MAX_CATCH_UP as u64 * 60_000));
        let latest = every_minute(Misfire::Latest).plan(t, now + 7).unwrap();
        assert_eq!(latest.ticks, [now]);
        assert_eq!(latest.next_ms, Some(now + 60_000));
        let skip = every_minute(Misfire::Skip).plan(t, now + 7).unwrap();
        assert!(skip.ticks.is_empty());
        // Nothing due yet: nothing to do.
        let early = every_minute(Misfire::All).plan(now, now - 1).unwrap();
        assert!(early.ticks.is_empty());
        assert_eq!(early.next_ms, Some(now));
    }
}
