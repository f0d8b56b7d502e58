use std::borrow::Cow;

use super::header::{LINE_LIMIT, pvalue};
use super::*;

const ID: &str = "mx.test.example";

fn strip(msg: &str) -> String {
    String::from_utf8(strip_forged_results(msg.as_bytes(), ID).into_owned()).unwrap()
}

#[test]
fn strips_ours_and_keeps_others() {
    let msg = "Received: from a\r\n\
               Authentication-Results: mx.test.example; spf=pass smtp.mailfrom=a@b\r\n\
               Authentication-Results: other.example; dkim=pass\r\n\
               Subject: hi\r\n\
               \r\n\
               body\r\n";
    assert_eq!(
        strip(msg),
        "Received: from a\r\nAuthentication-Results: other.example; dkim=pass\r\nSubject: hi\r\n\r\nbody\r\n"
    );
}

#[test]
fn strips_folded_and_case_insensitive_with_cfws_and_version() {
    let msg = "authentication-RESULTS :\r\n (forged) MX.Test.Example 1\r\n\t;\r\n spf=pass\r\n\
               X-A: 1\r\n\
               Authentication-Results: \"mx.test.example\"; none\r\n\
               Authentication-Results: (c (nested)) mx.test.example(c);dkim=pass\r\n\
               \r\nb\r\n";
    assert_eq!(strip(msg), "X-A: 1\r\n\r\nb\r\n");
}

#[test]
fn keeps_lookalike_ids_and_other_fields() {
    let msg = "Authentication-Results: mx.test.example.evil; spf=pass\r\n\
               Authentication-Results: evil.mx.test.example; spf=pass\r\n\
               Authentication-Results-Extra: mx.test.example; x\r\n\
               ARC-Authentication-Results: i=1; mx.test.example; spf=pass\r\n\
               X-Authentication-Results: mx.test.example; spf=pass\r\n\
               Authentication-Results:\r\n\
               \r\n";
    let out = strip_forged_results(msg.as_bytes(), ID);
    assert!(matches!(out, Cow::Borrowed(_)));
    assert_eq!(&*out, msg.as_bytes());
}

#[test]
fn body_is_never_touched() {
    let msg = "Subject: x\r\n\r\nAuthentication-Results: mx.test.example; spf=pass\r\n";
    let out = strip_forged_results(msg.as_bytes(), ID);
    assert!(matches!(out, Cow::Borrowed(_)));
    // Even when the body looks like a header section after a blank line.
    let msg = "Authentication-Results: mx.test.example; a\r\n\r\nAuthentication-Results: mx.test.example; b\r\n";
    assert_eq!(strip(msg), "\r\nAuthentication-Results: mx.test.example; b\r\n");
}

#[test]
fn last_field_of_section_and_of_message() {
    let msg = "From: a@b\r\nAuthentication-Results: mx.test.example;\r\n spf=fail\r\n\r\nbody";
    assert_eq!(strip(msg), "From: a@b\r\n\r\nbody");
    // No body and no final line break.
    let msg = "From: a@b\r\nAuthentication-Results: mx.test.example; spf=fail";
    assert_eq!(strip(msg), "From: a@b\r\n");
    assert_eq!(strip("Authentication-Results: mx.test.example; x"), "");
    assert_eq!(strip(""), "");
}

#[test]
fn lf_only_message() {
    let msg = "From: a@b\nAuthentication-Results: mx.test.example;\n\tspf=fail\nTo: c@d\n\nAuthentication-Results: mx.test.example; x\n";
    assert_eq!(
        strip(msg),
        "From: a@b\nTo: c@d\n\nAuthentication-Results: mx.test.example; x\n"
    );
}

#[test]
fn odd_input_does_not_panic() {
    for m in [
        &b"Authentication-Results: \"mx.test.example"[..],
        b"Authentication-Results: (unclosed mx.test.example",
        b"Authentication-Results: \\",
        b" leading continuation\r\nAuthentication-Results: mx.test.example\r\n",
        b"\xff\xfe: \xff\r\n\r\n",
        b"\r\n",
        b"\n",
    ] {
        let _ = strip_forged_results(m, ID);
    }
    assert_eq!(
        &*strip_forged_results(b" x\r\nAuthentication-Results: mx.test.example\r\n", ID),
        b" x\r\n"
    );
}

fn outcome(spf: &'static str, dkim: &'static str, dmarc: &'static str, p: Option<&'static str>) -> AuthOutcome {
    AuthOutcome {
        spf,
        dkim,
        dmarc,
        dmarc_policy: p,
        header: String::new(),
    }
}

#[test]
fn summary_format() {
    assert_eq!(
        outcome("pass", "none", "fail", Some("reject")).summary(),
        "spf=pass dkim=none dmarc=fail dmarc-policy=reject"
    );
    assert_eq!(
        outcome("none", "none", "none", None).summary(),
        "spf=none dkim=none dmarc=none"
    );
}

fn info(method: &'static str, result: &'static str, props: &[(&'static str, &str)]) -> ResInfo {
    ResInfo {
        method,
        result,
        comment: None,
        props: props.iter().map(|(k, v)| (*k, v.to_string())).collect(),
    }
}

#[test]
fn header_format() {
    let h = format_header(
        ID,
        &[
            info("spf", "pass", &[("smtp.mailfrom", "a@example.test")]),
            info("dkim", "pass", &[("header.d", "example.test"), ("header.s", "sel")]),
            info(
                "dmarc",
                "pass",
                &[("header.from", "example.test"), ("policy.dmarc", "reject")],
            ),
        ],
    );
    assert_eq!(
        h,
        "Authentication-Results: mx.test.example;\r\n\
         \tspf=pass smtp.mailfrom=a@example.test;\r\n\
         \tdkim=pass header.d=example.test header.s=sel;\r\n\
         \tdmarc=pass header.from=example.test policy.dmarc=reject\r\n"
    );
    assert_eq!(
        format_header(ID, &[]),
        "Authentication-Results: mx.test.example; none\r\n"
    );
}

#[test]
fn header_folds_long_lines_and_quotes_odd_values() {
    let long = format!("{}@example.test", "a".repeat(50));
    let mut i = info("spf", "fail", &[("smtp.mailfrom", &long), ("smtp.helo", "h.example")]);
    i.comment = Some("signature did not verify");
    let h = format_header(ID, &[i]);
    assert!(h.ends_with("\r\n") && h.starts_with("Authentication-Results: mx.test.example;\r\n"));
    for line in h.trim_end_matches("\r\n").split("\r\n") {
        assert!(line.len() <= LINE_LIMIT, "{line:?} is {} long", line.len());
        assert!(!line.contains('\n') && !line.contains('\r'));
    }
    // Unfolded, it reads as one resinfo with the comment intact.
    let unfolded = h.replace("\r\n\t", " ");
    assert!(
        unfolded.contains(&format!(
            "spf=fail (signature did not verify) smtp.mailfrom={long} smtp.helo=h.example"
        )),
        "{unfolded}"
    );

    // A single token longer than the limit gets a line of its own.
    let huge = format!("{}@example.test", "a".repeat(70));
    let h = format_header(
        ID,
        &[info("spf", "none", &[("smtp.mailfrom", &huge), ("smtp.helo", "h")])],
    );
    assert_eq!(
        h,
        format!(
            "Authentication-Results: mx.test.example;\r\n\tspf=none\r\n\tsmtp.mailfrom={huge}\r\n\tsmtp.helo=h\r\n"
        )
    );

    assert_eq!(pvalue("a@b.example").as_deref(), Some("a@b.example"));
    assert_eq!(pvalue("\"a b\"@x").as_deref(), Some("\"\\\"a b\\\"@x\""));
    assert_eq!(pvalue("x\r\n@y;z").as_deref(), Some("\"x@y;z\""));
    assert_eq!(pvalue("\r\n"), None);
    assert_eq!(pvalue(&"a".repeat(300)), None);
}

#[test]
fn dkim_aggregate_and_base64() {
    assert_eq!(aggregate_dkim(&[]), "none");
    assert_eq!(aggregate_dkim(&["fail", "pass"]), "pass");
    assert_eq!(aggregate_dkim(&["fail", "temperror"]), "temperror");
    assert_eq!(aggregate_dkim(&["permerror", "fail"]), "fail");
    assert_eq!(aggregate_dkim(&["permerror"]), "permerror");
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    assert_eq!(base64(b"fooba"), "Zm9vYmE=");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(
        dkim_word(&DkimResult::Neutral(mail_auth::Error::Dkim(
            mail_auth::dkim::DkimError::FailedBodyHashMatch
        ))),
        "fail"
    );
}

/// A resolver whose server refuses (nothing listens on the discard
/// port), so lookups fail fast without leaving the machine.
fn refusing() -> Authenticator {
    let server = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
    let resolver = tokio_resolver(
        Some(server),
        Duration::from_millis(200),
        Duration::from_secs(60),
        Duration::ZERO,
    )
    .unwrap();
    Authenticator::new(resolver, ID.to_string(), Duration::from_millis(500))
}

#[tokio::test]
async fn malformed_input_gives_results_not_panics() {
    let auth = refusing();
    let sigs = [
        "DKIM-Signature: v=1; a=rsa-sha256; d=; s=; bh=; b=",
        "DKIM-Signature: garbage",
        "DKIM-Signature: v=1; a=ed25519-sha256; d=x.example; s=s; h=from; l=5; bh=AAAA; b=AAAA",
        "DKIM-Signature: v=1; a=foo-sha9; c=weird/weird; d=x.example; s=s; h=; bh=AAAA; b=AAAA",
        "DKIM-Signature: \u{0}\u{1}=;;;=\u{7f}",
    ];
    for sig in sigs {
        let raw = format!("{sig}\r\nFrom: a@x.example, b@y.example\r\n\r\nbody\r\n");
        let parsed = mail_parser::MessageParser::default().parse(raw.as_bytes()).unwrap();
        for (helo, mail_from) in [("", ""), ("[127.0.0.1]", ""), ("h", "no-at-sign"), ("h", "a@\u{7f}..")] {
            let ctx = AuthContext {
                ip: IpAddr::from([192, 0, 2, 1]),
                helo,
                mail_from,
                deadline: None,
            };
            let o = auth.check(&ctx, &parsed, raw.as_bytes()).await;
            assert_eq!(o.dkim, "permerror", "{sig}: {}", o.header);
            // Two From domains: DMARC does not apply.
            assert_eq!((o.dmarc, o.dmarc_policy), ("none", None), "{sig}: {}", o.header);
            assert!(o.header.starts_with("Authentication-Results: mx.test.example;\r\n\t"));
            assert!(o.header.ends_with("\r\n"));
        }
    }
    // No DNS answer at all: an SPF check that needs DNS is a temperror.
    let raw = b"From: a@x.example\r\n\r\n";
    let parsed = mail_parser::MessageParser::default().parse(&raw[..]).unwrap();
    let ctx = AuthContext {
        ip: IpAddr::from([192, 0, 2, 1]),
        helo: "h.example",
        mail_from: "a@x.example",
        deadline: None,
    };
    let o = auth.check(&ctx, &parsed, raw).await;
    assert_eq!(
        (o.spf, o.dkim, o.dmarc),
        ("temperror", "none", "temperror"),
        "{}",
        o.header
    );
}

#[test]
fn mismatched_parse_falls_back_to_raw() {
    // `parsed` from other bytes than `raw`: no out-of-range slicing.
    let other = b"From: x@other.example\r\nDKIM-Signature: v=1; a=rsa-sha256; d=o; s=s; h=from; bh=; b=\r\n\r\nhi\r\n";
    let parsed = mail_parser::MessageParser::default().parse(&other[..]).unwrap();
    let raw = b"From: a@b.example\r\n\r\n";
    let m = authenticated_message(&parsed, raw);
    assert_eq!(m.froms(), ["a@b.example".to_string()]);
    let empty = mail_parser::Message::default();
    let m = authenticated_message(&empty, b"");
    assert!(m.froms().is_empty());
}
