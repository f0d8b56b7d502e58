//! What a next hop answers, and what it means for each recipient: the
//! reply, the per-recipient status, the client's errors, and the judgement
//! of a reply at each step of a transaction.

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
    /// The enhanced status code in the text (RFC 3463: class 2, 4 or 5,
    /// matching the reply's own class; subject and detail of 1-3 digits),
    /// or one derived from the reply code. `550 2.0.0 ...` gives 5.0.0, so
    /// a DSN never says "failed" next to a success status.
    pub fn status(&self) -> String {
        let class = self.code / 100;
        let first = self.text.split(' ').next().unwrap_or("");
        let part = |p: &str, max: usize| (1..=max).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
        let valid = match first.split('.').collect::<Vec<_>>()[..] {
            [c, s, d] => part(c, 1) && part(s, 3) && part(d, 3) && c.parse() == Ok(class) && matches!(class, 2 | 4 | 5),
            _ => false,
        };
        if valid {
            first.to_string()
        } else {
            format!("{class}.0.0")
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
    pub(super) fn from_reply(r: &HopReply) -> Self {
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

/// What a reply to one step means for the transaction.
pub(super) fn judge(r: &HopReply, want_class: u16, during: &'static str) -> Result<bool, ClientError> {
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
pub(super) fn fill(statuses: Vec<Option<RcptStatus>>, why: &HopReply) -> Vec<RcptStatus> {
    statuses
        .into_iter()
        .map(|s| s.unwrap_or_else(|| RcptStatus::Temporary(why.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::HopReply;

    #[test]
    fn enhanced_status_is_taken_only_when_valid_and_of_the_same_class() {
        for (code, text, want) in [
            (550, "5.1.1 <u@example.com>: unknown user", "5.1.1"),
            (452, "4.3.1 Insufficient system storage", "4.3.1"),
            (250, "2.0.0 Ok: queued", "2.0.0"),
            (550, "2.0.0 contradicts its own code", "5.0.0"),
            (550, "999.999.999 no such class", "5.0.0"),
            (550, "5.1234.1 subject too long", "5.0.0"),
            (554, "Transaction failed", "5.0.0"),
            (421, "4.4.2 timeout", "4.4.2"),
        ] {
            assert_eq!(HopReply::local(code, text).status(), want, "{code} {text}");
        }
    }
}
