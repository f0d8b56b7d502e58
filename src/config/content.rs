//! Validation of the content sections: `[scan]` and `[spam]`.

use std::path::Path;

use super::raw::{RawScan, RawSpam, RawThreshold};
use super::{ConfigError, dur, dur_or_zero, positive, resolve};

pub(super) fn validate_scan(
    raw: RawScan,
    base: &Path,
    spool_dir: &Path,
) -> Result<crate::scan::ScanConfig, ConfigError> {
    use crate::scan::{Ambiguous, OnFailure, ScanConfig, banned::Banned, mime::Limits};
    let mode = |key: &str, v: Option<String>, default: &str| match v.as_deref().unwrap_or(default) {
        "scan-all" => Ok(Ambiguous::ScanAll),
        "reject" => Ok(Ambiguous::Reject),
        other => Err(ConfigError::new(
            key,
            format!("{other:?}: expected \"scan-all\" or \"reject\""),
        )),
    };
    let ambiguous = mode("scan.ambiguous_mime", raw.ambiguous_mime, "scan-all")?;
    let unknown_encoding = mode("scan.unknown_encoding", raw.unknown_encoding, "reject")?;
    let on_failure = match raw.on_failure.as_deref().unwrap_or("tempfail") {
        "tempfail" => OnFailure::Tempfail,
        "hold" => OnFailure::Hold,
        other => {
            return Err(ConfigError::new(
                "scan.on_failure",
                format!("{other:?}: expected \"tempfail\" or \"hold\""),
            ));
        }
    };
    let mut banned = Banned::default();
    if let Some(list) = raw.banned_extensions {
        banned.extensions.clear();
        for (i, e) in list.iter().enumerate() {
            let e = e.trim().trim_start_matches('.').to_ascii_lowercase();
            if e.is_empty() || !e.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return Err(ConfigError::new(
                    format!("scan.banned_extensions[{i}]"),
                    "expected a file extension such as \"exe\"",
                ));
            }
            banned.extensions.insert(e);
        }
    }
    banned.in_archives = raw.banned_in_archives.unwrap_or(true);
    Ok(ScanConfig {
        limits: Limits {
            max_depth: positive("scan.max_depth", raw.max_depth, 8)?,
            max_parts: positive("scan.max_parts", raw.max_parts, 1000)?,
            max_decoded: positive("scan.max_decoded_size", raw.max_decoded_size, 64 << 20)?,
        },
        ambiguous,
        unknown_encoding,
        banned,
        on_failure,
        latency_budget: dur_or_zero("scan.latency_budget", raw.latency_budget, "20s")?,
        retry: dur("scan.retry", raw.retry, "1m")?,
        max_held: positive("scan.max_held", raw.max_held, 100_000)?,
        quarantine_dir: match raw.quarantine_dir {
            Some(d) => resolve(base, &d),
            None => spool_dir.join("quarantine"),
        },
    })
}

pub(super) fn validate_spam(raw: RawSpam, base: &Path) -> Result<Option<crate::spam::filter::SpamConfig>, ConfigError> {
    use crate::spam::filter::{SpamConfig, Thresholds};
    if raw.enabled == Some(false) {
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
            Some(other) => Err(ConfigError::new(
                format!("{key}{name}"),
                format!("{other:?}: expected a score such as 5.0, or \"off\""),
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
        auth: raw.auth.unwrap_or(d.auth),
        auth_timeout: dur("spam.auth_timeout", raw.auth_timeout, "5s")?,
        max_size: positive("spam.max_size", raw.max_size, d.max_size as u64)?,
        reload_interval: dur("spam.reload_interval", raw.reload_interval, "5s")?,
        default,
        domains,
    }))
}
