//! A next hop's reply and the DSN made from it: `HopReply::status` on any
//! text, then `dsn::build` with that reply as the diagnostic and any original
//! message. Never a panic; the status is `digits.digits.digits`; the DSN is
//! made exactly when NOTIFY allows it, its own part has CRLF line ends only
//! (the diagnostic cannot inject header lines), and it ends with the boundary.
//!
//! Input layout: `[flags, code_hi, code_lo, text..., 0, original...]`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use sluice::delivery::client::HopReply;
use sluice::delivery::dsn::{Failure, build};
use sluice::mail::envelope::Envelope;

const NOTIFY: [Option<&str>; 4] = [None, Some("FAILURE"), Some("NEVER"), Some("SUCCESS,DELAY")];
const NOWS: [u64; 4] = [0, 1_795_521_600, i64::MAX as u64, u64::MAX];

fuzz_target!(|data: &[u8]| {
    let [flags, hi, lo, rest @ ..] = data else { return };
    let (text, original) = rest.split_at(rest.iter().position(|&b| b == 0).unwrap_or(rest.len()));
    let original = original.get(1..).unwrap_or_default();
    let text = String::from_utf8_lossy(text).into_owned();
    let reply = HopReply::local(u16::from_be_bytes([*hi, *lo]), text);
    let status = reply.status();
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    assert!(
        status.split('.').count() == 3 && status.split('.').all(digits),
        "{status}"
    );
    // The class is the reply's own: never "2.0.0" next to a 550.
    let code = u16::from_be_bytes([*hi, *lo]);
    assert!(status.starts_with(&format!("{}.", code / 100)), "{code} {status}");

    let (notify, full) = (NOTIFY[usize::from(flags & 3)], flags & 4 != 0);
    let env: Envelope = serde_json::from_value(json!({
        "id": "T1", "received_at": NOWS[usize::from(flags >> 4 & 3)], "client_ip": "192.0.2.7",
        "helo": "client.example", "mail_from": {"local": "a", "domain": "client.example"},
        "ret": if full { "FULL" } else { "HDRS" }, "envid": "E1",
        "rcpts": [{"addr": {"local": "u", "domain": "example.com"}, "notify": notify, "orcpt": "rfc822;u@example.com"}],
    }))
    .expect("envelope from JSON");
    let remote = (flags & 8 != 0).then(|| "127.0.0.1:10025".to_string());
    let diagnostic = reply.to_string();
    let failure = Failure {
        rcpt: &env.rcpts[0],
        status,
        diagnostic,
        remote,
    };
    let now = NOWS[usize::from(flags >> 6)];
    let built = build(&env, &[failure], original, "mx.example", "D1".into(), now);
    let wanted = notify.is_none_or(|n| n.contains("FAILURE"));
    assert_eq!(built.is_some(), wanted, "NOTIFY={notify:?}");
    let Some((denv, msg)) = built else { return };
    assert_eq!(denv.mail_from, None);
    assert_eq!(denv.rcpts[0].addr.to_string(), "a@client.example");
    assert!(msg.ends_with(b"\r\n--D1/mx.example--\r\n"));
    // Our own text: up to the header of the part holding the original.
    let ctype = if full { "message/rfc822" } else { "text/rfc822-headers" };
    let marker = format!("\r\nContent-Type: {ctype}\r\n\r\n");
    let text = String::from_utf8_lossy(&msg);
    let ours = &text[..text.find(&marker).expect("last part") + marker.len()];
    let bare = ours
        .as_bytes()
        .windows(2)
        .position(|w| (w[1] == b'\n') != (w[0] == b'\r'));
    assert!(bare.is_none(), "bare CR or LF at {bare:?}: {ours:?}");
});
