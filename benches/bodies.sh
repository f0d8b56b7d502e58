#!/usr/bin/env bash
# Memory while many large bodies arrive (benches/bodies.rs):
#   CLIENTS clients each stream a SIZE body at RATE B/s -> sluice 127.0.0.1:2535
#   -> the bench's own sink 127.0.0.1:2526, which checks every message byte for byte;
#   sluice's VmRSS is sampled every 100 ms.
#   env: CLIENTS (1000) SIZE (5M) RATE (256K; 0 = unthrottled) TIMEOUT (600 s)
#        MAX_RSS (12G: the run stops, exit 4, when sluice's RSS passes it; 0 = off)
#        OUT (/tmp/sluice-bodies) LABEL (sluice) SLUICE_BIN (another binary, e.g.
#        the code before a change) EXTRA_TOML (more sections for sluice.toml)
#        BENCH_BIN (a built bodies bench binary: skips building this tree)
# Side by side:
#   LABEL=before SLUICE_BIN=/tmp/sluice-before/target/release/sluice benches/bodies.sh
#   LABEL=after benches/bodies.sh
# Results: OUT/LABEL.txt, OUT/bodies.jsonl (one line per run, appended),
# OUT/LABEL.rss.csv (the samples), OUT/LABEL/sluice.log.
#
# sluice runs as shipped (logging at info, spam scoring and SPF/DKIM/DMARC on;
# bodies over spam.max_size, 2 MiB, are not scored), with these keys pinned so
# that 1000 concurrent sessions from 127.0.0.1 are allowed whatever the
# defaults become: server.max_connections = 10000, server.max_message_size =
# 8 MiB, [limits] per_ip_* = 0, [greylist] enabled = false. Loopback is never
# banned by [firewall]. The spool is fsynced, and removed after the run
# (CLIENTS x SIZE of disk while it runs).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/sluice-bodies}
CLIENTS=${CLIENTS:-1000}; SIZE=${SIZE:-5M}; RATE=${RATE:-256K}; TIMEOUT=${TIMEOUT:-600}; MAX_RSS=${MAX_RSS:-12G}
LABEL=${LABEL:-sluice}
mkdir -p "$OUT"

# One socket per client on both sides: sluice and the bench need more than 1024 fds.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

for port in 2535 2526 9425; do
  if ss -Hltn "sport = :$port" | grep -q .; then
    echo "port $port is in use (another sluice or sink running?)" >&2; exit 1
  fi
done

if [ -z "${BENCH_BIN:-}" ]; then
  [ -n "${SLUICE_BIN:-}" ] || (cd "$ROOT" && cargo build --release -q)
  BENCH_BIN=$(cd "$ROOT" && cargo bench -q --bench bodies --no-run 2>&1 \
    | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -1)
  [ -n "$BENCH_BIN" ] || { echo "could not build the bodies bench" >&2; exit 1; }
  case $BENCH_BIN in /*) ;; *) BENCH_BIN=$ROOT/$BENCH_BIN ;; esac
fi

source "$ROOT/benches/lib.sh"
W="$OUT/$LABEL"
rm -rf "$W"
sluice_start "$W" info "max_connections = 10000
max_message_size = 8388608" "[limits]
per_ip_connections = 0
per_ip_connection_rate = 0
per_ip_message_rate = 0
per_ip_recipient_rate = 0
[greylist]
enabled = false
${EXTRA_TOML:-}"
PID=$(cat "$W/pid")
trap 'sluice_stop "$W"' EXIT
echo "sluice ${SLUICE_BIN:-$ROOT/target/release/sluice} pid $PID; bench $BENCH_BIN; ulimit -n $(ulimit -n)"
rc=0
"$BENCH_BIN" --label "$LABEL" --relay 127.0.0.1:2535 --sink 127.0.0.1:2526 --pid "$PID" \
  --clients "$CLIENTS" --size "$SIZE" --rate "$RATE" --timeout "$TIMEOUT" --max-rss "$MAX_RSS" \
  --jsonl "$OUT/bodies.jsonl" --samples "$OUT/$LABEL.rss.csv" | tee "$OUT/$LABEL.txt" || rc=$?
sluice_stop "$W"
trap - EXIT
echo "sluice log: $(grep -c '"message_accepted"' "$W/sluice.log" || true) message_accepted events," \
  "$(grep -cE ' (WARN|ERROR)' "$W/sluice.log" || true) WARN/ERROR lines ($W/sluice.log)" | tee -a "$OUT/$LABEL.txt"
rm -rf "$W/spool"
exit "$rc"
