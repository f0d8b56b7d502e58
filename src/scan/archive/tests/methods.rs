//! Archive methods and streams that clamd or a one-member reader would
//! not open: compressed RAR, every 7z and zip method, decoder memory,
//! ISO images inside archives, multi-stream gzip and bzip2, cut streams.

use super::*;

#[test]
fn a_compressed_rar_is_unscannable_unless_the_scanner_has_unrar() {
    let files: &[(&str, &[u8], bool)] = &[("readme.txt", b"packed", false), ("docs/invoice.exe", EVIL, false)];
    let left_to_scanner = ArchiveLimits {
        compressed_rar_unscannable: false,
        ..limits()
    };
    for rar in [rar_build::rar4_compressed(files), rar_build::rar5_compressed(files)] {
        // Names are read from the headers either way.
        let l = list_one(&rar, &limits());
        assert_eq!(l.names, ["readme.txt", "docs/invoice.exe"]);
        assert_eq!(kind(&l), Some(UnscannableKind::Unknown), "{l:?}");
        assert!(l.unscannable.unwrap().what.starts_with("compressed RAR"));
        let l = list_one(&rar, &left_to_scanner);
        assert_eq!((l.names.len(), kind(&l)), (2, None), "{l:?}");
    }
    // Nested: a compressed RAR stored inside a zip.
    let inner = rar_build::rar5_compressed(&[("a.txt", b"packed", false)]);
    let l = list_one(&zip(&[("in.rar", inner.as_slice())]), &limits());
    assert_eq!(kind(&l), Some(UnscannableKind::Unknown), "{l:?}");
    // Files stored uncompressed are read by sluice: nothing is unscannable.
    let stored = rar_build::rar4(&[("a.txt", b"plain", false)], false);
    assert_eq!(kind(&list_one(&stored, &limits())), None);
}

/// Every method of 7z and zip that sluice unpacks, those clamd does not
/// among them: what is inside is found.
#[test]
fn archives_inside_7z_and_zips_of_every_method_are_opened() {
    use sevenz_rust2::EncoderMethod as S;
    use zip::CompressionMethod as Z;
    let inner = zip(&[("invoice.exe", EVIL)]);
    let files: &[(&str, &[u8])] = &[("readme.txt", b"hello"), ("parts.zip", &inner)];
    let mut cases: Vec<(String, Vec<u8>)> = [S::BZIP2, S::DEFLATE, S::PPMD, S::COPY]
        .into_iter()
        .map(|m| (format!("7z {m:?}"), sevenz_with(files, m)))
        .collect();
    cases.extend(
        [Z::Stored, Z::Bzip2, Z::Ppmd]
            .into_iter()
            .map(|m| (format!("zip {m:?}"), zip_with(files, m))),
    );
    for (method, data) in cases {
        let l = list_one(&data, &limits());
        assert_eq!(l.unscannable, None, "{method}: {l:?}");
        assert!(l.names.contains(&"invoice.exe".to_string()), "{method}: {l:?}");
    }
    let l = list_one(&zip_lzma("parts.zip", &inner), &limits());
    assert_eq!(l.unscannable, None, "LZMA: {l:?}");
    assert_eq!(l.names, ["parts.zip", "invoice.exe"]);
}

#[test]
fn a_zip_member_asking_for_a_huge_decoder_is_past_the_limits_not_allocated() {
    // Claims 4 GiB unpacked, in LZMA with a 4 GiB dictionary: the decoder
    // would allocate (and zero) all of it before the first octet.
    let mut packed = vec![9, 20, 5, 0, 93];
    packed.extend(0xffff_fff0u32.to_le_bytes());
    packed.extend([0; 16]);
    let mut z = zip_raw("big.bin", 14, 2, &packed, b"x");
    let cd = u32::from_le_bytes(z[z.len() - 6..z.len() - 2].try_into().unwrap()) as usize;
    for at in [22, cd + 24] {
        z[at..at + 4].copy_from_slice(&0xffff_fffeu32.to_le_bytes());
    }
    let l = list_one(&z, &limits());
    assert_eq!(l.names, ["big.bin"]);
    assert_eq!(kind(&l), Some(UnscannableKind::PastLimits), "{l:?}");
    // PPMd with a 256 MiB model.
    let l = list_one(&zip_raw("big.bin", 98, 0, &[0xf5, 0x0f, 0, 0], b"x"), &limits());
    assert_eq!(kind(&l), Some(UnscannableKind::PastLimits), "{l:?}");
    // The sizes the tools use by default are well within: a real LZMA zip opens.
    let l = list_one(&zip_lzma("a.txt", b"hello"), &limits());
    assert_eq!((l.names.len(), kind(&l)), (1, None), "{l:?}");
}

#[test]
fn a_zip_member_in_a_method_nobody_unpacks_is_unscannable() {
    // Zstandard (93): sluice has no decoder for it in zip, clamd neither.
    let z = zip_raw("data.bin", 93, 0, b"not really zstd", b"what it would be");
    let l = list_one(&z, &limits());
    assert_eq!(l.names, ["data.bin"]);
    assert_eq!(kind(&l), Some(UnscannableKind::Unknown), "{l:?}");
    let what = l.unscannable.unwrap().what;
    assert_eq!(
        what,
        "zip member compressed with Zstd, which neither sluice nor clamd unpacks"
    );
    // Implode (6) is clamd's to unpack: nothing is said.
    let z = zip_raw("data.bin", 6, 0, b"not really imploded", b"what it would be");
    assert_eq!(kind(&list_one(&z, &limits())), None);
}

#[test]
fn an_iso_inside_an_archive_is_opened() {
    // The image's signature is 32 KiB in: a member is read that far before
    // deciding what it is.
    let img = iso_build::iso(&[("readme.txt", b"hello"), ("setup/invoice.exe", EVIL)], true);
    let l = list_one(&zip(&[("disk.iso", &img)]), &limits());
    assert_eq!(l.unscannable, None, "{l:?}");
    assert!(l.names.contains(&"setup/invoice.exe".to_string()), "{l:?}");
    assert_eq!(l.archives, 2, "{l:?}");
}

#[test]
fn a_gzip_or_bzip2_of_several_members_is_read_to_its_end_and_junk_after_it_ignored() {
    // A tar cut in two, each half gzipped, the two concatenated (as
    // `cat a.gz b.gz`): the banned name is in the second member.
    let t = tar(&[("readme.txt", b"hello"), ("docs/invoice.exe", EVIL)]);
    let mut two = gz(&t[..1024], Some("files.tar"));
    two.extend(gz(&t[1024..], None));
    let l = list_one(&two, &limits());
    assert_eq!(l.unscannable, None, "{l:?}");
    assert!(l.names.contains(&"docs/invoice.exe".to_string()), "{l:?}");
    assert!(l.names.contains(&"files.tar".to_string()), "{l:?}");
    // What follows the last member and does not start like one (padding,
    // junk to make each copy unique) is ignored, as gunzip does.
    for tail in [vec![0u8; 512], b"random junk after the stream".to_vec()] {
        let mut g = two.clone();
        g.extend(&tail);
        let l = list_one(&g, &limits());
        assert_eq!(l.unscannable, None, "{l:?}");
        assert!(l.names.contains(&"docs/invoice.exe".to_string()), "{l:?}");
    }
    // The same for bzip2: two streams, then junk.
    let mut two_bz = bz2(&t[..1024]);
    two_bz.extend(bz2(&t[1024..]));
    two_bz.extend(b"junk");
    let l = list_one(&two_bz, &limits());
    assert_eq!(l.unscannable, None, "{l:?}");
    assert!(l.names.contains(&"docs/invoice.exe".to_string()), "{l:?}");
    // A member cut short is damaged.
    let mut cut = two.clone();
    cut.extend(&gz(b"more", None)[..12]);
    assert_eq!(kind(&list_one(&cut, &limits())), Some(UnscannableKind::Unknown));
}

#[test]
fn names_before_the_damage_in_a_cut_stream_are_still_checked() {
    // A tgz cut short: the names the tar had before the cut are listed (a
    // banned one is found), and the archive is also reported damaged.
    let noise: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let t = tar(&[
        ("readme.txt", b"hello"),
        ("docs/invoice.exe", EVIL),
        ("noise.bin", &noise),
    ]);
    let whole = gz(&t, None);
    let cut = &whole[..whole.len() * 3 / 4];
    let l = list_one(cut, &limits());
    assert!(l.names.contains(&"docs/invoice.exe".to_string()), "{l:?}");
    assert_eq!(kind(&l), Some(UnscannableKind::Unknown), "{l:?}");
}
