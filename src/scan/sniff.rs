//! Content sniffing for the banned-attachment policy: what a blob really is by
//! its magic bytes ([`sniff`]), the entry names of a zip archive even when it is
//! truncated or its two directories disagree ([`zip_entries`]), and the
//! extension Windows would act on ([`extension`]). Pure functions over bytes:
//! no panics on any input, linear time.

use std::collections::{HashMap, HashSet};

/// Magic bytes at the start, checked in order.
const MAGICS: &[(&[&[u8]], &str)] = &[
    (&[b"\x7fELF"], "elf"),
    (&[b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"], "zip"),
    (&[b"Rar!\x1a\x07"], "rar"),
    (&[b"7z\xbc\xaf\x27\x1c"], "7z"),
    (&[b"\x1f\x8b"], "gz"),
    (&[b"\xfd7zXZ\x00"], "xz"),
    (&[b"MSCF"], "cab"),
    (&[b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"], "ole"),
    (&[b"\xca\xfe\xba\xbe"], "class"),
    (&[b"L\x00\x00\x00\x01\x14\x02\x00"], "lnk"),
    (&[b"{\\rtf"], "rtf"),
    (
        &[
            b"\xfe\xed\xfa\xce",
            b"\xfe\xed\xfa\xcf",
            b"\xce\xfa\xed\xfe",
            b"\xcf\xfa\xed\xfe",
        ],
        "macho",
    ),
    (&[b"#!"], "sh"),
];

/// Each starts with '<' (`sniff` looks only where one is).
const HTML_TAGS: [&[u8]; 3] = [b"<html", b"<!doctype html", b"<script"];

/// The canonical file extension for what `data` really is, judged by magic
/// bytes, or None when unknown or plain. `CAFEBABE` answers "class" (a Mach-O
/// fat binary shares it; both are executable). Any `MZ` start answers "exe":
/// a PE image has `PE\0\0` at the offset stored at 0x3c, but a bare DOS `MZ`
/// image runs too, and a damaged PE header must not let a file pass.
pub fn sniff(data: &[u8]) -> Option<&'static str> {
    if data.starts_with(b"MZ") {
        return Some("exe");
    }
    if let Some(&(_, kind)) = MAGICS
        .iter()
        .find(|(magics, _)| magics.iter().any(|m| data.starts_with(m)))
    {
        return Some(kind);
    }
    if [0x8001, 0x8801, 0x9001].iter().any(|&off| at(data, off, b"CD001")) {
        return Some("iso");
    }
    if data.starts_with(b"BZh") && data.get(3).is_some_and(|b| (b'1'..=b'9').contains(b)) {
        return Some("bz2");
    }
    if data.get(..1024).unwrap_or(data).windows(4).any(|w| w == b"%PDF") {
        return Some("pdf");
    }
    let text = data.strip_prefix(b"\xef\xbb\xbf").unwrap_or(data);
    let start = text.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(text.len());
    let text = text.get(start..).unwrap_or_default();
    // Every tag starts with '<': only those places are compared.
    let html = memchr::memchr_iter(b'<', &text[..text.len().min(512)]).any(|i| {
        HTML_TAGS
            .iter()
            .any(|tag| text.get(i..i + tag.len()).is_some_and(|w| w.eq_ignore_ascii_case(tag)))
    });
    html.then_some("html")
}

/// The entry names of a zip archive and whether any entry is encrypted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZipListing {
    pub names: Vec<String>,
    pub encrypted: bool,
}

/// Names of the entries of a zip archive, from BOTH the central directory
/// (found via the end-of-central-directory record in the last 64 KiB + 22
/// bytes; zip64 and prepended data such as a self-extractor stub handled) AND a
/// forward scan for local and central headers, so a truncated or doctored
/// archive still yields its names. Info-ZIP Unicode path extra fields count as
/// names too. The forward scan skips each entry's data when its size is known
/// and ends at a plausible header, so a stored nested zip's names are not
/// listed (recursion is the caller's job); where a size is unknown (streamed
/// entry without a directory) or implausible it scans inside the data, erring
/// towards listing too much. Deduplicated, in order of first appearance, at
/// most `max_names`, lossy UTF-8, paths kept as stored. `encrypted` is set if
/// any entry has general-purpose bit 0, even beyond `max_names`.
pub fn zip_entries(data: &[u8], max_names: usize) -> ZipListing {
    let mut out = Names::default();
    let (mut central, mut sizes) = (Vec::new(), HashMap::new());
    let dir = central_dir(data);
    if let Some((mut p, shift, _)) = dir {
        while let Some(h) = entry(data, p).filter(|h| h.central) {
            // Compressed size by the absolute offset of the local header.
            if let Some(key) = h.offset.checked_add_signed(shift) {
                sizes.insert(key, h.size);
            }
            p = h.end;
            central.push(h);
        }
    }
    let mut nested_dir = false;
    let mut p = 0;
    while let Some(i) = data
        .get(p..)
        .and_then(|d| d.windows(4).position(|w| w == b"PK\x03\x04" || w == b"PK\x01\x02"))
    {
        let i = p + i;
        p = i + 4;
        let Some(h) = entry(data, i) else { continue };
        out.list.encrypted |= h.flags & 1 == 1;
        out.add(max_names, h.name, h.extra);
        p = h.end;
        if h.central {
            continue;
        }
        let size = sizes.get(&(i as u64)).copied().unwrap_or(h.size);
        if let Some(next) = usize::try_from(size).ok().and_then(|s| h.end.checked_add(s))
            && size > 0
            && [0, 12, 16, 20, 24]
                .iter()
                .any(|d| plausible(data, next.saturating_add(*d)))
        {
            p = next;
            // A directory inside an entry's data belongs to a nested archive.
            nested_dir |= dir.is_some_and(|(_, _, eocd)| (h.end..next).contains(&eocd));
        }
    }
    for h in central.into_iter().filter(|_| !nested_dir) {
        out.list.encrypted |= h.flags & 1 == 1;
        out.add(max_names, h.name, h.extra);
    }
    out.list
}

/// A local or central file header.
struct Entry<'a> {
    central: bool,
    flags: u64,
    /// Compressed size.
    size: u64,
    /// Local header offset as stored (central), or the header's own (local).
    offset: u64,
    name: &'a [u8],
    extra: &'a [u8],
    /// Where the header ends: the entry's data (local), the next header (central).
    end: usize,
}

/// The local (`PK\x03\x04`) or central (`PK\x01\x02`) header at `i`.
fn entry(data: &[u8], i: usize) -> Option<Entry<'_>> {
    let central = at(data, i, b"PK\x01\x02");
    if !central && !at(data, i, b"PK\x03\x04") {
        return None;
    }
    // A central header has "version made by" first; the common fields follow 2 bytes later.
    let k = if central { i + 2 } else { i };
    let f = |off: usize, n: usize| le(data, k + off, n);
    let (flags, mut size, mut plain) = (f(6, 2)?, f(18, 4)?, f(22, 4)?);
    let (n, e) = (f(26, 2)? as usize, f(28, 2)? as usize);
    let (c, mut offset, name_at) = if central {
        (f(30, 2)? as usize, f(40, 4)?, i + 46)
    } else {
        (0, 0, i + 30)
    };
    let name = data.get(name_at..name_at + n)?;
    let extra = data.get(name_at + n..name_at + n + e)?;
    zip64(
        extra,
        &mut [&mut plain, &mut size, &mut offset][..if central { 3 } else { 2 }],
    );
    let offset = if central { offset } else { i as u64 };
    Some(Entry {
        central,
        flags,
        size,
        offset,
        name,
        extra,
        end: name_at + n + e + c,
    })
}

/// Deduplicating name collector.
#[derive(Default)]
struct Names {
    list: ZipListing,
    seen: HashSet<String>,
}

impl Names {
    /// Adds a header name and any Info-ZIP Unicode path (0x7075) in `extra`,
    /// up to `max` names in all.
    fn add(&mut self, max: usize, name: &[u8], extra: &[u8]) {
        let unicode = extra_fields(extra)
            .filter(|&(id, _)| id == 0x7075)
            .filter_map(|(_, b)| b.get(5..));
        for raw in std::iter::once(name).chain(unicode) {
            if raw.is_empty() || self.list.names.len() >= max {
                continue;
            }
            let name = String::from_utf8_lossy(raw).into_owned();
            if self.seen.insert(name.clone()) {
                self.list.names.push(name);
            }
        }
    }
}

/// Locates the central directory: the offset of its first header, the shift
/// to add to stored offsets (non-zero when data was prepended), and the offset
/// of the end-of-central-directory record.
fn central_dir(data: &[u8]) -> Option<(usize, i64, usize)> {
    let last = data.len().checked_sub(22)?;
    for pos in (last.saturating_sub(0xffff)..=last).rev() {
        if !at(data, pos, b"PK\x05\x06") {
            continue;
        }
        let (Some(mut size), Some(mut off)) = (le(data, pos + 12, 4), le(data, pos + 16, 4)) else {
            continue;
        };
        let mut end = pos; // where the directory ends
        let locator = pos.checked_sub(20).filter(|&l| at(data, l, b"PK\x06\x07"));
        if let Some(locator) = locator.filter(|_| size == 0xffff_ffff || off == 0xffff_ffff) {
            let declared = le(data, locator + 8, 8).and_then(|z| usize::try_from(z).ok());
            let z = declared.filter(|&z| at(data, z, b"PK\x06\x06")).or(pos.checked_sub(76));
            if let Some(z) = z.filter(|&z| at(data, z, b"PK\x06\x06")) {
                (size, off, end) = (
                    le(data, z + 40, 8).unwrap_or(size),
                    le(data, z + 48, 8).unwrap_or(off),
                    z,
                );
            }
        }
        let implied = usize::try_from(size).ok().and_then(|s| end.checked_sub(s));
        let declared = usize::try_from(off).ok();
        if let Some(start) = [declared, implied]
            .into_iter()
            .flatten()
            .find(|&s| at(data, s, b"PK\x01\x02"))
        {
            return Some((start, (start as i64).wrapping_sub(off as i64), pos));
        }
    }
    None
}

/// Whether a skipped-to position looks like the end of an entry's data.
fn plausible(data: &[u8], pos: usize) -> bool {
    pos == data.len()
        || (at(data, pos, b"PK")
            && matches!(
                data.get(pos + 2..pos + 4),
                Some(b"\x01\x02" | b"\x03\x04" | b"\x05\x06" | b"\x06\x06" | b"\x07\x08")
            ))
}

/// Replaces each 0xFFFFFFFF field, in order, by the next value of the zip64
/// extra field (0x0001).
fn zip64(extra: &[u8], fields: &mut [&mut u64]) {
    let Some((_, z)) = extra_fields(extra).find(|&(id, _)| id == 1) else {
        return;
    };
    let mut i = 0;
    for f in fields.iter_mut().filter(|f| ***f == 0xffff_ffff) {
        if let Some(v) = le(z, i, 8) {
            **f = v;
        }
        i += 8;
    }
}

/// The (id, body) pairs of a zip extra field block.
fn extra_fields(extra: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut p = 0;
    std::iter::from_fn(move || {
        let id = le(extra, p, 2)? as u16;
        let len = le(extra, p + 2, 2)? as usize;
        let body = extra.get(p + 4..p + 4 + len)?;
        p += 4 + len;
        Some((id, body))
    })
}

/// Whether `magic` occurs at `off`.
fn at(data: &[u8], off: usize, magic: &[u8]) -> bool {
    data.get(off..).is_some_and(|d| d.starts_with(magic))
}

/// A little-endian integer of `n` (at most 8) bytes at `off`.
fn le(data: &[u8], off: usize, n: usize) -> Option<u64> {
    let bytes = data.get(off..off.checked_add(n)?)?;
    Some(bytes.iter().rev().fold(0, |acc, &b| (acc << 8) | u64::from(b)))
}

/// The lowercased final extension of a file name, as Windows sees it:
/// trailing whitespace, dots, NULs and control characters are stripped, then
/// any directory part (`/` or `\`). None when there is none or it is longer
/// than 16 characters.
pub fn extension(name: &str) -> Option<String> {
    let name = name.trim_end_matches(|c: char| c.is_whitespace() || c.is_control() || c == '.');
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let (_, ext) = base.rsplit_once('.')?;
    (!ext.is_empty() && ext.chars().count() <= 16).then(|| ext.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored-only zip: (local name, central name, data, flags) per entry.
    /// Returns the archive and the offset of its central directory.
    fn zip(entries: &[(&str, &str, &[u8], u16)]) -> (Vec<u8>, usize) {
        let (mut out, mut cd) = (Vec::new(), Vec::new());
        for &(local, central, data, flags) in entries {
            let common = |v: &mut Vec<u8>, name: &str| {
                let len = (data.len() as u32).to_le_bytes();
                v.extend([flags.to_le_bytes(), [0; 2], [0; 2], [0; 2]].concat());
                v.extend([[0; 4], len, len].concat());
                v.extend([(name.len() as u16).to_le_bytes(), [0; 2]].concat());
            };
            let offset = (out.len() as u32).to_le_bytes();
            out.extend(b"PK\x03\x04\x14\x00");
            common(&mut out, local);
            out.extend(local.as_bytes());
            out.extend(data);
            cd.extend(b"PK\x01\x02\x14\x00\x14\x00");
            common(&mut cd, central);
            cd.extend([0; 10].iter().chain(&offset));
            cd.extend(central.as_bytes());
        }
        let (start, n) = (out.len(), (entries.len() as u16).to_le_bytes());
        out.extend(&cd);
        out.extend(b"PK\x05\x06\0\0\0\0");
        out.extend([n, n].concat());
        out.extend([(cd.len() as u32).to_le_bytes(), (start as u32).to_le_bytes()].concat());
        out.extend([0, 0]);
        (out, start)
    }

    fn names(data: &[u8]) -> Vec<String> {
        zip_entries(data, 100).names
    }

    #[test]
    fn magic_kinds() {
        let mut pe = b"MZ".to_vec();
        pe.resize(0x80, 0);
        pe[0x3c] = 0x40;
        pe[0x40..0x44].copy_from_slice(b"PE\0\0");
        let mut iso = vec![0u8; 0x9010];
        iso[0x8801..0x8806].copy_from_slice(b"CD001");
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"MZ", Some("exe")),
            (&pe, Some("exe")),
            (b"\x7fELF\x02\x01", Some("elf")),
            (b"PK\x03\x04rest", Some("zip")),
            (b"PK\x05\x06", Some("zip")),
            (b"PK\x07\x08PK", Some("zip")),
            (b"Rar!\x1a\x07\x01\x00", Some("rar")),
            (b"7z\xbc\xaf\x27\x1c\x00\x04", Some("7z")),
            (b"\x1f\x8b\x08\x00", Some("gz")),
            (b"BZh91AY&SY", Some("bz2")),
            (b"BZhx", None),
            (b"\xfd7zXZ\x00\x00", Some("xz")),
            (b"MSCF\0\0\0\0", Some("cab")),
            (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1\0\0", Some("ole")),
            (b"junk\n%PDF-1.7\n", Some("pdf")),
            (&iso, Some("iso")),
            (b"\xca\xfe\xba\xbe\0\0\0\x34", Some("class")),
            (b"L\x00\x00\x00\x01\x14\x02\x00\x00", Some("lnk")),
            (b"{\\rtf1\\ansi", Some("rtf")),
            (b"\xcf\xfa\xed\xfe\x07", Some("macho")),
            (b"\xfe\xed\xfa\xce", Some("macho")),
            (b"#!/bin/sh\necho hi\n", Some("sh")),
            (b" \r\n\t<!DOCTYPE HTML><p>", Some("html")),
            (b"\xef\xbb\xbf<HtMl>", Some("html")),
            (b"<div>hi</div><SCRIPT>x()</script>", Some("html")),
            (b"hello, plain text", None),
            (b"", None),
            (b"M", None),
        ];
        for (data, want) in cases {
            assert_eq!(
                sniff(data),
                *want,
                "{:?}",
                String::from_utf8_lossy(&data[..data.len().min(16)])
            );
        }
        let mut late = vec![b' '; 1030];
        late.extend(b"%PDF-1.4");
        assert_eq!(sniff(&late), None, "%PDF past 1024 bytes");
        let mut late = vec![b'x'; 600];
        late.extend(b"<script>");
        assert_eq!(sniff(&late), None, "<script past 512 bytes");
    }

    #[test]
    fn lists_names_and_truncated() {
        let (z, cd) = zip(&[("a.txt", "a.txt", b"hello", 0), ("dir/b.exe", "dir/b.exe", b"MZ", 0)]);
        assert_eq!(sniff(&z), Some("zip"));
        assert!(!zip_entries(&z, 100).encrypted);
        assert_eq!(names(&z[..cd]), ["a.txt", "dir/b.exe"]);
        assert_eq!(names(&z[..cd - 1]), ["a.txt", "dir/b.exe"]);
        assert_eq!(zip_entries(&z, 1).names, ["a.txt"]);
        assert_eq!(names(&zip(&[]).0), Vec::<String>::new());
    }

    #[test]
    fn central_and_local_names_differ() {
        let (z, _) = zip(&[("invoice.pdf", "invoice.exe", b"x", 0), ("same", "same", b"", 0)]);
        assert_eq!(names(&z), ["invoice.pdf", "same", "invoice.exe"]);
        // With a stub prepended (offsets not adjusted) the directory is still found.
        let sfx = [b"MZ stub".as_slice(), &z].concat();
        assert_eq!(names(&sfx), ["invoice.pdf", "same", "invoice.exe"]);
        // Central directory only (local headers wiped): still listed.
        let wiped: Vec<u8> = z.iter().enumerate().map(|(i, &b)| if i < 4 { 0 } else { b }).collect();
        assert!(names(&wiped).contains(&"invoice.exe".to_string()));
    }

    #[test]
    fn zip64_and_unicode_path() {
        let (z, cd) = zip(&[("local", "central.exe", b"x", 0)]);
        let eocd = z.len() - 22;
        let mut z64 = z[..eocd].to_vec();
        let record = z64.len() as u64;
        z64.extend(b"PK\x06\x06\x2c\0\0\0\0\0\0\0".iter().chain(&[0; 28]));
        z64.extend([((eocd - cd) as u64).to_le_bytes(), (cd as u64).to_le_bytes()].concat());
        z64.extend(
            b"PK\x06\x07\0\0\0\0"
                .iter()
                .chain(&record.to_le_bytes())
                .chain(&[1, 0, 0, 0]),
        );
        z64.extend(z[eocd..eocd + 12].iter().chain(&[0xff; 8]).chain(&[0, 0]));
        assert_eq!(names(&z64), ["local", "central.exe"]);
        assert_eq!(names(&[b"stub".as_slice(), &z64].concat()), ["local", "central.exe"]);
        let mut out = Names::default();
        out.add(
            9,
            b"a.txt",
            b"\x01\x00\x00\x00\x75\x70\x0a\x00\x01\0\0\0\0b.exe\x75\x70",
        );
        assert_eq!(out.list.names, ["a.txt", "b.exe"]);
    }

    #[test]
    fn encrypted_flag() {
        let (z, cd) = zip(&[("a", "a", b"1", 0), ("s.exe", "s.exe", b"2", 1)]);
        assert!(zip_entries(&z, 100).encrypted);
        assert!(zip_entries(&z[..cd], 0).encrypted);
        assert!(!zip_entries(&zip(&[("a", "a", b"1", 8)]).0, 100).encrypted);
    }

    #[test]
    fn nested_zip_lists_outer_only() {
        let (inner, _) = zip(&[("evil.exe", "evil.exe", b"MZ", 0)]);
        let (outer, cd) = zip(&[
            ("readme", "readme", b"hi", 0),
            ("in.zip", "in.zip", &inner, 0),
            ("z", "z", b"", 0),
        ]);
        assert_eq!(names(&outer), ["readme", "in.zip", "z"]);
        assert_eq!(names(&outer[..cd]), ["readme", "in.zip", "z"]);
        assert_eq!(names(&inner), ["evil.exe"]);
    }

    #[test]
    fn garbage_never_panics() {
        let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let sigs = b"PK\x03\x04PK\x01\x02PK\x05\x06PK\x06\x07PK\x06\x06";
        for _ in 0..4000 {
            let len = (next() % 300) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| (next() & 0xff) as u8).collect();
            for _ in 0..next() % 4 {
                let (sig, pos) = ((next() % 5) as usize * 4, (next() as usize) % (len + 1));
                data.splice(pos..pos, sigs[sig..sig + 4].iter().copied());
            }
            sniff(&data);
            zip_entries(&data, 10);
            extension(&String::from_utf8_lossy(&data));
        }
        let (z, _) = zip(&[("a.txt", "a.txt", b"hello", 1), ("b/c.exe", "b/c.exe", b"MZ", 0)]);
        for i in 0..z.len() {
            for _ in 0..8 {
                let mut bad = z.clone();
                bad[i] = (next() & 0xff) as u8;
                zip_entries(&bad, 10);
                zip_entries(&bad[..(next() as usize) % (bad.len() + 1)], 10);
            }
        }
    }

    #[test]
    fn extensions() {
        let cases = [
            ("a.EXE", Some("exe")),
            ("a.exe. . ", Some("exe")),
            ("a.exe\0\r\n", Some("exe")),
            ("dir\\x.scr", Some("scr")),
            ("d.ir/x", None),
            ("noext", None),
            ("a.", None),
            ("", None),
            (".hidden", Some("hidden")),
            ("a.tar.gz", Some("gz")),
            ("a.12345678901234567", None),
        ];
        for (name, want) in cases {
            assert_eq!(extension(name).as_deref(), want, "{name:?}");
        }
    }
}
