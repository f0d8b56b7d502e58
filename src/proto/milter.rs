//! The milter protocol (version 6, as Sendmail's libmilter and Postfix
//! speak it), sans I/O: frames in, typed [`Command`]s out; typed
//! [`Response`]s in, frames out.
//!
//! A frame is a 4-octet big-endian length, then that many octets: one
//! command (or response) code and its payload. Strings in payloads end
//! with a NUL. The MTA opens with `SMFIC_OPTNEG` (version, the actions it
//! allows, the protocol steps it offers); [`negotiate`] answers with the
//! subset we want. After that the MTA sends macros (`SMFIC_MACRO`) before
//! each stage, then the stage: connect, HELO, MAIL, RCPT, DATA, each
//! header, end of headers, body chunks and end of body, where the milter
//! gives its verdict (after any header changes). A stage negotiated as
//! "no reply" (`SMFIP_NR_*`) gets none ([`expects_reply`]).
//!
//! Written from the protocol's public description; no code of any milter
//! library is used. Frames are bounded ([`Decoder::new`]); input that
//! does not parse is a typed [`MilterError`], never a panic.

use std::net::IpAddr;

use bytes::{Buf, BytesMut};

/// The protocol version we speak.
pub const VERSION: u32 = 6;

/// The largest frame a [`Decoder`] takes by default: Postfix's body chunks
/// are at most 64 KiB, its header values bounded by `header_size_limit`.
pub const MAX_FRAME: usize = 1024 * 1024;

/// What the milter may do to a message (`SMFIF_*`), offered by the MTA in
/// `SMFIC_OPTNEG` and asked for in the reply.
pub mod action {
    pub const ADD_HEADERS: u32 = 0x01;
    pub const CHANGE_BODY: u32 = 0x02;
    pub const ADD_RCPT: u32 = 0x04;
    pub const DELETE_RCPT: u32 = 0x08;
    pub const CHANGE_HEADERS: u32 = 0x10;
    pub const QUARANTINE: u32 = 0x20;
    pub const CHANGE_FROM: u32 = 0x40;
    pub const ADD_RCPT_PARAMS: u32 = 0x80;
    pub const SET_MACROS: u32 = 0x100;
}

/// Protocol steps (`SMFIP_*`): which stages the MTA leaves out (`NO_*`),
/// which get no reply (`NR_*`), and the header value's leading space.
pub mod step {
    pub const NO_CONNECT: u32 = 0x1;
    pub const NO_HELO: u32 = 0x2;
    pub const NO_MAIL: u32 = 0x4;
    pub const NO_RCPT: u32 = 0x8;
    pub const NO_BODY: u32 = 0x10;
    pub const NO_HEADERS: u32 = 0x20;
    pub const NO_EOH: u32 = 0x40;
    pub const NR_HEADER: u32 = 0x80;
    pub const NO_UNKNOWN: u32 = 0x100;
    pub const NO_DATA: u32 = 0x200;
    pub const SKIP: u32 = 0x400;
    pub const RCPT_REJECTED: u32 = 0x800;
    pub const NR_CONNECT: u32 = 0x1000;
    pub const NR_HELO: u32 = 0x2000;
    pub const NR_MAIL: u32 = 0x4000;
    pub const NR_RCPT: u32 = 0x8000;
    pub const NR_DATA: u32 = 0x10000;
    pub const NR_UNKNOWN: u32 = 0x20000;
    pub const NR_EOH: u32 = 0x40000;
    pub const NR_BODY: u32 = 0x80000;
    /// Header values keep their leading space (both ways).
    pub const HEADER_LEADING_SPACE: u32 = 0x100000;
}

/// Version, actions and protocol steps: the MTA's offer or our answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptNeg {
    pub version: u32,
    pub actions: u32,
    pub protocol: u32,
}

/// The client as the MTA saw it at connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// Family `U`: unknown (for instance mail submitted locally).
    Unknown,
    /// Family `4` or `6`.
    Inet { ip: IpAddr, port: u16 },
    /// Family `L`: a unix socket path.
    Local(String),
}

/// One command from the MTA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    OptNeg(OptNeg),
    /// Macros for the stage named by `stage` (a command code).
    Macros {
        stage: u8,
        pairs: Vec<(String, String)>,
    },
    /// The client's host name (`[1.2.3.4]` or `unknown` when not verified)
    /// and address.
    Connect {
        hostname: String,
        peer: Peer,
    },
    Helo(String),
    /// `MAIL FROM` arguments: the path (`<a@b>`), then ESMTP parameters.
    Mail(Vec<String>),
    /// `RCPT TO` arguments: the path, then ESMTP parameters.
    Rcpt(Vec<String>),
    Data,
    /// One header field: its name and its value as sent (octets: a value
    /// may be 8-bit).
    Header {
        name: String,
        value: Vec<u8>,
    },
    EndOfHeaders,
    /// A chunk of the body (CRLF lines, dot-unstuffed).
    Body(Vec<u8>),
    /// The end of the body, with a last chunk (usually empty).
    EndOfBody(Vec<u8>),
    /// The current message is abandoned; the connection stays.
    Abort,
    /// The connection ends.
    Quit,
    /// The connection is reused for another SMTP session.
    QuitNewConnection,
    /// An SMTP command the MTA did not know.
    Unknown(Vec<u8>),
}

impl Command {
    /// The command's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Command::OptNeg(_) => "OPTNEG",
            Command::Macros { .. } => "MACRO",
            Command::Connect { .. } => "CONNECT",
            Command::Helo(_) => "HELO",
            Command::Mail(_) => "MAIL",
            Command::Rcpt(_) => "RCPT",
            Command::Data => "DATA",
            Command::Header { .. } => "HEADER",
            Command::EndOfHeaders => "EOH",
            Command::Body(_) => "BODY",
            Command::EndOfBody(_) => "BODYEOB",
            Command::Abort => "ABORT",
            Command::Quit => "QUIT",
            Command::QuitNewConnection => "QUIT_NC",
            Command::Unknown(_) => "UNKNOWN",
        }
    }
}

/// Input that is not the milter protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MilterError {
    #[error("frame of {0} octets is over the limit")]
    TooLong(usize),
    #[error("empty frame")]
    Empty,
    #[error("unknown command {0:#04x}")]
    UnknownCommand(u8),
    #[error("malformed {command}: {what}")]
    Malformed { command: &'static str, what: &'static str },
    #[error("the MTA speaks milter version {0}; 2 or later is needed")]
    Version(u32),
}

fn malformed(command: &'static str, what: &'static str) -> MilterError {
    MilterError::Malformed { command, what }
}

/// Frames commands out of the bytes read from the MTA.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    max: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(MAX_FRAME)
    }
}

impl Decoder {
    /// A decoder refusing frames longer than `max` octets.
    pub fn new(max: usize) -> Decoder {
        Decoder {
            buf: BytesMut::with_capacity(8 * 1024),
            max,
        }
    }

    /// Adds bytes read from the MTA.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Octets received but not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole command, `None` when more bytes are needed. After an
    /// error the stream cannot be resynchronised: close the connection.
    pub fn next_command(&mut self) -> Result<Option<Command>, MilterError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len == 0 {
            return Err(MilterError::Empty);
        }
        if len > self.max {
            return Err(MilterError::TooLong(len));
        }
        if self.buf.len() < 4 + len {
            self.buf.reserve(4 + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(4);
        let frame = self.buf.split_to(len);
        parse_command(frame[0], &frame[1..]).map(Some)
    }
}

/// NUL-terminated strings of a payload (the last one must be terminated).
fn strings<'a>(command: &'static str, payload: &'a [u8]) -> Result<Vec<&'a [u8]>, MilterError> {
    if payload.is_empty() {
        return Ok(Vec::new());
    }
    let Some(body) = payload.strip_suffix(b"\0") else {
        return Err(malformed(command, "string not NUL-terminated"));
    };
    Ok(body.split(|&b| b == 0).collect())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn be32(command: &'static str, b: &[u8]) -> Result<u32, MilterError> {
    let a: [u8; 4] = b.try_into().map_err(|_| malformed(command, "short field"))?;
    Ok(u32::from_be_bytes(a))
}

/// Parses one command frame (its code and payload).
pub fn parse_command(code: u8, p: &[u8]) -> Result<Command, MilterError> {
    Ok(match code {
        b'O' => {
            if p.len() < 12 {
                return Err(malformed("OPTNEG", "shorter than 12 octets"));
            }
            Command::OptNeg(OptNeg {
                version: be32("OPTNEG", &p[0..4])?,
                actions: be32("OPTNEG", &p[4..8])?,
                protocol: be32("OPTNEG", &p[8..12])?,
            })
        }
        b'D' => {
            let Some((&stage, rest)) = p.split_first() else {
                return Err(malformed("MACRO", "no stage"));
            };
            let s = strings("MACRO", rest)?;
            if s.len() % 2 != 0 {
                return Err(malformed("MACRO", "a name without a value"));
            }
            let pairs = s.chunks(2).map(|kv| (text(kv[0]), text(kv[1]))).collect();
            Command::Macros { stage, pairs }
        }
        b'C' => {
            let Some(nul) = memchr::memchr(0, p) else {
                return Err(malformed("CONNECT", "host name not NUL-terminated"));
            };
            let hostname = text(&p[..nul]);
            let rest = &p[nul + 1..];
            let Some((&family, rest)) = rest.split_first() else {
                return Err(malformed("CONNECT", "no address family"));
            };
            let peer = match family {
                b'U' => Peer::Unknown,
                b'4' | b'6' | b'L' => {
                    if rest.len() < 2 {
                        return Err(malformed("CONNECT", "no port"));
                    }
                    let port = u16::from_be_bytes([rest[0], rest[1]]);
                    let addr = match strings("CONNECT", &rest[2..])?.as_slice() {
                        [a] => text(a),
                        _ => return Err(malformed("CONNECT", "no address")),
                    };
                    if family == b'L' {
                        Peer::Local(addr)
                    } else {
                        // IPv6 may come as "IPv6:..." (Sendmail's form).
                        let bare = addr.strip_prefix("IPv6:").unwrap_or(&addr);
                        let ip: IpAddr = bare.parse().map_err(|_| malformed("CONNECT", "not an IP address"))?;
                        Peer::Inet { ip, port }
                    }
                }
                _ => return Err(malformed("CONNECT", "unknown address family")),
            };
            Command::Connect { hostname, peer }
        }
        b'H' => match strings("HELO", p)?.as_slice() {
            [h] => Command::Helo(text(h)),
            _ => return Err(malformed("HELO", "not one string")),
        },
        b'M' | b'R' => {
            let name = if code == b'M' { "MAIL" } else { "RCPT" };
            let args: Vec<String> = strings(name, p)?.into_iter().map(text).collect();
            if args.is_empty() {
                return Err(malformed(name, "no address"));
            }
            if code == b'M' {
                Command::Mail(args)
            } else {
                Command::Rcpt(args)
            }
        }
        b'T' => Command::Data,
        b'L' => {
            let Some(body) = p.strip_suffix(b"\0") else {
                return Err(malformed("HEADER", "value not NUL-terminated"));
            };
            let Some(nul) = memchr::memchr(0, body) else {
                return Err(malformed("HEADER", "no value"));
            };
            let value = &body[nul + 1..];
            if memchr::memchr(0, value).is_some() {
                return Err(malformed("HEADER", "more than a name and a value"));
            }
            Command::Header {
                name: text(&body[..nul]),
                value: value.to_vec(),
            }
        }
        b'N' => Command::EndOfHeaders,
        b'B' => Command::Body(p.to_vec()),
        b'E' => Command::EndOfBody(p.to_vec()),
        b'A' => Command::Abort,
        b'Q' => Command::Quit,
        b'K' => Command::QuitNewConnection,
        b'U' => Command::Unknown(p.strip_suffix(b"\0").unwrap_or(p).to_vec()),
        other => return Err(MilterError::UnknownCommand(other)),
    })
}

/// Our answer to the MTA's `SMFIC_OPTNEG`: the version both speak, and of
/// the actions and steps we `want`, those the MTA offers.
pub fn negotiate(offer: OptNeg, want: OptNeg) -> Result<OptNeg, MilterError> {
    if offer.version < 2 {
        return Err(MilterError::Version(offer.version));
    }
    Ok(OptNeg {
        version: offer.version.min(want.version),
        actions: offer.actions & want.actions,
        protocol: offer.protocol & want.protocol,
    })
}

/// Whether the MTA waits for a reply to `cmd` under the negotiated
/// protocol steps.
pub fn expects_reply(protocol: u32, cmd: &Command) -> bool {
    let nr = match cmd {
        Command::OptNeg(_) | Command::EndOfBody(_) => return true,
        Command::Macros { .. } | Command::Abort | Command::Quit | Command::QuitNewConnection => return false,
        Command::Connect { .. } => step::NR_CONNECT,
        Command::Helo(_) => step::NR_HELO,
        Command::Mail(_) => step::NR_MAIL,
        Command::Rcpt(_) => step::NR_RCPT,
        Command::Data => step::NR_DATA,
        Command::Header { .. } => step::NR_HEADER,
        Command::EndOfHeaders => step::NR_EOH,
        Command::Body(_) => step::NR_BODY,
        Command::Unknown(_) => step::NR_UNKNOWN,
    };
    protocol & nr == 0
}

/// One response to the MTA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    OptNeg(OptNeg),
    /// Go on with the next stage (at the end of the body: accept).
    Continue,
    /// Accept the message, no more stages for it.
    Accept,
    /// Reject with the MTA's default 5xx.
    Reject,
    /// Defer with the MTA's default 4xx.
    Tempfail,
    /// Accept and silently drop.
    Discard,
    /// Skip the rest of this stage's commands (body chunks).
    Skip,
    /// Still working: the MTA restarts its timeout.
    Progress,
    /// Reject or defer with our own reply: `"550 5.7.1 text"` (4xx or 5xx).
    ReplyCode(String),
    /// Append a header field.
    AddHeader {
        name: String,
        value: String,
    },
    /// Insert a header field at `index` (0: the top).
    InsertHeader {
        index: u32,
        name: String,
        value: String,
    },
    /// Replace the `index`th (from 1) field named `name`; an empty value
    /// deletes it.
    ChangeHeader {
        index: u32,
        name: String,
        value: String,
    },
    /// Put the message on hold (Postfix: the hold queue) with a reason.
    Quarantine(String),
}

impl Response {
    /// `reply` as an `SMFIR_REPLYCODE`: one line, `"550 5.7.1 text"`.
    pub fn reply(reply: &crate::proto::Reply) -> Response {
        let text = reply.text.split('\n').collect::<Vec<_>>().join("; ");
        let s = if reply.enhanced.is_empty() {
            format!("{} {text}", reply.code)
        } else {
            format!("{} {} {text}", reply.code, reply.enhanced)
        };
        Response::ReplyCode(s)
    }

    /// Appends the frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        let cstr = |out: &mut Vec<u8>, s: &str| {
            // A NUL inside would end the string early on the other side.
            out.extend(s.bytes().filter(|&b| b != 0));
            out.push(0);
        };
        match self {
            Response::OptNeg(o) => {
                out.push(b'O');
                out.extend_from_slice(&o.version.to_be_bytes());
                out.extend_from_slice(&o.actions.to_be_bytes());
                out.extend_from_slice(&o.protocol.to_be_bytes());
            }
            Response::Continue => out.push(b'c'),
            Response::Accept => out.push(b'a'),
            Response::Reject => out.push(b'r'),
            Response::Tempfail => out.push(b't'),
            Response::Discard => out.push(b'd'),
            Response::Skip => out.push(b's'),
            Response::Progress => out.push(b'p'),
            Response::ReplyCode(text) => {
                out.push(b'y');
                cstr(out, text);
            }
            Response::AddHeader { name, value } => {
                out.push(b'h');
                cstr(out, name);
                cstr(out, value);
            }
            Response::InsertHeader { index, name, value } => {
                out.push(b'i');
                out.extend_from_slice(&index.to_be_bytes());
                cstr(out, name);
                cstr(out, value);
            }
            Response::ChangeHeader { index, name, value } => {
                out.push(b'm');
                out.extend_from_slice(&index.to_be_bytes());
                cstr(out, name);
                cstr(out, value);
            }
            Response::Quarantine(reason) => {
                out.push(b'q');
                cstr(out, reason);
            }
        }
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }

    /// The frame as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
}

/// Frames a command as an MTA sends it (tests, fuzzing, benchmarks).
pub fn frame(code: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + payload.len());
    v.extend_from_slice(&(payload.len() as u32 + 1).to_be_bytes());
    v.push(code);
    v.extend_from_slice(payload);
    v
}

/// Parses one response frame's code and payload, as an MTA reads it
/// (tests, fuzzing: what we encode reads back the same).
pub fn parse_response(code: u8, p: &[u8]) -> Result<Response, MilterError> {
    let one = |what: &'static str| -> Result<String, MilterError> {
        match strings(what, p)?.as_slice() {
            [s] => Ok(text(s)),
            _ => Err(malformed(what, "not one string")),
        }
    };
    let indexed = |what: &'static str| -> Result<(u32, String, String), MilterError> {
        if p.len() < 4 {
            return Err(malformed(what, "no index"));
        }
        match strings(what, &p[4..])?.as_slice() {
            [n, v] => Ok((be32(what, &p[..4])?, text(n), text(v))),
            _ => Err(malformed(what, "not a name and a value")),
        }
    };
    Ok(match code {
        b'O' if p.len() >= 12 => Response::OptNeg(OptNeg {
            version: be32("OPTNEG", &p[0..4])?,
            actions: be32("OPTNEG", &p[4..8])?,
            protocol: be32("OPTNEG", &p[8..12])?,
        }),
        b'c' => Response::Continue,
        b'a' => Response::Accept,
        b'r' => Response::Reject,
        b't' => Response::Tempfail,
        b'd' => Response::Discard,
        b's' => Response::Skip,
        b'p' => Response::Progress,
        b'y' => Response::ReplyCode(one("REPLYCODE")?),
        b'q' => Response::Quarantine(one("QUARANTINE")?),
        b'h' => match strings("ADDHEADER", p)?.as_slice() {
            [n, v] => Response::AddHeader {
                name: text(n),
                value: text(v),
            },
            _ => return Err(malformed("ADDHEADER", "not a name and a value")),
        },
        b'i' => {
            let (index, name, value) = indexed("INSHEADER")?;
            Response::InsertHeader { index, name, value }
        }
        b'm' => {
            let (index, name, value) = indexed("CHGHEADER")?;
            Response::ChangeHeader { index, name, value }
        }
        other => return Err(MilterError::UnknownCommand(other)),
    })
}

#[cfg(test)]
mod tests;
