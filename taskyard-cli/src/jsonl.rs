//! `taskyard enqueue --jsonl FILE`: one job per JSON line, enqueued in bulk.
//!
//! Each line is an object: `kind` (required), `payload` (any JSON, default `{}`), and
//! optionally `queue` (default `--queue`), `delay_ms`, `run_at_ms` (Unix ms),
//! `max_attempts`, `timeout_ms` (how long one run may take), `priority` (0 to 100),
//! `unique` (a key), `unique_mode` (queued, finished — the default —, period, debounce)
//! and `unique_period_ms`. Unknown fields are refused, so a typo is not silently
//! dropped; blank lines are skipped. A duplicate prints the holder's id, a tab and
//! `duplicate`.
//!
//! Lines go to the store in batches: up to 1,000 consecutive lines of one queue, one
//! atomic store call each. A line that does not parse (or names a bad kind, queue or
//! option) stops the run with its line number before its batch is written: the batches
//! before it are enqueued and their ids printed, nothing of its own batch is.

use std::io::BufRead;
use std::time::{Duration, UNIX_EPOCH};

use taskyard::{Client, EnqueueOptions, Error, NewJob, QueueName, RetryPolicy, UniqueMode};

const BATCH: usize = 1000;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    kind: String,
    #[serde(default)]
    payload: Option<serde_json::Value>,
    #[serde(default)]
    queue: Option<String>,
    #[serde(default)]
    delay_ms: Option<u64>,
    #[serde(default)]
    run_at_ms: Option<u64>,
    #[serde(default)]
    max_attempts: Option<u32>,
    /// Read as any JSON value, so a negative or fractional one gets an error that names
    /// the field (serde's does not).
    #[serde(default)]
    timeout_ms: Option<serde_json::Value>,
    /// Any JSON value, for the same reason.
    #[serde(default)]
    priority: Option<serde_json::Value>,
    #[serde(default)]
    unique: Option<String>,
    #[serde(default)]
    unique_mode: Option<String>,
    #[serde(default)]
    unique_period_ms: Option<u64>,
}

fn parse(text: &str, default_queue: &str) -> Result<(QueueName, NewJob), Error> {
    let line: Line = serde_json::from_str(text)
        .map_err(|e| Error::InvalidOption(format!("not a job object: {e}")))?;
    let queue = QueueName::new(line.queue.as_deref().unwrap_or(default_queue))?;
    let mut opts = EnqueueOptions::default();
    match (line.delay_ms, line.run_at_ms) {
        (Some(_), Some(_)) => {
            return Err(Error::InvalidOption(
                "give delay_ms or run_at_ms, not both".into(),
            ));
        }
        (Some(ms), None) => opts = opts.delay(Duration::from_millis(ms)),
        (None, Some(at)) => opts = opts.run_at(UNIX_EPOCH + Duration::from_millis(at)),
        (None, None) => {}
    }
    if let Some(n) = line.max_attempts {
        opts = opts.max_attempts(n);
    }
    if let Some(value) = line.timeout_ms {
        let ms = value.as_u64().ok_or_else(|| {
            Error::InvalidOption(format!(
                "timeout_ms must be a whole number of milliseconds (1 to 604800000), not {value}"
            ))
        })?;
        opts = opts.timeout(Duration::from_millis(ms));
    }
    if let Some(value) = line.priority {
        let p = value.as_i64().ok_or_else(|| {
            Error::InvalidOption(format!(
                "priority must be a whole number (0 to 100), not {value}"
            ))
        })?;
        opts = opts.priority(p);
    }
    match (line.unique, line.unique_mode) {
        (Some(key), mode) => {
            let period = line.unique_period_ms.map(Duration::from_millis);
            let mode = UniqueMode::parse(mode.as_deref().unwrap_or("finished"), period)?;
            opts = opts.unique(key, mode);
        }
        (None, Some(_)) => {
            return Err(Error::InvalidOption(
                "unique_mode needs a unique key".into(),
            ));
        }
        (None, None) if line.unique_period_ms.is_some() => {
            return Err(Error::InvalidOption(
                "unique_period_ms needs a unique key".into(),
            ));
        }
        (None, None) => {}
    }
    let payload = serde_json::to_vec(&line.payload.unwrap_or_else(|| serde_json::json!({})))?;
    let job = NewJob::new(&line.kind, payload, &opts, RetryPolicy::default())?;
    Ok((queue, job))
}

pub(crate) async fn enqueue(
    client: Client,
    source: &str,
    default_queue: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let reader: Box<dyn BufRead> = if source == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(source).map_err(|e| format!("cannot read {source}: {e}"))?;
        Box::new(std::io::BufReader::new(file))
    };
    let mut batch: Vec<NewJob> = Vec::with_capacity(BATCH);
    let mut batch_queue: Option<QueueName> = None;
    let mut written = 0usize;
    for (i, text) in reader.lines().enumerate() {
        let number = i + 1;
        let text = text.map_err(|e| format!("line {number}: cannot read: {e}"))?;
        if text.trim().is_empty() {
            continue;
        }
        let (queue, job) = parse(&text, default_queue).map_err(|e| {
            format!(
                "line {number}: {e} (nothing of its batch was written; \
                 {written} jobs before it were)"
            )
        })?;
        if batch_queue.as_ref().is_some_and(|q| *q != queue) {
            written += flush(&client, &mut batch, batch_queue.as_ref(), written).await?;
        }
        batch_queue = Some(queue);
        batch.push(job);
        // A full batch goes at once: a producer writing to a pipe sees its ids without
        // waiting for the next line.
        if batch.len() == BATCH {
            written += flush(&client, &mut batch, batch_queue.as_ref(), written).await?;
        }
    }
    flush(&client, &mut batch, batch_queue.as_ref(), written).await?;
    Ok(())
}

/// What `enqueue` prints for one job: its id, and for a duplicate the holder's id
/// followed by a tab and `duplicate`, so scripts still read the id as the first field.
pub(crate) fn answer(done: &taskyard::Enqueued) -> String {
    if done.duplicate {
        format!("{}\tduplicate", done.id)
    } else {
        done.id.to_string()
    }
}

/// Writes one batch and prints its ids; returns how many.
async fn flush(
    client: &Client,
    batch: &mut Vec<NewJob>,
    queue: Option<&QueueName>,
    written: usize,
) -> Result<usize, Box<dyn std::error::Error>> {
    let (Some(queue), false) = (queue, batch.is_empty()) else {
        return Ok(0);
    };
    let n = batch.len();
    let ids = client
        .enqueue_raw(queue, std::mem::take(batch))
        .await
        .map_err(|e| {
            // Refused input changes nothing; a store error may hide a write (a reply lost
            // to a crash, replicas that did not confirm).
            let this = match e {
                Error::Store(_) => "this batch may or may not have been written",
                _ => "nothing of this batch was written",
            };
            format!("{e} ({this}; {written} jobs before it were)")
        })?;
    let mut out = std::io::stdout().lock();
    for done in ids {
        use std::io::Write;
        writeln!(out, "{}", answer(&done))?;
    }
    Ok(n)
}
