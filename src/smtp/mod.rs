//! The SMTP front end: the tokio-side session that drives the sans-IO
//! protocol core ([`crate::proto`]) over a socket, one handler per verb.

pub mod connection;
mod handlers;
pub mod session;
