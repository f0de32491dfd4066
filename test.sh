#!/usr/bin/env bash
# Runs every test of the workspace, on a fresh Debian machine too: first installs what the
# tests need from Debian's packages when it is missing, then runs the whole suite without
# stopping at the first failing test binary. Extra arguments go to `cargo test`
# (e.g. `./test.sh -p taskyard-sqlite`).
#
# What the tests need besides Rust:
#   redis-server  the Redis tests start their own servers on free loopback ports
#                 (or set TASKYARD_REDIS_SERVER to a redis-server binary);
#   openssl       the TLS test makes its certificates;
#   faketime      the clock-skew test moves worker processes' clocks (libfaketime);
#   strace        the embedded store's fsync test counts a child process's fsyncs.
set -euo pipefail
cd "$(dirname "$0")"

# Debian package for each command the tests run.
declare -A package=([redis-server]=redis-server [openssl]=openssl [faketime]=faketime [strace]=strace)
missing=()
for cmd in "${!package[@]}"; do
  if [ "$cmd" = redis-server ] && [ -n "${TASKYARD_REDIS_SERVER:-}" ]; then continue; fi
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${package[$cmd]}")
done

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then sudo=(); elif command -v sudo >/dev/null 2>&1; then sudo=(sudo); else
    echo "the tests need these Debian packages: ${missing[*]} (run as root, or install them: apt-get install ${missing[*]})" >&2
    exit 1
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "the tests need: ${missing[*]}; no apt-get here, install them with your package manager" >&2
    exit 1
  fi
  echo "installing from Debian's packages: ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

exec cargo test --workspace --no-fail-fast "$@"
