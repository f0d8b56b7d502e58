#!/usr/bin/env python3
"""Per-transaction latency against one SMTP server, sequential (one at a time).

  --mode session:    one connection, EHLO once, then per message
                     MAIL, RCPT, DATA, body, "." (the timed transaction: from
                     MAIL sent to the 250 after "." read); QUIT at the end.
  --mode connection: per message a new connection: connect, banner, EHLO,
                     MAIL, RCPT, DATA, body, ".", QUIT (timed: connect to the
                     221 read).
Prints one JSON object: count, failures, p50/p90/p99/max/mean in ms; with
--raw FILE writes every sample (ms, one per line).
"""
import argparse, json, socket, statistics, sys, time


def reply(f):
    lines = []
    while True:
        line = f.readline()
        if not line:
            raise ConnectionError("closed")
        lines.append(line)
        if line[3:4] != b"-":
            return int(line[:3]), lines


def expect(f, code):
    c, lines = reply(f)
    if c != code:
        raise RuntimeError(f"expected {code}, got {b''.join(lines)!r}")


def pct(xs, p):
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(round(p / 100.0 * len(xs) + 0.5)) - 1))
    return xs[k]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="127.0.0.1:2555")
    ap.add_argument("--mode", choices=["session", "connection"], default="session")
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--sender", default="sender@example.net")
    ap.add_argument("--rcpt", default="user0500@example.com")
    ap.add_argument("--label", default="")
    ap.add_argument("--raw", default="")
    a = ap.parse_args()
    host, port = a.target.rsplit(":", 1)
    port = int(port)
    line = b"X" * 76 + b"\r\n"
    body = b"Subject: latency\r\n\r\n" + line * max(1, a.size // len(line)) + b".\r\n"
    tx = (b"MAIL FROM:<%s>\r\n" % a.sender.encode(), b"RCPT TO:<%s>\r\n" % a.rcpt.encode(), b"DATA\r\n")

    def transaction(s, f):
        s.sendall(tx[0]); expect(f, 250)
        s.sendall(tx[1]); expect(f, 250)
        s.sendall(tx[2]); expect(f, 354)
        s.sendall(body); expect(f, 250)

    def open_session():
        s = socket.create_connection((host, port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        f = s.makefile("rb")
        expect(f, 220)
        s.sendall(b"EHLO latency.localdomain\r\n"); expect(f, 250)
        return s, f

    samples, failures = [], 0
    total = a.warmup + a.count
    if a.mode == "session":
        s, f = open_session()
        for i in range(total):
            t0 = time.perf_counter()
            try:
                transaction(s, f)
            except Exception as e:
                failures += 1
                print(f"tx {i}: {e}", file=sys.stderr)
                try: s.close()
                except Exception: pass
                s, f = open_session()
                continue
            dt = (time.perf_counter() - t0) * 1000.0
            if i >= a.warmup:
                samples.append(dt)
        s.sendall(b"QUIT\r\n"); s.close()
    else:
        for i in range(total):
            t0 = time.perf_counter()
            try:
                s, f = open_session()
                transaction(s, f)
                s.sendall(b"QUIT\r\n"); expect(f, 221)
                s.close()
            except Exception as e:
                failures += 1
                print(f"conn {i}: {e}", file=sys.stderr)
                continue
            dt = (time.perf_counter() - t0) * 1000.0
            if i >= a.warmup:
                samples.append(dt)
    if a.raw:
        with open(a.raw, "w") as g:
            g.write("".join(f"{x:.4f}\n" for x in samples))
    out = {"label": a.label, "mode": a.mode, "size": a.size, "count": len(samples), "failures": failures,
           "p50_ms": round(pct(samples, 50), 4), "p90_ms": round(pct(samples, 90), 4),
           "p99_ms": round(pct(samples, 99), 4), "max_ms": round(max(samples), 4),
           "mean_ms": round(statistics.fmean(samples), 4)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
