//! Sender authentication: SPF (RFC 7208), DKIM verification (RFC 6376) and
//! DMARC (RFC 7489 / DMARCbis), done by `mail-auth` over our own hickory
//! resolver, plus the `Authentication-Results` header (RFC 8601) we add and
//! the removal of forged copies of it that claim to be ours (§5).
//!
//! [`Authenticator::check`] never fails: DNS errors and the overall deadline
//! become `temperror`, broken records `permerror`. The outcome is both a
//! header to prepend and a [`AuthOutcome::summary`] line for the rules.

use std::borrow::Cow;
use std::net::IpAddr;
use std::time::Duration;

use mail_auth::dmarc::Policy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, DkimOutput, DkimResult, DmarcOutput, DmarcResult, MessageAuthenticator, Parameters,
    SpfOutput, SpfResult,
};

/// Folded header lines are kept to this many characters (RFC 5322 §2.1.1),
/// except where a single token is longer.
const LINE_LIMIT: usize = 78;

/// Property values longer than this are left out of the header rather than
/// producing an unreasonably long line.
const MAX_PVALUE: usize = 255;

pub use crate::dns::tokio_resolver;

/// The SMTP facts the checks need.
#[derive(Debug, Clone, Copy)]
pub struct AuthContext<'a> {
    /// The client's address (IPv4-mapped addresses are best unmapped first).
    pub ip: IpAddr,
    /// The EHLO/HELO argument.
    pub helo: &'a str,
    /// The MAIL FROM address without brackets; `""` for `<>`.
    pub mail_from: &'a str,
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
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("authserv_id", &self.authserv_id)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// One `method=result` entry of the header.
struct ResInfo {
    method: &'static str,
    result: &'static str,
    comment: Option<&'static str>,
    props: Vec<(&'static str, String)>,
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
        }
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
        let deadline = tokio::time::Instant::now() + self.timeout;
        let msg = authenticated_message(parsed, raw);

        // SPF: the MAIL FROM identity, or for <> the HELO identity (RFC 7208 §2.4).
        let helo_identity = ctx.mail_from.is_empty();
        let spf_params = if helo_identity {
            SpfParameters::verify_ehlo(ctx.ip, ctx.helo, &self.authserv_id)
        } else {
            SpfParameters::verify_mail_from(ctx.ip, ctx.helo, &self.authserv_id, ctx.mail_from)
        };
        let spf_domain = if helo_identity {
            ctx.helo
        } else {
            ctx.mail_from.rsplit_once('@').map_or(ctx.helo, |(_, d)| d)
        };
        let c = &*self.caches;
        let spf_params = Parameters::new(spf_params)
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
            spf.unwrap_or_else(|_| SpfOutput::new(spf_domain.to_string()).with_result(SpfResult::TempError));

        let mut infos = Vec::with_capacity(4);

        // SPF
        let spf_word = spf_word(spf.result());
        let mut props = Vec::new();
        if helo_identity {
            push_prop(&mut props, "smtp.helo", ctx.helo);
        } else {
            push_prop(&mut props, "smtp.mailfrom", ctx.mail_from);
        }
        infos.push(ResInfo {
            method: "spf",
            result: spf_word,
            comment: spf_timed_out.then_some("timeout"),
            props,
        });

        // DKIM
        let dkim_word = match &dkim {
            Ok(outputs) => dkim_results(outputs, &mut infos),
            Err(_) => {
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
        };

        // DMARC: only with time left; otherwise temperror.
        let from_domain = from_domain(&msg);
        let (dmarc_word, dmarc_policy) = if timed_out {
            infos.push(dmarc_info("temperror", Some("timeout"), from_domain.as_deref(), None));
            ("temperror", None)
        } else {
            let outputs: &[DkimOutput<'_>] = dkim.as_deref().unwrap_or(&[]);
            let params = Parameters::new(DmarcParameters::new(&msg, outputs, spf.domain(), &spf))
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
                Err(_) => {
                    infos.push(dmarc_info("temperror", Some("timeout"), from_domain.as_deref(), None));
                    ("temperror", None)
                }
            }
        };

        AuthOutcome {
            spf: spf_word,
            dkim: dkim_word,
            dmarc: dmarc_word,
            dmarc_policy,
            header: format_header(&self.authserv_id, &infos),
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

/// Adds `name=value` if the value can be written sensibly.
fn push_prop(props: &mut Vec<(&'static str, String)>, name: &'static str, value: &str) {
    if let Some(v) = pvalue(value) {
        props.push((name, v));
    }
}

/// A property value (RFC 8601 `pvalue`): as is when it is a plain
/// [local-part@]domain made of atext, dots and one `@`; otherwise a
/// quoted-string. Control characters are dropped; empty or overlong
/// values give `None`.
fn pvalue(v: &str) -> Option<String> {
    let clean: String = v.chars().filter(|c| !c.is_control()).collect();
    if clean.is_empty() || clean.len() > MAX_PVALUE {
        return None;
    }
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c);
    let dot_atom = |s: &str| !s.is_empty() && s.split('.').all(|p| !p.is_empty() && p.chars().all(atext));
    let plain = match clean.rsplit_once('@') {
        Some((local, domain)) => (local.is_empty() || dot_atom(local)) && dot_atom(domain),
        None => dot_atom(&clean),
    };
    if plain {
        return Some(clean);
    }
    let mut q = String::with_capacity(clean.len() + 2);
    q.push('"');
    for c in clean.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    Some(q)
}

/// Standard base64 of a few bytes (the `header.b` prefix).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `Authentication-Results: id;` then one resinfo per line (`;` between
/// them), each folded at spaces to keep lines within [`LINE_LIMIT`].
fn format_header(authserv_id: &str, infos: &[ResInfo]) -> String {
    let id: String = authserv_id
        .chars()
        .filter(|c| !c.is_control() && !c.is_whitespace() && *c != ';')
        .collect();
    let mut out = String::with_capacity(256);
    out.push_str("Authentication-Results: ");
    out.push_str(&id);
    if infos.is_empty() {
        out.push_str("; none\r\n");
        return out;
    }
    out.push(';');
    for (n, info) in infos.iter().enumerate() {
        let mut tokens = vec![format!("{}={}", info.method, info.result)];
        if let Some(c) = info.comment {
            let words: Vec<&str> = c.split(' ').collect();
            let last = words.len().saturating_sub(1);
            for (i, w) in words.iter().enumerate() {
                let open = if i == 0 { "(" } else { "" };
                let close = if i == last { ")" } else { "" };
                tokens.push(format!("{open}{w}{close}"));
            }
        }
        tokens.extend(info.props.iter().map(|(k, v)| format!("{k}={v}")));
        if n + 1 < infos.len()
            && let Some(t) = tokens.last_mut()
        {
            t.push(';');
        }
        out.push_str("\r\n\t");
        let mut col = 1;
        for (i, t) in tokens.iter().enumerate() {
            if i > 0 {
                if col + 1 + t.len() > LINE_LIMIT {
                    out.push_str("\r\n\t");
                    col = 1;
                } else {
                    out.push(' ');
                    col += 1;
                }
            }
            out.push_str(t);
            col += t.len();
        }
    }
    out.push_str("\r\n");
    out
}

// ------------------------------------------------------------------ forged results

/// Removes from the header section of `msg` every `Authentication-Results`
/// field whose authserv-id is `authserv_id` (ASCII case-insensitive, CFWS
/// and a version after it ignored), as RFC 8601 §5 requires of a border
/// MTA. Every other byte, line ending (CRLF or LF) and the body stay as
/// they are; nothing to remove gives `Cow::Borrowed`.
pub fn strip_forged_results<'a>(msg: &'a [u8], authserv_id: &str) -> Cow<'a, [u8]> {
    let mut remove: Vec<(usize, usize)> = Vec::new();
    // Start of the Authentication-Results field being read, if any.
    let mut field: Option<usize> = None;
    let mut pos = 0;
    loop {
        // The end of the message reads as a blank line.
        let line_end = memchr::memchr(b'\n', &msg[pos..]).map_or(msg.len(), |i| pos + i + 1);
        let line = &msg[pos..line_end];
        let blank = line.is_empty() || line == b"\n" || line == b"\r\n";
        if blank || !matches!(line.first(), Some(b' ' | b'\t')) {
            // Not a continuation line: the previous field ends here.
            if let Some(start) = field.take()
                && is_ours(&msg[start..pos], authserv_id)
            {
                remove.push((start, pos));
            }
            if blank {
                break;
            }
            if is_auth_results_name(line) {
                field = Some(pos);
            }
        }
        pos = line_end;
    }
    if remove.is_empty() {
        return Cow::Borrowed(msg);
    }
    let removed: usize = remove.iter().map(|(s, e)| e - s).sum();
    let mut out = Vec::with_capacity(msg.len() - removed);
    let mut at = 0;
    for (s, e) in remove {
        out.extend_from_slice(&msg[at..s]);
        at = e;
    }
    out.extend_from_slice(&msg[at..]);
    Cow::Owned(out)
}

/// Whether a header line starts with the field name `Authentication-Results`
/// (any case; WSP before the colon is tolerated, RFC 5322 §4.5.3).
fn is_auth_results_name(line: &[u8]) -> bool {
    const NAME: &[u8] = b"authentication-results";
    line.len() > NAME.len()
        && line[..NAME.len()].eq_ignore_ascii_case(NAME)
        && line[NAME.len()..]
            .iter()
            .find(|b| !matches!(b, b' ' | b'\t'))
            .is_some_and(|b| *b == b':')
}

/// Whether the authserv-id of a whole `Authentication-Results` field is `id`.
fn is_ours(field: &[u8], id: &str) -> bool {
    let Some(colon) = memchr::memchr(b':', field) else {
        return false;
    };
    let value = &field[colon + 1..];
    let mut i = skip_cfws(value, 0);
    let found: Vec<u8> = if value.get(i) == Some(&b'"') {
        // quoted-string
        let mut s = Vec::new();
        i += 1;
        loop {
            match value.get(i) {
                None => return false, // unterminated
                Some(b'"') => break,
                Some(b'\\') => {
                    if let Some(c) = value.get(i + 1) {
                        s.push(*c);
                    }
                    i += 2;
                }
                Some(b'\r' | b'\n') => i += 1, // folding
                Some(c) => {
                    s.push(*c);
                    i += 1;
                }
            }
        }
        s
    } else {
        let start = i;
        while let Some(c) = value.get(i) {
            if matches!(c, b' ' | b'\t' | b'\r' | b'\n' | b'(' | b';' | b'"') {
                break;
            }
            i += 1;
        }
        value[start..i].to_vec()
    };
    !found.is_empty() && found.eq_ignore_ascii_case(id.trim().as_bytes())
}

/// Skips whitespace (folding included) and nested comments from `i`.
fn skip_cfws(v: &[u8], mut i: usize) -> usize {
    let mut depth = 0usize;
    while let Some(c) = v.get(i) {
        match c {
            b' ' | b'\t' | b'\r' | b'\n' => {}
            b'(' => depth += 1,
            b')' if depth > 0 => depth -= 1,
            b'\\' if depth > 0 => i += 1,
            _ if depth > 0 => {}
            _ => break,
        }
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests;

mod cache;
