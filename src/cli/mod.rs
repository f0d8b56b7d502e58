//! The bodies of the subcommands (`learn`, `bans`, `quarantine`, `queue`,
//! `check`, `man`, `trace`) and systemd's notifications for `serve`;
//! `main.rs` parses the command line and dispatches here.

pub(crate) mod args;
pub(crate) mod bans;
pub(crate) mod check;
pub(crate) mod config;
pub(crate) mod learn;
pub(crate) mod man;
pub(crate) mod quarantine;
pub(crate) mod queue;
pub(crate) mod systemd;
pub(crate) mod trace;
