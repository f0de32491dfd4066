//! The Redis (and Valkey) store for taskyard.
//!
//! [`RedisStore`] implements [`taskyard_core::Store`] with one Lua script per state
//! transition (`src/scripts/*.lua`, each with a header naming its ARGV and what it
//! guarantees), every script working on a batch. All keys of a queue share the hash tag
//! `taskyard:2:{queue}:…`, so a queue's scripts run in one cluster slot.
//!
//! - A ready job is one list entry (see `envelope.rs`): about its own bytes in memory.
//!   A job with a priority other than the default waits as a sorted-set member instead
//!   (the same string), and a unique key is a hash field: a queue pays for an option only
//!   when it uses it (see the key layout in `scripts/common.lua`).
//! - Deadlines and due times use Redis `TIME` inside the scripts.
//! - Idle workers block on `BLPOP` of the queue's signal list on a dedicated connection,
//!   never on the shared multiplexed one.
//! - A cancel of a running job, and the end of a job someone waits for, are published on
//!   the queue's channel (`taskyard:2:{queue}:events`); each store keeps one subscriber
//!   connection for its waits, opened by the first.
//! - A lost script cache (`NOSCRIPT` after a restart or `SCRIPT FLUSH`) is reloaded on the
//!   spot; a lost connection is re-established by the connection manager.
//!
//! ```no_run
//! # async fn example() -> taskyard_core::Result<()> {
//! let store = taskyard_redis::RedisStore::connect("redis://:secret@127.0.0.1:6379/0").await?;
//! let client = taskyard_core::Client::new(store);
//! # Ok(()) }
//! ```
//!
//! The crate's parts:
//!
//! - this file: [`RedisStore`], what it holds, connecting, and its own public methods;
//! - `options.rs`: taskyard's own options in the URL's query, taken out before redis-rs
//!   reads the rest;
//! - `scripts.rs`: the Lua scripts, the key names they run on, calling them, mapping their
//!   errors, and upgrading a queue left by release 0.1;
//! - `reply.rs`: decoding the scripts' replies;
//! - `blocking.rs`: the commands that block their connection (`BLPOP`, `WAIT`), each on
//!   pooled connections of its own;
//! - `events.rs`: the subscriber to the queues' event channels, which wakes waits for
//!   cancels and for a job's end;
//! - `store.rs`: the [`Store`](taskyard_core::Store) implementation;
//! - `envelope.rs`: one job as one string.

mod blocking;
mod envelope;
mod events;
mod ids;
mod options;
mod reply;
mod scripts;
mod store;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use taskyard_core::{Error, QueueName, Result};

use crate::options::{Options, options_of};
use crate::scripts::{Scripts, store_err};

/// The set of every queue name used, for `stats` across queues.
const QUEUES_KEY: &str = "taskyard:queues";

/// Adds a queue's name to `QUEUES_KEY` unless it is there. A known queue costs no write,
/// so pausing it works when Redis is at its memory limit (a plain `SADD` is refused there
/// even when it would add nothing); a new name at the limit is refused, as Redis refuses
/// a script's first write that may need memory when it has no flags.
const REMEMBER: &str = "if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 0 end
return redis.call('SADD', KEYS[1], ARGV[1])";

/// A store on one Redis (or Valkey) server. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
    /// Replicas that must confirm an enqueue before it is acknowledged (`WAIT`).
    replica_ack: Option<ReplicaAck>,
}

/// How many replicas must have an enqueue, and how long to wait for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ReplicaAck {
    replicas: u32,
    timeout: Duration,
}

struct Inner {
    client: redis::Client,
    conn: ConnectionManager,
    /// Connections for blocking waits, one per concurrent waiter, with the server's id
    /// of each (`CLIENT ID`; `None` where the server forbids asking) to wake it on time.
    waiters: tokio::sync::Mutex<Vec<(MultiplexedConnection, Option<i64>)>>,
    scripts: Scripts,
    known_queues: Mutex<HashSet<String>>,
    /// Each queue's keys, as every script takes them (`scripts::keys`).
    keys: Mutex<HashMap<QueueName, Arc<[String]>>>,
    /// Connections for enqueues confirmed by replicas: `WAIT` blocks its connection, so
    /// it never runs on the shared one.
    acked: tokio::sync::Mutex<Vec<MultiplexedConnection>>,
    /// Job ids taken from the server's counter, not handed out yet.
    ids: tokio::sync::Mutex<ids::Block>,
    /// Finish calls whose answer may have been lost (the connection failed after they
    /// were sent), by a hash of their arguments: the worker's retry of one runs as a
    /// replay (see `finish.lua`).
    unanswered: Mutex<HashSet<u64>>,
    /// Tests only: the next finish call's answer is dropped after Redis ran it.
    lose_answer: std::sync::atomic::AtomicBool,
    /// The subscriber to the queues' events and the waits it wakes.
    events: Arc<events::Hub>,
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
    ///
    /// A Redis that may evict keys when full (`maxmemory-policy` other than `noeviction`)
    /// is refused with [`Error::EvictionPolicy`] — it could drop acknowledged jobs —
    /// unless the URL says `allow_eviction=true`. Where `CONFIG GET` is not allowed (some
    /// managed services), the policy cannot be read: the store connects and warns once.
    /// An unknown option in the URL's query is refused.
    pub async fn connect(url: &str) -> Result<Self> {
        let (url, options) = options_of(url)?;
        let client = redis::Client::open(url.as_str())
            .map_err(|e| Error::InvalidOption(format!("invalid Redis URL: {e}")))?;
        Self::from_client(client, scripts::LAYOUT, options).await
    }

    /// For tests of a rolling deploy across a layout change: a store whose scripts act as
    /// a later release's would, keeping its queues at `layout`. Not for applications.
    #[doc(hidden)]
    pub async fn connect_as_layout(url: &str, layout: u32) -> Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| Error::InvalidOption(format!("invalid Redis URL: {e}")))?;
        Self::from_client(client, &layout.to_string(), Options::default()).await
    }

    /// For tests of a lost answer: the next finish call runs on Redis, then fails here as
    /// if the connection had dropped before its answer came.
    #[doc(hidden)]
    pub fn lose_next_finish_answer(&self) {
        self.inner
            .lose_answer
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Connects to a `rediss://` URL whose server certificate is signed by the CA in
    /// `ca_pem` (PEM), instead of one the system trusts.
    pub async fn connect_with_root_ca(url: &str, ca_pem: &[u8]) -> Result<Self> {
        let (url, options) = options_of(url)?;
        let certs = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca_pem.to_vec()),
        };
        let client = redis::Client::build_with_tls(url.as_str(), certs)
            .map_err(|e| Error::InvalidOption(format!("invalid Redis TLS setup: {e}")))?;
        Self::from_client(client, scripts::LAYOUT, options).await
    }

    async fn from_client(client: redis::Client, layout: &str, options: Options) -> Result<Self> {
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
        check_eviction(&mut conn.clone(), options.allow_eviction).await?;
        let scripts = Scripts::load(layout);
        // Load every script up front, in one round trip, so first calls need no
        // NOSCRIPT retry. After a restart the retry path reloads them one by one.
        let mut pipe = redis::pipe();
        for source in &scripts.sources {
            pipe.cmd("SCRIPT").arg("LOAD").arg(source).ignore();
        }
        pipe.query_async::<()>(&mut conn.clone())
            .await
            .map_err(|e| match e.code() {
                // The scripts declare flags in a shebang, which Redis 7.0 introduced: an
                // older server refuses to compile them.
                Some(_) => Error::store(std::io::Error::other(format!(
                    "Redis could not load taskyard's scripts ({e}); taskyard needs Redis 7.0 \
                     or later, or Valkey"
                ))),
                None => store_err(e),
            })?;
        let store = RedisStore {
            inner: Arc::new(Inner {
                events: events::Hub::new(client.clone()),
                client,
                conn,
                waiters: tokio::sync::Mutex::new(Vec::new()),
                scripts,
                known_queues: Mutex::new(HashSet::new()),
                keys: Mutex::new(HashMap::new()),
                acked: tokio::sync::Mutex::new(Vec::new()),
                ids: tokio::sync::Mutex::new(ids::Block::default()),
                unanswered: Mutex::new(HashSet::new()),
                lose_answer: std::sync::atomic::AtomicBool::new(false),
            }),
            replica_ack: options.replica_ack,
        };
        store.raise_ids_above_queues().await?;
        Ok(store)
    }

    /// Acknowledges an enqueue only once `replicas` replicas have it (Redis `WAIT`), so a
    /// failover to one of them cannot lose it. If fewer confirm within `timeout`, the
    /// enqueue fails with an error saying so — the jobs are on the primary and may still
    /// run, so a retry can duplicate them (at least once). Other operations are not
    /// waited for: a failover can at worst make a finished job run again.
    ///
    /// The URL form is `?wait_replicas=N&wait_timeout_ms=T` (default 1,000 ms). A timeout
    /// under 1 ms is refused with [`Error::InvalidOption`]: `WAIT` counts whole
    /// milliseconds and reads 0 as "wait forever".
    pub fn with_replica_ack(mut self, replicas: u32, timeout: Duration) -> Result<Self> {
        options::check_wait_timeout(timeout)?;
        self.replica_ack = (replicas > 0).then_some(ReplicaAck { replicas, timeout });
        Ok(self)
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

    /// Forgets that this process added a queue's name, so its next use adds it again.
    fn forget_queue(&self, queue: &QueueName) {
        self.inner
            .known_queues
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(queue.as_str());
    }

    /// Adds a queue's name again after a script found the queue new (its reply says so):
    /// another process may have deleted it since this one added the name.
    async fn remember_again(&self, queue: &QueueName, reply: &redis::Value) -> Result<()> {
        let fresh = match reply {
            redis::Value::Array(v) => v.first(),
            other => Some(other),
        }
        .is_some_and(|v| reply::int(v).ok() == Some(2));
        if fresh {
            self.forget_queue(queue);
            self.remember(queue).await?;
        }
        Ok(())
    }

    fn conn(&self) -> ConnectionManager {
        self.inner.conn.clone()
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
            let r: redis::RedisResult<i64> = redis::Script::new(REMEMBER)
                .key(QUEUES_KEY)
                .arg(queue.as_str())
                .invoke_async(&mut conn)
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
}

/// Refuses a Redis that may evict keys when it is full: an evicted list or hash is jobs
/// gone after they were acknowledged, and an evicted id counter hands ids out again.
/// `volatile-*` policies are refused too: later features keep keys with a time to live.
/// Where `CONFIG GET` is refused (managed Redis), the policy cannot be known: warn once.
async fn check_eviction(conn: &mut ConnectionManager, allowed: bool) -> Result<()> {
    let reply: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(conn)
        .await;
    match reply {
        Ok(pair) => {
            let policy = pair.get(1).cloned().unwrap_or_default();
            if policy.is_empty() || policy == "noeviction" {
                return Ok(());
            }
            if allowed {
                tracing::warn!(
                    policy,
                    "Redis may evict keys when full (allowed by allow_eviction=true)"
                );
                return Ok(());
            }
            Err(Error::EvictionPolicy { policy })
        }
        Err(e) => {
            tracing::warn!(
                error = %e,
                "cannot read Redis's maxmemory-policy; make sure it is noeviction, or jobs \
                 can be evicted when Redis is full"
            );
            Ok(())
        }
    }
}
