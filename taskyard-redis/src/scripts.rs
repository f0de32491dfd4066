//! The Lua scripts and the keys they run on.
//!
//! Every state transition is one script call on one queue's keys (`src/scripts/*.lua`,
//! each with a header naming its ARGV; `common.lua` is put in front of each), so a change
//! is atomic in Redis and a batch costs one round trip. This module builds the scripts'
//! sources, names a queue's keys, calls a script ([`invoke`], [`RedisStore::run`]), turns
//! a script's refusal into taskyard's [`Error`] ([`store_err`]), and moves a queue that
//! release 0.1 wrote into this layout when a script says it has to
//! ([`RedisStore::upgrade`]).

use std::sync::Arc;

use redis::{Script, Value};
use taskyard_core::store::support;
use taskyard_core::{Error, QueueConfig, QueueName, Result};

use crate::RedisStore;

pub(crate) struct Scripts {
    pub(crate) enqueue: Script,
    pub(crate) claim: Script,
    pub(crate) heartbeat: Script,
    pub(crate) finish: Script,
    pub(crate) release: Script,
    pub(crate) maintain: Script,
    pub(crate) redrive: Script,
    pub(crate) purge: Script,
    pub(crate) act: Script,
    pub(crate) drop: Script,
    pub(crate) find: Script,
    pub(crate) list: Script,
    pub(crate) stats: Script,
    pub(crate) settings: Script,
    pub(crate) upgrade: Script,
    pub(crate) wait: Script,
    pub(crate) schedules: Script,
    pub(crate) schedule: Script,
    /// `fire.lua` in front of `enqueue.lua`'s body: a schedule's guard, then its jobs
    /// enqueued as an enqueue does.
    pub(crate) fire: Script,
    /// Every script's full source, to load them all at connect.
    pub(crate) sources: Vec<String>,
}

/// The layout of a queue's keys these scripts read and write (`LAYOUT` in common.lua).
pub(crate) const LAYOUT: &str = "2";

impl Scripts {
    /// The scripts, acting as a build of `layout` would: this build's own is [`LAYOUT`];
    /// another is only for tests of what happens when two releases share a Redis.
    pub(crate) fn load(layout: &str) -> Self {
        let d = QueueConfig::default();
        let common = include_str!("scripts/common.lua")
            .replace(
                &format!("local LAYOUT = '{LAYOUT}'"),
                &format!("local LAYOUT = '{layout}'"),
            )
            .replace("@DEAD_MAX@", &d.dead_max.to_string())
            .replace("@DEAD_MAX_AGE_MS@", &d.dead_max_age_ms.to_string())
            .replace("@COMPLETED_MAX@", &d.completed_max.to_string())
            .replace(
                "@COMPLETED_MAX_AGE_MS@",
                &d.completed_max_age_ms.to_string(),
            )
            .replace("@RESULT_TTL_MS@", &d.result_ttl_ms.to_string());
        let mut sources = Vec::new();
        // Redis (7.0 and later, and Valkey) reads a script's flags from a shebang on its
        // first line only, so the shebang goes in front of common.lua. Declaring flags
        // also changes how Redis applies `maxmemory`: see `Oom` and docs/redis.md.
        let mut s = |oom: Oom, body: &str| {
            let common = helpers_for(&common, body);
            let source = format!("{}\n{common}\n{body}", oom.shebang())
                .replace("@LEASE_EXPIRED@", support::LEASE_EXPIRED);
            let script = Script::new(&source);
            sources.push(source);
            script
        };
        use Oom::{Drains, Grows, Reads};
        Scripts {
            enqueue: s(Grows, include_str!("scripts/enqueue.lua")),
            claim: s(Drains, include_str!("scripts/claim.lua")),
            heartbeat: s(Drains, include_str!("scripts/heartbeat.lua")),
            finish: s(Drains, include_str!("scripts/finish.lua")),
            release: s(Drains, include_str!("scripts/release.lua")),
            maintain: s(Drains, include_str!("scripts/maintain.lua")),
            redrive: s(Grows, include_str!("scripts/redrive.lua")),
            purge: s(Drains, include_str!("scripts/purge.lua")),
            act: s(Drains, include_str!("scripts/act.lua")),
            drop: s(Drains, include_str!("scripts/drop.lua")),
            find: s(Reads, include_str!("scripts/find.lua")),
            list: s(Reads, include_str!("scripts/list.lua")),
            stats: s(Reads, include_str!("scripts/stats.lua")),
            settings: s(Drains, include_str!("scripts/settings.lua")),
            upgrade: s(Drains, include_str!("scripts/upgrade.lua")),
            wait: s(Drains, include_str!("scripts/wait.lua")),
            schedules: s(Reads, include_str!("scripts/schedules.lua")),
            // Like a setting: a schedule is small and the application declares a few, so
            // pausing or removing one works at the memory limit.
            schedule: s(Drains, include_str!("scripts/schedule.lua")),
            // Adds jobs: refused at the limit, as an enqueue is.
            fire: s(
                Grows,
                &format!(
                    "{}\n{}",
                    include_str!("scripts/fire.lua"),
                    include_str!("scripts/enqueue.lua")
                ),
            ),
            sources,
        }
    }
}

/// common.lua with only the helper functions `body` needs, directly or through other
/// helpers. Redis compiles a script once, but runs its top level on every call, and each
/// `local function` there makes a closure: with all of common.lua's ~50 helpers that was
/// ~7 µs of every call (a claim or a finish of 100 jobs), against ~1 µs for the few one
/// script uses. Every other line of common.lua (keys, constants, state) is kept as it is.
/// A helper is `local function NAME(` at the start of a line, up to the next line that is
/// `end` alone (or the same line, for a one-line helper); a name is needed where it
/// appears in the body or in a needed helper (a comment naming it keeps it too, which is
/// only wasteful).
fn helpers_for(common: &str, body: &str) -> String {
    // common.lua as pieces: (the helper's name, or None for other lines, its text).
    let mut pieces: Vec<(Option<&str>, String)> = Vec::new();
    let mut lines = common.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix("local function ") else {
            match pieces.last_mut() {
                Some((None, text)) => {
                    text.push_str(line);
                    text.push('\n');
                }
                _ => pieces.push((None, format!("{line}\n"))),
            }
            continue;
        };
        let name = rest.split('(').next().unwrap_or_default();
        let mut text = format!("{line}\n");
        if !line.trim_end().ends_with(" end") {
            for line in lines.by_ref() {
                text.push_str(line);
                text.push('\n');
                if line == "end" {
                    break;
                }
            }
        }
        pieces.push((Some(name), text));
    }
    let names_in = |text: &str| -> Vec<String> {
        text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect()
    };
    let mut needed: std::collections::HashSet<String> = names_in(body).into_iter().collect();
    for (name, text) in &pieces {
        if name.is_none() {
            needed.extend(names_in(text));
        }
    }
    // Helpers use only helpers defined before them: one pass from the last to the first
    // finds every helper a needed one reaches.
    for (name, text) in pieces.iter().rev() {
        if let Some(name) = name
            && needed.contains(*name)
        {
            needed.extend(names_in(text));
        }
    }
    pieces
        .into_iter()
        .filter(|(name, _)| name.is_none_or(|n| needed.contains(n)))
        .map(|(_, text)| text)
        .collect()
}

/// What a script does to memory, which decides whether it runs when Redis is at its
/// `maxmemory` (with `noeviction`; Redis refuses the script up front, before it writes
/// anything, with an `OOM` error that [`store_err`] makes [`Error::MemoryFull`]).
#[derive(Clone, Copy)]
enum Oom {
    /// Adds jobs (enqueue, redrive, fire): refused at the limit, so a full Redis takes no
    /// more work.
    Grows,
    /// Moves, finishes or deletes jobs, or changes a setting or a schedule (`allow-oom`):
    /// runs at the limit, so workers drain a full Redis instead of jamming on it. What
    /// these add while over the limit is bounded by the jobs already stored, and by the
    /// few schedules an application declares (docs/redis.md).
    Drains,
    /// Reads only (`no-writes`, which implies running at the limit).
    Reads,
}

impl Oom {
    fn shebang(self) -> &'static str {
        match self {
            Oom::Grows => "#!lua",
            Oom::Drains => "#!lua flags=allow-oom",
            Oom::Reads => "#!lua flags=no-writes",
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

/// The keys of the options (priorities, unique keys, deletes, cancels, progress, results,
/// waiters) and of periodic jobs (schedules): a queue that uses none has none of them.
const OPTION_KEY_NAMES: [&str; 11] = [
    "prio",
    "unique",
    "uexp",
    "deleted",
    "cancelled",
    "progress",
    "revoked",
    "results",
    "rexp",
    "waiting",
    "schedules",
];

/// The keys of one queue, in the order every script expects (see `common.lua`): this
/// layout's eleven, release 0.1's meta key, whose presence means 0.1 data is left to
/// upgrade, then the keys of the options (`N_KEYS` in all).
///
/// Layout 2 moved the keys from 0.1's `taskyard:{q}:…` to `taskyard:2:{q}:…`, so a 0.1
/// process still running finds an empty queue instead of misreading new data. Later
/// layouts keep these keys and are told apart by `layout` in the meta hash.
pub(crate) fn keys(queue: &QueueName) -> Vec<String> {
    let q = queue.as_str();
    let name = |name: &&str| format!("taskyard:2:{{{q}}}:{name}");
    let mut keys: Vec<String> = KEY_NAMES.iter().map(name).collect();
    keys.push(format!("taskyard:{{{q}}}:meta"));
    keys.extend(OPTION_KEY_NAMES.iter().map(name));
    keys
}

/// Release 0.1's keys of a queue other than its meta, in the order `upgrade.lua` takes
/// them.
pub(crate) fn keys_0_1(queue: &QueueName) -> Vec<String> {
    let q = queue.as_str();
    KEY_NAMES
        .iter()
        .filter(|name| **name != "meta")
        .map(|name| format!("taskyard:{{{q}}}:{name}"))
        .collect()
}

pub(crate) fn signal_key(queue: &QueueName) -> String {
    format!("taskyard:2:{{{}}}:signal", queue.as_str())
}

/// The queue's channel of events (`EVENTS` in common.lua): cancels of running jobs and
/// ends of waited-for jobs.
pub(crate) fn events_channel(queue: &QueueName) -> String {
    format!("taskyard:2:{{{}}}:events", queue.as_str())
}

pub(crate) fn store_err(e: redis::RedisError) -> Error {
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
    if e.code() == Some("OOM") {
        return Error::MemoryFull;
    }
    if e.code() == Some("TASKYARD_CORRUPT") {
        return Error::Corrupt(e.detail().unwrap_or_default().to_string());
    }
    if e.code() == Some("TASKYARD_CURSOR") {
        return Error::InvalidOption(format!(
            "malformed cursor {:?}: pass back one a listing returned",
            e.detail().unwrap_or_default()
        ));
    }
    Error::store(e)
}

/// Whether a script refused a queue because it still holds release 0.1's data.
pub(crate) fn needs_upgrade(e: &redis::RedisError) -> bool {
    e.code() == Some("TASKYARD_UPGRADE")
}

/// Runs one of the scripts on a queue's keys: `EVALSHA`, and where the server does not
/// have the script (restarted, flushed), `SCRIPT LOAD` and again.
///
/// The command is written straight from the keys and arguments, each copied once: a
/// worker makes two of these calls per batch of jobs, and building them through the
/// client's script invocation copied every argument twice more and formatted the keys
/// anew each time (measured: a few microseconds per call, which at small batches was a
/// few percent of the jobs a worker ran per second).
pub(crate) async fn invoke(
    script: &Script,
    keys: &[String],
    args: &[Vec<u8>],
    conn: &mut impl redis::aio::ConnectionLike,
) -> redis::RedisResult<Value> {
    let bytes: usize =
        keys.iter().map(String::len).sum::<usize>() + args.iter().map(Vec::len).sum::<usize>() + 64;
    let mut cmd = redis::Cmd::with_capacity(3 + keys.len() + args.len(), bytes);
    cmd.arg("EVALSHA")
        .arg(script.get_hash())
        .arg(keys.len())
        .arg(keys)
        .arg(args);
    match cmd.query_async(conn).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            script.load_async(conn).await?;
            cmd.query_async(conn).await
        }
        other => other,
    }
}

impl RedisStore {
    pub(crate) async fn run(
        &self,
        script: &Script,
        queue: &QueueName,
        args: Vec<Vec<u8>>,
    ) -> Result<Value> {
        self.run_borrowed(script, queue, &args).await
    }

    /// [`RedisStore::run`], leaving the arguments with the caller.
    pub(crate) async fn run_borrowed(
        &self,
        script: &Script,
        queue: &QueueName,
        args: &[Vec<u8>],
    ) -> Result<Value> {
        let mut conn = self.conn();
        let keys = self.keys_of(queue);
        match invoke(script, &keys, args, &mut conn).await {
            Err(e) if needs_upgrade(&e) => {
                self.upgrade(queue).await?;
                invoke(script, &keys, args, &mut conn)
                    .await
                    .map_err(store_err)
            }
            other => other.map_err(store_err),
        }
    }

    /// The queue's keys, formatted once per queue and process.
    pub(crate) fn keys_of(&self, queue: &QueueName) -> Arc<[String]> {
        let mut known = self.inner.keys.lock().unwrap_or_else(|e| e.into_inner());
        known
            .entry(queue.clone())
            .or_insert_with(|| keys(queue).into())
            .clone()
    }

    /// Moves a queue written by release 0.1 into this layout, a bounded step per script
    /// call (`upgrade.lua`), so a large old queue never blocks Redis for long.
    pub(crate) async fn upgrade(&self, queue: &QueueName) -> Result<()> {
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

    /// Deletes every key of a queue, this layout's and release 0.1's (`drop.lua`), and
    /// its name. Returns how many jobs it held.
    pub(crate) async fn drop_queue(&self, queue: &QueueName) -> Result<u64> {
        let mut conn = self.conn();
        // The set of names is not under the queue's hash tag: a command of its own, sent
        // first, so an enqueue from another process between the two either is deleted
        // with the queue or finds it new and names it again (never a queue with jobs
        // and no name).
        let _: i64 = redis::cmd("SREM")
            .arg(crate::QUEUES_KEY)
            .arg(queue.as_str())
            .query_async(&mut conn)
            .await
            .map_err(store_err)?;
        self.forget_queue(queue);
        let mut inv = self.inner.scripts.drop.prepare_invoke();
        for k in keys(queue).into_iter().chain(keys_0_1(queue)) {
            inv.key(k);
        }
        let held: i64 = inv.invoke_async(&mut conn).await.map_err(store_err)?;
        Ok(held.max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A script gets the helpers it names and the ones they name, and no other; every
    /// line of common.lua that is not a helper stays.
    #[test]
    fn a_script_gets_the_helpers_it_uses() {
        let common = "local A = KEYS[1]\n-- a note\nlocal function one(x)\n  return x\nend\n\
                      local function two(x) return one(x) end\n\
                      local function three()\n  return 3\nend\nlocal B = 2\n";
        let kept = super::helpers_for(common, "return two(1)");
        assert_eq!(
            kept,
            "local A = KEYS[1]\n-- a note\nlocal function one(x)\n  return x\nend\n\
             local function two(x) return one(x) end\nlocal B = 2\n"
        );
        // The real scripts: a plain claim leaves out the walks, results and waiters.
        let claim = super::helpers_for(
            include_str!("scripts/common.lua"),
            include_str!("scripts/claim.lua"),
        );
        assert!(claim.contains("local function check_layout("));
        assert!(claim.contains("local function promote("));
        assert!(!claim.contains("local function walk_chunk("));
        assert!(!claim.contains("local function tell_waiters("));
    }

    /// `N_KEYS` in common.lua says where release 0.1's keys start (upgrade.lua, drop.lua):
    /// it must count the keys this module passes.
    #[test]
    fn common_lua_counts_the_keys_passed() {
        let q = QueueName::new("q").unwrap();
        let n = keys(&q).len();
        assert!(
            include_str!("scripts/common.lua").contains(&format!("local N_KEYS = {n}\n")),
            "common.lua's N_KEYS is not {n}"
        );
    }
}
