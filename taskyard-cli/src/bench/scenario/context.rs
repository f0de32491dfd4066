//! What every scenario is handed: its store, queue and directory, its sizes, and the
//! waits, enqueues and workers (in this process or as child processes) it builds from.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use taskyard::{AnyStore, Client, EnqueueOptions, JobId, NewJob, QueueName, RetryPolicy};
use taskyard_cli::process::WorkerProcess;

use super::Res;

/// Sizes: full by default, `--quick` for tests.
#[derive(Clone, Copy)]
pub(super) struct Size {
    pub(super) quick: bool,
}

impl Size {
    pub(super) fn pick<T>(self, full: T, quick: T) -> T {
        if self.quick { quick } else { full }
    }
}

pub(super) struct Ctx {
    pub(super) store: AnyStore,
    pub(super) url: String,
    pub(super) queue: QueueName,
    pub(super) dir: PathBuf,
    pub(super) size: Size,
}

impl Ctx {
    pub(super) fn client(&self) -> Client {
        Client::new(self.store.shared())
    }

    pub(super) fn opts(&self) -> EnqueueOptions {
        EnqueueOptions::default().queue(self.queue.as_str())
    }

    /// Enqueues `n` jobs of one kind and payload, in batches; returns their ids.
    pub(super) async fn enqueue(
        &self,
        n: usize,
        kind: &str,
        payload: &str,
        opts: &EnqueueOptions,
    ) -> Res<Vec<JobId>> {
        let mut ids = Vec::with_capacity(n);
        let mut left = n;
        while left > 0 {
            let k = left.min(1000);
            let batch = (0..k)
                .map(|_| {
                    NewJob::new(
                        kind,
                        payload.as_bytes().to_vec(),
                        opts,
                        RetryPolicy::default(),
                    )
                })
                .collect::<taskyard::Result<Vec<_>>>()?;
            let done = self.client().enqueue_raw(&self.queue, batch).await?;
            ids.extend(done.into_iter().map(|e| e.id));
            left -= k;
        }
        Ok(ids)
    }

    /// One job of the scenario's queue, which must still exist.
    pub(super) async fn job(&self, id: &JobId) -> Res<taskyard::JobInfo> {
        let job = self.store.shared().job(&self.queue, id).await?;
        Ok(job.ok_or_else(|| format!("job {id} is gone"))?)
    }

    pub(super) async fn stats(&self) -> Res<taskyard::QueueStats> {
        Ok(self.store.shared().stats(&self.queue).await?)
    }

    /// A worker process on this scenario's queue, recording to `<name>.record`.
    pub(super) fn spawn(&self, name: &str, args: &[&str]) -> Res<WorkerProcess> {
        self.spawn_on(&self.url, name, args)
    }

    /// One worker process per name, all with the same arguments.
    pub(super) fn spawn_all(&self, names: &[&str], args: &[&str]) -> Res<Vec<WorkerProcess>> {
        names.iter().map(|name| self.spawn(name, args)).collect()
    }

    /// Until `end`, every `every`, SIGKILLs the next of `workers` in turn and starts a
    /// new process in its place (`NAME-k` for the k-th kill). Returns how many were
    /// killed and the names of every generation, for their record files.
    pub(super) async fn kill_in_turn(
        &self,
        workers: &mut [WorkerProcess],
        names: &[&str],
        args: &[&str],
        every: Duration,
        end: Instant,
    ) -> Res<(usize, Vec<String>)> {
        let mut all: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut kills = 0;
        while Instant::now() < end {
            tokio::time::sleep(every.min(end.saturating_duration_since(Instant::now()))).await;
            if Instant::now() >= end {
                break;
            }
            let victim = kills % workers.len();
            workers[victim].kill9()?;
            kills += 1;
            let name = format!("{}-{kills}", names[victim]);
            workers[victim] = self.spawn(&name, args)?;
            all.push(name);
        }
        Ok((kills, all))
    }

    /// The same on another URL of the store (through a proxy).
    pub(super) fn spawn_on(&self, store: &str, name: &str, args: &[&str]) -> Res<WorkerProcess> {
        let args = [&["--queue", self.queue.as_str()], args].concat();
        let exe = std::env::current_exe()?;
        Ok(WorkerProcess::start(exe, store, &self.dir, name, &args)?)
    }

    /// Waits until `done` holds, or fails after `within`.
    pub(super) async fn until(
        &self,
        what: &str,
        within: Duration,
        mut done: impl AsyncFnMut() -> Res<bool>,
    ) -> Res<()> {
        let deadline = Instant::now() + within;
        while !done().await? {
            if Instant::now() > deadline {
                return Err(
                    format!("timed out after {} s waiting for {what}", within.as_secs()).into(),
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Waits until the queue has nothing ready, scheduled or running.
    pub(super) async fn drained(&self, within: Duration) -> Res<()> {
        self.until("the queue to drain", within, async || {
            let s = self.stats().await?;
            Ok(s.ready + s.scheduled + s.running == 0)
        })
        .await
    }
}

/// One line a `span` job appended to its worker's record file: what happened (`start`,
/// `end`, `cancelled`), the job's key, id and attempt, and when (Unix µs).
pub(super) struct SpanLine {
    pub(super) what: String,
    pub(super) key: String,
    pub(super) id: String,
    pub(super) attempt: u32,
    pub(super) us: u128,
}

impl Ctx {
    /// The span lines of every worker generation named, in file order; malformed lines
    /// (a write cut short by a kill) are skipped.
    pub(super) fn span_lines(&self, names: &[String]) -> Vec<SpanLine> {
        let mut lines = Vec::new();
        for name in names {
            let path = self.dir.join(format!("{name}.record"));
            let text = std::fs::read_to_string(path).unwrap_or_default();
            for line in text.lines() {
                let f: Vec<&str> = line.split(' ').collect();
                let [what, key, id, attempt, us] = f[..] else {
                    continue;
                };
                let (Ok(attempt), Ok(us)) = (attempt.parse::<u32>(), us.parse::<u128>()) else {
                    continue;
                };
                lines.push(SpanLine {
                    what: what.to_string(),
                    key: key.to_string(),
                    id: id.to_string(),
                    attempt,
                    us,
                });
            }
        }
        lines
    }
}

pub(super) fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}
