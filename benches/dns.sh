#!/usr/bin/env bash
# Relay throughput while the resolver is lossy or black-holed, with spam
# scoring on as shipped (SPF/DKIM/DMARC ask DNS for every message):
#   smtp-source -> sluice 127.0.0.1:2535 -> smtp-sink 127.0.0.1:2526
#   sluice [dns] -> benches/dnsproxy.py 127.0.0.1:15354 (drops a fraction)
#                -> dnslib zoneresolver 127.0.0.1:15353 (zone sender.example)
# Modes: working (drop 0), lossy (drop LOSSY_DROP), blackhole (drop 1.0, BH_COUNT
# messages). After each run, LAT_N single sessions one after another, timed
# from connect to the reply to QUIT (python client, 4 KiB message).
# The zone's TTL is ZONE_TTL (0): nothing is cached, so every message asks,
# as mail from many different sender domains would.
#   env: COUNT (1000) RUNS (3) BH_COUNT (100) LAT_N (5) CONC (20) SIZE (4096)
#        MODES (working,lossy,blackhole) LOSSY_DROP (0.1) ZONE_TTL (0)
#        DNS_TIMEOUT (2s, [dns] timeout) OUT (/tmp/sluice-dns)
#        SLUICE_BIN + LABEL (one binary, default target/release/sluice "sluice"),
#        or VARIANTS="before=/path/sluice after=/path/sluice" to compare builds
#        in one run (interleaved: run r of every mode and variant, then r+1)
#        OUT's earlier results are removed. Does not build anything.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH:-$(cd "$ROOT/../shared/bench" && pwd)}
OUT=${OUT:-/tmp/sluice-dns}
COUNT=${COUNT:-1000}; RUNS=${RUNS:-3}; BH_COUNT=${BH_COUNT:-100}; LAT_N=${LAT_N:-5}
CONC=${CONC:-20}; SIZE=${SIZE:-4096}
MODES=${MODES:-working,lossy,blackhole}; LOSSY_DROP=${LOSSY_DROP:-0.1}
ZONE_TTL=${ZONE_TTL:-0}; DNS_TIMEOUT=${DNS_TIMEOUT:-2s}
SENDER=${SENDER:-bench@sender.example}
VARIANTS=${VARIANTS:-"${LABEL:-sluice}=${SLUICE_BIN:-$ROOT/target/release/sluice}"}
ZONE_PORT=15353; PROXY_PORT=15354

mkdir -p "$OUT/logs" "$OUT/dns"
rm -f "$OUT"/*.jsonl "$OUT"/dns/*.json
source "$ROOT/benches/lib.sh"

for v in $VARIANTS; do
  bin=${v#*=}; [ -x "$bin" ] || { echo "no binary $bin (variant $v)" >&2; exit 1; }
done
for p in 2535 2526 9425; do
  if ss -Hltn "sport = :$p" | grep -q .; then echo "127.0.0.1:$p is busy (another benchmark?)" >&2; exit 1; fi
done
for p in $ZONE_PORT $PROXY_PORT; do
  if ss -Hlun "sport = :$p" | grep -q .; then echo "udp 127.0.0.1:$p is busy" >&2; exit 1; fi
done

# --- the zone -----------------------------------------------------------------
cat > "$OUT/sender.example.zone" <<ZONE
\$ORIGIN sender.example.
\$TTL $ZONE_TTL
@       IN SOA ns.sender.example. hostmaster.sender.example. 1 3600 600 86400 $ZONE_TTL
@       IN NS  ns.sender.example.
@       IN MX  10 mx.sender.example.
@       IN A   127.0.0.1
mx      IN A   127.0.0.1
ns      IN A   127.0.0.1
@       IN TXT "v=spf1 ip4:127.0.0.0/8 -all"
_dmarc  IN TXT "v=DMARC1; p=none"
ZONE

cleanup() {
  [ -n "${W:-}" ] && sluice_stop "$W" || true
  [ -f "$OUT/proxy.pid" ] && kill "$(cat "$OUT/proxy.pid")" 2>/dev/null || true
  [ -f "$OUT/zone.pid" ] && kill "$(cat "$OUT/zone.pid")" 2>/dev/null || true
}
trap cleanup EXIT

python3 -m dnslib.zoneresolver --zone "$OUT/sender.example.zone" --address 127.0.0.1 --port $ZONE_PORT \
  --tcp --log error > "$OUT/zone.log" 2>&1 &
echo $! > "$OUT/zone.pid"
for _ in $(seq 1 50); do ss -Hlun "sport = :$ZONE_PORT" | grep -q . && break; sleep 0.1; done

proxy_start() {  # DROP STATSFILE
  python3 "$ROOT/benches/dnsproxy.py" --listen 127.0.0.1:$PROXY_PORT --upstream 127.0.0.1:$ZONE_PORT \
    --drop "$1" --stats "$2" > /dev/null 2>> "$OUT/proxy.log" &
  echo $! > "$OUT/proxy.pid"
  for _ in $(seq 1 50); do ss -Hlun "sport = :$PROXY_PORT" | grep -q . && return 0; sleep 0.1; done
  echo "dnsproxy did not start" >&2; return 1
}
proxy_stop() {
  local pid; pid=$(cat "$OUT/proxy.pid"); kill -TERM "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  rm -f "$OUT/proxy.pid"
}

# LAT_N sessions one after another: connect .. QUIT, seconds each (one JSON line).
latency() {  # LABEL MODE RUN
  python3 - "$1" "$2" "$3" "$LAT_N" "$SENDER" "$SIZE" >> "$OUT/latency.jsonl" <<'PY'
import json, smtplib, sys, time
label, mode, run, n, sender, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
body = ("From: <%s>\r\nTo: <user0500@example.com>\r\nSubject: latency probe\r\n\r\n" % sender
        + ("x" * 78 + "\r\n") * (size // 80)).encode()
times, replies = [], []
for i in range(n):
    t0 = time.perf_counter()
    try:
        s = smtplib.SMTP("127.0.0.1", 2535, local_hostname="bench.localdomain", timeout=60)
        s.ehlo()
        s.mail(sender)
        s.rcpt("user0500@example.com")
        code, msg = s.data(body)
        s.quit()
        replies.append(f"{code} {msg.decode(errors='replace')[:60]}")
    except Exception as e:
        replies.append(f"error {e!r}"[:80])
    times.append(round(time.perf_counter() - t0, 4))
print(json.dumps({"label": label, "mode": mode, "run": run, "session_s": times, "replies": replies}))
PY
}

echo "# $(date -u +%FT%TZ) uptime before: $(uptime)" | tee "$OUT/load.txt"
for r in $(seq 1 "$RUNS"); do
  for mode in ${MODES//,/ }; do
    case $mode in
      working) drop=0; n=$COUNT ;;
      lossy) drop=$LOSSY_DROP; n=$COUNT ;;
      blackhole) drop=1.0; n=$BH_COUNT ;;
      *) echo "unknown mode $mode" >&2; exit 1 ;;
    esac
    for v in $VARIANTS; do
      label=${v%%=*}; export SLUICE_BIN=${v#*=}
      W="$OUT/$label"; rm -rf "$W"
      proxy_start "$drop" "$OUT/dns/$label-$mode-$r.json"
      # Spam scoring (and so SPF/DKIM/DMARC) is on by default: only [dns] is set.
      sluice_start "$W" info "" "[dns]
resolver = \"127.0.0.1:$PROXY_PORT\"
timeout = \"$DNS_TIMEOUT\""
      echo "## run $r $mode $label ($SLUICE_BIN) drop=$drop count=$n load=$(cut -d' ' -f1-3 /proc/loadavg)" >&2
      python3 "$BENCH/bench.py" relay --label "$label-$mode" --relay 127.0.0.1:2535 --relay-pid "$(cat "$W/pid")" \
        --rcpt user0500@example.com --sender "$SENDER" --sizes "$SIZE" --conc "$CONC" --count "$n" --runs 1 \
        --pause 0 --drain-timeout 120 --jsonl "$OUT/results.jsonl" --logdir "$OUT/logs" \
        > "$OUT/logs/bench-$label-$mode-$r.txt"
      head -1 "$OUT/logs/bench-$label-$mode-$r.txt" >&2
      latency "$label" "$mode" "$r"
      sluice_stop "$W"
      proxy_stop
      cp "$W/sluice.log" "$OUT/logs/sluice-$label-$mode-$r.log"
      sleep 1
    done
  done
done
echo "# $(date -u +%FT%TZ) uptime after: $(uptime)" | tee -a "$OUT/load.txt"

python3 - "$OUT" <<'PY' | tee "$OUT/summary.md"
import glob, json, os, re, statistics, sys
out = sys.argv[1]
res = [json.loads(l) for l in open(f"{out}/results.jsonl")]
lat = [json.loads(l) for l in open(f"{out}/latency.jsonl")] if os.path.exists(f"{out}/latency.jsonl") else []
def med(v, nd=0):
    v = [x for x in v if x is not None]
    if not v: return "n/a"
    f = f"{{:.{nd}f}}"
    return f"{f.format(statistics.median(v))} [{f.format(min(v))}..{f.format(max(v))}]"
labels, modes = [], []
for x in res:
    l, m = x["label"].rsplit("-", 1)
    x["_l"], x["_m"] = l, m
    if l not in labels: labels.append(l)
    if m not in modes: modes.append(m)
def dns(l, m):
    q = d = n = 0
    for f in glob.glob(f"{out}/dns/{l}-{m}-*.json"):
        s = json.load(open(f)); q += s["queries"]; d += s["dropped"]; n += 1
    return q, d
print("| build | resolver | msgs/run | end-to-end msg/s | accept msg/s | sluice CPU ms/msg | DNS queries/msg | dropped | session s (one at a time) | delivered | foreign CPU |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for l in labels:
    for m in modes:
        rs = [x for x in res if x["_l"] == l and x["_m"] == m]
        if not rs: continue
        q, d = dns(l, m)
        msgs = sum(x["count"] for x in rs) + sum(len(y["session_s"]) for y in lat if y["label"] == l and y["mode"] == m)
        ss = [t for y in lat if y["label"] == l and y["mode"] == m for t in y["session_s"]]
        got = sum(x["sink_received"] for x in rs); want = sum(x["count"] for x in rs)
        print(f"| {l} | {m} | {rs[0]['count']} | {med([x['drain_mps'] for x in rs])} | {med([x['accept_mps'] for x in rs])} | "
              f"{med([x['relay_cpu_ms_per_msg'] for x in rs], 2)} | {q / msgs:.2f} | {d}/{q} | {med(ss, 2)} | {got}/{want} | "
              f"{med([x['foreign_cpu_frac'] for x in rs], 2)} |")
print()
for l in labels:
    w = [x["drain_mps"] or 0 for x in res if x["_l"] == l and x["_m"] == "working"]
    o = [x["drain_mps"] or 0 for x in res if x["_l"] == l and x["_m"] == "lossy"]
    if w and o:
        print(f"- {l}: lossy/working end-to-end = {statistics.median(o) / statistics.median(w):.3f}")
print()
# What the sessions were answered (latency client), per build and mode.
for y in lat:
    rep = sorted(set(r[:40] for r in y["replies"]))
    print(f"- {y['label']} {y['mode']} run {y['run']}: sessions {y['session_s']} replies {rep}")
PY
