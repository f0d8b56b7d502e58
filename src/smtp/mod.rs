//! The SMTP front end: the sans-IO protocol core (`proto`), and the
//! tokio-side session that drives it over a socket.

pub mod connection;
pub mod date;
pub mod envelope;
mod handlers;
pub mod proto;
pub mod session;
