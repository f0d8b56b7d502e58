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

mod transaction;

use super::forward::Offered;
use super::reply::judge;
pub use super::reply::{ClientError, HopReply, RcptStatus};
use super::tls::HopTlsConfig;
use crate::config::{ForwardClient, Hop, HopTls, NextHop, Relay};
use crate::mail::envelope::Envelope;

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
