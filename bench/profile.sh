#!/usr/bin/env bash
# Profile the audited read: a release devstack, wrk reading one patient through the
# gateway (32 connections, 20 s), perf sampling the gateway, the worker and the
# regional and central PostgreSQL servers for 10 s each, then a text summary per
# process (share by binary, top symbols).
#
#   cargo build --release -p devstack && bench/profile.sh after   # → bench/profiles/read-after.txt
#
# Needs perf (linux-perf), wrk and curl; run as a user allowed to perf its own processes.
set -eu
TAG=${1:?usage: bench/profile.sh TAG}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${PROFILE_DIR:-/tmp/medicalpro-profile}
PORT=${PROFILE_PORT:-18383}
rm -rf "$WORK/stack" && mkdir -p "$WORK/stack"
RUST_LOG=warn "$ROOT/target/release/devstack" --data-dir "$WORK/stack" --listen 127.0.0.1:$PORT --demo \
  > "$WORK/stack/stdout" 2> "$WORK/stack/stderr" &
DPID=$!
trap 'kill -INT $DPID 2>/dev/null; wait $DPID 2>/dev/null' EXIT
for _ in $(seq 1 120); do grep -q '^ready:' "$WORK/stack/stdout" 2>/dev/null && break; sleep 1; done
TOKEN=$(awk '/^demo token:/ {print $3}' "$WORK/stack/stdout")
PATIENT=$(curl -s "http://127.0.0.1:$PORT/api/v1/patients?limit=1" -H "authorization: Bearer $TOKEN" \
  | python3 -c 'import sys,json; print(json.load(sys.stdin)["data"][0]["id"])')
URL="http://127.0.0.1:$PORT/api/v1/patients/$PATIENT"
wrk -t1 -c32 -d5s -H "authorization: Bearer $TOKEN" "$URL" > /dev/null
wrk -t1 -c32 -d20s -H "authorization: Bearer $TOKEN" "$URL" > "$WORK/wrk-$TAG.txt" &
WPID=$!
sleep 4
children() { pgrep -P "$1" | paste -sd, -; }
declare -A PIDS=(
  [gateway]=$(pgrep -f "__component gateway" | head -1)
  [worker]=$(pgrep -f "__component worker" | head -1)
  [pgregion]=$(children "$(pgrep -f "postgres -D $WORK/stack/region-eu-west" | head -1)")
  [pgcentral]=$(children "$(pgrep -f "postgres -D $WORK/stack/central" | head -1)")
)
for p in "${!PIDS[@]}"; do
  perf record -e cpu-clock -F 999 -g -p "${PIDS[$p]}" -o "$WORK/$p-$TAG.data" -- sleep 10 > /dev/null 2>&1 &
done
wait $WPID
OUT="$ROOT/bench/profiles/read-$TAG.txt"
mkdir -p "$(dirname "$OUT")"
{
  echo "wrk: $(grep Requests/sec "$WORK/wrk-$TAG.txt")  latency avg/stdev/max: $(grep Latency "$WORK/wrk-$TAG.txt" | tr -s ' ')"
  for p in gateway worker pgregion pgcentral; do
    echo
    echo "=== $p ($(perf report -i "$WORK/$p-$TAG.data" --stdio -g none 2>/dev/null | grep -m1 '^# Samples') over 10 s at 999 Hz)"
    perf report -i "$WORK/$p-$TAG.data" --stdio --no-children -g none --sort dso 2>/dev/null | grep -v '^#' | grep -v '^$' | head -5
    echo "--- top symbols"
    perf report -i "$WORK/$p-$TAG.data" --stdio --no-children -g none --sort symbol 2>/dev/null | grep -v '^#' | grep -v '^$' | head -25 | cut -c1-150
  done
} > "$OUT"
echo "$OUT"
