//! Next-hop SMTP/LMTP client: connect, greet, send one transaction at a
//! time, report a status per recipient. Connections are reused by the
//! [`super::NextHopTransport`] pool.

use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::timeout;

use crate::config::{NextHop, Relay};
use crate::smtp::envelope::Envelope;

/// A reply from the next hop: code and the full text (lines joined by " / ").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopReply {
    pub code: u16,
    pub text: String,
}

impl HopReply {
    fn local(code: u16, text: impl Into<String>) -> Self {
        Self {
            code,
            text: text.into(),
        }
    }
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }
    /// The enhanced status code in the text, or one derived from the class.
    pub fn status(&self) -> String {
        let first = self.text.split(' ').next().unwrap_or("");
        let looks = first.split('.').count() == 3
            && first
                .split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        if looks {
            first.to_string()
        } else {
            format!("{}.0.0", self.code / 100)
        }
    }
}

impl std::fmt::Display for HopReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

/// Per-recipient result of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptStatus {
    Delivered(HopReply),
    Temporary(HopReply),
    Permanent(HopReply),
}

impl RcptStatus {
    fn from_reply(r: &HopReply) -> Self {
        if r.is_positive() {
            RcptStatus::Delivered(r.clone())
        } else if r.is_permanent() {
            RcptStatus::Permanent(r.clone())
        } else {
            RcptStatus::Temporary(r.clone())
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connect to {hop}: {source}")]
    Connect { hop: String, source: std::io::Error },
    #[error("timeout waiting for {0}")]
    Timeout(&'static str),
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
    #[error("next hop said: {0}")]
    Rejected(HopReply),
    #[error("unparsable reply from next hop: {0:?}")]
    Protocol(String),
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

#[derive(Debug, Default, Clone, Copy)]
struct Extensions {
    pipelining: bool,
    eight_bit: bool,
    smtputf8: bool,
}

/// Final statuses: any recipient without one gets a temporary failure
/// carrying `why` (never a silent success).
fn fill(statuses: Vec<Option<RcptStatus>>, why: &HopReply) -> Vec<RcptStatus> {
    statuses
        .into_iter()
        .map(|s| {
            s.unwrap_or_else(|| {
                if why.is_positive() {
                    RcptStatus::Temporary(HopReply::local(451, format!("4.3.0 unexpected reply: {why}")))
                } else {
                    RcptStatus::Temporary(why.clone())
                }
            })
        })
        .collect()
}

/// One open, greeted connection to the next hop.
pub struct Client {
    io: BufReader<Box<dyn Io>>,
    lmtp: bool,
    ext: Extensions,
    pub sent: usize,
    pub last_used: Instant,
    command_timeout: Duration,
    data_timeout: Duration,
    out: Vec<u8>,
}

impl Client {
    pub async fn connect(cfg: &Relay) -> Result<Client, ClientError> {
        let hop = cfg.next_hop.to_string();
        let connect = async {
            let io: Box<dyn Io> = match &cfg.next_hop {
                NextHop::Smtp { host, port } | NextHop::LmtpTcp { host, port } => {
                    let s = TcpStream::connect((host.as_str(), *port)).await?;
                    s.set_nodelay(true)?;
                    Box::new(s)
                }
                NextHop::LmtpUnix { path } => Box::new(UnixStream::connect(path).await?),
            };
            Ok::<_, std::io::Error>(io)
        };
        let io = timeout(cfg.connect_timeout, connect)
            .await
            .map_err(|_| ClientError::Connect {
                hop: hop.clone(),
                source: std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
            })?
            .map_err(|source| ClientError::Connect { hop, source })?;
        let mut c = Client {
            io: BufReader::with_capacity(16 * 1024, io),
            lmtp: cfg.next_hop.is_lmtp(),
            ext: Extensions::default(),
            sent: 0,
            last_used: Instant::now(),
            command_timeout: cfg.command_timeout,
            data_timeout: cfg.data_timeout,
            out: Vec::with_capacity(64 * 1024),
        };
        let greeting = c.read_reply("greeting").await?;
        if greeting.code != 220 {
            return Err(ClientError::Rejected(greeting));
        }
        let verb = if c.lmtp { "LHLO" } else { "EHLO" };
        c.out.clear();
        c.out
            .extend_from_slice(format!("{verb} {}\r\n", cfg.helo_name).as_bytes());
        c.flush().await?;
        let (ehlo, lines) = c.read_reply_lines("EHLO").await?;
        if ehlo.code != 250 {
            if c.lmtp {
                return Err(ClientError::Rejected(ehlo));
            }
            // Old server: fall back to HELO.
            c.out
                .extend_from_slice(format!("HELO {}\r\n", cfg.helo_name).as_bytes());
            c.flush().await?;
            let helo = c.read_reply("HELO").await?;
            if helo.code != 250 {
                return Err(ClientError::Rejected(helo));
            }
        } else {
            for l in lines.iter().skip(1) {
                let kw = l.split(' ').next().unwrap_or("").to_ascii_uppercase();
                match kw.as_str() {
                    "PIPELINING" => c.ext.pipelining = true,
                    "8BITMIME" => c.ext.eight_bit = true,
                    "SMTPUTF8" => c.ext.smtputf8 = true,
                    _ => {}
                }
            }
        }
        Ok(c)
    }

    async fn flush(&mut self) -> Result<(), ClientError> {
        let t = self.command_timeout;
        let out = std::mem::take(&mut self.out);
        let res = timeout(t, async {
            let w = self.io.get_mut();
            w.write_all(&out).await?;
            w.flush().await
        })
        .await;
        self.out = out;
        self.out.clear();
        res.map_err(|_| ClientError::Timeout("write"))??;
        Ok(())
    }

    async fn read_reply(&mut self, what: &'static str) -> Result<HopReply, ClientError> {
        Ok(self.read_reply_lines(what).await?.0)
    }

    /// Reads one (possibly multi-line) reply.
    async fn read_reply_lines(&mut self, what: &'static str) -> Result<(HopReply, Vec<String>), ClientError> {
        let t = if what == "end of data" {
            self.data_timeout
        } else {
            self.command_timeout
        };
        timeout(t, async {
            let mut lines = Vec::new();
            let mut line = Vec::new();
            loop {
                line.clear();
                let n = (&mut self.io).take(4096).read_until(b'\n', &mut line).await?;
                if n == 0 {
                    return Err(ClientError::Io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("next hop closed the connection (waiting for {what})"),
                    )));
                }
                let s = String::from_utf8_lossy(&line);
                let s = s.trim_end_matches(['\r', '\n']);
                if s.len() < 3 || !s.as_bytes()[..3].iter().all(u8::is_ascii_digit) {
                    return Err(ClientError::Protocol(s.to_string()));
                }
                let code: u16 = s[..3].parse().map_err(|_| ClientError::Protocol(s.to_string()))?;
                let more = s.as_bytes().get(3) == Some(&b'-');
                lines.push(s.get(4..).unwrap_or("").to_string());
                if !more {
                    let text = lines.join(" / ");
                    return Ok((HopReply { code, text }, lines));
                }
                if lines.len() > 100 {
                    return Err(ClientError::Protocol("reply longer than 100 lines".into()));
                }
            }
        })
        .await
        .map_err(|_| ClientError::Timeout(what))?
    }

    fn push_mail(&mut self, env: &Envelope) {
        let from = env.mail_from.as_ref().map(|m| m.to_string()).unwrap_or_default();
        self.out.extend_from_slice(b"MAIL FROM:<");
        self.out.extend_from_slice(from.as_bytes());
        self.out.push(b'>');
        if let Some(b) = env.body.as_param()
            && self.ext.eight_bit
        {
            self.out.extend_from_slice(b" BODY=");
            self.out.extend_from_slice(b.as_bytes());
        }
        if env.smtputf8 && self.ext.smtputf8 {
            self.out.extend_from_slice(b" SMTPUTF8");
        }
        self.out.extend_from_slice(b"\r\n");
    }

    fn push_rcpt(&mut self, env: &Envelope, idx: usize) {
        self.out.extend_from_slice(b"RCPT TO:<");
        self.out.extend_from_slice(env.rcpts[idx].addr.to_string().as_bytes());
        self.out.extend_from_slice(b">\r\n");
    }

    /// Sends one transaction for the recipients `idx` of `env`. Returns a
    /// status per recipient, in the order of `idx`. An `Err` means the
    /// connection is unusable and no recipient got a final answer.
    pub async fn send(&mut self, env: &Envelope, idx: &[usize], body: &[u8]) -> Result<Vec<RcptStatus>, ClientError> {
        self.last_used = Instant::now();
        self.out.clear();
        self.push_mail(env);
        let mut statuses: Vec<Option<RcptStatus>> = vec![None; idx.len()];
        let mut accepted = Vec::new();
        if self.ext.pipelining {
            for &i in idx {
                self.push_rcpt(env, i);
            }
            self.out.extend_from_slice(b"DATA\r\n");
            self.flush().await?;
            let mail = self.read_reply("MAIL").await?;
            for (k, s) in statuses.iter_mut().enumerate() {
                let r = self.read_reply("RCPT").await?;
                if mail.is_positive() && r.is_positive() {
                    accepted.push(k);
                } else {
                    *s = Some(RcptStatus::from_reply(if mail.is_positive() { &r } else { &mail }));
                }
            }
            let data = self.read_reply("DATA").await?;
            if data.code != 354 {
                if !accepted.is_empty() {
                    for &k in &accepted {
                        statuses[k] = Some(RcptStatus::from_reply(&data));
                    }
                }
                return Ok(statuses
                    .into_iter()
                    .map(|s| s.unwrap_or(RcptStatus::Temporary(data.clone())))
                    .collect());
            }
            if accepted.is_empty() {
                // Server accepted DATA with no valid recipient: end it empty.
                self.out.extend_from_slice(b".\r\n");
                self.flush().await?;
                let _ = self.read_reply("end of data").await?;
                return Ok(fill(statuses, &data));
            }
        } else {
            self.flush().await?;
            let mail = self.read_reply("MAIL").await?;
            if !mail.is_positive() {
                return Ok(idx.iter().map(|_| RcptStatus::from_reply(&mail)).collect());
            }
            for (k, &i) in idx.iter().enumerate() {
                self.push_rcpt(env, i);
                self.flush().await?;
                let r = self.read_reply("RCPT").await?;
                if r.is_positive() {
                    accepted.push(k);
                } else {
                    statuses[k] = Some(RcptStatus::from_reply(&r));
                }
            }
            if accepted.is_empty() {
                self.rset().await?;
                return Ok(fill(statuses, &mail));
            }
            self.out.extend_from_slice(b"DATA\r\n");
            self.flush().await?;
            let data = self.read_reply("DATA").await?;
            if data.code != 354 {
                for &k in &accepted {
                    statuses[k] = Some(RcptStatus::from_reply(&data));
                }
                return Ok(fill(statuses, &data));
            }
        }
        self.send_body(body).await?;
        if self.lmtp {
            for &k in &accepted {
                let r = self.read_reply("end of data").await?;
                statuses[k] = Some(RcptStatus::from_reply(&r));
            }
        } else {
            let r = self.read_reply("end of data").await?;
            for &k in &accepted {
                statuses[k] = Some(RcptStatus::from_reply(&r));
            }
        }
        self.sent += 1;
        self.last_used = Instant::now();
        Ok(fill(
            statuses,
            &HopReply::local(451, "4.3.0 no reply for this recipient"),
        ))
    }

    /// Writes the body dot-stuffed, ending with `CRLF . CRLF`, in large writes.
    async fn send_body(&mut self, body: &[u8]) -> Result<(), ClientError> {
        let t = self.data_timeout;
        let out = &mut self.out;
        out.clear();
        let w = self.io.get_mut();
        let res = timeout(t, async {
            let mut at_line_start = true;
            let mut rest = body;
            while !rest.is_empty() {
                if at_line_start && rest[0] == b'.' {
                    out.push(b'.');
                }
                match memchr::memchr(b'\n', rest) {
                    Some(i) => {
                        out.extend_from_slice(&rest[..=i]);
                        rest = &rest[i + 1..];
                        at_line_start = true;
                    }
                    None => {
                        out.extend_from_slice(rest);
                        rest = &[];
                        at_line_start = false;
                    }
                }
                if out.len() >= 64 * 1024 {
                    w.write_all(out).await?;
                    out.clear();
                }
            }
            if !body.is_empty() && !body.ends_with(b"\r\n") {
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b".\r\n");
            w.write_all(out).await?;
            out.clear();
            w.flush().await
        })
        .await;
        res.map_err(|_| ClientError::Timeout("body"))??;
        Ok(())
    }

    /// Recipient call-ahead: `MAIL FROM:<>`, `RCPT TO:<rcpt>`, `RSET`
    /// (pipelined when offered). Returns the RCPT reply; the connection
    /// stays usable for the next probe or message.
    pub async fn probe(&mut self, rcpt: &crate::smtp::proto::Mailbox) -> Result<HopReply, ClientError> {
        self.last_used = Instant::now();
        self.out.clear();
        let line = format!("MAIL FROM:<>\r\nRCPT TO:<{rcpt}>\r\nRSET\r\n");
        if self.ext.pipelining {
            self.out.extend_from_slice(line.as_bytes());
            self.flush().await?;
            let mail = self.read_reply("MAIL").await?;
            let r = self.read_reply("RCPT").await?;
            let rset = self.read_reply("RSET").await?;
            if !mail.is_positive() {
                return Err(ClientError::Rejected(mail));
            }
            if rset.code != 250 {
                return Err(ClientError::Rejected(rset));
            }
            Ok(r)
        } else {
            self.out.extend_from_slice(b"MAIL FROM:<>\r\n");
            self.flush().await?;
            let mail = self.read_reply("MAIL").await?;
            if !mail.is_positive() {
                return Err(ClientError::Rejected(mail));
            }
            self.out.extend_from_slice(format!("RCPT TO:<{rcpt}>\r\n").as_bytes());
            self.flush().await?;
            let r = self.read_reply("RCPT").await?;
            self.rset().await?;
            Ok(r)
        }
    }

    pub async fn rset(&mut self) -> Result<(), ClientError> {
        self.out.extend_from_slice(b"RSET\r\n");
        self.flush().await?;
        let r = self.read_reply("RSET").await?;
        if r.code != 250 {
            return Err(ClientError::Rejected(r));
        }
        Ok(())
    }

    pub async fn quit(mut self) {
        self.out.extend_from_slice(b"QUIT\r\n");
        if self.flush().await.is_ok() {
            let _ = timeout(Duration::from_secs(2), self.read_reply("QUIT")).await;
        }
    }
}
