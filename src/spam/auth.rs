//! Sender authentication: SPF (RFC 7208), DKIM verification (RFC 6376) and
//! DMARC (RFC 7489 / DMARCbis), done by `mail-auth` over our own hickory
//! resolver, plus the `Authentication-Results` header (RFC 8601) we add and
//! the removal of forged copies of it that claim to be ours (§5).
//!
//! [`Authenticator::check`] never fails: DNS errors and the overall deadline
//! become `temperror`, broken records `permerror`. The outcome is both a
//! header to prepend and a [`AuthOutcome::summary`] line for the rules.

use std::net::IpAddr;
use std::time::Duration;

use mail_auth::dmarc::Policy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, DkimOutput, DkimResult, DmarcOutput, DmarcResult, MessageAuthenticator, Parameters,
    SpfOutput, SpfResult,
};

pub use crate::dns::tokio_resolver;
pub use forged::{is_ours as claims_our_name, strip_forged_results};
use header::{ResInfo, base64, format_header, push_prop};

/// The SMTP facts the checks need.
#[derive(Debug, Clone, Copy)]
pub struct AuthContext<'a> {
    /// The client's address (IPv4-mapped addresses are best unmapped first).
    pub ip: IpAddr,
    /// The EHLO/HELO argument.
    pub helo: &'a str,
    /// The MAIL FROM address without brackets; `""` for `<>`.
    pub mail_from: &'a str,
    /// When the transaction's DNS budget (`dns.budget`) runs out, if it
    /// has one: the checks end then at the latest.
    pub deadline: Option<tokio::time::Instant>,
}

/// The results of the three checks, in RFC 8601 result words.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuthOutcome {
    /// pass fail softfail neutral none temperror permerror
    pub spf: &'static str,
    /// pass (at least one valid signature), fail (signatures, none valid),
    /// none (unsigned), temperror, permerror
    pub dkim: &'static str,
    /// pass fail none temperror permerror
    pub dmarc: &'static str,
    /// reject quarantine none: the policy that applies, when a DMARC record was found.
    pub dmarc_policy: Option<&'static str>,
    /// The complete `Authentication-Results: ...\r\n` header, folded, CRLF.
    pub header: String,
}

impl AuthOutcome {
    /// The pseudo-header value rules match on, e.g.
    /// `spf=pass dkim=none dmarc=fail dmarc-policy=reject` (the policy part
    /// only when a DMARC record was found).
    pub fn summary(&self) -> String {
        let mut s = format!("spf={} dkim={} dmarc={}", self.spf, self.dkim, self.dmarc);
        if let Some(p) = self.dmarc_policy {
            s.push_str(" dmarc-policy=");
            s.push_str(p);
        }
        s
    }
}

/// Runs SPF, DKIM and DMARC through `mail-auth` with our resolver.
#[derive(Clone)]
pub struct Authenticator {
    inner: MessageAuthenticator,
    authserv_id: String,
    timeout: Duration,
    /// Parsed records until their TTL (see `cache`).
    caches: std::sync::Arc<cache::Caches>,
    /// While the resolver is failing, the checks answer temperror at once.
    health: Option<std::sync::Arc<crate::dns::Health>>,
    /// Counts the checks answered at once (`sluice_auth_skipped_total`).
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("authserv_id", &self.authserv_id)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// `authserv_id` is our host name (the header's first word and what
    /// [`strip_forged_results`] removes); `timeout` bounds a whole
    /// [`check`](Self::check).
    pub fn new(resolver: hickory_resolver::TokioResolver, authserv_id: String, timeout: Duration) -> Self {
        Self {
            inner: MessageAuthenticator(resolver),
            authserv_id,
            timeout,
            caches: std::sync::Arc::default(),
            health: None,
            metrics: None,
        }
    }

    /// Answers temperror at once while `health` says the resolver is
    /// failing, counting that (and spent budgets) in `metrics`.
    pub fn with_health(
        mut self,
        health: std::sync::Arc<crate::dns::Health>,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
    ) -> Self {
        self.health = Some(health);
        self.metrics = Some(metrics);
        self
    }

    /// When the checks must end: the timeout, the transaction's DNS
    /// budget, or now when the resolver is failing (cached answers still
    /// count: the futures are polled once). True when they are skipped so.
    fn deadline(&self, ctx: &AuthContext<'_>) -> (tokio::time::Instant, bool) {
        let now = tokio::time::Instant::now();
        let mut deadline = now + self.timeout;
        let mut skipped = None;
        if let Some(d) = ctx.deadline {
            deadline = deadline.min(d);
            if d <= now {
                skipped = Some("budget_spent");
            }
        }
        if self.health.as_ref().is_some_and(|h| h.failing()) {
            deadline = now;
            skipped = Some("resolver_failing");
        }
        if let (Some(reason), Some(m)) = (skipped, &self.metrics) {
            m.auth_skipped.with_label_values(&[reason]).inc();
        }
        (deadline, skipped.is_some())
    }

    pub fn authserv_id(&self) -> &str {
        &self.authserv_id
    }

    /// Runs SPF (MAIL FROM, or the HELO identity for `<>`) and DKIM (every
    /// signature) at once, then DMARC for the From domain, aligned with
    /// both. `parsed` should be `raw` parsed by mail-parser; if it is not
    /// (different bytes), `raw` is parsed again. Results not known when
    /// the timeout expires are `temperror`.
    pub async fn check(&self, ctx: &AuthContext<'_>, parsed: &mail_parser::Message<'_>, raw: &[u8]) -> AuthOutcome {
        let (deadline, skipped) = self.deadline(ctx);
        let msg = authenticated_message(parsed, raw);
        let c = &*self.caches;
        let spf_params = Parameters::new(ctx.spf_parameters(&self.authserv_id))
            .with_txt_cache(&c.txt)
            .with_mx_cache(&c.mx)
            .with_ipv4_cache(&c.ipv4)
            .with_ipv6_cache(&c.ipv6)
            .with_ptr_cache(&c.ptr);
        let spf_fut = tokio::time::timeout_at(deadline, self.inner.verify_spf(spf_params));
        let dkim_fut = tokio::time::timeout_at(
            deadline,
            self.inner.verify_dkim(Parameters::new(&msg).with_txt_cache(&c.txt)),
        );
        let (spf, mut dkim) = tokio::join!(Box::pin(spf_fut), Box::pin(dkim_fut));
        if let Ok(outputs) = &mut dkim {
            add_unparsable_signatures(&msg, outputs);
        }
        let spf_timed_out = spf.is_err();
        let timed_out = spf_timed_out || dkim.is_err();
        let spf: SpfOutput =
            spf.unwrap_or_else(|_| SpfOutput::new(ctx.spf_domain().to_string()).with_result(SpfResult::TempError));
        // The resolver's health hears how the sender domain's SPF went
        // (not when the checks were skipped: that says nothing new).
        if !skipped && let Some(h) = &self.health {
            let failed = spf_timed_out || spf.result() == SpfResult::TempError;
            let outcome = if failed {
                crate::dns::QueryOutcome::Timeout
            } else {
                crate::dns::QueryOutcome::Answered
            };
            h.record(crate::dns::health::key_of(ctx.spf_domain()), outcome);
        }

        let mut infos = Vec::with_capacity(4);
        let spf_word = spf_word(spf.result());
        infos.push(ctx.spf_info(spf_word, spf_timed_out));
        let dkim_word = match &dkim {
            Ok(outputs) => dkim_results(outputs, &mut infos),
            Err(_) => dkim_timed_out(&msg, &mut infos),
        };
        // DMARC: only with time left; otherwise temperror.
        let (dmarc_word, dmarc_policy) = if timed_out {
            dmarc_timed_out(&msg, &mut infos)
        } else {
            let outputs: &[DkimOutput<'_>] = dkim.as_deref().unwrap_or(&[]);
            self.dmarc(&msg, outputs, &spf, deadline, &mut infos).await
        };

        AuthOutcome {
            spf: spf_word,
            dkim: dkim_word,
            dmarc: dmarc_word,
            dmarc_policy,
            header: format_header(&self.authserv_id, &infos),
        }
    }

    /// SPF alone (MAIL FROM, or the HELO identity for `<>`), before the
    /// message exists (the policy server's `Received-SPF:`): the result
    /// word, `temperror` past the deadline.
    pub async fn spf(&self, ctx: &AuthContext<'_>) -> &'static str {
        let (deadline, _) = self.deadline(ctx);
        let c = &*self.caches;
        let params = Parameters::new(ctx.spf_parameters(&self.authserv_id))
            .with_txt_cache(&c.txt)
            .with_mx_cache(&c.mx)
            .with_ipv4_cache(&c.ipv4)
            .with_ipv6_cache(&c.ipv6)
            .with_ptr_cache(&c.ptr);
        match tokio::time::timeout_at(deadline, Box::pin(self.inner.verify_spf(params))).await {
            Ok(out) => spf_word(out.result()),
            Err(_) => "temperror",
        }
    }

    /// DMARC for the From domain of `msg` (with the SPF and DKIM results),
    /// if it answers before `deadline`; adds its entry to `infos` and
    /// returns the result and the policy that applies.
    async fn dmarc(
        &self,
        msg: &AuthenticatedMessage<'_>,
        dkim: &[DkimOutput<'_>],
        spf: &SpfOutput,
        deadline: tokio::time::Instant,
        infos: &mut Vec<ResInfo>,
    ) -> (&'static str, Option<&'static str>) {
        let c = &*self.caches;
        let params = Parameters::new(DmarcParameters::new(msg, dkim, spf.domain(), spf))
            .with_txt_cache(&c.txt)
            .with_ipv4_cache(&c.ipv4)
            .with_ipv6_cache(&c.ipv6);
        match tokio::time::timeout_at(deadline, Box::pin(self.inner.verify_dmarc(params))).await {
            Ok(out) => {
                let word = dmarc_word(&out.result());
                let policy = out.dmarc_record().map(|_| policy_word(out.policy()));
                let domain = (!out.domain().is_empty()).then(|| out.domain().to_string());
                infos.push(dmarc_info(word, dmarc_comment(&out), domain.as_deref(), policy));
                (word, policy)
            }
            Err(_) => dmarc_timed_out(msg, infos),
        }
    }
}

impl<'a> AuthContext<'a> {
    /// Whether SPF checks the HELO identity: for `<>` (RFC 7208 §2.4).
    fn spf_checks_helo(&self) -> bool {
        self.mail_from.is_empty()
    }

    /// The SPF check of the MAIL FROM identity, or for `<>` the HELO one.
    fn spf_parameters(&self, authserv_id: &'a str) -> SpfParameters<'a> {
        if self.spf_checks_helo() {
            SpfParameters::verify_ehlo(self.ip, self.helo, authserv_id)
        } else {
            SpfParameters::verify_mail_from(self.ip, self.helo, authserv_id, self.mail_from)
        }
    }

    /// The domain SPF checks (for the result when it timed out).
    fn spf_domain(&self) -> &'a str {
        if self.spf_checks_helo() {
            self.helo
        } else {
            self.mail_from.rsplit_once('@').map_or(self.helo, |(_, d)| d)
        }
    }

    /// The `spf=` entry, with the identity that was checked.
    fn spf_info(&self, result: &'static str, timed_out: bool) -> ResInfo {
        let mut props = Vec::new();
        if self.spf_checks_helo() {
            push_prop(&mut props, "smtp.helo", self.helo);
        } else {
            push_prop(&mut props, "smtp.mailfrom", self.mail_from);
        }
        ResInfo {
            method: "spf",
            result,
            comment: timed_out.then_some("timeout"),
            props,
        }
    }
}

/// mail-auth reports a DKIM-Signature field it cannot parse only when the
/// error is DKIM-specific (e.g. `l=` in strict mode); a plain syntax or
/// base64 error is dropped, which would make a broken signature look like
/// an unsigned message. Those become permerror here (RFC 8601 §2.7.1).
fn add_unparsable_signatures<'x>(msg: &AuthenticatedMessage<'x>, outputs: &mut Vec<DkimOutput<'x>>) {
    for e in &msg.errors {
        if e.name.eq_ignore_ascii_case(b"DKIM-Signature") && !matches!(e.header, mail_auth::Error::Dkim(_)) {
            outputs.push(DkimOutput::perm_err(e.header.clone()));
        }
    }
}

/// One `dkim=` entry per signature (a single `dkim=none` when unsigned);
/// returns the overall DKIM result.
fn dkim_results(outputs: &[DkimOutput<'_>], infos: &mut Vec<ResInfo>) -> &'static str {
    if outputs.is_empty() {
        infos.push(ResInfo {
            method: "dkim",
            result: "none",
            comment: None,
            props: Vec::new(),
        });
        return "none";
    }
    let mut words = Vec::with_capacity(outputs.len());
    for o in outputs {
        let mut props = Vec::new();
        if let Some(sig) = o.signature() {
            push_prop(&mut props, "header.d", &sig.d);
            if !sig.i.is_empty() {
                push_prop(&mut props, "header.i", &sig.i);
            }
            push_prop(&mut props, "header.s", &sig.s);
            // The first 8 characters of b= tell signatures apart (RFC 6008).
            if let Some(b) = sig.b.get(..6) {
                props.push(("header.b", base64(b)));
            }
        }
        let word = dkim_word(o.result());
        words.push(word);
        infos.push(ResInfo {
            method: "dkim",
            result: word,
            comment: dkim_comment(o.result()),
            props,
        });
    }
    aggregate_dkim(&words)
}

/// The `dkim=` entry when DKIM did not finish in time: temperror for a
/// signed message, none for an unsigned one; returns that result.
fn dkim_timed_out(msg: &AuthenticatedMessage<'_>, infos: &mut Vec<ResInfo>) -> &'static str {
    let signed = !msg.dkim_headers.is_empty() || msg.has_dkim_errors;
    let word = if signed { "temperror" } else { "none" };
    infos.push(ResInfo {
        method: "dkim",
        result: word,
        comment: signed.then_some("timeout"),
        props: Vec::new(),
    });
    word
}

/// The `dmarc=temperror` entry when there was no time left for DMARC;
/// returns that result, with no policy.
fn dmarc_timed_out(msg: &AuthenticatedMessage<'_>, infos: &mut Vec<ResInfo>) -> (&'static str, Option<&'static str>) {
    let from = from_domain(msg);
    infos.push(dmarc_info("temperror", Some("timeout"), from.as_deref(), None));
    ("temperror", None)
}

fn dmarc_info(
    result: &'static str,
    comment: Option<&'static str>,
    from: Option<&str>,
    policy: Option<&'static str>,
) -> ResInfo {
    let mut props = Vec::new();
    if let Some(d) = from {
        push_prop(&mut props, "header.from", d);
    }
    if let Some(p) = policy {
        props.push(("policy.dmarc", p.to_string()));
    }
    ResInfo {
        method: "dmarc",
        result,
        comment,
        props,
    }
}

/// mail-auth's view of the message, reusing mail-parser's work when
/// `parsed` really is `raw` (mail-auth slices `raw` with its offsets).
fn authenticated_message<'x>(parsed: &mail_parser::Message<'x>, raw: &'x [u8]) -> AuthenticatedMessage<'x> {
    let consistent = parsed.parts.first().is_some_and(|root| {
        parsed.raw_message.as_ref() == raw
            && root.headers.iter().all(|h| {
                h.offset_field < h.offset_start
                    && h.offset_start <= h.offset_end
                    && (h.offset_end as usize) <= raw.len()
            })
    });
    if consistent {
        // strict: signatures with l= (a partial body hash) are not trusted.
        AuthenticatedMessage::from_parsed(parsed, raw, true)
    } else {
        AuthenticatedMessage::parse_with_opts(raw, None, true).unwrap_or_else(|| AuthenticatedMessage {
            raw_message: raw,
            body_offset: u32::try_from(raw.len()).unwrap_or(u32::MAX),
            ..Default::default()
        })
    }
}

/// The single domain of the From addresses (lower case), if there is one.
fn from_domain(msg: &AuthenticatedMessage<'_>) -> Option<String> {
    let mut domains = msg.froms().iter().filter_map(|f| f.rsplit_once('@').map(|(_, d)| d));
    let first = domains.next()?;
    domains
        .all(|d| d.eq_ignore_ascii_case(first))
        .then(|| first.to_string())
}

fn spf_word(r: SpfResult) -> &'static str {
    match r {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

/// One signature's result. mail-auth calls a body hash mismatch and an
/// expired signature "neutral"; for us the signature is simply not valid
/// (fail). Other "neutral" results are signatures we cannot process
/// (malformed, unsupported, `l=`): permerror.
fn dkim_word(r: &DkimResult) -> &'static str {
    use mail_auth::dkim::DkimError;
    match r {
        DkimResult::Pass => "pass",
        DkimResult::Fail(_) => "fail",
        DkimResult::Neutral(mail_auth::Error::Dkim(
            DkimError::FailedBodyHashMatch | DkimError::SignatureExpired | DkimError::FailedAuidMatch,
        )) => "fail",
        DkimResult::Neutral(_) | DkimResult::PermError(_) => "permerror",
        DkimResult::TempError(_) => "temperror",
        DkimResult::None => "none",
    }
}

fn dkim_comment(r: &DkimResult) -> Option<&'static str> {
    match r {
        DkimResult::Pass | DkimResult::None => None,
        DkimResult::Neutral(e) | DkimResult::Fail(e) | DkimResult::PermError(e) | DkimResult::TempError(e) => {
            Some(error_comment(e))
        }
    }
}

fn error_comment(e: &mail_auth::Error) -> &'static str {
    use mail_auth::common::crypto::CryptoError;
    use mail_auth::dkim::DkimError;
    use mail_auth::{DnsError, Error};
    match e {
        Error::ParseError => "record or signature does not parse",
        Error::MissingParameters => "missing parameters",
        Error::NoHeadersFound => "no headers found",
        Error::Base64 => "base64 error",
        Error::NotAligned => "not aligned",
        Error::Io(_) => "i/o error",
        Error::Crypto(CryptoError::IncompatibleAlgorithms) => "incompatible key and signature algorithms",
        Error::Crypto(_) => "signature did not verify",
        Error::Dns(DnsError::Resolver(_)) => "dns error",
        Error::Dns(_) => "no key record",
        Error::Dkim(DkimError::FailedBodyHashMatch) => "body hash did not verify",
        Error::Dkim(DkimError::SignatureExpired) => "signature expired",
        Error::Dkim(DkimError::FailedAuidMatch) => "i= does not match the key",
        Error::Dkim(DkimError::RevokedPublicKey) => "key revoked",
        Error::Dkim(DkimError::SignatureLength) => "l= not accepted",
        Error::Dkim(DkimError::UnsupportedVersion) => "unsupported version",
        Error::Dkim(DkimError::UnsupportedAlgorithm) => "unsupported algorithm",
        Error::Dkim(DkimError::UnsupportedCanonicalization) => "unsupported canonicalization",
        Error::Dkim(DkimError::UnsupportedKeyType) => "unsupported key type",
        Error::Dkim2(_) => "dkim2 error",
    }
}

/// pass if any signature passed; else temperror if any might pass later;
/// else fail if any was checked and failed; else permerror; none unsigned.
fn aggregate_dkim(words: &[&'static str]) -> &'static str {
    ["pass", "temperror", "fail", "permerror"]
        .into_iter()
        .find(|w| words.contains(w))
        .unwrap_or("none")
}

fn dmarc_word(r: &DmarcResult) -> &'static str {
    match r {
        DmarcResult::Pass => "pass",
        DmarcResult::Fail(_) => "fail",
        DmarcResult::TempError(_) => "temperror",
        DmarcResult::PermError(_) => "permerror",
        DmarcResult::None => "none",
    }
}

fn dmarc_comment(out: &DmarcOutput) -> Option<&'static str> {
    match out.result() {
        DmarcResult::TempError(_) => Some("dns error"),
        DmarcResult::PermError(e) => Some(error_comment(&e)),
        _ => None,
    }
}

fn policy_word(p: Policy) -> &'static str {
    match p {
        Policy::Reject => "reject",
        Policy::Quarantine => "quarantine",
        Policy::None | Policy::Unspecified => "none",
    }
}

mod cache;
mod forged;
mod header;

#[cfg(test)]
mod tests;
