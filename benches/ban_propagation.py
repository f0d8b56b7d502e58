#!/usr/bin/env python3
"""Helpers of benches/ban_propagation.sh.

preload N       RESP commands for redis-cli --pipe: N active bans (100.64/10)
count           stdin: `nft -j list set ...`; prints the number of elements
watch           the kernel's own nftables notifications (netlink group
                NFNLGRP_NFTABLES): prints "wall_ms table ip" for each IPv4
                element added to a set (`nft monitor` re-reads its whole
                cache at each change, far too slow with 300,000 elements)
flood N C HOST PORT...   N offenders (10.220.x.y), C at a time, three
                connections each (one per node in turn), one unknown
                recipient per connection
report OUT NODE...       delays from OUT/stream.txt and OUT/monitor.txt
"""
import asyncio, json, re, socket, statistics, struct, sys, time


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


def attrs(buf):
    """(type, payload) of each netlink attribute in buf."""
    i = 0
    while i + 4 <= len(buf):
        ln, ty = struct.unpack_from("=HH", buf, i)
        if ln < 4:
            return
        yield ty & 0x3FFF, buf[i + 4:i + ln]
        i += (ln + 3) & ~3


def watch():
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)  # NETLINK_NETFILTER
    try:
        sock.setsockopt(socket.SOL_SOCKET, 33, 256 << 20)  # SO_RCVBUFFORCE
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 << 20)
    sock.bind((0, 1 << (7 - 1)))  # NFNLGRP_NFTABLES
    newsetelem = (10 << 8) | 12  # NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWSETELEM
    out = sys.stdout
    while True:
        data = sock.recv(1 << 20)
        ms = time.time() * 1000
        i = 0
        while i + 16 <= len(data):
            ln, ty = struct.unpack_from("=IH", data, i)
            if ln < 16:
                break
            if ty == newsetelem:
                table, ips = "", []
                for at, val in attrs(data[i + 20:i + ln]):  # after nlmsghdr + nfgenmsg
                    if at == 1:
                        table = val.rstrip(b"\0").decode()
                    elif at == 3:
                        for _, elem in attrs(val):
                            for kt, key in attrs(elem):
                                if kt == 1:
                                    for vt, v in attrs(key):
                                        if vt == 1 and len(v) == 4:
                                            ips.append(socket.inet_ntoa(v))
                for ip in ips:
                    out.write(f"{ms:.1f} {table} {ip}\n")
                out.flush()
            i += (ln + 3) & ~3


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
        for cmd in ("EHLO offender.test", "MAIL FROM:<x@offender.test>", "RCPT TO:<nobody@example.com>"):
            w.write((cmd + "\r\n").encode())
            await w.drain()
            rep = await reply()
            if cmd.startswith("RCPT"):
                out = rep[:3]
        # The third offence bans: the kernel may drop this connection's
        # QUIT already.
        w.write(b"QUIT\r\n")
        try:
            await asyncio.wait_for(r.readline(), 1)
        except (OSError, asyncio.TimeoutError):
            pass
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
    for line in open(f"{out}/monitor.txt"):
        parts = line.split()
        if len(parts) == 3 and parts[1].startswith("sluice_") and parts[2].startswith("10.220."):
            seen.setdefault((parts[1][len("sluice_"):], parts[2]), float(parts[0]))
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
    elif cmd == "watch":
        watch()
    elif cmd == "flood":
        asyncio.run(flood(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], [int(p) for p in sys.argv[5:]]))
    elif cmd == "report":
        report(sys.argv[2], sys.argv[3:])
