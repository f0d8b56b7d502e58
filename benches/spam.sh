#!/usr/bin/env bash
# Spam scoring cost (issue 6): end-to-end msg/s of sluice with the content
# pipeline off and on, and Postfix, side by side in one run:
#   smtp-source -> {sluice 127.0.0.1:2535 | Postfix 127.0.0.1:2525} -> smtp-sink 127.0.0.1:2526
#
#   spam-off : [spam] enabled = false (the relay alone)
#   spam-on  : built-in rules + a classifier trained now on
#              ../shared/corpora/spamassassin (sluice learn, model in $OUT,
#              not shipped) + SPF/DKIM/DMARC over [dns] resolver = a local
#              dnslib zone server (127.0.0.1:$DNS_PORT, zone written to $OUT,
#              TTL 3600, SOA in negative answers, so hickory's cache stays
#              warm for the whole run)
#   postfix  : ../shared/bench/20-postfix-bench.sh (no content filter)
#
# smtp-source sends MAIL FROM:<sender@example.net> and "From: <sender@example.net>";
# the zone gives example.net "v=spf1 ip4:127.0.0.0/8 -all" and a DMARC record,
# so every message is spf=pass dkim=none dmarc=pass. Before every measured run
# sluice gets one warm-up message (fills the DNS cache); it is delivered to a
# dumping smtp-sink and checked: Authentication-Results with spf=pass and
# dmarc=pass when spam is on, none when off.
# spam-off and spam-on alternate run by run (off, on, off, on, ...; sluice is
# restarted for each), so slow phases of this shared 2-core box hit both.
# smtp-source's body is synthetic (numbered lines of X), so the rules and the
# classifier see very little text: a floor for real mail. bench.py has no
# message-file option, so real mail goes through smtp_corpus.py (generated
# below, a Python asyncio client like scan.sh's): the corpus files in turn,
# CORPUS_COUNT messages per run, same sluice process, after the smtp-source
# runs. CORPUS_SCAN times `sluice scan --offline` (the same rules and model, no
# auth, no SMTP) over corpus messages and over the smtp-source message, for the
# CPU per scored message without the relay around it.
# With perf installed, one extra, unmeasured run per variant is profiled
# (perf record -g on sluice for PERF_SECONDS) -> $OUT/perf-spam-{on,off}.txt.
# No clamd. fsync on for both relays.
# Output: $OUT/summary.md; copied to $RESULTS_DIR/{sluice-spam-*,spam-postfix}.jsonl and spam-summary.md.
#   env: COUNT (5000) RUNS (3) SIZES (4096,65536) CONC (20) OUT (/tmp/sluice-spam)
#        SKIP_POSTFIX=1    sluice only
#        DNS_PORT (5354)   the zone server's UDP+TCP port on 127.0.0.1
#        CORPUS ($ROOT/../shared/corpora/spamassassin)  training mail
#        CORPUS_COUNT (2000) messages per real-mail run (smtp_corpus.py); 0 = skip
#        CORPUS_SCAN (1000) messages timed with sluice scan --offline; 0 = skip
#        PERF (1 if perf is installed) PERF_SECONDS (5)
#        PERF_CALL_GRAPH (-g; "--call-graph dwarf,16384" for call chains in
#                         this build, which has no frame pointers)
#        SPAM_TOML         extra lines appended to the [spam] table of spam-on
#        RESULTS_DIR ($ROOT/docs/bench-results)
#        BUILD=0           use target/release/sluice as it is (no cargo build)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH:-$(cd "$ROOT/../shared/bench" && pwd)}
OUT=${OUT:-/tmp/sluice-spam}
COUNT=${COUNT:-5000}; RUNS=${RUNS:-3}; SIZES=${SIZES:-4096,65536}; CONC=${CONC:-20}
DNS_PORT=${DNS_PORT:-5354}
CORPUS=${CORPUS:-$ROOT/../shared/corpora/spamassassin}
CORPUS_SCAN=${CORPUS_SCAN:-1000}
CORPUS_COUNT=${CORPUS_COUNT:-2000}
PERF=${PERF:-$(command -v perf >/dev/null && echo 1 || echo 0)}; PERF_SECONDS=${PERF_SECONDS:-5}
PERF_CALL_GRAPH=${PERF_CALL_GRAPH:--g}
RESULTS_DIR=${RESULTS_DIR:-$ROOT/docs/bench-results}
SENDER=sender@example.net; RCPT=user0500@example.com
mkdir -p "$OUT/logs"
rm -rf "$OUT"/*.jsonl "$OUT/summary.md" "$OUT"/perf-* "$OUT/dump"

[ "${BUILD:-1}" = 0 ] || (cd "$ROOT" && cargo build --release -q)
# a private copy: a rebuild of target/ during the run must not change the binary under test
cp "$ROOT/target/release/sluice" "$OUT/sluice-bin"
export SLUICE_BIN=$OUT/sluice-bin
SLUICE=$SLUICE_BIN
source "$ROOT/benches/lib.sh"
W="$OUT/sluice"
rm -rf "$W"
DNS_PID=""
cleanup() {
  sluice_stop "$W" || true
  [ -z "$DNS_PID" ] || kill "$DNS_PID" 2>/dev/null || true
}
trap cleanup EXIT
stage() { echo "$(date +%T) $*" | tee -a "$OUT/stages.txt" >&2; }
: > "$OUT/stages.txt"

# --- environment -------------------------------------------------------------------
{
  echo "sluice: $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- src rules Cargo.toml Cargo.lock || echo ' (+ uncommitted changes)')"
  echo "binary: target/release/sluice of $(date -r "$ROOT/target/release/sluice" -Is), sha256 $(sha256sum < "$SLUICE" | cut -c1-16)"
  echo "postfix: $(postconf -d -h mail_version 2>/dev/null || echo n/a)"
  echo "COUNT=$COUNT RUNS=$RUNS SIZES=$SIZES CONC=$CONC DNS_PORT=$DNS_PORT"
  (RESDIR="$OUT" source "$BENCH/lib.sh" && machine_info)
} > "$OUT/env.txt"

# --- classifier model, trained now ---------------------------------------------------
stage "sluice learn"
"$SLUICE" learn --rebuild --spam "$CORPUS/spam" --spam "$CORPUS/spam_2" \
  --ham "$CORPUS/easy_ham" --ham "$CORPUS/easy_ham_2" --ham "$CORPUS/hard_ham" \
  --out "$OUT/bayes.model" | tee -a "$OUT/env.txt"

find "$CORPUS" -mindepth 2 -type f ! -name cmds ! -name '*.tsv' | sort > "$OUT/corpus-files.txt"

# --- DNS: the sender's domain, TTL 3600 ------------------------------------------------
if ss -Hlun "sport = :$DNS_PORT" | grep -q . || ss -Hltn "sport = :$DNS_PORT" | grep -q .; then
  echo "port $DNS_PORT is in use; set DNS_PORT" >&2; exit 1
fi
cat > "$OUT/bench.zone" <<'ZONE'
; benches/spam.sh: the domain smtp-source sends from (MAIL FROM and From:)
$TTL 3600
example.net.         IN SOA ns.example.net. hostmaster.example.net. 1 3600 600 86400 3600
example.net.         IN NS  ns.example.net.
ns.example.net.      IN A   127.0.0.1
example.net.         IN TXT "v=spf1 ip4:127.0.0.0/8 -all"
_dmarc.example.net.  IN TXT "v=DMARC1; p=reject"
bench.localdomain.   IN TXT "v=spf1 ip4:127.0.0.0/8 -all"
; the TLD, for the negative answer to _dmarc.net (DMARC tree walk), and the
; root, so that every other name (the corpus' From domains) gets a cacheable NXDOMAIN
net.                 IN SOA ns.example.net. hostmaster.example.net. 1 3600 600 86400 3600
.                    IN SOA ns.example.net. hostmaster.example.net. 1 3600 600 86400 3600
ZONE
# dnslib's zoneresolver answers NXDOMAIN without an SOA, which a resolver
# does not cache (RFC 2308); a real recursive resolver's NXDOMAIN carries the
# zone's SOA and is cached. The DMARC tree walk (DMARCbis) also asks
# _dmarc.net, so the server below adds the enclosing zone's SOA to NXDOMAIN
# and NODATA answers, making them cacheable as in production.
# Every query is logged (one line each), to show the cache is warm.
cat > "$OUT/zoneserver.py" <<'EOF'
"""dnslib ZoneResolver + SOA in negative answers (generated by benches/spam.sh)."""
import argparse, time
from dnslib import RCODE
from dnslib.server import DNSLogger, DNSServer
from dnslib.zoneresolver import ZoneResolver

class NegResolver(ZoneResolver):
    def resolve(self, request, handler):
        reply = super().resolve(request, handler)
        if reply.rr:
            return reply
        q = request.q.qname
        if any(q == name for name, _, _ in self.zone):
            reply.header.rcode = RCODE.NOERROR          # NODATA
        soas = [rr for name, t, rr in self.zone if t == "SOA" and (not name.label or q.matchSuffix(name))]
        if soas:
            reply.add_auth(max(soas, key=lambda rr: len(rr.rname.label)))
        return reply

ap = argparse.ArgumentParser()
ap.add_argument("--zone"); ap.add_argument("--address"); ap.add_argument("--port", type=int)
ap.add_argument("--log", default="+request,-reply,-truncated,+error")
a = ap.parse_args()
r = NegResolver(open(a.zone))
log = DNSLogger(a.log, False)
for tcp in (False, True):
    DNSServer(r, port=a.port, address=a.address, logger=log, tcp=tcp).start_thread()
while True:
    time.sleep(3600)
EOF
python3 "$OUT/zoneserver.py" --zone "$OUT/bench.zone" --address 127.0.0.1 --port "$DNS_PORT" \
  > "$OUT/dns.log" 2>&1 < /dev/null &
DNS_PID=$!
python3 - "$DNS_PORT" <<'PY' | tee -a "$OUT/env.txt"
import sys, time
from dnslib import DNSRecord, RCODE
port = int(sys.argv[1])
for q in ("example.net", "_dmarc.example.net"):
    for _ in range(50):
        try:
            r = DNSRecord.parse(DNSRecord.question(q, "TXT").send("127.0.0.1", port, timeout=1))
            break
        except Exception:
            time.sleep(0.1)
    else:
        sys.exit(f"DNS: no answer for {q}")
    txt = [b"".join(x.rdata.data).decode() for x in r.rr]
    print(f"DNS 127.0.0.1:{port} {q} TXT -> {txt} (TTL {[x.ttl for x in r.rr]})")
    if not txt:
        sys.exit("DNS: empty answer")
r = DNSRecord.parse(DNSRecord.question("_dmarc.net", "TXT").send("127.0.0.1", port, timeout=1))
print(f"DNS 127.0.0.1:{port} _dmarc.net TXT -> {RCODE[r.header.rcode]}, authority {[str(x.rname) + ' SOA' for x in r.auth]}")
if not r.auth:
    sys.exit("DNS: negative answer without SOA")
PY
dns_queries() { grep -c 'Request:' "$OUT/dns.log" || true; }
dns_ticks() { awk '{print $14+$15}' "/proc/$DNS_PID/stat"; }

# --- sluice configurations ---------------------------------------------------------------
SPAM_OFF="[spam]
enabled = false"
SPAM_ON="[dns]
resolver = \"127.0.0.1:$DNS_PORT\"
[spam]
enabled = true
builtin_rules = true
bayes_model = \"$OUT/bayes.model\"
auth = true
tag = 5.0
reject = 10.0
${SPAM_TOML:-}"
start_variant() {  # off|on
  local more=$SPAM_OFF; [ "$1" = on ] && more=$SPAM_ON
  sluice_start "$W" info "" "$more"
}

# warm_up VARIANT SIZE: one smtp-source message through sluice into a dumping
# sink; fills the DNS cache and checks the Authentication-Results header.
warm_up() {
  local v=$1 size=$2 d="$OUT/dump/$1-$RANDOM" f i
  mkdir -p "$d"; chmod 777 "$d"
  /usr/sbin/smtp-sink -u nobody -d "$d/m" 127.0.0.1:2526 100 > /dev/null 2>&1 &
  local sink=$!
  for _ in $(seq 1 50); do ss -Hltn "sport = :2526" | grep -q . && break; sleep 0.1; done
  timeout 30 /usr/sbin/smtp-source -m 1 -l "$size" -f "$SENDER" -t "$RCPT" -M bench.localdomain 127.0.0.1:2535
  for i in $(seq 1 100); do f=$(find "$d" -type f | head -1); [ -n "$f" ] && break; sleep 0.1; done
  sleep 0.2
  kill "$sink" 2>/dev/null || true; wait "$sink" 2>/dev/null || true
  [ -n "$f" ] || { echo "warm-up ($v): nothing reached the sink" >&2; return 1; }
  if [ "$v" = on ]; then
    grep -qi '^Authentication-Results:' "$f" && grep -q 'spf=pass' "$f" && grep -q 'dmarc=pass' "$f" || {
      echo "warm-up (on): no spf=pass/dmarc=pass Authentication-Results in $f:" >&2; head -20 "$f" >&2; return 1; }
  else
    ! grep -qi '^Authentication-Results:' "$f" || { echo "warm-up (off): scored although off: $f" >&2; return 1; }
  fi
  cp "$f" "$OUT/delivered-$v-$size.eml"
}

# --- real-mail load (bench.py/smtp-source cannot send a message file) ---------------------
# smtp_corpus.py: CONC sessions, a new TCP connection per message, EHLO, MAIL
# FROM:<sender@example.net>, RCPT, DATA, QUIT one command at a time (as
# smtp-source); bodies are the corpus files in turn (mbox "From " line
# dropped, CRLF, dot-stuffed). A 550 at end of DATA (spam on, score >= 10)
# counts as done: msg/s = messages / time until every session is over and the
# sink has counted every accepted one. A first pass over all files (not
# measured) fills sluice's DNS cache with the From domains' answers.
cat > "$OUT/smtp_corpus.py" <<'EOF2'
"""Real-mail SMTP load for benches/spam.sh (generated; edit spam.sh)."""
import argparse, asyncio, json, os, socket, sys, time

ap = argparse.ArgumentParser()
ap.add_argument("--bench", required=True)
ap.add_argument("--files", required=True)
ap.add_argument("--label", required=True)
ap.add_argument("--relay-pid", type=int, required=True)
ap.add_argument("--conc", type=int, default=20)
ap.add_argument("--count", type=int, default=2000)
ap.add_argument("--run", type=int, default=0)
ap.add_argument("--sender", default="sender@example.net")
ap.add_argument("--rcpt", default="user0500@example.com")
ap.add_argument("--logdir", default="/tmp")
ap.add_argument("--jsonl", default="")
a = ap.parse_args()
sys.path.insert(0, a.bench)
import bench  # noqa: E402


def payload(path):
    m = open(path, "rb").read()
    if m.startswith(b"From "):
        m = m.split(b"\n", 1)[1]
    m = m.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if not m.endswith(b"\r\n"):
        m += b"\r\n"
    if m.startswith(b"."):
        m = b"." + m
    return m.replace(b"\r\n.", b"\r\n..") + b".\r\n"


files = [l.strip() for l in open(a.files) if l.strip()]
bodies = [payload(p) for p in files]


async def reply(r):
    while True:
        line = await r.readline()
        if not line:
            raise ConnectionError("connection closed")
        if line[3:4] != b"-":
            return int(line[:3]), line.decode(errors="replace").strip()


async def session(msg, out):
    r, w = await asyncio.open_connection("127.0.0.1", 2535)
    try:
        w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for cmd, want in ((None, 220), (b"EHLO bench.localdomain\r\n", 250),
                          (f"MAIL FROM:<{a.sender}>\r\n".encode(), 250),
                          (f"RCPT TO:<{a.rcpt}>\r\n".encode(), 250), (b"DATA\r\n", 354), (msg, None)):
            if cmd is not None:
                w.write(cmd)
            code, line = await reply(r)
            if want is None:
                out[code // 100] = out.get(code // 100, 0) + 1
                if code // 100 not in (2, 5):
                    raise RuntimeError(line)
            elif code != want:
                raise RuntimeError(line)
        w.write(b"QUIT\r\n")
        await reply(r)
    finally:
        w.close()


async def drive(msgs, conc):
    nxt, errs, out = [0], [], {}

    async def worker():
        while nxt[0] < len(msgs):
            i = nxt[0]
            nxt[0] += 1
            try:
                await session(msgs[i], out)
            except Exception as e:
                errs.append(f"{type(e).__name__}: {e}")
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(conc))), 600)
    return errs, out


def one(msgs, tag):
    sink = bench.Sink(2526, a.logdir, tag)
    try:
        r0, s0 = bench.tree_stats(a.relay_pid)[0], sink.cpu()
        busy0, _ = bench.sys_cpu()
        c0 = os.times()
        t0 = time.perf_counter()
        errs, out = asyncio.run(drive(msgs, a.conc))
        t_accept = time.perf_counter() - t0
        want = out.get(2, 0)
        t_drain = None
        while time.perf_counter() - t0 < t_accept + 120:
            if sink.received() >= want:
                t_drain = time.perf_counter() - t0
                break
            time.sleep(0.002)
        t_end = time.perf_counter() - t0
        busy1, _ = bench.sys_cpu()
        c1 = os.times()
        r1, rss, _ = bench.tree_stats(a.relay_pid)
        s1, got = sink.cpu(), sink.received()
    finally:
        sink.stop()
    src = (c1.user + c1.system) - (c0.user + c0.system)
    n = len(msgs)
    foreign = busy1 - busy0 - (r1 - r0) - (s1 - s0) - src
    return {
        "label": a.label, "mode": "relay", "corpus": True, "size": sum(map(len, msgs)) // n, "conc": a.conc,
        "count": n, "client": "python-asyncio", "rc": 1 if errs else 0, "errors": len(errs),
        "stderr_tail": errs[:3], "replies_2xx": out.get(2, 0), "replies_5xx": out.get(5, 0),
        "accept_s": round(t_accept, 4), "accept_mps": round(n / t_accept, 1),
        "drain_s": round(t_drain, 4) if t_drain else None,
        "drain_mps": round(n / t_drain, 1) if t_drain else None,
        "sink_received": got, "relay_cpu_s": round(r1 - r0, 3),
        "relay_cpu_ms_per_msg": round((r1 - r0) * 1000 / n, 3), "relay_rss_kb_after": rss,
        "sink_cpu_s": round(s1 - s0, 3), "source_cpu_s": round(src, 3),
        "source_cpu_ms_per_msg": round(src * 1000 / n, 3),
        "sys_busy_s": round(busy1 - busy0, 3), "sys_wall_s": round(t_end, 3),
        "foreign_cpu_frac": round(max(0.0, foreign) / (t_end * os.cpu_count()), 3),
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S"), "run": a.run,
    }


warm = one(bodies, f"{a.label}-warm-{a.run}")
print(f"warm-up pass: {warm['count']} msgs, {warm['replies_2xx']} x 2xx, {warm['replies_5xx']} x 5xx, "
      f"errors {warm['errors']} {warm['stderr_tail']}", file=sys.stderr)
time.sleep(1)
res = one([bodies[i % len(bodies)] for i in range(a.count)], f"{a.label}-{a.run}")
print(json.dumps(res), flush=True)
if a.jsonl:
    with open(a.jsonl, "a") as f:
        f.write(json.dumps(res) + "\n")
EOF2

bench_variant() {  # VARIANT RUN
  local v=$1 r=$2 pid q0 t0
  start_variant "$v"; pid=$(cat "$W/pid")
  for size in ${SIZES//,/ }; do warm_up "$v" "$size"; done
  q0=$(dns_queries); t0=$(dns_ticks)
  python3 "$BENCH/bench.py" relay --label "sluice-spam-$v" --relay 127.0.0.1:2535 --relay-pid "$pid" \
    --rcpt "$RCPT" --sender "$SENDER" --sizes "$SIZES" --conc "$CONC" --count "$COUNT" --runs 1 \
    --pause 2 --jsonl "$OUT/run.jsonl" --logdir "$OUT/logs" | tee -a "$OUT/sluice-spam-$v.txt"
  # bench.py --runs 1 numbers every run 0; record ours, plus the DNS work done meanwhile
  python3 - "$OUT/run.jsonl" "$r" "$(( $(dns_queries) - q0 ))" "$(( $(dns_ticks) - t0 ))" \
    >> "$OUT/sluice-spam-$v.jsonl" <<'PY'
import json, os, sys
path, run, q, ticks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for line in open(path):
    d = json.loads(line)
    d["run"] = run
    d["dns_queries_during_runs"] = q
    d["dns_cpu_s_during_runs"] = ticks / os.sysconf("SC_CLK_TCK")
    print(json.dumps(d))
PY
  rm -f "$OUT/run.jsonl"
  if [ "$CORPUS_COUNT" -gt 0 ]; then
    python3 "$OUT/smtp_corpus.py" --bench "$BENCH" --files "$OUT/corpus-files.txt" --label "sluice-spam-$v-corpus" \
      --relay-pid "$pid" --conc "${CONC%%,*}" --count "$CORPUS_COUNT" --run "$r" --logdir "$OUT/logs" \
      --jsonl "$OUT/sluice-spam-$v-corpus.jsonl" | tee -a "$OUT/sluice-spam-$v.txt"
  fi
  sluice_stop "$W"
  echo "sluice-spam-$v run $r: spam_scored events $(grep -c '"spam_scored"' "$W/sluice.log" || true)," \
    "message_accepted $(grep -c '"message_accepted"' "$W/sluice.log" || true)" | tee -a "$OUT/stages.txt" >&2
  mv "$W/sluice.log" "$OUT/logs/sluice-spam-$v-$r.log"
}

# --- 1+2. sluice, spam off and on, alternating -------------------------------------------
for r in $(seq 0 $((RUNS - 1))); do
  for v in off on; do
    stage "sluice spam-$v, run $r"
    bench_variant "$v" "$r"
  done
done
cp "$W/sluice.toml" "$OUT/sluice-spam-on.toml"

# --- profile (one extra run per variant, not in the tables) ----------------------------------
if [ "$PERF" = 1 ]; then
  for v in on off; do
    stage "perf, spam-$v"
    start_variant "$v"; pid=$(cat "$W/pid")
    size=${SIZES%%,*}
    warm_up "$v" "$size"
    python3 "$BENCH/bench.py" relay --label "perf-spam-$v" --relay 127.0.0.1:2535 --relay-pid "$pid" \
      --rcpt "$RCPT" --sender "$SENDER" --sizes "$size" --conc "${CONC%%,*}" --count $((COUNT * 2)) --runs 1 \
      --pause 0 --logdir "$OUT/logs" > "$OUT/perf-spam-$v.bench.txt" &
    bp=$!
    sleep 1
    perf record -q -e cpu-clock -F 999 $PERF_CALL_GRAPH -p "$pid" -o "$OUT/perf-spam-$v.data" -- sleep "$PERF_SECONDS" 2> /dev/null || true
    wait "$bp" || true
    sluice_stop "$W"
    perf report -i "$OUT/perf-spam-$v.data" --stdio --no-children --no-inline --percent-limit 0.7 \
      --sort dso,symbol -g none 2> /dev/null | grep -v '^$' | head -60 > "$OUT/perf-spam-$v.txt" || true
    perf report -i "$OUT/perf-spam-$v.data" --stdio --children --no-inline --percent-limit 3 \
      --sort symbol -g none 2> /dev/null | grep -v '^$' | head -60 > "$OUT/perf-spam-$v.children.txt" || true
  done
fi
kill "$DNS_PID" 2>/dev/null || true; DNS_PID=""

# --- CPU per scored message without SMTP (sluice scan --offline) ------------------------------
if [ "$CORPUS_SCAN" -gt 0 ]; then
  stage "sluice scan --offline"
  cp "$OUT/sluice-spam-on.toml" "$W/scan.toml"   # relative paths (recipients) resolve from $W
  SYN="$OUT/delivered-off-${SIZES%%,*}.eml"       # the smtp-source message as sluice delivered it
  shuf -n "$CORPUS_SCAN" --random-source=<(yes) "$OUT/corpus-files.txt" > "$OUT/scan-files.txt"
  n=$(wc -l < "$OUT/scan-files.txt")
  for i in $(seq 1 "$n"); do echo "$SYN"; done > "$OUT/scan-synthetic.txt"
  # scan_cpu FILELIST -> "cpu wall" seconds of one sluice scan process over the files
  # (sluice scan exits non-zero for spam; the last line of -o is the figures)
  scan_cpu() {
    /usr/bin/time -f '%U %S %e' -o "$OUT/time.txt" \
      xargs -a "$1" -d '\n' "$SLUICE" scan --offline --config "$W/scan.toml" > /dev/null 2>&1 || true
    tail -1 "$OUT/time.txt" | awk '{printf "%.3f %.3f\n", $1+$2, $3}'
  }
  head -1 "$OUT/scan-synthetic.txt" > "$OUT/scan-one.txt"
  read -r one_cpu _ < <(scan_cpu "$OUT/scan-one.txt")   # start-up: rules compiled, model loaded
  read -r corp_cpu corp_wall < <(scan_cpu "$OUT/scan-files.txt")
  read -r syn_cpu syn_wall < <(scan_cpu "$OUT/scan-synthetic.txt")
  corp_bytes=$(xargs -a "$OUT/scan-files.txt" -d '\n' cat | wc -c)
  per() { awk -v a="$1" -v b="$one_cpu" -v n="$n" 'BEGIN { printf "%.3f", (a - b) * 1000 / (n - 1) }'; }
  {
    echo "start-up (1 message): cpu ${one_cpu}s"
    echo "corpus: $n messages from $(basename "$CORPUS") (all folders, mean $((corp_bytes / n)) B): $(per "$corp_cpu") ms CPU per message after start-up (process: cpu ${corp_cpu}s wall ${corp_wall}s)"
    echo "synthetic: $n x the smtp-source message ($(wc -c < "$SYN") B as delivered): $(per "$syn_cpu") ms CPU per message after start-up (process: cpu ${syn_cpu}s wall ${syn_wall}s)"
  } | tee "$OUT/scan-offline.txt"
  if [ "$PERF" = 1 ]; then   # where scoring real mail spends its time (start-up included, ~15 %)
    perf record -q -e cpu-clock -F 999 -g -o "$OUT/perf-scan-corpus.data" -- \
      xargs -a "$OUT/scan-files.txt" -d '\n' "$SLUICE" scan --offline --config "$W/scan.toml" > /dev/null 2>&1 || true
    perf report -i "$OUT/perf-scan-corpus.data" --stdio --no-children --no-inline --percent-limit 0.7 \
      --comm sluice-bin --sort dso,symbol -g none 2> /dev/null | grep -v '^$' | head -60 > "$OUT/perf-scan-corpus.txt" || true
  fi
fi

# --- 3. Postfix, same machine, same run ---------------------------------------------------------
if [ "${SKIP_POSTFIX:-0}" != 1 ]; then
  stage "postfix"
  RESDIR="$OUT" LABEL=spam-postfix COUNT=$COUNT RUNS=$RUNS SIZES=$SIZES CONC=$CONC "$BENCH/20-postfix-bench.sh"
fi
stage "done"

# --- summary -------------------------------------------------------------------------------------
python3 - "$OUT" "$CORPUS_SCAN" <<'PY' | tee "$OUT/summary.md"
import json, os, statistics, sys
out, nscan = sys.argv[1], int(sys.argv[2])
def load(name):
    p = os.path.join(out, name)
    return [json.loads(l) for l in open(p) if l.strip()] if os.path.exists(p) else []
off, on, pf = load("sluice-spam-off.jsonl"), load("sluice-spam-on.jsonl"), load("spam-postfix.jsonl")
med = lambda v: statistics.median(v) if v else None
def mm(v, nd=0):
    v = [x for x in v if x is not None]
    return f"{med(v):.{nd}f} [{min(v):.{nd}f}..{max(v):.{nd}f}]" if v else "n/a"
f = lambda x, nd=0: "n/a" if x is None else f"{x:.{nd}f}"
kib = lambda s: f"{s // 1024} KiB"
offc, onc = load("sluice-spam-off-corpus.jsonl"), load("sluice-spam-on-corpus.jsonl")
print("## Spam scoring cost: sluice spam off / on, Postfix (end-to-end msg/s, median [min..max])\n")
print("| load | size | conc | sluice spam off | sluice spam on | on / off (paired runs) | ≥ 0.75? | sluice CPU ms/msg off | on | added | Postfix | spam on / Postfix | Postfix CPU ms/msg | foreign CPU off / on |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
def row(load_name, size_s, a, b, p):
    mb = med([r["drain_mps"] for r in b if r["drain_mps"]])
    paired = [y["drain_mps"] / x["drain_mps"] for x in a for y in b
              if x["run"] == y["run"] and x["drain_mps"] and y["drain_mps"]]
    ratio = med(paired)
    ca, cb = med([r["relay_cpu_ms_per_msg"] for r in a]), med([r["relay_cpu_ms_per_msg"] for r in b])
    mp = med([r["drain_mps"] for r in p if r["drain_mps"]])
    ok = "n/a" if ratio is None else ("**yes**" if ratio >= 0.75 else "**no**")
    rng = f" [{min(paired):.2f}..{max(paired):.2f}]" if paired else ""
    print(f"| {load_name} | {size_s} | {a[0]['conc'] if a else b[0]['conc']} | {mm([r['drain_mps'] for r in a])} | {mm([r['drain_mps'] for r in b])} | "
          f"{f(ratio, 2)}{rng} | {ok} | {f(ca, 3)} | {f(cb, 3)} | {f(cb - ca if ca is not None and cb is not None else None, 3)} | "
          f"{mm([r['drain_mps'] for r in p]) if p else 'n/a'} | {f(mb / mp if mb and mp else None, 1)}{'×' if mb and mp else ''} | "
          f"{f(med([r['relay_cpu_ms_per_msg'] for r in p]), 2)} | "
          f"{f(med([r['foreign_cpu_frac'] for r in a]), 2)} / {f(med([r['foreign_cpu_frac'] for r in b]), 2)} |")
for size, conc in sorted({(r["size"], r["conc"]) for r in off + on}):
    sel = lambda rows: [r for r in rows if r["size"] == size and r["conc"] == conc]
    row("smtp-source", kib(size), sel(off), sel(on), sel(pf))
if offc or onc:
    row("corpus (Python client)", f"mean {(offc or onc)[0]['size']} B", offc, onc, [])
fails = [r for r in off + on + pf if r["rc"] != 0 or r["sink_received"] < r["count"]]
fails += [r for r in offc + onc if r["rc"] != 0 or r["drain_mps"] is None]
print(f"\nFailed runs (client error or sink short): {len(fails)}")
if offc or onc:
    print("Corpus runs, replies to DATA (spam on: score >= 10 gets 550): "
          + "; ".join(f"{r['label']} run {r['run']}: {r['replies_2xx']} x 250, {r['replies_5xx']} x 550" for r in offc + onc))
    print("Python client CPU ms/msg (median): " + f(med([r["source_cpu_ms_per_msg"] for r in offc + onc]), 3))
q = sorted({(r["run"], r["dns_queries_during_runs"], r["dns_cpu_s_during_runs"]) for r in on})
print("DNS queries reaching the zone server during the spam-on smtp-source runs (per run, all sizes): "
      + ", ".join(f"{x[1]} ({x[2]:.2f} s CPU)" for x in q))
p = os.path.join(out, "scan-offline.txt")
if nscan and os.path.exists(p):
    print("\n`sluice scan --offline` (the same rules and classifier, no auth, no SMTP), one process:\n")
    for line in open(p):
        print(f"- {line.strip()}")
PY
{
  echo; echo "## Raw tables (summarize.py)"
  python3 "$BENCH/summarize.py" "$OUT"/sluice-spam-o*.jsonl \
    $( [ -s "$OUT/spam-postfix.jsonl" ] && echo "$OUT/spam-postfix.jsonl" )
  echo; echo "## Environment"; echo '```'; cat "$OUT/env.txt"; echo "stages:"; cat "$OUT/stages.txt"; echo '```'
  echo; echo "## sluice.toml (spam on)"; echo '```toml'; cat "$OUT/sluice-spam-on.toml"; echo '```'
  echo; echo "## zone"; echo '```'; cat "$OUT/bench.zone"; echo '```'
  for v in spam-on spam-off scan-corpus; do
    [ -s "$OUT/perf-$v.txt" ] && { echo; echo "## perf, $v (self time)"; echo '```'; cat "$OUT/perf-$v.txt"; echo '```'; }
  done
} >> "$OUT/summary.md"

mkdir -p "$RESULTS_DIR"
for n in sluice-spam-off sluice-spam-on sluice-spam-off-corpus sluice-spam-on-corpus spam-postfix; do
  [ -s "$OUT/$n.jsonl" ] && cp "$OUT/$n.jsonl" "$RESULTS_DIR/$n.jsonl"
done
cp "$OUT/summary.md" "$RESULTS_DIR/spam-summary.md"
echo "results: $OUT/summary.md, copied to $RESULTS_DIR/{sluice-spam-*,spam-postfix}.jsonl and spam-summary.md"
