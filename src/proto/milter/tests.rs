use super::*;

fn decode_all(bytes: &[u8]) -> Result<Vec<Command>, MilterError> {
    let mut d = Decoder::default();
    d.push(bytes);
    let mut out = Vec::new();
    while let Some(c) = d.next_command()? {
        out.push(c);
    }
    Ok(out)
}

#[test]
fn a_postfix_transaction_decodes_command_by_command() {
    let mut optneg = Vec::new();
    for n in [6u32, 0x1ff, 0x1fffff] {
        optneg.extend_from_slice(&n.to_be_bytes());
    }
    let mut wire = frame(b'O', &optneg);
    wire.extend(frame(b'D', b"Cj\0mx.example.org\0{daemon_name}\0smtpd\0"));
    wire.extend(frame(b'C', b"client.example.com\x004\x30\x39192.0.2.7\0"));
    wire.extend(frame(b'H', b"client.example.com\0"));
    wire.extend(frame(b'M', b"<a@example.com>\0SIZE=100\0"));
    wire.extend(frame(b'R', b"<b@example.org>\0"));
    wire.extend(frame(b'T', b""));
    wire.extend(frame(b'L', b"Subject\0 hello\0"));
    wire.extend(frame(b'N', b""));
    wire.extend(frame(b'B', b"body\r\n"));
    wire.extend(frame(b'E', b""));
    wire.extend(frame(b'A', b""));
    wire.extend(frame(b'K', b""));
    wire.extend(frame(b'Q', b""));
    let got = decode_all(&wire).unwrap();
    assert_eq!(
        got,
        vec![
            Command::OptNeg(OptNeg {
                version: 6,
                actions: 0x1ff,
                protocol: 0x1fffff
            }),
            Command::Macros {
                stage: b'C',
                pairs: vec![
                    ("j".into(), "mx.example.org".into()),
                    ("{daemon_name}".into(), "smtpd".into())
                ]
            },
            Command::Connect {
                hostname: "client.example.com".into(),
                peer: Peer::Inet {
                    ip: "192.0.2.7".parse().unwrap(),
                    port: 12345
                }
            },
            Command::Helo("client.example.com".into()),
            Command::Mail(vec!["<a@example.com>".into(), "SIZE=100".into()]),
            Command::Rcpt(vec!["<b@example.org>".into()]),
            Command::Data,
            Command::Header {
                name: "Subject".into(),
                value: b" hello".to_vec()
            },
            Command::EndOfHeaders,
            Command::Body(b"body\r\n".to_vec()),
            Command::EndOfBody(Vec::new()),
            Command::Abort,
            Command::QuitNewConnection,
            Command::Quit,
        ]
    );
}

#[test]
fn commands_arrive_in_pieces() {
    let wire = frame(b'L', b"X-Long\0value value value\0");
    let mut d = Decoder::default();
    for b in &wire[..wire.len() - 1] {
        d.push(std::slice::from_ref(b));
        assert_eq!(d.next_command(), Ok(None));
    }
    d.push(&wire[wire.len() - 1..]);
    assert!(matches!(d.next_command(), Ok(Some(Command::Header { .. }))));
    assert_eq!(d.buffered(), 0);
}

#[test]
fn connect_forms() {
    let cases: &[(&[u8], Result<Peer, MilterError>)] = &[
        (b"unknown\0U", Ok(Peer::Unknown)),
        (
            b"[2001:db8::1]\x006\0\x19IPv6:2001:db8::1\0",
            Ok(Peer::Inet {
                ip: "2001:db8::1".parse().unwrap(),
                port: 25,
            }),
        ),
        (b"localhost\0L\0\0/run/x.sock\0", Ok(Peer::Local("/run/x.sock".into()))),
        (
            b"h\x004\0\x19nonsense\0",
            Err(malformed("CONNECT", "not an IP address")),
        ),
        (b"h\x004\0", Err(malformed("CONNECT", "no port"))),
        (b"h\0X", Err(malformed("CONNECT", "unknown address family"))),
        (b"h", Err(malformed("CONNECT", "host name not NUL-terminated"))),
        (b"h\0", Err(malformed("CONNECT", "no address family"))),
    ];
    for (payload, want) in cases {
        let got = parse_command(b'C', payload).map(|c| match c {
            Command::Connect { peer, .. } => peer,
            other => panic!("{other:?}"),
        });
        assert_eq!(&got, want, "{:?}", String::from_utf8_lossy(payload));
    }
}

#[test]
fn malformed_input_is_a_typed_error() {
    let cases: &[(&[u8], MilterError)] = &[
        (&[0, 0, 0, 0], MilterError::Empty),
        (&[0, 0x20, 0, 0, b'B'], MilterError::TooLong(0x200000)),
        (&frame(b'Z', b""), MilterError::UnknownCommand(b'Z')),
        (
            &frame(b'O', b"\0\0\0\x06"),
            malformed("OPTNEG", "shorter than 12 octets"),
        ),
        (&frame(b'D', b""), malformed("MACRO", "no stage")),
        (&frame(b'D', b"Ci\0"), malformed("MACRO", "a name without a value")),
        (&frame(b'H', b"a\0b\0"), malformed("HELO", "not one string")),
        (&frame(b'H', b"a"), malformed("HELO", "string not NUL-terminated")),
        (&frame(b'M', b""), malformed("MAIL", "no address")),
        (
            &frame(b'L', b"Subject"),
            malformed("HEADER", "value not NUL-terminated"),
        ),
        (&frame(b'L', b"Subject\0"), malformed("HEADER", "no value")),
        (
            &frame(b'L', b"a\0b\0c\0"),
            malformed("HEADER", "more than a name and a value"),
        ),
    ];
    for (wire, want) in cases {
        assert_eq!(decode_all(wire).as_ref(), Err(want), "{wire:?}");
    }
}

#[test]
fn negotiation_takes_what_both_sides_have() {
    let want = OptNeg {
        version: VERSION,
        actions: action::ADD_HEADERS | action::CHANGE_HEADERS | action::QUARANTINE,
        protocol: step::NR_HEADER | step::NR_BODY | step::NO_UNKNOWN,
    };
    let postfix = OptNeg {
        version: 6,
        actions: 0x1ff,
        protocol: 0x1fffff,
    };
    assert_eq!(negotiate(postfix, want), Ok(want));
    let old = OptNeg {
        version: 2,
        actions: action::ADD_HEADERS,
        protocol: 0xff,
    };
    assert_eq!(
        negotiate(old, want),
        Ok(OptNeg {
            version: 2,
            actions: action::ADD_HEADERS,
            protocol: step::NR_HEADER
        })
    );
    assert_eq!(
        negotiate(OptNeg { version: 1, ..old }, want),
        Err(MilterError::Version(1))
    );
    // No reply where the MTA was told not to wait for one.
    let p = step::NR_HEADER | step::NR_BODY;
    let header = Command::Header {
        name: "a".into(),
        value: Vec::new(),
    };
    assert!(!expects_reply(p, &header));
    assert!(expects_reply(0, &header));
    assert!(!expects_reply(p, &Command::Body(Vec::new())));
    assert!(expects_reply(p, &Command::EndOfBody(Vec::new())));
    assert!(expects_reply(p, &Command::Helo("x".into())));
    assert!(!expects_reply(0, &Command::Abort));
}

#[test]
fn responses_encode_and_read_back() {
    let all = [
        Response::OptNeg(OptNeg {
            version: 6,
            actions: 0x31,
            protocol: 0x80,
        }),
        Response::Continue,
        Response::Accept,
        Response::Reject,
        Response::Tempfail,
        Response::Discard,
        Response::Skip,
        Response::Progress,
        Response::ReplyCode("550 5.7.1 no".into()),
        Response::AddHeader {
            name: "X-Spam-Score".into(),
            value: "1.0".into(),
        },
        Response::InsertHeader {
            index: 0,
            name: "Authentication-Results".into(),
            value: "mx; spf=pass".into(),
        },
        Response::ChangeHeader {
            index: 2,
            name: "Subject".into(),
            value: String::new(),
        },
        Response::Quarantine("spam".into()),
    ];
    for r in all {
        let wire = r.to_bytes();
        let len = u32::from_be_bytes(wire[..4].try_into().unwrap()) as usize;
        assert_eq!(len, wire.len() - 4);
        assert_eq!(parse_response(wire[4], &wire[5..]), Ok(r));
    }
    assert_eq!(Response::Continue.to_bytes(), [0, 0, 0, 1, b'c']);
    assert_eq!(
        Response::reply(&crate::proto::Reply::owned(554, "5.7.1", "one\ntwo".into())),
        Response::ReplyCode("554 5.7.1 one; two".into())
    );
    // A NUL inside a string cannot cut it short.
    let wire = Response::Quarantine("a\0b".into()).to_bytes();
    assert_eq!(
        parse_response(wire[4], &wire[5..]),
        Ok(Response::Quarantine("ab".into()))
    );
}
