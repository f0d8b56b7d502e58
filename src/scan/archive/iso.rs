//! The file names of an ISO 9660 image (`.iso`, and the `.img` files that
//! are ISO images), read from its directory records by hand: the primary
//! tree (with Rock Ridge `NM` names where present) and the Joliet tree
//! (UCS-2 names, what Windows shows). Disk images are a common way to
//! carry a program past filters that only open zip; clamd opens ISO 9660
//! itself, but it does not check names.
//! Pure functions over bytes: no panics on any input, bounded work.

use std::collections::HashSet;
use std::ops::Range;

/// Where the first volume descriptor is (sector 16 of 2,048 octets).
const DESCRIPTORS: usize = 16 * 2048;
/// Octets that [`is_iso`] needs to see.
pub const HEAD: usize = DESCRIPTORS + 6;
/// Volume descriptors read at most.
const MAX_DESCRIPTORS: usize = 32;
/// Directory levels followed (ISO 9660 allows 8).
const MAX_DEPTH: usize = 8;

/// What the directory records say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IsoListing {
    /// Paths of the files ("dir/name.ext"), from every tree.
    pub names: Vec<String>,
    /// Where each file's data is in the image (each extent once).
    pub files: Vec<Range<usize>>,
    /// A directory or file points outside the image (truncated or damaged).
    pub damaged: bool,
}

/// Whether `data` starts like an ISO 9660 image.
pub fn is_iso(data: &[u8]) -> bool {
    data.get(DESCRIPTORS + 1..DESCRIPTORS + 6) == Some(b"CD001")
}

/// Lists the files of the image, at most `max_names` names. None when
/// `data` is not an ISO 9660 image.
pub fn list(data: &[u8], max_names: usize) -> Option<IsoListing> {
    if !is_iso(data) {
        return None;
    }
    let mut w = Walk {
        data,
        max_names,
        out: IsoListing::default(),
        dirs: HashSet::new(),
        extents: HashSet::new(),
        records: 0,
    };
    // The trees to walk: the Joliet ones first (their names are the ones
    // Windows shows, and the first banned one found is the one reported).
    let mut trees = Vec::new();
    for i in 0..MAX_DESCRIPTORS {
        let Some(d) = data.get(DESCRIPTORS + i * 2048..DESCRIPTORS + (i + 1) * 2048) else {
            w.out.damaged = true;
            break;
        };
        if &d[1..6] != b"CD001" || d[0] == 255 {
            break;
        }
        // Primary (1), or supplementary (2) with a Joliet escape sequence.
        let joliet = d[0] == 2 && d[88] == b'%' && d[89] == b'/' && matches!(d[90], b'@' | b'C' | b'E');
        if d[0] == 1 || joliet {
            let block = u16::from_le_bytes([d[128], d[129]]) as usize;
            if !(512..=2048).contains(&block) || !block.is_power_of_two() {
                w.out.damaged = true;
                continue;
            }
            trees.push((!joliet, &d[156..190], block));
        }
    }
    trees.sort_by_key(|t| t.0);
    for (primary, root, block) in trees {
        if let Some(root) = Record::at(root) {
            w.dir(&root, block, !primary, "", 0);
        }
    }
    Some(w.out)
}

/// One directory record.
struct Record<'a> {
    extent: usize,
    size: usize,
    dir: bool,
    name: &'a [u8],
    /// The System Use area (Rock Ridge).
    system: &'a [u8],
}

impl<'a> Record<'a> {
    fn at(r: &'a [u8]) -> Option<Record<'a>> {
        let len = usize::from(*r.first()?);
        let r = r.get(..len)?;
        let n = usize::from(*r.get(32)?);
        let name = r.get(33..33 + n)?;
        let pad = usize::from(n.is_multiple_of(2));
        Some(Record {
            extent: u32::from_le_bytes(r.get(2..6)?.try_into().ok()?) as usize,
            size: u32::from_le_bytes(r.get(10..14)?.try_into().ok()?) as usize,
            dir: r.get(25)? & 0x02 != 0,
            name,
            system: r.get(33 + n + pad..).unwrap_or_default(),
        })
    }

    /// The record's name: Rock Ridge's `NM` where present, else Joliet's
    /// UCS-2 or the ISO name without its `;1` version and trailing dot.
    fn name(&self, joliet: bool) -> String {
        let mut rr = Vec::new();
        let mut s = self.system;
        while s.len() >= 4 {
            let len = usize::from(s[2]);
            if len < 4 || len > s.len() {
                break;
            }
            if &s[..2] == b"NM" && len > 5 {
                rr.extend_from_slice(&s[5..len]);
            }
            s = &s[len..];
        }
        if !rr.is_empty() {
            return String::from_utf8_lossy(&rr).into_owned();
        }
        let name = if joliet {
            let units: Vec<u16> = self
                .name
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16_lossy(&units)
        } else {
            String::from_utf8_lossy(self.name).into_owned()
        };
        let name = name.rsplit_once(';').map_or(name.as_str(), |(n, _)| n);
        name.strip_suffix('.').unwrap_or(name).to_string()
    }
}

struct Walk<'d> {
    data: &'d [u8],
    max_names: usize,
    out: IsoListing,
    /// Directory extents already read (a loop in a doctored image).
    dirs: HashSet<usize>,
    /// File extents already listed (the trees share them).
    extents: HashSet<(usize, usize)>,
    /// Records read, all directories together.
    records: usize,
}

impl Walk<'_> {
    fn dir(&mut self, rec: &Record<'_>, block: usize, joliet: bool, path: &str, depth: usize) {
        let Some(start) = rec.extent.checked_mul(block) else {
            self.out.damaged = true;
            return;
        };
        let Some(body) = start.checked_add(rec.size).and_then(|end| self.data.get(start..end)) else {
            self.out.damaged = true;
            return;
        };
        if depth >= MAX_DEPTH || !self.dirs.insert(start) {
            return;
        }
        let mut p = 0;
        while p < body.len() {
            if self.out.names.len() > self.max_names || self.records > self.max_names.saturating_mul(4) {
                return;
            }
            let len = usize::from(body[p]);
            if len == 0 {
                // Records do not cross a sector: the rest of this one is padding.
                p = (p / 2048 + 1) * 2048;
                continue;
            }
            self.records += 1;
            let Some(r) = body.get(p..p + len).and_then(Record::at) else {
                self.out.damaged = true;
                return;
            };
            p += len;
            // "." and "..".
            if matches!(r.name, [0] | [1]) {
                continue;
            }
            let name = r.name(joliet);
            let full = if path.is_empty() {
                name
            } else {
                format!("{path}/{name}")
            };
            if r.dir {
                self.dir(&r, block, joliet, &full, depth + 1);
            } else {
                self.file(&r, block, full);
            }
        }
    }

    fn file(&mut self, r: &Record<'_>, block: usize, name: String) {
        if self.out.names.len() < self.max_names.saturating_add(1) {
            self.out.names.push(name);
        }
        let Some(start) = r.extent.checked_mul(block) else {
            self.out.damaged = true;
            return;
        };
        match start.checked_add(r.size).filter(|&end| end <= self.data.len()) {
            Some(end) if self.extents.insert((start, r.size)) && r.size > 0 => self.out.files.push(start..end),
            Some(_) => {}
            None => self.out.damaged = true,
        }
    }
}

/// A builder of ISO 9660 images for the tests (here, so the archive tests
/// and the end-to-end tests share it): a primary tree of ISO names and,
/// with `joliet`, a Joliet tree of the full names. Paths have at most one
/// directory level ("dir/name").
pub mod build {
    const SECTOR: usize = 2048;

    fn record(out: &mut Vec<u8>, extent: usize, size: usize, dir: bool, name: &[u8]) {
        let len = 33 + name.len() + usize::from(name.len().is_multiple_of(2));
        out.push(len as u8);
        out.push(0);
        out.extend((extent as u32).to_le_bytes());
        out.extend((extent as u32).to_be_bytes());
        out.extend((size as u32).to_le_bytes());
        out.extend((size as u32).to_be_bytes());
        out.extend([126, 1, 1, 0, 0, 0, 0]); // 2026-01-01
        out.push(if dir { 2 } else { 0 });
        out.extend([0, 0, 1, 0, 0, 1]);
        out.push(name.len() as u8);
        out.extend(name);
        if name.len().is_multiple_of(2) {
            out.push(0);
        }
    }

    fn iso_name(name: &str) -> Vec<u8> {
        format!("{};1", name.to_ascii_uppercase()).into_bytes()
    }

    fn joliet_name(name: &str) -> Vec<u8> {
        name.encode_utf16().flat_map(u16::to_be_bytes).collect()
    }

    /// One directory's sector: ".", "..", then `entries` (name, extent,
    /// size, dir).
    fn directory(own: usize, parent: usize, entries: &[(Vec<u8>, usize, usize, bool)]) -> Vec<u8> {
        let mut d = Vec::new();
        record(&mut d, own, SECTOR, true, &[0]);
        record(&mut d, parent, SECTOR, true, &[1]);
        for (name, extent, size, dir) in entries {
            record(&mut d, *extent, *size, *dir, name);
        }
        d.resize(SECTOR, 0);
        d
    }

    pub fn iso(files: &[(&str, &[u8])], joliet: bool) -> Vec<u8> {
        let subdirs: Vec<&str> = {
            let mut v: Vec<&str> = files
                .iter()
                .filter_map(|(p, _)| p.split_once('/').map(|(d, _)| d))
                .collect();
            v.dedup();
            v
        };
        let trees = if joliet { 2 } else { 1 };
        // Sectors: 16 system area, descriptors (1 or 2) + terminator, then
        // per tree a root and its subdirectories, then the files.
        let first_dir = 16 + trees + 1;
        let dirs_per_tree = 1 + subdirs.len();
        let mut next = first_dir + trees * dirs_per_tree;
        let mut extents = Vec::new();
        for (_, data) in files {
            extents.push(next);
            next += data.len().div_ceil(SECTOR).max(1);
        }
        let mut out = vec![0u8; 16 * SECTOR];
        for t in 0..trees {
            let mut d = vec![0u8; SECTOR];
            d[0] = if t == 0 { 1 } else { 2 };
            d[1..6].copy_from_slice(b"CD001");
            d[6] = 1;
            if t == 1 {
                d[88..91].copy_from_slice(b"%/E");
            }
            d[128..130].copy_from_slice(&2048u16.to_le_bytes());
            d[130..132].copy_from_slice(&2048u16.to_be_bytes());
            let root = first_dir + t * dirs_per_tree;
            let mut r = Vec::new();
            record(&mut r, root, SECTOR, true, &[0]);
            d[156..156 + r.len()].copy_from_slice(&r);
            out.extend(d);
        }
        let mut end = vec![0u8; SECTOR];
        end[0] = 255;
        end[1..6].copy_from_slice(b"CD001");
        out.extend(end);
        for t in 0..trees {
            let name = |n: &str| if t == 0 { iso_name(n) } else { joliet_name(n) };
            let root = first_dir + t * dirs_per_tree;
            let mut top = Vec::new();
            for (k, s) in subdirs.iter().enumerate() {
                let mut n = if t == 0 {
                    s.to_ascii_uppercase().into_bytes()
                } else {
                    joliet_name(s)
                };
                n.truncate(64);
                top.push((n, root + 1 + k, SECTOR, true));
            }
            for (i, (p, data)) in files.iter().enumerate() {
                if !p.contains('/') {
                    top.push((name(p), extents[i], data.len(), false));
                }
            }
            out.extend(directory(root, root, &top));
            for (k, s) in subdirs.iter().enumerate() {
                let inside: Vec<_> = files
                    .iter()
                    .enumerate()
                    .filter_map(|(i, (p, data))| {
                        let (d, n) = p.split_once('/')?;
                        (d == *s).then(|| (name(n), extents[i], data.len(), false))
                    })
                    .collect();
                out.extend(directory(root + 1 + k, root, &inside));
            }
        }
        for (_, data) in files {
            let mut f = data.to_vec();
            f.resize(data.len().div_ceil(SECTOR).max(1) * SECTOR, 0);
            out.extend(f);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::build::iso;
    use super::*;

    #[test]
    fn names_of_both_trees_and_where_each_file_is() {
        let files: &[(&str, &[u8])] = &[("readme.txt", b"hello"), ("docs/invoice.exe", b"MZ program")];
        let img = iso(files, true);
        let l = list(&img, 100).unwrap();
        assert!(!l.damaged, "{l:?}");
        assert_eq!(
            l.names,
            ["docs/invoice.exe", "readme.txt", "DOCS/INVOICE.EXE", "README.TXT"]
        );
        let got: Vec<&[u8]> = l.files.iter().map(|r| &img[r.clone()]).collect();
        assert_eq!(
            got,
            [&b"MZ program"[..], b"hello"],
            "each extent once, in the order walked"
        );
        // Primary tree only.
        let l = list(&iso(files, false), 100).unwrap();
        assert_eq!(l.names, ["DOCS/INVOICE.EXE", "README.TXT"]);
    }

    #[test]
    fn rock_ridge_names_win_over_iso_names() {
        // The builder writes no Rock Ridge: a record by hand, name "A;1"
        // (odd length, so no padding before the System Use area).
        let mut r = vec![0u8; 33];
        r[32] = 3;
        r.extend(b"A;1");
        // NM entry: "NM", length, version 1, flags 0, name.
        let nm = b"invoice.exe";
        r.extend([b'N', b'M', (5 + nm.len()) as u8, 1, 0]);
        r.extend(nm);
        r[0] = r.len() as u8;
        let rec = Record::at(&r).unwrap();
        assert_eq!(rec.name(false), "invoice.exe");
    }

    #[test]
    fn truncated_and_doctored_images_do_not_panic_or_loop() {
        let img = iso(&[("a.txt", b"hello"), ("d/b.txt", b"x")], true);
        assert!(list(&img[..DESCRIPTORS + 10], 100).unwrap().damaged);
        for cut in (DESCRIPTORS..img.len()).step_by(97) {
            let _ = list(&img[..cut], 100);
        }
        // A cut inside the files: the file past the end is "damaged".
        let l = list(&img[..img.len() - 2048], 100).unwrap();
        assert!(l.damaged, "{l:?}");
        // Flipping octets anywhere: still an answer.
        for i in (DESCRIPTORS..img.len()).step_by(13) {
            let mut bad = img.clone();
            bad[i] ^= 0xa5;
            let _ = list(&bad, 100);
        }
        assert_eq!(list(b"not an image", 100), None);
        // The name limit holds.
        let many: Vec<(String, Vec<u8>)> = (0..40).map(|i| (format!("f{i}.txt"), vec![b'x'])).collect();
        let refs: Vec<(&str, &[u8])> = many.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
        let l = list(&iso(&refs, false), 10).unwrap();
        assert!(l.names.len() <= 11, "{}", l.names.len());
    }
}
