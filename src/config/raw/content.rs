//! The end-of-DATA content checks: `[scan]`, `[clamd]` and `[spam]`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Content checks at the end of DATA: MIME decoding, banned attachments,
/// and what to do when scanning fails or is slow.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawScan {
    /// MIME that can be read more than one way: "scan-all" (decode and scan
    /// every plausible reading) or "reject" (554 5.6.0). Default "scan-all".
    pub ambiguous_mime: Option<String>,
    /// A part whose Content-Transfer-Encoding is not one of RFC 2045's (or
    /// a uuencode variant): "reject" (554 5.6.0) or "scan-all". Default "reject".
    pub unknown_encoding: Option<String>,
    /// Nesting of messages inside messages decoded. Default 8.
    pub max_depth: Option<u64>,
    /// Decoded parts per message. Default 1000.
    pub max_parts: Option<u64>,
    /// Decoded octets per message. Default 67108864.
    pub max_decoded_size: Option<u64>,
    /// File extensions (and sniffed types) refused as attachments, also
    /// inside zip archives. Default: executables and scripts (see README).
    pub banned_extensions: Option<Vec<String>>,
    /// Check names inside zip archives. Default true.
    pub banned_in_archives: Option<bool>,
    /// Encrypted archives, archive formats neither sluice nor clamd opens,
    /// archives past the limits below or clamd's: "accept", "quarantine"
    /// or "reject" (554 5.7.1). Default "quarantine".
    pub unscannable: Option<String>,
    /// The same for clients in `policy.allowlist` (your own networks).
    /// Default "accept".
    pub unscannable_trusted: Option<String>,
    /// Whether the virus scanner unpacks compressed RAR files (clamd built
    /// with unRAR). When it does not, a RAR whose files sluice cannot read
    /// either (compressed ones) is unscannable. Default false: Debian's
    /// clamd has no unRAR (it is non-free).
    pub scanner_unrar: Option<bool>,
    /// Archives inside archives opened. Default 8.
    pub archive_max_depth: Option<u64>,
    /// Archive entries listed per message. Default 10000.
    pub archive_max_entries: Option<u64>,
    /// Octets unpacked from the archives of one message. Default 104857600.
    pub archive_max_size: Option<u64>,
    /// Octets of the files sluice unpacks from archives that also go to
    /// the virus scanner as files of their own, all of one message
    /// together; 0 turns it off. Default 16777216.
    pub archive_member_scan_size: Option<u64>,
    /// Scanner down or too slow: "tempfail" (451 4.7.1) or "hold" (accept,
    /// keep in the spool, deliver after a clean scan). Default "tempfail".
    pub on_failure: Option<String>,
    /// Expected scan latency above which a message is accepted first and
    /// scanned from the spool; "0s" = always in session. Default "20s".
    pub latency_budget: Option<String>,
    /// Messages waiting for a deferred scan beyond which new mail gets
    /// 451 4.7.1 while scans are over budget. Default 100000.
    pub max_held: Option<u64>,
    /// Held messages are scanned again this often. Default "1m".
    pub retry: Option<String>,
    /// Messages refused after acceptance. Default "quarantine" in spool.dir.
    pub quarantine_dir: Option<String>,
}

/// Virus scanning with clamd, at the end of DATA.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawClamd {
    /// "tcp://host:port" or "unix:/path"; tried in turn (load spread,
    /// failover). Default: none (no virus scanning).
    pub endpoints: Option<Vec<String>>,
    /// Deadline for one scan, failover included. Default "30s".
    pub timeout: Option<String>,
    /// Largest message sent to clamd, octets (keep it under clamd's
    /// StreamMaxLength); larger ones count as a scan failure. Default 26214400.
    pub max_size: Option<u64>,
    /// Concurrent scans (clamd connections). Default 8.
    pub max_concurrent: Option<u64>,
    /// Endpoints are pinged this often; failing ones are tried last. Default "5s".
    pub health_interval: Option<String>,
    /// Stream the message to clamd while DATA arrives. Default true.
    pub stream: Option<bool>,
}

/// Spam scoring: rules, the statistical classifier, SPF/DKIM/DMARC, and
/// what to do at which score.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpam {
    /// Score messages at all. Default true.
    pub enabled: Option<bool>,
    /// Load the default rules compiled into sluice. Default true.
    pub builtin_rules: Option<bool>,
    /// A directory of local `*.rules` files, loaded after the built-in
    /// ones (they can add rules and re-score built-in ones). Default none.
    pub rules_dir: Option<String>,
    /// The classifier's model written by `sluice learn`. Default none.
    pub bayes_model: Option<String>,
    /// Spam and ham (each) the model must have learned before the
    /// classifier votes; at least 10. Default 10.
    pub bayes_min_messages: Option<u64>,
    /// SPF, DKIM and DMARC checks, with an Authentication-Results header.
    /// Default true.
    pub auth: Option<bool>,
    /// Time for all authentication lookups of one message. Default "5s".
    pub auth_timeout: Option<String>,
    /// Larger messages are not scored. Default 2097152.
    pub max_size: Option<u64>,
    /// Octets of each text part that body rules and the classifier read
    /// (as SpamAssassin's body_part_scan_size). Default 50000.
    pub part_scan_size: Option<u64>,
    /// How often rule and model files are checked for changes. Default "5s".
    pub reload_interval: Option<String>,
    /// Score thresholds: a number, or "off". Defaults: tag 5, reject 10,
    /// quarantine and tempfail off.
    pub tag: Option<RawThreshold>,
    pub quarantine: Option<RawThreshold>,
    pub tempfail: Option<RawThreshold>,
    pub reject: Option<RawThreshold>,
    /// Put in front of the Subject of tagged mail, e.g. `"[SPAM]"`. Default none.
    pub subject_prefix: Option<String>,
    /// Per recipient domain: the same threshold keys; unset ones inherit.
    pub domains: Option<BTreeMap<String, RawSpamDomain>>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpamDomain {
    pub tag: Option<RawThreshold>,
    pub quarantine: Option<RawThreshold>,
    pub tempfail: Option<RawThreshold>,
    pub reject: Option<RawThreshold>,
    pub subject_prefix: Option<String>,
}

/// A score, or a word ("off").
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawThreshold {
    Score(f64),
    Word(String),
}
