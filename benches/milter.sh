#!/usr/bin/env bash
# Content filtering inside an existing Postfix, two ways side by side in one
# run, one Postfix instance (../shared/bench/10-postfix-setup.sh: 127.0.0.1:2525,
# relaying to smtp-sink on :2526) and one clamd (50-clamd-setup.sh, custom
# EICAR-only database):
#
#   amavis : smtp-source -> Postfix :2525 -> amavisd-new (AMAVIS_PROCS
#            processes, virus checks through clamd, spam checks bypassed:
#            SpamAssassin is not installed) -> Postfix :12025 -> smtp-sink
#            (../shared/bench/61-amavis-bench.sh, once per size)
#   milter : smtp-source -> Postfix :2525 (smtpd_milters = inet:127.0.0.1:8891,
#            milter_default_action = tempfail) -> smtp-sink; `sluice milter`
#            on :8891 streams each body to the same clamd (INSTREAM) and runs
#            MIME decoding, banned attachments, the spam rules and classifier
#            (spam.auth off: SPF/DKIM/DMARC need DNS, which this sandbox lacks)
#
#   postfix: smtp-source -> Postfix :2525 -> smtp-sink, no filter at all (the
#            ceiling of both rows above on this machine; SKIP_BASELINE=1 skips it)
#
# Before the milter rows an EICAR mail through Postfix must get sluice's 554.
# One recipient, a new TCP connection per message (smtp-source), fsync on.
# msg/s: drain_mps (until the sink has every message) and accept_mps (until
# Postfix accepted them; with the milter, after sluice's verdict).
# Output: $OUT/summary.md, $OUT/{amavis,milter,postfix}.jsonl, copied to $RESULTS_DIR.
#   env: COUNT (1000) RUNS (3) SIZES (4096,65536) CONC (20) AMAVIS_PROCS (2, Debian's and the shared setup's default; 8 for the tuned row)
#        OUT (/tmp/sluice-milter) RESULTS_DIR ($ROOT/docs/bench-results)
#        SKIP_AMAVIS=1  SKIP_BASELINE=1  KEEP_RUNNING=1 (leave clamd running)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH:-$(cd "$ROOT/../shared/bench" && pwd)}
OUT=${OUT:-/tmp/sluice-milter}
COUNT=${COUNT:-1000}; RUNS=${RUNS:-3}; SIZES=${SIZES:-4096,65536}; CONC=${CONC:-20}
AMAVIS_PROCS=${AMAVIS_PROCS:-2}
RESULTS_DIR=${RESULTS_DIR:-$ROOT/docs/bench-results}
MILTER_PORT=8891
export LOGDIR=${LOGDIR:-/tmp/bench-anchors}
PF_CONF=/etc/postfix-bench
mkdir -p "$OUT/logs" "$LOGDIR"
rm -rf "$OUT"/*.jsonl "$OUT"/amavis-* "$OUT/summary.md"

# Another benchmark using the shared Postfix instance: do not clobber it.
if postfix -c "$PF_CONF" status >/dev/null 2>&1; then
  echo "milter.sh: $PF_CONF is running (another benchmark?); not starting" >&2
  exit 1
fi

(cd "$ROOT" && cargo build --release -q)

W="$OUT/sluice"
rm -rf "$W"; mkdir -p "$W"
STARTED_PF=0
cleanup() {
  if [ -s "$W/pid" ]; then
    local pid; pid=$(cat "$W/pid")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  if [ "$STARTED_PF" = 1 ]; then
    "$BENCH/10-postfix-setup.sh" stop >/dev/null 2>&1 || true
    "$BENCH/60-amavis-setup.sh" stop >/dev/null 2>&1 || true
  fi
  [ "${KEEP_RUNNING:-0}" = 1 ] || "$BENCH/50-clamd-setup.sh" stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

cpu_of() { python3 -c "import sys; sys.path.insert(0,'$BENCH'); import bench; print(bench.tree_stats($1)[0])"; }
{
  echo "sluice: $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo ' (+ uncommitted changes)')"
  echo "clamd: $(clamd -V)"
  echo "postfix: $(postconf -d -h mail_version 2>/dev/null || echo n/a)"
  echo "COUNT=$COUNT RUNS=$RUNS SIZES=$SIZES CONC=$CONC AMAVIS_PROCS=$AMAVIS_PROCS"
  (RESDIR="$OUT" source "$BENCH/lib.sh" && machine_info)
} > "$OUT/env.txt"

# --- 1. Postfix + amavisd-new + clamd -------------------------------------------------
STARTED_PF=1
if [ "${SKIP_AMAVIS:-0}" != 1 ]; then
  echo "$(date +%T) amavis" >&2
  for size in ${SIZES//,/ }; do
    RESDIR="$OUT/amavis-$size" LABEL="postfix-amavis$AMAVIS_PROCS-clamd" KEEP_RUNNING=1 \
      AMAVIS_MAX_SERVERS=$AMAVIS_PROCS PF_AMAVIS_PROCS=$AMAVIS_PROCS \
      COUNT=$COUNT RUNS=$RUNS SIZES=$size CONC=$CONC "$BENCH/61-amavis-bench.sh"
    cat "$OUT/amavis-$size/postfix-amavis$AMAVIS_PROCS-clamd.jsonl" >> "$OUT/amavis.jsonl"
  done
  "$BENCH/10-postfix-setup.sh" stop
  "$BENCH/60-amavis-setup.sh" stop
else
  "$BENCH/50-clamd-setup.sh" restart
fi
CLAMD_PID=$(cat "$LOGDIR/clamd.pid")
CLAMD_PORT=$(sed -n 's/^TCPSocket //p' "$LOGDIR/clamd-bench.conf")

# --- 2. Postfix + sluice milter (clamd + spam) ----------------------------------------
echo "$(date +%T) milter" >&2
for i in $(seq 0 999); do printf 'user%04d@example.com OK\n' "$i"; done > "$W/recipients"
cat > "$W/sluice.toml" <<TOML
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
[metrics]
enabled = false
[clamd]
endpoints = ["tcp://127.0.0.1:$CLAMD_PORT"]
max_concurrent = 8
[spam]
auth = false
[milter]
listen = ["127.0.0.1:$MILTER_PORT"]
TOML
"$ROOT/target/release/sluice" milter --config "$W/sluice.toml" 2>> "$W/sluice.log" &
echo $! > "$W/pid"
SLUICE_PID=$(cat "$W/pid")
for _ in $(seq 1 100); do ss -Hltn "sport = :$MILTER_PORT" | grep -q . && break; sleep 0.1; done
ss -Hltn "sport = :$MILTER_PORT" | grep -q . || { echo "sluice milter did not start; see $W/sluice.log" >&2; exit 1; }
PF_MAIN_EXTRA="smtpd_milters = inet:127.0.0.1:$MILTER_PORT
milter_protocol = 6
milter_default_action = tempfail" "$BENCH/10-postfix-setup.sh" restart
# sanity: the milter is in the path (EICAR gets sluice's 554 from Postfix)
python3 - <<'PY'
import smtplib, sys
eicar = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
msg = "From: <sender@example.net>\r\nTo: <user0500@example.com>\r\nSubject: eicar\r\n\r\n" + eicar + "\r\n"
with smtplib.SMTP("127.0.0.1", 2525, timeout=60) as s:
    try:
        s.sendmail("sender@example.net", ["user0500@example.com"], msg)
        code, text = 250, b"accepted"
    except smtplib.SMTPDataError as e:
        code, text = e.smtp_code, e.smtp_error
print(f"EICAR check: {code} {text.decode(errors='replace')}", file=sys.stderr)
sys.exit(0 if code == 554 and b"virus" in text else 1)
PY
S0=$(cpu_of "$SLUICE_PID"); C0=$(cpu_of "$CLAMD_PID")
PRE="for i in \$(seq 1 900); do postqueue -c $PF_CONF -p 2>/dev/null | grep -q 'Mail queue is empty' && break; sleep 0.2; done"
python3 "$BENCH/bench.py" relay --label postfix-sluice-milter --relay 127.0.0.1:2525 \
  --relay-pidfile /var/spool/postfix-bench/pid/master.pid \
  --rcpt user0500@example.com --sizes "$SIZES" --conc "$CONC" \
  --count "$COUNT" --runs "$RUNS" --pre-run "$PRE" --pause 2 --drain-timeout 600 \
  --jsonl "$OUT/milter.jsonl" --logdir "$OUT/logs" | tee "$OUT/milter.txt"
S1=$(cpu_of "$SLUICE_PID"); C1=$(cpu_of "$CLAMD_PID")
NMSG=$(( $(grep -c '"label"' "$OUT/milter.jsonl") * COUNT ))
{
  echo "messages relayed: $NMSG"
  echo "sluice milter CPU s: $(python3 -c "print(round($S1-$S0,2))")  ms/msg: $(python3 -c "print(round(($S1-$S0)*1000/$NMSG,2))")"
  echo "clamd CPU s: $(python3 -c "print(round($C1-$C0,2))")  ms/msg: $(python3 -c "print(round(($C1-$C0)*1000/$NMSG,2))")"
  echo "sluice RSS: $(awk '/VmRSS/{print $2" "$3}' /proc/$SLUICE_PID/status)"
} | tee "$OUT/milter.cpu.txt"

# --- 3. Postfix alone (the ceiling) ----------------------------------------------------
if [ "${SKIP_BASELINE:-0}" != 1 ]; then
  echo "$(date +%T) postfix alone" >&2
  "$BENCH/10-postfix-setup.sh" restart
  python3 "$BENCH/bench.py" relay --label postfix-alone --relay 127.0.0.1:2525 \
    --relay-pidfile /var/spool/postfix-bench/pid/master.pid \
    --rcpt user0500@example.com --sizes "$SIZES" --conc "$CONC" \
    --count "$COUNT" --runs "$RUNS" --pre-run "$PRE" --pause 2 --drain-timeout 600 \
    --jsonl "$OUT/postfix.jsonl" --logdir "$OUT/logs" | tee "$OUT/postfix.txt"
fi

# --- summary ----------------------------------------------------------------------------
python3 - "$OUT" > "$OUT/summary.md" <<'PY'
import json, statistics, sys, os
out = sys.argv[1]
def load(name):
    p = os.path.join(out, name)
    return [json.loads(l) for l in open(p)] if os.path.exists(p) else []
rows = {"amavis": load("amavis.jsonl"), "milter": load("milter.jsonl"), "postfix": load("postfix.jsonl")}
def med(rs, size, key):
    v = [r[key] for r in rs if r["size"] == size and r.get("sink_received") == r.get("count")]
    return (statistics.median(v), min(v), max(v), len(v)) if v else None
sizes = sorted({r["size"] for rs in rows.values() for r in rs})
print("| size | Postfix + sluice milter msg/s (drain) | accept | Postfix CPU ms/msg | Postfix + amavisd-new msg/s (drain) | accept | Postfix CPU ms/msg | milter / amavis | Postfix alone msg/s (drain) |")
print("|---|---|---|---|---|---|---|---|---|")
for s in sizes:
    m, a = med(rows["milter"], s, "drain_mps"), med(rows["amavis"], s, "drain_mps")
    ma, aa = med(rows["milter"], s, "accept_mps"), med(rows["amavis"], s, "accept_mps")
    mc, ac = med(rows["milter"], s, "relay_cpu_ms_per_msg"), med(rows["amavis"], s, "relay_cpu_ms_per_msg")
    f = lambda x: f"{x[0]:.0f} [{x[1]:.0f}..{x[2]:.0f}]" if x else "n/a"
    g = lambda x: f"{x[0]:.1f}" if x else "n/a"
    ratio = f"**{m[0]/a[0]:.1f}×**" if m and a else "n/a"
    p = med(rows["postfix"], s, "drain_mps")
    print(f"| {s//1024} KiB | {f(m)} | {f(ma)} | {g(mc)} | {f(a)} | {f(aa)} | {g(ac)} | {ratio} | {f(p)} |")
PY
for size in ${SIZES//,/ }; do
  [ -f "$OUT/amavis-$size/postfix-amavis$AMAVIS_PROCS-clamd.cpu.txt" ] && { echo; echo "amavis $size:"; cat "$OUT/amavis-$size/postfix-amavis$AMAVIS_PROCS-clamd.cpu.txt"; } >> "$OUT/summary.md"
done
{ echo; echo "milter:"; cat "$OUT/milter.cpu.txt"; } >> "$OUT/summary.md"
cat "$OUT/summary.md"
mkdir -p "$RESULTS_DIR"
cp "$OUT/milter.jsonl" "$RESULTS_DIR/milter-sluice.jsonl"
[ -f "$OUT/amavis.jsonl" ] && cp "$OUT/amavis.jsonl" "$RESULTS_DIR/milter-amavis.jsonl"
[ -f "$OUT/postfix.jsonl" ] && cp "$OUT/postfix.jsonl" "$RESULTS_DIR/milter-postfix.jsonl"
cp "$OUT/summary.md" "$RESULTS_DIR/milter-summary.md"
true
