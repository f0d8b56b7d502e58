//! Builders of RAR block layouts for the tests (here, not in the tests'
//! file, so the archive tests and the end-to-end tests share them).

/// A RAR 4 archive: the signature, a main header (`encrypted_headers`:
/// MHD_PASSWORD), one file header per `(name, data, encrypted)`, and
/// the end block. CRCs are zero (we do not check them).
pub fn rar4(files: &[(&str, &[u8], bool)], encrypted_headers: bool) -> Vec<u8> {
    rar4_method(files, encrypted_headers, 0x30)
}

/// [`rar4`] with its files' data marked compressed (method "normal"):
/// only unRAR would read it (the data is the octets given, not really
/// compressed; nothing here decompresses).
pub fn rar4_compressed(files: &[(&str, &[u8], bool)]) -> Vec<u8> {
    rar4_method(files, false, 0x33)
}

fn rar4_method(files: &[(&str, &[u8], bool)], encrypted_headers: bool, method: u8) -> Vec<u8> {
    let mut out = super::SIG4.to_vec();
    let main_flags: u16 = if encrypted_headers { 0x0080 } else { 0 };
    out.extend([0, 0, 0x73]);
    out.extend(main_flags.to_le_bytes());
    out.extend(13u16.to_le_bytes());
    out.extend([0; 6]);
    for (name, data, encrypted) in files {
        let flags: u16 = 0x8000 | if *encrypted { 0x0004 } else { 0 };
        file4_method(&mut out, flags, name.as_bytes(), data, method);
    }
    out.extend([0, 0, 0x7b, 0, 0x40, 7, 0]);
    out
}

/// A RAR 4 file header with flags and raw name bytes, then the data.
pub fn file4(out: &mut Vec<u8>, flags: u16, name: &[u8], data: &[u8]) {
    file4_method(out, flags, name, data, 0x30);
}

fn file4_method(out: &mut Vec<u8>, flags: u16, name: &[u8], data: &[u8], method: u8) {
    let size = 32 + name.len();
    out.extend([0, 0, 0x74]);
    out.extend(flags.to_le_bytes());
    out.extend((size as u16).to_le_bytes());
    out.extend((data.len() as u32).to_le_bytes()); // packed
    out.extend((data.len() as u32).to_le_bytes()); // unpacked
    out.push(2); // host OS: Windows
    out.extend([0; 4]); // file CRC
    out.extend([0; 4]); // time
    out.extend([20, method]); // version 2.0, the method (0x30 "store")
    out.extend((name.len() as u16).to_le_bytes());
    out.extend([0x20, 0, 0, 0]); // attributes
    out.extend(name);
    out.extend(data);
}

fn vint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// A RAR 5 block: CRC32 (zero), size, then type, flags and `fields`,
/// with an optional extra area and data.
fn block5(out: &mut Vec<u8>, kind: u64, fields: &[u8], extra: &[u8], data: &[u8]) {
    let mut h = Vec::new();
    vint(kind, &mut h);
    let flags = u64::from(!extra.is_empty()) | (u64::from(!data.is_empty()) << 1);
    vint(flags, &mut h);
    if !extra.is_empty() {
        vint(extra.len() as u64, &mut h);
    }
    if !data.is_empty() {
        vint(data.len() as u64, &mut h);
    }
    h.extend(fields);
    h.extend(extra);
    out.extend([0; 4]);
    vint(h.len() as u64, out);
    out.extend(h);
    out.extend(data);
}

/// A RAR 5 archive: main header, one file header per `(name, data,
/// encrypted)` (an encryption record in its extra area), end block;
/// or, with `encrypted_headers`, an archive encryption header first.
pub fn rar5(files: &[(&str, &[u8], bool)], encrypted_headers: bool) -> Vec<u8> {
    rar5_method(files, encrypted_headers, 0)
}

/// [`rar5`] with its files' data marked compressed (method 3,
/// "normal"), as [`rar4_compressed`].
pub fn rar5_compressed(files: &[(&str, &[u8], bool)]) -> Vec<u8> {
    rar5_method(files, false, 3)
}

fn rar5_method(files: &[(&str, &[u8], bool)], encrypted_headers: bool, method: u64) -> Vec<u8> {
    let mut out = super::SIG5.to_vec();
    if encrypted_headers {
        block5(&mut out, 4, &[0, 0, 15], &[], &[]);
        out.extend([0x5a; 48]); // what would be encrypted headers
        return out;
    }
    block5(&mut out, 1, &[0], &[], &[]);
    for (name, data, encrypted) in files {
        let mut f = Vec::new();
        vint(0, &mut f); // file flags
        vint(data.len() as u64, &mut f);
        vint(0x20, &mut f); // attributes
        vint(method << 7, &mut f); // compression information: the method (0 "store") in bits 7 to 9
        vint(0, &mut f); // host OS: Windows
        vint(name.len() as u64, &mut f);
        f.extend(name.as_bytes());
        let mut extra = Vec::new();
        if *encrypted {
            // Size, type 1 (encryption), version, flags, KDF count, salt and IV.
            extra.extend([36, 1, 0, 0, 15]);
            extra.extend([0; 32]);
        }
        block5(&mut out, 2, &f, &extra, data);
    }
    block5(&mut out, 5, &[0], &[], &[]);
    out
}
