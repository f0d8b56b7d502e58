//! A minimal in-memory POSIX ustar writer. clamd scans one INSTREAM per
//! connection and unpacks tar, so a message's raw bytes and all its decoded
//! parts go to it as one archive, in one round trip.

use std::fmt;

const BLOCK: usize = 512;
/// The largest size 11 octal digits hold: 8 GiB - 1.
const MAX_SIZE: u64 = 0o777_7777_7777;

/// A file too large for a ustar header (a caller bug: sizes are limited long
/// before this).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarError {
    len: u64,
}

impl fmt::Display for TarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tar entry of {} bytes exceeds the ustar limit of {MAX_SIZE} bytes",
            self.len
        )
    }
}

impl std::error::Error for TarError {}

/// Builds a POSIX ustar archive in memory.
#[derive(Debug, Clone, Default)]
pub struct TarBuilder {
    buf: Vec<u8>,
}

impl TarBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a regular file. `name` is sanitised to printable ASCII without
    /// '/' (others become '_'; empty or all-dots names become "_") and cut to
    /// 99 bytes. Mode 0644, mtime 0, uid/gid 0.
    pub fn add(&mut self, name: &str, data: &[u8]) -> Result<(), TarError> {
        let header = header(name, data.len() as u64)?;
        self.buf.extend_from_slice(&header);
        self.buf.extend_from_slice(data);
        self.buf.resize(self.buf.len().next_multiple_of(BLOCK), 0);
        Ok(())
    }

    /// Bytes so far plus what `add` of `len` bytes would add (header and
    /// padding); to respect a size limit before adding.
    pub fn size_with(&self, len: usize) -> usize {
        self.buf.len().saturating_add(BLOCK).saturating_add(padded(len))
    }

    /// The size [`finish`](Self::finish) would return after an `add` of
    /// `len` bytes (the two end blocks included).
    pub fn finished_size_with(&self, len: usize) -> usize {
        self.size_with(len).saturating_add(2 * BLOCK)
    }

    /// Bytes so far (without the end-of-archive blocks `finish` adds).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Appends the two zero blocks that end an archive and returns it.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.resize(self.buf.len() + 2 * BLOCK, 0);
        self.buf
    }
}

/// `len` rounded up to whole blocks.
fn padded(len: usize) -> usize {
    len.checked_next_multiple_of(BLOCK).unwrap_or(usize::MAX)
}

/// The ustar header block of a regular file.
fn header(name: &str, len: u64) -> Result<[u8; BLOCK], TarError> {
    if len > MAX_SIZE {
        return Err(TarError { len });
    }
    let mut name: Vec<u8> = name
        .bytes()
        .map(|b| {
            if (b.is_ascii_graphic() && b != b'/') || b == b' ' {
                b
            } else {
                b'_'
            }
        })
        .take(99)
        .collect();
    if name.iter().all(|&b| b == b'.') {
        name = b"_".to_vec();
    }
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(&name);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{len:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[148..156].copy_from_slice(b"        ");
    h[156] = b'0';
    h[257..265].copy_from_slice(b"ustar\x0000");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn octal(field: &[u8]) -> u64 {
        let digits = field.iter().take_while(|b| b.is_ascii_digit());
        digits.fold(0, |acc, &b| acc * 8 + u64::from(b - b'0'))
    }

    #[test]
    fn three_files_round_trip() {
        let files: [(&str, Vec<u8>); 3] = [("empty", vec![]), ("one", vec![b'x']), ("big/part\u{e9}", vec![7; 513])];
        let mut tar = TarBuilder::new();
        assert!(tar.is_empty());
        for (name, data) in &files {
            let want = tar.size_with(data.len());
            tar.add(name, data).unwrap();
            assert_eq!(tar.len(), want);
        }
        let out = tar.finish();
        assert_eq!(out.len(), 512 + 512 + 512 + 512 * 3 + 1024);
        assert_eq!(out.len() % BLOCK, 0);

        let mut pos = 0;
        for (name, data) in &files {
            let h = &out[pos..pos + BLOCK];
            let sum: u64 = h
                .iter()
                .enumerate()
                .map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u64::from(b) })
                .sum();
            assert_eq!(octal(&h[148..156]), sum);
            assert_eq!(&h[154..156], b"\0 ");
            assert_eq!(&h[257..265], b"ustar\x0000");
            assert_eq!(h[156], b'0');
            let stored = name.replace('/', "_").replace('\u{e9}', "__");
            assert_eq!(&h[..stored.len()], stored.as_bytes());
            assert_eq!(h[stored.len()], 0);
            assert_eq!(octal(&h[124..136]), data.len() as u64);
            pos += BLOCK;
            assert_eq!(&out[pos..pos + data.len()], data.as_slice());
            pos += data.len().next_multiple_of(BLOCK);
        }
        assert!(out[pos..].iter().all(|&b| b == 0));

        let path = std::env::temp_dir().join(format!("sluice-tar-test-{}.tar", std::process::id()));
        std::fs::write(&path, &out).unwrap();
        let listed = std::process::Command::new("tar").arg("-tvf").arg(&path).output();
        std::fs::remove_file(&path).unwrap();
        let Ok(listed) = listed else { return }; // no tar on PATH
        assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
        let text = String::from_utf8(listed.stdout).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        for (line, (name, size)) in lines.iter().zip([("empty", 0), ("one", 1), ("big_part__", 513)]) {
            assert!(line.starts_with("-rw-r--r--"), "{line}");
            assert!(line.ends_with(&format!(" {name}")), "{line}");
            assert!(line.split_whitespace().any(|w| w == size.to_string()), "{line}");
        }
    }

    #[test]
    fn names_and_limits() {
        let h = header(&"a".repeat(300), 0).unwrap();
        assert_eq!(h[..100].iter().filter(|&&b| b == b'a').count(), 99);
        assert_eq!(&header("..", 0).unwrap()[..2], b"_\0");
        assert_eq!(&header("", 0).unwrap()[..2], b"_\0");
        assert_eq!(&header("a\nb c", 0).unwrap()[..6], b"a_b c\0");
        assert!(header("max", MAX_SIZE).is_ok());
        let err = header("big", MAX_SIZE + 1).unwrap_err();
        assert!(err.to_string().contains("8589934592 bytes"), "{err}");
        assert_eq!(TarBuilder::new().size_with(0), 512);
        assert_eq!(TarBuilder::new().size_with(513), 1536);
        let mut t = TarBuilder::new();
        let want = t.finished_size_with(700);
        t.add("a", &[1; 700]).unwrap();
        assert_eq!(t.finish().len(), want);
        assert_eq!(TarBuilder::default().finish(), vec![0; 1024]);
    }
}
