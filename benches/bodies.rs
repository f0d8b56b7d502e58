//! Memory while many large bodies arrive: N clients each stream a big body
//! through the relay at the same time, an in-process sink checks every relayed
//! message byte for byte, and the relay's RSS is sampled all along.
//!
//! ```text
//! N clients ──DATA, RATE B/s each──► relay (--relay, --pid) ──► sink (--sink, in this process)
//!                                       │ /proc/PID/status every 100 ms: VmRSS, VmHWM
//! ```
//!
//! Message n starts with the header `X-Bench-Id: n`; everything from that line
//! to the end is a deterministic function of n ([`Message`]): a few headers,
//! then lines of printable text cut from a fixed pool by a PRNG seeded with n
//! (CRLF endings, 0..=998 octets, some starting with '.', so dot-stuffing is
//! exercised). The sink skips what the relay put on top (Received, ...), then
//! regenerates message n and compares line by line while it reads: nothing is
//! held but one line, so the sink needs no memory for the bodies.
//!
//! Run: `benches/bodies.sh` (starts sluice), or by hand against a running relay:
//! `cargo bench --bench bodies -- --clients 1000 --size 5M --rate 256K --pid PID`.
//! Exit status: 0 all relayed byte-exact; 1 a message accepted by the relay
//! was lost or arrived corrupted; 2 nothing lost, but some clients failed
//! (refused, timed out) so not every message was accepted; 3 bad arguments
//! (or the sink's port is taken); 4 stopped because the relay's RSS passed
//! --max-rss.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use clap::Parser;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, sleep, sleep_until, timeout};

#[derive(Parser, Debug)]
#[command(about = "Relay memory while many large bodies arrive (see benches/bodies.rs)")]
struct Args {
    /// The relay under test.
    #[arg(long, default_value = "127.0.0.1:2535")]
    relay: SocketAddr,
    /// Where the in-process sink listens (the relay's next hop).
    #[arg(long, default_value = "127.0.0.1:2526")]
    sink: SocketAddr,
    /// Concurrent clients, one message each.
    #[arg(long, default_value_t = 1000)]
    clients: u32,
    /// Message size in octets (suffix K, M, G: binary).
    #[arg(long, default_value = "5M", value_parser = parse_size)]
    size: u64,
    /// Per-client send rate in octets/s (suffix K, M, G); 0 = as fast as possible.
    #[arg(long, default_value = "256K", value_parser = parse_size)]
    rate: u64,
    /// The relay's process id: its memory is sampled from /proc/PID/status.
    #[arg(long)]
    pid: Option<u32>,
    /// Append the result as one JSON line to this file.
    #[arg(long)]
    jsonl: Option<PathBuf>,
    /// Name of this run in the output (e.g. "before", "after").
    #[arg(long, default_value = "sluice")]
    label: String,
    /// Seconds: deadline for each reply the clients wait for, and for the
    /// sink to receive every accepted message once the clients are done.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Seconds over which the clients connect (client i starts at i/N of it).
    #[arg(long, default_value_t = 2.0)]
    ramp: f64,
    /// Stop the run (exit 4) when the relay's RSS passes this (suffix K, M, G);
    /// 0 = no limit.
    #[arg(long, default_value = "0", value_parser = parse_size)]
    max_rss: u64,
    /// Write the RSS samples (ms since start, KiB) as CSV to this file.
    #[arg(long)]
    samples: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&s[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = num.parse().map_err(|e| format!("{s:?}: {e}"))?;
    n.checked_mul(mult).ok_or_else(|| format!("{s:?}: too large"))
}

// --- the messages -------------------------------------------------------------

/// Longest body line, without CRLF (RFC 5322 §2.1.1).
const MAX_LINE: usize = 998;
const POOL_LEN: usize = 1 << 16;

/// splitmix64: a cheap PRNG, plenty for picking lines.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 64 KiB of printable text (words, spaces, punctuation with many '.'),
/// the same in every run; body lines are slices of it.
fn pool() -> &'static [u8] {
    static POOL: OnceLock<Vec<u8>> = OnceLock::new();
    POOL.get_or_init(|| {
        const PUNCT: &[u8] = b".,;:!?-'\"()[]<>/@#$%&*+=_~^`{}|\\";
        let mut rng = 0x5EED_u64;
        let mut out = Vec::with_capacity(POOL_LEN);
        while out.len() < POOL_LEN {
            let r = splitmix(&mut rng);
            let word = 1 + (r % 9) as usize;
            for k in 0..word {
                let c = (r >> (8 + 5 * k)) as u8 % 52;
                out.push(if c < 26 { b'a' + c } else { b'A' + c - 26 });
            }
            match (r >> 56) % 8 {
                0 | 1 => out.push(b'.'),
                2 => out.push(PUNCT[((r >> 50) % PUNCT.len() as u64) as usize]),
                3 => out.extend_from_slice(&b"0123456789"[..(r >> 52) as usize % 10 + 1]),
                _ => {}
            }
            out.push(b' ');
        }
        out.truncate(POOL_LEN);
        out
    })
}

/// Message n, line by line (without CRLF, not dot-stuffed): the headers, an
/// empty line, then body lines until `size` octets (CRLFs included).
struct Message {
    header: Vec<Vec<u8>>,
    next_header: usize,
    rng: u64,
    remaining: u64,
}

impl Message {
    fn new(n: u32, size: u64) -> Message {
        let header: Vec<Vec<u8>> = [
            format!("X-Bench-Id: {n}"),
            "From: Bench Sender <bench@sender.example>".to_string(),
            format!("To: <user{:04}@example.com>", n % 1000),
            format!("Subject: bodies bench message {n}"),
            "Date: Thu, 01 Jan 2026 00:00:00 +0000".to_string(),
            format!("Message-ID: <bodies.{n}@sender.example>"),
            "MIME-Version: 1.0".to_string(),
            "Content-Type: text/plain; charset=us-ascii".to_string(),
            String::new(),
        ]
        .into_iter()
        .map(String::into_bytes)
        .collect();
        let head: u64 = header.iter().map(|l| l.len() as u64 + 2).sum();
        Message {
            header,
            next_header: 0,
            rng: 0x00B0_D1E5 ^ (u64::from(n) << 20),
            remaining: size.saturating_sub(head),
        }
    }

    fn next_line(&mut self) -> Option<&[u8]> {
        if self.next_header < self.header.len() {
            self.next_header += 1;
            return Some(&self.header[self.next_header - 1]);
        }
        if self.remaining < 2 {
            return None;
        }
        let r = splitmix(&mut self.rng);
        // Mostly short lines, one in eight up to the limit.
        let max = if r & 7 == 0 { MAX_LINE } else { 150 };
        let mut len = ((r >> 3) % (max as u64 + 1)).min(self.remaining - 2);
        if self.remaining - len - 2 == 1 {
            len += 1; // never leave a single octet over
        }
        self.remaining -= len + 2;
        let start = ((r >> 20) % (POOL_LEN - MAX_LINE) as u64) as usize;
        Some(&pool()[start..start + len as usize])
    }
}

// --- the clients ---------------------------------------------------------------

/// Per message: what the client saw, and how often the sink got it.
struct Ledger {
    /// 1 = the relay answered 250 to the final dot.
    accepted: Vec<AtomicU8>,
    /// Arrivals at the sink (verified or not).
    received: Vec<AtomicU32>,
}

#[derive(Default)]
struct ClientStats {
    sent: AtomicU64,
    accepted: AtomicU64,
    failed: AtomicU64,
    /// Failure (stage and reply) → count, for the report.
    failures: Mutex<HashMap<String, u64>>,
    /// Per accepted message: first DATA octet → 250, and final dot → 250, in ms.
    durations: Mutex<Vec<(u64, u64)>>,
}

async fn read_reply<R: AsyncBufRead + Unpin>(r: &mut R, limit: Duration) -> Result<String, String> {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        match timeout(limit, r.read_line(&mut line)).await {
            Err(_) => return Err(format!("timeout after {}s{}", limit.as_secs(), tail(&all))),
            Ok(Err(e)) => return Err(format!("read: {e}{}", tail(&all))),
            Ok(Ok(0)) => return Err(format!("connection closed{}", tail(&all))),
            Ok(Ok(_)) => {}
        }
        let done = line.len() < 4 || line.as_bytes()[3] != b'-';
        all.push_str(line.trim_end());
        if done {
            return Ok(all);
        }
        all.push_str(" | ");
    }
}

fn tail(partial: &str) -> String {
    if partial.is_empty() {
        String::new()
    } else {
        format!(" after {partial:?}")
    }
}

async fn command<R, W>(r: &mut R, w: &mut W, cmd: &str, want: &str, limit: Duration) -> Result<String, String>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if !cmd.is_empty() {
        w.write_all(format!("{cmd}\r\n").as_bytes())
            .await
            .map_err(|e| format!("{cmd}: write: {e}"))?;
    }
    let what = if cmd.is_empty() {
        "greeting"
    } else {
        cmd.split(':').next().unwrap_or(cmd)
    };
    let reply = read_reply(r, limit).await.map_err(|e| format!("{what}: {e}"))?;
    if reply.starts_with(want) {
        Ok(reply)
    } else {
        Err(format!("{what}: {reply}"))
    }
}

const CHUNK: usize = 16 * 1024;

/// One client, one message: EHLO, MAIL, RCPT, DATA, the body at `rate`, the dot.
async fn client(n: u32, args: &Args, ledger: &Ledger, stats: &ClientStats) -> Result<(), String> {
    let limit = Duration::from_secs(args.timeout);
    let stream = timeout(limit, TcpStream::connect(args.relay))
        .await
        .map_err(|_| "connect: timeout".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    command(&mut r, &mut w, "", "220", limit).await?;
    command(&mut r, &mut w, &format!("EHLO client{n}.bench.example"), "250", limit).await?;
    command(&mut r, &mut w, "MAIL FROM:<bench@sender.example>", "250", limit).await?;
    let rcpt = format!("RCPT TO:<user{:04}@example.com>", n % 1000);
    command(&mut r, &mut w, &rcpt, "250", limit).await?;
    command(&mut r, &mut w, "DATA", "354", limit).await?;

    let t0 = Instant::now();
    let mut msg = Message::new(n, args.size);
    let mut chunk = Vec::with_capacity(CHUNK + MAX_LINE + 3);
    let mut written = 0u64;
    let mut done = false;
    while !done {
        chunk.clear();
        while chunk.len() < CHUNK {
            let Some(line) = msg.next_line() else {
                chunk.extend_from_slice(b".\r\n");
                done = true;
                break;
            };
            if line.first() == Some(&b'.') {
                chunk.push(b'.');
            }
            chunk.extend_from_slice(line);
            chunk.extend_from_slice(b"\r\n");
        }
        w.write_all(&chunk)
            .await
            .map_err(|e| format!("body: write after {written} octets: {e}"))?;
        written += chunk.len() as u64;
        if args.rate > 0 && !done {
            sleep_until(t0 + Duration::from_secs_f64(written as f64 / args.rate as f64)).await;
        }
    }
    stats.sent.fetch_add(1, Ordering::Relaxed);
    let t_dot = Instant::now();
    let reply = read_reply(&mut r, limit)
        .await
        .map_err(|e| format!("end of data: {e}"))?;
    if !reply.starts_with("250") {
        return Err(format!("end of data: {reply}"));
    }
    ledger.accepted[n as usize].store(1, Ordering::Relaxed);
    stats.accepted.fetch_add(1, Ordering::Relaxed);
    let ms = |d: Duration| d.as_millis() as u64;
    stats
        .durations
        .lock()
        .unwrap()
        .push((ms(t0.elapsed()), ms(t_dot.elapsed())));
    let _ = command(&mut r, &mut w, "QUIT", "221", Duration::from_secs(5)).await;
    Ok(())
}

// --- the sink -------------------------------------------------------------------

#[derive(Default)]
struct SinkStats {
    received: AtomicU64,
    verified: AtomicU64,
    mismatched: AtomicU64,
    /// Descriptions of the first mismatches.
    mismatches: Mutex<Vec<String>>,
}

impl SinkStats {
    fn mismatch(&self, what: String) {
        self.mismatched.fetch_add(1, Ordering::Relaxed);
        let mut m = self.mismatches.lock().unwrap();
        if m.len() < 10 {
            m.push(what);
        }
    }
}

/// Reads one line into `buf` (CRLF/LF kept), keeping at most `cap` octets of
/// it: returns (octets in the line, whether it was cut). (0, false) = EOF.
async fn read_capped<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<(usize, bool)> {
    buf.clear();
    let mut total = 0;
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Ok((total, total > buf.len()));
        }
        let (take, end) = match memchr::memchr(b'\n', avail) {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        let room = cap.saturating_sub(buf.len()).min(take);
        buf.extend_from_slice(&avail[..room]);
        total += take;
        r.consume(take);
        if end {
            return Ok((total, total > buf.len()));
        }
    }
}

enum Check {
    /// Before the `X-Bench-Id:` line: the relay's own headers.
    Skipping,
    Comparing {
        n: u32,
        msg: Message,
        line: u64,
    },
    /// Found a difference (already reported); reads on to the dot.
    Failed,
}

/// Reads one message after DATA up to the dot, comparing it with the message
/// its X-Bench-Id names.
async fn sink_data<R: AsyncBufRead + Unpin>(
    r: &mut R,
    size: u64,
    ledger: &Ledger,
    stats: &SinkStats,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(MAX_LINE + 16);
    let mut check = Check::Skipping;
    loop {
        let (len, cut) = read_capped(r, &mut buf, MAX_LINE + 16).await?;
        if len == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if &buf[..] == b".\r\n" {
            break;
        }
        let line = if buf.first() == Some(&b'.') {
            &buf[1..]
        } else {
            &buf[..]
        };
        match &mut check {
            Check::Failed => {}
            Check::Skipping => {
                if let Some(rest) = line.strip_prefix(b"X-Bench-Id: ") {
                    let id = std::str::from_utf8(rest)
                        .ok()
                        .and_then(|s| s.trim_end().parse::<u32>().ok());
                    match id {
                        Some(n) if (n as usize) < ledger.received.len() => {
                            ledger.received[n as usize].fetch_add(1, Ordering::Relaxed);
                            let mut msg = Message::new(n, size);
                            msg.next_line(); // the X-Bench-Id line itself, compared below
                            check = Check::Comparing { n, msg, line: 1 };
                            if !line.ends_with(b"\r\n") || line.len() != format!("X-Bench-Id: {n}\r\n").len() {
                                stats.mismatch(format!("message {n}: X-Bench-Id line {line:?}"));
                                check = Check::Failed;
                            }
                        }
                        _ => {
                            stats.mismatch(format!("unknown X-Bench-Id: {:?}", String::from_utf8_lossy(line)));
                            check = Check::Failed;
                        }
                    }
                }
            }
            Check::Comparing { n, msg, line: no } => {
                *no += 1;
                let got = line.strip_suffix(b"\r\n");
                let want = msg.next_line();
                if cut || got.is_none() || got != want {
                    stats.mismatch(format!(
                        "message {n}, line {no}: got {:?}, want {:?}",
                        String::from_utf8_lossy(&line[..line.len().min(80)]),
                        want.map(|w| String::from_utf8_lossy(&w[..w.len().min(80)]).into_owned()),
                    ));
                    check = Check::Failed;
                }
            }
        }
    }
    stats.received.fetch_add(1, Ordering::Relaxed);
    match check {
        Check::Failed => {}
        Check::Skipping => stats.mismatch("a message without X-Bench-Id".to_string()),
        Check::Comparing { n, mut msg, line } => {
            if msg.next_line().is_some() {
                stats.mismatch(format!("message {n}: truncated after {line} lines"));
            } else {
                stats.verified.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

async fn sink_session(stream: TcpStream, size: u64, ledger: Arc<Ledger>, stats: Arc<SinkStats>) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::with_capacity(64 * 1024, r);
    let mut buf = Vec::new();
    w.write_all(b"220 sink.bench.example ESMTP bodies-bench sink\r\n")
        .await?;
    loop {
        let (len, cut) = read_capped(&mut r, &mut buf, 4096).await?;
        if len == 0 {
            return Ok(());
        }
        let verb = buf
            .iter()
            .take_while(|b| b.is_ascii_alphabetic())
            .map(u8::to_ascii_uppercase)
            .collect::<Vec<_>>();
        let reply: &[u8] = match (&verb[..], cut) {
            (_, true) => b"500 5.5.2 Line too long\r\n",
            (b"EHLO", _) => b"250-sink.bench.example\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 0\r\n",
            (b"HELO", _) => b"250 sink.bench.example\r\n",
            (b"MAIL", _) => b"250 2.1.0 Ok\r\n",
            (b"RCPT", _) => b"250 2.1.5 Ok\r\n",
            (b"RSET", _) | (b"NOOP", _) => b"250 2.0.0 Ok\r\n",
            (b"QUIT", _) => {
                w.write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            }
            (b"DATA", _) => {
                w.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n").await?;
                sink_data(&mut r, size, &ledger, &stats).await?;
                b"250 2.0.0 Ok: checked\r\n"
            }
            _ => b"502 5.5.2 Command not recognized\r\n",
        };
        w.write_all(reply).await?;
    }
}

// --- memory sampling -------------------------------------------------------------

/// VmRSS and VmHWM of a process, in KiB.
fn proc_mem(pid: &str) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

#[derive(Default)]
struct MemTrace {
    /// (ms since start, VmRSS KiB)
    samples: Vec<(u64, u64)>,
    peak_kib: u64,
    peak_at_ms: u64,
    hwm_kib: u64,
}

// --- main -------------------------------------------------------------------------

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[tokio::main]
async fn main() {
    let args = Arc::new(Args::parse());
    // One socket per client here, as many in the relay: raise the soft limit
    // to the hard one (benches/bodies.sh raises the hard one where it can).
    let nofile = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    if nofile < u64::from(args.clients) + 100 {
        eprintln!(
            "warning: RLIMIT_NOFILE is {nofile}; run `ulimit -n 65536` first for {} clients",
            args.clients
        );
    }
    // The generator must produce exactly --size octets (the sink relies on it).
    let mut total = 0u64;
    let mut m = Message::new(0, args.size);
    while let Some(l) = m.next_line() {
        assert!(l.len() <= MAX_LINE);
        total += l.len() as u64 + 2;
    }
    if total != args.size {
        eprintln!(
            "--size {} is too small: the headers alone take {total} octets",
            args.size
        );
        std::process::exit(3);
    }
    let n = args.clients as usize;
    let ledger = Arc::new(Ledger {
        accepted: (0..n).map(|_| AtomicU8::new(0)).collect(),
        received: (0..n).map(|_| AtomicU32::new(0)).collect(),
    });
    let sink_stats = Arc::new(SinkStats::default());
    let listener = TcpListener::bind(args.sink).await.unwrap_or_else(|e| {
        eprintln!("sink: cannot listen on {}: {e}", args.sink);
        std::process::exit(3);
    });
    {
        let (ledger, stats, size) = (ledger.clone(), sink_stats.clone(), args.size);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let (ledger, stats) = (ledger.clone(), stats.clone());
                tokio::spawn(async move {
                    if let Err(e) = sink_session(stream, size, ledger, stats).await {
                        eprintln!("sink: session: {e}");
                    }
                });
            }
        });
    }

    let start = Instant::now();
    let trace = Arc::new(Mutex::new(MemTrace::default()));
    let sampling = Arc::new(AtomicU8::new(1));
    let aborted = Arc::new(AtomicU8::new(0));
    let abort = Arc::new(tokio::sync::Notify::new());
    let sampler = args.pid.map(|pid| {
        let (trace, sampling, aborted, abort) = (trace.clone(), sampling.clone(), aborted.clone(), abort.clone());
        let max_rss_kib = args.max_rss / 1024;
        tokio::spawn(async move {
            let pid = pid.to_string();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while sampling.load(Ordering::Relaxed) == 1 {
                tick.tick().await;
                let Some((rss, hwm)) = proc_mem(&pid) else { break };
                let ms = start.elapsed().as_millis() as u64;
                let mut t = trace.lock().unwrap();
                t.samples.push((ms, rss));
                t.hwm_kib = hwm;
                if rss > t.peak_kib {
                    t.peak_kib = rss;
                    t.peak_at_ms = ms;
                }
                if max_rss_kib > 0 && rss > max_rss_kib {
                    eprintln!("relay RSS {:.0} MiB is over --max-rss: stopping the run", mib(rss));
                    aborted.store(1, Ordering::Relaxed);
                    abort.notify_one();
                    break;
                }
            }
        })
    });
    let rss_at_start = args.pid.and_then(|p| proc_mem(&p.to_string())).map_or(0, |m| m.0);

    println!(
        "bodies [{}]: {} clients x {} octets at {} B/s each -> {} (sink {}), relay pid {}",
        args.label,
        args.clients,
        args.size,
        args.rate,
        args.relay,
        args.sink,
        args.pid.map_or("-".to_string(), |p| p.to_string())
    );
    let stats = Arc::new(ClientStats::default());
    let mut tasks = Vec::with_capacity(n);
    for i in 0..args.clients {
        let (args, ledger, stats) = (args.clone(), ledger.clone(), stats.clone());
        let at = start + Duration::from_secs_f64(args.ramp * f64::from(i) / f64::from(args.clients.max(1)));
        tasks.push(tokio::spawn(async move {
            sleep_until(at).await;
            if let Err(e) = client(i, &args, &ledger, &stats).await {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                // Group failures by their text without the long numbers that differ.
                let key = mask_long_numbers(&e);
                let mut failures = stats.failures.lock().unwrap();
                *failures.entry(key).or_default() += 1;
                if failures.values().sum::<u64>() <= 3 {
                    eprintln!("client {i}: {e}");
                }
            }
        }));
    }
    let mut progress = tokio::time::interval(Duration::from_secs(5));
    progress.tick().await;
    let mut joined = std::pin::pin!(join_clients(tasks));
    loop {
        tokio::select! {
            _ = &mut joined => break,
            _ = abort.notified() => break,
            _ = progress.tick() => {
                let rss = trace.lock().unwrap().samples.last().map_or(0, |s| s.1);
                eprintln!(
                    "  {:5.1}s sent {} accepted {} failed {} | sink received {} | relay RSS {:.0} MiB",
                    start.elapsed().as_secs_f64(),
                    stats.sent.load(Ordering::Relaxed),
                    stats.accepted.load(Ordering::Relaxed),
                    stats.failed.load(Ordering::Relaxed),
                    sink_stats.received.load(Ordering::Relaxed),
                    mib(rss),
                );
            }
        }
    }
    let clients_s = start.elapsed().as_secs_f64();

    // Wait for the sink to get every accepted message.
    let pending = || {
        (0..n)
            .filter(|&i| {
                ledger.accepted[i].load(Ordering::Relaxed) == 1 && ledger.received[i].load(Ordering::Relaxed) == 0
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    while pending() > 0 && Instant::now() < deadline && aborted.load(Ordering::Relaxed) == 0 {
        sleep(Duration::from_millis(100)).await;
    }
    let delivered_s = start.elapsed().as_secs_f64();
    sampling.store(0, Ordering::Relaxed);
    if let Some(s) = sampler {
        let _ = s.await;
    }
    // The last word on the high-water mark, if the relay is still running.
    if let Some((_, hwm)) = args.pid.and_then(|p| proc_mem(&p.to_string())) {
        trace.lock().unwrap().hwm_kib = hwm;
    }
    let own_hwm = proc_mem("self").map_or(0, |m| m.1);

    // --- report ---
    let lost = pending();
    let accepted = stats.accepted.load(Ordering::Relaxed);
    let sent = stats.sent.load(Ordering::Relaxed);
    let failed = stats.failed.load(Ordering::Relaxed);
    let received = sink_stats.received.load(Ordering::Relaxed);
    let verified = sink_stats.verified.load(Ordering::Relaxed);
    let mismatched = sink_stats.mismatched.load(Ordering::Relaxed);
    let duplicates: u64 = ledger
        .received
        .iter()
        .map(|r| u64::from(r.load(Ordering::Relaxed).saturating_sub(1)))
        .sum();
    let unaccepted_arrived = (0..n)
        .filter(|&i| ledger.accepted[i].load(Ordering::Relaxed) == 0 && ledger.received[i].load(Ordering::Relaxed) > 0)
        .count();
    let (mut data_ms, mut dot_ms): (Vec<u64>, Vec<u64>) = stats.durations.lock().unwrap().iter().copied().unzip();
    data_ms.sort_unstable();
    dot_ms.sort_unstable();
    let t = trace.lock().unwrap();
    let mut failures: Vec<(String, u64)> = stats.failures.lock().unwrap().drain().collect();
    failures.sort_by_key(|f| std::cmp::Reverse(f.1));
    let aborted = aborted.load(Ordering::Relaxed) == 1;
    let ok = lost == 0 && mismatched == 0;
    let status = if aborted {
        "ABORTED: relay RSS over --max-rss"
    } else if !ok {
        "LOST OR CORRUPT"
    } else if failed > 0 {
        "incomplete (client failures)"
    } else {
        "ok"
    };

    println!("bodies [{}]: {status}", args.label);
    println!(
        "  messages: {} clients, {sent} sent, {accepted} accepted by relay, {failed} failed; \
         sink: {received} received, {verified} verified byte-exact, {mismatched} mismatched, \
         {duplicates} duplicates, {lost} accepted but lost, {unaccepted_arrived} arrived without a 250",
        args.clients
    );
    println!(
        "  time: clients done {clients_s:.1}s, all accepted delivered {delivered_s:.1}s; \
         per message DATA->250 p50 {:.1}s max {:.1}s, dot->250 p50 {:.2}s p99 {:.2}s max {:.2}s",
        percentile(&data_ms, 0.5) as f64 / 1000.0,
        percentile(&data_ms, 1.0) as f64 / 1000.0,
        percentile(&dot_ms, 0.5) as f64 / 1000.0,
        percentile(&dot_ms, 0.99) as f64 / 1000.0,
        percentile(&dot_ms, 1.0) as f64 / 1000.0,
    );
    if args.pid.is_some() {
        println!(
            "  relay memory: RSS at start {:.0} MiB, peak {:.0} MiB at {:.1}s, VmHWM {:.0} MiB ({} samples); bench's own VmHWM {:.0} MiB",
            mib(rss_at_start),
            mib(t.peak_kib),
            t.peak_at_ms as f64 / 1000.0,
            mib(t.hwm_kib),
            t.samples.len(),
            mib(own_hwm),
        );
    }
    for (what, count) in failures.iter().take(5) {
        println!("  client failure x{count}: {what}");
    }
    for m in sink_stats.mismatches.lock().unwrap().iter() {
        println!("  mismatch: {m}");
    }

    let json = serde_json::json!({
        "bench": "bodies",
        "label": args.label,
        "clients": args.clients,
        "size": args.size,
        "rate": args.rate,
        "relay": args.relay.to_string(),
        "pid": args.pid,
        "sent": sent,
        "accepted": accepted,
        "failed": failed,
        "received": received,
        "verified": verified,
        "mismatched": mismatched,
        "duplicates": duplicates,
        "lost": lost,
        "unaccepted_arrived": unaccepted_arrived,
        "clients_s": (clients_s * 100.0).round() / 100.0,
        "delivered_s": (delivered_s * 100.0).round() / 100.0,
        "data_ms_p50": percentile(&data_ms, 0.5),
        "data_ms_max": percentile(&data_ms, 1.0),
        "dot_ms_p50": percentile(&dot_ms, 0.5),
        "dot_ms_p99": percentile(&dot_ms, 0.99),
        "dot_ms_max": percentile(&dot_ms, 1.0),
        "rss_start_kib": rss_at_start,
        "rss_peak_kib": t.peak_kib,
        "rss_peak_at_ms": t.peak_at_ms,
        "hwm_kib": t.hwm_kib,
        "bench_hwm_kib": own_hwm,
        "failures": failures.iter().take(5).map(|(w, c)| serde_json::json!({"what": w, "count": c})).collect::<Vec<_>>(),
        "status": status,
    });
    println!("{json}");
    if let Some(path) = &args.jsonl {
        let line = format!("{json}\n");
        let res = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = res {
            eprintln!("{}: {e}", path.display());
        }
    }
    if let Some(path) = &args.samples {
        let csv: String = std::iter::once("ms,rss_kib\n".to_string())
            .chain(t.samples.iter().map(|(ms, kib)| format!("{ms},{kib}\n")))
            .collect();
        if let Err(e) = std::fs::write(path, csv) {
            eprintln!("{}: {e}", path.display());
        }
    }
    std::process::exit(if aborted {
        4
    } else if !ok {
        1
    } else if failed > 0 {
        2
    } else {
        0
    });
}

/// `e` with runs of 4 or more digits (octet counts, ids) as "#", reply codes
/// kept; at most 200 characters.
fn mask_long_numbers(e: &str) -> String {
    let mut out = String::new();
    let mut digits = String::new();
    for c in e.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        out.push_str(if digits.len() >= 4 { "#" } else { &digits });
        digits.clear();
        out.push(c);
    }
    out.pop();
    out.chars().take(200).collect()
}

/// Waits for all tasks (their panics are reported, not propagated).
async fn join_clients(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        if let Err(e) = t.await {
            eprintln!("client task: {e}");
        }
    }
}
