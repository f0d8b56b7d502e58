#!/usr/bin/env bash
# `sluice queue list` on a spool of COUNT deferred messages (issue 18):
#   smtp-source -> sluice 127.0.0.1:2545 -> next hop 127.0.0.1:2546 (nothing
#   listens there: every first attempt is deferred, the next one an hour away)
# then times `sluice queue list` and `sluice queue list --json`, RUNS times
# each, output to /dev/null (and once to a file, to count lines and bytes).
# Ports 2545/2546/9445: apart from the other benchmarks' 2535/2526/9425.
#   env: COUNT (100000) RUNS (5) SIZE (1024 octets) SESSIONS (20)
#        OUT (/tmp/sluice-bench-queue) SLUICE_BIN (target/release/sluice)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/sluice-bench-queue}
COUNT=${COUNT:-100000}; RUNS=${RUNS:-5}; SIZE=${SIZE:-1024}; SESSIONS=${SESSIONS:-20}
BIN=${SLUICE_BIN:-$ROOT/target/release/sluice}
[ -n "${SLUICE_BIN:-}" ] || (cd "$ROOT" && cargo build --release -q)

W="$OUT/sluice"
rm -rf "$W"; mkdir -p "$W"
for i in $(seq 0 99); do printf 'user%04d@example.com OK\n' "$i"; done > "$W/recipients"
cat > "$W/sluice.toml" <<TOML
[server]
listen = ["127.0.0.1:2545"]
hostname = "bench.localdomain"
[relay]
next_hop = "smtp://127.0.0.1:2546"
retry_initial = "1h"
[recipients]
domains = ["example.com"]
table = "recipients"
[spool]
dir = "spool"
fsync = true
[log]
level = "warn"
[spam]
enabled = false
[metrics]
listen = "127.0.0.1:9445"
TOML
if ss -Hltn "sport = :2546" | grep -q .; then echo "something listens on 2546" >&2; exit 1; fi
"$BIN" serve --config "$W/sluice.toml" 2>> "$W/sluice.log" &
PID=$!
trap 'kill -TERM $PID 2>/dev/null; wait $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do ss -Hltn "sport = :2545" | grep -q . && break; sleep 0.1; done

q() { "$BIN" queue -c "$W/sluice.toml" "$@"; }

echo "# machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB"
echo "# binary: $BIN"
echo "# injecting $COUNT messages of $SIZE octets over $SESSIONS sessions"
t0=$(date +%s.%N)
smtp-source -d -s "$SESSIONS" -m "$COUNT" -l "$SIZE" -f sender@client.example \
  -t user0001@example.com 127.0.0.1:2545
t1=$(date +%s.%N)
echo "# injected in $(echo "$t1 - $t0" | bc) s"

# Every message tried once and deferred.
while :; do
  n=$(q list --json | grep -c '"state":"deferred"' || true)
  [ "$n" -ge "$COUNT" ] && break
  echo "# waiting: $n of $COUNT deferred"
  sleep 5
done
echo "# spool: $(du -sh "$W/spool" | cut -f1), sluice RSS $(awk '/VmRSS/ {print $2, $3}' /proc/$PID/status)"

q list > "$OUT/list.txt"
q list --json > "$OUT/list.jsonl"
echo "# list: $(wc -l < "$OUT/list.txt") lines, $(wc -c < "$OUT/list.txt") octets;" \
  "list --json: $(wc -l < "$OUT/list.jsonl") lines, $(wc -c < "$OUT/list.jsonl") octets"
for args in "list" "list --json"; do
  for r in $(seq 1 "$RUNS"); do
    # shellcheck disable=SC2086
    /usr/bin/time -f "queue $args run $r: %e s wall, %U s user, %S s sys, max RSS %M KiB" \
      "$BIN" queue -c "$W/sluice.toml" $args > /dev/null
  done
done 2>&1

# One message among COUNT: each command once (they look the message up).
ID=$(head -1 "$OUT/list.jsonl" | sed 's/^{"id":"\([^"]*\)".*/\1/')
ID2=$(sed -n 2p "$OUT/list.jsonl" | sed 's/^{"id":"\([^"]*\)".*/\1/')
for args in "show $ID" "hold $ID" "release $ID" "delete $ID" "bounce $ID2" "flush"; do
  # shellcheck disable=SC2086
  /usr/bin/time -f "queue $args: %e s wall" "$BIN" queue -c "$W/sluice.toml" $args > /dev/null
done 2>&1
