//! Next-hop SMTP/LMTP client: connect, greet, STARTTLS, send one
//! transaction at a time, report a status per recipient. Connections are
//! reused by the [`super::NextHopTransport`] pool.
//!
//! The discipline that keeps mail whole whatever the next hop answers:
//!
//! - a transaction that did not end with the end-of-data reply (refused
//!   MAIL, every RCPT refused, DATA refused) is closed with `RSET`, and the
//!   connection is reused only when RSET got 250;
//! - no body and no lone `.` is ever sent for a transaction without an
//!   accepted recipient: a next hop that answers 354 anyway (RFC 2920
//!   §3.1 allows it) is in DATA mode, so the connection is closed instead;
//! - a reply that means the two sides disagree about the state (500, 502,
//!   503, or a reply of the wrong kind) and 421 end the connection, and are
//!   never a permanent verdict on a message: every recipient without a
//!   final answer is temporary;
//! - a connection lost after the final `.` but before its reply leaves the
//!   message undelivered (retried: at least once, never lost).

use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::timeout;

use super::forward::{self, Method, Offered};
use super::tls::HopTlsConfig;
use crate::config::{ForwardClient, Hop, HopTls, NextHop, Relay};
use crate::mail::envelope::Envelope;

/// A reply from the next hop: code and the full text (lines joined by " / ").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopReply {
    pub code: u16,
    pub text: String,
}

impl HopReply {
    pub fn local(code: u16, text: impl Into<String>) -> Self {
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
    /// 500/502/503 or a reply of the wrong kind: the next hop and we
    /// disagree about the state of the session.
    #[error("next hop out of step at {during}: {reply}")]
    Confused { during: &'static str, reply: HopReply },
    /// 421: the next hop is closing the connection.
    #[error("next hop closing at {during}: {reply}")]
    Closing { during: &'static str, reply: HopReply },
    #[error("STARTTLS: {0}")]
    Tls(String),
}

impl ClientError {
    /// The temporary reply recipients without a final answer get.
    pub fn as_reply(&self) -> HopReply {
        match self {
            ClientError::Closing { reply, .. } if reply.code / 100 == 4 => reply.clone(),
            e => HopReply::local(451, format!("4.4.2 {e}")),
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

#[derive(Debug, Default, Clone)]
struct Extensions {
    pipelining: bool,
    eight_bit: bool,
    smtputf8: bool,
    starttls: bool,
    forward: Offered,
}

/// What a reply to one step means for the transaction.
fn judge(r: &HopReply, want_class: u16, during: &'static str) -> Result<bool, ClientError> {
    match r.code {
        421 => Err(ClientError::Closing {
            during,
            reply: r.clone(),
        }),
        500 | 502 | 503 => Err(ClientError::Confused {
            during,
            reply: r.clone(),
        }),
        c if c / 100 == want_class => Ok(true),
        c if c / 100 == 4 || c / 100 == 5 => Ok(false),
        _ => Err(ClientError::Confused {
            during,
            reply: r.clone(),
        }),
    }
}

/// Final statuses: any recipient without one gets `why` (temporary).
fn fill(statuses: Vec<Option<RcptStatus>>, why: &HopReply) -> Vec<RcptStatus> {
    statuses
        .into_iter()
        .map(|s| s.unwrap_or_else(|| RcptStatus::Temporary(why.clone())))
        .collect()
}

/// One open, greeted connection to the next hop.
pub struct Client {
    io: BufReader<Box<dyn Io>>,
    lmtp: bool,
    ext: Extensions,
    helo_name: String,
    forward: ForwardClient,
    pub sent: usize,
    pub last_used: Instant,
    command_timeout: Duration,
    data_timeout: Duration,
    out: Vec<u8>,
    /// False once the connection must not carry another transaction.
    reusable: bool,
    /// The last `send` wrote the body and its final dot.
    body_sent: bool,
    /// The session is under TLS.
    pub tls: bool,
}

impl Client {
    /// Connects to the default next hop without STARTTLS settings of its
    /// own (call-ahead; the health probe).
    pub async fn connect(cfg: &Relay) -> Result<Client, ClientError> {
        let hop = cfg.default_hop();
        let tls = HopTlsConfig::new(&hop).unwrap_or_else(|_| HopTlsConfig::plain());
        Self::connect_hop(cfg, &hop, &tls).await
    }

    /// Connects to `hop`, greets, and does STARTTLS as `tls` says. With
    /// opportunistic TLS, a failed handshake is retried once in plain text.
    pub async fn connect_hop(cfg: &Relay, hop: &Hop, tls: &HopTlsConfig) -> Result<Client, ClientError> {
        match Self::open(cfg, hop, tls.connector()).await {
            Err(ClientError::Tls(e)) if tls.mode == HopTls::Opportunistic => {
                tracing::info!(next_hop = %hop.next_hop, error = %e, "STARTTLS failed; delivering in plain text");
                Self::open(cfg, hop, None).await
            }
            r => r,
        }
    }

    async fn open(cfg: &Relay, hop: &Hop, tls: Option<tokio_rustls::TlsConnector>) -> Result<Client, ClientError> {
        let name = hop.next_hop.to_string();
        let connect = async {
            let io: Box<dyn Io> = match &hop.next_hop {
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
                hop: name.clone(),
                source: std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"),
            })?
            .map_err(|source| ClientError::Connect { hop: name, source })?;
        let mut c = Client {
            io: BufReader::with_capacity(16 * 1024, io),
            lmtp: hop.next_hop.is_lmtp(),
            ext: Extensions::default(),
            helo_name: cfg.helo_name.clone(),
            forward: hop.forward_client,
            sent: 0,
            last_used: Instant::now(),
            command_timeout: cfg.command_timeout,
            data_timeout: cfg.data_timeout,
            out: Vec::with_capacity(64 * 1024),
            reusable: true,
            body_sent: false,
            tls: false,
        };
        let greeting = c.read_reply("greeting").await?;
        if greeting.code != 220 {
            return Err(ClientError::Rejected(greeting));
        }
        let name = c.helo_name.clone();
        c.greet(&name).await?;
        match (tls, hop.next_hop.host()) {
            (Some(connector), Some(host)) => {
                if !c.ext.starttls {
                    if hop.tls == HopTls::Required {
                        return Err(ClientError::Tls(format!("{} does not offer STARTTLS", hop.next_hop)));
                    }
                    return Ok(c);
                }
                c.starttls(connector, host).await
            }
            _ => Ok(c),
        }
    }

    /// EHLO (LHLO) with `name`, or HELO for an old server; records the
    /// extensions.
    async fn greet(&mut self, name: &str) -> Result<(), ClientError> {
        let verb = if self.lmtp { "LHLO" } else { "EHLO" };
        self.out.extend_from_slice(format!("{verb} {name}\r\n").as_bytes());
        self.flush().await?;
        let (ehlo, lines) = self.read_reply_lines("EHLO").await?;
        self.ext = Extensions::default();
        if ehlo.code != 250 {
            if self.lmtp {
                return Err(ClientError::Rejected(ehlo));
            }
            self.out.extend_from_slice(format!("HELO {name}\r\n").as_bytes());
            self.flush().await?;
            let helo = self.read_reply("HELO").await?;
            if helo.code != 250 {
                return Err(ClientError::Rejected(helo));
            }
            return Ok(());
        }
        for l in lines.iter().skip(1) {
            if self.ext.forward.note(l) {
                continue;
            }
            match l.split(' ').next().unwrap_or("").to_ascii_uppercase().as_str() {
                "PIPELINING" => self.ext.pipelining = true,
                "8BITMIME" => self.ext.eight_bit = true,
                "SMTPUTF8" => self.ext.smtputf8 = true,
                "STARTTLS" => self.ext.starttls = true,
                _ => {}
            }
        }
        Ok(())
    }

    /// STARTTLS, the handshake, and EHLO again (RFC 3207 §4.2).
    async fn starttls(mut self, connector: tokio_rustls::TlsConnector, host: &str) -> Result<Client, ClientError> {
        self.out.extend_from_slice(b"STARTTLS\r\n");
        self.flush().await?;
        let r = self.read_reply("STARTTLS").await?;
        if r.code != 220 {
            return Err(ClientError::Tls(format!("STARTTLS refused: {r}")));
        }
        if !self.io.buffer().is_empty() {
            // Bytes after the 220 would be read as if they came over TLS.
            return Err(ClientError::Tls("next hop sent data after 220 to STARTTLS".into()));
        }
        let name = super::tls::server_name(host).map_err(ClientError::Tls)?;
        let plain = std::mem::replace(&mut self.io, BufReader::new(Box::new(tokio::io::duplex(1).0)));
        let stream = timeout(self.command_timeout, connector.connect(name, plain.into_inner()))
            .await
            .map_err(|_| ClientError::Timeout("TLS handshake"))?
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        self.io = BufReader::with_capacity(16 * 1024, Box::new(stream));
        self.tls = true;
        let name = self.helo_name.clone();
        self.greet(&name).await?;
        Ok(self)
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

    /// Whether this connection may carry another transaction.
    pub fn reusable(&self) -> bool {
        self.reusable
    }

    /// Whether the last [`Client::send`] wrote the whole body: a failure
    /// after that may have delivered the message.
    pub fn body_sent(&self) -> bool {
        self.body_sent
    }

    /// Sends one transaction for the recipients `idx` of `env`. Returns a
    /// status per recipient, in the order of `idx`. An `Err` means the
    /// connection is unusable and no recipient got a final answer.
    pub async fn send(&mut self, env: &Envelope, idx: &[usize], body: &[u8]) -> Result<Vec<RcptStatus>, ClientError> {
        self.last_used = Instant::now();
        self.body_sent = false;
        let res = self.transaction(env, idx, body).await;
        if res.is_err() {
            self.reusable = false;
        }
        self.last_used = Instant::now();
        res
    }

    async fn transaction(
        &mut self,
        env: &Envelope,
        idx: &[usize],
        body: &[u8],
    ) -> Result<Vec<RcptStatus>, ClientError> {
        self.out.clear();
        let xforward = self.forward_client(env).await?;
        self.push_mail(env);
        let mut statuses: Vec<Option<RcptStatus>> = vec![None; idx.len()];
        let mut accepted = Vec::new();
        if self.ext.pipelining {
            for &i in idx {
                self.push_rcpt(env, i);
            }
            self.out.extend_from_slice(b"DATA\r\n");
            self.flush().await?;
            if xforward {
                self.forward_reply().await?;
            }
            let mail = self.read_reply("MAIL").await?;
            let mut rcpt = Vec::with_capacity(idx.len());
            for _ in idx {
                rcpt.push(self.read_reply("RCPT").await?);
            }
            let data = self.read_reply("DATA").await?;
            if !judge(&mail, 2, "MAIL")? {
                // The RCPT and DATA replies to a refused MAIL are errors
                // too (usually 503); only a 354 would be out of step.
                if data.code == 354 {
                    return Err(ClientError::Confused {
                        during: "DATA",
                        reply: data,
                    });
                }
                self.end_failed(rcpt.iter().chain([&data]).any(|r| r.code == 421)).await;
                return Ok(idx.iter().map(|_| RcptStatus::from_reply(&mail)).collect());
            }
            for (k, r) in rcpt.iter().enumerate() {
                if judge(r, 2, "RCPT")? {
                    accepted.push(k);
                } else {
                    statuses[k] = Some(RcptStatus::from_reply(r));
                }
            }
            if !self.data_accepted(&data, &accepted, &mut statuses).await? {
                return Ok(fill(statuses, &data));
            }
        } else {
            self.flush().await?;
            if xforward {
                self.forward_reply().await?;
            }
            let mail = self.read_reply("MAIL").await?;
            if !judge(&mail, 2, "MAIL")? {
                self.end_failed(false).await;
                return Ok(idx.iter().map(|_| RcptStatus::from_reply(&mail)).collect());
            }
            for (k, &i) in idx.iter().enumerate() {
                self.push_rcpt(env, i);
                self.flush().await?;
                let r = self.read_reply("RCPT").await?;
                if judge(&r, 2, "RCPT")? {
                    accepted.push(k);
                } else {
                    statuses[k] = Some(RcptStatus::from_reply(&r));
                }
            }
            if accepted.is_empty() {
                self.end_failed(false).await;
                return Ok(fill(statuses, &mail));
            }
            self.out.extend_from_slice(b"DATA\r\n");
            self.flush().await?;
            let data = self.read_reply("DATA").await?;
            if !self.data_accepted(&data, &accepted, &mut statuses).await? {
                return Ok(fill(statuses, &data));
            }
        }
        self.send_body(body).await?;
        self.body_sent = true;
        self.end_of_data(&accepted, &mut statuses).await?;
        self.sent += 1;
        Ok(fill(
            statuses,
            &HopReply::local(451, "4.3.0 no reply for this recipient"),
        ))
    }

    /// The reply to DATA: true when the body is to be sent. Otherwise the
    /// transaction is ended (RSET, or the connection closed when the next
    /// hop waits for a body nobody owes it) and `statuses` are final.
    async fn data_accepted(
        &mut self,
        data: &HopReply,
        accepted: &[usize],
        statuses: &mut [Option<RcptStatus>],
    ) -> Result<bool, ClientError> {
        if accepted.is_empty() {
            // Every RCPT was refused: their statuses stand. A 503/554 to
            // DATA is the expected answer; a 354 (RFC 2920 §3.1) leaves the
            // next hop in DATA mode, and no `.` is sent: close instead.
            if data.code == 354 || data.code == 421 {
                self.reusable = false;
            } else {
                self.end_failed(false).await;
            }
            return Ok(false);
        }
        if judge(data, 3, "DATA")? {
            return Ok(true);
        }
        for &k in accepted {
            statuses[k] = Some(RcptStatus::from_reply(data));
        }
        self.end_failed(false).await;
        Ok(false)
    }

    /// Reads the end-of-data reply (one per accepted recipient for LMTP).
    async fn end_of_data(
        &mut self,
        accepted: &[usize],
        statuses: &mut [Option<RcptStatus>],
    ) -> Result<(), ClientError> {
        if !self.lmtp {
            let r = self.read_reply("end of data").await?;
            judge(&r, 2, "end of data")?;
            for &k in accepted {
                statuses[k] = Some(RcptStatus::from_reply(&r));
            }
            return Ok(());
        }
        for (n, &k) in accepted.iter().enumerate() {
            // The replies already read are final (some recipients may have
            // their mail): a failure now leaves only the rest temporary.
            let step = match self.read_reply("end of data").await {
                Ok(r) => judge(&r, 2, "end of data").map(|_| r),
                Err(e) => Err(e),
            };
            match step {
                Ok(r) => statuses[k] = Some(RcptStatus::from_reply(&r)),
                Err(e) if n == 0 => return Err(e),
                Err(e) => {
                    self.reusable = false;
                    for &rest in &accepted[n..] {
                        statuses[rest] = Some(RcptStatus::Temporary(e.as_reply()));
                    }
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Ends a transaction that did not reach the end of data: RSET, and
    /// the connection stays usable only if it got 250. `closing`: the next
    /// hop said 421; nothing more is sent.
    async fn end_failed(&mut self, closing: bool) {
        if closing {
            self.reusable = false;
            return;
        }
        self.out.extend_from_slice(b"RSET\r\n");
        let ok = match self.flush().await {
            Ok(()) => matches!(self.read_reply("RSET").await, Ok(r) if r.code == 250),
            Err(_) => false,
        };
        if !ok {
            self.reusable = false;
        }
    }

    /// Queues XFORWARD (true: its reply is to be read before MAIL's) or
    /// sends XCLIENT and greets again, as configured and offered.
    async fn forward_client(&mut self, env: &Envelope) -> Result<bool, ClientError> {
        let Some(method) = forward::choose(self.forward, &self.ext.forward) else {
            return Ok(false);
        };
        let Some(line) = forward::command(method, &self.ext.forward, env) else {
            return Ok(false);
        };
        self.out.extend_from_slice(line.as_bytes());
        if method == Method::Xforward {
            return Ok(true);
        }
        self.flush().await?;
        let r = self.read_reply("XCLIENT").await?;
        match r.code {
            // The next hop starts over as if the client had connected:
            // greet with the client's HELO name (when it is a valid one),
            // as the client did.
            220 => {
                let name = if crate::proto::address::is_valid_helo(&env.helo) {
                    env.helo.clone()
                } else {
                    self.helo_name.clone()
                };
                self.greet(&name).await.map(|()| false)
            }
            421 => Err(ClientError::Closing {
                during: "XCLIENT",
                reply: r,
            }),
            _ => {
                tracing::warn!(reply = %r, "next hop refused XCLIENT; sending without it");
                Ok(false)
            }
        }
    }

    async fn forward_reply(&mut self) -> Result<(), ClientError> {
        let r = self.read_reply("XFORWARD").await?;
        if r.code == 421 {
            return Err(ClientError::Closing {
                during: "XFORWARD",
                reply: r,
            });
        }
        if r.code != 250 {
            tracing::warn!(reply = %r, "next hop refused XFORWARD; sending without it");
        }
        Ok(())
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
    pub async fn probe(&mut self, rcpt: &crate::proto::Mailbox) -> Result<HopReply, ClientError> {
        self.last_used = Instant::now();
        self.out.clear();
        let line = format!("MAIL FROM:<>\r\nRCPT TO:<{rcpt}>\r\nRSET\r\n");
        if self.ext.pipelining {
            self.out.extend_from_slice(line.as_bytes());
            self.flush().await?;
            let mail = self.read_reply("MAIL").await?;
            let r = self.read_reply("RCPT").await?;
            let rset = self.read_reply("RSET").await?;
            if !judge(&mail, 2, "MAIL")? {
                return Err(ClientError::Rejected(mail));
            }
            if rset.code != 250 {
                return Err(ClientError::Rejected(rset));
            }
            judge(&r, 2, "RCPT")?;
            Ok(r)
        } else {
            self.out.extend_from_slice(b"MAIL FROM:<>\r\n");
            self.flush().await?;
            let mail = self.read_reply("MAIL").await?;
            if !judge(&mail, 2, "MAIL")? {
                return Err(ClientError::Rejected(mail));
            }
            self.out.extend_from_slice(format!("RCPT TO:<{rcpt}>\r\n").as_bytes());
            self.flush().await?;
            let r = self.read_reply("RCPT").await?;
            judge(&r, 2, "RCPT")?;
            self.out.extend_from_slice(b"RSET\r\n");
            self.flush().await?;
            let rset = self.read_reply("RSET").await?;
            if rset.code != 250 {
                return Err(ClientError::Rejected(rset));
            }
            Ok(r)
        }
    }

    pub async fn quit(mut self) {
        self.out.extend_from_slice(b"QUIT\r\n");
        if self.flush().await.is_ok() {
            let _ = timeout(Duration::from_secs(2), self.read_reply("QUIT")).await;
        }
    }
}
