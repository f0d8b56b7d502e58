//! clamd (see the parent module).

use super::*;

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
