//! Recipient validation: accepted domains (never an open relay) and the
//! recipient table in Postfix map text format.
//!
//! ```text
//! # comment
//! user@example.com    OK
//! @example.org        OK        (catch-all for the domain)
//! old@example.com     REJECT    (known but refused, 550 5.1.1)
//! ```
//!
//! The table is held behind an `Arc` that is swapped on reload (file change
//! or SIGHUP); sessions keep using the old table until their next lookup.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use super::{Check, Decision, Refusal, Stage};
use crate::proto::{Mailbox, Reply};

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} line {line}: {problem}")]
    Syntax { path: String, line: usize, problem: String },
}

/// An immutable, loaded recipient table. Lookups are hash lookups: O(1).
#[derive(Debug, Default)]
pub struct Table {
    exact: HashSet<Box<str>>,
    catch_all: HashSet<Box<str>>,
    rejected: HashSet<Box<str>>,
    /// `@domain VERIFY`: ask the next hop (call-ahead).
    verify: HashSet<Box<str>>,
}

/// Result of a table lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Known,
    Unknown,
    /// Ask the next hop (recipient call-ahead).
    Verify,
}

impl Table {
    pub fn load(path: &Path) -> Result<Table, TableError> {
        let text = std::fs::read(path).map_err(|source| TableError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &[u8], name: &str) -> Result<Table, TableError> {
        let mut t = Table::default();
        for (i, line) in text.split(|&b| b == b'\n').enumerate() {
            let line = String::from_utf8_lossy(line);
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let key = parts.next().unwrap_or_default().to_lowercase();
            let value = parts.next().ok_or_else(|| TableError::Syntax {
                path: name.to_string(),
                line: i + 1,
                problem: format!("{key:?} has no value (expected e.g. \"{key} OK\")"),
            })?;
            if !key.contains('@') {
                return Err(TableError::Syntax {
                    path: name.to_string(),
                    line: i + 1,
                    problem: format!("{key:?} is neither user@domain nor @domain"),
                });
            }
            let reject =
                value.eq_ignore_ascii_case("REJECT") || value.starts_with('5') || value.eq_ignore_ascii_case("DISCARD");
            let key = key.trim_end_matches('.').to_string().into_boxed_str();
            if reject {
                t.rejected.insert(key);
            } else if value.eq_ignore_ascii_case("VERIFY") {
                match key.strip_prefix('@') {
                    Some(domain) => {
                        t.verify.insert(domain.into());
                    }
                    None => {
                        return Err(TableError::Syntax {
                            path: name.to_string(),
                            line: i + 1,
                            problem: format!("VERIFY applies to a whole domain: write \"@domain VERIFY\", not {key:?}"),
                        });
                    }
                }
            } else if let Some(domain) = key.strip_prefix('@') {
                t.catch_all.insert(domain.into());
            } else {
                t.exact.insert(key);
            }
        }
        Ok(t)
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.catch_all.len() + self.rejected.len() + self.verify.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Looks up `key` (lowercased `local@domain`): exact address, then the
    /// address without its extension, then the domain catch-all.
    pub fn lookup(&self, rcpt: &Mailbox, delimiter: Option<char>) -> Lookup {
        let key = rcpt.key();
        if self.rejected.contains(key.as_str()) {
            return Lookup::Unknown;
        }
        if self.exact.contains(key.as_str()) {
            return Lookup::Known;
        }
        if let Some(d) = delimiter {
            let local = rcpt.local.to_lowercase();
            if let Some((base, _ext)) = local.split_once(d) {
                let k = format!("{base}@{}", rcpt.domain);
                if self.rejected.contains(k.as_str()) {
                    return Lookup::Unknown;
                }
                if self.exact.contains(k.as_str()) {
                    return Lookup::Known;
                }
            }
        }
        if self.catch_all.contains(rcpt.domain.as_str()) {
            return Lookup::Known;
        }
        if self.verify.contains(rcpt.domain.as_str()) {
            return Lookup::Verify;
        }
        Lookup::Unknown
    }
}

/// The live recipient directory: accepted domains plus a reloadable table.
pub struct Directory {
    domains: HashSet<String>,
    delimiter: Option<char>,
    /// `None`: no table, every recipient is verified at the next hop.
    path: Option<PathBuf>,
    /// Always accepted (RFC 5321 §4.5.1), whatever the table says.
    postmaster: Mailbox,
    /// Swapped whole on reload; a std `RwLock` because it is held only to
    /// clone an `Arc`, never across an await.
    table: RwLock<(Arc<Table>, Option<SystemTime>)>,
}

impl Directory {
    pub fn new(cfg: &crate::config::Recipients) -> Result<Self, TableError> {
        let (table, stamp) = match &cfg.table {
            Some(p) => (Table::load(p)?, mtime(p)),
            None => (Table::default(), None),
        };
        Ok(Self {
            domains: cfg.domains.iter().cloned().collect(),
            delimiter: cfg.delimiter,
            path: cfg.table.clone(),
            postmaster: cfg.postmaster.clone(),
            table: RwLock::new((Arc::new(table), stamp)),
        })
    }

    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.domains.contains(domain)
    }

    pub fn table(&self) -> Arc<Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).0.clone()
    }

    pub fn lookup(&self, rcpt: &Mailbox) -> Lookup {
        if rcpt.key() == self.postmaster.key() {
            return Lookup::Known;
        }
        if self.path.is_none() {
            return Lookup::Verify;
        }
        self.table().lookup(rcpt, self.delimiter)
    }

    /// Reloads the table if its modification time changed (or always, with
    /// `force`). A table that fails to parse is logged and the old one kept.
    pub fn reload(&self, force: bool) -> Result<bool, TableError> {
        let Some(path) = &self.path else { return Ok(false) };
        let stamp = mtime(path);
        if !force && stamp == self.table.read().unwrap_or_else(|p| p.into_inner()).1 {
            return Ok(false);
        }
        let table = Table::load(path)?;
        let n = table.len();
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = (Arc::new(table), stamp);
        tracing::info!(path = %path.display(), entries = n, "recipient table reloaded");
        Ok(true)
    }

    /// Polls the file every `interval` until `shutdown` fires.
    pub async fn watch(self: Arc<Self>, interval: Duration, shutdown: tokio_util::sync::CancellationToken) {
        let step = move || self.reload(false);
        crate::shutdown::every_blocking(interval, shutdown, step, |res| {
            if let Err(e) = res {
                tracing::warn!(error = %e, "recipient table reload failed; keeping the previous table");
            }
        })
        .await;
    }
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// The recipient check: relay denied for foreign domains, 550 5.1.1 for
/// unknown users in local domains.
pub struct RecipientCheck {
    pub dir: Arc<Directory>,
    /// Verifies `@domain VERIFY` recipients at the next hop; without it
    /// such recipients are accepted.
    pub callahead: Option<Arc<super::callahead::CallAhead>>,
}

impl Check for RecipientCheck {
    fn name(&self) -> &'static str {
        "recipients"
    }

    fn check<'a>(&'a self, stage: &'a Stage<'a>, ctx: &'a super::SessionCtx) -> super::CheckFuture<'a> {
        Box::pin(async move {
            let Stage::RcptTo { rcpt, .. } = stage else {
                return Decision::Continue;
            };
            if !self.dir.is_local_domain(&rcpt.domain) {
                return Decision::Reject(Refusal::new(
                    Reply::RELAY_DENIED,
                    super::Reason::RelayDenied,
                    format!("{} is not a local domain", rcpt.domain),
                ));
            }
            match (self.dir.lookup(rcpt), &self.callahead) {
                (Lookup::Known, _) | (Lookup::Verify, None) => Decision::Continue,
                (Lookup::Unknown, _) => Decision::Reject(Refusal::new(
                    Reply::UNKNOWN_USER,
                    super::Reason::UnknownUser,
                    format!("{rcpt} is not in the recipient table"),
                )),
                (Lookup::Verify, Some(ca)) => ca.decide(ctx.ip, rcpt).await,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::address::parse_mailbox;

    #[test]
    fn lookups() {
        let t = Table::parse(
            b"# comment\nuser@example.com OK\n\n  Mixed@Example.com\tOK\n@catch.example OK\nold@example.com REJECT\n",
            "t",
        )
        .unwrap();
        let l = |a: &str, d| t.lookup(&parse_mailbox(a).unwrap(), d);
        assert_eq!(l("user@example.com", None), Lookup::Known);
        assert_eq!(l("USER@EXAMPLE.COM", None), Lookup::Known);
        assert_eq!(l("mixed@example.com", None), Lookup::Known);
        assert_eq!(l("nobody@example.com", None), Lookup::Unknown);
        assert_eq!(l("old@example.com", None), Lookup::Unknown);
        assert_eq!(l("anyone@catch.example", None), Lookup::Known);
        assert_eq!(l("user+tag@example.com", None), Lookup::Unknown);
        assert_eq!(l("user+tag@example.com", Some('+')), Lookup::Known);
    }

    #[test]
    fn a_million_entries() {
        let mut text = Vec::with_capacity(40 << 20);
        for i in 0..1_000_000 {
            text.extend_from_slice(format!("user{i:07}@example.com OK\n").as_bytes());
        }
        let t = Table::parse(&text, "big").unwrap();
        assert_eq!(t.len(), 1_000_000);
        for probe in [
            "user0000000@example.com",
            "user0500000@example.com",
            "user0999999@example.com",
        ] {
            assert_eq!(t.lookup(&parse_mailbox(probe).unwrap(), None), Lookup::Known, "{probe}");
        }
        assert_eq!(
            t.lookup(&parse_mailbox("user1000000@example.com").unwrap(), None),
            Lookup::Unknown
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = Table::parse(b"ok@x.example OK\nnovalue@x.example\n", "t").unwrap_err();
        assert_eq!(
            e.to_string(),
            "t line 2: \"novalue@x.example\" has no value (expected e.g. \"novalue@x.example OK\")"
        );
        let e = Table::parse(b"justaname OK\n", "t").unwrap_err();
        assert!(e.to_string().contains("line 1"));
    }
}
