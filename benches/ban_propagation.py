#!/usr/bin/env python3
"""Helpers of benches/ban_propagation.sh.

preload N       RESP commands for redis-cli --pipe: N active bans (100.64/10)
count           stdin: `nft -j list set ...`; prints the number of elements
stamp           stdin: `nft monitor`; prints each line prefixed with wall ms
flood N C HOST PORT...   N offenders (10.220.x.y), C at a time, three
                connections each (one per node in turn), one unknown
                recipient per connection
report OUT NODE...       delays from OUT/stream.txt and OUT/monitor.txt
"""
import asyncio, json, re, statistics, sys, time


def resp(*args):
    out = [f"*{len(args)}\r\n"]
    for a in args:
        a = str(a)
        out.append(f"${len(a.encode())}\r\n{a}\r\n")
    return "".join(out)


def preload(n):
    now = int(time.time())
    w = sys.stdout.write
    for i in range(n):
        ip = f"100.{64 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"
        net = f"{ip}/32"
        until = now + 3600
        ban = {"net": net, "offence": "unknown_user", "since": now, "until": until,
               "rule": "preload", "strike": 1, "evidence": [now]}
        w(resp("ZADD", "sluice:bans:active", until, net))
        w(resp("HSET", "sluice:bans:data", net, json.dumps({"node": "preload", "ban": ban})))


def count():
    try:
        data = json.load(sys.stdin)
    except ValueError:
        print(0)
        return
    n = 0
    for o in data.get("nftables", []):
        if "set" in o:
            n += len(o["set"].get("elem", []))
    print(n)


def stamp():
    for line in sys.stdin:
        sys.stdout.write(f"{time.time() * 1000:.1f} {line}")
        sys.stdout.flush()


async def one(src, host, port):
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(host, port, local_addr=(src, 0)), 5)
    except (OSError, asyncio.TimeoutError):
        return "noconn"

    async def reply():
        while True:
            line = await asyncio.wait_for(r.readline(), 30)
            if len(line) < 4 or line[3:4] != b"-":
                return line.decode(errors="replace").strip()

    try:
        banner = await reply()
        if not banner.startswith("220"):
            return banner[:3]
        out = ""
        for cmd in ("EHLO offender.test", "MAIL FROM:<x@offender.test>", "RCPT TO:<nobody@example.com>", "QUIT"):
            w.write((cmd + "\r\n").encode())
            await w.drain()
            rep = await reply()
            if cmd.startswith("RCPT"):
                out = rep[:3]
        return out
    except (OSError, asyncio.TimeoutError):
        return "error"
    finally:
        w.close()


async def flood(n, conc, host, ports):
    sem = asyncio.Semaphore(conc)
    tally = {}

    async def offender(i):
        src = f"10.220.{i // 250}.{i % 250 + 1}"
        async with sem:
            for k in range(3):
                port = ports[(i + k) % len(ports)]
                r = await one(src, host, port)
                tally[r] = tally.get(r, 0) + 1

    t = time.time()
    await asyncio.gather(*(offender(i) for i in range(n)))
    print(f"flood: {n} offenders x 3 connections in {time.time() - t:.1f} s; replies to RCPT: {tally}")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(p / 100 * len(xs) + 0.5)) - 1))]


def report(out, nodes):
    entries, cur, key = [], None, None
    for line in open(f"{out}/stream.txt"):
        line = line.rstrip("\n")
        if key is None and re.fullmatch(r"\d+-\d+", line):
            cur = {}
            entries.append(cur)
            continue
        if cur is None:
            continue
        if key is None:
            key = line
        else:
            cur[key] = line
            key = None
    decided = {}
    for e in entries:
        if e.get("op") == "add" and e.get("net", "").startswith("10.220."):
            decided[e["net"].split("/")[0]] = (int(e["ts_ms"]), e["node"])
    seen = {}
    pat = re.compile(r"add element inet sluice_(\w+) banned_v4 \{ (.*) \}")
    for line in open(f"{out}/monitor.txt"):
        ms, _, rest = line.partition(" ")
        m = pat.search(rest)
        if not m:
            continue
        for ip in re.findall(r"\b(10\.220\.\d+\.\d+)\b", m.group(2)):
            seen.setdefault((m.group(1), ip), float(ms))
    alld, own, other, every, missing = [], [], [], [], 0
    for ip, (ts, by) in decided.items():
        worst = 0.0
        for n in nodes:
            t = seen.get((n, ip))
            if t is None:
                missing += 1
                worst = float("inf")
                continue
            d = t - ts
            alld.append(d)
            (own if n == by else other).append(d)
            worst = max(worst, d)
        every.append(worst)
    print(f"## Ban propagation: decision -> kernel set ({len(nodes)} nodes)\n")
    print(f"bans decided: {len(decided)}; (ban, node) pairs seen in a kernel set: {len(alld)}; missing: {missing}\n")
    print("| delay (ms) | samples | p50 | p90 | p99 | max |")
    print("|---|---|---|---|---|---|")
    for name, xs in (("every (ban, node)", alld), ("deciding node", own), ("other nodes", other),
                     ("per ban, slowest node", [x for x in every if x != float("inf")])):
        if xs:
            print(f"| {name} | {len(xs)} | {pct(xs, 50):.1f} | {pct(xs, 90):.1f} | {pct(xs, 99):.1f} | {max(xs):.1f} |")
    if every:
        print(f"\nmean per ban, slowest node: {statistics.fmean([x for x in every if x != float('inf')] or [0]):.1f} ms")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "preload":
        preload(int(sys.argv[2]))
    elif cmd == "count":
        count()
    elif cmd == "stamp":
        stamp()
    elif cmd == "flood":
        asyncio.run(flood(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], [int(p) for p in sys.argv[5:]]))
    elif cmd == "report":
        report(sys.argv[2], sys.argv[3:])
