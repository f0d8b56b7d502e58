//! One mail transaction on a greeted connection: MAIL, RCPT, DATA
//! (pipelined or in lockstep), the body, and the end-of-data replies, with
//! the discipline described in the parent module.

use std::time::Instant;

use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

use super::Client;
use crate::delivery::forward::{self, Method};
use crate::delivery::reply::{ClientError, HopReply, RcptStatus, fill, judge};
use crate::mail::envelope::Envelope;

/// The recipients' statuses so far and the ones the next hop accepted
/// (positions in the transaction's recipient list).
struct Tx {
    statuses: Vec<Option<RcptStatus>>,
    accepted: Vec<usize>,
}

impl Tx {
    /// Records the reply to RCPT number `k`.
    fn note_rcpt(&mut self, k: usize, r: &HopReply) -> Result<(), ClientError> {
        if judge(r, 2, "RCPT")? {
            self.accepted.push(k);
        } else {
            self.statuses[k] = Some(RcptStatus::from_reply(r));
        }
        Ok(())
    }
}

impl Client {
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
        let mut t = Tx {
            statuses: vec![None; idx.len()],
            accepted: Vec::new(),
        };
        let ended = if self.ext.pipelining {
            self.pipelined(env, idx, xforward, &mut t).await?
        } else {
            self.lockstep(env, idx, xforward, &mut t).await?
        };
        if let Some(statuses) = ended {
            return Ok(statuses);
        }
        self.send_body(body).await?;
        self.body_sent = true;
        self.end_of_data(&t.accepted, &mut t.statuses).await?;
        self.sent += 1;
        Ok(fill(
            t.statuses,
            &HopReply::local(451, "4.3.0 no reply for this recipient"),
        ))
    }

    /// MAIL, every RCPT and DATA in one write (RFC 2920), then their
    /// replies. `Some(statuses)`: the transaction ended before the body.
    async fn pipelined(
        &mut self,
        env: &Envelope,
        idx: &[usize],
        xforward: bool,
        t: &mut Tx,
    ) -> Result<Option<Vec<RcptStatus>>, ClientError> {
        for &i in idx {
            self.push_rcpt(env, i);
        }
        self.out.extend_from_slice(b"DATA\r\n");
        let mail = self.send_mail(xforward).await?;
        let mut rcpt = Vec::with_capacity(idx.len());
        for _ in idx {
            rcpt.push(self.read_reply("RCPT").await?);
        }
        let data = self.read_reply("DATA").await?;
        if !judge(&mail, 2, "MAIL")? {
            // The RCPT and DATA replies to a refused MAIL are errors too
            // (usually 503); only a 354 would be out of step.
            if data.code == 354 {
                return Err(ClientError::Confused {
                    during: "DATA",
                    reply: data,
                });
            }
            self.end_failed(rcpt.iter().chain([&data]).any(|r| r.code == 421)).await;
            return Ok(Some(idx.iter().map(|_| RcptStatus::from_reply(&mail)).collect()));
        }
        for (k, r) in rcpt.iter().enumerate() {
            t.note_rcpt(k, r)?;
        }
        self.after_data(&data, t).await
    }

    /// One command, one reply (a next hop without PIPELINING).
    /// `Some(statuses)`: the transaction ended before the body.
    async fn lockstep(
        &mut self,
        env: &Envelope,
        idx: &[usize],
        xforward: bool,
        t: &mut Tx,
    ) -> Result<Option<Vec<RcptStatus>>, ClientError> {
        let mail = self.send_mail(xforward).await?;
        if !judge(&mail, 2, "MAIL")? {
            self.end_failed(false).await;
            return Ok(Some(idx.iter().map(|_| RcptStatus::from_reply(&mail)).collect()));
        }
        for (k, &i) in idx.iter().enumerate() {
            self.push_rcpt(env, i);
            self.flush().await?;
            let r = self.read_reply("RCPT").await?;
            t.note_rcpt(k, &r)?;
        }
        if t.accepted.is_empty() {
            self.end_failed(false).await;
            return Ok(Some(fill(std::mem::take(&mut t.statuses), &mail)));
        }
        self.out.extend_from_slice(b"DATA\r\n");
        self.flush().await?;
        let data = self.read_reply("DATA").await?;
        self.after_data(&data, t).await
    }

    /// Writes what is queued (XFORWARD, MAIL, and when pipelining the
    /// rest); returns the reply to MAIL (after XFORWARD's, when sent).
    async fn send_mail(&mut self, xforward: bool) -> Result<HopReply, ClientError> {
        self.flush().await?;
        if xforward {
            self.forward_reply().await?;
        }
        self.read_reply("MAIL").await
    }

    /// `None` when the body is to be sent, else the final statuses.
    async fn after_data(&mut self, data: &HopReply, t: &mut Tx) -> Result<Option<Vec<RcptStatus>>, ClientError> {
        if self.data_accepted(data, &t.accepted, &mut t.statuses).await? {
            Ok(None)
        } else {
            Ok(Some(fill(std::mem::take(&mut t.statuses), data)))
        }
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
}
