//! `taskyard bench worker` processes, for the scenarios and tests that kill, stop and
//! restart real workers, and the books they keep: each `record` job appends
//! `job_id attempt` to its worker's `<name>.record` file before the job is reported
//! complete.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use nix::sys::signal::Signal;
use nix::sys::signal::kill;
use nix::unistd::Pid;

/// A `taskyard bench worker` child process, by name: it records to `<dir>/<name>.record`,
/// and its stderr (its start line, warnings and, after a stop, its books) goes to
/// `<dir>/<name>.stderr`. Killed when dropped.
pub struct WorkerProcess {
    child: Child,
    name: String,
    stderr: PathBuf,
}

impl WorkerProcess {
    /// Starts `BIN --store STORE bench worker --record DIR/NAME.record ARGS…`, logging at
    /// `warn` (the level its books are read at).
    pub fn start(
        bin: impl AsRef<OsStr>,
        store: &str,
        dir: &Path,
        name: &str,
        args: &[&str],
    ) -> io::Result<Self> {
        Self::start_with_env(bin, store, dir, name, args, &[])
    }

    /// The same with extra environment variables (libfaketime's, to move its clock).
    pub fn start_with_env(
        bin: impl AsRef<OsStr>,
        store: &str,
        dir: &Path,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> io::Result<Self> {
        let stderr = dir.join(format!("{name}.stderr"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr)?;
        let child = Command::new(bin)
            .args(["--store", store, "bench", "worker", "--record"])
            .arg(dir.join(format!("{name}.record")))
            .args(args)
            .env("TASKYARD_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        Ok(WorkerProcess {
            child,
            name: name.to_string(),
            stderr,
        })
    }

    /// Sends a signal (SIGSTOP, SIGCONT, SIGTERM, …).
    pub fn signal(&self, signal: Signal) -> io::Result<()> {
        let pid = i32::try_from(self.child.id()).map_err(io::Error::other)?;
        kill(Pid::from_raw(pid), signal)
            .map_err(|e| io::Error::other(format!("{signal} to worker {}: {e}", self.name)))
    }

    /// SIGKILL, and waits for it to be gone.
    pub fn kill9(&mut self) -> io::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM and a graceful exit (an error if it was not); returns its books line
    /// ("… stopped; completed N, failed N, stale N").
    pub fn stop(&mut self) -> io::Result<String> {
        // Up before it is stopped, so the stop meets its handler.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.errors().contains("serving") && Instant::now() < deadline && !self.exited() {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !self.exited() {
            self.signal(Signal::SIGTERM)?;
        }
        let status = self.child.wait()?;
        let log = self.errors();
        if !status.success() {
            let name = &self.name;
            return Err(io::Error::other(format!(
                "worker {name} exited with {status}: {log}"
            )));
        }
        Ok(log.lines().last().unwrap_or_default().to_string())
    }

    /// Whether it has exited (a poison job kills it), reaping it if so.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// What it wrote to stderr: its start line, warnings and, after a stop, its books.
    pub fn errors(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The runs the named workers recorded, worker by worker: (job id, attempt).
pub fn records(dir: &Path, names: &[&str]) -> Vec<(String, u32)> {
    names
        .iter()
        .flat_map(|name| {
            std::fs::read_to_string(dir.join(format!("{name}.record")))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    let (id, attempt) = l.split_once(' ')?;
                    Some((id.to_string(), attempt.parse().ok()?))
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The ids the named workers recorded.
pub fn recorded(dir: &Path, names: &[&str]) -> HashSet<String> {
    records(dir, names).into_iter().map(|(id, _)| id).collect()
}
