//! HAProxy in front of several sluice nodes (see the parent module).

use super::*;

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
