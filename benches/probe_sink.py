#!/usr/bin/env python3
"""A next hop for call-ahead benchmarks: a small SMTP server that knows
user0000..user0999@example.com (RCPT 250) and answers every other recipient
550 5.1.1, like a mail store that rejects unknown users.

Counts RCPT commands (the probes) in total and per second, connections, the
most connections open at once and the most RCPTs waiting for their reply at
once. --delay makes each RCPT reply wait (a real server's user lookup), which
is what lets concurrent probes pile up. Accepts DATA too (the message is
thrown away), so it can also be a plain sink. Loopback only, asyncio; handles
pipelined commands in order. On SIGTERM/SIGINT prints the counters as one
JSON object and writes them to --stats.

  probe_sink.py --listen 127.0.0.1:2526 --delay 0.01 --stats probes.json
"""
import argparse
import asyncio
import json
import re
import signal
import sys
import time

KNOWN = re.compile(rb"^user0\d{3}@example\.com$", re.I)
ADDR = re.compile(rb"<([^>]*)>")


class Stats:
    def __init__(self):
        self.t0 = time.time()
        self.rcpt = 0
        self.rcpt_known = 0
        self.rcpt_unknown = 0
        self.per_sec = {}        # int(unix second) -> RCPTs
        self.conns = 0
        self.open = 0
        self.max_open = 0
        self.waiting = 0         # RCPTs received, reply not yet sent
        self.max_waiting = 0
        self.messages = 0
        self.cmds = {}

    def report(self):
        secs = sorted(self.per_sec)
        series = [self.per_sec.get(s, 0) for s in range(secs[0], secs[-1] + 1)] if secs else []
        return {
            "seconds": round(time.time() - self.t0, 3),
            "rcpt_total": self.rcpt, "rcpt_known": self.rcpt_known, "rcpt_unknown": self.rcpt_unknown,
            "rcpt_peak_per_s": max(series) if series else 0,
            "rcpt_active_seconds": len(series),
            "connections": self.conns, "max_open_connections": self.max_open,
            "max_waiting_rcpts": self.max_waiting, "messages": self.messages,
            "commands": self.cmds, "first_rcpt_at": secs[0] if secs else None,
            "rcpt_per_s": series,
        }


async def session(reader, writer, a, st):
    st.conns += 1
    st.open += 1
    st.max_open = max(st.max_open, st.open)
    w = writer.write
    try:
        w(b"220 probe-sink.localdomain ESMTP\r\n")
        await writer.drain()
        while True:
            line = await asyncio.wait_for(reader.readline(), 300)
            if not line:
                break
            verb = line[:4].upper()
            st.cmds[verb.decode(errors="replace")] = st.cmds.get(verb.decode(errors="replace"), 0) + 1
            if verb == b"EHLO":
                w(b"250-probe-sink.localdomain\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 104857600\r\n")
            elif verb == b"HELO" or verb == b"LHLO":
                w(b"250 probe-sink.localdomain\r\n")
            elif verb == b"MAIL":
                w(b"250 2.1.0 Ok\r\n")
            elif verb == b"RCPT":
                st.rcpt += 1
                sec = int(time.time())
                st.per_sec[sec] = st.per_sec.get(sec, 0) + 1
                m = ADDR.search(line)
                addr = m.group(1) if m else b""
                st.waiting += 1
                st.max_waiting = max(st.max_waiting, st.waiting)
                if a.delay > 0:
                    await asyncio.sleep(a.delay)
                st.waiting -= 1
                if KNOWN.match(addr):
                    st.rcpt_known += 1
                    w(b"250 2.1.5 Ok\r\n")
                else:
                    st.rcpt_unknown += 1
                    w(b"550 5.1.1 <" + addr + b">: Recipient address rejected: User unknown\r\n")
            elif verb == b"DATA":
                w(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                await writer.drain()
                while True:
                    l2 = await asyncio.wait_for(reader.readline(), 300)
                    if not l2 or l2 in (b".\r\n", b".\n"):
                        break
                st.messages += 1
                w(b"250 2.0.0 Ok: queued\r\n")
            elif verb in (b"RSET", b"NOOP"):
                w(b"250 2.0.0 Ok\r\n")
            elif verb == b"QUIT":
                w(b"221 2.0.0 Bye\r\n")
                await writer.drain()
                break
            else:
                w(b"502 5.5.2 Command not recognized\r\n")
            await writer.drain()
    except (asyncio.TimeoutError, ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        st.open -= 1
        writer.close()


async def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", default="127.0.0.1:2526")
    ap.add_argument("--delay", type=float, default=0.0, help="seconds before each RCPT reply")
    ap.add_argument("--stats", default="")
    a = ap.parse_args()
    host, _, port = a.listen.rpartition(":")
    if not host.startswith("127."):
        sys.exit("loopback only")
    st = Stats()
    server = await asyncio.start_server(lambda r, w: session(r, w, a, st), host, int(port),
                                        backlog=1024, reuse_address=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"probe_sink on {a.listen}, delay {a.delay}s", file=sys.stderr, flush=True)
    await stop.wait()
    server.close()
    out = json.dumps(st.report())
    print(out, flush=True)
    if a.stats:
        with open(a.stats, "w") as f:
            f.write(out + "\n")


if __name__ == "__main__":
    asyncio.run(main())
