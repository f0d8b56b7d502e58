//! The SMTP wire protocol, sans I/O: command parsing, replies, and the
//! receivers that frame command lines and message bodies; and the milter
//! protocol Postfix speaks to content filters (`milter`).
//!
//! Nothing in here imports tokio or touches a socket, so it can be unit
//! tested, fuzzed (`fuzz/`) and split into its own crate without edits.

pub mod address;
pub mod command;
pub mod milter;
pub mod policy;
pub mod proxy;
pub mod receiver;
pub mod reply;

pub use address::{Mailbox, parse_path};
pub use command::{Body, Command, MailParams, ParseError, RcptParams, parse};
pub use receiver::{
    BdatReceiver, BodyLimits, BodyProblem, DataReceiver, DataStatus, HeaderInfo, Line, LineReceiver, scan_headers,
};
pub use reply::Reply;
