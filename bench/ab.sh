#!/usr/bin/env bash
# A/B of two taskyard builds on the `taskyard bench` workload (docs/benchmarks.md).
#
#   bench/ab.sh [options] OLD NEW [rounds]
#
# OLD and NEW are git revisions of this repository (a commit, a branch, HEAD) or paths to
# taskyard binaries already built (use a path to measure uncommitted work:
# `cargo build --release -p taskyard-cli` then target/release/taskyard). The fixed
# baseline is release 0.1, commit 538e788: `bench/ab.sh 538e788 HEAD`.
#
# Options:
#   --jobs N            jobs per run (default 100000)
#   --stores S          redis, embedded or both (default both)
#   --latency-rate R    jobs/s in the pickup-latency phase, 0 to skip (default 1000)
#   --latency-secs S    seconds of that phase (default 5)
#   --new-args "ARGS"   extra bench arguments for NEW only: with OLD = NEW, the cost of an
#                       option, e.g. --new-args "--priorities all" HEAD HEAD (mixed
#                       priorities against plain jobs) or --new-args --unique-keys
#   --results FILE      where the raw JSON lines go (default: a new file under the work dir)
#   --json              print the summary as one JSON object instead of the table
#
# Environment: TASKYARD_AB_DIR (work dir, default ${TMPDIR:-/tmp}/taskyard-ab),
# TASKYARD_REDIS_SERVER (the redis-server binary), CARGO_BUILD_JOBS (build parallelism).
#
# A revision is built once, in a git worktree under the work dir, and its binary cached
# there by commit sha. Then one fresh redis-server (a free loopback port, no persistence)
# serves every run, after one unrecorded warm-up run per store; the builds take turns, the
# first of each round alternating, so a slow drift of the machine falls on both alike.
# Needs git, cargo, redis-server, redis-cli, python3.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
work=${TASKYARD_AB_DIR:-${TMPDIR:-/tmp}/taskyard-ab}
redis_server=${TASKYARD_REDIS_SERVER:-redis-server}

die() { echo "ab.sh: $*" >&2; exit 1; }
say() { echo "ab.sh: $*" >&2; }
usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

jobs=100000
stores=both
latency_rate=1000
latency_secs=5
results=''
new_args=''
json=no
positional=()
while [ $# -gt 0 ]; do
  case "$1" in
    --jobs) jobs=${2:?}; shift 2 ;;
    --stores) stores=${2:?}; shift 2 ;;
    --latency-rate) latency_rate=${2:?}; shift 2 ;;
    --latency-secs) latency_secs=${2:?}; shift 2 ;;
    --results) results=${2:?}; shift 2 ;;
    --new-args) new_args=${2:?}; shift 2 ;;
    --json) json=yes; shift ;;
    -h|--help) usage ;;
    -*) die "unknown option $1" ;;
    *) positional+=("$1"); shift ;;
  esac
done
[ ${#positional[@]} -ge 2 ] && [ ${#positional[@]} -le 3 ] || usage
old_arg=${positional[0]}
new_arg=${positional[1]}
rounds=${positional[2]:-5}
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || die "rounds must be a positive integer"
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || die "--jobs must be a positive integer"
case "$stores" in
  both) store_list=(redis embedded) ;;
  redis|embedded) store_list=("$stores") ;;
  *) die "--stores must be redis, embedded or both" ;;
esac
# Fewer rounds run, but the medians and spreads then say little about noise.
[ "$rounds" -ge 5 ] || say "only $rounds round(s): fewer than 5, read the figures as a smoke test"
command -v python3 >/dev/null || die "python3 is needed for the summary"
command -v "$redis_server" >/dev/null || die "no redis-server (set TASKYARD_REDIS_SERVER)"
command -v redis-cli >/dev/null || die "no redis-cli"
mkdir -p "$work"

# --- builds -------------------------------------------------------------------------

# Prints the path of a taskyard binary for a revision or a binary path; builds and caches
# it on first use. Progress goes to stderr, so the path alone is on stdout.
binary_for() {
  local arg=$1 sha dir src
  if [ -f "$arg" ] && [ -x "$arg" ]; then
    (cd "$(dirname "$arg")" && echo "$PWD/$(basename "$arg")")
    return
  fi
  sha=$(git -C "$repo" rev-parse --verify --quiet "$arg^{commit}") ||
    die "'$arg' is neither an executable file nor a revision of $repo"
  dir=$work/$sha
  if [ -x "$dir/taskyard" ]; then
    say "$arg = ${sha:0:12}: cached build $dir/taskyard"
    echo "$dir/taskyard"
    return
  fi
  src=$dir/src
  say "$arg = ${sha:0:12}: building taskyard-cli (release) in $src; this takes minutes"
  mkdir -p "$dir"
  # A leftover worktree of an interrupted build is replaced (--force: even if still
  # registered after its folder was deleted).
  git -C "$repo" worktree remove --force "$src" >/dev/null 2>&1 || rm -rf "$src"
  git -C "$repo" worktree add --force --detach --quiet "$src" "$sha" >&2
  # One target dir for every revision, outside the repo: the dependencies compile once,
  # and the repo's own target/ (which someone may be building in) is never touched.
  # nice: a benchmark build must not slow whoever else is working on the machine.
  if ! (cd "$src" && CARGO_TARGET_DIR=$work/target nice -n 19 \
        cargo build --release --locked --quiet -p taskyard-cli >&2); then
    git -C "$repo" worktree remove --force "$src" >/dev/null 2>&1 || true
    die "build of $arg ($sha) failed"
  fi
  cp "$work/target/release/taskyard" "$dir/taskyard.tmp" && mv "$dir/taskyard.tmp" "$dir/taskyard"
  # Only the binary is kept; the worktree would otherwise stay registered in the repo.
  git -C "$repo" worktree remove --force "$src"
  echo "$dir/taskyard"
}

old_bin=$(binary_for "$old_arg")
new_bin=$(binary_for "$new_arg")
old_rev=$(git -C "$repo" rev-parse --verify --quiet "$old_arg^{commit}" 2>/dev/null || echo "$old_bin")
new_rev=$(git -C "$repo" rev-parse --verify --quiet "$new_arg^{commit}" 2>/dev/null || echo "$new_bin")

# The same flags for both builds, so the two runs do the same work: the latency phase
# only if both have it (a build without the flag has no latency phase to skip either).
has_latency() { [[ "$("$1" bench --help)" == *--latency-rate* ]]; }
latency_flags=()
if has_latency "$old_bin" && has_latency "$new_bin"; then
  latency_flags=(--latency-rate "$latency_rate" --latency-secs "$latency_secs")
elif [ "$latency_rate" != 0 ]; then
  say "a build has no --latency-rate: no pickup-latency figures"
fi

# --- one Redis, one data directory ------------------------------------------------------

stamp=$(date +%Y%m%d-%H%M%S)
run_dir=$work/run-$stamp-$$
mkdir -p "$run_dir"
# The file name says which commits ran ("bin" for a binary given by path).
short() { [[ "$1" =~ ^[0-9a-f]{40}$ ]] && echo "${1:0:7}" || echo bin; }
results=${results:-$work/results-$stamp-$(short "$old_rev")-$(short "$new_rev").jsonl}
: >"$results"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis_pid=''
cleanup() {
  # Only the redis-server this script started, by its pid.
  if [ -n "$redis_pid" ]; then kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; fi
  rm -rf "$run_dir"
}
trap cleanup EXIT
"$redis_server" --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$run_dir" --logfile "$run_dir/redis.log" &
redis_pid=$!
for _ in $(seq 50); do
  redis-cli -p "$port" ping >/dev/null 2>&1 && break
  sleep 0.1
done
redis-cli -p "$port" ping >/dev/null 2>&1 || die "redis-server did not start on port $port"
say "redis-server $("$redis_server" --version | grep -o 'v=[^ ]*') on 127.0.0.1:$port; raw results in $results"

# One run: a fresh store, the bench, its JSON line wrapped with side, round and store.
run_one() {
  local side=$1 bin=$2 rev=$3 round=$4 store=$5 url line
  if [ "$store" = redis ]; then
    redis-cli -p "$port" flushall >/dev/null
    url=redis://127.0.0.1:$port
  else
    # A fresh file every run, always in the same directory (same disk, same filesystem).
    rm -f "$run_dir"/embedded.db*
    url=$run_dir/embedded.db
  fi
  # The delayed-job lateness phase is not part of the comparison: skipped where a build
  # has it.
  local delayed_flags=()
  [[ "$("$bin" bench --help)" == *--delayed-jobs* ]] && delayed_flags=(--delayed-jobs 0)
  local extra=()
  # Split on spaces on purpose: several flags may be given in one string.
  # shellcheck disable=SC2206
  [ "$side" = new ] && [ -n "$new_args" ] && extra=($new_args)
  line=$("$bin" bench --store "$url" --jobs "$jobs" --concurrency 100 "${latency_flags[@]}" "${delayed_flags[@]}" "${extra[@]}" --json | tail -n 1)
  [ "$store" = embedded ] && rm -f "$run_dir"/embedded.db*
  [ "$side" = warmup ] && return
  printf '{"side":"%s","rev":"%s","round":%d,"target":"%s","bench":%s}\n' \
    "$side" "$rev" "$round" "$store" "$line" >>"$results"
  say "round $round $store $side: $line"
}

# The first run on a fresh redis-server also loads the Lua scripts, which counts as a few
# more bytes per queued job; round 1 would hand that to OLD alone. So one run per
# store first, not recorded (it also warms the page cache for the embedded store).
for store in "${store_list[@]}"; do
  say "warm-up run on $store (not recorded)"
  run_one warmup "$old_bin" "$old_rev" 0 "$store"
done

for round in $(seq "$rounds"); do
  for store in "${store_list[@]}"; do
    if [ $((round % 2)) = 1 ]; then
      run_one old "$old_bin" "$old_rev" "$round" "$store"
      run_one new "$new_bin" "$new_rev" "$round" "$store"
    else
      run_one new "$new_bin" "$new_rev" "$round" "$store"
      run_one old "$old_bin" "$old_rev" "$round" "$store"
    fi
  done
done

# --- summary ----------------------------------------------------------------------------

python3 - "$results" "$json" "$old_arg" "$new_arg" <<'PY'
import json, statistics, sys

path, as_json, old_name, new_name = sys.argv[1], sys.argv[2] == "yes", sys.argv[3], sys.argv[4]
# (field in the bench's JSON, label, True when higher is better)
FIGURES = [
    ("enqueue_per_s", "enqueue/s", True),
    ("process_per_s", "process/s", True),
    ("bytes_per_queued_job", "bytes/queued job", False),
    ("pickup_p50_ms", "pickup p50 ms", False),
    ("pickup_p99_ms", "pickup p99 ms", False),
]

runs = [json.loads(l) for l in open(path) if l.strip()]
stores = [s for s in ("redis", "embedded") if any(r["target"] == s for r in runs)]
summary = {"old": old_name, "new": new_name, "results": path, "rounds": max(r["round"] for r in runs), "stores": {}}
for store in stores:
    rows = {}
    for field, label, higher in FIGURES:
        vals = {side: [r["bench"][field] for r in runs
                       if r["target"] == store and r["side"] == side and field in r["bench"]]
                for side in ("old", "new")}
        # A latency figure of 0 means the phase was skipped.
        if not vals["old"] or not vals["new"] or (field.startswith("pickup") and max(vals["old"] + vals["new"]) == 0):
            continue
        o, n = statistics.median(vals["old"]), statistics.median(vals["new"])
        # Whether the two spreads are apart: a ratio inside overlapping spreads is noise.
        # With one or two rounds a side, any two samples may fall apart by chance.
        if min(len(vals["old"]), len(vals["new"])) < 3:
            apart = "too few rounds"
        elif min(vals["new"]) > max(vals["old"]):
            apart = "new higher"
        elif max(vals["new"]) < min(vals["old"]):
            apart = "new lower"
        else:
            apart = "overlap"
        rows[field] = {
            "label": label, "higher_is_better": higher,
            "old_median": o, "old_min": min(vals["old"]), "old_max": max(vals["old"]),
            "new_median": n, "new_min": min(vals["new"]), "new_max": max(vals["new"]),
            "ratio": round(n / o, 3) if o else None, "spreads": apart,
        }
    summary["stores"][store] = rows

if as_json:
    print(json.dumps(summary))
    sys.exit(0)

def fmt(x):
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.2f}"

print(f"OLD = {old_name}, NEW = {new_name}; {summary['rounds']} rounds; raw results: {path}")
header = ("figure", "OLD median", "OLD min–max", "NEW median", "NEW min–max", "NEW/OLD", "spreads")
for store, rows in summary["stores"].items():
    table = [header]
    for r in rows.values():
        better = "higher" if r["higher_is_better"] else "lower"
        table.append((
            f"{r['label']} ({better} better)",
            fmt(r["old_median"]), f"{fmt(r['old_min'])}–{fmt(r['old_max'])}",
            fmt(r["new_median"]), f"{fmt(r['new_min'])}–{fmt(r['new_max'])}",
            f"{r['ratio']:.3f}" if r["ratio"] is not None else "-", r["spreads"],
        ))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    print(f"\n{store}")
    for row in table:
        print("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
PY
say "raw results kept in $results"
