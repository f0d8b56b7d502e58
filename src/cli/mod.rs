//! The bodies of the subcommands (`learn`, `bans`, `quarantine`, `queue`,
//! `check`);
//! `main.rs` parses the command line and dispatches here.

pub(crate) mod bans;
pub(crate) mod check;
pub(crate) mod config;
pub(crate) mod learn;
pub(crate) mod quarantine;
pub(crate) mod queue;
pub(crate) mod trace;
