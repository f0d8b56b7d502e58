//! A DNS server for a zone file, and a DNS black hole (see the parent module).

use super::*;

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

/// What `DnsServer::start` asks (type A) until it is answered with NOERROR:
/// the RFC 5782 test entry 127.0.0.2, which a DNSBL zone for `bl.test` (such
/// as the shared corpus's `dnsbl/bl.test.zone`) must list.
pub(super) const DNS_READY_NAME: &str = "2.0.0.127.bl.test";
pub(super) const DNS_TYPE_A: u16 = 1;

/// A UDP socket and a TCP listener bound to the same free port on 127.0.0.1.
pub(super) fn bind_udp_tcp() -> (UdpSocket, TcpListener) {
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
pub(super) fn dns_query_packet(id: u16, name: &str, qtype: u16) -> Vec<u8> {
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
pub(super) fn dns_response(id: u16, r: &[u8]) -> Result<(u8, u16), String> {
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
pub(super) fn dns_ask(port: u16, name: &str, qtype: u16, tcp: bool, limit: Duration) -> Result<(u16, u8, u16), String> {
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
