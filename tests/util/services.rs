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

/// A private Postfix instance: smtpd on 127.0.0.1:port, relaying everything
/// (relay_domains = example.com, example.org, example.net; and, because
/// mynetworks = 127.0.0.0/8, any other domain for loopback clients) to
/// smtp:[127.0.0.1]:relay_to. No recipient validation, no local delivery
/// (mydestination is empty, so bounces/DSNs it generates also go to relay_to),
/// queue/fsync/retry timers at Postfix defaults (a deferred message waits
/// minimal_backoff_time = 300 s), chroot off, smtpd peer name lookup off
/// (Received shows `unknown[127.0.0.1]`), myhostname
/// `postfix-PORT.sluice.test`. Everything lives in a temp dir: config
/// (`etc/`), queue (`spool/`), data dir and the log (`maillog`, via postlogd).
///
/// Made as transparent as Postfix can be, for byte-exact tests:
/// `local_header_rewrite_clients =` (no added Message-ID/Date/From, no
/// address rewriting), `disable_mime_output_conversion = yes`,
/// `smtp_line_length_limit = 0` (no folding of lines > 998), and
/// `header_size_limit = 4096000`. What it still changes: it prepends its
/// `Received:`, deletes every `Return-Path:` field of the header, rewrites a
/// field name followed by spaces (`Fro :x` becomes `Fro:x`), and (like any
/// SMTP hop) data not ending in CRLF gets one.
pub struct Postfix {
    pub port: u16,
    dir: TempDir,
    master_pid: u32,
    watchdog: Option<Watchdog>,
}

impl Postfix {
    /// Returns once smtpd answers with its own greeting (about 0.1 s).
    pub fn start(relay_to: u16) -> Postfix {
        Self::start_with_recipients(relay_to, &[])
    }

    /// Like `start`, but only `recipients` are valid relay recipients
    /// (`relay_recipient_maps = inline:{...}`); others get 550 5.1.1 at RCPT.
    /// An empty list accepts every recipient.
    pub fn start_with_recipients(relay_to: u16, recipients: &[&str]) -> Postfix {
        Self::start_with(relay_to, recipients, None)
    }

    /// Like `start_with_recipients`, with STARTTLS offered (`tls`: PEM
    /// certificate chain and key files; `tlsmgr` runs too).
    pub fn start_with(relay_to: u16, recipients: &[&str], tls: Option<(&Path, &Path)>) -> Postfix {
        Self::start_configured(relay_to, recipients, tls, "")
    }

    /// Like `start`, with `extra_main` appended to main.cf (milters,
    /// policy services, ...).
    pub fn start_with_main(relay_to: u16, extra_main: &str) -> Postfix {
        Self::start_configured(relay_to, &[], None, extra_main)
    }

    fn start_configured(relay_to: u16, recipients: &[&str], tls: Option<(&Path, &Path)>, extra: &str) -> Postfix {
        let map = if recipients.is_empty() {
            String::new()
        } else {
            let entries: Vec<String> = recipients.iter().map(|r| format!("{r}=OK")).collect();
            format!("inline:{{ {} }}", entries.join(", "))
        };
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            match Postfix::try_start(free_port(), relay_to, &map, tls, extra) {
                Ok(p) => return p,
                Err((msg, retry)) if retry => last = msg,
                Err((msg, _)) => panic!("{msg}"),
            }
        }
        panic!("Postfix did not start after {START_ATTEMPTS} attempts (ports taken); last:\n{last}");
    }

    fn try_start(
        port: u16,
        relay_to: u16,
        recipient_map: &str,
        tls: Option<(&Path, &Path)>,
        extra: &str,
    ) -> Result<Postfix, (String, bool)> {
        let dir = service_tempdir("sluice-postfix-");
        let d = dir.path();
        let (etc, spool, data) = (d.join("etc"), d.join("spool"), d.join("data"));
        let (pf_uid, pf_gid, postdrop) = (uid("postfix"), gid("postfix"), gid("postdrop"));
        let name = format!("postfix-sluice-{port}");
        let hostname = format!("postfix-{port}.sluice.test");

        mkdir(&etc, 0o755, None);
        // What `post-install create-missing` would make (postfix-files):
        // creating it here and starting with `quick-start` skips the slow
        // (~1 s) integrity checks of postfix-script.
        mkdir(&spool, 0o755, Some((0, 0)));
        for q in [
            "active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming", "private", "saved",
            "trace",
        ] {
            mkdir(&spool.join(q), 0o700, Some((pf_uid, pf_gid)));
        }
        mkdir(&spool.join("maildrop"), 0o730, Some((pf_uid, postdrop)));
        mkdir(&spool.join("public"), 0o710, Some((pf_uid, postdrop)));
        mkdir(&spool.join("pid"), 0o755, Some((0, 0)));
        mkdir(&data, 0o700, Some((pf_uid, pf_gid)));

        // sluice passes the real client with XFORWARD (or XCLIENT) when
        // Postfix offers it, as the README's deployment section sets up.
        let mut extra_main = String::from(
            "smtpd_authorized_xforward_hosts = 127.0.0.0/8\n\
             smtpd_authorized_xclient_hosts = 127.0.0.0/8\n",
        );
        let mut extra_master = String::new();
        if let Some((cert, key)) = tls {
            extra_main.push_str(&format!(
                "smtpd_tls_security_level = may\n\
                 smtpd_tls_cert_file = {}\n\
                 smtpd_tls_key_file = {}\n\
                 smtpd_tls_loglevel = 1\n\
                 smtpd_tls_session_cache_database =\n",
                cert.display(),
                key.display()
            ));
            extra_master.push_str("tlsmgr     unix  - - n 1000? 1 tlsmgr\n");
        }
        extra_main.push_str(extra);
        let main_cf = format!(
            "# generated by sluice tests/util/services.rs\n\
             compatibility_level = 3.6\n\
             config_directory = {etc}\n\
             queue_directory = {spool}\n\
             data_directory = {data}\n\
             multi_instance_name = {name}\n\
             syslog_name = {name}\n\
             maillog_file = {log}\n\
             maillog_file_prefixes = {d}\n\
             myhostname = {hostname}\n\
             mydomain = sluice.test\n\
             myorigin = $myhostname\n\
             mydestination =\n\
             inet_interfaces = loopback-only\n\
             inet_protocols = ipv4\n\
             mynetworks = 127.0.0.0/8\n\
             relay_domains = example.com, example.org, example.net\n\
             relay_recipient_maps = {recipient_map}\n\
             transport_maps =\n\
             relay_transport = relay:[127.0.0.1]:{relay_to}\n\
             default_transport = smtp:[127.0.0.1]:{relay_to}\n\
             local_transport = error:5.1.1 local delivery disabled\n\
             local_recipient_maps =\n\
             alias_maps =\n\
             alias_database =\n\
             biff = no\n\
             append_dot_mydomain = no\n\
             smtpd_peername_lookup = no\n\
             local_header_rewrite_clients =\n\
             disable_mime_output_conversion = yes\n\
             smtp_line_length_limit = 0\n\
             header_size_limit = 4096000\n\
             {extra_main}",
            etc = etc.display(),
            spool = spool.display(),
            data = data.display(),
            log = d.join("maillog").display(),
            d = d.display(),
        );
        // Debian's master.cf without chroot, TLS manager or pipe services;
        // smtpd on 127.0.0.1:port only.
        let master_cf = format!(
            "# generated by sluice tests/util/services.rs\n\
             127.0.0.1:{port} inet n - n - - smtpd\n\
             pickup     unix  n - n 60 1 pickup\n\
             cleanup    unix  n - n - 0 cleanup\n\
             qmgr       unix  n - n 300 1 qmgr\n\
             rewrite    unix  - - n - - trivial-rewrite\n\
             bounce     unix  - - n - 0 bounce\n\
             defer      unix  - - n - 0 bounce\n\
             trace      unix  - - n - 0 bounce\n\
             verify     unix  - - n - 1 verify\n\
             flush      unix  n - n 1000? 0 flush\n\
             proxymap   unix  - - n - - proxymap\n\
             proxywrite unix  - - n - 1 proxymap\n\
             smtp       unix  - - n - - smtp\n\
             relay      unix  - - n - - smtp\n\
             lmtp       unix  - - n - - lmtp\n\
             showq      unix  n - n - - showq\n\
             error      unix  - - n - - error\n\
             retry      unix  - - n - - error\n\
             discard    unix  - - n - - discard\n\
             anvil      unix  - - n - 1 anvil\n\
             scache     unix  - - n - 1 scache\n\
             postlog    unix-dgram n - n - 1 postlogd\n\
             {extra_master}"
        );
        write_file(&etc.join("main.cf"), &main_cf);
        write_file(&etc.join("master.cf"), &master_cf);
        // Postfix waits (in 0.3 s steps) until main.cf is older than the
        // current second before it reads it: backdate the files.
        let old = SystemTime::now() - Duration::from_secs(60);
        for f in ["main.cf", "master.cf"] {
            fs::File::options()
                .write(true)
                .open(etc.join(f))
                .and_then(|f| f.set_modified(old))
                .unwrap_or_else(|e| panic!("backdate {f}: {e}"));
        }
        write_file(&spool.join("quick-start"), "");

        let log_path = d.join("maillog");
        let out = Command::new("postfix")
            .arg("-c")
            .arg(&etc)
            .arg("start")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run `postfix` (is postfix installed?): {e}"));
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let master_pid = fs::read_to_string(spool.join("pid/master.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        let fail = |what: &str, pid: Option<u32>| {
            if let Some(pid) = pid {
                stop_postfix_master(pid);
            }
            let log = read_lossy(&log_path);
            let msg = format!(
                "Postfix on 127.0.0.1:{port} (dir {}): {what}\n--- postfix start output ---\n{output}--- maillog ---\n{log}",
                d.display()
            );
            (msg, addr_in_use(&log) || addr_in_use(&output))
        };
        if !out.status.success() {
            return Err(fail(
                &format!("`postfix -c {} start` failed ({})", etc.display(), out.status),
                master_pid,
            ));
        }
        let Some(master_pid) = master_pid else {
            return Err(fail("no master pid file after start", None));
        };
        if let Err(e) = retry_for(Duration::from_secs(5), || {
            check_banner_tcp(port, &hostname).map_err(again)
        }) {
            return Err(fail(&format!("smtpd not answering: {e}"), Some(master_pid)));
        }
        let watchdog = Watchdog::new(master_pid, dir.path());
        Ok(Postfix {
            port,
            dir,
            master_pid,
            watchdog,
        })
    }

    /// Contents of its maillog_file, for assertion messages.
    pub fn log(&self) -> String {
        read_lossy(&self.dir.path().join("maillog"))
    }

    /// Stops it (`postfix stop`, as an admin would): its port refuses
    /// connections until [`Postfix::restart`].
    pub fn stop(&mut self) {
        drop(self.watchdog.take());
        stop_postfix_master(self.master_pid);
    }

    /// Starts it again on the same port with the same configuration and
    /// queue; returns once smtpd greets.
    pub fn restart(&mut self) {
        let d = self.dir.path().to_path_buf();
        let out = Command::new("postfix")
            .arg("-c")
            .arg(d.join("etc"))
            .arg("start")
            .stdin(Stdio::null())
            .output()
            .expect("run postfix");
        assert!(
            out.status.success(),
            "postfix start again: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.master_pid = fs::read_to_string(d.join("spool/pid/master.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .expect("master pid after restart");
        let hostname = format!("postfix-{}.sluice.test", self.port);
        retry_for(Duration::from_secs(10), || {
            check_banner_tcp(self.port, &hostname).map_err(again)
        })
        .unwrap_or_else(|e| panic!("Postfix did not come back: {e}"));
        self.watchdog = Watchdog::new(self.master_pid, self.dir.path());
    }

    /// The instance's directory (etc/, spool/, data/, maillog).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// SIGTERM to the master (it then signals its process group, which it
/// leads), then waits until the master and every process of its group are
/// gone; SIGKILL to the group after 10 s.
fn stop_postfix_master(pid: u32) {
    let leads_group = matches!(proc_stat(pid), Some((_, _, pgrp)) if pgrp == pid);
    send_signal("TERM", &pid.to_string());
    let gone = || !alive(pid) && (!leads_group || live_procs(|_, pgrp| pgrp == pid).is_empty());
    if !wait_until(Duration::from_secs(10), gone) {
        eprintln!("Postfix master {pid} did not stop within 10 s; killing its process group");
        if leads_group {
            send_signal("KILL", &format!("-{pid}"));
        } else {
            send_signal("KILL", &pid.to_string());
        }
        wait_until(Duration::from_secs(2), gone);
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- Postfix 127.0.0.1:{} maillog ---\n{}", self.port, self.log());
        }
        drop(self.watchdog.take());
        stop_postfix_master(self.master_pid);
    }
}

// ------------------------------------------------------------------ Dovecot

/// A private Dovecot LMTP server: inet listener on 127.0.0.1:port and a unix
/// socket listener at `socket_path()` (mode 0666); any recipient is accepted
/// (static userdb, allow_all_users, uid/gid `mail`), maildir per user under
/// the temp dir, ssl = no, hostname `dovecot-PORT.sluice.test`.
///
/// User to directory: `mail/%u` with `auth_username_format = %u`, an empty
/// `auth_username_chars` (any character allowed; the default refuses e.g.
/// '+') and an empty `recipient_delimiter`, so the directory is the RCPT
/// address exactly as sent (no lower-casing, no +detail stripping):
/// `RCPT TO:<User+x@Example.COM>` is stored under `mail/User+x@Example.COM/new/`.
///
/// `mail_save_crlf = yes`: messages are stored with CRLF line ends, i.e. as
/// they were on the wire (dot-unstuffed; a bare LF would become CRLF, a bare
/// CR is kept). Dovecot prepends trace headers:
/// ```text
/// Return-Path: <MAIL FROM address>
/// Delivered-To: RCPT address            (only if the transaction had ONE recipient)
/// Received: from LHLO-NAME ([127.0.0.1])  (unix socket: "from LHLO-NAME")
///     by dovecot-PORT.sluice.test with LMTP
///     id SESSION-ID
///     (envelope-from <MAIL FROM address>)
///     for <RCPT address>; DATE        (one recipient; else "...>); DATE" on the line above)
/// ```
/// (continuation lines start with a TAB).
pub struct Dovecot {
    pub port: u16,
    dir: TempDir,
    child: Child,
    watchdog: Option<Watchdog>,
}

impl Dovecot {
    /// Returns once both listeners answer with the LMTP greeting (~0.1 s).
    pub fn start() -> Dovecot {
        Self::start_with_users(&[])
    }

    /// Like `start`, but only `users` exist (others get 550 5.1.1 at
    /// RCPT); empty: every user exists. Clients from 127.0.0.0/8 are
    /// trusted (`login_trusted_networks`: XCLIENT is offered).
    pub fn start_with_users(users: &[&str]) -> Dovecot {
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            match Dovecot::try_start(free_port(), users) {
                Ok(d) => return d,
                Err((msg, retry)) if retry => last = msg,
                Err((msg, _)) => panic!("{msg}"),
            }
        }
        panic!("Dovecot did not start after {START_ATTEMPTS} attempts (ports taken); last:\n{last}");
    }

    fn try_start(port: u16, users: &[&str]) -> Result<Dovecot, (String, bool)> {
        let dir = service_tempdir("sluice-dovecot-");
        let d = dir.path();
        let (mail_uid, mail_gid) = (uid("mail"), gid("mail"));
        mkdir(&d.join("run"), 0o755, None);
        mkdir(&d.join("state"), 0o755, None);
        mkdir(&d.join("mail"), 0o755, Some((mail_uid, mail_gid)));
        let hostname = format!("dovecot-{port}.sluice.test");
        let userdb = if users.is_empty() {
            format!(
                "userdb {{\n  driver = static\n  args = uid=mail gid=mail home={d}/mail/%u allow_all_users=yes\n}}\n",
                d = d.display()
            )
        } else {
            let lines: Vec<String> = users.iter().map(|u| format!("{u}::::::\n")).collect();
            write_file(&d.join("users"), &lines.concat());
            format!(
                "userdb {{\n  driver = passwd-file\n  args = username_format=%u {d}/users\n  \
                 default_fields = uid=mail gid=mail home={d}/mail/%u\n}}\n",
                d = d.display()
            )
        };
        let conf = format!(
            "# generated by sluice tests/util/services.rs\n\
             protocols = lmtp\n\
             listen = 127.0.0.1\n\
             base_dir = {d}/run\n\
             state_dir = {d}/state\n\
             instance_name = dovecot-sluice-{port}\n\
             hostname = {hostname}\n\
             log_path = {d}/dovecot.log\n\
             ssl = no\n\
             mail_location = maildir:{d}/mail/%u\n\
             mail_save_crlf = yes\n\
             auth_username_format = %u\n\
             auth_username_chars =\n\
             recipient_delimiter =\n\
             first_valid_uid = 1\n\
             passdb {{\n  driver = static\n  args = nopassword=y\n}}\n\
             login_trusted_networks = 127.0.0.0/8\n\
             {userdb}\
             service lmtp {{\n\
             \x20 inet_listener lmtp {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n\
             \x20 unix_listener lmtp {{\n    mode = 0666\n  }}\n\
             }}\n",
            d = d.display(),
        );
        let conf_path = d.join("dovecot.conf");
        write_file(&conf_path, &conf);
        let out = fs::File::create(d.join("stderr.log")).expect("create stderr.log");
        let mut child = Command::new("dovecot")
            .arg("-F")
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `dovecot` (is dovecot-core installed?): {e}"));
        let socket = d.join("run/lmtp");
        let ready = retry_for(Duration::from_secs(10), || {
            if let Ok(Some(st)) = child.try_wait() {
                return Err((format!("dovecot exited: {st}"), true));
            }
            check_banner_tcp(port, &hostname).map_err(again)?;
            check_banner_unix(&socket, &hostname).map_err(again)
        });
        if let Err(e) = ready {
            let exited = matches!(child.try_wait(), Ok(Some(_)));
            if !exited {
                stop_child(&mut child, "dovecot");
            }
            let text = format!(
                "{}{}",
                read_lossy(&d.join("stderr.log")),
                read_lossy(&d.join("dovecot.log"))
            );
            let msg = format!(
                "Dovecot LMTP on 127.0.0.1:{port} (dir {}) did not start: {e}\n--- dovecot output and log ---\n{text}",
                d.display()
            );
            return Err((msg, addr_in_use(&text)));
        }
        let watchdog = Watchdog::new(child.id(), dir.path());
        Ok(Dovecot {
            port,
            dir,
            child,
            watchdog,
        })
    }

    /// The LMTP unix socket (`DIR/run/lmtp`).
    pub fn socket_path(&self) -> PathBuf {
        self.dir.path().join("run/lmtp")
    }

    /// Raw bytes of every delivered message for `user` (the RCPT address
    /// exactly as sent, e.g. "user@example.com"), trace headers included,
    /// from `mail/USER/new/` and `cur/`, in delivery order: sorted by the
    /// maildir name's time (seconds, then microseconds, compared as numbers),
    /// then by name. Empty if nothing was delivered to `user`.
    pub fn messages(&self, user: &str) -> Vec<Vec<u8>> {
        assert!(
            !user.is_empty() && !user.contains('/') && user != "." && user != "..",
            "bad user {user:?}"
        );
        let root = self.dir.path().join("mail").join(user);
        let mut files: Vec<((u64, u64), String, PathBuf)> = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(rd) = fs::read_dir(root.join(sub)) else { continue };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') || !e.file_type().map(|t| t.is_file()).unwrap_or(false) {
                    continue;
                }
                files.push((maildir_time(&name), name, e.path()));
            }
        }
        files.sort();
        files
            .into_iter()
            .filter_map(|(_, _, p)| fs::read(&p).ok()) // a file may move new/ -> cur/ meanwhile
            .collect()
    }

    pub fn log(&self) -> String {
        read_lossy(&self.dir.path().join("dovecot.log"))
    }

    /// The instance's directory (dovecot.conf, run/, state/, mail/, dovecot.log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// (seconds, microseconds) from a Dovecot maildir name "SECS.MUSECSP...".
fn maildir_time(name: &str) -> (u64, u64) {
    let mut parts = name.splitn(2, '.');
    let secs = parts.next().and_then(|s| s.parse().ok()).unwrap_or(u64::MAX);
    let usecs = parts
        .next()
        .and_then(|r| r.strip_prefix('M'))
        .map(|r| r.chars().take_while(|c| c.is_ascii_digit()).collect::<String>())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (secs, usecs)
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- Dovecot 127.0.0.1:{} log ---\n{}", self.port, self.log());
        }
        drop(self.watchdog.take());
        let master = self.child.id();
        let children = live_procs(|ppid, _| ppid == master);
        let others: Vec<u32> = children
            .iter()
            .copied()
            .filter(|&p| proc_comm(p).as_deref() != Some("log"))
            .collect();
        send_signal("TERM", &master.to_string());
        // The master stops its services, then tells its `log` process to
        // quit, which lingers up to 1 s for clients (and the master with it).
        // Once every other service process is gone, nothing is left to lose:
        // give it 150 ms, then SIGKILL the master; `log` exits when it sees
        // the master gone.
        wait_until(Duration::from_secs(2), || others.iter().all(|&p| !alive(p)));
        if !wait_child(&mut self.child, Duration::from_millis(150)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if !wait_until(Duration::from_secs(5), || children.iter().all(|&p| !alive(p))) {
            for p in children.iter().filter(|&&p| alive(p)) {
                send_signal("KILL", &p.to_string());
            }
        }
    }
}

// ------------------------------------------------------------------ smtp-sink

/// Separator smtp-sink writes (-S) before each message in its dump file.
const SINK_MARK: &[u8] = b"\x01\x02sluice-smtp-sink\x02\x01\n";
const SINK_MARK_ARG: &str = "\\001\\002sluice-smtp-sink\\002\\001\\n";

/// Postfix's smtp-sink on 127.0.0.1:port (ESMTP, PIPELINING, 8BITMIME, DSN
/// announced; every command accepted), hostname `sink-PORT.sluice.test`.
/// Run as `smtp-sink -c -u root -h HOST -S MARK -D DIR/dump 127.0.0.1:PORT 256`:
/// `-c` prints `sess=N quit=N mesg=N\r` to DIR/counters after each message
/// (after the message was appended to the dump), `-D` appends every complete
/// transaction to DIR/dump.
pub struct SmtpSink {
    pub port: u16,
    dir: TempDir,
    child: Child,
    watchdog: Option<Watchdog>,
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            match SmtpSink::try_start(free_port()) {
                Ok(s) => return s,
                Err((msg, retry)) if retry => last = msg,
                Err((msg, _)) => panic!("{msg}"),
            }
        }
        panic!("smtp-sink did not start after {START_ATTEMPTS} attempts (ports taken); last:\n{last}");
    }

    fn try_start(port: u16) -> Result<SmtpSink, (String, bool)> {
        let dir = service_tempdir("sluice-sink-");
        let d = dir.path();
        let hostname = format!("sink-{port}.sluice.test");
        let counters = fs::File::create(d.join("counters")).expect("create counters");
        let stderr = fs::File::create(d.join("stderr.log")).expect("create stderr.log");
        let mut cmd = Command::new("smtp-sink");
        cmd.arg("-c");
        if am_root() {
            cmd.args(["-u", "root"]); // required when run by root
        }
        cmd.args(["-h", &hostname, "-S", SINK_MARK_ARG, "-D"])
            .arg(d.join("dump"))
            .arg(format!("127.0.0.1:{port}"))
            .arg("256")
            .stdin(Stdio::null())
            .stdout(counters)
            .stderr(stderr);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `smtp-sink` (is postfix installed?): {e}"));
        let ready = retry_for(Duration::from_secs(5), || {
            if let Ok(Some(st)) = child.try_wait() {
                return Err((format!("smtp-sink exited: {st}"), true));
            }
            check_banner_tcp(port, &hostname).map_err(again)
        });
        if let Err(e) = ready {
            let _ = child.kill();
            let _ = child.wait();
            let text = read_lossy(&d.join("stderr.log"));
            let msg = format!("smtp-sink on 127.0.0.1:{port} did not start: {e}\n--- stderr ---\n{text}");
            return Err((msg, addr_in_use(&text)));
        }
        let watchdog = Watchdog::new(child.id(), dir.path());
        Ok(SmtpSink {
            port,
            dir,
            child,
            watchdog,
        })
    }

    /// Number of complete messages received so far (final "." seen).
    pub fn count(&self) -> usize {
        let raw = fs::read(self.dir.path().join("counters")).unwrap_or_default();
        // Records end with '\r'; ignore a record still being written.
        let Some(end) = raw.iter().rposition(|&b| b == b'\r') else {
            return 0;
        };
        let text = String::from_utf8_lossy(&raw[..end]);
        let rec = text.rsplit('\r').next().unwrap_or("");
        rec.split_whitespace()
            .find_map(|f| f.strip_prefix("mesg="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    /// The first `count()` messages, in arrival order, as smtp-sink stored
    /// them with its own X-Client-*/X-Helo/X-Mail/X-Rcpt-Args and Received
    /// headers removed, with CRLF line ends restored. smtp-sink drops every
    /// CR it receives (so a bare CR is lost and a bare LF comes back as CRLF)
    /// and removes dot-stuffing; otherwise the bytes are those sent.
    pub fn messages(&self) -> Vec<Vec<u8>> {
        let n = self.count();
        let dump = fs::read(self.dir.path().join("dump")).unwrap_or_default();
        split_on(&dump, SINK_MARK)
            .into_iter()
            .filter(|c| !c.is_empty())
            .take(n)
            .map(|chunk| {
                let body = strip_sink_headers(chunk);
                // The dump adds one "\n" (from the final ".\r\n") after the data.
                let body = body.strip_suffix(b"\n").unwrap_or(body);
                let mut out = Vec::with_capacity(body.len() + body.len() / 32);
                for &b in body {
                    if b == b'\n' {
                        out.push(b'\r');
                    }
                    out.push(b);
                }
                out
            })
            .collect()
    }

    /// What smtp-sink wrote to stderr (and its counters line), for messages.
    pub fn log(&self) -> String {
        format!(
            "{}counters: {}",
            read_lossy(&self.dir.path().join("stderr.log")),
            read_lossy(&self.dir.path().join("counters")).replace('\r', " | ")
        )
    }
}

fn split_on<'a>(hay: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + sep.len() <= hay.len() {
        if &hay[i..i + sep.len()] == sep {
            out.push(&hay[start..i]);
            i += sep.len();
            start = i;
        } else {
            i += 1;
        }
    }
    out.push(&hay[start..]);
    out
}

/// Skips smtp-sink's own header lines: "X-Client-Addr" ... "X-Rcpt-Args",
/// then its 3-line "Received: from ...\n\tby HOST (smtp-sink) ...;\n\tDATE\n".
fn strip_sink_headers(chunk: &[u8]) -> &[u8] {
    let mut rest = chunk;
    let mut after_received: Option<usize> = None;
    while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
        let line = &rest[..nl];
        match after_received {
            None if line.starts_with(b"Received: ") => after_received = Some(0),
            None => {}
            Some(n) => after_received = Some(n + 1),
        }
        rest = &rest[nl + 1..];
        if after_received == Some(2) {
            return rest;
        }
    }
    chunk // not smtp-sink's format: leave it alone
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        drop(self.watchdog.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------ DNS

/// What `DnsServer::start` asks (type A) until it is answered with NOERROR:
/// the RFC 5782 test entry 127.0.0.2, which a DNSBL zone for `bl.test` (such
/// as the shared corpus's `dnsbl/bl.test.zone`) must list.
const DNS_READY_NAME: &str = "2.0.0.127.bl.test";
const DNS_TYPE_A: u16 = 1;

/// A UDP socket and a TCP listener bound to the same free port on 127.0.0.1.
fn bind_udp_tcp() -> (UdpSocket, TcpListener) {
    for _ in 0..100 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind udp 127.0.0.1:0");
        let port = udp.local_addr().expect("local_addr").port();
        if let Ok(tcp) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            return (udp, tcp);
        }
    }
    panic!("found no port on 127.0.0.1 free for both UDP and TCP in 100 tries");
}

/// A port on 127.0.0.1 that is free for both UDP and TCP (both bound, then
/// dropped; as racy as free_port()).
pub fn free_udp_tcp_port() -> u16 {
    bind_udp_tcp().0.local_addr().expect("local_addr").port()
}

/// A DNS query (RFC 1035 4.1): header with `id`, RD set, one question
/// `name` (dotted, no escapes), type `qtype`, class IN.
fn dns_query_packet(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut p = Vec::with_capacity(18 + name.len());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; QDCOUNT 1, AN/NS/AR 0
    for label in name.trim_end_matches('.').split('.') {
        assert!(!label.is_empty() && label.len() < 64, "bad DNS name {name:?}");
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&1u16.to_be_bytes()); // class IN
    p
}

/// (RCODE, ANCOUNT) of `r` if it is a response to query `id`.
fn dns_response(id: u16, r: &[u8]) -> Result<(u8, u16), String> {
    if r.len() < 12 {
        return Err(format!("short DNS message ({} bytes)", r.len()));
    }
    if r[..2] != id.to_be_bytes() || r[2] & 0x80 == 0 {
        return Err(format!("not a response to query id {id}"));
    }
    Ok((r[3] & 0x0f, u16::from_be_bytes([r[6], r[7]])))
}

/// Asks 127.0.0.1:port one question over UDP or TCP (2-byte length prefix,
/// RFC 1035 4.2.2), waiting up to `limit`. Returns (our local port, RCODE,
/// ANCOUNT) of the response.
fn dns_ask(port: u16, name: &str, qtype: u16, tcp: bool, limit: Duration) -> Result<(u16, u8, u16), String> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let id = (nanos ^ (nanos >> 16) ^ std::process::id()) as u16;
    let query = dns_query_packet(id, name, qtype);
    let server = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    if tcp {
        let mut s = TcpStream::connect_timeout(&server, limit).map_err(|e| format!("tcp connect: {e}"))?;
        s.set_read_timeout(Some(limit)).ok();
        s.set_write_timeout(Some(limit)).ok();
        let local = s.local_addr().map_err(|e| format!("local_addr: {e}"))?.port();
        let mut msg = (query.len() as u16).to_be_bytes().to_vec();
        msg.extend_from_slice(&query);
        s.write_all(&msg).map_err(|e| format!("tcp write: {e}"))?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).map_err(|e| format!("tcp read: {e}"))?;
        let mut r = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut r).map_err(|e| format!("tcp read: {e}"))?;
        let (rcode, ancount) = dns_response(id, &r)?;
        return Ok((local, rcode, ancount));
    }
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("udp bind: {e}"))?;
    let local = s.local_addr().map_err(|e| format!("local_addr: {e}"))?.port();
    // Connected: a closed port then fails recv with ECONNREFUSED at once.
    s.connect(server).map_err(|e| format!("udp connect: {e}"))?;
    s.send(&query).map_err(|e| format!("udp send: {e}"))?;
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no response to query id {id} within {limit:?}"));
        }
        s.set_read_timeout(Some(left)).ok();
        let n = s.recv(&mut buf).map_err(|e| format!("udp recv: {e}"))?;
        if let Ok((rcode, ancount)) = dns_response(id, &buf[..n]) {
            return Ok((local, rcode, ancount));
        }
    }
}

/// A real DNS server (dnslib's zoneresolver, `python3 -m dnslib.zoneresolver`)
/// serving `zone` (a zone-file path) on 127.0.0.1:port over UDP and TCP.
/// Answers only from the zone (no recursion, no SOA in negative answers):
/// any question without a matching record gets NXDOMAIN, also a name that
/// has records of other types only (dnslib's behaviour). Its log (`dns.log` in its temp dir, see `log()`) has a `Request:` and a
/// `Reply:` line per query. Needs `dnslib` for `python3` (.ci/run installs it
/// with `python3 -m pip install dnslib`).
///
/// For the DNSBL zone /work/shared/corpora/dnsbl/bl.test.zone (TTL 60):
/// `2.0.0.127.bl.test`, `test.bl.test` and the IPv6 nibble name for
/// ::FFFF:7F00:2 answer A 127.0.0.2 and a TXT; `1.0.0.127.bl.test`,
/// `invalid.bl.test` and ::FFFF:7F00:1 get NXDOMAIN.
pub struct DnsServer {
    pub port: u16,
    dir: TempDir,
    child: Child,
    watchdog: Option<Watchdog>,
}

impl DnsServer {
    /// Returns once it answers `2.0.0.127.bl.test` A with NOERROR over both
    /// UDP and TCP (0.1-0.4 s; the zone must list that name).
    pub fn start(zone: &Path) -> DnsServer {
        assert!(zone.is_file(), "DNS zone file {} does not exist", zone.display());
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            match DnsServer::try_start(zone, free_udp_tcp_port()) {
                Ok(s) => return s,
                Err((msg, retry)) if retry => last = msg,
                Err((msg, _)) => panic!("{msg}"),
            }
        }
        panic!("the DNS server did not start after {START_ATTEMPTS} attempts (ports taken); last:\n{last}");
    }

    fn try_start(zone: &Path, port: u16) -> Result<DnsServer, (String, bool)> {
        let dir = service_tempdir("sluice-dns-");
        let d = dir.path();
        let log_path = d.join("dns.log");
        let out = fs::File::create(&log_path).expect("create dns.log");
        // -u: unbuffered, so the log is complete whenever it is read.
        let mut child = Command::new("python3")
            .args(["-u", "-m", "dnslib.zoneresolver", "--zone"])
            .arg(zone)
            .args(["--address", "127.0.0.1", "--port", &port.to_string(), "--tcp"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `python3`: {e}"));
        // dnslib binds its UDP socket with SO_REUSEADDR, so a second server
        // on the same port may bind it too: a response counts only if our
        // server logged the query, from the port we sent it from.
        let ready = retry_for(Duration::from_secs(10), || {
            if let Ok(Some(st)) = child.try_wait() {
                return Err((format!("dnslib zoneresolver exited: {st}"), true));
            }
            for (tcp, proto) in [(false, "udp"), (true, "tcp")] {
                let limit = Duration::from_millis(500);
                let (local, rcode, ancount) = dns_ask(port, DNS_READY_NAME, DNS_TYPE_A, tcp, limit).map_err(again)?;
                let tag = format!("Request: [127.0.0.1:{local}] ({proto})");
                if !read_lossy(&log_path).contains(&tag) {
                    return Err(again(format!("answered over {proto}, but not by our server")));
                }
                if rcode != 0 || ancount == 0 {
                    let msg = format!(
                        "{DNS_READY_NAME} A got RCODE {rcode} with {ancount} answers over {proto}, \
                         wanted NOERROR with an answer (does the zone list it?)"
                    );
                    return Err((msg, true));
                }
            }
            Ok(())
        });
        if let Err(e) = ready {
            stop_child(&mut child, "dnslib zoneresolver");
            let text = read_lossy(&log_path);
            let hint = if text.contains("No module named") {
                "\n(dnslib missing? install it: python3 -m pip install dnslib)"
            } else {
                ""
            };
            let msg = format!(
                "DNS server on 127.0.0.1:{port} (zone {}) did not start: {e}{hint}\n--- its output ---\n{text}",
                zone.display()
            );
            return Err((msg, addr_in_use(&text)));
        }
        let watchdog = Watchdog::new(child.id(), dir.path());
        Ok(DnsServer {
            port,
            dir,
            child,
            watchdog,
        })
    }

    /// Its output: the zone as loaded, then a `Request:` and a `Reply:` line
    /// per query (and any Python error).
    pub fn log(&self) -> String {
        read_lossy(&self.dir.path().join("dns.log"))
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- DNS server 127.0.0.1:{} log ---\n{}", self.port, self.log());
        }
        drop(self.watchdog.take());
        stop_child(&mut self.child, "dnslib zoneresolver");
    }
}

/// A UDP+TCP port on 127.0.0.1 that takes DNS queries and never answers (a
/// "black hole"), for deadline tests: a UDP socket that is never read and a
/// TCP listener on the same port whose connections are accepted (by a
/// thread of this process), held open and never read or written. Both are
/// closed on Drop. No process is started.
pub struct BlackHoleDns {
    pub port: u16,
    udp: UdpSocket,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl BlackHoleDns {
    pub fn start() -> BlackHoleDns {
        let (udp, tcp) = bind_udp_tcp();
        let port = udp.local_addr().expect("local_addr").port();
        tcp.set_nonblocking(true).expect("set_nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let acceptor = std::thread::Builder::new()
            .name(format!("black-hole-dns-{port}"))
            .spawn(move || {
                let mut held = Vec::new();
                while !flag.load(Ordering::Relaxed) {
                    match tcp.accept() {
                        Ok((conn, _)) => held.push(conn),
                        Err(_) => sleep(Duration::from_millis(10)),
                    }
                }
            })
            .expect("spawn black hole acceptor");
        BlackHoleDns {
            port,
            udp,
            stop,
            acceptor: Some(acceptor),
        }
    }
}

impl Drop for BlackHoleDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

/// A private clamd (Debian clamav-daemon) with only the shared test
/// signatures (`corpora/clamav-db`), on 127.0.0.1:port and a unix socket.
pub struct Clamd {
    pub port: u16,
    dir: TempDir,
    child: Child,
}

impl Clamd {
    /// Returns once clamd answers zPING with PONG.
    pub fn start(db: &Path) -> Clamd {
        Self::start_with(db, "")
    }

    /// As [`Clamd::start`], with more clamd.conf lines (`extra`, each
    /// ending in a newline), e.g. "AlertExceedsMax yes\n".
    pub fn start_with(db: &Path, extra: &str) -> Clamd {
        let dir = service_tempdir("sluice-clamd-");
        let port = free_port();
        let conf = dir.path().join("clamd.conf");
        write_file(
            &conf,
            &format!(
                "Foreground yes\nDatabaseDirectory {}\nTCPSocket {port}\nTCPAddr 127.0.0.1\nLocalSocket {}\n\
                 User root\nLogFile {}\nStreamMaxLength 30M\nMaxThreads 4\n{extra}",
                db.display(),
                dir.path().join("clamd.sock").display(),
                dir.path().join("clamd.log").display()
            ),
        );
        let child = Command::new("clamd")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("clamd installed (apt-get install clamav-daemon)");
        let c = Clamd { port, dir, child };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
                let mut buf = [0u8; 16];
                if s.write_all(b"zPING\0").is_ok() && s.read(&mut buf).is_ok_and(|n| buf[..n].starts_with(b"PONG")) {
                    return c;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "clamd did not answer PING:\n{}",
                c.log()
            );
            sleep(std::time::Duration::from_millis(50));
        }
    }

    pub fn socket_path(&self) -> PathBuf {
        self.dir.path().join("clamd.sock")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("clamd.log")).unwrap_or_default()
    }

    /// Stops clamd now (a scanner outage mid-run).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Clamd {
    fn drop(&mut self) {
        self.stop();
    }
}

// ------------------------------------------------------------ Dovecot IMAP + IMAPSieve

/// A private Dovecot IMAP server on 127.0.0.1:port (any user, any password,
/// maildir under the temp dir, uid/gid `mail`) with IMAPSieve set up as the
/// README's "Training the classifier" recipe: copying a message into
/// `Junk` pipes it to `sluice learn --spam -`, copying it out of `Junk`
/// to `--forget --spam -` and `--ham -`, with the model `model`.
pub struct DovecotImap {
    pub port: u16,
    dir: TempDir,
    child: Child,
    watchdog: Option<Watchdog>,
}

impl DovecotImap {
    pub fn start(sluice: &Path, model: &Path) -> DovecotImap {
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            match DovecotImap::try_start(free_port(), sluice, model) {
                Ok(d) => return d,
                Err((msg, retry)) if retry => last = msg,
                Err((msg, _)) => panic!("{msg}"),
            }
        }
        panic!("Dovecot IMAP did not start after {START_ATTEMPTS} attempts; last:\n{last}");
    }

    fn try_start(port: u16, sluice: &Path, model: &Path) -> Result<DovecotImap, (String, bool)> {
        let dir = service_tempdir("sluice-imap-");
        let d = dir.path();
        let (mail_uid, mail_gid) = (uid("mail"), gid("mail"));
        mkdir(&d.join("run"), 0o755, None);
        mkdir(&d.join("state"), 0o755, None);
        mkdir(&d.join("mail"), 0o755, Some((mail_uid, mail_gid)));
        mkdir(&d.join("sieve"), 0o755, None);
        mkdir(&d.join("pipe"), 0o755, None);
        let hostname = format!("imap-{port}.sluice.test");
        let script = format!(
            "#!/bin/sh\n\
             if [ \"$1\" = ham ]; then\n\
             \x20 tee {d}/msg.$$ | {s} learn -o {m} --forget --spam - >/dev/null 2>&1\n\
             \x20 {s} learn -o {m} --ham - < {d}/msg.$$; rc=$?; rm -f {d}/msg.$$; exit $rc\n\
             else\n\
             \x20 exec {s} learn -o {m} --spam -\n\
             fi\n",
            d = d.join("run").display(),
            s = sluice.display(),
            m = model.display()
        );
        let learn = d.join("pipe/sluice-learn");
        write_file(&learn, &script);
        {
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(&learn, fs::Permissions::from_mode(0o755)).expect("chmod");
            fs::set_permissions(d.join("run"), fs::Permissions::from_mode(0o1777)).expect("chmod");
        }
        write_file(
            &d.join("sieve/learn-spam.sieve"),
            "require [\"vnd.dovecot.pipe\", \"copy\", \"imapsieve\"];\npipe :copy \"sluice-learn\" [\"spam\"];\n",
        );
        write_file(
            &d.join("sieve/learn-ham.sieve"),
            "require [\"vnd.dovecot.pipe\", \"copy\", \"imapsieve\", \"environment\", \"variables\"];\n\
             if environment :matches \"imap.mailbox\" \"Trash\" { stop; }\n\
             pipe :copy \"sluice-learn\" [\"ham\"];\n",
        );
        let conf = format!(
            "# generated by sluice tests/util/services.rs\n\
             protocols = imap\n\
             listen = 127.0.0.1\n\
             base_dir = {d}/run\n\
             state_dir = {d}/state\n\
             instance_name = dovecot-imap-{port}\n\
             hostname = {hostname}\n\
             log_path = {d}/dovecot.log\n\
             ssl = no\n\
             disable_plaintext_auth = no\n\
             mail_location = maildir:{d}/mail/%u\n\
             first_valid_uid = 1\n\
             passdb {{\n  driver = static\n  args = nopassword=y\n}}\n\
             userdb {{\n  driver = static\n  args = uid=mail gid=mail home={d}/mail/%u allow_all_users=yes\n}}\n\
             namespace inbox {{\n  inbox = yes\n  mailbox Junk {{\n    auto = create\n    special_use = \\Junk\n  }}\n}}\n\
             service imap-login {{\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n}}\n\
             protocol imap {{\n  mail_plugins = $mail_plugins imap_sieve\n}}\n\
             plugin {{\n\
             \x20 sieve_plugins = sieve_imapsieve sieve_extprograms\n\
             \x20 sieve_pipe_bin_dir = {d}/pipe\n\
             \x20 sieve_global_extensions = +vnd.dovecot.pipe +vnd.dovecot.environment\n\
             \x20 imapsieve_mailbox1_name = Junk\n\
             \x20 imapsieve_mailbox1_causes = COPY APPEND\n\
             \x20 imapsieve_mailbox1_before = file:{d}/sieve/learn-spam.sieve\n\
             \x20 imapsieve_mailbox2_name = *\n\
             \x20 imapsieve_mailbox2_from = Junk\n\
             \x20 imapsieve_mailbox2_causes = COPY\n\
             \x20 imapsieve_mailbox2_before = file:{d}/sieve/learn-ham.sieve\n\
             }}\n",
            d = d.display(),
        );
        let conf_path = d.join("dovecot.conf");
        write_file(&conf_path, &conf);
        // The scripts are compiled here (the imap process may not write
        // beside them).
        for s in ["learn-spam", "learn-ham"] {
            let out = Command::new("sievec")
                .arg("-c")
                .arg(&conf_path)
                .arg(d.join(format!("sieve/{s}.sieve")))
                .output()
                .unwrap_or_else(|e| panic!("cannot run `sievec` (is dovecot-sieve installed?): {e}"));
            assert!(
                out.status.success(),
                "sievec {s}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let out = fs::File::create(d.join("stderr.log")).expect("create stderr.log");
        let mut child = Command::new("dovecot")
            .arg("-F")
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `dovecot` (is dovecot-imapd installed?): {e}"));
        let ready = retry_for(Duration::from_secs(10), || {
            if let Ok(Some(st)) = child.try_wait() {
                return Err((format!("dovecot exited: {st}"), true));
            }
            let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| again(e.to_string()))?;
            c.set_read_timeout(Some(Duration::from_secs(2))).ok();
            let mut buf = [0u8; 256];
            let n = c.read(&mut buf).map_err(|e| again(e.to_string()))?;
            let _ = c.write_all(b"a LOGOUT\r\n");
            if buf[..n].starts_with(b"* OK") {
                Ok(())
            } else {
                Err(again(format!("greeting {:?}", String::from_utf8_lossy(&buf[..n]))))
            }
        });
        if let Err(e) = ready {
            if !matches!(child.try_wait(), Ok(Some(_))) {
                stop_child(&mut child, "dovecot");
            }
            let text = format!(
                "{}{}",
                read_lossy(&d.join("stderr.log")),
                read_lossy(&d.join("dovecot.log"))
            );
            let msg = format!("Dovecot IMAP on 127.0.0.1:{port} did not start: {e}\n{text}");
            return Err((msg, addr_in_use(&text)));
        }
        let watchdog = Watchdog::new(child.id(), dir.path());
        Ok(DovecotImap {
            port,
            dir,
            child,
            watchdog,
        })
    }

    /// Its log, for assertion messages.
    pub fn log(&self) -> String {
        read_lossy(&self.dir.path().join("dovecot.log"))
    }
}

impl Drop for DovecotImap {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- Dovecot IMAP log ---\n{}", self.log());
        }
        drop(self.watchdog.take());
        stop_child(&mut self.child, "dovecot");
    }
}

// ------------------------------------------------------------------ HAProxy

/// One server behind [`HAProxy`]: sluice's PROXY-protocol listener on
/// 127.0.0.1:`smtp`, health-checked with `option httpchk GET /healthz` on
/// its metrics listener 127.0.0.1:`health`.
#[derive(Debug, Clone, Copy)]
pub struct Balanced {
    pub smtp: u16,
    pub health: u16,
}

/// HAProxy in TCP mode on 127.0.0.1:port, balancing (round robin) over
/// its servers `s0`, `s1`, ... with `send-proxy-v2`, each checked every
/// 200 ms with `GET /healthz`, as the README's "Behind a load balancer"
/// section configures it. Run in the foreground (`haproxy -db -f
/// DIR/haproxy.cfg`), with a stats socket (DIR/admin.sock) to ask each
/// server's state; it is ready when the stats socket answers (HAProxy
/// binds every listener before it serves the socket).
pub struct HAProxy {
    pub port: u16,
    bind: Ipv4Addr,
    dir: TempDir,
    child: Child,
    watchdog: Option<Watchdog>,
}

impl HAProxy {
    pub fn start(servers: &[Balanced]) -> HAProxy {
        HAProxy::start_in(None, Ipv4Addr::LOCALHOST, servers)
    }

    /// [`start`](Self::start) inside network namespace `netns` (run with
    /// `ip netns exec`), its frontend on `bind`.
    pub fn start_in(netns: Option<&str>, bind: Ipv4Addr, servers: &[Balanced]) -> HAProxy {
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            match HAProxy::try_start(netns, bind, free_port(), servers) {
                Ok(h) => return h,
                Err((msg, retry)) if retry => last = msg,
                Err((msg, _)) => panic!("{msg}"),
            }
        }
        panic!("haproxy did not start after {START_ATTEMPTS} attempts (ports taken); last:\n{last}");
    }

    fn try_start(
        netns: Option<&str>,
        bind: Ipv4Addr,
        port: u16,
        servers: &[Balanced],
    ) -> Result<HAProxy, (String, bool)> {
        let dir = service_tempdir("sluice-haproxy-");
        let d = dir.path();
        let lines: String = servers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                format!(
                    "    server s{i} 127.0.0.1:{} send-proxy-v2 check port {} inter 200ms fall 2 rise 1\n",
                    s.smtp, s.health
                )
            })
            .collect();
        let config = format!(
            "global\n\
             \x20   log stderr format raw local0\n\
             \x20   maxconn 256\n\
             \x20   stats socket {sock} mode 600 level admin\n\
             defaults\n\
             \x20   mode tcp\n\
             \x20   log global\n\
             \x20   option tcplog\n\
             \x20   timeout connect 2s\n\
             \x20   timeout client 60s\n\
             \x20   timeout server 60s\n\
             frontend smtp\n\
             \x20   bind {bind}:{port}\n\
             \x20   default_backend sluice\n\
             backend sluice\n\
             \x20   balance roundrobin\n\
             \x20   option httpchk GET /healthz\n\
             \x20   http-check expect status 200\n\
             {lines}",
            sock = d.join("admin.sock").display(),
        );
        write_file(&d.join("haproxy.cfg"), &config);
        let log = fs::File::create(d.join("haproxy.log")).expect("create haproxy.log");
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "haproxy"]);
                c
            }
            None => Command::new("haproxy"),
        };
        let mut child = cmd
            .args(["-db", "-f"])
            .arg(d.join("haproxy.cfg"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup haproxy.log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `haproxy` (is it installed?): {e}"));
        let ready = retry_for(Duration::from_secs(5), || {
            if let Ok(Some(st)) = child.try_wait() {
                return Err((format!("haproxy exited: {st}"), true));
            }
            // Not a connection to the frontend: it would be relayed to a
            // server as a client's.
            UnixStream::connect(d.join("admin.sock"))
                .map(drop)
                .map_err(|e| again(format!("stats socket: {e}")))
        });
        if let Err(e) = ready {
            let _ = child.kill();
            let _ = child.wait();
            let text = read_lossy(&d.join("haproxy.log"));
            let msg = format!("haproxy on {bind}:{port} did not start: {e}\n--- log ---\n{text}");
            return Err((msg, text.contains("cannot bind socket") || addr_in_use(&text)));
        }
        let watchdog = Watchdog::new(child.id(), dir.path());
        Ok(HAProxy {
            port,
            bind,
            dir,
            child,
            watchdog,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.bind, self.port))
    }

    /// A command on the stats socket, and its answer.
    fn ask(&self, command: &str) -> String {
        let mut s = UnixStream::connect(self.dir.path().join("admin.sock")).expect("haproxy stats socket");
        s.set_read_timeout(Some(Duration::from_secs(3))).ok();
        s.write_all(format!("{command}\n").as_bytes())
            .expect("write to the stats socket");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    /// The state of each server of the backend as its health checks see
    /// it ("UP", "DOWN", ...), from `show stat`.
    pub fn server_states(&self) -> Vec<(String, String)> {
        let stat = self.ask("show stat");
        let mut lines = stat.lines();
        let header: Vec<&str> = lines.next().unwrap_or("").trim_start_matches("# ").split(',').collect();
        let col = |name: &str| header.iter().position(|h| *h == name);
        let (Some(px), Some(sv), Some(st)) = (col("pxname"), col("svname"), col("status")) else {
            panic!("unexpected `show stat` answer:\n{stat}");
        };
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| f.len() > st && f[px] == "sluice" && f[sv] != "BACKEND")
            .map(|f| (f[sv].to_string(), f[st].to_string()))
            .collect()
    }

    /// Waits until server `name`'s health checks put it in `state`
    /// ("UP", "DOWN"); panics with every state and HAProxy's log after
    /// `limit`.
    pub fn wait_state(&self, name: &str, state: &str, limit: Duration) {
        let is = || self.server_states().iter().any(|(n, s)| n == name && s == state);
        if !wait_until(limit, is) {
            panic!(
                "{name} not {state} after {limit:?}: {:?}\n--- haproxy log ---\n{}",
                self.server_states(),
                self.log()
            );
        }
    }

    /// HAProxy's log (tcplog lines, health check changes).
    pub fn log(&self) -> String {
        read_lossy(&self.dir.path().join("haproxy.log"))
    }
}

impl Drop for HAProxy {
    fn drop(&mut self) {
        drop(self.watchdog.take());
        stop_child(&mut self.child, "haproxy");
    }
}

// ------------------------------------------------------------------ Redis

/// A private redis-server (Debian redis-server; Valkey would do) on
/// 127.0.0.1:port with no persistence (`--save ''`, no AOF): the shared
/// state of `[cluster]`. `kill` stops it at once (SIGKILL: the store lost
/// mid-run), `restart` starts it again on the same port, empty.
pub struct Redis {
    pub port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl Redis {
    /// Returns once the server answers PING.
    pub fn start() -> Redis {
        for _ in 0..START_ATTEMPTS {
            // A port taken in the meantime: the server exits; try another
            // (the failed one is killed on drop).
            let mut r = Redis {
                port: free_port(),
                dir: service_tempdir("sluice-redis-"),
                child: None,
            };
            if r.spawn() {
                return r;
            }
        }
        panic!("redis-server did not start");
    }

    /// The address for `cluster.redis`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The same server over its unix socket (`redis+unix://`): reachable
    /// from nodes in a network namespace of their own.
    pub fn unix_url(&self) -> String {
        format!("redis+unix://{}", self.dir.path().join("redis.sock").display())
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--daemonize", "no", "--protected-mode", "no"])
            .arg("--unixsocket")
            .arg(self.dir.path().join("redis.sock"))
            .args(["--unixsocketperm", "700"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server installed (apt-get install redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return true;
            }
            if let Some(c) = self.child.as_mut()
                && matches!(c.try_wait(), Ok(Some(_)))
            {
                return false;
            }
            sleep(Duration::from_millis(20));
        }
        false
    }

    /// PING answered with PONG.
    pub fn ping(&self) -> bool {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
            return false;
        };
        s.set_read_timeout(Some(Duration::from_millis(500))).ok();
        let mut buf = [0u8; 16];
        s.write_all(b"PING\r\n").is_ok() && s.read(&mut buf).is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
    }

    /// Stops the server now (SIGKILL to the process we started).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, with no data.
    pub fn restart(&mut self) {
        self.kill();
        assert!(
            self.spawn(),
            "redis-server did not restart on port {}:\n{}",
            self.port,
            self.log()
        );
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A private Redis Sentinel (`redis-server FILE --sentinel`) watching
/// `master` under the name `name`, on 127.0.0.1:port; stopped on Drop.
pub struct Sentinel {
    pub port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl Sentinel {
    /// Returns once it answers PING and names the master.
    pub fn start(master: &Redis, name: &str) -> Sentinel {
        for _ in 0..START_ATTEMPTS {
            let dir = service_tempdir("sluice-sentinel-");
            let port = free_port();
            let conf = dir.path().join("sentinel.conf");
            // Sentinel rewrites its file: it must be writable, in our dir.
            write_file(
                &conf,
                &format!(
                    "port {port}\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\ndir {}\nlogfile {}\n\
                     sentinel monitor {name} 127.0.0.1 {} 1\n",
                    dir.path().display(),
                    dir.path().join("sentinel.log").display(),
                    master.port
                ),
            );
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server installed (apt-get install redis-server)");
            let s = Sentinel {
                port,
                dir,
                child: Some(child),
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if s.names_master(name, master.port) {
                    return s;
                }
                sleep(Duration::from_millis(50));
            }
        }
        panic!("redis sentinel did not start");
    }

    /// `SENTINEL get-master-addr-by-name` answers 127.0.0.1 and `port`.
    fn names_master(&self, name: &str, port: u16) -> bool {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
            return false;
        };
        s.set_read_timeout(Some(Duration::from_millis(500))).ok();
        let mut buf = [0u8; 256];
        s.write_all(format!("SENTINEL get-master-addr-by-name {name}\r\n").as_bytes())
            .is_ok()
            && s.read(&mut buf)
                .is_ok_and(|n| String::from_utf8_lossy(&buf[..n]).contains(&port.to_string()))
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sentinel.log")).unwrap_or_default()
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
