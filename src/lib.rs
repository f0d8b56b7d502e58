//! sluice: a high-throughput SMTP relay and content filter.
//!
//! # Layout
//!
//! Leaves first (they import nothing above them; `../shared/tools/modgraph.py
//! src` keeps the module graph free of cycles):
//!
//! - [`proto`]: the SMTP wire protocol, sans I/O: command parser, typed
//!   replies (every reply sluice gives is built in `proto::reply`),
//!   line/DATA/BDAT receivers, addresses, and `proto::policy` (Postfix's
//!   policy delegation requests and access(5) answers). No tokio; fuzzed.
//!   line/DATA/BDAT receivers, addresses; the milter protocol
//!   (`proto::milter`: frames, commands, responses, negotiation). No
//!   tokio; fuzzed.
//! - [`mail`]: the shared vocabulary: the envelope (what the spool stores
//!   and delivery reads), dates and the clock.
//! - [`config`]: plain data, one file per section of the TOML file
//!   (`config::raw` is the file as written), each with its validation;
//!   every default in `config::defaults`; every error names its dotted key
//!   in the admin's words (exit 64). `config::effective` is the file with
//!   every default filled in (`sluice config`), `config::warnings` the
//!   contradictions `check-config` reports. No I/O: files are loaded by
//!   `app::preflight`.
//! - [`metrics`]: the Prometheus registry (one place).
//! - [`control`]: the wire of the control sockets (`sluice bans`,
//!   `sluice queue`): one JSON request per line over a unix socket.
//! - [`events`]: every decision as an [`events::Event`] with a typed
//!   reason ([`events::Refusal`], [`events::Reason`], scan modes, spam
//!   actions); the bus counts them into the metrics as they are emitted;
//!   `events::log` writes the event log (JSON lines, SIGUSR1 reopen).
//! - [`dns`]: the [`dns::Resolver`] seam (hickory, or `NoDns`), the
//!   coalescing of identical lookups, and `dns::health` (is the resolver
//!   itself failing? then authentication answers temperror at once).
//! - [`spool`]: durable storage; `spool::fs` is the segment log with group
//!   commit, compaction of mostly-done segments, and recovery; `spool::incoming` holds bodies while they arrive
//!   (a shared in-memory pool, then files) and the body memory budget.
//! - [`state`]: per-client state behind the [`state::StateStore`] seam
//!   (rates, sessions, greylisting, call-ahead answers, offence windows):
//!   in memory, or with `[cluster]` shared by several nodes in
//!   Valkey/Redis (`state::redis`), each operation falling back to the
//!   node's own state when the store is away (`state::shared`).
//! - [`swap`]: a value replaced whole on reload (the front end's settings,
//!   the router, the content filter).
//!
//! The subsystems:
//!
//! - [`policy`]: the [`policy::connection::ConnectionFilter`]s the listener
//!   asks (bans, allowlist, connection limits) and the pre-DATA
//!   [`policy::Check`]s run by stage (HELO, DNS lists, rates, recipients
//!   and call-ahead, greylisting), and `policy::stress` (stress mode).
//! - [`scan`]: content checks: our own MIME decoding (every plausible
//!   reading), banned attachments, archives opened for the names inside
//!   and the unscannable policy (`scan::archive`: zip, RAR, 7z, tar, gz,
//!   bz2, xz, cab, ISO images; bounded), the [`scan::Scanner`] seam with clamd
//!   (streamed INSTREAM, failover, ping), admission control and the
//!   deferred scan of held mail.
//! - [`spam`]: spam scoring: `spam::view` (the message as rules see it),
//!   `spam::rules` (one Aho-Corasick pass over each text for the rules'
//!   literals, then only the rules whose literal occurs), `spam::tokenize`
//!   and `spam::bayes` (the classifier), `spam::ngram` (the second
//!   classifier: octet 4-grams, online logistic regression, kept in the
//!   same model file), `spam::auth` (SPF/DKIM/DMARC),
//!   `spam::filter` (score -> action per recipient domain, hot reload),
//!   `spam::eval` (k-fold cross-validation).
//! - [`quarantine`]: refused-after-acceptance mail on disk.
//! - [`pipeline`]: the end of DATA, apart from the session: form checks,
//!   content checks, spam, then the spool (or the quarantine) and the
//!   hand-over to delivery; returns an accepted outcome or a typed refusal.
//! - [`delivery`]: the [`delivery::Transport`] seam; `delivery::route`
//!   picks the next hop per recipient domain (routes, the default, bounces
//!   to a relay or by MX); `delivery::client` is the SMTP/LMTP client
//!   (RSET discipline, STARTTLS, XFORWARD/XCLIENT); `delivery::queue`
//!   retries with backoff and bounces (DSNs, double bounces);
//!   `delivery::queue::control` is `sluice queue` (list, show, flush,
//!   hold, release, delete, bounce) over the queue socket; a next hop
//!   reached again after it was down wakes the queue
//!   (`Transport::recovered`).
//! - [`firewall`]: the ban engine (offences from events -> bans with
//!   windows, escalation, allowlist, aggregation), the
//!   [`firewall::export::Exporter`]s (nftables, iptables+ipset, files), the
//!   control socket.
//! - [`smtp`]: the session: drives `proto` over a stream, one handler per
//!   verb, asks the checks and the pipeline, replies.
//! - [`policy_server`]: `[policy_server]` and `sluice policy`: Postfix's
//!   `check_policy_service` requests turned into the session's stages and
//!   asked of the same [`policy::CheckChain`] (bans first); refusals are
//!   the front end's events with `"via":"policy"` and access(5) answers.
//! - [`milter`]: the milter server for a Postfix that keeps port 25
//!   (`smtpd_milters`): drives `proto::milter` over each connection,
//!   rebuilds the message while streaming it to clamd, asks the pipeline
//!   (`Pipeline::judge`: the same checks, nothing stored) and answers with
//!   Postfix's reply, hold or header changes; events with `"via":"milter"`.
//! - [`listener`]: accept loop, connection limit, the connection filters,
//!   the PROXY protocol header on listeners behind a load balancer (the
//!   client it names is the client from then on; parsed sans I/O in
//!   `proto::proxy`), STARTTLS hand-over.
//! - [`tls`]: rustls server config, reloaded when the files change.
//! - [`status`]: the metrics listener (`/metrics`, `/healthz`, `/readyz`
//!   through `Transport::health` and `Scanner::ping`, the status page and
//!   its history), and `sluice check`.
//! - [`app`]: wiring: `preflight` loads the files, then one builder per
//!   subsystem (delivery, pipeline, front end, firewall and status) and the
//!   shutdown order.
//! - [`scan_cli`]: `sluice scan`, the content pipeline on files.
//! - [`trace`]: `sluice trace`, every decision about one message, client
//!   or address, read back from the event log.
//! - `src/cli/` (binary only): the bodies of `sluice learn`, `bans`,
//!   `quarantine` and `check`; `main.rs` parses and dispatches.
//!
//! # Data flow
//!
//! ```text
//! TcpListener ─accept─► normalise the client IP ─► ConnectionFilters
//!   (bans, allowlist, rate, concurrency) ─ refuse ─► 554/421 + Event
//!   ─► Session (smtp/session.rs)
//!   EHLO/MAIL/RCPT ─► CheckChain (policy/) ─ Refusal ─► reply + Event
//!   DATA/BDAT ─► DataReceiver/BdatReceiver (proto) ─► BodyBuf + Received
//!             └─ pool full ─► spool/incoming/ file (spool::incoming)
//!             └─ chunks ─► ScanStream (clamd INSTREAM, bounded channel)
//!   end of DATA ─► Pipeline::process (pipeline/), under the body budget:
//!      form (size, lines, header, loop) ─► content: MIME, banned parts,
//!      archives, virus scan in session or deferred (admission control);
//!      unscannable ─► reject, quarantine or accept (scan.unscannable)
//!      ─► spam: view + rules + classifiers + SPF/DKIM/DMARC
//!      ─► Spool::store (group commit, fsync) or quarantine
//!      ─► QueueHandle::enqueue, or the deferred scan
//!   ◄─ Outcome::Accepted (250 only now) │ Outcome::Refused(Refusal)
//!   the session emits one event per refusal, in one place
//! Queue (delivery/queue.rs): N concurrent attempts ─► Router
//!   ─► route per recipient domain ─► NextHopTransport (pool, STARTTLS,
//!      XFORWARD/XCLIENT) │ bounce relay │ MX hosts
//!   per recipient: delivered ─► mark done │ 4xx ─► backoff retry
//!                  5xx / expired ─► DSN (stored + queued) ─► mark done
//!                  null sender ─► double bounce (event, counter)
//! EventBus ─emit─► Metrics (counters, synchronously)
//!          └─► event log (JSON lines) │ Firewall (bans) ─► Exporters
//! Postfix ─smtpd_milters─► milter (milter.rs): headers + body chunks
//!   ─► message rebuilt, chunks ─► ScanStream ─► Pipeline::judge (same
//!   form/content/spam steps, nothing stored) ─► REPLYCODE 5xx/4xx │
//!   QUARANTINE (hold) │ header changes (Authentication-Results, X-Spam-*)
//! Status listener: /metrics /healthz /readyz / (status page) /api/status
//! Postfix ─check_policy_service─► policy_server ─► bans, CheckChain
//!   (the stages a session would have run) ─► access(5) action + Event
//! ```
#![forbid(unsafe_code)]
#![warn(clippy::large_futures)]

pub mod app;
pub mod config;
pub mod control;
pub mod delivery;
pub mod dns;
pub mod events;
pub mod firewall;
pub mod listener;
pub mod logging;
pub mod mail;
pub mod metrics;
pub mod milter;
pub mod pipeline;
pub mod policy;
pub mod policy_server;
pub mod proto;
pub mod quarantine;
pub mod scan;
pub mod scan_cli;
pub mod shutdown;
pub mod smtp;
pub mod spam;
pub mod spool;
pub mod state;
pub mod status;
pub mod swap;
pub mod tls;
pub mod trace;
