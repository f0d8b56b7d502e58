#!/usr/bin/env bash
# Issue 20: ban propagation between the nodes of a cluster, measured from
# the decision to every node's kernel set.
#
# Everything runs in a network namespace of its own (the script re-runs
# itself under `unshare -n`; root needed), so the host's ruleset is never
# touched:
#   - a private redis-server on a unix socket (no persistence);
#   - NODES release sluice processes (a, b, c), shipped defaults (info
#     logging, firewall flush_interval 50 ms) apart from: the nftables
#     exporter with one table per node (`sluice_a`, ...; drop limited to the
#     node's own port), the rule `unknown_user` 3 within 1m -> 1h, spam off,
#     a recipient table, metrics, and `[cluster]` on the shared store;
#   - PRELOAD active bans (100.64.0.0/10 addresses) written to the store's
#     active set before the nodes start: each node loads them into its
#     listener and kernel set first (timed: "load");
#   - OFFENDERS clients, each with an address of its own in 10.220.0.0/16
#     (a `local` route on lo), CONC at a time: each makes three
#     connections, one to each node in turn, with one unknown recipient
#     each, so the third offence (on the third node) decides the ban from
#     the shared offence window;
#   - a netlink listener on the kernel's nftables notifications timestamps
#     each element as it enters a node's set.
# Delay = time the element entered a node's set - the decision time the
# ban stream records (`ts_ms`, same clock). Reported for every (ban, node),
# for the deciding node, for the others, and per ban the slowest node
# ("every node's kernel set").
#   env: OUT (/tmp/sluice-banprop) NODES (3) OFFENDERS (2000) PRELOAD (100000)
#        CONC (50) SLUICE_BIN (target/release/sluice). Builds nothing.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/sluice-banprop}
NODES=${NODES:-3}; OFFENDERS=${OFFENDERS:-2000}; PRELOAD=${PRELOAD:-100000}; CONC=${CONC:-50}
BIN=${SLUICE_BIN:-$ROOT/target/release/sluice}
[ -x "$BIN" ] || { echo "no binary $BIN (cargo build --release)" >&2; exit 1; }
if [ -z "${BANPROP_IN_NETNS:-}" ]; then
  exec env BANPROP_IN_NETNS=1 OUT="$OUT" SLUICE_BIN="$BIN" unshare -n bash "$0" "$@"
fi
ip link set lo up
ip route add local 10.220.0.0/16 dev lo
ip addr add 10.221.0.1/32 dev lo
rm -rf "$OUT"; mkdir -p "$OUT"
ulimit -n 65536 2>/dev/null || true
NAMES=(a b c d e f g h); NAMES=("${NAMES[@]:0:$NODES}")

cleanup() {
  for n in "${NAMES[@]}"; do [ -f "$OUT/node-$n/pid" ] && kill "$(cat "$OUT/node-$n/pid")" 2>/dev/null; done
  [ -f "$OUT/monitor.pid" ] && kill "$(cat "$OUT/monitor.pid")" 2>/dev/null
  [ -f "$OUT/redis.pid" ] && kill "$(cat "$OUT/redis.pid")" 2>/dev/null
  true
}
trap cleanup EXIT
{
  echo "date: $(date -Is)"; echo "nproc: $(nproc)"; echo "kernel: $(uname -r)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "redis: $(redis-server --version)"; echo "nft: $(nft --version)"
  echo "sluice: $($BIN --version 2>/dev/null) (git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null))"
  echo "nodes=$NODES offenders=$OFFENDERS preload=$PRELOAD conc=$CONC"
} | tee "$OUT/machine.txt"

SOCK=$OUT/redis.sock
redis-server --port 0 --unixsocket "$SOCK" --unixsocketperm 700 --save '' --appendonly no \
  --daemonize no --dir "$OUT" --logfile "$OUT/redis.log" &
echo $! > "$OUT/redis.pid"
for _ in $(seq 1 50); do redis-cli -s "$SOCK" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done

# The preload: the active set and the bans as the publisher writes them.
python3 "$ROOT/benches/ban_propagation.py" preload "$PRELOAD" | redis-cli -s "$SOCK" --pipe > "$OUT/preload.txt"
echo "preloaded: $(redis-cli -s "$SOCK" zcard sluice:bans:active) active bans"

node_start() {
  local n=$1 i=$2 dir=$OUT/node-$1 port=$((2601 + $2)) metrics=$((9601 + $2))
  mkdir -p "$dir"
  for k in $(seq 0 99); do printf 'user%02d@example.com OK\n' "$k"; done > "$dir/recipients"
  cat > "$dir/sluice.toml" <<TOML
[server]
listen = ["10.221.0.1:$port"]
hostname = "node-$n.localdomain"
[relay]
next_hop = "smtp://127.0.0.1:1"
[recipients]
domains = ["example.com"]
table = "recipients"
[spool]
dir = "spool"
[spam]
enabled = false
[metrics]
listen = "127.0.0.1:$metrics"
[firewall]
exporter = "nft"
nft_table = "sluice_$n"
ports = [$port]
[firewall.rules.unknown_user]
count = 3
window = "1m"
ban = "1h"
[cluster]
redis = "redis+unix://$SOCK"
node = "$n"
TOML
  "$BIN" serve --config "$dir/sluice.toml" 2>> "$dir/sluice.log" &
  echo $! > "$dir/pid"
}
t0=$(date +%s.%N)
for i in "${!NAMES[@]}"; do node_start "${NAMES[$i]}" "$i"; done
# Loaded: every node's set holds the preload.
for n in "${NAMES[@]}"; do
  until [ "$(nft -j list set inet "sluice_$n" banned_v4 2>/dev/null | python3 "$ROOT/benches/ban_propagation.py" count)" -ge "$PRELOAD" ]; do
    sleep 0.5
    [ "$(echo "$(date +%s.%N) - $t0 > 300" | bc)" = 1 ] && { echo "node $n never loaded the preload" >&2; exit 1; }
  done
  echo "node $n: $PRELOAD bans in its kernel set after $(echo "$(date +%s.%N) - $t0" | bc) s (all nodes started together)" | tee -a "$OUT/load.txt"
done

python3 -u "$ROOT/benches/ban_propagation.py" watch > "$OUT/monitor.txt" 2> "$OUT/monitor.err" &
echo $! > "$OUT/monitor.pid"
sleep 1
ports=""; for i in "${!NAMES[@]}"; do ports="$ports $((2601 + i))"; done
python3 "$ROOT/benches/ban_propagation.py" flood "$OFFENDERS" "$CONC" 10.221.0.1 $ports | tee "$OUT/flood.txt"
sleep 3
for i in "${!NAMES[@]}"; do
  curl -s "http://127.0.0.1:$((9601 + i))/metrics" | grep -E '^sluice_cluster|^sluice_bans' > "$OUT/metrics-${NAMES[$i]}.txt" || true
done
redis-cli -s "$SOCK" --raw xrange sluice:bans:stream - + > "$OUT/stream.txt"
python3 "$ROOT/benches/ban_propagation.py" report "$OUT" "${NAMES[@]}" | tee "$OUT/summary.md"
