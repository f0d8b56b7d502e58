//! Private, isolated instances of real mail servers for end-to-end tests:
//! Postfix (`postfix -c DIR start`), Dovecot LMTP (`dovecot -F -c FILE`),
//! Postfix's `smtp-sink` and a DNS server for a zone file (dnslib's
//! `python3 -m dnslib.zoneresolver`, UDP and TCP), plus a DNS "black hole"
//! port that never answers, clamd, and redis-server (with a Sentinel) for
//! `[cluster]`. Each one listens on 127.0.0.1 on a fresh free port,
//! keeps everything (configuration, queue, mail, logs) in its own temp dir,
//! and is stopped on Drop: only the processes it started are signalled, by
//! PID (or by the process group of the Postfix master, which leads it), and
//! the temp dir is removed. Several instances may run at once, in one test
//! process or in many (cargo nextest), because nothing is shared: no fixed
//! port, path, instance name or pid file.
//!
//! One file per server under `services/`; here the shared helpers (free
//! ports, the start retry, the watchdog, stopping children).
//!
//! Synchronous, std only (plus `tempfile`). Call `start()` from async code
//! through `tokio::task::spawn_blocking`. Needs root (as the tests run):
//! Postfix and Dovecot drop to their own users (`postfix`, `mail`); the DNS
//! helpers do not need it.
//!
//! Note: on this kind of machine PID 1 does not reap orphans, so the exited
//! Postfix daemons (and Dovecot's `log` process) stay as zombies after Drop;
//! they hold no port, file or socket. Processes that are our own children
//! (`dovecot -F`, `smtp-sink`, the `postfix` command, `python3`) are reaped.

#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{JoinHandle, sleep};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

mod clamd;
mod dns;
mod dovecot;
mod haproxy;
mod imap;
mod postfix;
mod redis;
mod sink;

pub use clamd::*;
pub use dns::*;
pub use dovecot::*;
pub use haproxy::*;
pub use imap::*;
pub use postfix::*;
pub use redis::*;
pub use sink::*;

/// How many times a start is retried with a new port when the chosen one was
/// taken in the meantime (free_port() is inherently racy across processes).
const START_ATTEMPTS: usize = 5;

// ------------------------------------------------------------------ ports

/// A free TCP port on 127.0.0.1 (bind to :0, read the port, drop the listener).
pub fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// Waits until something accepts TCP connections on 127.0.0.1:port, panics after `secs`.
pub fn wait_port(port: u16, secs: u64) {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("nothing accepts connections on 127.0.0.1:{port} after {secs} s");
        }
        sleep(Duration::from_millis(20));
    }
}

/// Connects to 127.0.0.1:port and reads the greeting until it is a `220`
/// line containing `tag` (our instance's unique host name, so a stranger on
/// a recycled port is not mistaken for our server); then says QUIT.
fn check_banner_tcp(port: u16, tag: &str) -> Result<(), String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok();
    s.set_write_timeout(Some(Duration::from_secs(3))).ok();
    check_banner(s, tag)
}

fn check_banner_unix(path: &Path, tag: &str) -> Result<(), String> {
    let s = UnixStream::connect(path).map_err(|e| format!("connect {}: {e}", path.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok();
    s.set_write_timeout(Some(Duration::from_secs(3))).ok();
    check_banner(s, tag)
}

fn check_banner<S: Read + Write>(mut s: S, tag: &str) -> Result<(), String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    while !buf.ends_with(b"\r\n") {
        let n = s.read(&mut chunk).map_err(|e| format!("read greeting: {e}"))?;
        if n == 0 {
            return Err(format!("connection closed after {:?}", String::from_utf8_lossy(&buf)));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf).to_string();
    let _ = s.write_all(b"QUIT\r\n");
    let _ = s.read(&mut chunk);
    if line.starts_with("220") && line.contains(tag) {
        Ok(())
    } else {
        Err(format!("unexpected greeting {line:?} (wanted 220 with {tag:?})"))
    }
}

/// Polls `f` until it returns Ok, or returns its last error after `limit`;
/// `Err((msg, true))` is fatal (e.g. the server exited) and returned at once.
fn retry_for(limit: Duration, mut f: impl FnMut() -> Result<(), (String, bool)>) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        match f() {
            Ok(()) => return Ok(()),
            Err((e, fatal)) if fatal || Instant::now() >= deadline => return Err(e),
            Err(_) => sleep(Duration::from_millis(20)),
        }
    }
}

/// For retry_for: a not-yet-ready error (retried).
fn again(e: String) -> (String, bool) {
    (e, false)
}

// ------------------------------------------------------------------ small helpers

/// A temp dir that other users (postfix, mail) may traverse (tempfile makes
/// 0700 dirs). Kept short: Dovecot puts unix sockets in it (108-byte limit).
fn service_tempdir(prefix: &str) -> TempDir {
    let base = std::env::temp_dir();
    let base = if base.as_os_str().len() <= 40 {
        base
    } else {
        PathBuf::from("/tmp")
    };
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&base)
        .unwrap_or_else(|e| {
            panic!("cannot create a temp dir in {}: {e}", base.display());
        });
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
    dir
}

fn mkdir(path: &Path, mode: u32, owner: Option<(u32, u32)>) {
    fs::create_dir_all(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }
}

fn write_file(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Field 2 (uid/gid) of `name` in /etc/passwd or /etc/group.
fn lookup_id(db: &str, name: &str) -> u32 {
    let text = fs::read_to_string(db).unwrap_or_else(|e| panic!("read {db}: {e}"));
    text.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[0] == name)
        .and_then(|f| f[2].parse().ok())
        .unwrap_or_else(|| panic!("no {name:?} in {db} (is the package installed?)"))
}

fn uid(name: &str) -> u32 {
    lookup_id("/etc/passwd", name)
}

fn gid(name: &str) -> u32 {
    lookup_id("/etc/group", name)
}

fn read_lossy(path: &Path) -> String {
    match fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

fn am_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// (state, ppid, pgrp) of a process from /proc/PID/stat; None if it is gone.
fn proc_stat(pid: u32) -> Option<(char, u32, u32)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid pgrp ..."; comm may contain spaces or ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    let pgrp = f.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}

/// The kernel's name for a process (/proc/PID/comm: the executable's name).
fn proc_comm(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
}

/// Running (neither gone nor a zombie: PID 1 here does not reap orphans).
fn alive(pid: u32) -> bool {
    matches!(proc_stat(pid), Some((st, _, _)) if st != 'Z' && st != 'X')
}

/// Live processes matching `pred(ppid, pgrp)`.
fn live_procs(pred: impl Fn(u32, u32) -> bool) -> Vec<u32> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| matches!(proc_stat(pid), Some((st, ppid, pgrp)) if st != 'Z' && st != 'X' && pred(ppid, pgrp)))
        .collect()
}

/// `kill -s SIG -- TARGET` (TARGET "-PGID" for a process group).
fn send_signal(sig: &str, target: &str) {
    let _ = Command::new("kill")
        .args(["-s", sig, "--", target])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(10));
    }
    true
}

/// Waits for our own child to exit (reaping it), up to `limit`.
fn wait_child(child: &mut Child, limit: Duration) -> bool {
    wait_until(limit, || !matches!(child.try_wait(), Ok(None)))
}

fn stop_child(child: &mut Child, what: &str) {
    send_signal("TERM", &child.id().to_string());
    if !wait_child(child, Duration::from_secs(10)) {
        eprintln!("{what} (pid {}) ignored SIGTERM for 10 s; killing it", child.id());
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn addr_in_use(text: &str) -> bool {
    text.contains("Address already in use") || text.contains("address already in use")
}

/// Stops a server if this test process dies without running Drop (killed
/// on timeout, abort, Ctrl-C): a `sh` in its own process group blocks reading
/// its stdin, whose write end only this process holds (close-on-exec); on
/// EOF it sends SIGTERM to `pid`, waits (up to 10 s) until that process has
/// exited, and removes `dir`. Killed first thing on a normal Drop.
struct Watchdog(Child);

impl Watchdog {
    fn new(pid: u32, dir: &Path) -> Option<Watchdog> {
        use std::os::unix::process::CommandExt;
        let script = format!(
            "read _ignored\n\
             kill -s TERM {pid} 2>/dev/null\n\
             i=0\n\
             while [ $i -lt 100 ]; do\n\
             \x20 case \"$(cut -d' ' -f3 /proc/{pid}/stat 2>/dev/null)\" in ''|Z|X) break;; esac\n\
             \x20 sleep 0.1; i=$((i+1))\n\
             done\n\
             rm -rf -- \"$1\"\n"
        );
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sluice-test-watchdog")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .ok()
            .map(Watchdog)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ------------------------------------------------------------------ Postfix
