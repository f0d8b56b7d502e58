#!/usr/bin/env bash
# Call-ahead under a dictionary attack: how many probes reach the next hop?
#   benches/dictattack.py (CLIENTS sessions from IPS addresses 127.1.x.y, random
#   unknown local parts, RCPTS_PER_CONN RCPTs per session, DURATION seconds)
#     -> sluice 127.0.0.1:2535, recipients "@example.com VERIFY", [callahead] on
#        (every other call-ahead key at its default)
#     -> benches/probe_sink.py 127.0.0.1:2526: knows user0000..user0999@example.com,
#        550 5.1.1 for the rest, PROBE_DELAY seconds per RCPT reply; counts
#        the probes (total, per second, connections and RCPTs at once).
# A legitimate sender (its own address per session, 127.2.0.x) asks for a
# real, not yet verified recipient every LEGIT_INTERVAL seconds meanwhile.
#   env: DURATION (30) CLIENTS (100) IPS (1000) RCPTS_PER_CONN (10) PROBE_DELAY (0.01)
#        LEGIT_INTERVAL (1) RUNS (2) LOG_LEVEL (info) OUT (/tmp/sluice-callahead)
#        SLUICE_BIN + LABEL (one binary), or VARIANTS="before=/path after=/path"
#        (interleaved per run). OUT's earlier results are removed. Does not
#        build anything.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/sluice-callahead}
DURATION=${DURATION:-30}; CLIENTS=${CLIENTS:-100}; IPS=${IPS:-1000}; RCPTS_PER_CONN=${RCPTS_PER_CONN:-10}
PROBE_DELAY=${PROBE_DELAY:-0.01}; LEGIT_INTERVAL=${LEGIT_INTERVAL:-1}; RUNS=${RUNS:-2}; LOG_LEVEL=${LOG_LEVEL:-info}
VARIANTS=${VARIANTS:-"${LABEL:-sluice}=${SLUICE_BIN:-$ROOT/target/release/sluice}"}

mkdir -p "$OUT/probes" "$OUT/logs"
rm -f "$OUT"/*.jsonl "$OUT"/probes/*.json
source "$ROOT/benches/lib.sh"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

for v in $VARIANTS; do
  bin=${v#*=}; [ -x "$bin" ] || { echo "no binary $bin (variant $v)" >&2; exit 1; }
done
for p in 2535 2526 9425; do
  if ss -Hltn "sport = :$p" | grep -q .; then echo "127.0.0.1:$p is busy (another benchmark?)" >&2; exit 1; fi
done

cleanup() {
  [ -n "${W:-}" ] && sluice_stop "$W" || true
  [ -f "$OUT/sink.pid" ] && kill "$(cat "$OUT/sink.pid")" 2>/dev/null || true
}
trap cleanup EXIT

sink_start() {  # STATSFILE
  python3 "$ROOT/benches/probe_sink.py" --listen 127.0.0.1:2526 --delay "$PROBE_DELAY" --stats "$1" \
    > /dev/null 2>> "$OUT/sink.log" &
  echo $! > "$OUT/sink.pid"
  for _ in $(seq 1 50); do ss -Hltn "sport = :2526" | grep -q . && return 0; sleep 0.1; done
  echo "probe_sink did not start" >&2; return 1
}
sink_stop() {
  local pid; pid=$(cat "$OUT/sink.pid"); kill -TERM "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  rm -f "$OUT/sink.pid"
}

echo "# $(date -u +%FT%TZ) uptime before: $(uptime)" | tee "$OUT/load.txt"
for r in $(seq 1 "$RUNS"); do
  for v in $VARIANTS; do
    label=${v%%=*}; export SLUICE_BIN=${v#*=}
    W="$OUT/$label"; rm -rf "$W"; mkdir -p "$W"
    # Every example.com recipient is verified at the next hop.
    echo "@example.com VERIFY" > "$W/recipients"
    sink_start "$OUT/probes/$label-$r.json"
    sluice_start "$W" "$LOG_LEVEL" "max_connections = 20000" "[callahead]
enabled = true"
    echo "## run $r $label ($SLUICE_BIN) load=$(cut -d' ' -f1-3 /proc/loadavg)" >&2
    python3 "$ROOT/benches/dictattack.py" --target 127.0.0.1:2535 --clients "$CLIENTS" --duration "$DURATION" \
      --ips "$IPS" --rcpts-per-conn "$RCPTS_PER_CONN" --legit-interval "$LEGIT_INTERVAL" \
      --relay-pid "$(cat "$W/pid")" --label "$label" --json "$OUT/attack.jsonl" \
      | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); print(" rcpt/s", d["rcpt_per_s"], d["replies"], file=sys.stderr)'
    sluice_stop "$W"
    sink_stop
    cp "$W/sluice.log" "$OUT/logs/sluice-$label-$r.log"
    sleep 2
  done
done
echo "# $(date -u +%FT%TZ) uptime after: $(uptime)" | tee -a "$OUT/load.txt"

python3 - "$OUT" <<'PY' | tee "$OUT/summary.md"
import json, statistics, sys
out = sys.argv[1]
att = [json.loads(l) for l in open(f"{out}/attack.jsonl")]
labels = []
for x in att:
    if x["label"] not in labels: labels.append(x["label"])
runs = {}
for x in att:
    runs.setdefault(x["label"], []).append(x)
def med(v, nd=0):
    f = f"{{:.{nd}f}}"
    return f"{f.format(statistics.median(v))} [{f.format(min(v))}..{f.format(max(v))}]" if len(v) > 1 else f.format(v[0])
print("| build | attack RCPT/s | probes at next hop (total) | probes/s (mean) | peak probes/s | peak connections at next hop | peak RCPTs waiting at next hop | sluice CPU µs/RCPT | legit RCPTs accepted |")
print("|---|---|---|---|---|---|---|---|---|")
for l in labels:
    xs = runs[l]
    ps = [json.load(open(f"{out}/probes/{l}-{i + 1}.json")) for i in range(len(xs))]
    dur = xs[0]["duration_s"]
    leg = [g for x in xs for g in x["legit"]]
    ok = sum(1 for g in leg if g["reply"].startswith("250"))
    print(f"| {l} | {med([x['rcpt_per_s'] for x in xs])} | {med([p['rcpt_total'] for p in ps])} | "
          f"{med([p['rcpt_total'] / dur for p in ps])} | {med([p['rcpt_peak_per_s'] for p in ps])} | "
          f"{med([p['max_open_connections'] for p in ps])} | {med([p['max_waiting_rcpts'] for p in ps])} | "
          f"{med([x['relay_cpu_us_per_rcpt'] or 0 for x in xs])} | {ok}/{len(leg)} |")
print()
print("Replies sluice gave to the attack's RCPTs (all runs):")
print()
for l in labels:
    tot = {}
    samples = {}
    for x in runs[l]:
        for k, n in x["replies"].items():
            tot[k] = tot.get(k, 0) + n
        samples.update(x["reply_samples"])
    s = sum(tot.values())
    print(f"- {l}: " + "; ".join(f"{k}: {n} ({100 * n / s:.1f} %)" for k, n in sorted(tot.items(), key=lambda kv: -kv[1])))
    for k in sorted(tot, key=lambda k: -tot[k]):
        print(f"    - `{samples.get(k, '')}`")
    legit = {}
    for x in runs[l]:
        for g in x["legit"]:
            k = g["reply"][:9]
            legit[k] = legit.get(k, 0) + 1
    print(f"  legit sender's RCPT replies: {legit}")
    print(f"  sessions {sum(x['sessions'] for x in runs[l])}, connect errors {sum(x['connect_errors'] for x in runs[l])}, "
          f"banners {[x['banners'] for x in runs[l]]}, machine busy {[x['machine_busy_frac'] for x in runs[l]]}")
PY
