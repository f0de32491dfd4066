// BullMQ under the workload of `taskyard bench` (docs/benchmarks.md), so the two sets of
// figures compare: same Redis, same payload, same batch size, same concurrency.
//
//   node bench.mjs <port> <jobs> <concurrency>       enqueue, memory, process
//   node bench.mjs latency <port> <rate> <secs>      pickup latency at a fixed rate
//   node bench.mjs delayed <port> <jobs> <spread_s>  lateness of delayed jobs
//
// Each mode empties the Redis (FLUSHALL) first and prints exactly one JSON line on stdout;
// anything else goes to stderr. Started by ./run, which installs bullmq next to a copy of
// this file.
import { Queue, Worker } from 'bullmq';
import IORedis from 'ioredis';

const BATCH = 1000; // jobs per addBulk, as taskyard bench's --batch default
const LATENCY_CONCURRENCY = 100; // the worker of the latency and delayed modes
const DELAYED_LEAD_MS = 1000; // no delayed job is due before all of them are added
const SETTLE_MS = 500; // let a fresh worker reach its blocking wait before timing
const DRAIN_TIMEOUT_MS = 30000; // how long to wait for stragglers after the producer

const FILLER = 'x'.repeat(100);
// Every job is removed once it has run, so nothing finished stays in Redis.
const JOB_OPTS = { removeOnComplete: true, removeOnFail: true };

// Wall-clock milliseconds with sub-millisecond resolution: a job's timestamps are taken
// in one process and compared in the same process, so a shared clock origin suffices.
const nowMs = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const round2 = (x) => Math.round(x * 100) / 100;

function usage() {
  console.error('usage: bench.mjs <port> <jobs> <concurrency>');
  console.error('       bench.mjs latency <port> <rate_per_s> <secs>');
  console.error('       bench.mjs delayed <port> <jobs> <spread_s>');
  process.exit(2);
}

// A positive number from the command line, or the usage message.
function arg(value, name) {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) {
    console.error(`bench.mjs: ${name} must be a positive number, got '${value}'`);
    usage();
  }
  return n;
}

// The nearest-rank percentile of ascending samples (the same rule as taskyard bench).
function percentile(sorted, p) {
  const rank = Math.ceil(p * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

async function usedMemory(redis) {
  const info = await redis.info('memory');
  return Number(/^used_memory:(\d+)/m.exec(info)[1]);
}

// A connection for our own commands (FLUSHALL, INFO), and the options BullMQ needs for
// its own connections (a Worker's blocking connection must not give up on retries).
function connect(port) {
  const redis = new IORedis({ host: '127.0.0.1', port, maxRetriesPerRequest: null });
  const bullOpts = { connection: { host: '127.0.0.1', port, maxRetriesPerRequest: null } };
  return { redis, bullOpts };
}

// A job that fails means the figures are not of the workload: stop with a message.
function failOnError(worker) {
  worker.on('failed', (job, err) => {
    console.error(`bench.mjs: job ${job?.id} failed: ${err?.message}`);
    process.exit(1);
  });
  worker.on('error', (err) => {
    console.error(`bench.mjs: worker error: ${err?.message}`);
    process.exit(1);
  });
}

// Collects samples until `total` are in or the drain timeout passes; a shortfall is
// reported on stderr and the figures are computed over what arrived.
async function drain(samples, total) {
  const deadline = Date.now() + DRAIN_TIMEOUT_MS;
  while (samples.length < total && Date.now() < deadline) await sleep(20);
  if (samples.length < total) console.error(`bench.mjs: only ${samples.length} of ${total} jobs ran`);
  if (samples.length === 0) {
    console.error('bench.mjs: no job ran');
    process.exit(1);
  }
  return samples.slice().sort((a, b) => a - b);
}

// Enqueue N jobs in batches, measure memory, then process them with one worker.
async function throughput(port, jobs, concurrency) {
  const { redis, bullOpts } = connect(port);
  await redis.flushall();
  const name = `bench-${Date.now()}`;
  const queue = new Queue(name, bullOpts);
  await queue.waitUntilReady();

  const before = await usedMemory(redis);
  const enqueueStart = performance.now();
  for (let first = 0; first < jobs; first += BATCH) {
    const batch = [];
    for (let n = first; n < Math.min(jobs, first + BATCH); n++) {
      batch.push({ name: 'noop', data: { n, s: FILLER }, opts: JOB_OPTS });
    }
    await queue.addBulk(batch); // the next batch is sent once this one is acknowledged
  }
  const enqueueS = (performance.now() - enqueueStart) / 1000;
  const after = await usedMemory(redis);

  // The clock starts before the worker exists: its start-up is part of the process time.
  let completed = 0;
  let allDone;
  const finished = new Promise((resolve) => (allDone = resolve));
  const processStart = performance.now();
  const worker = new Worker(name, async () => {}, { ...bullOpts, concurrency });
  failOnError(worker);
  worker.on('completed', () => {
    if (++completed === jobs) allDone();
  });
  await finished;
  const processS = (performance.now() - processStart) / 1000;

  await worker.close();
  await queue.close();
  await redis.quit();
  return {
    system: 'bullmq',
    jobs,
    concurrency,
    enqueue_per_s: Math.round(jobs / enqueueS),
    process_per_s: Math.round(jobs / processS),
    bytes_per_queued_job: Math.round((after - before) / jobs),
  };
}

// Single jobs at a fixed rate while a worker waits for them; each job carries the time
// just before its add, and the handler records how long it took to start.
async function latency(port, rate, secs) {
  const { redis, bullOpts } = connect(port);
  await redis.flushall();
  const name = `latency-${Date.now()}`;
  const queue = new Queue(name, bullOpts);
  await queue.waitUntilReady();
  const samples = [];
  const worker = new Worker(name, async (job) => {
    samples.push(nowMs() - job.data.t);
  }, { ...bullOpts, concurrency: LATENCY_CONCURRENCY });
  failOnError(worker);
  await worker.waitUntilReady();
  await sleep(SETTLE_MS);

  const total = Math.round(rate * secs);
  const periodMs = 1000 / rate;
  const start = performance.now();
  for (let n = 0; n < total; n++) {
    // Paced against the start, not the previous add, so a slow add does not lower the rate.
    const wait = start + n * periodMs - performance.now();
    if (wait > 0) await sleep(wait);
    await queue.add('noop', { n, s: FILLER, t: nowMs() }, JOB_OPTS);
  }
  const sorted = await drain(samples, total);

  await worker.close();
  await queue.close();
  await redis.quit();
  return {
    system: 'bullmq',
    mode: 'latency',
    rate,
    secs,
    jobs: sorted.length,
    p50_ms: round2(percentile(sorted, 0.5)),
    p99_ms: round2(percentile(sorted, 0.99)),
    max_ms: round2(sorted[sorted.length - 1]),
  };
}

// Delayed jobs due at random times over `spread` seconds while an idle worker runs; each
// carries its due time, and the handler records how late it started.
async function delayed(port, jobs, spread) {
  const { redis, bullOpts } = connect(port);
  await redis.flushall();
  const name = `delayed-${Date.now()}`;
  const queue = new Queue(name, bullOpts);
  await queue.waitUntilReady();
  const samples = [];
  const worker = new Worker(name, async (job) => {
    samples.push(nowMs() - job.data.due);
  }, { ...bullOpts, concurrency: LATENCY_CONCURRENCY });
  failOnError(worker);
  await worker.waitUntilReady();
  await sleep(SETTLE_MS);

  // BullMQ makes a job due at opts.timestamp + opts.delay; giving both from one clock
  // reading makes the due time exact instead of depending on when each add is sent.
  const timestamp = Date.now();
  const all = [];
  for (let n = 0; n < jobs; n++) {
    const delay = DELAYED_LEAD_MS + Math.floor(Math.random() * spread * 1000);
    all.push({ name: 'noop', data: { n, s: FILLER, due: timestamp + delay }, opts: { ...JOB_OPTS, timestamp, delay } });
  }
  for (let first = 0; first < jobs; first += BATCH) {
    await queue.addBulk(all.slice(first, first + BATCH));
  }
  if (Date.now() > timestamp + DELAYED_LEAD_MS) {
    console.error('bench.mjs: adding the jobs took longer than the lead time; early ones may read late');
  }
  await sleep(DELAYED_LEAD_MS + spread * 1000);
  const sorted = await drain(samples, jobs);

  await worker.close();
  await queue.close();
  await redis.quit();
  return {
    system: 'bullmq',
    mode: 'delayed',
    jobs: sorted.length,
    spread_s: spread,
    p50_ms: round2(percentile(sorted, 0.5)),
    p99_ms: round2(percentile(sorted, 0.99)),
    max_ms: round2(sorted[sorted.length - 1]),
    min_ms: round2(sorted[0]),
  };
}

const argv = process.argv.slice(2);
let report;
if (argv[0] === 'latency') {
  if (argv.length !== 4) usage();
  report = await latency(arg(argv[1], 'port'), arg(argv[2], 'rate'), arg(argv[3], 'secs'));
} else if (argv[0] === 'delayed') {
  if (argv.length !== 4) usage();
  report = await delayed(arg(argv[1], 'port'), arg(argv[2], 'jobs'), arg(argv[3], 'spread_s'));
} else {
  if (argv.length !== 3) usage();
  report = await throughput(arg(argv[0], 'port'), arg(argv[1], 'jobs'), arg(argv[2], 'concurrency'));
}
console.log(JSON.stringify(report));
// Open handles (timers inside ioredis) must not keep the process alive after the report.
process.exit(0);
