//! `--scenario connection-cut`: workers reach Redis through a proxy that cuts their
//! connections mid-batch.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use taskyard_cli::process::{WorkerProcess, records};

use super::books::{books, count_in};
use super::context::{Ctx, ms};
use super::{Outcome, Res};

/// Workers reach Redis through a TCP proxy that cuts every connection five times a
/// second, mid-batch: they reconnect and nothing is lost.
pub(super) async fn run(c: &Ctx) -> Outcome {
    let Some((target, via)) = split_redis_url(&c.url) else {
        return Err(
            "connection-cut needs a redis:// store (it cuts the workers' connections)".into(),
        );
    };
    let proxy = Proxy::start(target).await?;
    let proxied = via(&proxy.addr);
    // Two workers of concurrency 20 run at most 2,000 of these 20 ms jobs a second: the
    // quick run lasts at least 2 s, about ten cut rounds.
    let n = c.size.pick(20_000, 4_000);
    let ids = c.enqueue(n, "record", r#"{"ms":20}"#, &c.opts()).await?;
    let args = ["--concurrency", "20", "--lease", "5s"];
    let mut workers: Vec<WorkerProcess> = ["a", "b"]
        .iter()
        .map(|name| c.spawn_on(&proxied, name, &args))
        .collect::<Res<_>>()?;
    let (mut cuts, mut rounds) = (0, 0);
    // Per cut connection, the command of the request it was waiting on ("none": idle).
    let mut pending: BTreeMap<String, usize> = BTreeMap::new();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(120);
    // How long the cuts lasted: while the backlog did.
    let mut cut_for = None;
    loop {
        let done: HashSet<String> = records(&c.dir, &["a", "b"])
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        if done.len() >= n {
            break;
        }
        if Instant::now() > deadline {
            return Err("the workers did not finish within 120 s".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The cuts last while jobs wait to be claimed; the tail runs uncut, so the run
        // ends once the last jobs finish rather than when a round happens to spare
        // them.
        if cut_for.is_none() && c.stats().await?.ready == 0 {
            cut_for = Some(start.elapsed());
        }
        if cut_for.is_some() {
            continue;
        }
        // Aimed at a batch: the round waits (up to 1 s) for a worker to send a script,
        // then cuts every connection while the server has it and its answer is on the way.
        let _ = tokio::time::timeout(Duration::from_secs(1), proxy.script_sent()).await;
        let cut = proxy.cut();
        cuts += cut.len();
        rounds += usize::from(!cut.is_empty());
        for command in cut {
            *pending
                .entry(command.unwrap_or_else(|| "none".into()))
                .or_default() += 1;
        }
    }
    c.drained(Duration::from_secs(30)).await?;
    // Stopped off this thread: the proxy runs here and must keep serving the workers'
    // last calls while they shut down.
    let mut stale = 0;
    for w in workers.drain(..) {
        let books = tokio::task::spawn_blocking(move || {
            let mut w = w;
            w.stop().map_err(|e| e.to_string())
        })
        .await??;
        stale += count_in(&books, "stale").ok_or(format!("no books line: {books}"))?;
    }
    let runs = records(&c.dir, &["a", "b"]);
    let (lost, unexpected, duplicated) = books(&ids, &runs);
    // A claim whose answer was cut is sent again with its token and answered with the
    // same jobs, so no job should need a second attempt.
    let runs_on_a_later_attempt = runs.iter().filter(|(_, attempt)| *attempt > 1).count();
    let dead = c.stats().await?.dead;
    // The cuts that broke a store call in flight: a script (claim, finish, heartbeat,
    // maintenance) sent and not yet answered. An idle BLPOP cut is not one.
    let in_flight: usize = ["EVALSHA", "EVAL"]
        .iter()
        .filter_map(|c| pending.get(*c))
        .sum();
    Ok((
        lost == 0 && unexpected == 0 && dead == 0 && stale == 0,
        "connections cut mid-batch: workers reconnect, lost 0, unexpected 0, nothing dead, \
         no outcome refused (a finish whose answer was cut answers the same when retried)",
        json!({
            "jobs": n, "connections_cut": cuts, "cut_rounds": rounds,
            "cut_for_ms": cut_for.map(ms), "elapsed_ms": ms(start.elapsed()),
            "cuts_in_flight": in_flight, "cuts_by_pending_command": pending,
            "lost": lost, "unexpected": unexpected, "dead": dead,
            "duplicated": duplicated, "stale_outcomes": stale,
            "runs_on_a_later_attempt": runs_on_a_later_attempt,
        }),
    ))
}

/// The `host:port` a redis:// URL names, and a function making the same URL for another
/// address (no TLS: the proxy passes bytes, not TLS sessions).
fn split_redis_url(url: &str) -> Option<(String, impl Fn(&str) -> String)> {
    let rest = url.strip_prefix("redis://")?;
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((auth, rest)) => (format!("{auth}@"), rest),
        None => (String::new(), rest),
    };
    let (host, path) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let target = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:6379")
    };
    let path = path.to_string();
    Some((target, move |addr: &str| {
        format!("redis://{auth}{addr}{path}")
    }))
}

/// What the proxy knows of one connection's requests: the command of the last one the
/// client sent, while the server has not answered since (`None`: nothing unanswered).
type Pending = Arc<Mutex<Option<String>>>;

/// One connection the proxy carries.
struct Conn {
    task: tokio::task::AbortHandle,
    pending: Pending,
}

/// A TCP proxy that can cut every connection it carries.
struct Proxy {
    addr: String,
    conns: Arc<Mutex<Vec<Conn>>>,
    /// Told each time a client's script request (EVALSHA, EVAL) has been passed on.
    sent: Arc<tokio::sync::Notify>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: String) -> Res<Proxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let conns: Arc<Mutex<Vec<Conn>>> = Arc::default();
        let sent: Arc<tokio::sync::Notify> = Arc::default();
        let list = conns.clone();
        let told = sent.clone();
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let pending = Pending::default();
                let task = tokio::spawn(Self::carry(
                    inbound,
                    target.clone(),
                    pending.clone(),
                    told.clone(),
                ));
                list.lock().unwrap_or_else(|e| e.into_inner()).push(Conn {
                    task: task.abort_handle(),
                    pending,
                });
            }
        });
        Ok(Proxy {
            addr,
            conns,
            sent,
            accept,
        })
    }

    /// Resolves the next time a client's script request has been passed to the server.
    fn script_sent(&self) -> tokio::sync::futures::Notified<'_> {
        self.sent.notified()
    }

    /// Passes bytes both ways, noting what is unanswered: a request is noted before it is
    /// passed on (so its answer cannot clear the note first), and any bytes from the
    /// server clear it. Pipelined requests answered in part look answered: the count
    /// of cuts in flight can be low, never high.
    async fn carry(
        inbound: tokio::net::TcpStream,
        target: String,
        pending: Pending,
        sent: Arc<tokio::sync::Notify>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
            return;
        };
        let (mut client_rx, mut client_tx) = inbound.into_split();
        let (mut server_rx, mut server_tx) = outbound.into_split();
        let note = |command: Option<String>| {
            let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
            *p = match command {
                // The rest of a request already noted keeps its command.
                Some(c) if c.is_empty() => p.take().or(Some("?".into())),
                c => c,
            };
        };
        let up = async {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = client_rx.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<(), std::io::Error>(());
                }
                let command = command_of(&buf[..n]);
                let script = command == "EVALSHA" || command == "EVAL";
                note(Some(command));
                server_tx.write_all(&buf[..n]).await?;
                if script {
                    sent.notify_waiters();
                }
            }
        };
        let down = async {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = server_rx.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<(), std::io::Error>(());
                }
                note(None);
                client_tx.write_all(&buf[..n]).await?;
            }
        };
        tokio::select! {
            _ = up => {}
            _ = down => {}
        }
    }

    /// Drops every open connection; returns, per connection dropped, the command it was
    /// waiting on (`None`: nothing unanswered).
    fn cut(&self) -> Vec<Option<String>> {
        let conns = std::mem::take(&mut *self.conns.lock().unwrap_or_else(|e| e.into_inner()));
        let mut cut = Vec::new();
        for c in conns {
            if !c.task.is_finished() {
                // Aborted under the note's lock: no answer can slip in between.
                let pending = c.pending.lock().unwrap_or_else(|e| e.into_inner());
                c.task.abort();
                cut.push(pending.clone());
            }
        }
        cut
    }
}

/// The command a chunk of client bytes starts, upper case, if it starts a RESP request
/// (`*N\r\n$L\r\nNAME…`); empty if it does not (the rest of a request).
fn command_of(chunk: &[u8]) -> String {
    let name = (|| {
        let rest = chunk.strip_prefix(b"*")?;
        let rest = &rest[rest.windows(2).position(|w| w == b"\r\n")? + 2..];
        let rest = rest.strip_prefix(b"$")?;
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        let len: usize = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
        let name = rest.get(end + 2..end + 2 + len)?;
        Some(String::from_utf8_lossy(name).to_ascii_uppercase())
    })();
    name.unwrap_or_default()
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
