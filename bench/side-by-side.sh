#!/usr/bin/env bash
# taskyard (on Redis and on the embedded store) and BullMQ on the same fresh redis-server,
# round after round (docs/benchmarks.md). taskyard's bench ends with its delayed-job
# lateness phase (2,000 jobs over 5 s), the workload of the harness's delayed mode.
#   bench/side-by-side.sh [rounds] [port]
# Needs: a release build (cargo build --release -p taskyard-cli), redis-server, and Node
# with npm for bench/peers/bullmq/run (it installs the pinned bullmq once, outside the repo).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
port=${2:-6391}
bullmq=bench/peers/bullmq/run
bin=target/release/taskyard
[ -x "$bin" ] || cargo build --release -p taskyard-cli
redis-server --port "$port" --save "" --appendonly no --daemonize yes >/dev/null
trap 'redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true' EXIT
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done
for _ in $(seq "$rounds"); do
  redis-cli -p "$port" flushall >/dev/null
  "$bin" bench --store "redis://127.0.0.1:$port" --jobs 100000 --concurrency 100 \
    --latency-rate 1000 --latency-secs 10 --json
  # The embedded store, default durability, a fresh file on the same disk as the repo.
  rm -f target/bench-embedded.db*
  "$bin" bench --store target/bench-embedded.db --jobs 100000 --concurrency 100 \
    --latency-rate 1000 --latency-secs 10 --json
  rm -f target/bench-embedded.db*
  # The BullMQ harness empties the Redis itself (FLUSHALL) before each measurement.
  "$bullmq" "$port" 100000 100
  "$bullmq" latency "$port" 1000 10
  "$bullmq" delayed "$port" 2000 5
done
