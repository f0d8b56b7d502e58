//! Banned attachments: by the extension of any plausible name of a part,
//! by what a decoded part really is (magic bytes), and by the names of the
//! entries of zip archives found in the message.

use std::collections::HashSet;

use super::mime::Analysis;
use super::sniff;

/// The classic list of executable and script types.
pub const DEFAULT_BANNED: &[&str] = &[
    "ade", "adp", "app", "bat", "chm", "cmd", "com", "cpl", "exe", "hta", "inf", "ins", "isp", "jse", "lib", "lnk",
    "mde", "msc", "msi", "msp", "mst", "pif", "ps1", "reg", "scr", "sct", "shb", "shs", "sys", "vb", "vbe", "vbs",
    "vxd", "wsc", "wsf", "wsh",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Banned {
    /// Lowercased extensions without the dot. Sniffed kinds use the names
    /// of [`sniff::sniff`] ("exe", "zip", "rar", "ole", ...).
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

/// Zip entries looked at per archive.
const MAX_ZIP_NAMES: usize = 1000;

impl Banned {
    pub fn is_empty(&self) -> bool {
        self.extensions.is_empty()
    }

    fn banned_name(&self, name: &str) -> bool {
        sniff::extension(name).is_some_and(|e| self.extensions.contains(&e))
    }

    /// The first banned thing in the message, described for the reply.
    pub fn check(&self, a: &Analysis) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        if let Some(n) = a.names.iter().find(|n| self.banned_name(n)) {
            return Some(format!("banned attachment name {n:?}"));
        }
        for leaf in &a.leaves {
            let kind = sniff::sniff(&leaf.data);
            if let Some(k) = kind.filter(|k| self.extensions.contains(*k)) {
                return Some(format!("banned attachment type {k}"));
            }
            // Also zips behind a stub (self-extractors) or with a damaged start.
            let zip_inside = kind == Some("zip")
                || memchr::memmem::find(&leaf.data, b"PK\x03\x04").is_some()
                || memchr::memmem::find(&leaf.data, b"PK\x01\x02").is_some();
            if self.in_archives && zip_inside {
                let listing = sniff::zip_entries(&leaf.data, MAX_ZIP_NAMES);
                if let Some(n) = listing.names.iter().find(|n| self.banned_name(n)) {
                    return Some(format!("banned name {n:?} inside an archive"));
                }
            }
        }
        None
    }
}
