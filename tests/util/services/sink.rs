//! Postfix's smtp-sink (see the parent module).

use super::*;

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

pub(super) fn split_on<'a>(hay: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
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
pub(super) fn strip_sink_headers(chunk: &[u8]) -> &[u8] {
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
