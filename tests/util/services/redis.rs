//! redis-server and Redis Sentinel (see the parent module).

use super::*;

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
