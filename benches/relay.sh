#!/usr/bin/env bash
# End-to-end relay benchmark, sluice and Postfix side by side in one run:
#   smtp-source -> {sluice 127.0.0.1:2535 | Postfix 127.0.0.1:2525} -> smtp-sink 127.0.0.1:2526
# Uses ../shared/bench (bench.py, 10/20-postfix-*.sh). fsync is on for both.
#   env: COUNT (5000) RUNS (3) SIZES (4096,65536) CONC (1,20,100) OUT (/tmp/sluice-bench)
#        SKIP_POSTFIX=1 to measure sluice only. To compare builds or settings in
#        one run: LABEL (sluice) names sluice's rows, SLUICE_BIN runs another
#        binary (e.g. the code before a change), RELAY_TOML adds keys to [relay]
#        (e.g. 'forward_client = "none"'), EXTRA_TOML adds sections, KEEP=1
#        keeps the earlier variants' results in OUT.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH:-$(cd "$ROOT/../shared/bench" && pwd)}
OUT=${OUT:-/tmp/sluice-bench}
COUNT=${COUNT:-5000}; RUNS=${RUNS:-3}; SIZES=${SIZES:-4096,65536}; CONC=${CONC:-1,20,100}
mkdir -p "$OUT/logs"
[ "${KEEP:-0}" = 1 ] || rm -f "$OUT"/*.jsonl

(cd "$ROOT" && cargo build --release -q)

# --- sluice ---------------------------------------------------------------------
source "$ROOT/benches/lib.sh"
W="$OUT/sluice"
rm -rf "$W"
# The relay alone: no spam scoring (its SPF/DKIM/DMARC would wait for DNS).
LABEL=${LABEL:-sluice}
sluice_start "$W" info "" "[spam]
enabled = false
${EXTRA_TOML:-}"
PID=$(cat "$W/pid")
trap 'sluice_stop "$W"' EXIT
python3 "$BENCH/bench.py" relay --label "$LABEL" --relay 127.0.0.1:2535 --relay-pid "$PID" \
  --rcpt user0500@example.com --sizes "$SIZES" --conc "$CONC" --count "$COUNT" --runs "$RUNS" \
  --pause 2 --jsonl "$OUT/$LABEL.jsonl" --logdir "$OUT/logs" | tee "$OUT/$LABEL.txt"
sluice_stop "$W"
trap - EXIT
grep -c '"message_accepted"' "$W/sluice.log" > "$OUT/$LABEL.accepted" || true

# --- Postfix, same machine, same run ----------------------------------------------
if [ "${SKIP_POSTFIX:-0}" != 1 ]; then
  RESDIR="$OUT" LABEL=postfix COUNT=$COUNT RUNS=$RUNS SIZES=$SIZES CONC=$CONC "$BENCH/20-postfix-bench.sh"
fi

python3 "$BENCH/summarize.py" "$OUT"/*.jsonl | tee "$OUT/summary.md"
