#!/usr/bin/env bash
# Brook vs NATS JetStream on this machine, in one run: publish throughput
# of 100 B and 1 KiB records from one producer, then end-to-end latency at
# a fixed rate, each figure side by side with the ratio.
#
# Installs nats-server from Debian's packages if it is missing, starts it on
# loopback with JetStream file storage in a temporary directory, runs
# `brook-bench-nats` (which also runs Brook, embedded, fsync always), and
# stops the server again.
#
# NATS on its defaults acknowledges a publish before fsync (JetStream syncs
# every 2 minutes); Brook acknowledges after fsync.
#
# Usage: benches/compare-nats.sh [brook-bench-nats options, e.g. --runs 3]
set -euo pipefail

cd "$(dirname "$0")/.."
port="${NATS_PORT:-4333}"

if ! command -v nats-server >/dev/null; then
    echo "installing nats-server from Debian's packages" >&2
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nats-server >/dev/null
fi

cargo build --release --quiet -p brook-bench --features nats --bin brook-bench-nats

store="$(mktemp -d -t brook-nats-XXXXXX)"
nats-server -a 127.0.0.1 -p "$port" -js -sd "$store" >"$store/server.log" 2>&1 &
server=$!
cleanup() {
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    rm -rf "$store"
}
trap cleanup EXIT

for _ in $(seq 50); do
    if grep -q "Server is ready" "$store/server.log"; then break; fi
    sleep 0.1
done
grep -q "Server is ready" "$store/server.log" || {
    cat "$store/server.log" >&2
    echo "nats-server did not start" >&2
    exit 1
}

echo "$(nats-server --version), JetStream store in $store (defaults: acknowledged before fsync)"
target/release/brook-bench-nats --nats "nats://127.0.0.1:$port" "$@"
