//! `[scan]`: the content checks' policy (MIME decoding limits, ambiguous
//! MIME, banned attachments, what to do when scanning fails or is slow).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::defaults;
use super::raw::RawScan;
use super::{ConfigError, dur, dur_or_zero, positive, resolve};

/// What to do with MIME that can be read more than one way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ambiguous {
    /// Decode and scan every plausible reading (default).
    ScanAll,
    /// Refuse the message as malformed.
    Reject,
}

/// What to do when the scanner cannot give a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// `451 4.7.1`: the client retries later (default).
    Tempfail,
    /// Accept, hold in the spool, deliver only after a clean scan.
    Hold,
}

/// `[scan]`: the content checks' policy.
#[derive(Debug, Clone)]
pub struct ScanConfig {
    pub limits: Limits,
    pub ambiguous: Ambiguous,
    /// Parts whose Content-Transfer-Encoding is unknown: refused by
    /// default (nobody knows how the recipient's client reads them), or
    /// decoded every way that fits.
    pub unknown_encoding: Ambiguous,
    pub banned: Banned,
    pub on_failure: OnFailure,
    /// Expected scan latency above which a message is accepted first and
    /// scanned from the spool. Zero: always in session.
    pub latency_budget: Duration,
    /// How often held messages are scanned again when the scanner fails.
    pub retry: Duration,
    /// Messages waiting for a deferred scan beyond which new mail gets
    /// 451 4.7.1 while scanning is over budget.
    pub max_held: usize,
    /// Where refused-after-acceptance messages go.
    pub quarantine_dir: PathBuf,
    /// Encrypted, unknown or too large archives (and clamd's "limits
    /// exceeded"): accept, quarantine (default) or reject, for mail from
    /// outside.
    pub unscannable: UnscannableAction,
    /// The same for mail from `policy.allowlist` (a site's own networks,
    /// where encrypted zips are ordinary business mail). Default accept.
    pub unscannable_trusted: UnscannableAction,
    /// `policy.allowlist`, copied here by the validation: the clients
    /// `unscannable_trusted` applies to.
    pub trusted: Vec<ipnet::IpNet>,
    /// Bounds on opening archives.
    pub archives: ArchiveLimits,
}

/// What `scan.unscannable` does with such content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum UnscannableAction {
    /// Deliver, with an event.
    Accept,
    /// Accept (250) and keep in the quarantine, never delivered.
    Quarantine,
    /// `554 5.7.1` in the session.
    Reject,
}

impl UnscannableAction {
    fn parse(key: &str, value: &str) -> Result<Self, ConfigError> {
        match value {
            "accept" => Ok(UnscannableAction::Accept),
            "quarantine" => Ok(UnscannableAction::Quarantine),
            "reject" => Ok(UnscannableAction::Reject),
            other => Err(ConfigError::new(
                key,
                format!("{other:?}: expected \"accept\", \"quarantine\" or \"reject\""),
            )),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            UnscannableAction::Accept => "accept",
            UnscannableAction::Quarantine => "quarantine",
            UnscannableAction::Reject => "reject",
        }
    }
}

/// Bounds on opening the archives of one message (`scan::archive`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveLimits {
    /// Archives inside archives opened (a gzip counts as one level).
    pub max_depth: usize,
    /// Entries listed, all archives together.
    pub max_entries: usize,
    /// Octets unpacked, all archives together.
    pub max_size: u64,
    /// Octets of unpacked members (not archives themselves) kept for the
    /// virus scanner as files of their own, all together; 0: none.
    pub keep_members: u64,
    /// A RAR with compressed files counts as unscannable: sluice does not
    /// unpack them and the virus scanner cannot (`scan.scanner_unrar` off,
    /// and there is a scanner).
    pub compressed_rar_unscannable: bool,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        ArchiveLimits {
            max_depth: defaults::SCAN_ARCHIVE_MAX_DEPTH as usize,
            max_entries: defaults::SCAN_ARCHIVE_MAX_ENTRIES as usize,
            max_size: defaults::SCAN_ARCHIVE_MAX_SIZE,
            keep_members: defaults::SCAN_ARCHIVE_MEMBER_SCAN_SIZE,
            compressed_rar_unscannable: !defaults::SCAN_SCANNER_UNRAR,
        }
    }
}

impl ScanConfig {
    /// What `scan.unscannable` (or, for a client in `policy.allowlist`,
    /// `scan.unscannable_trusted`) does with mail from `client`. `None`:
    /// no client known (a file scanned by hand), treated as from outside.
    pub fn unscannable_for(&self, client: Option<std::net::IpAddr>) -> UnscannableAction {
        match client {
            Some(ip) if self.trusted.iter().any(|n| n.contains(&ip)) => self.unscannable_trusted,
            _ => self.unscannable,
        }
    }
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig {
            limits: Limits::default(),
            ambiguous: Ambiguous::ScanAll,
            unknown_encoding: Ambiguous::Reject,
            banned: Banned::default(),
            on_failure: OnFailure::Tempfail,
            latency_budget: Duration::from_secs(20),
            retry: Duration::from_secs(60),
            max_held: 100_000,
            quarantine_dir: Path::new(defaults::SPOOL_DIR).join("quarantine"),
            unscannable: UnscannableAction::Quarantine,
            unscannable_trusted: UnscannableAction::Accept,
            trusted: Vec::new(),
            archives: ArchiveLimits::default(),
        }
    }
}

/// The classic list of executable and script types.
pub const DEFAULT_BANNED: &[&str] = &[
    "ade", "adp", "app", "bat", "chm", "cmd", "com", "cpl", "exe", "hta", "inf", "ins", "isp", "jse", "lib", "lnk",
    "mde", "msc", "msi", "msp", "mst", "pif", "ps1", "reg", "scr", "sct", "shb", "shs", "sys", "vb", "vbe", "vbs",
    "vxd", "wsc", "wsf", "wsh",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Banned {
    /// Lowercased extensions without the dot. Sniffed kinds use the names
    /// of the content sniffer ("exe", "zip", "rar", "ole", ...).
    pub extensions: HashSet<String>,
    /// Look at the names inside zip archives too.
    pub in_archives: bool,
}

impl Default for Banned {
    fn default() -> Self {
        Banned {
            extensions: DEFAULT_BANNED.iter().map(|s| s.to_string()).collect(),
            in_archives: true,
        }
    }
}

/// Bounds on the work one message may cause.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Nesting of decoded messages inside messages.
    pub max_depth: usize,
    /// Decoded pieces kept for scanning.
    pub max_parts: usize,
    /// Total decoded bytes kept for scanning.
    pub max_decoded: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 8,
            max_parts: 1000,
            max_decoded: 64 << 20,
        }
    }
}

pub(super) fn validate_scan(raw: RawScan, base: &Path, spool_dir: &Path) -> Result<ScanConfig, ConfigError> {
    let mode = |key: &str, v: Option<String>, default: &str| match v.as_deref().unwrap_or(default) {
        "scan-all" => Ok(Ambiguous::ScanAll),
        "reject" => Ok(Ambiguous::Reject),
        other => Err(ConfigError::new(
            key,
            format!("{other:?}: expected \"scan-all\" or \"reject\""),
        )),
    };
    let ambiguous = mode("scan.ambiguous_mime", raw.ambiguous_mime, defaults::SCAN_AMBIGUOUS_MIME)?;
    let unknown_encoding = mode(
        "scan.unknown_encoding",
        raw.unknown_encoding,
        defaults::SCAN_UNKNOWN_ENCODING,
    )?;
    let on_failure = match raw.on_failure.as_deref().unwrap_or(defaults::SCAN_ON_FAILURE) {
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
    banned.in_archives = raw.banned_in_archives.unwrap_or(defaults::SCAN_BANNED_IN_ARCHIVES);
    let unscannable = UnscannableAction::parse(
        "scan.unscannable",
        raw.unscannable.as_deref().unwrap_or(defaults::SCAN_UNSCANNABLE),
    )?;
    let unscannable_trusted = UnscannableAction::parse(
        "scan.unscannable_trusted",
        raw.unscannable_trusted
            .as_deref()
            .unwrap_or(defaults::SCAN_UNSCANNABLE_TRUSTED),
    )?;
    let archives = ArchiveLimits {
        max_depth: positive(
            "scan.archive_max_depth",
            raw.archive_max_depth,
            defaults::SCAN_ARCHIVE_MAX_DEPTH,
        )?,
        max_entries: positive(
            "scan.archive_max_entries",
            raw.archive_max_entries,
            defaults::SCAN_ARCHIVE_MAX_ENTRIES,
        )?,
        max_size: positive(
            "scan.archive_max_size",
            raw.archive_max_size,
            defaults::SCAN_ARCHIVE_MAX_SIZE,
        )? as u64,
        keep_members: raw
            .archive_member_scan_size
            .unwrap_or(defaults::SCAN_ARCHIVE_MEMBER_SCAN_SIZE),
        compressed_rar_unscannable: !raw.scanner_unrar.unwrap_or(defaults::SCAN_SCANNER_UNRAR),
    };
    Ok(ScanConfig {
        limits: Limits {
            max_depth: positive("scan.max_depth", raw.max_depth, defaults::SCAN_MAX_DEPTH)?,
            max_parts: positive("scan.max_parts", raw.max_parts, defaults::SCAN_MAX_PARTS)?,
            max_decoded: positive(
                "scan.max_decoded_size",
                raw.max_decoded_size,
                defaults::SCAN_MAX_DECODED_SIZE,
            )?,
        },
        ambiguous,
        unknown_encoding,
        banned,
        on_failure,
        latency_budget: dur_or_zero("scan.latency_budget", raw.latency_budget, defaults::SCAN_LATENCY_BUDGET)?,
        retry: dur("scan.retry", raw.retry, defaults::SCAN_RETRY)?,
        max_held: positive("scan.max_held", raw.max_held, defaults::SCAN_MAX_HELD)?,
        quarantine_dir: match raw.quarantine_dir {
            Some(d) => resolve(base, &d),
            None => spool_dir.join("quarantine"),
        },
        unscannable,
        unscannable_trusted,
        trusted: Vec::new(),
        archives,
    })
}
