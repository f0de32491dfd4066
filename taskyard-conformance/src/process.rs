//! `taskyard bench worker` processes for tests that kill, stop and restart real workers,
//! and the books they keep: each `record` job appends `job_id attempt` to its worker's
//! `<name>.record` file before the job is reported complete.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A worker process, its stderr kept in `<dir>/<name>.stderr`.
pub struct WorkerProcess {
    child: Child,
    stderr: PathBuf,
}

impl WorkerProcess {
    /// Starts `bin bench worker --store STORE --record DIR/NAME.record ARGS…`.
    pub fn start(bin: &str, store: &str, dir: &Path, name: &str, args: &[&str]) -> Self {
        Self::start_wrapped(&[], &[], bin, store, dir, name, args)
    }

    /// The same, run under a wrapper command (e.g. `faketime -f +10m`) with extra
    /// environment variables.
    pub fn start_wrapped(
        wrapper: &[&str],
        env: &[(&str, &str)],
        bin: &str,
        store: &str,
        dir: &Path,
        name: &str,
        args: &[&str],
    ) -> Self {
        let stderr = dir.join(format!("{name}.stderr"));
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = cmd
            .args(["bench", "worker", "--store", store, "--record"])
            .arg(dir.join(format!("{name}.record")))
            .args(args)
            .envs(env.iter().copied())
            .env("TASKYARD_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("create the stderr file"))
            .spawn()
            .expect("start a worker process");
        WorkerProcess { child, stderr }
    }

    /// Sends a signal (`-STOP`, `-CONT`, `-TERM`, …).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill {sig} failed");
    }

    /// SIGKILL, and waits for it to be gone.
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap the worker");
    }

    /// SIGTERM, then waits for a graceful exit (panics if it was not).
    pub fn stop(&mut self) {
        // Up before it is stopped, so the stop meets its handler.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !self.errors().contains("serving") && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        self.signal("-TERM");
        let status = self.child.wait().expect("reap the worker");
        assert!(
            status.success(),
            "worker exited with {status}: {}",
            self.errors()
        );
    }

    /// What it wrote to stderr: its start line and, after a stop, its books.
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

/// The runs recorded by the worker `name`: (job id, attempt).
pub fn records(dir: &Path, name: &str) -> Vec<(String, u32)> {
    std::fs::read_to_string(dir.join(format!("{name}.record")))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (id, attempt) = l.split_once(' ')?;
            Some((id.to_string(), attempt.parse().ok()?))
        })
        .collect()
}

/// The ids the named workers recorded.
pub fn recorded(dir: &Path, names: &[&str]) -> HashSet<String> {
    names
        .iter()
        .flat_map(|name| records(dir, name))
        .map(|(id, _)| id)
        .collect()
}
