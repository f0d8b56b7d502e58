#!/usr/bin/env bash
# End-to-end relay benchmark, sluice and Postfix side by side in one run:
#   smtp-source -> {sluice 127.0.0.1:2535 | Postfix 127.0.0.1:2525} -> smtp-sink 127.0.0.1:2526
# Uses ../shared/bench (bench.py, 10/20-postfix-*.sh). fsync is on for both.
#   env: COUNT (5000) RUNS (3) SIZES (4096,65536) CONC (1,20,100) OUT (/tmp/sluice-bench)
#        SKIP_POSTFIX=1 to measure sluice only
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH:-$(cd "$ROOT/../shared/bench" && pwd)}
OUT=${OUT:-/tmp/sluice-bench}
COUNT=${COUNT:-5000}; RUNS=${RUNS:-3}; SIZES=${SIZES:-4096,65536}; CONC=${CONC:-1,20,100}
mkdir -p "$OUT/logs"
rm -f "$OUT"/*.jsonl

(cd "$ROOT" && cargo build --release -q)

# --- sluice ---------------------------------------------------------------------
W="$OUT/sluice"
rm -rf "$W"; mkdir -p "$W"
for i in $(seq 0 999); do printf 'user%04d@example.com OK\n' "$i"; done > "$W/recipients"
cat > "$W/sluice.toml" <<TOML
[server]
listen = ["127.0.0.1:2535"]
hostname = "bench.localdomain"
[relay]
next_hop = "smtp://127.0.0.1:2526"
[recipients]
domains = ["example.com"]
table = "recipients"
[spool]
dir = "spool"
fsync = true
[log]
level = "info"
TOML
"$ROOT/target/release/sluice" serve --config "$W/sluice.toml" 2> "$W/sluice.log" &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do ss -Hltn "sport = :2535" | grep -q . && break; sleep 0.1; done
# Between runs: wait until sluice's spool holds no undelivered record
# (bench.py also waits for the sink to count every message).
python3 "$BENCH/bench.py" relay --label sluice --relay 127.0.0.1:2535 --relay-pid "$PID" \
  --rcpt user0500@example.com --sizes "$SIZES" --conc "$CONC" --count "$COUNT" --runs "$RUNS" \
  --pause 2 --jsonl "$OUT/sluice.jsonl" --logdir "$OUT/logs" | tee "$OUT/sluice.txt"
kill -TERM $PID; wait $PID || true
trap - EXIT
grep -c '"message_accepted"' "$W/sluice.log" > "$OUT/sluice.accepted" || true

# --- Postfix, same machine, same run ----------------------------------------------
if [ "${SKIP_POSTFIX:-0}" != 1 ]; then
  RESDIR="$OUT" LABEL=postfix COUNT=$COUNT RUNS=$RUNS SIZES=$SIZES CONC=$CONC "$BENCH/20-postfix-bench.sh"
fi

python3 "$BENCH/summarize.py" "$OUT"/*.jsonl | tee "$OUT/summary.md"
