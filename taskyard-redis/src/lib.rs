//! The Redis (and Valkey) store for taskyard.
//!
//! [`RedisStore`] implements [`taskyard_core::Store`] with one Lua script per state
//! transition (`src/scripts/*.lua`, each with a header naming its ARGV and what it
//! guarantees), every script working on a batch. All keys of a queue share the hash tag
//! `taskyard:2:{queue}:…`, so a queue's scripts run in one cluster slot.
//!
//! - A ready job is one list entry (see `envelope.rs`): about its own bytes in memory.
//! - Deadlines and due times use Redis `TIME` inside the scripts.
//! - Idle workers block on `BLPOP` of the queue's signal list on a dedicated connection,
//!   never on the shared multiplexed one.
//! - A lost script cache (`NOSCRIPT` after a restart or `SCRIPT FLUSH`) is reloaded on the
//!   spot; a lost connection is re-established by the connection manager.
//!
//! ```no_run
//! # async fn example() -> taskyard_core::Result<()> {
//! let store = taskyard_redis::RedisStore::connect("redis://:secret@127.0.0.1:6379/0").await?;
//! let client = taskyard_core::Client::new(store);
//! # Ok(()) }
//! ```

mod envelope;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Script, Value};
use taskyard_core::store::support::{self, history};
use taskyard_core::{
    Claim, ClaimedJob, DeadFilter, Due, Error, JobId, JobInfo, JobState, Lease, LeaseToken,
    Maintenance, NewJob, Outcome, QueueConfig, QueueName, QueueStats, Result, Store,
};

/// The set of every queue name used, for `stats` across queues.
const QUEUES_KEY: &str = "taskyard:queues";

/// A store on one Redis (or Valkey) server. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
    /// Replicas that must confirm an enqueue before it is acknowledged (`WAIT`).
    replica_ack: Option<ReplicaAck>,
}

/// How many replicas must have an enqueue, and how long to wait for them.
#[derive(Debug, Clone, Copy)]
struct ReplicaAck {
    replicas: u32,
    timeout: Duration,
}

struct Inner {
    client: redis::Client,
    conn: ConnectionManager,
    /// Connections for blocking waits, one per concurrent waiter.
    waiters: tokio::sync::Mutex<Vec<MultiplexedConnection>>,
    scripts: Scripts,
    known_queues: Mutex<HashSet<String>>,
    /// Connections for enqueues confirmed by replicas: `WAIT` blocks its connection, so
    /// it never runs on the shared one.
    acked: tokio::sync::Mutex<Vec<MultiplexedConnection>>,
}

struct Scripts {
    enqueue: Script,
    claim: Script,
    heartbeat: Script,
    finish: Script,
    release: Script,
    maintain: Script,
    redrive: Script,
    purge: Script,
    find: Script,
    list: Script,
    stats: Script,
    settings: Script,
    upgrade: Script,
    /// Every script's full source, to load them all at connect.
    sources: Vec<String>,
}

impl Scripts {
    fn load() -> Self {
        let d = QueueConfig::default();
        let common = include_str!("scripts/common.lua")
            .replace("@DEAD_MAX@", &d.dead_max.to_string())
            .replace("@DEAD_MAX_AGE_MS@", &d.dead_max_age_ms.to_string())
            .replace("@COMPLETED_MAX@", &d.completed_max.to_string())
            .replace(
                "@COMPLETED_MAX_AGE_MS@",
                &d.completed_max_age_ms.to_string(),
            );
        let mut sources = Vec::new();
        let mut s = |body: &str| {
            let source =
                format!("{common}\n{body}").replace("@LEASE_EXPIRED@", support::LEASE_EXPIRED);
            let script = Script::new(&source);
            sources.push(source);
            script
        };
        Scripts {
            enqueue: s(include_str!("scripts/enqueue.lua")),
            claim: s(include_str!("scripts/claim.lua")),
            heartbeat: s(include_str!("scripts/heartbeat.lua")),
            finish: s(include_str!("scripts/finish.lua")),
            release: s(include_str!("scripts/release.lua")),
            maintain: s(include_str!("scripts/maintain.lua")),
            redrive: s(include_str!("scripts/redrive.lua")),
            purge: s(include_str!("scripts/purge.lua")),
            find: s(include_str!("scripts/find.lua")),
            list: s(include_str!("scripts/list.lua")),
            stats: s(include_str!("scripts/stats.lua")),
            settings: s(include_str!("scripts/settings.lua")),
            upgrade: s(include_str!("scripts/upgrade.lua")),
            sources,
        }
    }
}

/// The names of a queue's keys, after the prefix and hash tag.
const KEY_NAMES: [&str; 11] = [
    "ready",
    "scheduled",
    "jobs",
    "leases",
    "dead",
    "completed",
    "errors",
    "meta",
    "signal",
    "running",
    "batches",
];

/// The keys of one queue, in the order every script expects (see `common.lua`): this
/// layout's eleven, then release 0.1's meta key, whose presence means 0.1 data is left to
/// upgrade.
///
/// Layout 2 moved the keys from 0.1's `taskyard:{q}:…` to `taskyard:2:{q}:…`, so a 0.1
/// process still running finds an empty queue instead of misreading new data. Later
/// layouts keep these keys and are told apart by `layout` in the meta hash.
fn keys(queue: &QueueName) -> Vec<String> {
    let q = queue.as_str();
    let mut keys: Vec<String> = KEY_NAMES
        .iter()
        .map(|name| format!("taskyard:2:{{{q}}}:{name}"))
        .collect();
    keys.push(format!("taskyard:{{{q}}}:meta"));
    keys
}

/// Release 0.1's keys of a queue other than its meta, in the order `upgrade.lua` takes
/// them.
fn keys_0_1(queue: &QueueName) -> Vec<String> {
    let q = queue.as_str();
    KEY_NAMES
        .iter()
        .filter(|name| **name != "meta")
        .map(|name| format!("taskyard:{{{q}}}:{name}"))
        .collect()
}

fn signal_key(queue: &QueueName) -> String {
    format!("taskyard:2:{{{}}}:signal", queue.as_str())
}

fn store_err(e: redis::RedisError) -> Error {
    // A script refusing a queue or job of another format: "TASKYARD_VERSION what found reads".
    if e.code() == Some("TASKYARD_VERSION") {
        let detail = e.detail().unwrap_or_default();
        let mut words = detail.split_whitespace();
        let (what, found, reads) = (words.next(), words.next(), words.next());
        return Error::Version {
            what: match what {
                Some("envelope") => "a job envelope".into(),
                _ => "the queue's key layout".into(),
            },
            found: found.unwrap_or("?").into(),
            reads: reads.unwrap_or("?").into(),
        };
    }
    Error::store(e)
}

/// Whether a script refused a queue because it still holds release 0.1's data.
fn needs_upgrade(e: &redis::RedisError) -> bool {
    e.code() == Some("TASKYARD_UPGRADE")
}

impl RedisStore {
    /// Connects to `redis://[user:password@]host[:port][/db]` or `rediss://…` (TLS).
    ///
    /// The connection is re-established on its own after a network error or a server
    /// restart; calls made while it is down fail and the worker retries them.
    ///
    /// For `rediss://`, the server's certificate is checked against the system's trust
    /// store (which honours `SSL_CERT_FILE`); see [`RedisStore::connect_with_root_ca`] for
    /// a private CA.
    pub async fn connect(url: &str) -> Result<Self> {
        let (url, ack) = replica_ack_of(url)?;
        let client = redis::Client::open(url.as_str())
            .map_err(|e| Error::InvalidOption(format!("invalid Redis URL: {e}")))?;
        Ok(Self::from_client(client).await?.acked_by(ack))
    }

    fn acked_by(self, ack: Option<ReplicaAck>) -> Self {
        match ack {
            Some(a) => self.with_replica_ack(a.replicas, a.timeout),
            None => self,
        }
    }

    /// Connects to a `rediss://` URL whose server certificate is signed by the CA in
    /// `ca_pem` (PEM), instead of one the system trusts.
    pub async fn connect_with_root_ca(url: &str, ca_pem: &[u8]) -> Result<Self> {
        let (url, ack) = replica_ack_of(url)?;
        let certs = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca_pem.to_vec()),
        };
        let client = redis::Client::build_with_tls(url.as_str(), certs)
            .map_err(|e| Error::InvalidOption(format!("invalid Redis TLS setup: {e}")))?;
        Ok(Self::from_client(client).await?.acked_by(ack))
    }

    async fn from_client(client: redis::Client) -> Result<Self> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            // Large batches (a 10k-job enqueue, a redrive scan) take more than the
            // crate's default 500 ms.
            .set_response_timeout(Some(Duration::from_secs(30)))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(2));
        let conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(store_err)?;
        let scripts = Scripts::load();
        // Load every script up front, in one round trip, so first calls need no
        // NOSCRIPT retry. After a restart the retry path reloads them one by one.
        let mut pipe = redis::pipe();
        for source in &scripts.sources {
            pipe.cmd("SCRIPT").arg("LOAD").arg(source).ignore();
        }
        pipe.query_async::<()>(&mut conn.clone())
            .await
            .map_err(store_err)?;
        Ok(RedisStore {
            inner: Arc::new(Inner {
                client,
                conn,
                waiters: tokio::sync::Mutex::new(Vec::new()),
                scripts,
                known_queues: Mutex::new(HashSet::new()),
                acked: tokio::sync::Mutex::new(Vec::new()),
            }),
            replica_ack: None,
        })
    }

    /// Acknowledges an enqueue only once `replicas` replicas have it (Redis `WAIT`), so a
    /// failover to one of them cannot lose it. If fewer confirm within `timeout`, the
    /// enqueue fails with an error saying so — the jobs are on the primary and may still
    /// run, so a retry can duplicate them (at least once). Other operations are not
    /// waited for: a failover can at worst make a finished job run again.
    ///
    /// The URL form is `?wait_replicas=N&wait_timeout_ms=T` (default 1,000 ms). A zero
    /// timeout is raised to 1 ms (Redis would wait forever).
    pub fn with_replica_ack(mut self, replicas: u32, timeout: Duration) -> Self {
        let timeout = timeout.max(Duration::from_millis(1));
        self.replica_ack = (replicas > 0).then_some(ReplicaAck { replicas, timeout });
        self
    }

    /// Redis `used_memory` in bytes (from `INFO memory`), to measure footprints.
    pub async fn used_memory(&self) -> Result<u64> {
        let mut conn = self.conn();
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut conn)
            .await
            .map_err(store_err)?;
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| Error::Corrupt("INFO memory has no used_memory".into()))
    }

    /// Deletes a queue and every job in it, whatever their state. For tests and
    /// benchmarks; there is no undo.
    pub async fn delete_queue(&self, queue: &QueueName) -> Result<()> {
        let mut conn = self.conn();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for k in keys(queue).into_iter().chain(keys_0_1(queue)) {
            pipe.del(k).ignore();
        }
        pipe.srem(QUEUES_KEY, queue.as_str()).ignore();
        pipe.query_async::<()>(&mut conn).await.map_err(store_err)?;
        self.inner
            .known_queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(queue.as_str());
        Ok(())
    }

    fn conn(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    /// Runs the enqueue script and `WAIT`s for replicas on a connection of its own.
    async fn enqueue_acked(
        &self,
        queue: &QueueName,
        args: Vec<Vec<u8>>,
        ack: ReplicaAck,
    ) -> Result<Value> {
        let pooled = self.inner.acked.lock().await.pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => {
                // WAIT answers after its own timeout: the response timeout must be longer.
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(5)))
                    .set_response_timeout(Some(ack.timeout + Duration::from_secs(30)));
                self.inner
                    .client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(store_err)?
            }
        };
        let out = match invoke(&self.inner.scripts.enqueue, queue, &args, &mut conn).await {
            Err(e) if needs_upgrade(&e) => {
                self.upgrade(queue).await?;
                invoke(&self.inner.scripts.enqueue, queue, &args, &mut conn).await
            }
            other => other,
        }
        .map_err(store_err)?;
        // A refused enqueue (queue full) wrote nothing: there is nothing to wait for.
        let written =
            matches!(&out, Value::Array(v) if v.first().is_some_and(|f| int(f).ok() == Some(1)));
        if written {
            let confirmed: i64 = redis::cmd("WAIT")
                .arg(ack.replicas)
                .arg(ack.timeout.as_millis() as u64)
                .query_async(&mut conn)
                .await
                .map_err(store_err)?;
            if confirmed < i64::from(ack.replicas) {
                self.inner.acked.lock().await.push(conn);
                return Err(Error::Store(
                    format!(
                        "enqueue written on the primary but confirmed by {confirmed} of {} replicas \
                         within {} ms: a failover could lose it, and retrying may duplicate it",
                        ack.replicas,
                        ack.timeout.as_millis()
                    )
                    .into(),
                ));
            }
        }
        self.inner.acked.lock().await.push(conn);
        Ok(out)
    }

    async fn run(&self, script: &Script, queue: &QueueName, args: Vec<Vec<u8>>) -> Result<Value> {
        let mut conn = self.conn();
        match invoke(script, queue, &args, &mut conn).await {
            Err(e) if needs_upgrade(&e) => {
                self.upgrade(queue).await?;
                invoke(script, queue, &args, &mut conn)
                    .await
                    .map_err(store_err)
            }
            other => other.map_err(store_err),
        }
    }

    /// Moves a queue written by release 0.1 into this layout, a bounded step per script
    /// call (`upgrade.lua`), so a large old queue never blocks Redis for long.
    async fn upgrade(&self, queue: &QueueName) -> Result<()> {
        let mut keys = keys(queue);
        keys.extend(keys_0_1(queue));
        let mut steps = 0u64;
        loop {
            let mut inv = self.inner.scripts.upgrade.prepare_invoke();
            for k in &keys {
                inv.key(k);
            }
            let more: i64 = inv
                .invoke_async(&mut self.conn())
                .await
                .map_err(store_err)?;
            if more == 0 {
                break;
            }
            steps += 1;
        }
        tracing::info!(queue = %queue, steps, "upgraded the queue from taskyard 0.1's layout");
        Ok(())
    }

    /// Adds the queue to the set of known queues, once per process.
    async fn remember(&self, queue: &QueueName) -> Result<()> {
        let fresh = self
            .inner
            .known_queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(queue.as_str().to_string());
        if fresh {
            let mut conn = self.conn();
            let r: redis::RedisResult<i64> = redis::cmd("SADD")
                .arg(QUEUES_KEY)
                .arg(queue.as_str())
                .query_async(&mut conn)
                .await;
            if let Err(e) = r {
                self.inner
                    .known_queues
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(queue.as_str());
                return Err(store_err(e));
            }
        }
        Ok(())
    }

    async fn dead_loop(
        &self,
        script: &Script,
        queue: &QueueName,
        filter: &DeadFilter,
    ) -> Result<u64> {
        // Each script call moves at most 1,000 jobs; between calls other clients get
        // in, so a large redrive never holds Redis for long.
        let calls: Vec<Vec<Vec<u8>>> = match filter {
            DeadFilter::Ids(ids) => {
                let mut unique: Vec<&str> = ids.iter().map(|id| id.as_str()).collect();
                unique.sort_unstable();
                unique.dedup();
                unique
                    .chunks(1000)
                    .map(|chunk| {
                        let mut args = vec![b"ids".to_vec(), Vec::new()];
                        args.extend(chunk.iter().map(|id| arg(id)));
                        args
                    })
                    .collect()
            }
            DeadFilter::Kind(kind) => vec![vec![b"kind".to_vec(), arg(kind)]],
            DeadFilter::All => vec![vec![b"all".to_vec(), Vec::new()]],
        };
        let mut total = 0;
        for args in calls {
            loop {
                let n = int(&self.run(script, queue, args.clone()).await?)?;
                total += n as u64;
                if n < 1000 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        Ok(total)
    }
}

/// Runs one of the scripts on a queue's keys.
async fn invoke(
    script: &Script,
    queue: &QueueName,
    args: &[Vec<u8>],
    conn: &mut impl redis::aio::ConnectionLike,
) -> redis::RedisResult<Value> {
    let mut inv = script.prepare_invoke();
    for k in keys(queue) {
        inv.key(k);
    }
    for a in args {
        inv.arg(a.as_slice());
    }
    inv.invoke_async(conn).await
}

/// Takes taskyard's own `wait_replicas` and `wait_timeout_ms` out of a URL's query.
fn replica_ack_of(url: &str) -> Result<(String, Option<ReplicaAck>)> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), None));
    };
    let (mut replicas, mut timeout_ms, mut rest) = (None, 1000, Vec::new());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let bad = || Error::InvalidOption(format!("invalid Redis URL option {pair:?}"));
        match pair.split_once('=') {
            Some(("wait_replicas", n)) => replicas = Some(n.parse::<u32>().map_err(|_| bad())?),
            // 0 would make WAIT block forever.
            Some(("wait_timeout_ms", n)) => {
                timeout_ms = n.parse::<u64>().ok().filter(|t| *t > 0).ok_or_else(bad)?
            }
            _ => rest.push(pair),
        }
    }
    let url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    let ack = replicas.filter(|n| *n > 0).map(|replicas| ReplicaAck {
        replicas,
        timeout: Duration::from_millis(timeout_ms),
    });
    Ok((url, ack))
}

fn arg(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
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

fn int(v: &Value) -> Result<i64> {
    match v {
        Value::Int(n) => Ok(*n),
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .map(|f| f as i64)
            .ok_or_else(|| Error::Corrupt(format!("expected a number, got {v:?}"))),
        Value::SimpleString(s) => s
            .parse::<f64>()
            .map(|f| f as i64)
            .map_err(|_| Error::Corrupt(format!("expected a number, got {v:?}"))),
        _ => Err(Error::Corrupt(format!("expected a number, got {v:?}"))),
    }
}

fn bytes(v: Value) -> Result<Bytes> {
    match v {
        Value::BulkString(b) => Ok(Bytes::from(b)),
        Value::SimpleString(s) => Ok(Bytes::from(s.into_bytes())),
        Value::Int(n) => Ok(Bytes::from(n.to_string().into_bytes())),
        other => Err(Error::Corrupt(format!("expected a string, got {other:?}"))),
    }
}

fn array(v: Value) -> Result<Vec<Value>> {
    match v {
        Value::Array(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(Error::Corrupt(format!("expected an array, got {other:?}"))),
    }
}

fn flags(v: Value) -> Result<Vec<bool>> {
    array(v)?.iter().map(|x| int(x).map(|n| n == 1)).collect()
}

fn info(
    queue: &QueueName,
    state: JobState,
    env: Value,
    at: Value,
    errors: Value,
) -> Result<JobInfo> {
    let env = envelope::parse(bytes(env)?)?;
    let at_ms = match &at {
        Value::BulkString(b) if b.is_empty() => None,
        Value::Nil => None,
        v => int(v).ok().map(|n| n as u64),
    };
    let errors = match errors {
        Value::BulkString(b) => history::parse(&b),
        _ => Vec::new(),
    };
    Ok(JobInfo {
        id: env.id,
        queue: queue.to_string(),
        kind: env.kind.to_string(),
        state,
        payload: String::from_utf8_lossy(&env.payload).into_owned(),
        // A running job's envelope holds the attempts made before the current one.
        attempt: env.attempt + u32::from(state == JobState::Running),
        max_attempts: env.max_attempts,
        enqueued_at_ms: env.enqueued_at_ms,
        at_ms,
        errors,
    })
}

#[async_trait::async_trait]
impl Store for RedisStore {
    async fn enqueue(&self, queue: &QueueName, jobs: Vec<NewJob>) -> Result<Vec<JobId>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        self.remember(queue).await?;
        let n = jobs.len();
        let mut args = Vec::with_capacity(1 + 2 * n);
        args.push(n.to_string().into_bytes());
        for job in &jobs {
            args.push(match job.due() {
                Due::Now => Vec::new(),
                Due::After(ms) => format!("+{ms}").into_bytes(),
                Due::At(ms) => format!("@{ms}").into_bytes(),
            });
            args.push(envelope::tail(job));
        }
        let out = match self.replica_ack {
            None => self.run(&self.inner.scripts.enqueue, queue, args).await?,
            Some(ack) => self.enqueue_acked(queue, args, ack).await?,
        };
        let out = array(out)?;
        if int(out.first().unwrap_or(&Value::Nil))? == 0 {
            return Err(Error::QueueFull {
                queue: queue.to_string(),
                len: out.get(1).map(int).transpose()?.unwrap_or(0) as u64,
                max_len: out.get(2).map(int).transpose()?.unwrap_or(0) as u64,
            });
        }
        let first = int(out.get(1).unwrap_or(&Value::Nil))?;
        Ok((0..n as i64)
            .map(|i| JobId::new((first + i).to_string()))
            .collect())
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
        for v in envs {
            // One unreadable envelope must not strand the rest of the batch: skip it, and
            // its lease expiry takes it to dead once its attempts are spent.
            let env = match bytes(v).and_then(envelope::parse) {
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
            });
        }
        Ok(Claim { jobs, next_due })
    }

    async fn wait(&self, queues: &[QueueName], timeout: Duration) -> Result<()> {
        if queues.is_empty() {
            tokio::time::sleep(timeout).await;
            return Ok(());
        }
        let pooled = self.inner.waiters.lock().await.pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => {
                // No response timeout here: BLPOP is meant to block. The call below is
                // bounded by its own timeout instead.
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(5)))
                    .set_response_timeout(None);
                self.inner
                    .client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(store_err)?
            }
        };
        let mut cmd = redis::cmd("BLPOP");
        for q in queues {
            cmd.arg(signal_key(q));
        }
        cmd.arg(timeout.as_secs_f64().max(0.001));
        let bound = timeout + Duration::from_secs(2);
        match tokio::time::timeout(bound, cmd.query_async::<Value>(&mut conn)).await {
            Ok(Ok(_)) => {
                self.inner.waiters.lock().await.push(conn);
                Ok(())
            }
            // A dead or stuck connection is dropped; the next wait opens a new one.
            Ok(Err(e)) => Err(store_err(e)),
            Err(_) => Ok(()),
        }
    }

    async fn heartbeat(&self, leases: &[Lease], lease: Duration) -> Result<Vec<bool>> {
        let mut result = vec![false; leases.len()];
        for (queue, idx) in by_queue(leases, |l| &l.queue) {
            // One lease per claim call: renew each token once.
            let mut tokens: Vec<&str> = idx.iter().map(|&i| &*leases[i].token).collect();
            tokens.sort_unstable();
            tokens.dedup();
            let mut args = vec![lease.as_millis().to_string().into_bytes()];
            args.extend(tokens.iter().map(|t| arg(t)));
            let held = flags(
                self.run(&self.inner.scripts.heartbeat, &queue, args)
                    .await?,
            )?;
            for &i in &idx {
                let pos = tokens.binary_search(&&*leases[i].token);
                result[i] = pos.ok().and_then(|p| held.get(p).copied()).unwrap_or(false);
            }
        }
        Ok(result)
    }

    async fn finish(&self, outcomes: &[(Lease, Outcome)]) -> Result<Vec<bool>> {
        let mut result = vec![false; outcomes.len()];
        for (queue, idx) in by_queue(outcomes, |(l, _)| &l.queue) {
            // Completed runs grouped by lease token, so the script handles each group
            // with a few variadic calls; then each failed run with its details.
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
            let mut args = Vec::with_capacity(1 + groups.len() * 2 + done.len() + failed.len() * 5);
            args.push(groups.len().to_string().into_bytes());
            for (token, members) in &groups {
                args.push(arg(token));
                args.push(members.len().to_string().into_bytes());
                args.extend(members.iter().map(|&i| arg(outcomes[i].0.id.as_str())));
            }
            for &i in &failed {
                let (lease, outcome) = &outcomes[i];
                let (code, number, error) = match outcome {
                    Outcome::Completed => ("c", 0, ""),
                    Outcome::Retry { delay_ms, error } => ("r", *delay_ms, error.as_str()),
                    Outcome::RetryAt { at_ms, error } => ("a", *at_ms, error.as_str()),
                    Outcome::Dead { error } => ("d", 0, error.as_str()),
                };
                args.push(arg(&lease.token));
                args.push(arg(lease.id.as_str()));
                args.push(arg(code));
                args.push(number.to_string().into_bytes());
                args.push(history::clean(error).into_bytes());
            }
            let recorded = flags(self.run(&self.inner.scripts.finish, &queue, args).await?)?;
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
        if n.len() != 6 {
            return Err(Error::Corrupt("stats returned the wrong count".into()));
        }
        Ok(QueueStats {
            queue: queue.to_string(),
            ready: n[0],
            scheduled: n[1],
            running: n[2],
            completed: n[3],
            dead: n[4],
            paused: n[5] == 1,
        })
    }

    async fn list(
        &self,
        queue: &QueueName,
        state: JobState,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<JobInfo>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let args = vec![
            state.as_str().as_bytes().to_vec(),
            offset.to_string().into_bytes(),
            limit.to_string().into_bytes(),
        ];
        let out = array(self.run(&self.inner.scripts.list, queue, args).await?)?;
        let mut jobs = Vec::with_capacity(out.len() / 3);
        let mut it = out.into_iter();
        while let (Some(env), Some(at), Some(errs)) = (it.next(), it.next(), it.next()) {
            jobs.push(info(queue, state, env, at, errs)?);
        }
        Ok(jobs)
    }

    async fn job(&self, queue: &QueueName, id: &JobId) -> Result<Option<JobInfo>> {
        let args = vec![id.as_str().as_bytes().to_vec()];
        let out = array(self.run(&self.inner.scripts.find, queue, args).await?)?;
        let mut it = out.into_iter();
        let (Some(state), Some(env), Some(at), Some(errs)) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            return Ok(None);
        };
        let state: JobState = String::from_utf8_lossy(&bytes(state)?).parse()?;
        info(queue, state, env, at, errs).map(Some)
    }

    async fn redrive(&self, queue: &QueueName, filter: &DeadFilter) -> Result<u64> {
        self.dead_loop(&self.inner.scripts.redrive, queue, filter)
            .await
    }

    async fn purge(&self, queue: &QueueName, filter: &DeadFilter) -> Result<u64> {
        self.dead_loop(&self.inner.scripts.purge, queue, filter)
            .await
    }

    async fn set_paused(&self, queue: &QueueName, paused: bool) -> Result<()> {
        self.remember(queue).await?;
        let op = if paused { "pause" } else { "resume" };
        self.run(&self.inner.scripts.settings, queue, vec![arg(op)])
            .await
            .map(drop)
    }

    async fn config(&self, queue: &QueueName) -> Result<QueueConfig> {
        const NAMES: [&str; 5] = [
            "max_len",
            "dead_max",
            "dead_max_age_ms",
            "completed_max",
            "completed_max_age_ms",
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
        })
    }

    async fn configure(&self, queue: &QueueName, config: &QueueConfig) -> Result<()> {
        self.remember(queue).await?;
        let mut args = vec![arg("set")];
        for (name, value) in [
            ("max_len", config.max_len),
            ("dead_max", config.dead_max),
            ("dead_max_age_ms", config.dead_max_age_ms),
            ("completed_max", config.completed_max),
            ("completed_max_age_ms", config.completed_max_age_ms),
        ] {
            args.push(arg(name));
            args.push(value.to_string().into_bytes());
        }
        self.run(&self.inner.scripts.settings, queue, args)
            .await
            .map(drop)
    }
}
