#!/usr/bin/env bash
# Brook vs Apache Iggy on this machine, in one run: produce throughput of
# 100 B and 1000 B records from one producer, and consume throughput reading
# them back with one consumer, each figure side by side with the ratio.
#
# Builds iggy-server and iggy-bench in the Iggy checkout given as argument,
# and Brook's release binary here. Then runs rounds: in each, one system runs
# all its cases and then the other, and which goes first alternates from
# round to round, so neither always gets the quieter disk. Every case gets a
# server of its own, freshly started on loopback on a new, empty data
# directory, stopped and deleted afterwards. Each figure is the median of the
# rounds; every round's figure is printed as it is measured.
#
# The cases, at 100 B and 1000 B:
# - Iggy: `iggy-bench pinned-producer` (1 producer, 1 stream, 1 partition),
#   batches of 1000 messages, one batch in flight; with fixed sizes the bench
#   builds its batch once and sends it again and again (only the timestamps
#   change), like Brook's --raw below. Once on a topic as Iggy
#   creates it by default (acknowledged before any fsync), once with
#   `--enforce-fsync`. Even then Iggy writes its in-memory journal to disk
#   only every 1024 messages or 1 MiB, so with batches of 1000 about every
#   second batch is acknowledged before it is on disk at 100 B (at 1000 B,
#   where the 1 MiB counts Iggy's message headers, every batch is written).
#   `iggy-bench pinned-consumer` reads back a topic just filled by the same
#   producer (without fsync; the fill is not measured).
# - Brook, `fsync = always` (every produce acknowledged after its fsync),
#   one topic of 1 partition like Iggy's stream:
#   `brook bench produce --raw`: batches encoded once up front, 1000 records
#   each like Iggy's, several requests in flight (--raw-in-flight): the
#   broker's own ceiling. `brook bench produce`: the per-record
#   `brook_client::Producer` on its defaults (it makes its own batches).
#   `brook bench consume`: fills the topic (not measured), then reads it back
#   with the `Consumer`.
#
# Records/s and MB/s count values only (records × record size, 10^6 bytes).
# Iggy's are computed the same way, from the message count and the run time
# iggy-bench prints per actor; iggy-bench's own headline figure (the mean of
# a moving average over 10 ms samples) is printed beside each run.
#
# Building Iggy needs `libhwloc-dev libudev-dev pkg-config` (Debian names).
# Only iggy-server and iggy-bench are built: a bare `cargo build` in Iggy's
# workspace also builds its bench dashboard, whose build downloads v8. If the
# checkout's rust-toolchain.toml pins a toolchain that is not installed,
# removing that file lets the stable toolchain build it. Iggy's server build
# script watches `web/build/static`, which exists only once Iggy's web UI is
# built, so without it every run recompiles Iggy's `server` crate (minutes);
# `mkdir -p web/build/static` in the checkout stops that.
#
# Not part of `.ci/run`: it takes minutes and needs the Iggy checkout.
#
# Usage: benches/compare-iggy.sh [--rounds N] [--records-100 N]
#            [--records-1000 N] [--raw-in-flight N] IGGY_CHECKOUT
# Ports (loopback): COMPARE_IGGY_PORT (8090), COMPARE_BROOK_PORT (9430) and
# the one after it for Brook's HTTP. Iggy's HTTP, QUIC and WebSocket
# listeners are turned off.
set -euo pipefail

usage() {
    echo "usage: $0 [--rounds N] [--records-100 N] [--records-1000 N] [--raw-in-flight N] IGGY_CHECKOUT" >&2
    exit 2
}

rounds=3
records_100=5000000
records_1000=1000000
raw_in_flight=64
iggy_dir=""
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) [ $# -ge 2 ] || usage; rounds="$2"; shift 2 ;;
        --records-100) [ $# -ge 2 ] || usage; records_100="$2"; shift 2 ;;
        --records-1000) [ $# -ge 2 ] || usage; records_1000="$2"; shift 2 ;;
        --raw-in-flight) [ $# -ge 2 ] || usage; raw_in_flight="$2"; shift 2 ;;
        -h | --help) usage ;;
        -*) echo "unknown option $1" >&2; usage ;;
        *) [ -z "$iggy_dir" ] || usage; iggy_dir="$1"; shift ;;
    esac
done
[ -n "$iggy_dir" ] || usage
iggy_dir="$(cd "$iggy_dir" && pwd)"
for n in "$rounds" "$records_100" "$records_1000" "$raw_in_flight"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "not a positive number: $n" >&2; exit 2; }
done
# iggy-bench counts whole batches of 1000 messages.
batch=1000
for n in "$records_100" "$records_1000"; do
    [ $((n % batch)) -eq 0 ] || { echo "record counts must be multiples of $batch: $n" >&2; exit 2; }
done
sizes=(100 1000)
declare -A records=([100]="$records_100" [1000]="$records_1000")

cd "$(dirname "$0")/.."
brook_repo="$(pwd)"
iggy_port="${COMPARE_IGGY_PORT:-8090}"
brook_port="${COMPARE_BROOK_PORT:-9430}"
brook_http_port=$((brook_port + 1))

# Builds in directory $1 with cargo arguments $2..., prints the paths of the
# executables built (wherever the target directory is configured to be).
build() {
    local dir="$1"
    shift
    (cd "$dir" && cargo build --release --message-format=json-render-diagnostics "$@") |
        grep -oE '"executable":"[^"]+"' | cut -d'"' -f4
}
# The executable called $1 among the paths on stdin.
pick() { grep -E "/$1\$" | tail -n 1 || true; }

echo "building iggy-server and iggy-bench in $iggy_dir" >&2
iggy_bins="$(build "$iggy_dir" -p server -p iggy-bench --bin iggy-server --bin iggy-bench)"
iggy_server="$(pick iggy-server <<<"$iggy_bins")"
iggy_bench="$(pick iggy-bench <<<"$iggy_bins")"
echo "building brook" >&2
brook="$(build "$brook_repo" -p brook-cli | pick brook)"
for bin in "$iggy_server" "$iggy_bench" "$brook"; do
    [ -x "$bin" ] || { echo "build produced no executable: '$bin'" >&2; exit 1; }
done

# Something else answering on a port would be measured instead of the
# server started here.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$iggy_port" "$brook_port" "$brook_http_port"; do
    if port_in_use "$port"; then
        echo "127.0.0.1:$port is in use; set COMPARE_IGGY_PORT / COMPARE_BROOK_PORT" >&2
        exit 1
    fi
done

work="$(mktemp -d -t brook-iggy-XXXXXX)"
results="$work/results.tsv"
: >"$results"
server_pid=""
case_dir=""

stop_server() {
    [ -n "$server_pid" ] || return 0
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 300); do
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}
cleanup() {
    stop_server
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Shows the end of the current case's logs and stops the run.
fail() {
    echo "$1" >&2
    if [ -n "$case_dir" ]; then
        for log in "$case_dir"/*.log; do
            [ -f "$log" ] || continue
            echo "--- $log (last 20 lines)" >&2
            tail -n 20 "$log" >&2
        done
    fi
    exit 1
}

# A new, empty directory for one case, after the previous one's data is
# gone: deleting it also drops its dirty pages, and the sync lets write-back
# of whatever is left finish before the next measurement starts.
new_case() {
    stop_server
    [ -z "$case_dir" ] || rm -rf "$case_dir"
    sync
    case_dir="$(mktemp -d "$work/case-XXXXXX")"
}

start_iggy() {
    # Run from the case directory (Iggy reads a `.env` from its working
    # directory); the configuration is the checkout's, its data directory and
    # listeners come from IGGY_* variables.
    (
        cd "$case_dir"
        exec env IGGY_CONFIG_PATH="$iggy_dir/core/server/config.toml" \
            IGGY_SYSTEM_PATH="$case_dir/data" \
            IGGY_TCP_ADDRESS="127.0.0.1:$iggy_port" \
            IGGY_HTTP_ENABLED=false IGGY_QUIC_ENABLED=false IGGY_WEBSOCKET_ENABLED=false \
            IGGY_ROOT_USERNAME=iggy IGGY_ROOT_PASSWORD=iggy \
            "$iggy_server" >"$case_dir/server.log" 2>&1
    ) &
    server_pid=$!
    for _ in $(seq 300); do
        kill -0 "$server_pid" 2>/dev/null || fail "iggy-server exited"
        if port_in_use "$iggy_port"; then return 0; fi
        sleep 0.1
    done
    fail "iggy-server did not listen on 127.0.0.1:$iggy_port within 30 s"
}

start_brook() {
    "$brook" serve --data-dir "$case_dir/data" --listen "127.0.0.1:$brook_port" \
        --http-listen "127.0.0.1:$brook_http_port" --fsync always --log warn \
        >"$case_dir/server.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 300); do
        kill -0 "$server_pid" 2>/dev/null || fail "brook serve exited"
        if "$brook" health --http "127.0.0.1:$brook_http_port" --endpoint ready \
            --timeout-ms 500 >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    fail "brook serve was not ready within 30 s"
}

# Appends one figure: case, round, records/s, MB/s.
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$results"; }

# iggy-bench for the current case: $1 log name, $2 record size, the
# benchmark's arguments after that.
run_iggy_bench() {
    local log="$case_dir/$1.log" size="$2"
    shift 2
    NO_COLOR=1 "$iggy_bench" --username iggy --password iggy -m "$size" -P "$batch" \
        -b $((records[$size] / batch)) "$@" >"$log" 2>&1 ||
        fail "iggy-bench $* failed"
}

# Prints "records/s MB/s headline" of an iggy-bench log of $2 messages of $3
# bytes. Each actor's summary line gives its run time ("... messages in 1.23
# s, total size: ..."); the headline is iggy-bench's own "Total throughput".
iggy_figures() {
    local log="$1" messages="$2" size="$3" plain secs headline
    plain="$(sed 's/\x1b\[[0-9;]*m//g' "$log")"
    secs="$(grep -oE 'messages in [0-9.]+ s, total size' <<<"$plain" | head -n 1 | awk '{print $3}')"
    if [ -z "$secs" ] || ! awk -v s="$secs" 'BEGIN { exit !(s > 0) }'; then
        fail "no run time in $log"
    fi
    headline="$(grep -oE 'Total throughput: [0-9.]+ MB/s, [0-9.]+ messages/s' <<<"$plain" |
        head -n 1 | awk '{printf "%s msg/s, %s MB/s", $5, $3}')"
    awk -v n="$messages" -v b="$size" -v s="$secs" -v h="${headline:-none}" \
        'BEGIN { printf "%.0f %.1f %s\n", n / s, n * b / s / 1e6, h }'
}

# Prints "records/s MB/s" of `brook bench --json` output in file $1.
brook_figures() {
    local recs mbs
    recs="$(grep -oE '"records_per_sec":[0-9.eE+-]+' "$1" | cut -d: -f2)"
    mbs="$(grep -oE '"mb_per_sec":[0-9.eE+-]+' "$1" | cut -d: -f2)"
    if [ -z "$recs" ] || [ -z "$mbs" ]; then fail "no figures in $1"; fi
    awk -v r="$recs" -v m="$mbs" 'BEGIN { printf "%.0f %.1f\n", r, m }'
}

show() { printf 'round %s  %-36s %12s rec/s %9s MB/s%s\n' "$@"; }

run_iggy() {
    local round="$1" size n fsync figures recs mbs headline
    for size in "${sizes[@]}"; do
        n="${records[$size]}"
        for fsync in off on; do
            new_case
            start_iggy
            if [ "$fsync" = on ]; then
                run_iggy_bench produce "$size" --enforce-fsync pinned-producer --producers 1 \
                    --streams 1 tcp --server-address "127.0.0.1:$iggy_port"
            else
                run_iggy_bench produce "$size" pinned-producer --producers 1 \
                    --streams 1 tcp --server-address "127.0.0.1:$iggy_port"
            fi
            figures="$(iggy_figures "$case_dir/produce.log" "$n" "$size")"
            read -r recs mbs headline <<<"$figures"
            record "iggy-produce-fsync-$fsync-$size" "$round" "$recs" "$mbs"
            show "$round" "Iggy produce $size B, fsync $fsync" "$recs" "$mbs" \
                "  (iggy-bench: $headline)"
        done

        new_case
        start_iggy
        run_iggy_bench fill "$size" pinned-producer --producers 1 --streams 1 \
            tcp --server-address "127.0.0.1:$iggy_port"
        run_iggy_bench consume "$size" pinned-consumer --consumers 1 --streams 1 \
            tcp --server-address "127.0.0.1:$iggy_port"
        figures="$(iggy_figures "$case_dir/consume.log" "$n" "$size")"
        read -r recs mbs headline <<<"$figures"
        record "iggy-consume-$size" "$round" "$recs" "$mbs"
        show "$round" "Iggy consume $size B" "$recs" "$mbs" "  (iggy-bench: $headline)"
    done
}

# brook bench against a fresh `brook serve`: $1 round, $2 case name, $3
# record size, then the mode and its extra arguments.
brook_case() {
    local round="$1" name="$2" size="$3" mode="$4" figures recs mbs
    shift 4
    new_case
    start_brook
    "$brook" bench "$mode" --broker "127.0.0.1:$brook_port" --json --partitions 1 \
        --records "${records[$size]}" --record-size "$size" "$@" \
        >"$case_dir/bench.json" 2>"$case_dir/bench.log" ||
        fail "brook bench $mode $* failed"
    figures="$(brook_figures "$case_dir/bench.json")"
    read -r recs mbs <<<"$figures"
    record "brook-$name-$size" "$round" "$recs" "$mbs"
    show "$round" "Brook $name $size B, fsync always" "$recs" "$mbs" ""
}

run_brook() {
    local round="$1" size
    for size in "${sizes[@]}"; do
        brook_case "$round" raw "$size" produce --raw --max-in-flight "$raw_in_flight" \
            --batch-size $((size * batch))
        brook_case "$round" producer "$size" produce
        brook_case "$round" consume "$size" consume
    done
}

iggy_commit="$(git -C "$iggy_dir" log -1 --format=%h 2>/dev/null || echo unknown)"
if [ -n "$(git -C "$iggy_dir" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    iggy_commit="$iggy_commit (with local changes)"
fi
brook_commit="$(git log -1 --format=%h 2>/dev/null || echo unknown)"
echo "Brook $brook_commit vs Iggy $iggy_commit, $rounds round(s), $(nproc) cores, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "records: ${records[100]} of 100 B, ${records[1000]} of 1000 B; Brook raw: requests in flight $raw_in_flight"

for round in $(seq "$rounds"); do
    if [ $((round % 2)) -eq 1 ]; then
        run_brook "$round"
        run_iggy "$round"
    else
        run_iggy "$round"
        run_brook "$round"
    fi
done
stop_server

# Median of column $2 (3: records/s, 4: MB/s) of case $1 over the rounds.
median() {
    awk -F'\t' -v c="$1" -v col="$2" '$1 == c { print $col }' "$results" | sort -g |
        awk '{ v[NR] = $1 } END {
            if (NR == 0) print "nan"
            else if (NR % 2) print v[(NR + 1) / 2]
            else print (v[NR / 2] + v[NR / 2 + 1]) / 2
        }'
}
# Every round's records/s of case $1, comma-separated.
runs() { awk -F'\t' -v c="$1" '$1 == c { printf "%s%s", sep, $3; sep = ", " }' "$results"; }

# One row: figure name, Brook's case, Iggy's case, Iggy's fsync state.
row() {
    local b_recs b_mbs i_recs i_mbs
    b_recs="$(median "$2" 3)" b_mbs="$(median "$2" 4)"
    i_recs="$(median "$3" 3)" i_mbs="$(median "$3" 4)"
    awk -v f="$1" -v br="$b_recs" -v bm="$b_mbs" -v ir="$i_recs" -v im="$i_mbs" -v is="$4" \
        'BEGIN { printf "%-38s %11.0f %9.1f %-7s %11.0f %9.1f %-6s %7.2fx\n",
                 f, br, bm, "always", ir, im, is, br / ir }'
}

echo
echo "median of $rounds round(s); MB/s of values, 10^6 bytes; fsync: Brook 'always' acknowledges after fsync,"
echo "Iggy 'off' before any fsync, 'on' (--enforce-fsync) writes every 1024 messages or 1 MiB, then fsyncs"
printf '%-38s %11s %9s %-7s %11s %9s %-6s %8s\n' figure "Brook rec/s" "MB/s" fsync \
    "Iggy rec/s" "MB/s" fsync Brook/Iggy
for size in "${sizes[@]}"; do
    row "produce $size B, raw / Iggy" "brook-raw-$size" "iggy-produce-fsync-off-$size" off
    row "produce $size B, raw / Iggy fsync" "brook-raw-$size" "iggy-produce-fsync-on-$size" on
    row "produce $size B, Producer / Iggy" "brook-producer-$size" "iggy-produce-fsync-off-$size" off
    row "produce $size B, Producer / Iggy fsync" "brook-producer-$size" "iggy-produce-fsync-on-$size" on
    row "consume $size B" "brook-consume-$size" "iggy-consume-$size" off
done

echo
echo "records/s of each round:"
cut -f1 "$results" | awk '!seen[$0]++' | while read -r name; do
    printf '  %-28s %s\n' "$name" "$(runs "$name")"
done
