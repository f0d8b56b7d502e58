//! Compressed streams read to their end the way the command-line tools
//! read them.

use std::io::{self, Read};

/// A compressed stream that may be followed by more of its kind:
/// gzip members, bzip2 streams.
pub(super) trait Stream<'a>: Read + Sized {
    /// How the next one starts.
    const MAGIC: &'static [u8];
    fn open(data: &'a [u8]) -> Self;
    /// The input after what this one has read.
    fn rest(&self) -> &'a [u8];
}

impl<'a> Stream<'a> for flate2::bufread::GzDecoder<&'a [u8]> {
    const MAGIC: &'static [u8] = b"\x1f\x8b\x08";
    fn open(data: &'a [u8]) -> Self {
        flate2::bufread::GzDecoder::new(data)
    }
    fn rest(&self) -> &'a [u8] {
        self.get_ref()
    }
}

impl<'a> Stream<'a> for bzip2::bufread::BzDecoder<&'a [u8]> {
    const MAGIC: &'static [u8] = b"BZh";
    fn open(data: &'a [u8]) -> Self {
        bzip2::bufread::BzDecoder::new(data)
    }
    fn rest(&self) -> &'a [u8] {
        self.get_ref()
    }
}

/// Every stream of a gzip or bzip2 file, as gunzip and bunzip2 read it:
/// `cat a.gz b.gz` is one valid file (a tar split across members hid its
/// later names from a one-member reader), and what follows the last stream
/// without starting like one (padding, or junk that makes each copy of a
/// mail unique) is ignored, where the crates' multi-stream readers fail on
/// it (and so no name inside was checked).
pub(super) struct Concatenated<S> {
    stream: Option<S>,
}

impl<'a, S: Stream<'a>> Concatenated<S> {
    pub(super) fn new(data: &'a [u8]) -> Self {
        Concatenated {
            stream: Some(S::open(data)),
        }
    }
}

impl Concatenated<flate2::bufread::GzDecoder<&[u8]>> {
    /// The file name the first member's header stores.
    pub(super) fn name(&self) -> Option<String> {
        let h = self.stream.as_ref()?.header()?;
        Some(String::from_utf8_lossy(h.filename()?).into_owned())
    }
}

impl<'a, S: Stream<'a>> Read for Concatenated<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(s) = &mut self.stream {
            let n = s.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // This one ended: another follows, or nothing that counts.
            let rest = s.rest();
            self.stream = rest.starts_with(S::MAGIC).then(|| S::open(rest));
        }
        Ok(0)
    }
}
