//! Postfix (see the parent module).

use super::*;

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
pub(super) fn stop_postfix_master(pid: u32) {
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
