#!/usr/bin/env python3
"""Dictionary attack on a relay's RCPT for a fixed time (loopback only).

CLIENTS concurrent sessions, each from the next of IPS source addresses
(127.1.0.1, 127.1.0.2, ...; all of 127/8 is local on Linux): banner, EHLO,
MAIL FROM, then RCPT TO:<random>@DOMAIN, one at a time (no pipelining), as
fast as the replies come, RCPTS_PER_CONN per session (a 421 ends it early),
QUIT, reconnect from the next address; until DURATION seconds are up.

Alongside, a "legitimate" sender (--legit-interval): one session every so
often from its own address (127.2.0.x), RCPT TO a real recipient that has
not been asked about yet (user0000, user0001, ... @DOMAIN): does real mail
still get its 250 during the attack?

Output: one JSON object (stdout and --json): RCPTs sent/answered, rate,
replies by code ("550 5.1.1", "450 4.7.1", ...) with a sample text, per
second series, the legit sessions' replies, and the relay's CPU (--relay-pid).
"""
import argparse
import asyncio
import json
import os
import random
import string
import sys
import time

CLK = os.sysconf("SC_CLK_TCK")


def cpu_of(pid):
    if not pid:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
    except OSError:
        return 0.0
    fl = st[st.rfind(")") + 2:].split()
    return (int(fl[11]) + int(fl[12])) / CLK


class Tally:
    def __init__(self):
        self.rcpt_sent = 0
        self.rcpt_answered = 0
        self.sessions = 0
        self.connect_errors = 0
        self.banners = {}
        self.replies = {}
        self.samples = {}
        self.per_sec = {}
        self.other_errors = {}

    def reply(self, line):
        parts = line.split(" ", 2)
        key = parts[0]
        if len(parts) > 1 and len(parts[1]) >= 5 and parts[1][1] == ".":
            key += " " + parts[1]
        self.replies[key] = self.replies.get(key, 0) + 1
        self.samples.setdefault(key, line[:120])
        s = int(time.time())
        self.per_sec[s] = self.per_sec.get(s, 0) + 1


async def read_reply(reader, timeout):
    """The last line of a (multi-line) reply, as text."""
    while True:
        line = await asyncio.wait_for(reader.readline(), timeout)
        if not line:
            raise ConnectionError("closed")
        if len(line) < 4 or line[3:4] != b"-":
            return line.decode(errors="replace").rstrip("\r\n")


def rand_local(n=10):
    return "".join(random.choices(string.ascii_lowercase + string.digits, k=n))


async def attacker(a, t, ips, deadline, host, port):
    while time.monotonic() < deadline:
        src = ips[t.sessions % len(ips)]
        t.sessions += 1
        writer = None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, local_addr=(src, 0)), 10)
            left = lambda: max(1.0, deadline - time.monotonic() + 5)
            banner = await read_reply(reader, left())
            code = banner[:3]
            t.banners[code] = t.banners.get(code, 0) + 1
            if code != "220":
                continue
            writer.write(b"EHLO attacker.example\r\n")
            r = await read_reply(reader, left())
            writer.write(b"MAIL FROM:<list@attacker.example>\r\n")
            r = await read_reply(reader, left())
            if not r.startswith("250"):
                t.reply("MAIL:" + r)
                continue
            for _ in range(a.rcpts_per_conn):
                if time.monotonic() >= deadline:
                    break
                writer.write(f"RCPT TO:<{rand_local()}@{a.domain}>\r\n".encode())
                t.rcpt_sent += 1
                r = await read_reply(reader, left())
                t.rcpt_answered += 1
                t.reply(r)
                if r.startswith("421"):
                    break
            writer.write(b"QUIT\r\n")
            try:
                await read_reply(reader, 2)
            except Exception:
                pass
        except (OSError, ConnectionError, asyncio.TimeoutError) as e:
            k = type(e).__name__
            if writer is None:
                t.connect_errors += 1
            t.other_errors[k] = t.other_errors.get(k, 0) + 1
            await asyncio.sleep(0.01)
        finally:
            if writer is not None:
                writer.close()


async def legit(a, deadline, host, port, out):
    i = 0
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        src = f"127.2.{i // 250}.{i % 250 + 1}"
        rcpt = f"user{i % 1000:04d}@{a.domain}"
        rec = {"at": round(time.time(), 3), "src": src, "rcpt": rcpt}
        writer = None
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, local_addr=(src, 0)), 10)
            await read_reply(reader, 60)
            writer.write(b"EHLO legit.example\r\n")
            await read_reply(reader, 60)
            writer.write(b"MAIL FROM:<alice@sender.example>\r\n")
            await read_reply(reader, 60)
            writer.write(f"RCPT TO:<{rcpt}>\r\n".encode())
            rec["reply"] = (await read_reply(reader, 60))[:100]
            writer.write(b"QUIT\r\n")
        except Exception as e:
            rec["reply"] = f"error {type(e).__name__}"
        finally:
            if writer is not None:
                writer.close()
        rec["s"] = round(time.perf_counter() - t0, 4)
        out.append(rec)
        i += 1
        await asyncio.sleep(max(0.0, a.legit_interval - (time.perf_counter() - t0)))


async def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="127.0.0.1:2535")
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--ips", type=int, default=1000, help="source addresses 127.1.x.y")
    ap.add_argument("--rcpts-per-conn", type=int, default=10)
    ap.add_argument("--domain", default="example.com")
    ap.add_argument("--legit-interval", type=float, default=1.0, help="0: no legit sender")
    ap.add_argument("--relay-pid", type=int, default=0)
    ap.add_argument("--label", default="")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    host, _, port = a.target.rpartition(":")
    if not host.startswith("127."):
        sys.exit("loopback only")
    port = int(port)
    ips = [f"127.1.{i // 250}.{i % 250 + 1}" for i in range(a.ips)]
    t = Tally()
    legit_out = []
    cpu0, t0, w0 = cpu_of(a.relay_pid), time.time(), time.monotonic()
    with open("/proc/stat") as f:
        v0 = [int(x) for x in f.readline().split()[1:]]
    deadline = w0 + a.duration
    tasks = [asyncio.create_task(attacker(a, t, ips, deadline, host, port)) for _ in range(a.clients)]
    if a.legit_interval > 0:
        tasks.append(asyncio.create_task(legit(a, deadline, host, port, legit_out)))
    done, pending = await asyncio.wait(tasks, timeout=a.duration + 30)
    for p in pending:
        p.cancel()
    wall = time.monotonic() - w0
    cpu1 = cpu_of(a.relay_pid)
    with open("/proc/stat") as f:
        v1 = [int(x) for x in f.readline().split()[1:]]
    d = [y - x for x, y in zip(v0, v1)]
    busy = (sum(d[:8]) - d[3] - d[4]) / max(1, sum(d[:8]))
    secs = sorted(t.per_sec)
    series = [t.per_sec.get(s, 0) for s in range(secs[0], secs[-1] + 1)] if secs else []
    res = {
        "label": a.label, "clients": a.clients, "duration_s": a.duration, "wall_s": round(wall, 2),
        "ips": a.ips, "rcpts_per_conn": a.rcpts_per_conn,
        "sessions": t.sessions, "connect_errors": t.connect_errors, "errors": t.other_errors,
        "banners": t.banners, "rcpt_sent": t.rcpt_sent, "rcpt_answered": t.rcpt_answered,
        "rcpt_per_s": round(t.rcpt_answered / a.duration, 1),
        "replies": dict(sorted(t.replies.items(), key=lambda kv: -kv[1])), "reply_samples": t.samples,
        "replies_per_s": series,
        "relay_cpu_s": round(cpu1 - cpu0, 2),
        "relay_cpu_us_per_rcpt": round((cpu1 - cpu0) * 1e6 / t.rcpt_answered, 1) if t.rcpt_answered else None,
        "machine_busy_frac": round(busy, 3), "loadavg": open("/proc/loadavg").read().split()[:3],
        "legit": legit_out, "started": t0,
    }
    s = json.dumps(res)
    print(s, flush=True)
    if a.json:
        with open(a.json, "a") as f:
            f.write(s + "\n")


if __name__ == "__main__":
    asyncio.run(main())
