//! sluice: a high-throughput SMTP relay and content filter.
//!
//! # Layout
//!
//! - [`config`]: the TOML file (`config::raw`) validated once into typed
//!   structs; every error names its dotted key (exit 64).
//! - [`app`]: wiring; builds the components and owns shutdown.
//! - [`listener`]: accept loop, connection limit, STARTTLS hand-over.
//! - [`smtp`]: the front end. `proto` is the sans-IO core (command
//!   parser, typed replies, line/DATA/BDAT receivers; no tokio, fuzzed);
//!   `smtp::session` drives it over a stream; `smtp::handlers` has one
//!   handler per verb.
//! - [`policy`]: pre-DATA [`policy::Check`]s run by stage (recipients).
//! - [`spool`]: durable storage seam; `spool::fs` is the segment log with
//!   group commit.
//! - [`delivery`]: the [`delivery::Transport`] seam, the next-hop SMTP/LMTP
//!   client with a connection pool, the retry queue and DSNs.
//! - [`scan`]: content checks at the end of DATA: our own MIME decoding
//!   (every plausible reading), banned attachments, the [`scan::Scanner`]
//!   seam with clamd (streamed INSTREAM, failover), admission control and
//!   the deferred scan of held mail.
//! - [`quarantine`]: refused-after-acceptance mail on disk.
//! - [`spam`]: spam scoring at the end of DATA: `spam::view` (the message as
//!   rules see it), `spam::rules` (the engine of `rules/`: one
//!   Aho-Corasick pass over each text for the rules' literals, then only
//!   the rules whose literal occurs; RegexSets for the few without one),
//!   `spam::tokenize` + `spam::bayes` (the classifier), `spam::auth`
//!   (SPF/DKIM/DMARC, Authentication-Results), `spam::filter` (score ->
//!   action per recipient domain, hot reload), `spam::eval` (k-fold
//!   cross-validation).
//! - [`scan_cli`]: `sluice scan`, the content pipeline on files.
//! - `src/cli/` (binary only, not in this crate): the bodies of `sluice
//!   learn`, `bans`, `quarantine` and `check`; `main.rs` parses and dispatches.
//! - [`firewall`]: the ban engine: offences from events -> bans with
//!   windows, escalation, allowlist, aggregation; exporters (nftables,
//!   iptables+ipset, files), the control socket.
//! - [`events`]: every decision as an [`events::Event`] on a broadcast bus;
//!   `events::log` writes the event log (JSON lines, SIGUSR1 reopen); the
//!   metrics are updated on emit and the firewall reads the bus.
//! - [`metrics`]: the Prometheus registry (one place), the metrics listener
//!   (`/metrics`, `/healthz`, `/readyz`, the status page), the per-second
//!   history the page draws, and the readiness probes.
//! - [`tls`]: rustls server config, reloaded when the files change.
//!
//! # Data flow
//!
//! ```text
//! TcpListener ─accept─► limit (Semaphore) ─► Session (smtp/session.rs)
//!   EHLO/MAIL/RCPT ─► CheckChain (policy/) ─ reject ─► reply + Event
//!   DATA/BDAT ─► DataReceiver/BdatReceiver (smtp/proto) ─► body + Received
//!             └─ chunks ─► ScanStream (clamd INSTREAM, bounded channel)
//!   end of DATA ─► ContentFilter: mime::analyse ─► banned? ─► 554
//!             ─► Admission: in session: clamd(raw + tar of decoded parts)
//!                  virus ─► 554 5.7.1 │ failure ─► 451 4.7.1 (or hold)
//!             ─► SpamFilter: view + rules + classifier + SPF/DKIM/DMARC
//!                  reject 550 5.7.1 │ tempfail 451 │ quarantine (250)
//!                  │ tag: Authentication-Results, X-Spam-* prepended
//!             ─► Spool::store (group commit, fsync) ─► 250 only now
//!             ─► QueueHandle::enqueue, or DeferredHandle when deferred:
//!                scan from the spool ─► clean: queue │ virus: quarantine
//! Queue (delivery/queue.rs): N concurrent attempts ─► Transport (SMTP/LMTP)
//!   per recipient: delivered ─► mark done │ 4xx ─► backoff retry
//!                  5xx / expired ─► DSN (stored + queued) ─► mark done
//! EventBus ─emit─► Metrics (counters, synchronously)
//!          └─► event log (JSON lines) │ Firewall (bans) ─► nft / ipset
//! Metrics listener: /metrics /healthz /readyz / (status page) /api/status
//! ```
#![forbid(unsafe_code)]
#![warn(clippy::large_futures)]

pub mod app;
pub mod config;
pub mod delivery;
pub mod dns;
pub mod events;
pub mod firewall;
pub mod listener;
pub mod logging;
pub mod mail;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod proto;
pub mod quarantine;
pub mod scan;
pub mod scan_cli;
pub mod shutdown;
pub mod smtp;
pub mod spam;
pub mod spool;
pub mod status;
pub mod tls;
