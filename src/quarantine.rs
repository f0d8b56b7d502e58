//! Quarantine: messages refused after they were accepted (a virus found by
//! the deferred scan) are kept here, never delivered, until an operator
//! releases or deletes them (`sluice quarantine list|show|release|delete`).
//!
//! One message is two files: `ID.eml` (the message as spooled) and
//! `ID.json` (envelope, reason, time). Each is written to a temporary name,
//! synced and renamed, the `.json` last, so a listed entry is complete.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::delivery::Transport;
use crate::delivery::client::RcptStatus;
use crate::events::Cause;
use crate::mail::envelope::Envelope;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    /// Seconds since the Unix epoch.
    pub quarantined_at: u64,
    pub reason: Cause,
    pub envelope: Envelope,
}

#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    #[error("no quarantined message {0:?}")]
    NotFound(String),
    #[error("{0:?} is not a queue id")]
    BadId(String),
    #[error("quarantine I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("quarantine entry {0}: {1}")]
    Corrupt(String, serde_json::Error),
    #[error("release of {0} failed: {1}")]
    Release(String, String),
}

pub struct Quarantine {
    dir: PathBuf,
}

/// What the quarantine holds, from the directory alone (no entry is
/// parsed, so it stays cheap with many messages): for the status page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QuarantineStats {
    pub messages: u64,
    /// Octets of the stored messages.
    pub bytes: u64,
    /// Unix seconds when the oldest entry was written.
    pub oldest: Option<u64>,
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn write_synced(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

impl Quarantine {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Quarantine { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, id: &str, ext: &str) -> Result<PathBuf, QuarantineError> {
        if !valid_id(id) {
            return Err(QuarantineError::BadId(id.to_string()));
        }
        Ok(self.dir.join(format!("{id}.{ext}")))
    }

    /// Stores a message durably (blocking I/O).
    pub fn put(&self, envelope: &Envelope, reason: &Cause, body: &[u8]) -> Result<(), QuarantineError> {
        std::fs::create_dir_all(&self.dir)?;
        let entry = Entry {
            id: envelope.id.clone(),
            quarantined_at: crate::mail::date::now_secs(),
            reason: reason.clone(),
            envelope: envelope.clone(),
        };
        let json = serde_json::to_vec_pretty(&entry).map_err(|e| QuarantineError::Corrupt(entry.id.clone(), e))?;
        write_synced(&self.path(&entry.id, "eml")?, body)?;
        write_synced(&self.path(&entry.id, "json")?, &json)?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        Ok(())
    }

    /// Every quarantined message, oldest first.
    pub fn list(&self) -> Result<Vec<Entry>, QuarantineError> {
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e.into()),
        };
        for e in rd {
            let name = e?.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name.strip_suffix(".json") {
                out.push(self.entry(id)?);
            }
        }
        out.sort_by(|a, b| (a.quarantined_at, &a.id).cmp(&(b.quarantined_at, &b.id)));
        Ok(out)
    }

    /// Counts the entries (`.json`) and the size of their messages.
    pub fn stats(&self) -> Result<QuarantineStats, QuarantineError> {
        let mut st = QuarantineStats::default();
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(st),
            Err(e) => return Err(e.into()),
        };
        for e in rd {
            let e = e?;
            let name = e.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            st.messages += 1;
            let at = e
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs());
            if let Some(at) = at {
                st.oldest = Some(st.oldest.map_or(at, |o| o.min(at)));
            }
            if let Ok(m) = std::fs::metadata(self.dir.join(format!("{id}.eml"))) {
                st.bytes += m.len();
            }
        }
        Ok(st)
    }

    pub fn entry(&self, id: &str) -> Result<Entry, QuarantineError> {
        let text = std::fs::read(self.path(id, "json")?).map_err(|e| not_found(id, e))?;
        serde_json::from_slice(&text).map_err(|e| QuarantineError::Corrupt(id.to_string(), e))
    }

    pub fn body(&self, id: &str) -> Result<Vec<u8>, QuarantineError> {
        std::fs::read(self.path(id, "eml")?).map_err(|e| not_found(id, e))
    }

    pub fn delete(&self, id: &str) -> Result<(), QuarantineError> {
        std::fs::remove_file(self.path(id, "json")?).map_err(|e| not_found(id, e))?;
        let _ = std::fs::remove_file(self.path(id, "eml")?);
        Ok(())
    }

    /// Delivers a quarantined message to the next hop, then deletes it.
    /// Fails (and keeps the message) unless every recipient is accepted.
    pub async fn release(&self, id: &str, transport: &dyn Transport) -> Result<Entry, QuarantineError> {
        let entry = self.entry(id)?;
        let body = self.body(id)?;
        let mut env = entry.envelope.clone();
        env.scan_pending = false;
        let idx: Vec<usize> = (0..env.rcpts.len()).collect();
        let results = transport.deliver(&env, &idx, &body).await;
        let failed: Vec<String> = results
            .iter()
            .zip(&env.rcpts)
            .filter_map(|(r, rcpt)| match r {
                RcptStatus::Delivered(_) => None,
                RcptStatus::Temporary(h) | RcptStatus::Permanent(h) => Some(format!("{}: {h}", rcpt.addr)),
            })
            .collect();
        if !failed.is_empty() || results.len() != env.rcpts.len() {
            return Err(QuarantineError::Release(id.to_string(), failed.join("; ")));
        }
        self.delete(id)?;
        Ok(entry)
    }
}

fn not_found(id: &str, e: std::io::Error) -> QuarantineError {
    if e.kind() == std::io::ErrorKind::NotFound {
        QuarantineError::NotFound(id.to_string())
    } else {
        QuarantineError::Io(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(id: &str) -> Envelope {
        use crate::mail::envelope::Recipient;
        use crate::proto::address::parse_mailbox;
        Envelope {
            id: id.into(),
            received_at: 1,
            client_ip: "192.0.2.1".parse().unwrap(),
            helo: "c.example".into(),
            mail_from: None,
            body: Default::default(),
            smtputf8: false,
            ret: None,
            envid: None,
            scan_pending: true,
            client_name: None,
            esmtp: false,
            generated: None,
            rcpts: vec![Recipient {
                addr: parse_mailbox("u@example.com").unwrap(),
                notify: None,
                orcpt: None,
            }],
        }
    }

    #[test]
    fn put_list_show_delete() {
        let dir = tempfile::tempdir().unwrap();
        let q = Quarantine::new(dir.path().join("q"));
        assert!(
            q.list().unwrap().is_empty(),
            "a missing directory is an empty quarantine"
        );
        assert_eq!(q.stats().unwrap(), QuarantineStats::default());
        let virus = Cause::Virus("Eicar".into());
        q.put(&env("A1"), &virus, b"Subject: x\r\n\r\nbody\r\n").unwrap();
        let banned = Cause::Content(crate::events::ContentKind::Banned, "banned name".into());
        q.put(&env("B2"), &banned, b"m2").unwrap();
        let ids: Vec<_> = q.list().unwrap().into_iter().map(|e| e.id).collect();
        assert_eq!(ids.len(), 2);
        let st = q.stats().unwrap();
        assert_eq!((st.messages, st.bytes), (2, 20 + 2), "{st:?}");
        let now = crate::mail::date::now_secs();
        assert!(st.oldest.is_some_and(|t| t + 60 > now && t <= now), "{st:?}");
        assert!(ids.contains(&"A1".to_string()) && ids.contains(&"B2".to_string()));
        assert_eq!(q.entry("A1").unwrap().reason, virus);
        let text = std::fs::read_to_string(dir.path().join("q/A1.json")).unwrap();
        assert!(
            text.contains("\"reason\": \"virus found: Eicar\""),
            "the text as before: {text}"
        );
        assert_eq!(q.body("A1").unwrap(), b"Subject: x\r\n\r\nbody\r\n");
        q.delete("A1").unwrap();
        assert!(matches!(q.entry("A1"), Err(QuarantineError::NotFound(_))));
        assert!(matches!(q.delete("A1"), Err(QuarantineError::NotFound(_))));
        assert_eq!(q.list().unwrap().len(), 1);
    }

    #[test]
    fn ids_cannot_escape_the_directory() {
        let q = Quarantine::new("/tmp/nowhere");
        for bad in ["../etc/passwd", "a/b", "", ".hidden", "x\0y"] {
            assert!(matches!(q.entry(bad), Err(QuarantineError::BadId(_))), "{bad:?}");
        }
    }
}
