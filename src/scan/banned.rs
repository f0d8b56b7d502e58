//! Banned attachments: by the extension of any plausible name of a part,
//! by what a decoded part really is (magic bytes), and by the names of the
//! entries of zip archives found in the message.

use super::mime::Analysis;
use super::sniff;

pub use crate::config::scan::{Banned, DEFAULT_BANNED};

/// Zip entries looked at per archive.
const MAX_ZIP_NAMES: usize = 1000;

impl Banned {
    pub fn is_empty(&self) -> bool {
        self.extensions.is_empty()
    }

    /// Whether `name`'s extension is banned.
    pub fn banned_name(&self, name: &str) -> bool {
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
