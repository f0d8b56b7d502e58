//! The sluice binary as a child process, for the tests that need the real
//! thing (signals, kill -9, its memory).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{TABLE, base_toml};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The sluice binary with a config in `dir`, listening on `port`.
pub struct Proc {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Proc {
    pub fn start(dir: &std::path::Path, port: u16, next_hop_port: u16) -> Proc {
        Self::start_with(dir, port, next_hop_port, "1s")
    }

    /// `retry_initial`: the first retry delay after a failed attempt.
    pub fn start_with(dir: &std::path::Path, port: u16, next_hop_port: u16, retry_initial: &str) -> Proc {
        Self::start_extra(dir, port, next_hop_port, retry_initial, "")
    }

    /// As [`Proc::start_with`], with `extra` TOML: whole sections, or
    /// `[server]` or `[spool]` keys, or a `[metrics]` section instead of
    /// the base's.
    pub fn start_extra(dir: &std::path::Path, port: u16, next_hop_port: u16, retry_initial: &str, extra: &str) -> Proc {
        let toml = base_toml(&format!("smtp://127.0.0.1:{next_hop_port}"))
            .replace(
                "retry_initial = \"1s\"\nretry_max = \"2s\"",
                &format!("retry_initial = \"{retry_initial}\"\nretry_max = \"2h\""),
            )
            .replace(
                "listen = [\"127.0.0.1:0\"]",
                &format!("listen = [\"127.0.0.1:{port}\"]"),
            )
            .replace(
                "table = \"recipients\"",
                "table = \"recipients\"\nreload_interval = \"1h\"",
            );
        // Keys for [server] or [spool] go into the base's section; whole
        // sections are appended.
        let toml = match ["[server]\n", "[spool]\n"]
            .into_iter()
            .find_map(|s| Some((s, extra.strip_prefix(s)?)))
        {
            Some((section, keys)) => toml.replacen(section, &format!("{section}{keys}"), 1),
            // A [metrics] section replaces the base's.
            None if extra.starts_with("[metrics]\n") => {
                toml.replacen("[metrics]\nlisten = \"127.0.0.1:0\"\n", extra, 1)
            }
            None => toml + extra,
        };
        assert!(toml.contains(&format!("retry_initial = \"{retry_initial}\"")), "{toml}");
        Self::start_toml(dir, port, &toml)
    }

    /// The binary with `toml` as `dir`/sluice.toml (and the test table as
    /// `dir`/recipients unless there is one), listening on `port`.
    pub fn start_toml(dir: &std::path::Path, port: u16, toml: &str) -> Proc {
        std::fs::write(dir.join("sluice.toml"), toml).unwrap();
        if !dir.join("recipients").exists() {
            std::fs::write(dir.join("recipients"), TABLE).unwrap();
        }
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["serve", "--config"])
            .arg(dir.join("sluice.toml"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(std::time::Instant::now() < deadline, "sluice did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Proc { child, addr }
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args(["-s", sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// The process's resident set now, in KiB (VmRSS).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }
}
