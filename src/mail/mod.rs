//! Shared vocabulary every module may import: the envelope (what the spool
//! stores and delivery reads) and the clock and date formats. A leaf: it
//! imports only the wire protocol's types ([`crate::proto`]).

pub mod date;
pub mod envelope;
