//! A throwaway `redis-server` for tests: started on a free loopback port, stopped (and its
//! directory removed) when dropped. Never touches a Redis someone else runs.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A `redis-server` child process owned by a test.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
    password: Option<String>,
    /// Serves TLS only, with a test CA made by `openssl` in `dir`.
    tls: bool,
}

/// The binary: `TASKYARD_REDIS_SERVER`, or `redis-server` on `PATH`.
fn binary() -> String {
    std::env::var("TASKYARD_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

impl RedisServer {
    /// Starts a server with no persistence.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra configuration (`["--appendonly", "yes"]`, ...).
    /// `--requirepass X` is remembered for [`RedisServer::url`].
    pub fn start_with(extra: &[&str]) -> Self {
        Self::launch(extra, false)
    }

    /// Starts a server that speaks TLS only (`rediss://`), with a certificate for
    /// 127.0.0.1 signed by a throwaway CA ([`RedisServer::ca_file`]). Needs `openssl`.
    pub fn start_tls() -> Self {
        Self::launch(&[], true)
    }

    fn launch(extra: &[&str], tls: bool) -> Self {
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let password = args
            .iter()
            .position(|a| a == "--requirepass")
            .and_then(|i| args.get(i + 1).cloned());
        for _ in 0..10 {
            let port = free_port();
            let dir =
                std::env::temp_dir().join(format!("taskyard-redis-{}-{port}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create a directory for redis-server");
            let mut server = RedisServer {
                child: None,
                port,
                dir,
                args: args.clone(),
                password: password.clone(),
                tls,
            };
            if tls {
                server.make_certificates();
            }
            if server.spawn() {
                return server;
            }
        }
        panic!("could not start redis-server on a free port after 10 tries");
    }

    fn make_certificates(&self) {
        let d = &self.dir;
        let run = |args: &[&str]| {
            let ok = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "openssl {args:?} failed: is openssl installed?");
        };
        std::fs::write(d.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("write san.ext");
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=taskyard test CA",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ]);
    }

    /// The CA certificate a TLS server's certificate is signed with.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    fn spawn(&mut self) -> bool {
        let mut cmd = Command::new(binary());
        if self.tls {
            cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(self.dir.join("server.crt"))
                .arg("--tls-key-file")
                .arg(self.dir.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(self.dir.join("ca.crt"))
                .args(["--tls-auth-clients", "no"]);
        } else {
            cmd.arg("--port").arg(self.port.to_string());
        }
        let child = cmd
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => panic!(
                "cannot run {}: {e}. Install Redis (Debian: apt-get install redis-server) \
                 or point TASKYARD_REDIS_SERVER at a redis-server binary",
                binary()
            ),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return false; // the port was taken between our check and its bind
            }
            if self.ping() {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        if self.tls {
            // Accepting connections is as far as a plain socket can tell.
            return true;
        }
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let cmd = match &self.password {
            Some(p) => format!(
                "*2\r\n$4\r\nAUTH\r\n${}\r\n{p}\r\n*1\r\n$4\r\nPING\r\n",
                p.len()
            ),
            None => "*1\r\n$4\r\nPING\r\n".to_string(),
        };
        if s.write_all(cmd.as_bytes()).is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if got.windows(5).any(|w| w == b"+PONG") {
                return true;
            }
            if got.starts_with(b"-") {
                return false;
            }
        }
        false
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://` URL of the server (with its password, if it has one).
    pub fn url(&self) -> String {
        if self.tls {
            return format!("rediss://127.0.0.1:{}", self.port);
        }
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// Sends a signal to the server (SIGSTOP, SIGCONT).
    pub fn signal(&self, signal: Signal) {
        let pid = self.child.as_ref().expect("the server runs").id();
        let pid = Pid::from_raw(i32::try_from(pid).expect("a pid"));
        if let Err(e) = kill(pid, signal) {
            panic!("{signal} to redis-server failed: {e}");
        }
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the server and starts it again on the same port with the same settings and
    /// directory (so an append-only file, if configured, is replayed).
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.spawn() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not come back on port {}", self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free loopback port")
}
