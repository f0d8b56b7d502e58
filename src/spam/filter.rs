//! The spam filter the server and `sluice scan` share: rules (built-in and
//! local), the statistical classifier and SPF/DKIM/DMARC give a score; the
//! thresholds of the recipients' domains turn it into an [`Action`].
//!
//! Rules and model are reloaded when their files change (and on SIGHUP);
//! a file that does not load is reported with file:line and the running
//! set stays.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use serde::Serialize;

use super::auth::{AuthContext, AuthOutcome, Authenticator};
use super::bayes::{BayesError, Model};
use super::rules::{Hit, RuleError, RuleSet};
use super::view::{AUTH_HEADER, MessageView};

pub use crate::config::spam::{Action, SpamConfig, Thresholds};

/// The rules compiled into the binary (`rules/*.rules`), in file order.
pub const BUILTIN_RULES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/builtin_rules.rs"));

impl Thresholds {
    /// The strictest action whose threshold the score reaches.
    pub fn action(&self, score: f64) -> Action {
        let over = |t: Option<f64>| t.is_some_and(|t| score >= t);
        if over(self.reject) {
            Action::Reject
        } else if over(self.tempfail) {
            Action::Tempfail
        } else if over(self.quarantine) {
            Action::Quarantine
        } else if over(self.tag) {
            Action::Tag
        } else {
            Action::Deliver
        }
    }

    /// The lowest threshold that makes a message spam (for `required=`).
    pub fn required(&self) -> Option<f64> {
        [self.tag, self.quarantine, self.tempfail, self.reject]
            .into_iter()
            .flatten()
            .reduce(f64::min)
    }
}

impl SpamConfig {
    /// The thresholds for one recipient domain.
    pub fn thresholds(&self, domain: &str) -> &Thresholds {
        self.domains.get(&domain.to_ascii_lowercase()).unwrap_or(&self.default)
    }

    /// The action for a message to several recipients: the strictest of
    /// their domains' actions (with that domain's thresholds). A message
    /// is one copy for all its recipients, so it is not split.
    pub fn decide<'a>(&self, score: f64, domains: impl IntoIterator<Item = &'a str>) -> (Action, &Thresholds) {
        let mut best = (Action::Deliver, &self.default);
        let mut any = false;
        for d in domains {
            let th = self.thresholds(d);
            let a = th.action(score);
            if !any || a > best.0 {
                best = (a, th);
                any = true;
            }
        }
        if !any {
            best = (self.default.action(score), &self.default);
        }
        best
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpamError {
    #[error("{0}")]
    Rules(#[from] RuleError),
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{}: {err}", path.display())]
    Model { path: PathBuf, err: BayesError },
}

/// The score of one message and what made it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Scored {
    pub score: f64,
    /// Rules that hit (classifier bands and authentication results are
    /// rules too), sorted by name.
    pub hits: Vec<Hit>,
    /// The classifier's spam probability, when it had an opinion.
    pub bayes: Option<f64>,
    /// The n-gram classifier's spam probability, when it had an opinion.
    pub ngram: Option<f64>,
    /// SPF/DKIM/DMARC, when they ran.
    pub auth: Option<AuthOutcome>,
    /// Not scored: larger than `spam.max_size`.
    pub skipped: bool,
}

impl Scored {
    fn skipped() -> Scored {
        Scored {
            skipped: true,
            ..Default::default()
        }
    }

    /// Rule names that hit, comma separated.
    pub fn rule_names(&self) -> String {
        self.hits.iter().map(|h| h.name.as_str()).collect::<Vec<_>>().join(",")
    }
}

/// Rules and model as loaded, with the file stamps they came from.
struct Loaded {
    rules: Arc<RuleSet>,
    model: Option<Model>,
    stamps: Vec<(PathBuf, Option<(SystemTime, u64)>)>,
}

pub struct SpamFilter {
    pub cfg: SpamConfig,
    loaded: RwLock<Arc<Loaded>>,
    auth: Option<Authenticator>,
}

impl SpamFilter {
    /// Loads rules and model; `auth` runs SPF/DKIM/DMARC when given.
    pub fn new(cfg: SpamConfig, auth: Option<Authenticator>) -> Result<SpamFilter, SpamError> {
        let loaded = load(&cfg)?;
        Ok(SpamFilter {
            auth: auth.filter(|_| cfg.auth),
            cfg,
            loaded: RwLock::new(Arc::new(loaded)),
        })
    }

    /// Adds SPF/DKIM/DMARC (when `spam.auth` is on).
    pub fn with_auth(mut self, auth: Authenticator) -> Self {
        if self.cfg.auth {
            self.auth = Some(auth);
        }
        self
    }

    fn current(&self) -> Arc<Loaded> {
        match self.loaded.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The rules loaded now.
    pub fn rules(&self) -> Arc<RuleSet> {
        self.current().rules.clone()
    }

    /// Number of rules loaded (sub-rules included).
    pub fn rule_count(&self) -> usize {
        self.current().rules.len()
    }

    pub fn has_model(&self) -> bool {
        self.current().model.is_some()
    }

    /// Reloads rules and model if a file changed (or always, when
    /// `force`). On error the running set stays and the error is returned.
    pub fn reload(&self, force: bool) -> Result<bool, SpamError> {
        let now = stamps(&self.cfg);
        if !force && now == self.current().stamps {
            return Ok(false);
        }
        let loaded = load(&self.cfg)?;
        match self.loaded.write() {
            Ok(mut g) => *g = Arc::new(loaded),
            Err(p) => *p.into_inner() = Arc::new(loaded),
        }
        Ok(true)
    }

    /// Checks the files every `reload_interval` until shutdown; failures
    /// go to `on_error` (the running set stays).
    pub async fn watch(
        self: Arc<Self>,
        shutdown: tokio_util::sync::CancellationToken,
        on_error: impl Fn(String) + Send + 'static,
    ) {
        let interval = self.cfg.reload_interval;
        let step = move || self.reload(false);
        crate::shutdown::every_blocking(interval, shutdown, step, |res| match res {
            Ok(true) => tracing::info!("spam rules/model reloaded"),
            Ok(false) => {}
            Err(e) => on_error(format!("spam rules/model not reloaded, keeping the running set: {e}")),
        })
        .await;
    }

    /// Scores a message. `ctx` (client, HELO, MAIL FROM) enables the
    /// SPF/DKIM/DMARC checks; without it they are skipped (offline).
    pub async fn score(&self, raw: &[u8], ctx: Option<&AuthContext<'_>>) -> Scored {
        let raw = super::tokenize::skip_mbox_from(raw);
        if raw.len() > self.cfg.max_size {
            return Scored::skipped();
        }
        let parsed = mail_parser::MessageParser::default().parse(raw);
        let auth = match (&self.auth, ctx, &parsed) {
            (Some(a), Some(ctx), Some(m)) => Some(a.check(ctx, m, raw).await),
            _ => None,
        };
        self.evaluate(raw, parsed.as_ref(), auth)
    }

    /// Scores a message without network checks (no await).
    pub fn score_offline(&self, raw: &[u8]) -> Scored {
        let raw = super::tokenize::skip_mbox_from(raw);
        if raw.len() > self.cfg.max_size {
            return Scored::skipped();
        }
        let parsed = mail_parser::MessageParser::default().parse(raw);
        self.evaluate(raw, parsed.as_ref(), None)
    }

    /// Rules and classifier on a parsed message, with the auth results.
    fn evaluate(&self, raw: &[u8], parsed: Option<&mail_parser::Message<'_>>, auth: Option<AuthOutcome>) -> Scored {
        let loaded = self.current();
        let mut view = match parsed {
            Some(m) => MessageView::from_message(m, false, self.cfg.part_scan_size),
            None => MessageView::parse(raw),
        };
        if let Some(a) = &auth {
            view.set_pseudo(AUTH_HEADER, a.summary());
        }
        if let Some(model) = &loaded.model {
            // Each classifier votes once it has learned enough of each class.
            let enough =
                |(spam, ham): (u32, u32)| spam >= self.cfg.bayes_min_messages && ham >= self.cfg.bayes_min_messages;
            if enough((model.nspam(), model.nham())) {
                let tokens = match parsed {
                    Some(m) => super::tokenize::message_token_list(m, self.cfg.part_scan_size),
                    None => super::tokenize::token_list(raw, self.cfg.part_scan_size),
                };
                view.bayes = model.classify_list(&tokens);
            }
            if enough(model.ngram().counts()) {
                view.ngram = Some(model.ngram().classify(&super::ngram::Features::of(raw)));
            }
        }
        let outcome = loaded.rules.evaluate(&view.view());
        Scored {
            // `+ 0.0` turns a -0.0 into 0.0.
            score: (outcome.score * 100.0).round() / 100.0 + 0.0,
            hits: outcome.hits,
            bayes: view.bayes,
            ngram: view.ngram,
            auth,
            skipped: false,
        }
    }

    /// Replaces the classifier's model (cross-validation, tests); the next
    /// reload from `spam.bayes_model` replaces it again.
    pub fn set_model(&self, model: Option<Model>) {
        let current = self.current();
        let loaded = Loaded {
            rules: current.rules.clone(),
            model,
            stamps: current.stamps.clone(),
        };
        match self.loaded.write() {
            Ok(mut g) => *g = Arc::new(loaded),
            Err(p) => *p.into_inner() = Arc::new(loaded),
        }
    }

    /// The authserv-id our `Authentication-Results` headers carry, when
    /// the checks run.
    pub fn authserv_id(&self) -> Option<&str> {
        self.auth.as_ref().map(|a| a.authserv_id())
    }
}

/// The header lines to prepend for an action: `X-Spam-Score` and
/// `X-Spam-Status` when tagged or quarantined.
pub fn spam_headers(scored: &Scored, action: Action, th: &Thresholds) -> String {
    if !matches!(action, Action::Tag | Action::Quarantine) {
        return String::new();
    }
    let required = th.required().unwrap_or(0.0);
    let mut status = format!("X-Spam-Status: Yes, score={:.1} required={required:.1}", scored.score);
    // Fold the test list so no line runs past 78 characters.
    let mut line_len = status.len();
    for (i, h) in scored.hits.iter().enumerate() {
        let sep = if i == 0 { " tests=" } else { "," };
        if line_len + sep.len() + h.name.len() > 78 {
            // Fold after the comma (or after "tests=").
            status.push_str(sep);
            status.push_str("\r\n\t");
            line_len = 8;
        } else {
            status.push_str(sep);
            line_len += sep.len();
        }
        status.push_str(&h.name);
        line_len += h.name.len();
    }
    format!("X-Spam-Score: {:.1}\r\n{status}\r\n", scored.score)
}

/// Adds `prefix` to the Subject of a message's header section (or adds a
/// Subject when there is none). Other bytes are kept as they are.
pub fn prefix_subject(msg: &[u8], prefix: &str) -> Vec<u8> {
    let head_end = header_end(msg);
    let mut at = 0;
    while at < head_end {
        let line_end = memchr::memchr(b'\n', &msg[at..head_end]).map_or(head_end, |i| at + i + 1);
        let line = &msg[at..line_end];
        if line.len() >= 8 && line[..8].eq_ignore_ascii_case(b"subject:") {
            let mut value_at = at + 8;
            while msg.get(value_at) == Some(&b' ') {
                value_at += 1;
            }
            if msg[value_at..].starts_with(prefix.trim_end().as_bytes()) {
                return msg.to_vec();
            }
            let mut out = Vec::with_capacity(msg.len() + prefix.len() + 1);
            out.extend_from_slice(&msg[..value_at]);
            out.extend_from_slice(prefix.as_bytes());
            if !prefix.ends_with(' ') {
                out.push(b' ');
            }
            out.extend_from_slice(&msg[value_at..]);
            return out;
        }
        at = line_end;
    }
    let mut out = format!("Subject: {}\r\n", prefix.trim_end()).into_bytes();
    out.extend_from_slice(msg);
    out
}

/// Where the header section ends (the start of the blank line, or the end).
fn header_end(msg: &[u8]) -> usize {
    let mut at = 0;
    while at < msg.len() {
        if msg[at] == b'\n' || msg[at..].starts_with(b"\r\n") {
            return at;
        }
        match memchr::memchr(b'\n', &msg[at..]) {
            Some(i) => at += i + 1,
            None => return msg.len(),
        }
    }
    msg.len()
}

fn rule_files(dir: &Path) -> Result<Vec<PathBuf>, SpamError> {
    let io = |err| SpamError::Io {
        path: dir.to_path_buf(),
        err,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "rules") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

fn stamp(p: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// The files the filter depends on, with their mtime and size.
fn stamps(cfg: &SpamConfig) -> Vec<(PathBuf, Option<(SystemTime, u64)>)> {
    let mut out = Vec::new();
    if let Some(dir) = &cfg.rules_dir {
        out.push((dir.clone(), stamp(dir)));
        for f in rule_files(dir).unwrap_or_default() {
            let s = stamp(&f);
            out.push((f, s));
        }
    }
    if let Some(m) = &cfg.bayes_model {
        out.push((m.clone(), stamp(m)));
    }
    out
}

fn load(cfg: &SpamConfig) -> Result<Loaded, SpamError> {
    let stamps = stamps(cfg);
    let mut files: Vec<(String, String)> = Vec::new();
    if cfg.builtin_rules {
        for (name, text) in BUILTIN_RULES {
            files.push((format!("(built-in) rules/{name}"), (*text).to_string()));
        }
    }
    if let Some(dir) = &cfg.rules_dir {
        for f in rule_files(dir)? {
            let text = std::fs::read_to_string(&f).map_err(|err| SpamError::Io { path: f.clone(), err })?;
            files.push((f.display().to_string(), text));
        }
    }
    let rules = Arc::new(RuleSet::compile(&files)?);
    let model = match &cfg.bayes_model {
        None => None,
        Some(path) => {
            let f = std::fs::File::open(path).map_err(|err| SpamError::Io {
                path: path.clone(),
                err,
            })?;
            let model = Model::load(&mut std::io::BufReader::new(f)).map_err(|err| SpamError::Model {
                path: path.clone(),
                err,
            })?;
            Some(model)
        }
    };
    Ok(Loaded { rules, model, stamps })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_pick_the_strictest_action_reached() {
        let th = Thresholds {
            tag: Some(5.0),
            quarantine: Some(8.0),
            tempfail: None,
            reject: Some(12.0),
            subject_prefix: None,
        };
        assert_eq!(th.action(4.9), Action::Deliver);
        assert_eq!(th.action(5.0), Action::Tag);
        assert_eq!(th.action(9.0), Action::Quarantine);
        assert_eq!(th.action(12.0), Action::Reject);
        assert_eq!(th.required(), Some(5.0));
        let mut cfg = SpamConfig::default();
        cfg.domains.insert("strict.example".into(), th.clone());
        // 9 points: deliver-with-tag by default, quarantine for strict.example.
        let (a, t) = cfg.decide(9.0, ["a.example", "STRICT.example"]);
        assert_eq!((a, t), (Action::Quarantine, &th));
        assert_eq!(cfg.decide(9.0, ["a.example"]).0, Action::Tag);
        assert_eq!(cfg.decide(1.0, []).0, Action::Deliver);
    }

    #[test]
    fn spam_headers_are_folded() {
        let hits = (0..12)
            .map(|i| Hit {
                name: format!("SOME_LONG_RULE_NAME_{i}"),
                score: 1.0,
                description: String::new(),
            })
            .collect();
        let s = Scored {
            score: 12.345,
            hits,
            ..Default::default()
        };
        let h = spam_headers(&s, Action::Tag, &Thresholds::default());
        assert!(h.starts_with(
            "X-Spam-Score: 12.3\r\nX-Spam-Status: Yes, score=12.3 required=5.0 tests=SOME_LONG_RULE_NAME_0,"
        ));
        assert!(h.ends_with("\r\n") && h.lines().all(|l| l.len() <= 79), "{h}");
        assert!(h.contains("\r\n\t"));
        assert_eq!(spam_headers(&s, Action::Deliver, &Thresholds::default()), "");
    }

    #[test]
    fn subject_prefix() {
        let m = b"From: a\r\nSubject: hello\r\n\r\nSubject: body\r\n";
        assert_eq!(
            prefix_subject(m, "[SPAM]"),
            b"From: a\r\nSubject: [SPAM] hello\r\n\r\nSubject: body\r\n"
        );
        let twice = prefix_subject(&prefix_subject(m, "[SPAM]"), "[SPAM]");
        assert_eq!(twice, prefix_subject(m, "[SPAM]"), "not prefixed twice");
        assert_eq!(
            prefix_subject(b"From: a\n\nx\n", "[SPAM] "),
            b"Subject: [SPAM]\r\nFrom: a\n\nx\n"
        );
        // A Subject line in the body is not touched.
        assert_eq!(
            prefix_subject(b"From: a\r\n\r\nSubject: x\r\n", "[S]"),
            b"Subject: [S]\r\nFrom: a\r\n\r\nSubject: x\r\n"
        );
    }

    #[test]
    fn builtin_rules_compile() {
        let cfg = SpamConfig::default();
        let f = SpamFilter::new(cfg, None).expect("built-in rules compile");
        assert!(f.rule_count() >= 1);
        assert!(BUILTIN_RULES.iter().any(|(n, _)| *n == "00_gtube.rules"));
    }

    #[test]
    fn the_classifier_votes_only_once_the_model_has_learned_enough() {
        let msg = |i: usize, spam: bool| {
            let words = if spam {
                "cheap pills viagra casino winner"
            } else {
                "meeting agenda minutes project review"
            };
            format!("Subject: note {i}\r\n\r\n{words} number {i}\r\n")
        };
        let mut model = Model::new();
        for i in 0..12 {
            model.learn(&super::super::tokenize::tokens(msg(i, true).as_bytes()), true);
            model.learn(&super::super::tokenize::tokens(msg(i, false).as_bytes()), false);
        }
        let probe = msg(99, true);
        let with = |min: u32| {
            let f = SpamFilter::new(
                SpamConfig {
                    bayes_min_messages: min,
                    ..SpamConfig::default()
                },
                None,
            )
            .unwrap();
            f.set_model(Some(model.clone()));
            f.score_offline(probe.as_bytes()).bayes
        };
        assert!(with(10).is_some_and(|p| p > 0.9), "12 of each, at least 10: it votes");
        assert_eq!(with(12).map(|_| ()), Some(()), "exactly the minimum votes");
        assert_eq!(with(13), None, "one short of the minimum: no vote");
        assert_eq!(with(200), None, "SpamAssassin's 200");
    }
}
