//! Job ids: one counter per Redis server (`taskyard:ids`), so an id names one job across
//! every queue and a job is found by its id alone. A store takes ids from the counter in
//! blocks, so an enqueue pays a round trip for them once per block; the ids left in a
//! block when its process ends are never handed out.
//!
//! Release 0.1 numbered jobs per queue (its `seq` in the queue's meta). At connect the
//! counter is raised above every such counter, so a new id never repeats an old one; the
//! old ids themselves stay as they were, and where one is in two queues, the queue tells
//! them apart.

use redis::Script;
use taskyard_core::Result;

use crate::scripts::store_err;
use crate::{QUEUES_KEY, RedisStore};

/// The counter.
pub(crate) const IDS_KEY: &str = "taskyard:ids";

/// Ids taken at a time.
const BLOCK: u64 = 10_000;

/// The ids of the current block not handed out yet: `next..end`.
#[derive(Debug, Default)]
pub(crate) struct Block {
    next: u64,
    end: u64,
}

/// Raises the counter to at least ARGV[1], atomically.
const RAISE: &str = "local v = tonumber(redis.call('GET', KEYS[1]) or '0')
if v < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1";

impl RedisStore {
    /// The first of `n` consecutive new ids.
    pub(crate) async fn ids(&self, n: u64) -> Result<u64> {
        let mut block = self.inner.ids.lock().await;
        if block.end - block.next < n {
            // Not enough left for the whole batch: its ids must be consecutive, so the
            // rest of this block is skipped.
            let size = n.max(BLOCK);
            let end: u64 = redis::cmd("INCRBY")
                .arg(IDS_KEY)
                .arg(size)
                .query_async(&mut self.conn())
                .await
                .map_err(store_err)?;
            block.next = end - size + 1;
            block.end = end + 1;
        }
        let first = block.next;
        block.next += n;
        Ok(first)
    }

    /// Raises the counter above every queue's own counter (release 0.1's, and the one an
    /// upgrade keeps), so no new id repeats one of theirs.
    pub(crate) async fn raise_ids_above_queues(&self) -> Result<()> {
        let mut conn = self.conn();
        let queues: Vec<String> = redis::cmd("SMEMBERS")
            .arg(QUEUES_KEY)
            .query_async(&mut conn)
            .await
            .map_err(store_err)?;
        if queues.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for q in &queues {
            pipe.hget(format!("taskyard:{{{q}}}:meta"), "seq");
            pipe.hget(format!("taskyard:2:{{{q}}}:meta"), "seq");
        }
        let seqs: Vec<Option<u64>> = pipe.query_async(&mut conn).await.map_err(store_err)?;
        let highest = seqs.into_iter().flatten().max().unwrap_or(0);
        if highest > 0 {
            let _: i64 = Script::new(RAISE)
                .key(IDS_KEY)
                .arg(highest)
                .invoke_async(&mut conn)
                .await
                .map_err(store_err)?;
        }
        Ok(())
    }
}
