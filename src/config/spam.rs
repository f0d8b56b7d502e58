//! `[spam]`: spam scoring, its thresholds per recipient domain, rules and
//! model files, SPF/DKIM/DMARC.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::defaults;
use super::raw::{RawSpam, RawThreshold};
use super::{ConfigError, dur, positive, resolve};

/// What happens to a message, from mildest to strictest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Deliver,
    /// Delivered with `X-Spam-Score`/`X-Spam-Status` (and a subject prefix).
    Tag,
    /// Accepted (250) and kept in the quarantine, not delivered.
    Quarantine,
    /// 451 4.7.1: the client may try again later.
    Tempfail,
    /// 550 5.7.1 in the session.
    Reject,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Deliver => "deliver",
            Action::Tag => "tag",
            Action::Quarantine => "quarantine",
            Action::Tempfail => "tempfail",
            Action::Reject => "reject",
        }
    }
}

/// Score thresholds (a message scoring at least the value gets the
/// action; `None` = never) and the subject prefix of tagged mail.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    pub tag: Option<f64>,
    pub quarantine: Option<f64>,
    pub tempfail: Option<f64>,
    pub reject: Option<f64>,
    pub subject_prefix: Option<String>,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            tag: Some(5.0),
            quarantine: None,
            tempfail: None,
            reject: Some(10.0),
            subject_prefix: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SpamConfig {
    /// Load the rules compiled into the binary first.
    pub builtin_rules: bool,
    /// Every `*.rules` file here, in name order, after the built-in ones
    /// (a later `score` line re-scores a rule).
    pub rules_dir: Option<PathBuf>,
    /// The classifier's model (`sluice learn`).
    pub bayes_model: Option<PathBuf>,
    /// Spam and ham the model must have learned (each) before the
    /// classifier votes (SpamAssassin's `bayes_min_spam_num`, 200 there).
    pub bayes_min_messages: u32,
    /// SPF, DKIM and DMARC checks (DNS).
    pub auth: bool,
    pub auth_timeout: Duration,
    /// Larger messages are not scored (delivered as they are).
    pub max_size: usize,
    /// Octets of each text part read by the body and raw-body rules and
    /// the classifier, in scoring and learning (SpamAssassin's
    /// `body_part_scan_size`): spam puts its pitch near the
    /// top, and a long part then costs no more than a short one.
    pub part_scan_size: usize,
    /// How often the rule and model files are checked for changes.
    pub reload_interval: Duration,
    pub default: Thresholds,
    /// Per recipient domain (lower case).
    pub domains: HashMap<String, Thresholds>,
}

impl Default for SpamConfig {
    fn default() -> Self {
        SpamConfig {
            builtin_rules: true,
            rules_dir: None,
            bayes_model: None,
            bayes_min_messages: defaults::SPAM_BAYES_MIN_MESSAGES,
            auth: true,
            auth_timeout: Duration::from_secs(5),
            max_size: 2 << 20,
            part_scan_size: defaults::SPAM_PART_SCAN_SIZE,
            reload_interval: Duration::from_secs(5),
            default: Thresholds::default(),
            domains: HashMap::new(),
        }
    }
}

pub(super) fn validate_spam(raw: RawSpam, base: &Path) -> Result<Option<SpamConfig>, ConfigError> {
    if !raw.enabled.unwrap_or(defaults::SPAM_ENABLED) {
        return Ok(None);
    }
    let d = SpamConfig::default();
    let thresholds = |key: &str,
                      inherit: &Thresholds,
                      tag: Option<RawThreshold>,
                      quarantine: Option<RawThreshold>,
                      tempfail: Option<RawThreshold>,
                      reject: Option<RawThreshold>,
                      prefix: Option<String>|
     -> Result<Thresholds, ConfigError> {
        let one = |name: &str, v: Option<RawThreshold>, inherited: Option<f64>| match v {
            None => Ok(inherited),
            Some(RawThreshold::Score(x)) if x.is_finite() => Ok(Some(x)),
            Some(RawThreshold::Word(w)) if w == "off" => Ok(None),
            Some(RawThreshold::Word(w)) => Err(ConfigError::new(
                format!("{key}{name}"),
                format!("expected a score such as 5.0, or \"off\"; got {w:?}"),
            )),
            Some(RawThreshold::Score(x)) => Err(ConfigError::new(
                format!("{key}{name}"),
                format!("expected a score such as 5.0, or \"off\"; got {x}"),
            )),
        };
        Ok(Thresholds {
            tag: one("tag", tag, inherit.tag)?,
            quarantine: one("quarantine", quarantine, inherit.quarantine)?,
            tempfail: one("tempfail", tempfail, inherit.tempfail)?,
            reject: one("reject", reject, inherit.reject)?,
            subject_prefix: match prefix {
                Some(p) if p.contains(['\r', '\n']) => {
                    return Err(ConfigError::new(format!("{key}subject_prefix"), "must be one line"));
                }
                Some(p) if p.is_empty() => None,
                Some(p) => Some(p),
                None => inherit.subject_prefix.clone(),
            },
        })
    };
    let default = thresholds(
        "spam.",
        &d.default,
        raw.tag,
        raw.quarantine,
        raw.tempfail,
        raw.reject,
        raw.subject_prefix,
    )?;
    let mut domains = std::collections::HashMap::new();
    for (name, dom) in raw.domains.unwrap_or_default() {
        let key = format!("spam.domains.{name:?}.");
        if name.is_empty() || !crate::proto::address::is_valid_helo(&name) {
            return Err(ConfigError::new(key.trim_end_matches('.'), "expected a domain name"));
        }
        let th = thresholds(
            &key,
            &default,
            dom.tag,
            dom.quarantine,
            dom.tempfail,
            dom.reject,
            dom.subject_prefix,
        )?;
        domains.insert(name.to_ascii_lowercase(), th);
    }
    let path = |p: Option<String>| p.filter(|p| !p.is_empty()).map(|p| resolve(base, &p));
    Ok(Some(SpamConfig {
        builtin_rules: raw.builtin_rules.unwrap_or(d.builtin_rules),
        rules_dir: path(raw.rules_dir),
        bayes_model: path(raw.bayes_model),
        bayes_min_messages: match raw.bayes_min_messages.unwrap_or(u64::from(d.bayes_min_messages)) {
            n if n < u64::from(defaults::SPAM_BAYES_MIN_MESSAGES) => {
                return Err(ConfigError::new(
                    "spam.bayes_min_messages",
                    format!(
                        "{n}: below {}, a model's counts say nothing",
                        defaults::SPAM_BAYES_MIN_MESSAGES
                    ),
                ));
            }
            n => u32::try_from(n).map_err(|_| ConfigError::new("spam.bayes_min_messages", "too large"))?,
        },
        auth: raw.auth.unwrap_or(d.auth),
        auth_timeout: dur("spam.auth_timeout", raw.auth_timeout, defaults::SPAM_AUTH_TIMEOUT)?,
        max_size: positive("spam.max_size", raw.max_size, d.max_size as u64)?,
        part_scan_size: positive("spam.part_scan_size", raw.part_scan_size, d.part_scan_size as u64)?,
        reload_interval: dur(
            "spam.reload_interval",
            raw.reload_interval,
            defaults::SPAM_RELOAD_INTERVAL,
        )?,
        default,
        domains,
    }))
}
