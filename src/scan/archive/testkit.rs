//! Archive builders for the tests (unit tests here, and `tests/archive.rs`
//! through `#[path]`): every archive a test uses is generated, never
//! fetched. The crates' writers, plus a flag flip for encrypted zips and a
//! streamed zip of zeros for bombs; RAR is built by hand in `rar.rs`.

#![allow(dead_code)]

use std::io::{Cursor, Write};

/// A zip of `(name, data)` entries, deflated.
pub fn zip(files: &[(&str, &[u8])]) -> Vec<u8> {
    zip_with(files, zip::CompressionMethod::Deflated)
}

/// [`zip`] with its members compressed by `method`.
pub fn zip_with(files: &[(&str, &[u8])], method: zip::CompressionMethod) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(method);
    for (name, data) in files {
        w.start_file(*name, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// A zip of one member compressed with LZMA (method 14, with its end
/// marker), laid out by hand: the zip crate does not write LZMA.
pub fn zip_lzma(name: &str, data: &[u8]) -> Vec<u8> {
    let opts = lzma_rust2::LzmaOptions::with_preset(6);
    let mut w = lzma_rust2::LzmaWriter::new_no_header(Vec::new(), &opts, true).unwrap();
    w.write_all(data).unwrap();
    let props = w.props();
    // LZMA SDK version, the properties' size, the properties, the stream.
    let mut packed = vec![9, 20, 5, 0, props];
    packed.extend(opts.dict_size.to_le_bytes());
    packed.extend(w.finish().unwrap());
    // Flag 2: the stream has its end marker.
    zip_raw(name, 14, 2, &packed, data)
}

/// A zip of one member whose data is `packed`, said to be compressed with
/// `method` (with the general purpose `flags`) from `data`.
pub fn zip_raw(name: &str, method: u16, flags: u16, packed: &[u8], data: &[u8]) -> Vec<u8> {
    let mut crc = flate2::Crc::new();
    crc.update(data);
    // Version needed 6.3, flags, method, time, date, CRC, sizes, name length.
    let mut common = Vec::new();
    for v in [63u16, flags, method, 0, 0x21] {
        common.extend(v.to_le_bytes());
    }
    common.extend(crc.sum().to_le_bytes());
    common.extend((packed.len() as u32).to_le_bytes());
    common.extend((data.len() as u32).to_le_bytes());
    common.extend((name.len() as u16).to_le_bytes());
    common.extend(0u16.to_le_bytes()); // extra field length
    let mut out = b"PK\x03\x04".to_vec();
    out.extend(&common);
    out.extend(name.as_bytes());
    out.extend(packed);
    let cd_at = out.len() as u32;
    out.extend(b"PK\x01\x02");
    out.extend(63u16.to_le_bytes()); // made by
    out.extend(&common);
    out.extend([0; 14]); // comment length, disk, attributes, local header at 0
    out.extend(name.as_bytes());
    let cd_len = out.len() as u32 - cd_at;
    out.extend(b"PK\x05\x06");
    out.extend([0, 0, 0, 0, 1, 0, 1, 0]);
    out.extend(cd_len.to_le_bytes());
    out.extend(cd_at.to_le_bytes());
    out.extend([0, 0]);
    out
}

pub fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

pub fn gz(data: &[u8], name: Option<&str>) -> Vec<u8> {
    let mut b = flate2::GzBuilder::new();
    if let Some(n) = name {
        b = b.filename(n);
    }
    let mut e = b.write(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn bz2(data: &[u8]) -> Vec<u8> {
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn xz(data: &[u8]) -> Vec<u8> {
    let mut e = lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::with_preset(1)).unwrap();
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn sevenz(files: &[(&str, &[u8])]) -> Vec<u8> {
    sevenz_with(files, sevenz_rust2::EncoderMethod::LZMA2)
}

/// [`sevenz`] with its contents compressed by `method`.
pub fn sevenz_with(files: &[(&str, &[u8])], method: sevenz_rust2::EncoderMethod) -> Vec<u8> {
    let mut w = sevenz_rust2::ArchiveWriter::new(Cursor::new(Vec::new())).unwrap();
    w.set_content_methods(vec![method.into()]);
    for (name, data) in files {
        w.push_archive_entry(sevenz_rust2::ArchiveEntry::new_file(name), Some(*data))
            .unwrap();
    }
    w.finish().unwrap().into_inner()
}

pub fn cab(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = cab::CabinetBuilder::new();
    let folder = b.add_folder(cab::CompressionType::MsZip);
    for (name, _) in files {
        folder.add_file(*name);
    }
    let mut w = b.build(Cursor::new(Vec::new())).unwrap();
    let mut i = 0;
    while let Some(mut f) = w.next_file().unwrap() {
        f.write_all(files[i].1).unwrap();
        i += 1;
    }
    w.finish().unwrap().into_inner()
}

/// Sets the "encrypted" bit of every local and central header.
pub fn encrypt_flag(mut z: Vec<u8>) -> Vec<u8> {
    for i in 0..z.len().saturating_sub(10) {
        match &z[i..i + 4] {
            b"PK\x03\x04" => z[i + 6] |= 1,
            b"PK\x01\x02" => z[i + 8] |= 1,
            _ => {}
        }
    }
    z
}

/// A deflated zip entry of `n` zeros, written streaming (the test's
/// memory is the compressed size, about n/1000).
pub fn zip_bomb(n: usize) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(n > u32::MAX as usize);
    w.start_file("zeros.txt", opts).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    for _ in 0..n / chunk.len() {
        w.write_all(&chunk).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// An ACE archive's start (a format neither sluice nor clamd opens).
pub fn ace() -> Vec<u8> {
    let mut a = vec![0x11, 0x22, 0x31, 0x00, 0x00, 0x00, 0x00];
    a.extend(b"**ACE**\x14\x14\x02\x00invoice.exe and the rest");
    a
}
