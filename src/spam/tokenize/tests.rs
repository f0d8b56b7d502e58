use super::*;
use std::collections::HashSet;

fn has(tokens: &[String], t: &str) -> bool {
    tokens.iter().any(|x| x == t)
}

#[test]
fn plain_message() {
    let raw = b"From sender@example.org Mon Jan  1 00:00:00 2024\n\
From: \"Alice Smith\" <alice@mail.example.org>\n\
To: bob@example.net\n\
Subject: Meeting agenda for Tuesday\n\
X-Mailer: Frobnicator 2.1 (build 7)\n\
Received: from a by b\n\
Received: from c by d\n\
Message-ID: <1@example.org>\n\
Date: Mon, 1 Jan 2024 00:00:00 +0000\n\
\n\
Hi Bob, don't forget the meeting. It costs $100 and it's FREE!!! at the office.\n\
See http://www.Example.com/path and 555-123-4567.\n";
    let t = tokens(raw);
    for want in [
        "s:meeting",
        "s:agenda",
        "s:tuesday",
        "f:alice",
        "f:smith",
        "f:mail.example.org",
        "f:example.org",
        "to:example.net",
        "h:xm:frobnicator",
        "h:ct:none",
        "h:rcvd:2",
        "don't",
        "$100",
        "free",
        "free!",
        "FREE",
        "p:!!!",
        "meeting",
        "office",
        "u:www.example.com",
        "u:example.com",
        "num:3-3-4",
        "h:8bit:0",
        // Word pairs.
        "forget the",
        "the meeting",
        "s:meeting agenda",
        // Header structure.
        "hn:x-mailer",
        "h:xmv:Aa 9.9 (a 9)",
        "h:mid:9",
        "h:tz:+0000",
        "h:date:Aa, 9 Aa 9 9:9:9 +9",
        "rc:helo:bare",
        "up:path",
        "u:http",
        // Header order (Received left out), To vs. From domain.
        "ho:^>from",
        "ho:from>to",
        "ho:x-mailer>message-id",
        "h:todom:differs",
    ] {
        assert!(has(&t, want), "missing {want} in {t:?}");
    }
    assert!(!t.iter().any(|x| x.starts_with("ho:") && x.contains("received")));
    assert!(!has(&t, "h:xm:none"));
    // The mbox separator line is not a header.
    assert!(!has(&t, "sender"));
    // Short words are dropped.
    assert!(!has(&t, "hi"));
    // No duplicates.
    let set: HashSet<&String> = t.iter().collect();
    assert_eq!(set.len(), t.len());
}

#[test]
fn content_type_shape_and_transfer_encoding() {
    let raw = b"From: a@example.org\n\
To: b@example.org\n\
Subject: hello there\n\
MIME-Version: 1.0\n\
Content-Type: text/plain;\n\tcharset=\"us-ascii\"; format=flowed\n\
Content-Transfer-Encoding: Quoted-Printable\n\
\n\
Some words here.\n";
    let t = tokens(raw);
    for want in [
        "h:ctp:charset\"nl",
        "h:ctp:format=sp",
        "h:cte:quoted-printable",
        "h:xm:none",
        "h:todom:same",
    ] {
        assert!(has(&t, want), "missing {want} in {t:?}");
    }
}

#[test]
fn message_tokens_match_tokens() {
    let raw = b"From: \"Shop\" <deals@mail.shop.example.co.uk>\nTo: a@b.example\nSubject: Big SALE 50% off\n\
Message-ID: <a1b2c3d4e5f6.20240101@shop.example.co.uk>\nMIME-Version: 1.0\n\
Content-Type: multipart/alternative; boundary=\"----=_Part_123_456.789\"\n\n\
------=_Part_123_456.789\nContent-Type: text/plain; charset=us-ascii\n\nBuy now at https://www.shop.example.co.uk/sale/items?id=12345\n\
------=_Part_123_456.789\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n\
<p>Buy <b>now</b> &eacute;t&eacute;</p>\n------=_Part_123_456.789--\n";
    let t = tokens(raw);
    let parsed = MessageParser::default().parse(&raw[..]).unwrap();
    assert_eq!(message_tokens(&parsed), t);
    for want in [
        "f:mail.shop.example.co.uk",
        "f:example.co.uk",
        "u:www.shop.example.co.uk",
        "u:example.co.uk",
        "u:https",
        "u:query",
        "up:sale",
        "up:items",
        "up:num:5",
        "h:mime:malt,tp,th",
        "h:bnd:----=_Aa_9_9.9",
        "h:mid:h.9",
        "h:mid:dom:same",
        "s:SALE",
        "s:big sale",
        "été",
        "buy now",
    ] {
        assert!(has(&t, want), "missing {want} in {t:?}");
    }
}

#[test]
fn received_structure() {
    let raw =
        b"Received: from mx.example.org (mx.example.org [192.0.2.1]) by in.example.net (Postfix) with ESMTPS id 1;\n\
\tMon, 1 Jan 2024 00:00:30 +0000\n\
Received: from pc (unknown [10.1.2.3]) by mx.example.org with SMTP; Mon, 1 Jan 2024 00:00:10 +0000\n\
Date: Sun, 31 Dec 2023 12:00:00 -0500\nFrom: a@example.org\nSubject: x\n\nhello there\n";
    let t = tokens(raw);
    for want in [
        "h:rcvd:2",
        "rc:with:esmtps",
        "rc:with:smtp",
        "rc:helo:same",
        "rc:helo:bare",
        "rc:dom:example.org",
        "rc:rdns:unknown",
        "rc:ip:public4",
        "rc:ip:private",
        "rc:by:example.net",
        "h:tz:-0500",
        "h:dskew:-36h",
    ] {
        assert!(has(&t, want), "missing {want} in {t:?}");
    }
    // Never raw addresses.
    assert!(
        !t.iter().any(|x| x.contains("192.0.2.1") || x.contains("10.1.2.3")),
        "{t:?}"
    );
}

#[test]
fn shapes_and_domains() {
    assert_eq!(shape("001a01c24a1e$8f0b2b80$6501a8c0", 20), "h$h$h");
    assert_eq!(
        shape("Thu, 22 Aug 2002  15:15:43 -0700 (PDT)", 30),
        "Aa, 9 Aa 9 9:9:9 -9 (A)"
    );
    assert_eq!(number_shape("1,000.00"), "1,3.2");
    assert_eq!(registrable("a.b.example.com"), Some("example.com"));
    assert_eq!(registrable("www.example.co.uk"), Some("example.co.uk"));
    assert_eq!(registrable("example.com"), Some("example.com"));
    assert_eq!(registrable("localhost"), None);
    assert_eq!(skew_bucket(-100), "10m");
    assert_eq!(skew_bucket(86_400 * 3), "+far");
}

#[test]
fn crlf_and_reply_to() {
    let raw = b"From: x@a.example\r\nReply-To: Claims Dept <claims@payout.example.biz>\r\nSubject: Winner\r\n\r\nclaim your prize\r\n";
    let t = tokens(raw);
    for want in [
        "r:claims",
        "r:dept",
        "r:payout.example.biz",
        "r:example.biz",
        "s:winner",
        "claim",
        "prize",
    ] {
        assert!(has(&t, want), "missing {want} in {t:?}");
    }
}

#[test]
fn html_message() {
    let raw = b"From: a@b.example\nSubject: offer\nContent-Type: text/html; charset=\"windows-1252\"\n\n\
<html><head><style>.x { color: red }</style><script>var hidden = 1;</script></head>\
<body><p>Cheap&nbsp;pills &amp; <b>watches</b></p><!-- comment secret -->\
<a href=\"http://click.Tracker.example.info/x?y=1\">here</a><img src=\"https://203.0.113.9/p.gif\"></body></html>\n";
    let t = tokens(raw);
    for want in [
        "h:ct:text/html",
        "h:cs:windows-1252",
        "cheap",
        "pills",
        "watches",
        "here",
        "tag:a",
        "tag:img",
        "tag:b",
        "u:click.tracker.example.info",
        "u:example.info",
        "u:ip",
    ] {
        assert!(has(&t, want), "missing {want} in {t:?}");
    }
    for bad in ["html", "body", "href", "color", "hidden", "secret", "nbsp"] {
        assert!(!has(&t, bad), "unexpected {bad} in {t:?}");
    }
}

#[test]
fn base64_part() {
    // "Unbelievable mortgage rates today" base64 encoded.
    let raw =
        b"From: a@b.example\nSubject: hi\nMIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=\"XX\"\n\n\
--XX\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n\
VW5iZWxpZXZhYmxlIG1vcnRnYWdlIHJhdGVzIHRvZGF5\n--XX--\n";
    let t = tokens(raw);
    for want in [
        "unbelievable",
        "mortgage",
        "rates",
        "today",
        "h:ct:multipart/alternative",
        "h:cs:utf-8",
    ] {
        assert!(has(&t, want), "missing {want} in {t:?}");
    }
    assert!(!has(&t, "vw5izwxpzxzhymxlig1vcnrnywdlihjhdgvzihrvzgf5"));
}

#[test]
fn long_tokens_are_skipped_and_bounded() {
    let mut body = String::from("Subject: x\n\n");
    body.push_str(&"a".repeat(100));
    body.push('\n');
    for i in 0..10_000u32 {
        // Distinct letter-only words (numbers would be reduced to shapes).
        let word: String = (0..4)
            .map(|k| char::from(b'a' + (i / 26u32.pow(k) % 26) as u8))
            .collect();
        body.push_str(&format!("word{word} "));
    }
    let t = tokens(body.as_bytes());
    assert!(has(&t, "sk:aaaaaaaa:100"), "{:?}", &t[..10]);
    assert_eq!(t.len(), MAX_TOKENS);
    assert!(t.iter().all(|x| x.len() <= MAX_TOKEN_LEN));
}

#[test]
fn non_ascii_bucket_and_no_control_chars() {
    let raw = "Subject: привет\nContent-Type: text/plain; charset=utf-8\n\nпривет мир, купите сейчас\tTab\n";
    let t = tokens(raw.as_bytes());
    assert!(has(&t, "s:привет"));
    assert!(has(&t, "купите"));
    assert!(has(&t, "h:8bit:ge50"));
    assert!(t.iter().all(|x| !x.contains(['\t', '\n', '\r'])));
}

#[test]
fn empty_and_garbage() {
    assert!(tokens(b"").len() <= MAX_TOKENS);
    let _ = tokens(b"From ");
    let _ = tokens(b"\xff\xfe\x00\x01<<<&#xffffffff;&#99999999999;");
    let _ = tokens(b"Content-Type: text/html\n\n<a href=\"http://@@@..\">&#x;&;&#;<script");
}

#[test]
fn pathological_inputs_are_fast() {
    let start = std::time::Instant::now();
    for unit in ["<script>", "&", "&#", "<!--", "http://", "www.a", "!", "a'", "<"] {
        let mut raw = String::from("Content-Type: text/html\n\n");
        raw.push_str(&unit.repeat(200_000 / unit.len()));
        let _ = tokens(raw.as_bytes());
        let _ = tokens(&raw.as_bytes()[24..]);
    }
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn long_url_path_of_multibyte_characters() {
    // The path cap (512 bytes) used to cut a character in two (found by
    // the spam_score fuzz target).
    let mut raw = b"Content-Type: text/plain; charset=koi8-r\r\n\r\nClick here: www.bit.ly/".to_vec();
    raw.extend(std::iter::repeat_n(0xffu8, 600));
    let t = tokens(&raw);
    assert!(t.iter().any(|t| t.starts_with("u:")), "{t:?}");
    let mut utf8 = b"\n\nsee http://a.example/".to_vec();
    utf8.extend("é".repeat(400).as_bytes());
    let _ = tokens(&utf8);
}

#[test]
fn fuzz_never_panics() {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let pieces: [&[u8]; 16] = [
        b"From: ",
        b"Subject: ",
        b"Content-Type: text/html; charset=",
        b"Content-Type: multipart/mixed; boundary=b\n",
        b"--b\n",
        b"Content-Transfer-Encoding: base64\n",
        b"Content-Transfer-Encoding: quoted-printable\n",
        b"\n",
        b"\r\n",
        b"<a href=\"http://",
        b"&#x",
        b"=?utf-8?B?",
        b"\xc3\xa9\xff",
        b"www.",
        b"!!!$$$",
        b"Content-Type: message/rfc822\n\n",
    ];
    for _ in 0..4000 {
        let len = (next() % 400) as usize;
        let mut buf = Vec::with_capacity(len);
        while buf.len() < len {
            let r = next();
            if r % 4 == 0 {
                buf.extend_from_slice(pieces[(r >> 8) as usize % pieces.len()]);
            } else {
                buf.push((r >> 16) as u8);
            }
        }
        let t = tokens(&buf);
        assert!(t.len() <= MAX_TOKENS);
        assert!(
            t.iter()
                .all(|x| !x.is_empty() && x.len() <= MAX_TOKEN_LEN && !x.contains(['\t', '\n']))
        );
    }
}

#[test]
fn each_text_part_is_tokenized_up_to_the_part_scan_size() {
    let filler = "lorem ipsum dolor sit amet\r\n".repeat(2150); // 60,200 octets
    let raw = format!(
        "Subject: x\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n\
--b\r\nContent-Type: text/plain\r\n\r\ntopplain\r\n{filler}tailplain\r\n\
--b\r\nContent-Type: text/html\r\n\r\n<p>tophtml</p>{filler}<p>tailhtml</p>\r\n--b--\r\n"
    );
    let capped = tokens(raw.as_bytes());
    assert_eq!(
        capped,
        tokens_upto(raw.as_bytes(), PART_TEXT),
        "the default is the rules' default"
    );
    assert!(has(&capped, "topplain") && has(&capped, "tophtml"));
    assert!(!has(&capped, "tailplain") && !has(&capped, "tailhtml"));
    let whole = tokens_upto(raw.as_bytes(), 100_000);
    assert!(has(&whole, "tailplain") && has(&whole, "tailhtml"));
    let parsed = MessageParser::default().parse(raw.as_bytes()).unwrap();
    assert_eq!(message_token_list(&parsed, 100_000).to_strings(), whole);
}
