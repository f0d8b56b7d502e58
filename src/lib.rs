//! sluice: a high-throughput SMTP relay and content filter.
//!
//! # Layout
//!
//! - [`config`]: the TOML file (`config::raw`) validated once into typed
//!   structs; every error names its dotted key (exit 64).
//! - [`app`]: wiring; builds the components and owns shutdown.
//! - [`listener`]: accept loop, connection limit, STARTTLS hand-over.
//! - [`smtp`]: the front end. `smtp::proto` is the sans-IO core (command
//!   parser, typed replies, line/DATA/BDAT receivers; no tokio, fuzzed);
//!   `smtp::session` drives it over a stream; `smtp::handlers` has one
//!   handler per verb.
//! - [`policy`]: pre-DATA [`policy::Check`]s run by stage (recipients).
//! - [`spool`]: durable storage seam; `spool::fs` is the segment log with
//!   group commit.
//! - [`delivery`]: the [`delivery::Transport`] seam, the next-hop SMTP/LMTP
//!   client with a connection pool, the retry queue and DSNs.
//! - [`events`]: every decision as an [`events::Event`] on a broadcast bus;
//!   the log reads it (metrics and bans will too).
//! - [`tls`]: rustls server config, reloaded when the files change.
//!
//! # Data flow
//!
//! ```text
//! TcpListener ─accept─► limit (Semaphore) ─► Session (smtp/session.rs)
//!   EHLO/MAIL/RCPT ─► CheckChain (policy/) ─ reject ─► reply + Event
//!   DATA/BDAT ─► DataReceiver/BdatReceiver (smtp/proto) ─► body + Received
//!             ─► Spool::store (group commit, fsync) ─► 250 only now
//!             ─► QueueHandle::enqueue
//! Queue (delivery/queue.rs): N concurrent attempts ─► Transport (SMTP/LMTP)
//!   per recipient: delivered ─► mark done │ 4xx ─► backoff retry
//!                  5xx / expired ─► DSN (stored + queued) ─► mark done
//! EventBus ─► log (JSON per event)
//! ```
#![forbid(unsafe_code)]
#![warn(clippy::large_futures)]

pub mod app;
pub mod config;
pub mod delivery;
pub mod dns;
pub mod events;
pub mod listener;
pub mod logging;
pub mod policy;
pub mod scan;
pub mod shutdown;
pub mod smtp;
pub mod spool;
pub mod tls;
