#!/usr/bin/env bash
# Reject floods and idle sessions, sluice and Postfix side by side in one run
# (driver: ../shared/bench/reject_bench.py with smtpflood.c):
#   flood : banner, EHLO, MAIL, RCPT <nouserN@example.com> (550), QUIT
#   dict  : the same with 50 unknown RCPTs per session, tarpit off
#   dnsbl : client 127.0.0.2, listed in bl.test (dnslib on 127.0.0.1:5353)
#   idle  : N sessions after EHLO, held; PSS of the relay
#   env: COUNT (20000) RUNS (3) CONC (20,100) IDLE_N (1000,10000) OUT (/tmp/sluice-reject)
#        SKIP_POSTFIX=1, SKIP_IDLE=1; to compare builds in one run: LABEL (sluice)
#        names the rows, SLUICE_BIN another binary, KEEP=1 keeps OUT's results
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH:-$(cd "$ROOT/../shared/bench" && pwd)}
OUT=${OUT:-/tmp/sluice-reject}; COUNT=${COUNT:-20000}; RUNS=${RUNS:-3}; CONC=${CONC:-20,100}
IDLE_N=${IDLE_N:-1000,10000}
mkdir -p "$OUT"; [ "${KEEP:-0}" = 1 ] || rm -f "$OUT"/*.jsonl
LABEL=${LABEL:-sluice}
(cd "$ROOT" && cargo build --release -q)
cc -O2 -Wall -Wno-format-nonliteral -Wno-format-security -o "$OUT/smtpflood" "$BENCH/smtpflood.c"
export SMTPFLOOD="$OUT/smtpflood"
RB="python3 $BENCH/reject_bench.py"
ulimit -n 65536 || true

W="$OUT/sluice"; rm -rf "$W"; mkdir -p "$W"
python3 -m dnslib.zoneresolver --zone "$ROOT/../shared/corpora/dnsbl/bl.test.zone" --address 127.0.0.1 --port 5353 \
  > "$OUT/dns.log" 2>&1 &
echo $! > "$OUT/dns.pid"
trap 'kill $(cat "$OUT/dns.pid") 2>/dev/null || true; kill $(cat "$W/pid" 2>/dev/null) 2>/dev/null || true' EXIT
sleep 1

source "$ROOT/benches/lib.sh"
SERVER_KEYS="max_connections = 20000
max_errors = 1000"
start_sluice() { sluice_start "$W" warn "$SERVER_KEYS" "$1"; }
stop_sluice() { sluice_stop "$W"; }

start_sluice "[limits]
tarpit_after_errors = 0"
$RB flood --label "$LABEL-flood" --relay 127.0.0.1:2535 --relay-pidfile "$W/pid" --conc "$CONC" --count "$COUNT" \
  --rcpts 1 --runs "$RUNS" --jsonl "$OUT/$LABEL.jsonl"
$RB flood --label "$LABEL-dict-notarpit" --relay 127.0.0.1:2535 --relay-pidfile "$W/pid" --conc "$CONC" --count 2000 \
  --rcpts 50 --runs "$RUNS" --jsonl "$OUT/$LABEL.jsonl"
stop_sluice
start_sluice "[dns]
resolver = \"127.0.0.1:5353\"
[dnsbl]
zones = [\"bl.test*3\"]
threshold = 3"
$RB flood --label "$LABEL-dnsbl" --relay 127.0.0.1:2535 --relay-pidfile "$W/pid" --aux-pidfiles "$OUT/dns.pid" \
  --bind 127.0.0.2 --rcpt-fmt user0500@example.com --conc "$CONC" --count "$COUNT" --rcpts 1 --runs "$RUNS" \
  --jsonl "$OUT/$LABEL.jsonl"
stop_sluice
if [ "${SKIP_IDLE:-0}" != 1 ]; then
start_sluice ""
$RB idle --label "$LABEL-idle" --relay 127.0.0.1:2535 --relay-pidfile "$W/pid" \
  --n "$IDLE_N" --hold 2 --idle-settle 60 --wall 150 --runs 1 --jsonl "$OUT/$LABEL.jsonl"
stop_sluice
fi
# The Postfix script starts its own zone server on 5353.
kill "$(cat "$OUT/dns.pid")" 2>/dev/null || true; sleep 0.5

if [ "${SKIP_POSTFIX:-0}" != 1 ]; then
  RESDIR="$OUT" TARGETS=postfix SERIES="flood" COUNT_PF=$COUNT RUNS=$RUNS CONC=$CONC "$BENCH/70-reject-flood.sh"
fi
$RB summary "$OUT"/*.jsonl | tee "$OUT/summary.md"
