//! `[recipients]`: our domains and the table of valid recipients.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::defaults;
use super::raw::RawRecipients;
use super::{ConfigError, dur, resolve};

#[derive(Debug, Clone)]
pub struct Recipients {
    pub domains: Vec<String>,
    /// `None` (`table = ""`): no table; every recipient in a local domain
    /// is verified at the next hop (call-ahead).
    pub table: Option<PathBuf>,
    pub delimiter: Option<char>,
    pub reload_interval: Duration,
    /// `RCPT TO:<postmaster>` goes here.
    pub postmaster: crate::proto::Mailbox,
}

/// `callahead`: whether `[callahead]` is on (an empty table needs it).
pub(super) fn validate_recipients(rc: RawRecipients, base: &Path, callahead: bool) -> Result<Recipients, ConfigError> {
    let domains_raw = rc
        .domains
        .unwrap_or_else(|| defaults::RECIPIENTS_DOMAINS.iter().map(|s| s.to_string()).collect());
    if domains_raw.is_empty() {
        return Err(ConfigError::new("recipients.domains", "must list at least one domain"));
    }
    let mut domains = Vec::new();
    for (i, d) in domains_raw.iter().enumerate() {
        let d = d.trim_end_matches('.').to_lowercase();
        if !crate::proto::address::is_valid_helo(&d) || d.starts_with('[') {
            return Err(ConfigError::new(
                format!("recipients.domains[{i}]"),
                format!("{d:?} is not a domain name"),
            ));
        }
        domains.push(d);
    }
    let delimiter = match rc.delimiter.as_deref() {
        None | Some("") => None,
        Some(d) if d.chars().count() == 1 && d != "@" => d.chars().next(),
        Some(d) => {
            return Err(ConfigError::new(
                "recipients.delimiter",
                format!("{d:?}: must be one character other than @"),
            ));
        }
    };
    let table = match rc.table.as_deref().unwrap_or(defaults::RECIPIENTS_TABLE) {
        "" => None,
        t => Some(resolve(base, t)),
    };
    if table.is_none() && !callahead {
        return Err(ConfigError::new(
            "recipients.table",
            "empty means \"verify every recipient at the next hop\": set [callahead] enabled = true, or name a table",
        ));
    }
    let postmaster = match rc.postmaster.as_deref() {
        Some(a) => crate::proto::address::parse_mailbox(a).map_err(|_| {
            ConfigError::new(
                "recipients.postmaster",
                format!("{a:?} is not a mail address (user@domain)"),
            )
        })?,
        None => crate::proto::Mailbox {
            local: "postmaster".into(),
            domain: domains[0].clone(),
        },
    };
    let recipients = Recipients {
        postmaster,
        domains,
        table,
        delimiter,
        reload_interval: dur(
            "recipients.reload_interval",
            rc.reload_interval,
            defaults::RECIPIENTS_RELOAD_INTERVAL,
        )?,
    };
    Ok(recipients)
}
