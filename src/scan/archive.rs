//! Opening archives for the banned-name check: the entry names inside zip
//! (also nested and behind a self-extractor stub), RAR 4 and 5 (block
//! headers read by hand, [`rar`]), 7z, tar (ustar, GNU, pax, v7), gzip
//! (its stored name and the inner tar, every member), bzip2, xz, cab and
//! ISO 9660 disk images ([`iso`]), so a banned name is found wherever clamd
//! would not look.
//!
//! The members of zip (stored, deflate, Deflate64, bzip2, LZMA, xz, PPMd),
//! tar, gz, bz2, xz, 7z (LZMA, LZMA2, PPMd, BZip2, Deflate, copy) and ISO
//! images, and RAR files stored uncompressed, are unpacked and a member
//! that itself looks like an archive is opened again, to
//! `scan.archive_max_depth`; compressed RAR files and cab are listed only
//! (left to clamd; a compressed RAR is unscannable unless
//! `scan.scanner_unrar` says clamd has unRAR). Other
//! members are kept for the virus scanner up to
//! `scan.archive_member_scan_size`, else streamed through. Every octet
//! unpacked counts against
//! `scan.archive_max_size` and every entry against
//! `scan.archive_max_entries`, for all the archives of one message
//! together; a bomb stops at the limit and is reported, never inflated.
//!
//! What cannot be looked into is reported as [`Unscannable`] for the
//! `scan.unscannable` policy: an encrypted archive (zip, RAR, 7z), an
//! archive format that neither sluice nor clamd opens (ACE, LHA/LZH, ZOO,
//! StuffIt, RAR 1.x, a zip member in Zstandard) or a damaged one, and
//! anything past the limits. Pure
//! functions over bytes: no panics on any input.

mod iso;
mod rar;
mod streams;
mod zip_members;

use streams::Concatenated;

pub use iso::build as iso_build;
pub use rar::build as rar_build;

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

pub use crate::config::scan::ArchiveLimits;
pub use crate::events::{Unscannable, UnscannableKind};

/// Octets of a member read to decide whether it is an archive: up to an
/// ISO 9660 image's first volume descriptor, 32 KiB in.
const HEAD: usize = iso::HEAD;
/// How far into a blob a RAR signature is looked for (self-extractors).
const RAR_SFX: usize = 1 << 20;
/// Memory 7z header decoding may use (KiB).
const SEVENZ_MEM_KB: usize = 64 * 1024;

/// The archive formats we recognise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Zip,
    /// At the offset of its signature (a self-extractor has a stub first).
    Rar(usize),
    SevenZ,
    Tar,
    Gzip,
    Bzip2,
    Xz,
    Cab,
    /// An ISO 9660 disk image.
    Iso,
    /// A format neither sluice nor clamd opens.
    Unknown(&'static str),
}

/// What the archives of one message hold.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Listing {
    /// Entry names, every archive and nesting level together.
    pub names: Vec<String>,
    /// Archives opened.
    pub archives: usize,
    /// The first thing that could not be looked into.
    pub unscannable: Option<Unscannable>,
    /// Unpacked members that are not archives themselves, whole, up to
    /// `keep_members` octets together: for the virus scanner, which then
    /// sees them even where it cannot open (or stops descending into) the
    /// archives they came from.
    pub members: Vec<Vec<u8>>,
}

/// Lists the archives among `blobs` (the decoded parts of one message),
/// sharing one budget of entries and unpacked octets.
pub fn list<'a>(blobs: impl IntoIterator<Item = &'a [u8]>, limits: &ArchiveLimits) -> Listing {
    let mut w = Walk {
        limits,
        budget: Rc::new(Budget {
            left: Cell::new(limits.max_size),
            hit: Cell::new(false),
        }),
        out: Listing::default(),
        kept: 0,
    };
    for blob in blobs {
        if w.stop() {
            break;
        }
        w.blob(blob, 0);
    }
    w.out
}

/// Lists one blob (the fuzz target's entry point, `sluice scan`).
pub fn list_one(data: &[u8], limits: &ArchiveLimits) -> Listing {
    list([data], limits)
}

/// What `data` is, by its first octets.
pub fn detect(data: &[u8]) -> Option<Format> {
    let at = |off: usize, m: &[u8]| data.get(off..).is_some_and(|d| d.starts_with(m));
    if at(0, b"PK\x03\x04") || at(0, b"PK\x05\x06") || at(0, b"PK\x07\x08") {
        return Some(Format::Zip);
    }
    if let Some(off) = rar::find(data, 0) {
        return Some(Format::Rar(off));
    }
    if at(0, b"7z\xbc\xaf\x27\x1c") {
        return Some(Format::SevenZ);
    }
    if at(0, b"\x1f\x8b\x08") {
        return Some(Format::Gzip);
    }
    if at(0, b"BZh")
        && data.get(3).is_some_and(|b| (b'1'..=b'9').contains(b))
        && (at(4, b"1AY&SY") || at(4, b"\x17\x72\x45\x38\x50\x90"))
    {
        return Some(Format::Bzip2);
    }
    if at(0, b"\xfd7zXZ\x00") {
        return Some(Format::Xz);
    }
    if at(0, b"MSCF\0\0\0\0") {
        return Some(Format::Cab);
    }
    if is_tar(data) {
        return Some(Format::Tar);
    }
    if iso::is_iso(data) {
        return Some(Format::Iso);
    }
    let unknown = if at(7, b"**ACE**") {
        "ACE"
    } else if at(2, b"-lh") && data.get(6) == Some(&b'-') || at(2, b"-lz") && data.get(6) == Some(&b'-') {
        "LHA/LZH"
    } else if at(0, b"ZOO ") && at(20, b"\xdc\xa7\xc4\xfd") {
        "ZOO"
    } else if at(0, b"SIT!") || at(0, b"StuffIt (c)") {
        "StuffIt"
    } else if at(0, b"RE~^") {
        "RAR 1.x"
    } else {
        return None;
    };
    Some(Format::Unknown(unknown))
}

/// A tar header block: "ustar" magic, or a valid v7 header checksum.
fn is_tar(data: &[u8]) -> bool {
    let Some(h) = data.get(..512) else {
        return false;
    };
    if &h[257..262] == b"ustar" {
        return true;
    }
    let digits: Vec<u8> = h[148..156]
        .iter()
        .copied()
        .skip_while(|b| *b == b' ')
        .take_while(|b| (b'0'..=b'7').contains(b))
        .collect();
    if digits.is_empty() || h[0] == 0 {
        return false;
    }
    let stored = digits
        .iter()
        .fold(0u32, |a, &d| a.wrapping_mul(8).wrapping_add(u32::from(d - b'0')));
    let sum: u32 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u32::from(b) })
        .sum();
    stored == sum
}

/// Unpacked octets left for the message; `hit` once a read wanted more.
struct Budget {
    left: Cell<u64>,
    hit: Cell<bool>,
}

/// A reader of unpacked data that stops at the budget.
struct Counted<R> {
    inner: R,
    budget: Rc<Budget>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.budget.left.get();
        let cap = buf
            .len()
            .min(usize::try_from(left.saturating_add(1)).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..cap])?;
        if n as u64 > left {
            self.budget.left.set(0);
            self.budget.hit.set(true);
            return Err(io::Error::other("past the unpacked size limit"));
        }
        self.budget.left.set(left - n as u64);
        Ok(n)
    }
}

struct Walk<'l> {
    limits: &'l ArchiveLimits,
    budget: Rc<Budget>,
    out: Listing,
    /// Octets in `out.members`.
    kept: u64,
}

impl Walk<'_> {
    fn counted<R: Read>(&self, inner: R) -> Counted<R> {
        Counted {
            inner,
            budget: self.budget.clone(),
        }
    }

    /// Past a limit: nothing more is opened.
    fn stop(&self) -> bool {
        matches!(&self.out.unscannable, Some(u) if u.kind == UnscannableKind::PastLimits)
    }

    fn unscannable(&mut self, kind: UnscannableKind, what: String) {
        // Past-limits wins over the rest: it stops the walk.
        let replace = match &self.out.unscannable {
            None => true,
            Some(u) => kind == UnscannableKind::PastLimits && u.kind != UnscannableKind::PastLimits,
        };
        if replace {
            self.out.unscannable = Some(Unscannable { kind, what });
        }
    }

    fn past(&mut self, what: String) {
        self.unscannable(UnscannableKind::PastLimits, what);
    }

    /// Adds an entry name; false when past the entry limit.
    fn name(&mut self, name: String) -> bool {
        if self.out.names.len() >= self.limits.max_entries {
            let max = self.limits.max_entries;
            self.past(format!("more than {max} archive entries"));
            return false;
        }
        let name: String = name.chars().filter(|c| !c.is_control()).collect();
        self.out.names.push(name);
        true
    }

    /// After an unpacking error: past the size limit, or damaged.
    fn failed(&mut self, format: &str, e: &io::Error) {
        if self.budget.hit.get() {
            let max = self.limits.max_size;
            self.past(format!("more than {max} octets unpacked from archives"));
        } else if !self.stop() {
            self.unscannable(UnscannableKind::Unknown, format!("damaged {format} archive: {e}"));
        }
    }

    /// Opens `data` if it is an archive; `depth` archives enclose it.
    fn blob(&mut self, data: &[u8], depth: usize) {
        let Some(format) = detect(data) else {
            // A RAR self-extractor (a Windows program with the archive
            // after it): its names, leniently (the stub is banned as an
            // executable anyway). Only programs are searched: cheap.
            let sfx = data.starts_with(b"MZ") && depth < self.limits.max_depth;
            if sfx && let Some(off) = rar::find(data, RAR_SFX) {
                self.out.archives += 1;
                let max = self.limits.max_entries.saturating_add(1);
                for n in rar::list(&data[off..], max).map(|l| l.names).unwrap_or_default() {
                    if !self.name(n) {
                        return;
                    }
                }
            }
            return;
        };
        if self.stop() {
            return;
        }
        if depth >= self.limits.max_depth {
            let max = self.limits.max_depth;
            self.past(format!("archives nested deeper than {max}"));
            return;
        }
        self.out.archives += 1;
        match format {
            Format::Zip => self.zip(data, depth),
            Format::Rar(off) => self.rar(&data[off..], depth),
            Format::SevenZ => self.sevenz(data, depth),
            Format::Cab => self.cab(data),
            Format::Iso => self.iso(data, depth),
            Format::Tar => {
                let r = self.counted(data);
                if let Err(e) = self.tar(r, depth) {
                    self.failed("tar", &e);
                }
            }
            Format::Gzip => {
                let gz = Concatenated::<flate2::bufread::GzDecoder<&[u8]>>::new(data);
                if let Some(name) = gz.name() {
                    self.name(name);
                }
                let mut r = self.counted(gz);
                if let Err(e) = self.member(&mut r, depth + 1) {
                    self.failed("gzip", &e);
                }
            }
            Format::Bzip2 => {
                let bz = Concatenated::<bzip2::bufread::BzDecoder<&[u8]>>::new(data);
                let mut r = self.counted(bz);
                if let Err(e) = self.member(&mut r, depth + 1) {
                    self.failed("bzip2", &e);
                }
            }
            Format::Xz => {
                let mut r = self.counted(lzma_rust2::XzReader::new_mem_limit(data, true, 64 * 1024));
                if let Err(e) = self.member(&mut r, depth + 1) {
                    self.failed("xz", &e);
                }
            }
            Format::Unknown(what) => self.unscannable(
                UnscannableKind::Unknown,
                format!("{what} archive (neither sluice nor clamd opens it)"),
            ),
        }
    }

    /// One member's unpacked data: opened when it looks like an archive
    /// (then kept in memory), else read through and counted.
    fn member(&mut self, r: &mut dyn Read, depth: usize) -> io::Result<()> {
        // Grown as read: most members are far smaller than HEAD (32 KiB).
        let mut head = Vec::new();
        let read = r.take(HEAD as u64).read_to_end(&mut head);
        if let Err(e) = read {
            self.opened_before(&head, depth);
            return Err(e);
        }
        if detect(&head).is_none() {
            // Kept whole for the scanner while there is room, else read
            // through (and counted) only.
            let room = self.limits.keep_members.saturating_sub(self.kept);
            if !head.is_empty() && head.len() as u64 <= room {
                let more = room - head.len() as u64;
                r.take(more.saturating_add(1)).read_to_end(&mut head)?;
                if head.len() as u64 <= room {
                    self.kept += head.len() as u64;
                    self.out.members.push(head);
                    return Ok(());
                }
            }
            io::copy(r, &mut io::sink())?;
            return Ok(());
        }
        let read = r.read_to_end(&mut head);
        if let Err(e) = read {
            self.opened_before(&head, depth);
            return Err(e);
        }
        self.blob(&head, depth);
        Ok(())
    }

    /// A member whose unpacking failed part way (a damaged or cut stream,
    /// or the size limit): an archive in what did unpack is still opened,
    /// so the names before the damage are checked. The caller reports the
    /// failure.
    fn opened_before(&mut self, partial: &[u8], depth: usize) {
        if !self.budget.hit.get() && detect(partial).is_some() {
            self.blob(partial, depth);
        }
    }

    fn tar<R: Read>(&mut self, r: R, depth: usize) -> io::Result<()> {
        let mut archive = tar::Archive::new(r);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            if !self.name(name) {
                return Ok(());
            }
            if entry.header().entry_type().is_file() {
                self.member(&mut entry, depth + 1)?;
            }
            if self.stop() {
                return Ok(());
            }
        }
        Ok(())
    }

    /// The names of an archive read by hand, then its members at `ranges`
    /// of `data`; false when a limit stopped it.
    fn names_and_members(
        &mut self,
        data: &[u8],
        names: Vec<String>,
        ranges: Vec<std::ops::Range<usize>>,
        format: &str,
        depth: usize,
    ) -> bool {
        for n in names {
            if !self.name(n) {
                return false;
            }
        }
        for range in ranges {
            if self.stop() {
                return false;
            }
            let mut r = self.counted(&data[range]);
            if let Err(e) = self.member(&mut r, depth + 1) {
                self.failed(format, &e);
            }
        }
        true
    }

    fn rar(&mut self, data: &[u8], depth: usize) {
        let max = self.limits.max_entries.saturating_add(1);
        let Some(l) = rar::list(data, max) else { return };
        // Files stored uncompressed are read as they are (no unRAR): an
        // archive inside is opened, a file kept for the scanner.
        if !self.names_and_members(data, l.names, l.stored, "rar", depth) {
            return;
        }
        if l.encrypted {
            self.unscannable(
                UnscannableKind::Encrypted,
                format!("encrypted RAR {} archive", l.version),
            );
        } else if l.damaged {
            self.unscannable(UnscannableKind::Unknown, format!("damaged RAR {} archive", l.version));
        } else if l.unread && self.limits.compressed_rar_unscannable {
            // Nobody would look inside: sluice has no unRAR, and the
            // scanner has none either (`scan.scanner_unrar`).
            self.unscannable(
                UnscannableKind::Unknown,
                format!("compressed RAR {} archive (no unRAR)", l.version),
            );
        }
    }

    fn sevenz(&mut self, data: &[u8], depth: usize) {
        let empty = sevenz_rust2::Password::empty();
        let reader = sevenz_rust2::ArchiveReader::new_with_memory_limit(io::Cursor::new(data), empty, SEVENZ_MEM_KB);
        let mut reader = match reader {
            Ok(r) => r,
            Err(sevenz_rust2::Error::PasswordRequired) => {
                self.unscannable(UnscannableKind::Encrypted, "encrypted 7z archive (names hidden)".into());
                return;
            }
            Err(sevenz_rust2::Error::UnsupportedCompressionMethod(m)) if m.to_ascii_uppercase().contains("AES") => {
                self.unscannable(UnscannableKind::Encrypted, "encrypted 7z archive (names hidden)".into());
                return;
            }
            Err(e) => {
                self.unscannable(UnscannableKind::Unknown, format!("damaged 7z archive: {e}"));
                return;
            }
        };
        reader.set_thread_count(1);
        let a = reader.archive();
        let encrypted = (0..a.files.len()).any(|i| a.is_file_encrypted(i));
        for f in &a.files {
            if !self.name(f.name().to_string()) {
                return;
            }
        }
        if encrypted {
            self.unscannable(UnscannableKind::Encrypted, "encrypted 7z archive".into());
            return;
        }
        // The contents, for archives inside. Every octet goes through the
        // budget (a member is read to its end here, so the reader has
        // nothing left to drain unbounded). A method we do not unpack
        // (Zstandard, Brotli, LZ4: 7-Zip forks only) or a dictionary past the memory
        // limit ends the walk quietly: the names were checked, clamd
        // unpacks the rest.
        let mut failed = None;
        let _ = reader.for_each_entries_with_decision(|entry, r| {
            if self.stop() {
                return Ok(sevenz_rust2::EntryDecision::Stop);
            }
            if entry.is_directory() || !entry.has_stream {
                return Ok(sevenz_rust2::EntryDecision::Continue);
            }
            let mut r = self.counted(r);
            match self.member(&mut r, depth + 1) {
                Ok(()) => Ok(sevenz_rust2::EntryDecision::Continue),
                Err(e) => {
                    failed = Some(e);
                    Ok(sevenz_rust2::EntryDecision::Stop)
                }
            }
        });
        if failed.is_some() && self.budget.hit.get() {
            let max = self.limits.max_size;
            self.past(format!("more than {max} octets unpacked from archives"));
        }
    }

    /// The files of a disk image: names from every tree, each file's data
    /// opened or kept like any member.
    fn iso(&mut self, data: &[u8], depth: usize) {
        let Some(l) = iso::list(data, self.limits.max_entries.saturating_add(1)) else {
            return;
        };
        if !self.names_and_members(data, l.names, l.files, "ISO 9660", depth) {
            return;
        }
        if l.damaged {
            self.unscannable(UnscannableKind::Unknown, "damaged ISO 9660 image".into());
        }
    }

    /// Names only: the cab crate indexes out of bounds reading the
    /// contents of a doctored cabinet (a file past its folder's data), so
    /// the contents are left to clamd.
    fn cab(&mut self, data: &[u8]) {
        match cab::Cabinet::new(io::Cursor::new(data)) {
            Ok(c) => {
                for folder in c.folder_entries() {
                    for f in folder.file_entries() {
                        if !self.name(f.name().to_string()) {
                            return;
                        }
                    }
                }
            }
            Err(e) => self.unscannable(UnscannableKind::Unknown, format!("damaged cab archive: {e}")),
        }
    }
}

#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;
