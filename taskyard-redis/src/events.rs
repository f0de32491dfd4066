//! Events from the queues' channels (`taskyard:2:{q}:events`): a cancel of a running job
//! ("c") wakes the workers waiting in `wait_cancel`, the end of a job someone waits for
//! ("e" and the ids) wakes its `wait_job` callers.
//!
//! A store keeps one subscriber connection, opened by the first wait and shared by every
//! wait of the process: a task reads its messages and wakes the waiters they concern,
//! through a `watch` per queue (cancels) and per waited job. Channels are added as waits
//! name new queues. When the connection ends (a restart, a network failure), the task
//! wakes every waiter — messages may have been missed, and a spurious return is allowed —
//! and the next wait connects again and subscribes to every channel asked for so far.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use futures::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::scripts::store_err;
use taskyard_core::{Error, Result};

/// How long opening the subscriber connection may take, as for the other connections.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The waiters of one store and its subscriber.
pub(crate) struct Hub {
    client: redis::Client,
    /// The subscriber's commands while its connection is up. Its lock also orders
    /// subscriptions: a channel added while a connection opens is subscribed on it.
    sink: tokio::sync::Mutex<Option<PubSubSink>>,
    /// Every channel a wait asked for: a new connection subscribes to them all.
    wanted: Mutex<HashSet<String>>,
    /// The channels the live connection has confirmed (empty while there is none): the
    /// fast path of a wait, which takes no other lock.
    confirmed: Mutex<HashSet<String>>,
    /// Counts connections, so a reader that ended clears only its own.
    generation: AtomicU64,
    /// Per channel, bumped by each cancel of a running job there.
    cancels: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// Per channel and job id, bumped when that job ended; gone once nobody waits.
    jobs: Mutex<HashMap<(String, String), watch::Sender<u64>>>,
    /// The reader task, stopped when the store is dropped.
    reader: Mutex<Option<AbortHandle>>,
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.reader).take() {
            task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn bump(tx: &watch::Sender<u64>) {
    tx.send_modify(|n| *n = n.wrapping_add(1));
}

impl Hub {
    pub(crate) fn new(client: redis::Client) -> Arc<Self> {
        Arc::new(Hub {
            client,
            sink: tokio::sync::Mutex::new(None),
            wanted: Mutex::new(HashSet::new()),
            confirmed: Mutex::new(HashSet::new()),
            generation: AtomicU64::new(0),
            cancels: Mutex::new(HashMap::new()),
            jobs: Mutex::new(HashMap::new()),
            reader: Mutex::new(None),
        })
    }

    /// A receiver that changes at the next cancel on `channel` (or a reconnect).
    pub(crate) fn cancels(&self, channel: &str) -> watch::Receiver<u64> {
        lock(&self.cancels)
            .entry(channel.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// A wait for job `id` of `channel` to end (woken at a reconnect too).
    pub(crate) fn job(self: &Arc<Self>, channel: &str, id: &str) -> JobWait {
        let key = (channel.to_string(), id.to_string());
        let rx = lock(&self.jobs)
            .entry(key.clone())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        JobWait {
            rx: Some(rx),
            hub: Arc::downgrade(self),
            key,
        }
    }

    /// Makes sure every channel of `channels` is subscribed on a live connection,
    /// connecting if none is. Returns whether they all were already (no round trip).
    pub(crate) async fn subscribe(self: &Arc<Self>, channels: &[String]) -> Result<bool> {
        let all_in = |set: &HashSet<String>| channels.iter().all(|c| set.contains(c));
        if all_in(&lock(&self.confirmed)) {
            return Ok(true);
        }
        let mut sink = self.sink.lock().await;
        lock(&self.wanted).extend(channels.iter().cloned());
        if let Some(s) = sink.as_mut() {
            let fresh: Vec<String> = {
                let confirmed = lock(&self.confirmed);
                channels
                    .iter()
                    .filter(|c| !confirmed.contains(*c))
                    .cloned()
                    .collect()
            };
            if fresh.is_empty() {
                return Ok(true);
            }
            match s.subscribe(&fresh).await {
                Ok(()) => {
                    lock(&self.confirmed).extend(fresh);
                    return Ok(false);
                }
                Err(e) => {
                    // The connection is failing: the next wait opens another, and waits
                    // on it now may miss messages meanwhile.
                    *sink = None;
                    lock(&self.confirmed).clear();
                    self.wake_all();
                    return Err(store_err(e));
                }
            }
        }
        let connect = self.client.get_async_pubsub();
        let (mut s, stream) = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| {
                Error::store(std::io::Error::other("the subscriber connection timed out"))
            })?
            .map_err(store_err)?
            .split();
        let all: Vec<String> = lock(&self.wanted).iter().cloned().collect();
        s.subscribe(&all).await.map_err(store_err)?;
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let task = tokio::spawn(read(Arc::downgrade(self), stream, generation));
        if let Some(old) = lock(&self.reader).replace(task.abort_handle()) {
            old.abort();
        }
        *sink = Some(s);
        *lock(&self.confirmed) = all.into_iter().collect();
        Ok(false)
    }

    /// Wakes the waiters a message concerns.
    fn dispatch(&self, channel: &str, payload: &[u8]) {
        match payload.first() {
            Some(b'c') => {
                if let Some(tx) = lock(&self.cancels).get(channel) {
                    bump(tx);
                }
            }
            Some(b'e') => {
                let jobs = lock(&self.jobs);
                if jobs.is_empty() {
                    return;
                }
                for id in String::from_utf8_lossy(&payload[1..]).split(',') {
                    if let Some(tx) = jobs.get(&(channel.to_string(), id.to_string())) {
                        bump(tx);
                    }
                }
            }
            _ => {}
        }
    }

    /// Wakes every waiter: the subscriber lost messages, or may have.
    fn wake_all(&self) {
        lock(&self.cancels).values().for_each(bump);
        lock(&self.jobs).values().for_each(bump);
    }
}

/// Reads the subscriber's messages until its connection ends; then marks the hub as
/// needing a new connection and wakes every waiter.
async fn read(hub: Weak<Hub>, mut stream: PubSubStream, generation: u64) {
    while let Some(msg) = stream.next().await {
        let Some(hub) = hub.upgrade() else { return };
        hub.dispatch(msg.get_channel_name(), msg.get_payload_bytes());
    }
    let Some(hub) = hub.upgrade() else { return };
    {
        let mut sink = hub.sink.lock().await;
        if hub.generation.load(Ordering::Acquire) == generation {
            *sink = None;
            lock(&hub.confirmed).clear();
        }
    }
    tracing::debug!("the subscriber connection ended; the next wait opens another");
    hub.wake_all();
}

/// A wait for one job's end: forgets the job's entry once its last waiter is done.
pub(crate) struct JobWait {
    rx: Option<watch::Receiver<u64>>,
    hub: Weak<Hub>,
    key: (String, String),
}

impl JobWait {
    /// Returns at the job's end (or a reconnect); at once if that came since this wait
    /// began.
    pub(crate) async fn ended(&mut self) {
        if let Some(rx) = self.rx.as_mut() {
            // An error: the entry was dropped, which only the hub's end does.
            let _ = rx.changed().await;
        }
    }
}

impl Drop for JobWait {
    fn drop(&mut self) {
        drop(self.rx.take());
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        let mut jobs = lock(&hub.jobs);
        if jobs
            .get(&self.key)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            jobs.remove(&self.key);
        }
    }
}
