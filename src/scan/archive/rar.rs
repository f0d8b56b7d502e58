//! The file names of a RAR archive, read from its block headers by hand (no
//! decompression; the unRAR licence does not fit ours): RAR 4 (the format
//! of RAR 2.9 to 4.x, signature `Rar!\x1a\x07\x00`) and RAR 5 (`Rar!\x1a\x07\x01\x00`).
//! Encrypted headers (`-hp`) and encrypted files (`-p`) are reported, and
//! where the data of a file stored uncompressed is.
//! Pure functions over bytes: no panics on any input, linear time.

/// What the block headers say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RarListing {
    pub names: Vec<String>,
    /// Some file (or the headers themselves) is encrypted.
    pub encrypted: bool,
    /// The block chain broke before the end-of-archive block (damaged or
    /// truncated); what was read up to there is listed.
    pub damaged: bool,
    /// 4 or 5.
    pub version: u8,
    /// Where the data of each file stored uncompressed (method "store",
    /// not encrypted, not split over volumes) is in the archive: it can be
    /// read without unRAR.
    pub stored: Vec<std::ops::Range<usize>>,
    /// Some file (not a directory, not empty, not encrypted) has data that
    /// is not in `stored`: compressed, or split over volumes. Only unRAR
    /// reads it.
    pub unread: bool,
}

const SIG4: &[u8] = b"Rar!\x1a\x07\x00";
const SIG5: &[u8] = b"Rar!\x1a\x07\x01\x00";

/// The offset of the first RAR signature (a self-extractor has a stub
/// before it), searched in the first `within` octets.
pub fn find(data: &[u8], within: usize) -> Option<usize> {
    let head = &data[..data.len().min(within.saturating_add(8))];
    memchr::memmem::find_iter(head, b"Rar!\x1a\x07").find(|&i| at(data, i, SIG4) || at(data, i, SIG5))
}

/// Lists the names of the RAR archive starting at `data[0]`, at most
/// `max_names`. None when `data` does not start with a RAR 4 or 5 signature.
pub fn list(data: &[u8], max_names: usize) -> Option<RarListing> {
    if at(data, 0, SIG5) {
        Some(list5(data, max_names))
    } else if at(data, 0, SIG4) {
        Some(list4(data, max_names))
    } else {
        None
    }
}

fn list4(data: &[u8], max: usize) -> RarListing {
    let mut out = RarListing {
        version: 4,
        damaged: true,
        ..Default::default()
    };
    let mut pos = SIG4.len();
    while let (Some(kind), Some(flags), Some(size)) = (
        data.get(pos + 2).copied(),
        le(data, pos + 3, 2),
        le(data, pos + 5, 2).map(|s| s as usize),
    ) {
        if size < 7 || pos + size > data.len() {
            break;
        }
        let long = flags & 0x8000 != 0 || kind == 0x74;
        let mut add = if long { le(data, pos + 7, 4).unwrap_or(0) } else { 0 };
        match kind {
            // Main header: MHD_PASSWORD, the block headers after it are encrypted.
            0x73 if flags & 0x0080 != 0 => {
                out.encrypted = true;
                out.damaged = false;
                return out;
            }
            0x74 => {
                if flags & 0x0004 != 0 {
                    out.encrypted = true;
                }
                let n = le(data, pos + 26, 2).unwrap_or(0) as usize;
                let mut at_name = pos + 32;
                if flags & 0x0100 != 0 {
                    add |= le(data, pos + 32, 4).unwrap_or(0) << 32;
                    at_name += 8;
                }
                if let Some(raw) = data.get(at_name..at_name + n).filter(|_| at_name + n <= pos + size) {
                    names4(raw, flags & 0x0200 != 0, max, &mut out.names);
                }
                let dir = flags & 0x00e0 == 0x00e0;
                let plain = flags & (0x0001 | 0x0002 | 0x0004) == 0 && !dir;
                let unpacked = le(data, pos + 11, 4).unwrap_or(u64::MAX);
                if plain && data.get(pos + 25) == Some(&0x30) && unpacked == add {
                    stored(&mut out, pos + size, add, data.len());
                } else if !dir && flags & 0x0004 == 0 && unpacked > 0 {
                    out.unread = true;
                }
            }
            0x7b => {
                out.damaged = false;
                return out;
            }
            _ => {}
        }
        let Some(next) = usize::try_from(add).ok().and_then(|a| (pos + size).checked_add(a)) else {
            break;
        };
        if next >= data.len() {
            // A volume without an end block, or a truncated one.
            out.damaged = next > data.len();
            break;
        }
        pos = next;
    }
    out
}

/// A RAR 4 file name: OEM/ASCII, or (FHD_UNICODE) `ascii\0encoded` where
/// the encoded part is RAR's compact UTF-16 form relative to the ASCII
/// one. Both readings are listed when they differ.
fn names4(raw: &[u8], unicode: bool, max: usize, names: &mut Vec<String>) {
    let (ascii, encoded) = match memchr::memchr(0, raw) {
        Some(z) if unicode => (&raw[..z], Some(&raw[z + 1..])),
        _ => (raw, None),
    };
    push(names, max, String::from_utf8_lossy(ascii).into_owned());
    if let Some(enc) = encoded {
        let wide = decode_unicode(ascii, enc);
        push(names, max, String::from_utf16_lossy(&wide));
    }
    // FHD_UNICODE without a NUL: the name was UTF-8, listed above.
}

/// RAR 4's encoded Unicode name: a high byte, then groups of four 2-bit
/// opcodes (a flag byte) each taking the next char as 8 bits, 8 bits with
/// the high byte, 16 bits, or a run copied from the ASCII name (with an
/// optional correction and the high byte).
fn decode_unicode(ascii: &[u8], enc: &[u8]) -> Vec<u16> {
    let mut out = Vec::new();
    let Some((&high, enc)) = enc.split_first() else {
        return out;
    };
    let high = u16::from(high) << 8;
    let (mut i, mut flags, mut bits) = (0usize, 0u8, 0u8);
    let byte = |i: usize| enc.get(i).copied();
    while i < enc.len() && out.len() < 1024 {
        if bits == 0 {
            let Some(f) = byte(i) else { break };
            flags = f;
            i += 1;
            bits = 8;
        }
        match flags >> 6 {
            0 => {
                let Some(b) = byte(i) else { break };
                out.push(u16::from(b));
                i += 1;
            }
            1 => {
                let Some(b) = byte(i) else { break };
                out.push(u16::from(b) | high);
                i += 1;
            }
            2 => {
                let (Some(lo), Some(hi)) = (byte(i), byte(i + 1)) else {
                    break;
                };
                out.push(u16::from(lo) | (u16::from(hi) << 8));
                i += 2;
            }
            _ => {
                let Some(len) = byte(i) else { break };
                i += 1;
                if len & 0x80 != 0 {
                    let Some(correction) = byte(i) else { break };
                    i += 1;
                    for _ in 0..(len & 0x7f) + 2 {
                        let Some(&c) = ascii.get(out.len()) else { break };
                        out.push(u16::from(c.wrapping_add(correction)) | high);
                    }
                } else {
                    for _ in 0..len + 2 {
                        let Some(&c) = ascii.get(out.len()) else { break };
                        out.push(u16::from(c));
                    }
                }
            }
        }
        flags <<= 2;
        bits -= 2;
    }
    out
}

fn list5(data: &[u8], max: usize) -> RarListing {
    let mut out = RarListing {
        version: 5,
        damaged: true,
        ..Default::default()
    };
    let mut pos = SIG5.len();
    // CRC32, header size, then the header (type, flags, ...).
    while let Some((size, body)) = vint(data, pos + 4) {
        let Some(end) = usize::try_from(size).ok().and_then(|s| body.checked_add(s)) else {
            break;
        };
        if size == 0 || end > data.len() {
            break;
        }
        let h = &data[..end];
        let Some((kind, p)) = vint(h, body) else { break };
        let Some((flags, mut p)) = vint(h, p) else { break };
        let mut extra = 0;
        if flags & 1 != 0 {
            let Some((e, q)) = vint(h, p) else { break };
            (extra, p) = (e, q);
        }
        let mut data_size = 0;
        if flags & 2 != 0 {
            let Some((d, q)) = vint(h, p) else { break };
            (data_size, p) = (d, q);
        }
        match kind {
            2 | 3 => {
                let extra_at = usize::try_from(extra).ok().and_then(|e| end.checked_sub(e));
                if let Some(f) = file5(h, p, extra_at.unwrap_or(end)) {
                    out.encrypted |= f.encrypted;
                    // Service headers (3) name streams such as "CMT" or "QO".
                    if kind == 2 {
                        push(&mut out.names, max, f.name);
                        // Not split over volumes (header flags 8 and 16).
                        if f.store && !f.encrypted && flags & (8 | 16) == 0 && f.unpacked == data_size {
                            stored(&mut out, end, data_size, data.len());
                        } else if !f.dir && !f.encrypted && f.unpacked > 0 {
                            out.unread = true;
                        }
                    }
                }
            }
            // Archive encryption header: everything after it is encrypted.
            4 => {
                out.encrypted = true;
                out.damaged = false;
                return out;
            }
            5 => {
                out.damaged = false;
                return out;
            }
            _ => {}
        }
        let Some(next) = usize::try_from(data_size).ok().and_then(|d| end.checked_add(d)) else {
            break;
        };
        if next >= data.len() {
            out.damaged = next > data.len();
            break;
        }
        pos = next;
    }
    out
}

/// What a RAR 5 file or service header says (its fields after the common
/// ones, at `p`; its extra area from `extra_at`).
struct File5 {
    name: String,
    /// A file encryption record in the extra area.
    encrypted: bool,
    /// Method "store", and not a directory.
    store: bool,
    dir: bool,
    unpacked: u64,
}

fn file5(h: &[u8], p: usize, extra_at: usize) -> Option<File5> {
    let (file_flags, p) = vint(h, p)?;
    let (unpacked, p) = vint(h, p)?;
    let (_attributes, mut p) = vint(h, p)?;
    if file_flags & 2 != 0 {
        p += 4; // mtime
    }
    if file_flags & 4 != 0 {
        p += 4; // data CRC32
    }
    let (compression, p) = vint(h, p)?;
    let (_host, p) = vint(h, p)?;
    let (n, p) = vint(h, p)?;
    let name = h.get(p..p.checked_add(usize::try_from(n).ok()?)?)?;
    let mut encrypted = false;
    let mut q = extra_at.max(p);
    while q < h.len() {
        let Some((size, r)) = vint(h, q) else { break };
        let Some((kind, _)) = vint(h, r) else { break };
        encrypted |= kind == 1;
        let Some(next) = usize::try_from(size).ok().and_then(|s| r.checked_add(s)) else {
            break;
        };
        if size == 0 {
            break;
        }
        q = next;
    }
    Some(File5 {
        name: String::from_utf8_lossy(name).into_owned(),
        encrypted,
        // Bits 7 to 9 of the compression information: 0 is "store".
        store: (compression >> 7) & 7 == 0 && file_flags & 1 == 0,
        dir: file_flags & 1 != 0,
        unpacked,
    })
}

/// Notes `len` octets of stored data at `at`, when they are all there.
fn stored(out: &mut RarListing, at: usize, len: u64, total: usize) {
    if let Some(end) = usize::try_from(len).ok().and_then(|l| at.checked_add(l))
        && end <= total
        && len > 0
    {
        out.stored.push(at..end);
    }
}

/// A RAR 5 variable-length integer at `pos`: the value and where the next
/// field starts (at most 10 octets).
fn vint(data: &[u8], pos: usize) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for i in 0..10 {
        let b = *data.get(pos.checked_add(i)?)?;
        v |= u64::from(b & 0x7f).checked_shl(7 * i as u32).unwrap_or(0);
        if b & 0x80 == 0 {
            return Some((v, pos + i + 1));
        }
    }
    None
}

fn push(names: &mut Vec<String>, max: usize, name: String) {
    let name = name.trim_end_matches('\0').to_string();
    if !name.is_empty() && names.len() < max && !names.contains(&name) {
        names.push(name);
    }
}

fn at(data: &[u8], off: usize, magic: &[u8]) -> bool {
    data.get(off..).is_some_and(|d| d.starts_with(magic))
}

fn le(data: &[u8], off: usize, n: usize) -> Option<u64> {
    let bytes = data.get(off..off.checked_add(n)?)?;
    Some(bytes.iter().rev().fold(0, |acc, &b| (acc << 8) | u64::from(b)))
}

pub mod build;

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    #[test]
    fn stored_files_are_where_their_data_is() {
        let files: &[(&str, &[u8], bool)] = &[
            ("a.txt", b"hello", false),
            ("b.bin", b"secret!", true),
            ("c.txt", b"xyz", false),
        ];
        for a in [rar4(files, false), rar5(files, false)] {
            let l = list(&a, 100).unwrap();
            let got: Vec<&[u8]> = l.stored.iter().map(|r| &a[r.clone()]).collect();
            assert_eq!(
                got,
                [&b"hello"[..], b"xyz"],
                "v{}: the encrypted file is left out",
                l.version
            );
            // Cut inside c.txt's data: it is not listed as stored.
            let cut = &a[..l.stored[1].end - 1];
            let l = list(cut, 100).unwrap();
            assert_eq!(l.stored.len(), 1, "v{}: {l:?}", l.version);
        }
        // A compressed RAR 4 file (method 0x33, "normal") is not stored.
        // (The file header follows the signature and the 13-octet main
        // header; its method is at offset 25.)
        let mut a = rar4(&[("a.txt", b"hello", false)], false);
        assert_eq!(a[SIG4.len() + 13 + 25], 0x30);
        a[SIG4.len() + 13 + 25] = 0x33;
        let l = list(&a, 100).unwrap();
        assert!(l.stored.is_empty() && l.names == ["a.txt"] && !l.damaged, "{l:?}");
        assert!(l.unread, "{l:?}");
    }

    #[test]
    fn compressed_files_are_unread_and_stored_encrypted_or_empty_ones_are_not() {
        let plain: &[(&str, &[u8], bool)] = &[("a.txt", b"hello", false), ("empty", b"", false)];
        for a in [rar4(plain, false), rar5(plain, false)] {
            let l = list(&a, 100).unwrap();
            assert!(!l.unread && l.stored.len() == 1, "{l:?}");
        }
        let files: &[(&str, &[u8], bool)] = &[("a.txt", b"packed!", false)];
        for a in [rar4_compressed(files), rar5_compressed(files)] {
            let l = list(&a, 100).unwrap();
            assert_eq!(l.names, ["a.txt"]);
            assert!(l.unread && l.stored.is_empty() && !l.encrypted && !l.damaged, "{l:?}");
        }
        // Encrypted: reported as that, not as unread.
        let secret: &[(&str, &[u8], bool)] = &[("a.txt", b"secret", true)];
        for a in [rar4_compressed(secret), rar5_compressed(secret)] {
            let l = list(&a, 100).unwrap();
            assert!(l.encrypted && !l.unread, "{l:?}");
        }
        // A directory entry has no data to read.
        let mut a = rar4(&[], false);
        let end = a.split_off(a.len() - 7);
        file4(&mut a, 0x8000 | 0x00e0, b"folder", b"");
        a.extend(end);
        let l = list(&a, 100).unwrap();
        assert!(l.names == ["folder"] && !l.unread, "{l:?}");
    }

    #[test]
    fn rar4_names_and_encryption() {
        let a = rar4(
            &[("readme.txt", b"hello", false), ("dir\\invoice.exe", b"MZ", false)],
            false,
        );
        let l = list(&a, 100).unwrap();
        assert_eq!(l.names, ["readme.txt", "dir\\invoice.exe"]);
        assert_eq!((l.version, l.encrypted, l.damaged), (4, false, false));
        let e = list(&rar4(&[("a.txt", b"x", true)], false), 100).unwrap();
        assert!(e.encrypted && e.names == ["a.txt"]);
        let h = list(&rar4(&[("a.exe", b"x", false)], true), 100).unwrap();
        assert!(h.encrypted && h.names.is_empty(), "{h:?}");
        // Truncated inside the second file's data: the first name stays.
        let t = list(&a[..a.len() - 9], 100).unwrap();
        assert!(t.damaged && t.names.len() == 2, "{t:?}");
        assert_eq!(list(&a, 1).unwrap().names, ["readme.txt"]);
        assert_eq!(list(b"not rar", 10), None);
        let sfx = [b"MZ stub...".as_slice(), &a].concat();
        assert_eq!(find(&sfx, 1 << 20), Some(10));
    }

    #[test]
    fn rar4_unicode_name_is_decoded() {
        // ASCII "invoice.pdf", the Unicode reading says "invoice.exe":
        // a run of 8 copied chars (opcode 3), then 3 literal 8-bit chars.
        let mut name = b"invoice.pdf\0".to_vec();
        name.extend([0x00, 0b1100_0000, 6, b'e', b'x', b'e']);
        let mut a = SIG4.to_vec();
        a.extend([0, 0, 0x73, 0, 0, 13, 0, 0, 0, 0, 0, 0, 0]);
        file4(&mut a, 0x8000 | 0x0200, &name, b"");
        a.extend([0, 0, 0x7b, 0, 0x40, 7, 0]);
        assert_eq!(list(&a, 10).unwrap().names, ["invoice.pdf", "invoice.exe"]);
    }

    #[test]
    fn rar5_names_and_encryption() {
        let a = rar5(
            &[("docs/a.txt", b"hello", false), ("invoice.exe", b"MZ..", false)],
            false,
        );
        let l = list(&a, 100).unwrap();
        assert_eq!(l.names, ["docs/a.txt", "invoice.exe"]);
        assert_eq!((l.version, l.encrypted, l.damaged), (5, false, false));
        let e = list(&rar5(&[("a.txt", b"x", false), ("b.txt", b"y", true)], false), 100).unwrap();
        assert!(e.encrypted && e.names.len() == 2, "{e:?}");
        let h = list(&rar5(&[], true), 100).unwrap();
        assert!(h.encrypted && h.names.is_empty());
        let t = list(&a[..a.len() - 3], 100).unwrap();
        assert!(t.damaged, "{t:?}");
    }

    #[test]
    fn garbage_never_panics() {
        let mut s: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let seeds = [
            rar4(&[("a.txt", b"hello", false), ("b.exe", b"MZ", true)], false),
            rar5(&[("a.txt", b"hello", false), ("b.exe", b"MZ", true)], false),
        ];
        for a in &seeds {
            for i in 0..a.len() {
                for _ in 0..16 {
                    let mut bad = a.clone();
                    bad[i] = (next() & 0xff) as u8;
                    list(&bad, 10);
                    list(&bad[..(next() as usize) % (bad.len() + 1)], 10);
                }
            }
        }
        for _ in 0..2000 {
            let mut d = SIG5.to_vec();
            d.extend((0..next() % 64).map(|_| (next() & 0xff) as u8));
            list(&d, 10);
            d[6] = 0;
            list(&d[..d.len() - 1], 10);
            decode_unicode(&d, &d);
        }
    }
}
