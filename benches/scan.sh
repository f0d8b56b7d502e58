#!/usr/bin/env bash
# Virus-scanning benchmark, three paths side by side in one run, one clamd
# (../shared/bench/50-clamd-setup.sh: 127.0.0.1:3310, custom EICAR-only DB):
#
#   clamd-alone : clamd_instream.py -> clamd zINSTREAM, a unique RFC 5322
#                 message per scan, CLAMD_CONC clients   (the scan ceiling)
#   sluice      : smtp-source -> sluice :2535 (clamd in session, latency_budget
#                 "0s": every message scanned before the 250) -> smtp-sink :2526
#                 smtp-source sends the same body in every message (only
#                 Date/Message-Id differ), so clamd's cache can hit on the body.
#   sluice-uniq : the same with a unique body per message (python asyncio
#                 client written to $OUT, bodies from clamd_instream.make_msg,
#                 i.e. the clamd-alone payloads; seeds differ, so no cache hits)
#   amavis      : smtp-source -> Postfix :2525 -> amavisd-new (AMAVIS_PROCS
#                 processes) -> clamd -> Postfix :12025 -> smtp-sink
#                 (../shared/bench/61-amavis-bench.sh, once per size)
#
# Order: amavis (keeps clamd running), then clamd-alone, sluice and sluice-uniq
# against that same clamd process. fsync is on for sluice and Postfix.
# Sizes: smtp-source -l SIZE is the body alone (plus ~150 B of headers);
# clamd_instream/make_msg SIZE includes its headers. One recipient, a new TCP
# connection per message everywhere.
# Output: $OUT/summary.md (tables + ratios), $OUT/scan-{clamd,sluice,amavis}.jsonl,
# copied to $RESULTS_DIR. Takes ~10 min with the defaults on 2 vCPUs.
#   env: COUNT (2000) RUNS (3) SIZES (4096,65536) OUT (/tmp/sluice-scan)
#        CONC (4,20)       sluice sessions (smtp-source -s / client tasks)
#        CLAMD_CONC (4)    clamd-alone clients (the reference's 4)
#        AMAVIS_CONC (20) AMAVIS_PROCS (8) AMAVIS_COUNT (=COUNT)
#        SKIP_AMAVIS=1  SKIP_UNIQUE=1  SKIP_SAME=1 (no clamd-alone same-payload row)
#        SLUICE_MAX_CONCURRENT (8) SLUICE_STREAM (true)  sluice's [clamd] max_concurrent, stream
#        SLUICE_TOML    extra lines appended to the generated sluice.toml, after
#                       its [scan] table (keys without a table header land in [scan])
#        RESULTS_DIR ($ROOT/docs/bench-results) where scan-*.jsonl and
#                    scan-summary.md are copied at the end
#        KEEP_RUNNING=1 leave clamd running at the end
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH:-$(cd "$ROOT/../shared/bench" && pwd)}
OUT=${OUT:-/tmp/sluice-scan}
COUNT=${COUNT:-2000}; RUNS=${RUNS:-3}; SIZES=${SIZES:-4096,65536}; CONC=${CONC:-4,20}
CLAMD_CONC=${CLAMD_CONC:-4}
AMAVIS_CONC=${AMAVIS_CONC:-20}; AMAVIS_PROCS=${AMAVIS_PROCS:-8}; AMAVIS_COUNT=${AMAVIS_COUNT:-$COUNT}
RESULTS_DIR=${RESULTS_DIR:-$ROOT/docs/bench-results}
# the shared scripts keep their pid files and logs here (clamd.pid, amavisd.pid)
export LOGDIR=${LOGDIR:-/tmp/bench-anchors}
CLAMD_PIDFILE=$LOGDIR/clamd.pid
mkdir -p "$OUT/logs" "$LOGDIR"
rm -rf "$OUT"/*.jsonl "$OUT"/amavis-* "$OUT"/*.ticks "$OUT/summary.md"

(cd "$ROOT" && cargo build --release -q)
source "$ROOT/benches/lib.sh"

# --- bookkeeping ------------------------------------------------------------------
W="$OUT/sluice"
rm -rf "$W"   # no stale pid file: cleanup() must only signal the sluice started below
AMAVIS_STARTED=0
cleanup() {
  sluice_stop "$W" || true
  if [ "$AMAVIS_STARTED" = 1 ]; then
    "$BENCH/10-postfix-setup.sh" stop >/dev/null 2>&1 || true
    "$BENCH/60-amavis-setup.sh" stop >/dev/null 2>&1 || true
  fi
  [ "${KEEP_RUNNING:-0}" = 1 ] || "$BENCH/50-clamd-setup.sh" stop >/dev/null 2>&1 || true
}
trap cleanup EXIT
# sample.sh PID: "<clamd CPU ticks> <TCP ListenDrops, system-wide>" on one line.
# A listen-queue drop costs the connecting side a 1 s SYN retransmit; clamd's
# backlog is MaxConnectionQueueLength (15 in Debian's clamd.conf, kept by
# 50-clamd-setup.sh), sluice's 4096, smtp-sink's 1000.
cat > "$OUT/sample.sh" <<'SH'
#!/bin/sh
t=$(awk '{print $14+$15+$16+$17}' "/proc/$1/stat")
d=$(awk '/^TcpExt:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "ListenDrops") c = i; h = 1 } else print $c }' /proc/net/netstat)
echo "$t $d"
SH
listen_drops() { sh "$OUT/sample.sh" self | cut -d' ' -f2; }
LD_PREV=$(listen_drops)
stage() {
  local ld; ld=$(listen_drops)
  echo "$(date +%T) $* (TCP ListenDrops during the previous stage: $((ld - LD_PREV)))" | tee -a "$OUT/stages.txt" >&2
  LD_PREV=$ld
}
: > "$OUT/stages.txt"
{
  echo "sluice: $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo ' (+ uncommitted changes)')"
  echo "clamd: $(clamd -V)"
  echo "postfix: $(postconf -d -h mail_version 2>/dev/null || echo n/a)"
  echo "amavisd-new: $(dpkg-query -W -f '${Version}' amavisd-new 2>/dev/null || echo n/a)"
  echo "COUNT=$COUNT RUNS=$RUNS SIZES=$SIZES CONC=$CONC CLAMD_CONC=$CLAMD_CONC AMAVIS_CONC=$AMAVIS_CONC AMAVIS_PROCS=$AMAVIS_PROCS AMAVIS_COUNT=$AMAVIS_COUNT"
  (RESDIR="$OUT" source "$BENCH/lib.sh" && machine_info)
} > "$OUT/env.txt"

# --- 1. Postfix + amavisd-new + clamd (starts the clamd the other stages use) ----------
if [ "${SKIP_AMAVIS:-0}" != 1 ]; then
  stage "amavis"
  AMAVIS_STARTED=1
  for size in ${SIZES//,/ }; do
    # 61 restarts amavisd (AMAVIS_MAX_SERVERS -> $max_servers), clamd and Postfix
    # (PF_AMAVIS_PROCS -> maxproc of the smtp-amavis transport) and logs
    # amavisd/clamd CPU per message for its runs; one call per size so that
    # CPU breakdown is per size.
    RESDIR="$OUT/amavis-$size" LABEL="postfix-amavis$AMAVIS_PROCS-clamd" KEEP_RUNNING=1 \
      AMAVIS_MAX_SERVERS=$AMAVIS_PROCS PF_AMAVIS_PROCS=$AMAVIS_PROCS \
      COUNT=$AMAVIS_COUNT RUNS=$RUNS SIZES=$size CONC=$AMAVIS_CONC "$BENCH/61-amavis-bench.sh"
    cat "$OUT/amavis-$size/postfix-amavis$AMAVIS_PROCS-clamd.jsonl" >> "$OUT/amavis.jsonl"
  done
  "$BENCH/10-postfix-setup.sh" stop
  "$BENCH/60-amavis-setup.sh" stop
  AMAVIS_STARTED=0
else
  "$BENCH/50-clamd-setup.sh" restart
fi
CLAMD_PID=$(cat "$CLAMD_PIDFILE")
echo "clamd pid $CLAMD_PID, RSS $(awk '/VmRSS/{print $2" "$3}' /proc/$CLAMD_PID/status) before clamd-alone" >> "$OUT/env.txt"

# --- 2. clamd alone (unique payloads; optional same-payload row) ----------------------
stage "clamd-alone"
python3 "$BENCH/clamd_instream.py" --pid "$CLAMD_PID" --sizes "$SIZES" --conc "$CLAMD_CONC" \
  --count "$COUNT" --runs "$RUNS" --jsonl "$OUT/clamd.jsonl" | tee "$OUT/clamd.txt"
if [ "${SKIP_SAME:-0}" != 1 ]; then
  python3 "$BENCH/clamd_instream.py" --pid "$CLAMD_PID" --sizes "$SIZES" --conc "$CLAMD_CONC" --same \
    --count "$COUNT" --runs "$RUNS" --jsonl "$OUT/clamd.jsonl" | tee -a "$OUT/clamd.txt"
fi

# --- 3. sluice + clamd --------------------------------------------------------------
sluice_start "$W" info "" "[clamd]
endpoints = [\"tcp://127.0.0.1:$(sed -n 's/^TCPSocket //p' "$LOGDIR/clamd-bench.conf")\"]
max_concurrent = ${SLUICE_MAX_CONCURRENT:-8}
stream = ${SLUICE_STREAM:-true}
[scan]
latency_budget = \"0s\"
[spam]
enabled = false
${SLUICE_TOML:-}"
PID=$(cat "$W/pid")
# sanity: scanning is on and in session (EICAR must get 554 at end of DATA)
python3 - <<'PY'
import smtplib, sys
eicar = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
msg = "From: <sender@example.net>\r\nTo: <user0500@example.com>\r\nSubject: eicar\r\n\r\n" + eicar + "\r\n"
with smtplib.SMTP("127.0.0.1", 2535, timeout=30) as s:
    try:
        s.sendmail("sender@example.net", ["user0500@example.com"], msg)
        code, text = 250, b"accepted"
    except smtplib.SMTPDataError as e:
        code, text = e.smtp_code, e.smtp_error
print(f"EICAR check: {code} {text.decode(errors='replace')}", file=sys.stderr)
sys.exit(0 if code == 554 else 1)
PY
stage "sluice (smtp-source)"
# 3a. smtp-source (same body each message). clamd's CPU and the TCP listen drops
# are sampled before every run (--pre-run) and once at the end: run k used
# sample[k+1] - sample[k].
python3 "$BENCH/bench.py" relay --label sluice-clamd --relay 127.0.0.1:2535 --relay-pid "$PID" \
  --rcpt user0500@example.com --sizes "$SIZES" --conc "$CONC" --count "$COUNT" --runs "$RUNS" \
  --pre-run "sh $OUT/sample.sh $CLAMD_PID >> $OUT/sluice.ticks" \
  --pause 2 --jsonl "$OUT/sluice-source.jsonl" --logdir "$OUT/logs" | tee "$OUT/sluice.txt"
sh "$OUT/sample.sh" "$CLAMD_PID" >> "$OUT/sluice.ticks"

# 3b. unique bodies
cat > "$OUT/smtp_unique.py" <<'PY'
"""Unique-body SMTP load for benches/scan.sh (generated; edit scan.sh).
Like smtp-source: a new TCP connection per message, EHLO, MAIL, RCPT, DATA,
QUIT one command at a time, CONC sessions. Bodies: clamd_instream.make_msg
(random words, unique per message). Timing, sink, CPU and output fields as
bench.py relay, plus clamd CPU (clamd is not in the relay's process tree)."""
import argparse, asyncio, json, os, random, resource, socket, sys, time

ap = argparse.ArgumentParser()
ap.add_argument("--bench", required=True)
ap.add_argument("--label", default="sluice-clamd-unique")
ap.add_argument("--relay", default="127.0.0.1:2535")
ap.add_argument("--relay-pid", type=int, required=True)
ap.add_argument("--clamd-pid", type=int, default=0)
ap.add_argument("--sink-port", type=int, default=2526)
ap.add_argument("--sizes", default="4096,65536")
ap.add_argument("--conc", default="4,20")
ap.add_argument("--count", type=int, default=2000)
ap.add_argument("--runs", type=int, default=3)
ap.add_argument("--seed-base", type=int, default=7_000_000)
ap.add_argument("--rcpt", default="user0500@example.com")
ap.add_argument("--sender", default="sender@example.net")
ap.add_argument("--source-timeout", type=int, default=300)
ap.add_argument("--drain-timeout", type=int, default=300)
ap.add_argument("--pause", type=float, default=2.0)
ap.add_argument("--logdir", default="/tmp")
ap.add_argument("--jsonl", default="")
a = ap.parse_args()
sys.path.insert(0, a.bench)
import bench, clamd_instream  # noqa: E402

HOST, PORT = a.relay.rsplit(":", 1)
PORT = int(PORT)


def payloads(size, seed):
    rnd = random.Random(seed)
    out = []
    for n in range(a.count):
        m = clamd_instream.make_msg(size, rnd, n)
        m = m.rstrip(b"\r")
        if not m.endswith(b"\r\n"):
            m += b"\r\n"
        out.append(m.replace(b"\r\n.", b"\r\n..") + b".\r\n")
    return out


async def reply(r):
    while True:
        line = await r.readline()
        if not line:
            raise ConnectionError("connection closed")
        if line[3:4] != b"-":
            return int(line[:3]), line.decode(errors="replace").strip()


async def session(msg):
    r, w = await asyncio.open_connection(HOST, PORT)
    try:
        w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        steps = [(None, 220), (b"EHLO bench.localdomain\r\n", 250),
                 (f"MAIL FROM:<{a.sender}>\r\n".encode(), 250),
                 (f"RCPT TO:<{a.rcpt}>\r\n".encode(), 250), (b"DATA\r\n", 354),
                 (msg, 250), (b"QUIT\r\n", 221)]
        for cmd, want in steps:
            if cmd is not None:
                w.write(cmd)
            code, line = await reply(r)
            if code != want:
                raise RuntimeError(line)
    finally:
        w.close()


async def drive(msgs, conc):
    nxt, errs = [0], []

    async def worker():
        while nxt[0] < len(msgs):
            i = nxt[0]
            nxt[0] += 1
            try:
                await session(msgs[i])
            except Exception as e:  # counted, the run goes on
                errs.append(f"{type(e).__name__}: {e}")
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(conc))), a.source_timeout)
    return errs


def listen_drops():
    with open("/proc/net/netstat") as f:
        rows = [l.split() for l in f if l.startswith("TcpExt:")]
    return int(rows[1][rows[0].index("ListenDrops")])


def pcpu(pid):
    return bench.tree_stats(pid)[0] if pid else 0.0


def run_once(size, conc, r):
    msgs = payloads(size, a.seed_base + 1000 * r + size + conc)
    sink = bench.Sink(a.sink_port, a.logdir, f"{a.label}-{size}-{conc}-{r}")
    try:
        la = bench.loadavg()
        r0, c0, s0 = pcpu(a.relay_pid), pcpu(a.clamd_pid), sink.cpu()
        busy0, _ = bench.sys_cpu()
        ld0 = listen_drops()
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        try:
            errs = asyncio.run(drive(msgs, conc))
            rc = 1 if errs else 0
        except asyncio.TimeoutError:
            errs, rc = ["source timeout"], 124
        t_accept = time.perf_counter() - t0
        t_drain, deadline = None, t0 + a.source_timeout + a.drain_timeout
        while True:
            now = time.perf_counter()
            if sink.received() >= a.count:
                t_drain = now - t0
                break
            if now > deadline or (errs and now - t0 > t_accept + 5):
                break
            time.sleep(0.002)
        t_end = time.perf_counter() - t0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        busy1, _ = bench.sys_cpu()
        r1, rss, nproc = bench.tree_stats(a.relay_pid)
        pss = bench.tree_pss_kb(a.relay_pid)
        c1, s1 = pcpu(a.clamd_pid), sink.cpu()
        ld1 = listen_drops()
        got = sink.received()
    finally:
        sink.stop()
    src = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    busy, ncpu = busy1 - busy0, os.cpu_count()
    foreign = busy - (r1 - r0) - (s1 - s0) - src
    return {
        "label": a.label, "mode": "relay", "size": size, "conc": conc, "count": a.count,
        "reuse_conn": False, "unique_bodies": True, "client": "python-asyncio",
        "rc": rc, "errors": len(errs), "stderr_tail": errs[:3],
        "accept_s": round(t_accept, 4), "accept_mps": round(a.count / t_accept, 1),
        "drain_s": round(t_drain, 4) if t_drain else None,
        "drain_mps": round(a.count / t_drain, 1) if t_drain else None,
        "sink_received": got,
        "relay_cpu_s": round(r1 - r0, 3),
        "relay_cpu_ms_per_msg": round((r1 - r0) * 1000 / a.count, 3),
        "relay_rss_kb_after": rss, "relay_pss_kb_after": pss, "relay_nprocs_after": nproc,
        "sink_cpu_s": round(s1 - s0, 3), "source_cpu_s": round(src, 3),
        "clamd_cpu_s": round(c1 - c0, 3),
        "clamd_cpu_ms_per_msg": round((c1 - c0) * 1000 / a.count, 3),
        "sys_busy_s": round(busy, 3), "sys_wall_s": round(t_end, 3),
        "foreign_cpu_frac": round(max(0.0, foreign) / (t_end * ncpu), 3),
        "foreign_cpu_frac_excl_clamd": round(max(0.0, foreign - (c1 - c0)) / (t_end * ncpu), 3),
        "listen_drops": ld1 - ld0,
        "loadavg1_before": la, "ts": time.strftime("%Y-%m-%dT%H:%M:%S"), "run": r,
    }


jf = open(a.jsonl, "a") if a.jsonl else None
for r in range(a.runs):
    for size in [int(x) for x in a.sizes.split(",")]:
        for conc in [int(x) for x in a.conc.split(",")]:
            res = run_once(size, conc, r)
            print(json.dumps(res), flush=True)
            if jf:
                jf.write(json.dumps(res) + "\n")
                jf.flush()
            time.sleep(a.pause)
PY
if [ "${SKIP_UNIQUE:-0}" != 1 ]; then
  stage "sluice (unique bodies)"
  python3 "$OUT/smtp_unique.py" --bench "$BENCH" --label sluice-clamd-unique --relay 127.0.0.1:2535 \
    --relay-pid "$PID" --clamd-pid "$CLAMD_PID" --sizes "$SIZES" --conc "$CONC" --count "$COUNT" \
    --runs "$RUNS" --jsonl "$OUT/sluice-unique.jsonl" --logdir "$OUT/logs" | tee -a "$OUT/sluice.txt"
fi
sluice_stop "$W"; rm -f "$W/pid"
{
  echo "sluice log: $(grep -c '"message_accepted"' "$W/sluice.log" || true) message_accepted," \
    "in-session $(grep '"message_accepted"' "$W/sluice.log" | grep -c 'in-session' || true)," \
    "deferred $(grep '"message_accepted"' "$W/sluice.log" | grep -c 'deferred' || true)," \
    "virus_found $(grep -c '"virus_found"' "$W/sluice.log" || true)," \
    "scan_failed $(grep -c '"scan_failed"' "$W/sluice.log" || true)," \
    "message_rejected $(grep -c '"message_rejected"' "$W/sluice.log" || true) (virus_found includes the EICAR check)"
  if grep '"message_accepted"' "$W/sluice.log" | grep -qv 'in-session' || grep -q '"scan_failed"' "$W/sluice.log"; then
    echo "WARNING: not every message was scanned in session; see $W/sluice.log"
  fi
  echo "clamd RSS after: $(awk '/VmRSS/{print $2" "$3}' /proc/$CLAMD_PID/status)"
} | tee -a "$OUT/env.txt"
cp "$W/sluice.toml" "$OUT/sluice.toml"

# --- 4. merge, summarise, copy -----------------------------------------------------
stage "summary"
python3 - "$OUT" "$CLAMD_CONC" "$AMAVIS_PROCS" <<'PY'
import json, os, re, statistics, sys, glob
out, clamd_conc, procs = sys.argv[1], int(sys.argv[2]), sys.argv[3]
load = lambda p: [json.loads(l) for l in open(p) if l.strip()] if os.path.exists(p) else []

# sluice (smtp-source) rows: attach clamd CPU from the per-run tick samples
src = load(f"{out}/sluice-source.jsonl")
ticks = [[int(x) for x in l.split()] for l in open(f"{out}/sluice.ticks") if l.strip()] if src else []
hz = os.sysconf("SC_CLK_TCK")
for i, r in enumerate(src):
    c = (ticks[i + 1][0] - ticks[i][0]) / hz if i + 1 < len(ticks) else None
    r["unique_bodies"] = False
    r["client"] = "smtp-source"
    if c is not None:
        r["listen_drops"] = ticks[i + 1][1] - ticks[i][1]
        r["clamd_cpu_s"] = round(c, 3)
        r["clamd_cpu_ms_per_msg"] = round(c * 1000 / r["count"], 3)
        r["foreign_cpu_frac_excl_clamd"] = round(
            max(0.0, r["foreign_cpu_frac"] - c / (r["sys_wall_s"] * os.cpu_count())), 3)
sluice = src + load(f"{out}/sluice-unique.jsonl")
with open(f"{out}/scan-sluice.jsonl", "w") as f:
    for r in sluice:
        f.write(json.dumps(r) + "\n")

clamd = load(f"{out}/clamd.jsonl")
for r in clamd:
    r["label"] = "clamd-alone-same" if r["same_payload"] else "clamd-alone"
with open(f"{out}/scan-clamd.jsonl", "w") as f:
    for r in clamd:
        f.write(json.dumps(r) + "\n")

amavis = load(f"{out}/amavis.jsonl")
amcpu = {}
for p in glob.glob(f"{out}/amavis-*/*.cpu.txt"):
    size = int(re.search(r"amavis-(\d+)/", p).group(1))
    t = open(p).read()
    a = re.search(r"amavisd CPU s: \S+\s+ms/msg: (\S+)", t)
    c = re.search(r"clamd\s+CPU s: \S+\s+ms/msg: (\S+)", t)
    amcpu[size] = (float(a.group(1)) if a else None, float(c.group(1)) if c else None)
    for r in amavis:
        if r["size"] == size:
            r["amavisd_cpu_ms_per_msg_all_runs"], r["clamd_cpu_ms_per_msg_all_runs"] = amcpu[size]
with open(f"{out}/scan-amavis.jsonl", "w") as f:
    for r in amavis:
        f.write(json.dumps(r) + "\n")


def med(v):
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else None


def mm(v, nd=0):
    v = [x for x in v if x is not None]
    if not v:
        return "n/a"
    return f"{statistics.median(v):.{nd}f} [{min(v):.{nd}f}..{max(v):.{nd}f}]"


def f(x, nd=2):
    return "n/a" if x is None else f"{x:.{nd}f}"


kib = lambda s: f"{s // 1024} KiB"
sizes = sorted({r["size"] for r in sluice + clamd + amavis})
lines = []
P = lines.append
P("| path | bodies | size | conc | msg/s end-to-end (scans/s for clamd alone) | relay CPU ms/msg | clamd CPU ms/msg | amavisd CPU ms/msg | client CPU ms/msg | foreign CPU (excl. clamd) | runs | failed runs | TCP listen drops |")
P("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for size in sizes:
    for same in (False, True):
        rs = [r for r in clamd if r["size"] == size and r["same_payload"] == same]
        for conc in sorted({r["conc"] for r in rs}):
            c = [r for r in rs if r["conc"] == conc]
            P(f"| clamd alone (zINSTREAM) | {'same' if same else 'unique'} | {kib(size)} | {conc} | "
              f"{mm([r['scans_per_s'] for r in c])} | - | {mm([r['clamd_cpu_ms_per_scan'] for r in c], 2)} | - | "
              f"n/a (python) | n/a | {len(c)} | {sum(1 for r in c if r['errors'] or r['done'] < r['count'])} | n/a |")
    for lab, body in (("sluice-clamd", "same (smtp-source)"), ("sluice-clamd-unique", "unique")):
        rs = [r for r in sluice if r["label"] == lab and r["size"] == size]
        for conc in sorted({r["conc"] for r in rs}):
            c = [r for r in rs if r["conc"] == conc]
            P(f"| sluice + clamd | {body} | {kib(size)} | {conc} | {mm([r['drain_mps'] for r in c])} | "
              f"{mm([r['relay_cpu_ms_per_msg'] for r in c], 2)} | {mm([r.get('clamd_cpu_ms_per_msg') for r in c], 2)} | - | "
              f"{mm([r['source_cpu_s'] * 1000 / r['count'] for r in c], 2)} | "
              f"{mm([r.get('foreign_cpu_frac_excl_clamd') for r in c], 2)} | {len(c)} | "
              f"{sum(1 for r in c if r['rc'] != 0 or r['sink_received'] < r['count'])} | "
              f"{', '.join(str(r.get('listen_drops', '?')) for r in c)} |")
    rs = [r for r in amavis if r["size"] == size]
    for conc in sorted({r["conc"] for r in rs}):
        c = [r for r in rs if r["conc"] == conc]
        a_, c_ = amcpu.get(size, (None, None))
        P(f"| Postfix + amavisd-new ({procs} procs) + clamd | same (smtp-source) | {kib(size)} | {conc} | "
          f"{mm([r['drain_mps'] for r in c])} | {mm([r['relay_cpu_ms_per_msg'] for r in c], 2)} (Postfix) | "
          f"{f(c_)} (all runs) | {f(a_)} (all runs) | {mm([r['source_cpu_s'] * 1000 / r['count'] for r in c], 2)} | "
          f"n/a (amavisd+clamd count as foreign: {mm([r['foreign_cpu_frac'] for r in c], 2)}) | {len(c)} | "
          f"{sum(1 for r in c if r['rc'] != 0 or r['sink_received'] < r['count'])} | n/a |")
P("")
P("TCP listen drops: system-wide TcpExt ListenDrops per run (each costs a connection a 1 s SYN "
  "retransmit; clamd's listen backlog is MaxConnectionQueueLength = 15 here).")
P(f"Ratios use medians. clamd alone = unique payloads, {clamd_conc} clients, same size. "
  f"Targets: sluice / clamd alone >= 0.80, sluice / amavis >= 10.")
P("")
P(f"| size | sluice bodies | sluice conc | sluice msg/s | clamd alone scans/s | sluice / clamd alone | amavis ({procs}) msg/s | sluice / amavis |")
P("|---|---|---|---|---|---|---|---|")
for size in sizes:
    ca = med([r["scans_per_s"] for r in clamd if r["size"] == size and r["conc"] == clamd_conc and not r["same_payload"]])
    am = med([r["drain_mps"] for r in amavis if r["size"] == size])
    for lab, body in (("sluice-clamd-unique", "unique"), ("sluice-clamd", "same (smtp-source)")):
        rs = [r for r in sluice if r["label"] == lab and r["size"] == size]
        for conc in sorted({r["conc"] for r in rs}):
            s = med([r["drain_mps"] for r in rs if r["conc"] == conc])
            ok = lambda x, t: "n/a" if x is None else f"{x:.2f}{' ✓' if x >= t else ' ✗'}"
            P(f"| {kib(size)} | {body} | {conc} | {f(s, 0)} | {f(ca, 0)} | "
              f"{ok(s / ca if s and ca else None, 0.8)} | {f(am, 0)} | {ok(s / am if s and am else None, 10)} |")
open(f"{out}/summary.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
{
  echo; echo "## Raw tables (summarize.py)"
  for j in "$OUT"/scan-clamd.jsonl "$OUT"/scan-sluice.jsonl "$OUT"/scan-amavis.jsonl; do
    [ -s "$j" ] && python3 "$BENCH/summarize.py" "$j"
  done
  echo; echo "## Environment"; echo '```'; cat "$OUT/env.txt"; echo "stages:"; cat "$OUT/stages.txt"; echo '```'
  for c in "$OUT"/amavis-*/*.cpu.txt; do
    [ -f "$c" ] && { echo; echo "$(basename "$(dirname "$c")") CPU:"; echo '```'; cat "$c"; echo '```'; }
  done
  echo; echo "## sluice.toml"; echo '```toml'; cat "$OUT/sluice.toml"; echo '```'
} >> "$OUT/summary.md"

mkdir -p "$RESULTS_DIR"
for n in clamd sluice amavis; do
  [ -s "$OUT/scan-$n.jsonl" ] && cp "$OUT/scan-$n.jsonl" "$RESULTS_DIR/scan-$n.jsonl"
done
cp "$OUT/summary.md" "$RESULTS_DIR/scan-summary.md"
echo "results: $OUT/summary.md, copied to $RESULTS_DIR/scan-*.jsonl and scan-summary.md"
