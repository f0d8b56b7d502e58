#!/usr/bin/env python3
"""A lossy DNS proxy for benchmarks: forwards queries to an upstream server
and drops a configurable fraction of them (never answers those), so a
resolver behind it sees a lossy or, with --drop 1.0, a black-holed path.

UDP and TCP (length-prefixed), loopback only. Dropped queries are decided
per query with random() < --drop (--seed makes it repeatable). Counts
queries, drops, forwarded, answered and upstream timeouts, per transport and
per (qname, qtype); prints them as one JSON object on exit (SIGTERM/SIGINT)
and writes it to --stats too.

  dnsproxy.py --listen 127.0.0.1:15354 --upstream 127.0.0.1:15353 --drop 0.1
"""
import argparse
import asyncio
import json
import random
import signal
import struct
import sys
import time

try:
    from dnslib import DNSRecord, QTYPE
except ImportError:  # counting per name is optional
    DNSRecord = None


def hostport(s):
    host, _, port = s.rpartition(":")
    return host, int(port)


class Stats:
    def __init__(self):
        self.t0 = time.time()
        self.c = {"udp_queries": 0, "udp_dropped": 0, "udp_forwarded": 0, "udp_answered": 0,
                  "udp_upstream_timeouts": 0, "tcp_connections": 0, "tcp_queries": 0,
                  "tcp_dropped": 0, "tcp_answered": 0, "tcp_upstream_errors": 0}
        self.names = {}

    def name(self, data, dropped):
        if DNSRecord is None:
            return
        try:
            q = DNSRecord.parse(data).q
            key = f"{str(q.qname).rstrip('.')}/{QTYPE.get(q.qtype, q.qtype)}"
        except Exception:
            key = "(unparsable)"
        n = self.names.setdefault(key, [0, 0])
        n[0] += 1
        n[1] += dropped

    def report(self, args):
        d = dict(self.c)
        d["drop"] = args.drop
        d["seconds"] = round(time.time() - self.t0, 3)
        d["queries"] = d["udp_queries"] + d["tcp_queries"]
        d["dropped"] = d["udp_dropped"] + d["tcp_dropped"]
        d["by_name"] = {k: {"queries": v[0], "dropped": v[1]} for k, v in sorted(self.names.items())}
        return d


class UdpProxy(asyncio.DatagramProtocol):
    """One upstream socket; queries get a fresh 16-bit id upstream, mapped
    back to (client address, client id) when the answer comes."""

    def __init__(self, args, stats, loop):
        self.args, self.stats, self.loop = args, stats, loop
        self.pending = {}          # upstream id -> (client addr, client id, sent at)
        self.next_id = random.randrange(65536)
        self.transport = None
        self.up = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        if len(data) < 12:
            return
        s = self.stats
        s.c["udp_queries"] += 1
        drop = random.random() < self.args.drop
        s.name(data, int(drop))
        if drop:
            s.c["udp_dropped"] += 1
            return
        for _ in range(65536):
            self.next_id = (self.next_id + 1) & 0xFFFF
            if self.next_id not in self.pending:
                break
        uid = self.next_id
        cid = data[:2]
        self.pending[uid] = (addr, cid, time.monotonic())
        self.up.send(struct.pack("!H", uid) + data[2:])
        s.c["udp_forwarded"] += 1

    def answer(self, data):
        if len(data) < 12:
            return
        uid = struct.unpack("!H", data[:2])[0]
        p = self.pending.pop(uid, None)
        if p is None:
            return
        addr, cid, _ = p
        self.transport.sendto(cid + data[2:], addr)
        self.stats.c["udp_answered"] += 1

    async def reaper(self):
        while True:
            await asyncio.sleep(1)
            now = time.monotonic()
            old = [k for k, v in self.pending.items() if now - v[2] > self.args.upstream_timeout]
            for k in old:
                del self.pending[k]
            self.stats.c["udp_upstream_timeouts"] += len(old)


class Upstream(asyncio.DatagramProtocol):
    def __init__(self, proxy):
        self.proxy = proxy
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def send(self, data):
        self.transport.sendto(data)

    def datagram_received(self, data, addr):
        self.proxy.answer(data)


async def tcp_client(reader, writer, args, stats):
    stats.c["tcp_connections"] += 1
    up_host, up_port = hostport(args.upstream)
    try:
        while True:
            hdr = await reader.readexactly(2)
            (n,) = struct.unpack("!H", hdr)
            data = await reader.readexactly(n)
            stats.c["tcp_queries"] += 1
            drop = random.random() < args.drop
            stats.name(data, int(drop))
            if drop:
                stats.c["tcp_dropped"] += 1
                continue          # never answered; the client times out
            try:
                ur, uw = await asyncio.wait_for(asyncio.open_connection(up_host, up_port), args.upstream_timeout)
                uw.write(hdr + data)
                await uw.drain()
                rhdr = await asyncio.wait_for(ur.readexactly(2), args.upstream_timeout)
                rdata = await asyncio.wait_for(ur.readexactly(struct.unpack("!H", rhdr)[0]), args.upstream_timeout)
                uw.close()
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
                stats.c["tcp_upstream_errors"] += 1
                continue
            writer.write(rhdr + rdata)
            await writer.drain()
            stats.c["tcp_answered"] += 1
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", default="127.0.0.1:15354")
    ap.add_argument("--upstream", default="127.0.0.1:15353")
    ap.add_argument("--drop", type=float, default=0.0, help="fraction of queries dropped (1.0: black hole)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--no-tcp", action="store_true")
    ap.add_argument("--upstream-timeout", type=float, default=5.0)
    ap.add_argument("--stats", default="", help="write the JSON stats here on exit")
    args = ap.parse_args()
    for h in (args.listen, args.upstream):
        if not hostport(h)[0].startswith("127."):
            sys.exit(f"loopback only: {h}")
    if args.seed is not None:
        random.seed(args.seed)
    loop = asyncio.get_running_loop()
    stats = Stats()
    host, port = hostport(args.listen)
    proxy = UdpProxy(args, stats, loop)
    await loop.create_datagram_endpoint(lambda: proxy, local_addr=(host, port))
    _, up = await loop.create_datagram_endpoint(lambda: Upstream(proxy), remote_addr=hostport(args.upstream))
    proxy.up = up
    reaper = asyncio.create_task(proxy.reaper())
    server = None
    if not args.no_tcp:
        server = await asyncio.start_server(lambda r, w: tcp_client(r, w, args, stats), host, port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"dnsproxy {args.listen} -> {args.upstream} drop={args.drop}", file=sys.stderr, flush=True)
    await stop.wait()
    reaper.cancel()
    if server:
        server.close()
    rep = stats.report(args)
    out = json.dumps(rep)
    print(out, flush=True)
    if args.stats:
        with open(args.stats, "w") as f:
            f.write(out + "\n")


if __name__ == "__main__":
    asyncio.run(main())
