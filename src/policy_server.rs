//! `[policy_server]`: the pre-DATA checks for an existing Postfix, over
//! its policy delegation protocol (`check_policy_service
//! inet:127.0.0.1:10023` in `smtpd_recipient_restrictions`).
//!
//! Each request is turned into the stages the SMTP session would have run
//! ([`Stage::Connect`], [`Stage::Helo`], [`Stage::MailFrom`],
//! [`Stage::RcptTo`]) and asked of the same [`crate::policy::CheckChain`]
//! the front end uses (DNS lists, HELO and FCrDNS, rates, the recipient
//! table and call-ahead, greylisting), with the same per-client state
//! ([`crate::state::StateStore`], shared with `[cluster]`). Bans are asked
//! first. A refusal becomes an access(5) action with sluice's reply
//! (`550 5.1.1 ...`), greylisting postgrey's `DEFER_IF_PERMIT`, a pass
//! `DUNNO` (or, with `spam.auth`, the message's first passed recipient
//! `PREPEND Received-SPF: ...`); each refusal is the front end's event with `"via":"policy"`,
//! so the metrics and the ban engine count it as they count the front
//! end's.
//!
//! Postfix's `instance` attribute names one message transaction: the
//! stages before RCPT run once per instance, and their state (DNS lists
//! started at connect, the FCrDNS verdict, the recipient count) lives as
//! long as it does. A request that cannot be read or used is answered
//! `DUNNO` and reported as a warning: the policy server never takes mail
//! down.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::policy_server::PolicyServerConfig;
use crate::events::{Event, Reason, Tx, Via};
use crate::policy::connection::{Admit, ConnectionFilter};
use crate::policy::helo::{Fcrdns, FcrdnsState};
use crate::policy::{Decision, Refusal, Refused, SessionCtx, Stage};
use crate::proto::Reply;
use crate::proto::policy::{Action, Attributes, Frame, Limits, Query, RequestReceiver, State};
use crate::smtp::session::{Front, Shared};
use crate::spam::auth::{AuthContext, Authenticator};

/// Transactions remembered per connection: Postfix's smtpd serves one
/// session at a time over its policy connection, so a few are plenty.
const TRANSACTIONS: usize = 8;

/// What every policy connection shares.
pub struct PolicyServer {
    /// The front end's current settings (checks, events, configuration):
    /// a reload puts new ones in place; each request takes the current.
    front: Arc<Front>,
    /// The ban list (`[firewall]`), asked first.
    bans: Option<Arc<dyn ConnectionFilter>>,
    /// SPF for `Received-SPF:` (with `spam.auth`).
    spf: Option<Authenticator>,
    cfg: PolicyServerConfig,
}

impl PolicyServer {
    pub fn new(
        front: Arc<Front>,
        bans: Option<Arc<dyn ConnectionFilter>>,
        spf: Option<Authenticator>,
        cfg: PolicyServerConfig,
    ) -> Self {
        Self { front, bans, spf, cfg }
    }

    fn limits(&self) -> Limits {
        Limits {
            max_size: self.cfg.max_request_size,
            max_attributes: self.cfg.max_attributes,
        }
    }

    /// Serves one Postfix connection until it closes, idles past
    /// `policy_server.idle_timeout`, or sluice shuts down (between
    /// requests).
    pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(&self, mut stream: S, peer: SocketAddr) {
        let mut rx = RequestReceiver::new(self.limits());
        let mut input: Vec<u8> = Vec::with_capacity(4096);
        let mut out: Vec<u8> = Vec::with_capacity(256);
        let mut txns = Transactions::default();
        let shutdown = self.front.load().shutdown.clone();
        loop {
            // Answer every complete request already here, in order.
            loop {
                let (frame, used) = rx.ingest(&input);
                input.drain(..used);
                let action = match frame {
                    Frame::NeedsMoreData => break,
                    Frame::Request(attrs) => self.answer(&attrs, &mut txns, peer).await,
                    Frame::Invalid(problem) => {
                        self.warn(peer, format!("request not understood, answered DUNNO: {problem}"));
                        Action::Dunno
                    }
                };
                out.extend_from_slice(&action.to_bytes());
            }
            if !out.is_empty() {
                if stream.write_all(&out).await.is_err() {
                    return;
                }
                out.clear();
            }
            let between = input.is_empty() && !rx.is_swallowing();
            if between && shutdown.is_cancelled() {
                return;
            }
            let read = tokio::select! {
                r = tokio::time::timeout(self.cfg.idle_timeout, stream.read_buf(&mut input)) => r,
                _ = shutdown.cancelled(), if between => return,
            };
            match read {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// One request's answer, within `policy_server.check_timeout`.
    async fn answer(&self, attrs: &Attributes, txns: &mut Transactions, peer: SocketAddr) -> Action {
        let q = match attrs.query() {
            Ok(q) => q,
            Err(problem) => {
                self.warn(peer, format!("request not usable, answered DUNNO: {problem}"));
                return Action::Dunno;
            }
        };
        let shared = self.front.load();
        match tokio::time::timeout(self.cfg.check_timeout, self.decide(&shared, &q, txns)).await {
            Ok(action) => action,
            Err(_) => {
                self.warn(
                    peer,
                    format!(
                        "checks for {} took longer than policy_server.check_timeout ({:?}); answered DUNNO",
                        q.client, self.cfg.check_timeout
                    ),
                );
                Action::Dunno
            }
        }
    }

    fn warn(&self, peer: SocketAddr, message: String) {
        self.front.load().events.emit(Event::Warning {
            component: "policy_server",
            message: format!("{peer}: {message}"),
        });
    }

    /// Runs the stages this request reaches that its transaction has not
    /// run yet, and the RCPT stage for each recipient.
    async fn decide(&self, shared: &Shared, q: &Query, txns: &mut Transactions) -> Action {
        let reached = match q.state {
            State::Connect => 0,
            State::Helo => 1,
            State::Mail => 2,
            State::Rcpt => 3,
            // DATA, END-OF-MESSAGE, VRFY, ETRN: nothing of ours to say.
            _ => return Action::Dunno,
        };
        let txn = txns.get(shared, q);
        if let Some(a) = &txn.refused {
            return a.clone();
        }
        if let Some(Admit::Refuse(r)) = self.bans.as_ref().map(|b| b.admit(q.client)) {
            let action = action_of(&r);
            txn.refused = Some(action.clone());
            shared.events.emit(txn.refused_at(q).event(&Stage::Connect, "bans", r));
            return action;
        }
        if !txn.connected {
            txn.connected = true;
            if shared.config.helo.fcrdns != crate::policy::helo::Action::Off {
                known_names(&txn.ctx, q);
            }
            if let Some(a) = txn.run(shared, q, Stage::Connect, true).await {
                return a;
            }
        }
        if reached >= 1 && !q.helo.is_empty() && txn.helo.as_deref() != Some(q.helo.as_str()) {
            txn.helo = Some(q.helo.clone());
            if let Some(a) = txn.run(shared, q, Stage::Helo(&q.helo), true).await {
                return a;
            }
        }
        if reached >= 2 && !txn.mail {
            txn.mail = true;
            txn.ctx.start_dns_budget(shared.config.dns.budget);
            let helo = (!q.helo.is_empty()).then_some(q.helo.as_str());
            let stage = Stage::MailFrom {
                from: q.sender.as_ref(),
                helo,
            };
            if let Some(a) = txn.run(shared, q, stage, true).await {
                return a;
            }
        }
        let (3, Some(rcpt)) = (reached, q.recipient.as_ref()) else {
            return Action::Dunno;
        };
        if txn.rcpts >= shared.config.server.max_recipients {
            return Action::Reply(Reply::TOO_MANY_RCPTS);
        }
        let stage = Stage::RcptTo {
            rcpt,
            from: q.sender.as_ref(),
        };
        if let Some(a) = txn.run(shared, q, stage, false).await {
            return a;
        }
        txn.rcpts += 1;
        // SPF once per message: Postfix adds a PREPEND for each answer.
        match &self.spf {
            Some(auth) if !txn.spf_done => {
                txn.spf_done = true;
                Action::Prepend(received_spf(auth, q, &txn.ctx).await)
            }
            _ => Action::Dunno,
        }
    }
}

/// The `Received-SPF:` header (RFC 7208 §9.1) for the request's client,
/// HELO name and sender (the HELO identity for `<>`).
async fn received_spf(auth: &Authenticator, q: &Query, ctx: &SessionCtx) -> String {
    let from = q.sender.as_ref().map(|m| m.to_string()).unwrap_or_default();
    let ip = match q.client {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(q.client, IpAddr::V4),
        v4 => v4,
    };
    let actx = AuthContext {
        ip,
        helo: &q.helo,
        mail_from: &from,
        deadline: ctx.dns_deadline(),
    };
    let result = auth.spf(&actx).await;
    let receiver = auth.authserv_id();
    let (identity, domain) = match q.sender.as_ref() {
        Some(m) => ("mailfrom", m.domain.as_str()),
        None => ("helo", q.helo.as_str()),
    };
    let mut h = format!(
        "Received-SPF: {result} ({receiver}: {domain} gives {result} for {ip}) client-ip={ip}; envelope-from=\"{from}\";"
    );
    if !q.helo.is_empty() {
        h.push_str(&format!(" helo={};", q.helo));
    }
    h.push_str(&format!(" receiver={receiver}; identity={identity}"));
    h
}

/// The FCrDNS verdict from the names Postfix looked up (`client_name` is
/// set only when the PTR name resolves back to the client): the HELO
/// check uses it instead of asking DNS again. Postfix says "unknown" for
/// both a missing name and a failed lookup, so without any name there is
/// no verdict here, and the check looks for itself.
fn known_names(ctx: &SessionCtx, q: &Query) {
    let verdict = match (&q.client_name, &q.reverse_client_name) {
        (Some(name), _) => Fcrdns::Pass(name.clone()),
        (None, Some(ptr)) => Fcrdns::Fail(format!("PTR {ptr:?} of {} does not resolve back to it", q.client)),
        (None, None) => return,
    };
    let task = tokio::spawn(async move { verdict });
    *ctx.fcrdns.lock().unwrap_or_else(|p| p.into_inner()) = FcrdnsState::Pending(task);
}

/// A refusal as an access(5) action: greylisting as postgrey answers it
/// (`DEFER_IF_PERMIT`, so a later reject still wins), anything else with
/// sluice's own code and text.
fn action_of(r: &Refusal) -> Action {
    if r.reason == Reason::Greylist {
        Action::DeferIfPermit(r.reply.clone())
    } else {
        Action::Reply(r.reply.clone())
    }
}

/// One message transaction of Postfix's (one `instance`).
struct Txn {
    instance: String,
    client: IpAddr,
    /// Numbers the transaction's events as the front end numbers sessions.
    session: u64,
    ctx: SessionCtx,
    connected: bool,
    /// The HELO name checked.
    helo: Option<String>,
    mail: bool,
    /// Recipients the checks passed.
    rcpts: usize,
    /// A refusal before RCPT (bans, HELO, MAIL): the answer for the rest
    /// of the transaction.
    refused: Option<Action>,
    /// `Received-SPF:` given (once per message).
    spf_done: bool,
}

impl Txn {
    fn refused_at(&self, q: &Query) -> Refused {
        Refused {
            via: Via::Policy,
            session: self.session,
            ip: self.client,
            id: q.queue_id.clone(),
            tx: Tx {
                helo: q.helo.clone(),
                from: q.sender.as_ref().map(|m| m.to_string()).unwrap_or_default(),
                // The refusal events say "via":"policy" themselves.
                via: Via::Smtp,
            },
        }
    }

    /// Runs one stage; a refusal is reported and returned as the action
    /// (and stands for the transaction when `stands`).
    async fn run(&mut self, shared: &Shared, q: &Query, stage: Stage<'_>, stands: bool) -> Option<Action> {
        let verdict = shared.checks.run(&stage, &self.ctx).await?;
        let refusal = match verdict.decision {
            Decision::Continue => return None,
            Decision::Reject(r) | Decision::Defer(r) => r,
        };
        let action = action_of(&refusal);
        if stands {
            self.refused = Some(action.clone());
        }
        shared
            .events
            .emit(self.refused_at(q).event(&stage, verdict.check, refusal));
        Some(action)
    }
}

/// The transactions of one connection, newest first.
#[derive(Default)]
struct Transactions(VecDeque<Txn>);

impl Transactions {
    /// The transaction of `q` (a new one for a new instance or client).
    fn get(&mut self, shared: &Shared, q: &Query) -> &mut Txn {
        // Without `instance` (not sent by very old Postfix versions) the
        // client and the envelope so far stand in for it.
        let instance = if q.instance.is_empty() {
            format!(
                "{} {} {}",
                q.client,
                q.helo,
                q.sender.as_ref().map(|m| m.to_string()).unwrap_or_default()
            )
        } else {
            q.instance.clone()
        };
        let found = self
            .0
            .iter()
            .position(|t| t.instance == instance && t.client == q.client);
        let txn = match found.and_then(|i| self.0.remove(i)) {
            Some(t) => t,
            None => {
                if self.0.len() >= TRANSACTIONS {
                    self.0.pop_back();
                }
                Txn {
                    instance,
                    client: q.client,
                    session: shared.session_seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                    ctx: SessionCtx::new(q.client, &shared.config.policy.allowlist),
                    connected: false,
                    helo: None,
                    mail: false,
                    rcpts: 0,
                    refused: None,
                    spf_done: false,
                }
            }
        };
        self.0.push_front(txn);
        &mut self.0[0]
    }
}

/// Accepts Postfix's connections on `listener` until shutdown; each is
/// served on `tracker`.
pub async fn accept_loop(
    listener: TcpListener,
    server: Arc<PolicyServer>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => return,
        };
        match accepted {
            Ok((sock, peer)) => {
                let _ = sock.set_nodelay(true);
                let s = server.clone();
                tracker.spawn(async move { s.serve(sock, peer).await });
            }
            Err(e) => {
                tracing::warn!(error = %e, "policy_server: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
