#!/usr/bin/env bash
# Cost of seeing the storm (issue 8): end-to-end msg/s of sluice with metrics
# and the event log off and on, and Postfix, side by side in one run:
#   smtp-source -> {sluice 127.0.0.1:2535 | Postfix 127.0.0.1:2525} -> smtp-sink 127.0.0.1:2526
#
#   obs-off : [metrics] enabled = false (no listener, nothing counts events or
#             commands) and RUST_LOG=warn (no event line is formatted)
#   obs-on  : metrics on (listener on 127.0.0.1:9425), every event written as
#             a JSON line to $OUT/events.log (RUST_LOG=warn for both: the
#             human log is the same), and /metrics scraped once a
#             second during the run (Prometheus scrapes every 15 s: this is
#             15x that) plus /api/status every 2 s (an open status page)
#   postfix : ../shared/bench/20-postfix-bench.sh (reference)
#
# The variants alternate run by run (off, on, off, on, ...; sluice restarted
# for each) so slow phases of this shared 2-core box hit both. No clamd, no
# spam scoring: the relay alone, where the relative cost is largest.
# Output: $OUT/summary.md; copied to $RESULTS_DIR/metrics-*.jsonl and metrics-summary.md.
#   env: COUNT (5000) RUNS (5) SIZES (4096) CONC (20) OUT (/tmp/sluice-metrics)
#        SKIP_POSTFIX=1  sluice only;  BUILD=0  use target/release/sluice as it is
#        RESULTS_DIR ($ROOT/docs/bench-results)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH:-$(cd "$ROOT/../shared/bench" && pwd)}
OUT=${OUT:-/tmp/sluice-metrics}
COUNT=${COUNT:-5000}; RUNS=${RUNS:-5}; SIZES=${SIZES:-4096}; CONC=${CONC:-20}
RESULTS_DIR=${RESULTS_DIR:-$ROOT/docs/bench-results}
mkdir -p "$OUT/logs"
rm -f "$OUT"/*.jsonl "$OUT/summary.md" "$OUT/events.log"

[ "${BUILD:-1}" = 0 ] || (cd "$ROOT" && cargo build --release -q)
cp "$ROOT/target/release/sluice" "$OUT/sluice-bin"
export SLUICE_BIN=$OUT/sluice-bin
source "$ROOT/benches/lib.sh"
W="$OUT/sluice"
SCRAPER=""
cleanup() {
  [ -z "$SCRAPER" ] || kill "$SCRAPER" 2>/dev/null || true
  sluice_stop "$W" || true
}
trap cleanup EXIT

{
  echo "sluice: $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo ' (+ uncommitted changes)')"
  echo "COUNT=$COUNT RUNS=$RUNS SIZES=$SIZES CONC=$CONC"
  (RESDIR="$OUT" source "$BENCH/lib.sh" && machine_info)
} > "$OUT/env.txt"

OFF="[metrics]
enabled = false
[spam]
enabled = false"
# sluice_start puts MORE_TOML right after [log] level: the first line is a
# [log] key.
ON="events = \"$OUT/events.log\"
[metrics]
listen = \"127.0.0.1:9425\"
[spam]
enabled = false"

# Scrapes like a (very eager) Prometheus and an open status page.
scrape_loop() {
  python3 - <<'PY' &
import time, urllib.request
n = 0
while True:
    for path in (["/metrics", "/api/status"] if n % 2 == 0 else ["/metrics"]):
        try:
            urllib.request.urlopen("http://127.0.0.1:9425" + path, timeout=5).read()
        except Exception:
            pass
    n += 1
    time.sleep(1)
PY
  SCRAPER=$!
}

for run in $(seq 1 "$RUNS"); do
  for v in off on; do
    rm -rf "$W/spool"
    if [ "$v" = on ]; then
      RUST_LOG=warn sluice_start "$W" warn "" "$ON"
      scrape_loop
    else
      RUST_LOG=warn sluice_start "$W" warn "" "$OFF"
    fi
    python3 "$BENCH/bench.py" relay --label "sluice-obs-$v" --relay 127.0.0.1:2535 --relay-pid "$(cat "$W/pid")" \
      --rcpt user0500@example.com --sizes "$SIZES" --conc "$CONC" --count "$COUNT" --runs 1 \
      --pause 1 --jsonl "$OUT/sluice-obs-$v.jsonl" --logdir "$OUT/logs" > /dev/null
    if [ -n "$SCRAPER" ]; then kill "$SCRAPER" 2>/dev/null || true; wait "$SCRAPER" 2>/dev/null || true; SCRAPER=""; fi
    sluice_stop "$W"
    echo "run $run $v: $(tail -1 "$OUT/sluice-obs-$v.jsonl" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["accept_mps"], "msg/s accepted,", r["drain_mps"], "delivered,", r["relay_cpu_ms_per_msg"], "ms CPU/msg")')"
  done
done
events=$(wc -l < "$OUT/events.log" 2>/dev/null || echo 0)

if [ "${SKIP_POSTFIX:-0}" != 1 ]; then
  RESDIR="$OUT" LABEL=postfix COUNT=$COUNT RUNS=$RUNS SIZES=$SIZES CONC=$CONC "$BENCH/20-postfix-bench.sh" > /dev/null
fi

{
  echo "## metrics and event log cost ($(date -Is))"
  echo
  cat "$OUT/env.txt"
  echo
  echo "event log lines written in the obs-on runs: $events"
  python3 - "$OUT" <<'PY'
import json, glob, statistics, sys
out = sys.argv[1]
med = {}
for v in ("off", "on"):
    rows = [json.loads(l) for l in open(f"{out}/sluice-obs-{v}.jsonl") if l.strip()]
    med[v] = {k: statistics.median(r[k] for r in rows) for k in ("accept_mps", "drain_mps", "relay_cpu_ms_per_msg")}
    print(f"- obs-{v}: accepted {med[v]['accept_mps']:.0f} msg/s, delivered {med[v]['drain_mps']:.0f} msg/s, "
          f"{med[v]['relay_cpu_ms_per_msg']:.3f} ms CPU/msg (medians of {len(rows)} runs: "
          f"{[r['drain_mps'] for r in rows]})")
ratio = med["on"]["drain_mps"] / med["off"]["drain_mps"]
print(f"- on/off delivered msg/s: {ratio:.3f} (target >= 0.95); CPU per message: "
      f"{med['on']['relay_cpu_ms_per_msg'] / med['off']['relay_cpu_ms_per_msg']:.3f}x")
PY
  echo
  python3 "$BENCH/summarize.py" "$OUT"/*.jsonl
} | tee "$OUT/summary.md"
mkdir -p "$RESULTS_DIR"
for v in off on; do cp "$OUT/sluice-obs-$v.jsonl" "$RESULTS_DIR/metrics-sluice-obs-$v.jsonl"; done
[ ! -f "$OUT/postfix.jsonl" ] || cp "$OUT/postfix.jsonl" "$RESULTS_DIR/metrics-postfix.jsonl"
cp "$OUT/summary.md" "$RESULTS_DIR/metrics-summary.md"
