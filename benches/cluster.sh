#!/usr/bin/env bash
# Issue 20: the cost of [cluster] shared state (Valkey/Redis on loopback).
# One release sluice, default config and default logging, relaying to
# smtp-sink, started in turn without [cluster] ("off") and with it ("on",
# a private redis-server with no persistence). Both variants have the
# per-client limits that go through the store set far above anything the
# bench sends, so every MAIL/RCPT and every connection's session slot takes
# the shared path when on (and the in-memory one when off):
#   [limits] per_ip_connections, per_ip_message_rate, per_ip_recipient_rate.
# Greylisting stays off (its default).
#   (a) latency: benches/txlatency.py, sequential transactions, p50/p99 per
#       transaction; mode "session" (EHLO once, MAIL/RCPT/DATA/. each) and
#       "connection" (a new connection per message).
#   (b) throughput: bench.py relay = smtp-source -s CONC -m COUNT (4 KiB),
#       accept msg/s, RUNS runs per variant, interleaved off/on.
#   (c) ban propagation between two nodes, by hand (`sluice bans add` on A,
#       `bans list` polled on B); the measure to every node's kernel set is
#       benches/ban_propagation.sh. With BANS=1 it runs two nodes on one store, `sluice bans
#       add` on node A and polls `sluice bans list` on node B; it reports
#       "pending" when B never sees the ban.
# Ports: sluice 2555 (node B 2557), smtp-sink 2556, metrics 9455 (B 9457),
# redis 6391.
#   env: OUT (/tmp/sluice-cluster) LAT_COUNT (3000) CONN_COUNT (1000)
#        COUNT (20000) CONC (20) RUNS (3) SIZE (4096) BANS (1) BAN_N (20)
#        SLUICE_BIN (target/release/sluice). Builds nothing.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH:-$(cd "$ROOT/../shared/bench" && pwd)}
OUT=${OUT:-/tmp/sluice-cluster}
LAT_COUNT=${LAT_COUNT:-3000}; CONN_COUNT=${CONN_COUNT:-1000}
COUNT=${COUNT:-20000}; CONC=${CONC:-20}; RUNS=${RUNS:-3}; SIZE=${SIZE:-4096}
BANS=${BANS:-1}; BAN_N=${BAN_N:-20}
BIN=${SLUICE_BIN:-$ROOT/target/release/sluice}
PORT=2555; SINK=2556; METRICS=9455; RPORT=6391; PORT_B=2557; METRICS_B=9457
[ -x "$BIN" ] || { echo "no binary $BIN (cargo build --release)" >&2; exit 1; }
for p in $PORT $SINK $METRICS $RPORT $PORT_B $METRICS_B; do
  if ss -Hltn "sport = :$p" | grep -q .; then echo "127.0.0.1:$p is busy" >&2; exit 1; fi
done
rm -rf "$OUT"; mkdir -p "$OUT/logs" "$OUT/latency"
ulimit -n 65536 2>/dev/null || true

PIDS=()
cleanup() {
  for d in "$OUT"/node-*; do [ -f "$d/pid" ] && node_stop "$d"; done 2>/dev/null || true
  [ -f "$OUT/redis.pid" ] && kill "$(cat "$OUT/redis.pid")" 2>/dev/null || true
  [ -f "$OUT/sink.pid" ] && kill "$(cat "$OUT/sink.pid")" 2>/dev/null || true
}
trap cleanup EXIT

machine() {
  echo "date: $(date -Is)"; echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "mem: $(free -h | awk '/Mem:/{print $2}')"; echo "kernel: $(uname -r)"
  echo "debian: $(cat /etc/debian_version 2>/dev/null)"; echo "root fs: $(findmnt -no SOURCE,FSTYPE,OPTIONS /)"
  echo "loadavg: $(cat /proc/loadavg)"; echo "redis: $(redis-server --version)"
  echo "sluice: $($BIN --version 2>/dev/null) ($BIN, git $(git -C "$ROOT" rev-parse --short HEAD))"
}
machine | tee "$OUT/machine.txt"

redis_start() {
  redis-server --port $RPORT --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
    --dir "$OUT" --logfile "$OUT/redis.log" &
  echo $! > "$OUT/redis.pid"
  for _ in $(seq 1 50); do redis-cli -p $RPORT ping 2>/dev/null | grep -q PONG && return 0; sleep 0.1; done
  echo "redis did not start" >&2; return 1
}

# node_start DIR PORT METRICS CLUSTER(0|1) [EXTRA_TOML]
node_start() {
  local dir=$1 port=$2 metrics=$3 cluster=$4 extra=${5:-}
  rm -rf "$dir"; mkdir -p "$dir"
  for i in $(seq 0 999); do printf 'user%04d@example.com OK\n' "$i"; done > "$dir/recipients"
  {
    cat <<TOML
[server]
listen = ["127.0.0.1:$port"]
hostname = "$(basename "$dir").localdomain"
[relay]
next_hop = "smtp://127.0.0.1:$SINK"
[recipients]
domains = ["example.com"]
table = "recipients"
[spool]
dir = "spool"
[spam]
enabled = false
[limits]
per_ip_connections = 100000
per_ip_message_rate = 100000000
per_ip_recipient_rate = 100000000
[metrics]
listen = "127.0.0.1:$metrics"
$extra
TOML
    [ "$cluster" = 1 ] && printf '[cluster]\nredis = "redis://127.0.0.1:%s/0"\n' $RPORT
  } > "$dir/sluice.toml"
  "$BIN" serve --config "$dir/sluice.toml" 2>> "$dir/sluice.log" &
  echo $! > "$dir/pid"
  for _ in $(seq 1 100); do ss -Hltn "sport = :$port" | grep -q . && return 0; sleep 0.1; done
  echo "sluice did not start; see $dir/sluice.log" >&2; return 1
}
node_stop() {
  local pid; pid=$(cat "$1/pid" 2>/dev/null) || return 0
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  rm -f "$1/pid"
}
sink_start() {
  smtp-sink -u nobody -c 127.0.0.1:$SINK 1000 > "$OUT/logs/sink-$1.out" 2>&1 &
  echo $! > "$OUT/sink.pid"
  for _ in $(seq 1 50); do ss -Hltn "sport = :$SINK" | grep -q . && return 0; sleep 0.1; done
  echo "smtp-sink did not start" >&2; return 1
}
sink_stop() { kill "$(cat "$OUT/sink.pid")" 2>/dev/null || true; rm -f "$OUT/sink.pid"; sleep 0.3; }
# redis-server's CPU seconds (utime+stime), not counted in bench.py's relay CPU.
redis_cpu() { awk -v t="$(getconf CLK_TCK)" '{printf "%.2f", ($14+$15)/t}' "/proc/$(cat "$OUT/redis.pid")/stat"; }
scrape() { curl -s "http://127.0.0.1:$1/metrics" | grep -E '^sluice_cluster_(up|nodes|op_seconds_count|op_seconds_sum|errors_total|fallbacks_total)|^sluice_cluster_op_seconds_bucket.*le="0\.(001|0025|005|01)"' || true; }

redis_start
echo "# $(date -u +%FT%TZ) uptime before: $(uptime)" | tee "$OUT/load.txt"

# ---- (a) latency, interleaved off/on, two rounds ------------------------------
for round in 1 2; do
  for v in off on; do
    c=0; [ $v = on ] && c=1
    redis-cli -p $RPORT flushdb > /dev/null
    W="$OUT/node-a"; sink_start "lat-$v-$round"; node_start "$W" $PORT $METRICS $c
    python3 "$ROOT/benches/txlatency.py" --target 127.0.0.1:$PORT --mode session --count "$LAT_COUNT" \
      --size "$SIZE" --label "$v" --raw "$OUT/latency/session-$v-$round.txt" | tee -a "$OUT/latency.jsonl"
    python3 "$ROOT/benches/txlatency.py" --target 127.0.0.1:$PORT --mode connection --count "$CONN_COUNT" \
      --size "$SIZE" --label "$v" --raw "$OUT/latency/connection-$v-$round.txt" | tee -a "$OUT/latency.jsonl"
    scrape $METRICS > "$OUT/logs/metrics-lat-$v-$round.txt"
    node_stop "$W"; sink_stop
    cp "$W/sluice.log" "$OUT/logs/sluice-lat-$v-$round.log"
  done
done

# ---- (b) throughput: smtp-source -s CONC -m COUNT, interleaved ----------------
for r in $(seq 1 "$RUNS"); do
  for v in off on; do
    c=0; [ $v = on ] && c=1
    redis-cli -p $RPORT flushdb > /dev/null
    W="$OUT/node-a"; node_start "$W" $PORT $METRICS $c
    echo "## run $r $v load=$(cut -d' ' -f1-3 /proc/loadavg)" >&2
    rc0=$(redis_cpu)
    python3 "$BENCH/bench.py" relay --label "cluster-$v" --relay 127.0.0.1:$PORT --relay-pid "$(cat "$W/pid")" \
      --sink-port $SINK --rcpt user0500@example.com --sizes "$SIZE" --conc "$CONC" --count "$COUNT" --runs 1 \
      --pause 1 --jsonl "$OUT/throughput.jsonl" --logdir "$OUT/logs" | tee -a "$OUT/throughput.txt"
    scrape $METRICS > "$OUT/logs/metrics-tp-$v-$r.txt"
    echo "$v $r redis_cpu_s $(awk -v a="$rc0" -v b="$(redis_cpu)" 'BEGIN{printf "%.2f", b-a}')" >> "$OUT/redis-cpu.txt"
    node_stop "$W"
    cp "$W/sluice.log" "$OUT/logs/sluice-tp-$v-$r.log"
    sleep 2
  done
done
echo "# $(date -u +%FT%TZ) uptime after: $(uptime)" | tee -a "$OUT/load.txt"

python3 - "$OUT" <<'PY' | tee "$OUT/summary.md"
import json, statistics, sys, glob, os
out = sys.argv[1]
def pct(xs, p):
    xs = sorted(xs); k = min(len(xs)-1, max(0, int(round(p/100*len(xs)+0.5))-1)); return xs[k]
print("## (a) per-transaction latency, sequential, all rounds pooled (ms)\n")
print("| mode | variant | samples | p50 | p90 | p99 | max | mean |")
print("|---|---|---|---|---|---|---|---|")
res = {}
for mode in ("session", "connection"):
    for v in ("off", "on"):
        xs = []
        for f in sorted(glob.glob(f"{out}/latency/{mode}-{v}-*.txt")):
            xs += [float(l) for l in open(f) if l.strip()]
        if not xs: continue
        r = {p: pct(xs, p) for p in (50, 90, 99)}; res[(mode, v)] = r
        print(f"| {mode} | {v} | {len(xs)} | {r[50]:.3f} | {r[90]:.3f} | {r[99]:.3f} | {max(xs):.3f} | {statistics.fmean(xs):.3f} |")
print("\nadded by [cluster] (on - off):\n")
for mode in ("session", "connection"):
    if (mode, "on") in res and (mode, "off") in res:
        d = {p: res[(mode, "on")][p] - res[(mode, "off")][p] for p in (50, 99)}
        print(f"- {mode}: p50 {d[50]:+.3f} ms, p99 {d[99]:+.3f} ms")
print("\n## (b) throughput (smtp-source, accept msg/s)\n")
rows = [json.loads(l) for l in open(f"{out}/throughput.jsonl") if l.strip()]
def rate(r):
    return r.get("accept_mps")
by = {}
for r in rows:
    by.setdefault(r.get("label"), []).append(r)
for lab, rs in by.items():
    vals = [rate(r) for r in rs]
    dr = [r.get("drain_mps") for r in rs]
    print(f"- {lab}: accept runs {', '.join(f'{x:.0f}' if x is not None else '?' for x in vals)}; "
          f"median {statistics.median([x for x in vals if x is not None]):.0f} msg/s; "
          f"drain (end-to-end) runs {', '.join(f'{x:.0f}' if x is not None else '?' for x in dr)}")
try:
    on = statistics.median([rate(r) for r in by["cluster-on"]]); off = statistics.median([rate(r) for r in by["cluster-off"]])
    print(f"\nratio on/off (medians): {on/off:.3f}")
except Exception as e:
    print(f"\nratio: n/a ({e})")
PY

# ---- (c) ban propagation by hand, A -> B (see benches/ban_propagation.sh) --------
if [ "$BANS" = 1 ]; then
  redis-cli -p $RPORT flushdb > /dev/null
  sink_start bans
  A="$OUT/node-a"; B="$OUT/node-b"
  node_start "$A" $PORT $METRICS 1; node_start "$B" $PORT_B $METRICS_B 1
  sleep 1
  {
    echo "# ban propagation A -> B: sluice bans add on A, poll bans list on B every 5 ms (timeout 2 s)"
    seen=0
    for i in $(seq 1 "$BAN_N"); do
      net="198.51.100.$((100 + i))"  # three digits: no prefix of another
      t0=$(date +%s%N)
      "$BIN" bans add "$net" --for 1h -c "$A/sluice.toml" >> "$OUT/bans-add.log" 2>&1 || echo "bans add $net failed on A" >&2
      hit=""
      while [ $(( ($(date +%s%N) - t0) / 1000000 )) -lt 2000 ]; do
        if "$BIN" bans list -c "$B/sluice.toml" 2>/dev/null | grep -q "$net"; then
          hit=$(( ($(date +%s%N) - t0) / 1000 )); break
        fi
        sleep 0.005
      done
      if [ -n "$hit" ]; then echo "$net ${hit}us"; seen=$((seen+1)); else echo "$net not seen on B"; fi
    done
    if [ $seen = 0 ]; then
      echo "RESULT: pending the ban stream (no ban added on A reached B; not in this build)"
    else
      echo "RESULT: $seen/$BAN_N seen on B (times include the CLI's own start, ~ms; the issue's"
      echo "        figure is decision -> kernel set on every node with 2,000 offenders and 100,000 bans)"
    fi
  } | tee "$OUT/bans.txt"
  "$BIN" bans list -c "$A/sluice.toml" > "$OUT/bans-list-a.txt" 2>&1 || true
  "$BIN" bans list -c "$B/sluice.toml" > "$OUT/bans-list-b.txt" 2>&1 || true
  node_stop "$A"; node_stop "$B"; sink_stop
fi
