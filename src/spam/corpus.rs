//! Training mail as users keep it: a Maildir (`cur/` and `new/`), a
//! directory of files (one message each), an mbox file (messages split at
//! `From ` lines, `>From ` unquoted), a single message file, or `-`
//! (standard input: one message, or an mbox when it starts with `From `).
//! This is what `sluice learn` reads, so a Dovecot IMAPSieve script can
//! pipe one message to it.

use std::io::Read as _;
use std::path::{Path, PathBuf};

/// Every message under `path`, in a stable order (files sorted by name).
pub fn read_messages(path: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    each_message(path, |raw| {
        out.push(raw);
        Ok(())
    })?;
    Ok(out)
}

/// Gives `f` every message under `path` in turn, in [`read_messages`]'s
/// order, holding one file's messages at a time: a Maildir of a hundred
/// thousand messages is not read into memory at once.
pub fn each_message(path: &Path, mut f: impl FnMut(Vec<u8>) -> std::io::Result<()>) -> std::io::Result<()> {
    if path == Path::new("-") {
        let mut raw = Vec::new();
        std::io::stdin().lock().read_to_end(&mut raw)?;
        return split_mbox(raw).into_iter().try_for_each(f);
    }
    if path.is_dir() {
        for file in message_paths(path)? {
            split_mbox(std::fs::read(&file)?).into_iter().try_for_each(&mut f)?;
        }
        return Ok(());
    }
    split_mbox(std::fs::read(path)?).into_iter().try_for_each(f)
}

/// The message files of a directory: a Maildir's `cur/` and `new/` (its
/// `tmp/` holds mail still being written), else its own files.
pub fn message_paths(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let (cur, new) = (dir.join("cur"), dir.join("new"));
    if cur.is_dir() || new.is_dir() {
        let mut files = Vec::new();
        for d in [cur, new].iter().filter(|d| d.is_dir()) {
            files.extend(super::message_files(d)?);
        }
        return Ok(files);
    }
    super::message_files(dir)
}

/// One message, or the messages of an mbox (text starting with `From `).
fn split_mbox(raw: Vec<u8>) -> Vec<Vec<u8>> {
    if !raw.starts_with(b"From ") {
        return if raw.is_empty() { Vec::new() } else { vec![raw] };
    }
    let mut out = Vec::new();
    let mut cur: Option<Vec<u8>> = None;
    for line in raw.split_inclusive(|b| *b == b'\n') {
        if line.starts_with(b"From ") {
            out.extend(cur.take().filter(|m| !m.is_empty()));
            cur = Some(Vec::new());
            continue;
        }
        let m = cur.get_or_insert_with(Vec::new);
        // mboxrd: ">From " (and ">>From ") lose one '>'.
        let quoted = line.iter().take_while(|b| **b == b'>').count();
        if quoted > 0 && line[quoted..].starts_with(b"From ") {
            m.extend_from_slice(&line[1..]);
        } else {
            m.extend_from_slice(line);
        }
    }
    out.extend(cur.filter(|m| !m.is_empty()));
    // The blank line that separates messages belongs to none of them.
    for m in &mut out {
        if m.ends_with(b"\n\n") {
            m.pop();
        } else if m.ends_with(b"\r\n\r\n") {
            m.truncate(m.len() - 2);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mbox_is_split_at_from_lines_and_unquoted() {
        let mbox = b"From a@x Mon Dec  7 10:00:00 2026\nSubject: one\n\n>From the start\nbody\n\nFrom b@x Mon Dec  7 10:01:00 2026\nSubject: two\n\n>>From quoted twice\n".to_vec();
        let got = split_mbox(mbox);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], b"Subject: one\n\nFrom the start\nbody\n");
        assert_eq!(got[1], b"Subject: two\n\n>From quoted twice\n");
        assert_eq!(
            split_mbox(b"Subject: x\n\nFrom here on\n".to_vec()).len(),
            1,
            "a message, not an mbox"
        );
        assert!(split_mbox(Vec::new()).is_empty());
    }

    #[test]
    fn a_maildir_is_read_from_cur_and_new_but_not_tmp() {
        let d = tempfile::tempdir().unwrap();
        for (sub, name) in [("cur", "1:2,S"), ("new", "2"), ("tmp", "3")] {
            std::fs::create_dir_all(d.path().join(sub)).unwrap();
            std::fs::write(d.path().join(sub).join(name), format!("Subject: {sub}\n\nx\n")).unwrap();
        }
        let got = read_messages(d.path()).unwrap();
        assert_eq!(
            got,
            vec![b"Subject: cur\n\nx\n".to_vec(), b"Subject: new\n\nx\n".to_vec()]
        );
        // A plain directory: its files.
        let got = read_messages(&d.path().join("tmp")).unwrap();
        assert_eq!(got, vec![b"Subject: tmp\n\nx\n".to_vec()]);
    }
}
