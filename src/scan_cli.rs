//! `sluice scan FILE|DIR... | -`: the content pipeline of the server
//! (MIME decoding, banned parts, virus scan, spam score with the same
//! rules, model and thresholds) run on files, with each contribution
//! printed. `--json` prints one object per message; it is also how
//! accuracy is measured.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::scan::{ContentFilter, ScanError, Verdict};
use crate::spam::auth::AuthContext;
use crate::spam::filter::{Action, Scored, SpamFilter};

/// Options of `sluice scan`.
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    pub json: bool,
    /// Whose domain thresholds apply (default: the global ones).
    pub rcpt_domain: Option<String>,
    /// The SMTP facts for SPF/DMARC; taken from the message's top
    /// Received and Return-Path headers when not given.
    pub ip: Option<IpAddr>,
    pub helo: Option<String>,
    pub mail_from: Option<String>,
    /// No network checks (SPF/DKIM/DMARC).
    pub offline: bool,
}

/// One message's result, as printed with `--json`.
#[derive(Debug, Serialize)]
pub struct Report {
    pub file: String,
    /// deliver, tag, quarantine, tempfail, reject
    pub verdict: &'static str,
    pub score: f64,
    /// Rule names that hit, then the virus / banned / malformed finding.
    pub reasons: Vec<String>,
    pub rules: Vec<crate::spam::rules::Hit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bayes: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ngram: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<crate::spam::auth::AuthOutcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virus: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The files named: plain files as they are, directories one level deep
/// (hidden files skipped), `-` for stdin.
fn expand(inputs: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            out.extend(crate::spam::message_files(p)?);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Runs the pipeline on every input and prints the results. Exit code:
/// 0 all delivered as they are, 1 something tagged, held or refused,
/// 75 (EX_TEMPFAIL) a file could not be read or scanned.
pub async fn run(content: &ContentFilter, spam: Option<&SpamFilter>, inputs: &[PathBuf], opts: &ScanOptions) -> u8 {
    let inputs = if inputs.is_empty() {
        vec![PathBuf::from("-")]
    } else {
        inputs.to_vec()
    };
    let files = match expand(&inputs) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("sluice scan: {e}");
            return 75;
        }
    };
    let (mut flagged, mut failed) = (false, false);
    for f in files {
        let bytes = if f == Path::new("-") {
            let mut buf = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::stdin(), &mut buf)
                .await
                .map(|_| buf)
        } else {
            tokio::fs::read(&f).await
        };
        let report = match bytes {
            Ok(b) => scan_one(content, spam, &f, &b, opts).await,
            Err(e) => Report::failed(&f, e.to_string()),
        };
        failed |= report.error.is_some();
        flagged |= report.verdict != "deliver";
        let text = render(&report, opts.json);
        if let Err(e) = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes()) {
            // The reader went away (`sluice scan DIR | head`): stop quietly.
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                eprintln!("sluice scan: writing the report: {e}");
                failed = true;
            }
            break;
        }
    }
    if failed { 75 } else { u8::from(flagged) }
}

impl Report {
    fn failed(f: &Path, error: String) -> Report {
        Report {
            file: f.display().to_string(),
            verdict: "tempfail",
            score: 0.0,
            reasons: Vec::new(),
            rules: Vec::new(),
            bayes: None,
            ngram: None,
            auth: None,
            virus: None,
            content: None,
            error: Some(error),
        }
    }
}

/// The whole pipeline on one message.
pub async fn scan_one(
    content: &ContentFilter,
    spam: Option<&SpamFilter>,
    f: &Path,
    msg: &[u8],
    opts: &ScanOptions,
) -> Report {
    let mut report = Report::failed(f, String::new());
    report.error = None;
    match content.check(msg, None).await {
        Err(ScanError::Failed(e)) => return Report::failed(f, e),
        Err(e) => return Report::failed(f, e.to_string()),
        Ok(Verdict::Clean) => {}
        // `scan.unscannable = "accept"`: noted, then the spam checks.
        Ok(Verdict::Unscannable(u)) if content.cfg.unscannable_for(None) == crate::scan::UnscannableAction::Accept => {
            report.content = Some(u.to_string());
        }
        Ok(Verdict::Unscannable(u))
            if content.cfg.unscannable_for(None) == crate::scan::UnscannableAction::Quarantine =>
        {
            report.verdict = Action::Quarantine.as_str();
            report.content = Some(u.to_string());
            report.reasons.push(u.to_string());
            return report;
        }
        Ok(v) => {
            report.verdict = Action::Reject.as_str();
            let reason = match v {
                Verdict::Virus(name) => {
                    report.virus = Some(name.clone());
                    name
                }
                Verdict::Banned(what) | Verdict::Malformed(what) => {
                    report.content = Some(what.clone());
                    what
                }
                Verdict::Unscannable(u) => {
                    report.content = Some(u.to_string());
                    u.to_string()
                }
                Verdict::Clean => String::new(),
            };
            report.reasons.push(reason);
            return report;
        }
    }
    let Some(spam) = spam else {
        report.verdict = Action::Deliver.as_str();
        return report;
    };
    let facts = SmtpFacts::of(msg, opts);
    let ctx = match (&facts.ip, opts.offline) {
        (Some(ip), false) => Some(AuthContext {
            ip: *ip,
            helo: &facts.helo,
            mail_from: &facts.mail_from,
            deadline: None,
        }),
        _ => None,
    };
    let scored: Scored = spam.score(msg, ctx.as_ref()).await;
    let domains: Vec<&str> = opts.rcpt_domain.as_deref().into_iter().collect();
    let (action, _) = spam.cfg.decide(scored.score, domains);
    report.verdict = action.as_str();
    report.score = scored.score;
    report.reasons = scored.hits.iter().map(|h| h.name.clone()).collect();
    report.rules = scored.hits;
    report.bayes = scored.bayes;
    report.ngram = scored.ngram;
    report.auth = scored.auth;
    report
}

/// The report as printed: one JSON line, or a verdict line and one line
/// per contribution.
fn render(r: &Report, json: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if json {
        match serde_json::to_string(r) {
            Ok(line) => out.push_str(&line),
            Err(e) => eprintln!("sluice scan: {e}"),
        }
        out.push('\n');
        return out;
    }
    let _ = write!(out, "{}: {} score={:.1}", r.file, r.verdict, r.score);
    if let Some(v) = &r.virus {
        let _ = write!(out, " virus={v}");
    }
    if let Some(c) = &r.content {
        let _ = write!(out, " content={c:?}");
    }
    if let Some(e) = &r.error {
        let _ = write!(out, " error={e:?}");
    }
    out.push('\n');
    if let Some(a) = &r.auth {
        let _ = writeln!(out, "    auth: {}", a.summary());
    }
    if let Some(p) = r.bayes {
        let _ = writeln!(out, "    bayes: spam probability {p:.3}");
    }
    if let Some(p) = r.ngram {
        let _ = writeln!(out, "    ngram: spam probability {p:.3}");
    }
    for h in &r.rules {
        let _ = writeln!(out, "    {:+6.1} {} {}", h.score, h.name, h.description);
    }
    out
}

/// Client IP, HELO and MAIL FROM for the authentication checks of a
/// stored message: from the options, else the top Received header with
/// an address literal and the Return-Path.
struct SmtpFacts {
    ip: Option<IpAddr>,
    helo: String,
    mail_from: String,
}

impl SmtpFacts {
    fn of(msg: &[u8], opts: &ScanOptions) -> SmtpFacts {
        let parsed = mail_parser::MessageParser::default().parse_headers(msg);
        let mut ip = opts.ip;
        let mut helo = opts.helo.clone();
        if let Some(m) = &parsed {
            for r in m.received_all() {
                if ip.is_some() {
                    break;
                }
                if let Some(addr) = r.from_ip() {
                    ip = Some(addr);
                    if helo.is_none() {
                        helo = r.helo().map(|h| h.to_string());
                    }
                }
            }
        }
        let mail_from = opts.mail_from.clone().unwrap_or_else(|| {
            parsed
                .as_ref()
                .and_then(|m| m.return_address().map(|a| a.trim_matches(['<', '>']).to_string()))
                .unwrap_or_default()
        });
        SmtpFacts {
            ip,
            helo: helo.unwrap_or_default(),
            mail_from,
        }
    }
}
