#!/usr/bin/env bash
# Policy server throughput: `sluice policy` against postgrey (the Debian
# package), both asked the same RCPT requests over persistent connections
# by benches/policy_client.c (CONNS connections, each one request at a time,
# DURATION seconds; CLIENTS client addresses and 1000 senders, so nearly
# every triplet is new and both greylist it: DEFER_IF_PERMIT).
#
#   sluice: `sluice policy` on 127.0.0.1:10033 with [greylist] (delay 300s,
#           state in its spool), the recipient table, the event log to a
#           file (one JSON line per deferral), fsync of nothing per request.
#   postgrey: `postgrey --inet=127.0.0.1:10034` (delay 300s, its Berkeley DB
#           in OUT/postgrey-db), as root with --user=postgrey.
#
# Per run: requests/s (client side) and the server's CPU per request
# (utime+stime of the server process from /proc, before and after).
#   env: DURATION (20) CONNS ("1 10 50") RUNS (3) CLIENTS (100000)
#        OUT (/tmp/sluice-policy-bench) SLUICE_BIN (target/release/sluice)
# Needs: postgrey, cc. Does not build sluice.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/sluice-policy-bench}
DURATION=${DURATION:-20}; CONNS=${CONNS:-"1 10 50"}; RUNS=${RUNS:-3}; CLIENTS=${CLIENTS:-100000}
SLUICE_BIN=${SLUICE_BIN:-$ROOT/target/release/sluice}
SLUICE_PORT=10033; POSTGREY_PORT=10034
[ -x "$SLUICE_BIN" ] || { echo "no sluice binary at $SLUICE_BIN (cargo build --release)" >&2; exit 1; }
command -v postgrey > /dev/null || { echo "postgrey is not installed (apt-get install postgrey)" >&2; exit 1; }
for p in $SLUICE_PORT $POSTGREY_PORT; do
  if ss -Hltn "sport = :$p" | grep -q .; then echo "127.0.0.1:$p is busy" >&2; exit 1; fi
done
rm -rf "$OUT"; mkdir -p "$OUT/sluice" "$OUT/postgrey-db"
cc -O2 -pthread -o "$OUT/policy_client" "$ROOT/benches/policy_client.c"
TICK=$(getconf CLK_TCK)

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2> /dev/null || true; done; }
trap cleanup EXIT

wait_port() {
  for _ in $(seq 1 100); do ss -Hltn "sport = :$1" | grep -q . && return 0; sleep 0.1; done
  echo "nothing listens on $1" >&2; return 1
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# sluice
printf 'user@example.com OK\n' > "$OUT/sluice/recipients"
cat > "$OUT/sluice/sluice.toml" << TOML
[server]
hostname = "bench.localdomain"
[relay]
next_hop = "smtp://127.0.0.1:2526"
[recipients]
domains = ["example.com"]
table = "recipients"
[spool]
dir = "spool"
[log]
level = "warn"
events = "events.jsonl"
[spam]
enabled = false
[metrics]
enabled = false
[greylist]
enabled = true
delay = "300s"
[policy_server]
listen = ["127.0.0.1:$SLUICE_PORT"]
TOML
"$SLUICE_BIN" policy --config "$OUT/sluice/sluice.toml" 2>> "$OUT/sluice/sluice.log" &
SLUICE_PID=$!; PIDS+=("$SLUICE_PID")
wait_port $SLUICE_PORT

# postgrey
chown postgrey: "$OUT/postgrey-db" 2> /dev/null || true
postgrey --inet=127.0.0.1:$POSTGREY_PORT --dbdir="$OUT/postgrey-db" --delay=300 --user=postgrey --group=postgrey \
  > "$OUT/postgrey.log" 2>&1 &
POSTGREY_PID=$!; PIDS+=("$POSTGREY_PID")
wait_port $POSTGREY_PORT

for conns in $CONNS; do
  for run in $(seq 1 "$RUNS"); do
    for server in sluice postgrey; do
      if [ $server = sluice ]; then pid=$SLUICE_PID port=$SLUICE_PORT; else pid=$POSTGREY_PID port=$POSTGREY_PORT; fi
      before=$(cpu_ticks "$pid")
      res=$("$OUT/policy_client" 127.0.0.1 "$port" "$conns" "$DURATION" "$CLIENTS" user@example.com)
      after=$(cpu_ticks "$pid")
      cpu=$(awk -v a="$after" -v b="$before" -v t="$TICK" 'BEGIN { printf "%.3f", (a - b) / t }')
      echo "{\"server\": \"$server\", \"conns\": $conns, \"run\": $run, \"cpu_s\": $cpu, \"client\": $res}" \
        | tee -a "$OUT/results.jsonl"
    done
  done
done

python3 - "$OUT/results.jsonl" << 'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("\n| conns | sluice req/s | postgrey req/s | ratio | sluice CPU µs/req | postgrey CPU µs/req | CPU ratio |")
print("|---|---|---|---|---|---|---|")
for conns in sorted({r["conns"] for r in rows}):
    cell = {}
    for s in ("sluice", "postgrey"):
        rs = [r for r in rows if r["server"] == s and r["conns"] == conns]
        rps = [r["client"]["rps"] for r in rs]
        cpu = [r["cpu_s"] * 1e6 / max(r["client"]["requests"], 1) for r in rs]
        cell[s] = (statistics.median(rps), min(rps), max(rps), statistics.median(cpu))
    (a, amin, amax, acpu), (b, bmin, bmax, bcpu) = cell["sluice"], cell["postgrey"]
    print(f"| {conns} | {a:.0f} [{amin:.0f}..{amax:.0f}] | {b:.0f} [{bmin:.0f}..{bmax:.0f}] | {a / b:.1f}× "
          f"| {acpu:.1f} | {bcpu:.1f} | 1/{bcpu / acpu:.1f} |")
PY
