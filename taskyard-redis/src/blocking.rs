//! The commands that block their connection: `BLPOP` for idle workers and `WAIT` for
//! enqueues confirmed by replicas.
//!
//! Every other call shares one multiplexed connection (the connection manager), where a
//! blocking command would hold up every call queued behind it. So each of these runs on a
//! connection of its own, taken from a pool in [`Inner`](crate::Inner) (`waiters`,
//! `acked`) and put back after an answer; one whose call failed or hung is dropped, and
//! the next call opens a new one.

use std::time::Duration;

use redis::{AsyncConnectionConfig, Value};
use taskyard_core::{Error, QueueName, Result};

use crate::reply::int;
use crate::scripts::{invoke, needs_upgrade, signal_key, store_err};
use crate::{RedisStore, ReplicaAck};

impl RedisStore {
    /// Runs the enqueue script and `WAIT`s for replicas on a connection of its own.
    pub(crate) async fn enqueue_acked(
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
        let keys = self.keys_of(queue);
        let out = match invoke(&self.inner.scripts.enqueue, &keys, &args, &mut conn).await {
            Err(e) if needs_upgrade(&e) => {
                self.upgrade(queue).await?;
                invoke(&self.inner.scripts.enqueue, &keys, &args, &mut conn).await
            }
            other => other,
        }
        .map_err(store_err)?;
        // A refused enqueue (queue full) wrote nothing: there is nothing to wait for.
        let written =
            matches!(&out, Value::Array(v) if v.first().is_some_and(|f| int(f).ok() >= Some(1)));
        if written {
            let confirmed: i64 = redis::cmd("WAIT")
                .arg(ack.replicas)
                .arg(ack.timeout.as_millis() as u64)
                .query_async(&mut conn)
                .await
                .map_err(store_err)?;
            if confirmed < i64::from(ack.replicas) {
                self.inner.acked.lock().await.push(conn);
                return Err(Error::ReplicasNotConfirmed {
                    confirmed: confirmed.max(0) as u32,
                    wanted: ack.replicas,
                    timeout_ms: ack.timeout.as_millis() as u64,
                });
            }
        }
        self.inner.acked.lock().await.push(conn);
        Ok(out)
    }

    /// Blocks on `BLPOP` of the queues' signal lists until one is pushed or `timeout`
    /// passes, on a waiter connection of its own. `queues` is not empty.
    ///
    /// The timeout is kept here, not by Redis: Redis ends a blocked call's timeout on its
    /// periodic tick (`hz`, 10 a second by default), up to 100 ms late, and a worker
    /// waiting for a scheduled job's due time would start it that late. So the call is
    /// woken from here with `CLIENT UNBLOCK` at `timeout`; where the server forbids
    /// that, its own timeout (the same) still ends it, late.
    pub(crate) async fn wait_for_signal(
        &self,
        queues: &[QueueName],
        timeout: Duration,
    ) -> Result<()> {
        let pooled = self.inner.waiters.lock().await.pop();
        let (mut conn, id) = match pooled {
            Some(c) => c,
            None => {
                // No response timeout here: BLPOP is meant to block. The call below is
                // bounded by its own timeout instead.
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(5)))
                    .set_response_timeout(None);
                let mut conn = self
                    .inner
                    .client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(store_err)?;
                let id = redis::cmd("CLIENT")
                    .arg("ID")
                    .query_async::<i64>(&mut conn)
                    .await
                    .ok();
                (conn, id)
            }
        };
        let mut cmd = redis::cmd("BLPOP");
        for q in queues {
            cmd.arg(signal_key(q));
        }
        cmd.arg(timeout.as_secs_f64().max(0.001));
        let bound = timeout + Duration::from_secs(2);
        let answer = {
            let blpop = cmd.query_async::<Value>(&mut conn);
            tokio::pin!(blpop);
            let woken = match id {
                Some(id) => tokio::select! {
                    r = &mut blpop => Some(r),
                    _ = tokio::time::sleep(timeout) => {
                        let _ = redis::cmd("CLIENT")
                            .arg("UNBLOCK")
                            .arg(id)
                            .query_async::<i64>(&mut self.conn())
                            .await;
                        None
                    }
                },
                None => None,
            };
            match woken {
                Some(r) => Ok(r),
                None => tokio::time::timeout(bound, blpop).await,
            }
        };
        match answer {
            Ok(Ok(_)) => {
                self.inner.waiters.lock().await.push((conn, id));
                Ok(())
            }
            // A dead or stuck connection is dropped; the next wait opens a new one.
            Ok(Err(e)) => Err(store_err(e)),
            Err(_) => Ok(()),
        }
    }
}
