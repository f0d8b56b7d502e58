use super::*;

fn payload() -> Vec<u8> {
    (0..300u32).map(|i| (i * 7 + i / 13) as u8).collect()
}

/// 6-bit encoder: 4 chars per 3 bytes; after the last data char the
/// group is filled with `pad` (or left short when None).
fn enc6(data: &[u8], alpha: &dyn Fn(u8) -> char, pad: Option<char>) -> String {
    let mut s = String::new();
    for ch in data.chunks(3) {
        let v = (0..3).fold(0u32, |a, i| a << 8 | u32::from(ch.get(i).copied().unwrap_or(0)));
        for i in 0..4 {
            let c = (i < (ch.len() * 8).div_ceil(6)).then(|| alpha((v >> (18 - 6 * i) & 63) as u8));
            s.extend(c.or(pad));
        }
    }
    s
}

fn b64(data: &[u8]) -> String {
    enc6(data, &|x| B64_ALPHABET[usize::from(x)] as char, Some('='))
}

fn uu(data: &[u8]) -> String {
    let alpha = |x: u8| if x == 0 { '`' } else { char::from(x + 0x20) };
    let line = |l: &[u8]| format!("{}{}\n", char::from(l.len() as u8 + 0x20), enc6(l, &alpha, Some('`')));
    data.chunks(45).map(line).collect()
}

/// Inserts `ins` after every `n` chars.
fn every(s: &str, n: usize, ins: &str) -> String {
    let piece = |(i, c): (usize, char)| if i % n == n - 1 { format!("{c}{ins}") } else { c.into() };
    s.chars().enumerate().map(piece).collect()
}

fn has(readings: &[Decoded], want: &[u8]) -> bool {
    readings.iter().any(|r| r.data == want)
}

fn dec(data: &[u8], truncated: bool) -> Decoded {
    Decoded {
        data: data.to_vec(),
        truncated,
    }
}

#[test]
fn canonical_base64_gives_one_reading() {
    let p = payload();
    for data in [&p[..], &p[..299], &p[..298], b"".as_slice(), b"M".as_slice()] {
        let text = every(&b64(data), 76, "\r\n");
        assert!(is_canonical_base64(text.as_bytes()));
        assert_eq!(base64_readings(text.as_bytes(), 1 << 20), [dec(data, false)]);
    }
    for bad in [&b"QQ=A"[..], b"Q===", b"QUJ", b"QU%D", b"===="] {
        assert!(!is_canonical_base64(bad));
    }
}

#[test]
fn base64_tricks_yield_the_payload() {
    let (p, enc) = (payload(), b64(&payload()));
    let tricks = [
        every(&every(&enc, 4, "="), 75, "\n"),
        every(&enc, 4, "=\n"),
        every(&enc, 72, "XX\n"),
        every(&enc, 72, "XX\r\n") + "XX",
        format!("AB\n\n{}", every(&enc, 76, "\n")),
        every(&every(&enc, 7, "\n"), 5, "\r\n"),
        every(&every(&enc, 5, " "), 70, "\n"),
        every(&every(&enc, 5, " "), 72, "Q\n"),
        every(&every(&enc, 3, "%"), 76, "\r\n"),
        every(&enc, 76, "!\r"),
    ];
    for t in &tricks {
        let r = base64_readings(t.as_bytes(), 1 << 20);
        assert!(has(&r, &p) && r.len() <= 4, "no reading gives the payload for {t:?}");
    }
    assert!(is_canonical_base64(every(&enc, 76, "\r").as_bytes()));
}

#[test]
fn base64_reading_kinds() {
    let r = base64_readings(b"QUJD%REVG", 100);
    assert!(has(&r, b"ABCDEF") && has(&r, b"ABC"));
    let r = base64_readings(b"QQ==QUI=", 100);
    assert!(has(&r, b"AAB") && has(&r, b"A"));
    // canonical by count (12 chars), yet a per-line reader sees junk
    let r = base64_readings(b"QUJDXX\nREVGXX\n", 100);
    assert!(is_canonical_base64(b"QUJDXX\nREVGXX\n") && has(&r, b"ABCDEF"));
    assert_eq!(base64_readings(b"QUJD\nREVG\r\nRw==", 100).len(), 1);
    assert_eq!(base64_readings(b"%%%", 10), [dec(b"", false)]);
}

#[test]
fn base64_truncation() {
    let (p, text) = (payload(), b64(&payload()));
    assert_eq!(base64_readings(text.as_bytes(), 10), [dec(&p[..10], true)]);
    assert_eq!(base64_readings(text.as_bytes(), 300), [dec(&p, false)]);
    let r = base64_readings(format!("{text}%").as_bytes(), 7);
    assert!(r.iter().all(|d| d.data.len() <= 7 && d.truncated));
}

#[test]
fn base64_detection() {
    assert!(looks_like_base64(every(&b64(&payload()), 76, "\n").as_bytes()));
    assert!(looks_like_base64(b"UEsD=BBQA=AgAI=AAAA="));
    assert!(!looks_like_base64(b"Hello world, this is an ordinary text message.\n"));
    assert!(!looks_like_base64(b"QUJD"));
}

#[test]
fn qp_readings_cover_variants() {
    // Lowercase escapes dropped, uppercase decoded.
    assert!(qp_readings(b"=0a=41=\n=0a=42", 100).contains(&dec(b"AB", false)));
    let r = qp_readings(b"=0a=41=\n", 100);
    assert!(r.len() == 3 && has(&r, b"\nA") && has(&r, b"=0aA") && has(&r, b"A"));
    let r = qp_readings(b"a=Hhb", 100);
    assert!(r.len() == 2 && has(&r, b"a=Hhb") && has(&r, b"ab"));
    let r = qp_readings(b"x=4", 100);
    assert!(has(&r, b"x=4") && has(&r, b"x"));
    let r = qp_readings(b"a=G\r\nb", 100);
    assert!(has(&r, b"a=G\r\nb") && has(&r, b"a\r\nb"));
    let r = qp_readings(b"ab= \t\rcd=\r\nef=\ngh\r\nij\rk\n=", 100);
    assert_eq!(
        r,
        [dec(b"abcdefgh\r\nij\rk\n", false), dec(b"abcdefgh\nij\rk\n", false)],
        "as sent, and with hard breaks as LF"
    );
    assert_eq!(qp_readings(b"=3D=E9", 100).len(), 1);
    assert_eq!(qp_readings(b"", 100), [dec(b"", false)]);
    assert_eq!(qp_readings(b"=41=42=43", 2), [dec(b"AB", true)]);
}

#[test]
fn qp_detection() {
    assert!(looks_like_qp(b"caf=e9") && looks_like_qp(b"long line= \r\nnext"));
    assert!(!looks_like_qp(b"a = b, c=d") && !looks_like_qp(b"ends with ="));
}

#[test]
fn uudecode_with_and_without_begin() {
    let (p, body) = (payload(), uu(&payload()));
    let full = format!("Hi, see attached.\n\nbegin 644 x.zip\n{body}`\nend\ntrailer M text\n");
    assert!(looks_like_uu(full.as_bytes()) && looks_like_uu(body.as_bytes()));
    let crlf = format!("text\r\n{}", body.replace('\n', "\r\n"));
    for text in [&full, &body, &crlf] {
        assert_eq!(uudecode(text.as_bytes(), 1 << 20), Some(dec(&p, false)));
    }
    assert_eq!(uudecode(body.as_bytes(), 50), Some(dec(&p[..50], true)));
    assert!(uudecode(b"Hello world\nnothing here\n", 100).is_none());
    assert!(!looks_like_uu(b"Hello world\nnothing here\n"));
}

#[test]
fn uudecode_tolerates_missing_and_junk() {
    let data = [1u8, 2, 3, 9, 0, 0, 0, 0, 0];
    let (short, xyz) = (uu(&data), uu(b"xyz"));
    let (short, xyz) = (short.trim_end().trim_end_matches('`'), xyz.trim_end());
    let text = format!("begin 600 a\n{short}\nnot uu\n{xyz}XYZ\n`\nend\n");
    let want = [&data[..], b"xyz"].concat();
    assert_eq!(uudecode(text.as_bytes(), 100), Some(dec(&want, false)));
}

fn hqx_header(name: &[u8], dlen: u32, rlen: u32) -> Vec<u8> {
    let lens = [dlen.to_be_bytes(), rlen.to_be_bytes()].concat();
    [&[name.len() as u8], name, b"\0TEXTttxt\0\0", &lens, &[0x12, 0x34]].concat()
}

fn hqx_text(raw: &[u8]) -> String {
    let lines = every(&enc6(raw, &|x| HQX_ALPHABET[usize::from(x)] as char, None), 64, "\n");
    format!("(This file must be converted with BinHex 4.0)\n\n:{lines}:\n")
}

#[test]
fn binhex_round_trip() {
    assert_eq!(reverse(HQX_ALPHABET).iter().filter(|&&v| v != NO).count(), 64);
    let p = payload();
    let mut raw = hqx_header(b"evil.exe", 300, 4);
    raw.extend(p.iter().chain(b"\xAB\xCDRSRC\0\0"));
    let escape = |&x: &u8| [x].into_iter().chain((x == 0x90).then_some(0));
    let escaped: Vec<u8> = raw.iter().flat_map(escape).collect();
    assert!(escaped.len() > raw.len());
    let text = hqx_text(&escaped);
    assert!(looks_like_binhex(text.as_bytes()) && !looks_like_binhex(b"plain text"));
    let want = Some(dec(&[&p[..], b"RSRC"].concat(), false));
    assert_eq!(binhex_decode(text.as_bytes(), 1 << 20), want);
    assert_eq!(binhex_decode(&text.as_bytes()[46..], 1 << 20), want);
    assert_eq!(binhex_decode(text.as_bytes(), 5), Some(dec(&p[..5], true)));
    let d = binhex_decode(&text.as_bytes()[..text.len() / 2], 1 << 20).unwrap();
    assert!(!d.data.is_empty() && p.starts_with(&d.data));
    assert!(binhex_decode(b"no colon section here", 100).is_none());
}

#[test]
fn binhex_rle() {
    let data = [b"x".as_slice(), &[b'A'; 10], &[0x90, 0x90, 0x90], b"y"].concat();
    let enc = [b"xA".as_slice(), &[0x90, 10, 0x90, 0, 0x90, 3, 0x90, 1], b"y"].concat();
    let raw = [hqx_header(b"r", data.len() as u32, 0), enc, vec![0, 0, 0, 0]].concat();
    assert_eq!(binhex_decode(hqx_text(&raw).as_bytes(), 100), Some(dec(&data, false)));
}

/// A small deterministic generator for the random inputs below.
fn xorshift(mut x: u64) -> impl FnMut() -> u64 {
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

#[test]
fn garbage_never_panics() {
    let mut next = xorshift(0x9E37_79B9_7F4A_7C15u64);
    let special = b"=\r\n \tAMQ`:!%09aFbegin 644 x\nend(This file must be converted with BinHex)\x90";
    // two thirds interesting chars, one third any byte
    let pick = |r: u64| special.get((r >> 8) as usize % 120).copied().unwrap_or(r as u8);
    for _ in 0..4000 {
        let len = (next() % 300) as usize;
        let input: Vec<u8> = (0..len).map(|_| pick(next())).collect();
        let _ = [
            is_canonical_base64(&input),
            looks_like_base64(&input),
            looks_like_qp(&input),
        ];
        let _ = [looks_like_uu(&input), looks_like_binhex(&input)];
        for m in [(next() % 64) as usize, 1 << 16] {
            let b = base64_readings(&input, m);
            assert!(!b.is_empty() && b.len() <= 4 && b.iter().all(|d| d.data.len() <= m));
            let q = qp_readings(&input, m);
            assert!(!q.is_empty() && q.len() <= 8 && q.iter().all(|d| d.data.len() <= m));
            assert!(uudecode(&input, m).is_none_or(|d| d.data.len() <= m));
            assert!(binhex_decode(&input, m).is_none_or(|d| d.data.len() <= m));
        }
    }
}

/// The quoted-printable reader one octet at a time, as it was before runs
/// were copied whole and clean text was decoded once: the oracle for the
/// fast one.
fn qp_reference(input: &[u8], max_out: usize, mode: Qp, lf: bool) -> Decoded {
    let mut out = Out::new(max_out, input.len());
    let mut i = 0;
    while let Some(&c) = input.get(i) {
        i += 1;
        if lf && c == b'\r' && input.get(i) == Some(&b'\n') {
            continue;
        }
        if c != b'=' {
            if !out.push(c) {
                break;
            }
            continue;
        }
        let rest = input.get(i..).unwrap_or_default();
        if let Some(n) = soft_break(rest) {
            i += n;
            continue;
        }
        let any = !matches!(mode, Qp::StrictUpper | Qp::StrictUpperDrop);
        if let [h, l, ..] = rest
            && let (Some(h), Some(l)) = (hex_val(*h, any), hex_val(*l, any))
        {
            i += 2;
            if !out.push((h << 4) | l) {
                break;
            }
        } else if matches!(mode, Qp::DropInvalid | Qp::StrictUpperDrop) {
            i += rest.iter().take(2).take_while(|&&b| b != b'\r' && b != b'\n').count();
        } else if !out.push(b'=') {
            break;
        }
    }
    out.0
}

#[test]
fn quoted_printable_readings_are_those_of_the_octet_by_octet_reader() {
    let mut next = xorshift(0x2545_F491_4F6C_DD1Du64);
    let alphabet = b"==\r\n \tAaFf09gZ=\r\n";
    let modes = [Qp::Lenient, Qp::StrictUpper, Qp::DropInvalid, Qp::StrictUpperDrop];
    let (mut clean, mut several) = (0, 0);
    for round in 0..20_000 {
        let len = (next() % 80) as usize;
        let mut input: Vec<u8> = (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        if round % 2 == 0 {
            // Mostly valid text: lower-case escapes made upper, so the one-reading path is taken often.
            input.iter_mut().for_each(|b| *b = b.to_ascii_uppercase());
        }
        let max = if next().is_multiple_of(4) {
            (next() % 40) as usize
        } else {
            1 << 16
        };
        let mut want: Vec<Decoded> = modes.iter().map(|&m| qp_reference(&input, max, m, false)).collect();
        if memchr::memmem::find(&input, b"\r\n").is_some() {
            want.extend(modes.iter().map(|&m| qp_reference(&input, max, m, true)));
        }
        let want = dedup(want);
        assert_eq!(
            qp_readings(&input, max),
            want,
            "{:?} max {max}",
            String::from_utf8_lossy(&input)
        );
        if qp_has_invalid_escapes(&input) {
            several += 1;
        } else {
            clean += 1;
        }
    }
    assert!(
        clean > 1000 && several > 1000,
        "both paths are taken: {clean} clean, {several} not"
    );
}

/// The base64 guess line by line, as it was before the single pass.
fn looks_like_base64_reference(input: &[u8]) -> bool {
    let input = &input[..input.len().min(SAMPLE)];
    let (mut n, mut good, mut inner_ws) = (0usize, 0usize, 0usize);
    for line in lines(input) {
        for &c in line.trim_ascii() {
            if c == b' ' || c == b'\t' {
                inner_ws += 1;
            } else if !c.is_ascii_whitespace() {
                n += 1;
                if c == b'=' || b64_val(c).is_some() {
                    good += 1;
                }
            }
        }
    }
    n >= 16 && good * 10 >= n * 9 && inner_ws * 10 <= n
}

#[test]
fn base64_fast_paths_agree_with_the_general_readers() {
    let mut next = xorshift(0x9E37_79B9_7F4A_7C15u64 ^ 0xdead_beef);
    let (mut yes, mut no) = (0, 0);
    let alphabet = b"QUJDRA+/=  \t\r\n\x0cxy.-";
    for _ in 0..20_000 {
        let len = (next() % 120) as usize;
        let input: Vec<u8> = (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        let guess = looks_like_base64(&input);
        assert_eq!(
            guess,
            looks_like_base64_reference(&input),
            "{:?}",
            String::from_utf8_lossy(&input)
        );
        if guess {
            yes += 1;
        } else {
            no += 1;
        }
    }
    assert!(yes > 500 && no > 500, "both answers are seen: {yes} yes, {no} no");
    // Canonical text as encoders write it (any wrap, CRLF or LF, padding
    // of 0 to 2): one reading, the stream decode, also when cut short.
    for round in 0..3_000 {
        let data: Vec<u8> = (0..next() % 200).map(|_| next() as u8).collect();
        let text = enc6(&data, &|v| B64_ALPHABET[usize::from(v)] as char, Some('='));
        let wrap = 4 * (1 + (next() % 20) as usize);
        let eol = if round % 2 == 0 { "\r\n" } else { "\n" };
        let chunks: Vec<&str> = text
            .as_bytes()
            .chunks(wrap)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let input = chunks.join(eol) + eol;
        let max = if next().is_multiple_of(3) {
            (next() % 150) as usize
        } else {
            1 << 16
        };
        let readings = base64_readings(input.as_bytes(), max);
        assert_eq!(readings, [b64_decode(input.as_bytes(), max, B64::Stream)], "{input:?}");
        if max >= data.len() {
            assert_eq!(readings[0].data, data);
        }
    }
}
