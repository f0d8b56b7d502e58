//! Zip members: names by our own lenient reading, contents through the
//! zip crate, in every method it decodes here, with the memory a decoder
//! would allocate bounded first.

use std::io::{self, Read};

use super::{SEVENZ_MEM_KB, UnscannableKind, Walk};

/// The same bound as 7z's for a zip member's LZMA dictionary or PPMd
/// model, which the zip crate would allocate (and zero) whatever its size.
const ZIP_DECODER_MEM: u64 = (SEVENZ_MEM_KB as u64) << 10;

/// Zip compression methods sluice unpacks (an entry in one of them that
/// still does not open is encrypted or damaged, not in an unknown method).
const ZIP_METHODS_UNPACKED: [zip::CompressionMethod; 6] = {
    use zip::CompressionMethod as M;
    [M::STORE, M::DEFLATE, M::DEFLATE64, M::BZIP2, M::LZMA, M::PPMD]
};

/// Zip compression methods sluice leaves to clamd, which unpacks them:
/// shrink, reduce and implode (no decoder here), xz (the zip crate's xz
/// reader takes a dictionary of any size the member asks for); and AES,
/// an encrypted entry, reported as such. Every other method sluice cannot
/// unpack (Zstandard, WavPack, ...) nobody does.
const ZIP_METHODS_FOR_SCANNER: [zip::CompressionMethod; 8] = {
    use zip::CompressionMethod as M;
    [
        M::XZ,
        M::SHRINK,
        M::REDUCE_1,
        M::REDUCE_2,
        M::REDUCE_3,
        M::REDUCE_4,
        M::IMPLODE,
        M::AES,
    ]
};

/// The memory a zip member's decoder would allocate before its first
/// octet: an LZMA dictionary (no larger than the member, as the decoder
/// caps it) or a PPMd model, read from the start of the packed data; 0 for
/// the other methods. `raw` is the member's packed data.
fn decoder_memory<R: Read>(raw: &mut zip::read::ZipFile<'_, R>) -> u64 {
    use zip::CompressionMethod as M;
    let method = raw.compression();
    let size = raw.size();
    let mut head = [0u8; 9];
    if method == M::LZMA {
        // LZMA SDK version (2), properties size (2), properties: lc/lp/pb, dictionary size.
        if raw.read_exact(&mut head).is_ok() {
            let dict = u32::from_le_bytes([head[5], head[6], head[7], head[8]]);
            return u64::from(dict).min(size);
        }
    } else if method == M::PPMD && raw.read_exact(&mut head[..2]).is_ok() {
        // Order (4 bits), then the model's size in MiB less one (8 bits).
        let p = u16::from_le_bytes([head[0], head[1]]);
        return (u64::from((p >> 4) & 0xff) + 1) << 20;
    }
    0
}

impl Walk<'_> {
    pub(super) fn zip(&mut self, data: &[u8], depth: usize) {
        // Names by our own lenient reading (both directories, truncated
        // and doctored archives), the contents through the zip crate.
        let listing = crate::scan::sniff::zip_entries(data, self.limits.max_entries.saturating_add(1));
        for n in listing.names {
            if !self.name(n) {
                return;
            }
        }
        if listing.encrypted {
            self.unscannable(UnscannableKind::Encrypted, "encrypted zip archive".into());
        }
        let Ok(mut zip) = zip::ZipArchive::new(io::Cursor::new(data)) else {
            return;
        };
        for i in 0..zip.len() {
            if self.stop() {
                return;
            }
            // Encrypted entries (reported above) and compression methods
            // we do not unpack: the names were checked, clamd gets the rest
            // if it can unpack them, else nobody can.
            let method = match zip.by_index_raw(i) {
                Ok(mut raw) => {
                    let need = decoder_memory(&mut raw);
                    if need > ZIP_DECODER_MEM {
                        self.past(format!(
                            "a zip member that needs {need} octets of decoder memory (more than {ZIP_DECODER_MEM})"
                        ));
                        return;
                    }
                    Ok(raw.compression())
                }
                Err(e) => Err(e),
            };
            let Ok(file) = zip.by_index(i) else {
                if let Ok(m) = method
                    && !ZIP_METHODS_UNPACKED.contains(&m)
                    && !ZIP_METHODS_FOR_SCANNER.contains(&m)
                {
                    self.unscannable(
                        UnscannableKind::Unknown,
                        format!("zip member compressed with {m}, which neither sluice nor clamd unpacks"),
                    );
                }
                continue;
            };
            if !file.is_file() {
                continue;
            }
            let mut r = self.counted(file);
            if let Err(e) = self.member(&mut r, depth + 1) {
                self.failed("zip", &e);
            }
        }
    }
}
