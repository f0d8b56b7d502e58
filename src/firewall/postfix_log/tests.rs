use super::*;

/// 2026-11-24T12:00:00Z.
const NOW: u64 = 1_795_521_600;
/// 2026-11-24T01:02:03Z: `Nov 24 01:02:03` read at [`NOW`].
const T: u64 = 1_795_482_123;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn parse(line: &str) -> Option<LogOffence> {
    Parser::new(NOW).line(line)
}

/// The line is recognised with this client and offence; its evidence.
fn found(line: &str, client: &str, offence: Offence) -> String {
    let o = parse(line).unwrap_or_else(|| panic!("not recognised: {line}"));
    assert_eq!((o.at, o.ip, o.offence), (T, ip(client), offence), "{line}");
    o.evidence
}

fn smtpd(msg: &str) -> String {
    format!("Nov 24 01:02:03 mx1 postfix/smtpd[4711]: {msg}")
}

fn postscreen(msg: &str) -> String {
    format!("Nov 24 01:02:03 mx1 postfix/postscreen[815]: {msg}")
}

fn amavis(msg: &str) -> String {
    format!("Nov 24 01:02:03 mx1 amavis[2302]: (02302-07) {msg}")
}

fn rcpt_reject(client: &str, reply: &str) -> String {
    smtpd(&format!(
        "NOQUEUE: reject: RCPT from {client}: {reply}; from=<spam@example.net> \
         to=<info@example.org> proto=ESMTP helo=<example.net>"
    ))
}

#[test]
fn user_unknown_in_every_recipient_table_is_unknown_user() {
    for table in [
        "local recipient table",
        "virtual mailbox table",
        "relay recipient table",
        "virtual alias table",
    ] {
        let line = rcpt_reject(
            "unknown[192.0.2.10]",
            &format!("550 5.1.1 <info@example.org>: Recipient address rejected: User unknown in {table}"),
        );
        let evidence = found(&line, "192.0.2.10", Offence::UnknownUser);
        assert_eq!(evidence, format!("postfix/smtpd: User unknown in {table}"));
    }
}

#[test]
fn relay_access_denied_is_unknown_user() {
    let line = rcpt_reject(
        "mail.example.net[198.51.100.7]",
        "554 5.7.1 <victim@example.com>: Relay access denied",
    );
    assert_eq!(
        found(&line, "198.51.100.7", Offence::UnknownUser),
        "postfix/smtpd: Relay access denied"
    );
}

#[test]
fn a_reject_after_a_queue_id_counts_like_noqueue() {
    let line = smtpd(
        "4Xyz1J2Kq3z9: reject: RCPT from unknown[192.0.2.10]: 550 5.1.1 <bob@example.org>: \
         Recipient address rejected: User unknown in virtual mailbox table; from=<a@example.net> \
         to=<bob@example.org> proto=ESMTP helo=<x>",
    );
    found(&line, "192.0.2.10", Offence::UnknownUser);
}

#[test]
fn a_client_blocked_using_a_dnsbl_is_dnsbl() {
    let line = rcpt_reject(
        "unknown[203.0.113.5]",
        "554 5.7.1 Service unavailable; Client host [203.0.113.5] blocked using zen.spamhaus.org; \
         https://www.spamhaus.org/query/ip/203.0.113.5",
    );
    assert_eq!(
        found(&line, "203.0.113.5", Offence::Dnsbl),
        "postfix/smtpd: blocked using zen.spamhaus.org"
    );
}

#[test]
fn rhsbl_blocks_of_sender_and_helo_are_dnsbl() {
    for reply in [
        "554 5.7.1 <spam@bad.example>: Sender address rejected: Sender address [bad.example] \
         blocked using dbl.spamhaus.org",
        "554 5.7.1 <bad.example>: Helo command rejected: Host [bad.example] blocked using \
         dbl.spamhaus.org, see https://example.com",
    ] {
        let line = rcpt_reject("bad.example[203.0.113.6]", reply);
        let evidence = found(&line, "203.0.113.6", Offence::Dnsbl);
        assert_eq!(evidence, "postfix/smtpd: blocked using dbl.spamhaus.org");
    }
}

#[test]
fn postscreen_dnsbl_rank_is_dnsbl() {
    let line = postscreen("DNSBL rank 6 for [203.0.113.5]:52311");
    assert_eq!(
        found(&line, "203.0.113.5", Offence::Dnsbl),
        "postfix/postscreen: DNSBL rank 6"
    );
}

#[test]
fn postscreen_rejects_after_a_dnsbl_rank_are_not_counted_again() {
    let line = postscreen(
        "NOQUEUE: reject: RCPT from [203.0.113.5]:52311: 550 5.7.1 Service unavailable; \
         client [203.0.113.5] blocked using zen.spamhaus.org; from=<a@example.net>, \
         to=<b@example.org>, proto=ESMTP, helo=<x>",
    );
    assert_eq!(parse(&line), None);
}

#[test]
fn postscreen_pregreet_is_pregreet() {
    let line = postscreen("PREGREET 11 after 0.09 from [198.51.100.23]:40123: EHLO example.net\\r\\n");
    assert_eq!(
        found(&line, "198.51.100.23", Offence::Pregreet),
        "postfix/postscreen: PREGREET 11 after 0.09"
    );
}

#[test]
fn postscreen_protocol_violations_are_protocol() {
    for (msg, evidence) in [
        (
            "HANGUP after 0.71 from [198.51.100.23]:40123 in tests before SMTP handshake",
            "HANGUP after 0.71",
        ),
        (
            "COMMAND PIPELINING from [198.51.100.23]:40123 after EHLO: MAIL FROM:<a@b>\\r\\n",
            "COMMAND PIPELINING",
        ),
        (
            "NON-SMTP COMMAND from [198.51.100.23]:40123 after CONNECT: GET / HTTP/1.1",
            "NON-SMTP COMMAND",
        ),
        ("BARE NEWLINE from [198.51.100.23]:40123 after DATA", "BARE NEWLINE"),
        (
            "COMMAND TIME LIMIT from [198.51.100.23]:40123 after RCPT",
            "COMMAND TIME LIMIT",
        ),
    ] {
        let got = found(&postscreen(msg), "198.51.100.23", Offence::Protocol);
        assert_eq!(got, format!("postfix/postscreen: {evidence}"));
    }
}

#[test]
fn smtpd_lost_connections_are_protocol_whatever_the_stage() {
    for stage in [
        "CONNECT",
        "EHLO",
        "HELO",
        "AUTH",
        "MAIL",
        "RCPT",
        "DATA (123 bytes)",
        "UNKNOWN",
    ] {
        let line = smtpd(&format!("lost connection after {stage} from unknown[192.0.2.99]"));
        let evidence = found(&line, "192.0.2.99", Offence::Protocol);
        assert_eq!(evidence, format!("postfix/smtpd: lost connection after {stage}"));
    }
}

#[test]
fn smtpd_errors_pipelining_non_smtp_and_timeouts_are_protocol() {
    for (msg, evidence) in [
        (
            "too many errors after RCPT from unknown[192.0.2.99]",
            "too many errors after RCPT",
        ),
        (
            "improper command pipelining after CONNECT from unknown[192.0.2.99]: EHLO x\\r\\nMAIL FROM:<a@b>\\r\\n",
            "improper command pipelining after CONNECT",
        ),
        (
            "warning: non-SMTP command from unknown[192.0.2.99]: GET / HTTP/1.1",
            "non-SMTP command",
        ),
        (
            "timeout after DATA (8192 bytes) from host.example.net[192.0.2.99]",
            "timeout after DATA (8192 bytes)",
        ),
        (
            "timeout after END-OF-MESSAGE from unknown[192.0.2.99]",
            "timeout after END-OF-MESSAGE",
        ),
    ] {
        let got = found(&smtpd(msg), "192.0.2.99", Offence::Protocol);
        assert_eq!(got, format!("postfix/smtpd: {evidence}"));
    }
}

#[test]
fn rate_and_concurrency_limit_warnings_are_rate_limit() {
    for what in [
        "Connection rate limit exceeded: 31",
        "Connection concurrency limit exceeded: 51",
        "Message delivery request rate limit exceeded: 101",
        "Recipient address rate limit exceeded: 501",
    ] {
        let line = smtpd(&format!("warning: {what} from unknown[192.0.2.44] for service smtp"));
        let evidence = found(&line, "192.0.2.44", Offence::RateLimit);
        assert_eq!(evidence, format!("postfix/smtpd: {what}"));
    }
}

#[test]
fn amavis_blocked_infected_is_virus_from_the_client_after_the_actions() {
    let line = amavis(
        "Blocked INFECTED (Eicar-Signature) {DiscardedInbound,Quarantined}, [192.0.2.77]:41234 \
         [203.0.113.9] <a@example.net> -> <b@example.org>, quarantine: virus-AbCd, Queue-ID: 4Xyz1J, \
         Message-ID: <1@example.net>, mail_id: AbCd, Hits: -, size: 812, 233 ms",
    );
    assert_eq!(
        found(&line, "192.0.2.77", Offence::Virus),
        "amavis: Blocked INFECTED (Eicar-Signature)"
    );
}

#[test]
fn amavis_blocked_spam_is_spam() {
    let line = amavis(
        "Blocked SPAM {DiscardedInbound,Quarantined}, [192.0.2.78]:50102 [192.0.2.78] \
         <a@example.net> -> <b@example.org>, Queue-ID: 4Xyz1K, mail_id: EfGh, Hits: 14.2, size: 3012",
    );
    assert_eq!(found(&line, "192.0.2.78", Offence::Spam), "amavis: Blocked SPAM");
}

#[test]
fn amavis_finds_the_client_after_origin_tags_and_in_old_formats() {
    let tagged = amavis(
        "Blocked SPAM {RejectedOutbound}, ORIGINATING LOCAL [2001:db8::25]:50102 \
         <a@example.org> -> <b@example.net>, Hits: 9.1",
    );
    found(&tagged, "2001:db8::25", Offence::Spam);
    let old = amavis("Blocked INFECTED (Eicar-Test-Signature), [192.0.2.79] [192.0.2.79] <a@b> -> <c@d>");
    let evidence = found(&old, "192.0.2.79", Offence::Virus);
    assert_eq!(evidence, "amavis: Blocked INFECTED (Eicar-Test-Signature)");
}

#[test]
fn ipv6_clients_parse_with_and_without_the_ipv6_prefix() {
    let plain = smtpd("lost connection after EHLO from unknown[2001:db8::1]");
    found(&plain, "2001:db8::1", Offence::Protocol);
    let tagged = smtpd("lost connection after EHLO from unknown[IPv6:2001:db8::1]");
    found(&tagged, "2001:db8::1", Offence::Protocol);
    let ps = postscreen("PREGREET 4 after 0 from [2001:db8::2]:40000: QUIT\\r\\n");
    found(&ps, "2001:db8::2", Offence::Pregreet);
    let mapped = smtpd("too many errors after RCPT from unknown[::ffff:192.0.2.3]");
    found(&mapped, "192.0.2.3", Offence::Protocol);
}

#[test]
fn loopback_clients_are_returned_for_the_engine_to_refuse() {
    found(
        &smtpd("lost connection after CONNECT from localhost[127.0.0.1]"),
        "127.0.0.1",
        Offence::Protocol,
    );
}

#[test]
fn ordinary_traffic_and_other_rejects_are_not_offences() {
    for line in [
        smtpd("connect from unknown[192.0.2.1]"),
        smtpd("disconnect from unknown[192.0.2.1] ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4"),
        smtpd("4Xyz1J2Kq3z9: client=mail.example.net[192.0.2.1]"),
        smtpd(
            "NOQUEUE: reject_warning: RCPT from unknown[192.0.2.1]: 550 5.1.1 <x@example.org>: \
             Recipient address rejected: User unknown in virtual mailbox table; from=<> to=<x@example.org>",
        ),
        rcpt_reject(
            "unknown[192.0.2.1]",
            "450 4.7.1 <x>: Helo command rejected: Host not found",
        ),
        // Only the reply counts, not the envelope after it.
        smtpd(
            "NOQUEUE: reject: RCPT from unknown[192.0.2.1]: 450 4.2.0 <x@example.org>: \
             Recipient address rejected: Greylisted; from=<\"relay access denied\"@example.net>",
        ),
        smtpd("warning: hostname nope.example does not resolve to address 192.0.2.1"),
        smtpd("warning: unknown[192.0.2.1]: SASL LOGIN authentication failed: UGFzc3dvcmQ6"),
        "Nov 24 01:02:03 mx1 postfix/smtp[99]: 4Xyz1J2Kq3z9: to=<b@example.org>, \
         relay=10.0.0.2[10.0.0.2]:25, delay=0.2, status=sent (250 2.0.0 Ok)"
            .into(),
        "Nov 24 01:02:03 mx1 postfix/anvil[7]: statistics: max connection rate 31/60s for \
         (smtp:192.0.2.1) at Nov 24 01:00:00"
            .into(),
        postscreen("CONNECT from [192.0.2.1]:40000 to [198.51.100.1]:25"),
        postscreen("PASS NEW [192.0.2.1]:40000"),
        postscreen("DISCONNECT [192.0.2.1]:40000"),
        amavis("Passed CLEAN {RelayedInbound}, [192.0.2.1]:40000 [192.0.2.1] <a@b> -> <c@d>, Hits: -1.2"),
        amavis("Blocked BANNED (.exe,x.exe) {DiscardedInbound}, [192.0.2.1]:40000 <a@b> -> <c@d>"),
        "Nov 24 01:02:03 mx1 sshd[12]: timeout after CONNECT from unknown[192.0.2.1]".into(),
        smtpd("lost connection after CONNECT from unknown[not-an-address]"),
        smtpd("lost connection after CONNECT from unknown"),
    ] {
        assert_eq!(parse(&line), None, "{line}");
    }
}

#[test]
fn classic_timestamps_take_the_year_of_now() {
    assert_eq!(
        parse(&smtpd("too many errors after RCPT from x[192.0.2.1]"))
            .unwrap()
            .at,
        T
    );
    let zero_padded = "Nov 04 07:08:09 mx1 postfix/smtpd[1]: timeout after DATA from x[192.0.2.1]";
    let space_padded = "Nov  4 07:08:09 mx1 postfix/smtpd[1]: timeout after DATA from x[192.0.2.1]";
    assert_eq!(parse(zero_padded).unwrap().at, 1_793_776_089);
    assert_eq!(parse(space_padded).unwrap().at, 1_793_776_089);
    let fraction = "Nov 24 01:02:03.456789 mx1 postfix/smtpd[1]: timeout after DATA from x[192.0.2.1]";
    assert_eq!(parse(fraction).unwrap().at, T);
}

#[test]
fn every_month_name_maps_to_its_month() {
    let names = [
        "Jan", "FEB", "mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mut p = Parser::new(1_798_675_200); // 2026-12-31T00:00:00Z
    for (i, name) in names.into_iter().enumerate() {
        let line = format!("{name} 15 00:00:00 mx1 postfix/smtpd[1]: timeout after DATA from x[192.0.2.1]");
        let want = civil(2026, i as u32 + 1, 15).unwrap() as u64;
        assert_eq!(p.line(&line).map(|o| o.at), Some(want), "{name}");
    }
    for bad in ["Ja", "Janu", "anf", "nfe", "xyz"] {
        let line = format!("{bad} 15 00:00:00 mx1 postfix/smtpd[1]: timeout after DATA from x[192.0.2.1]");
        assert_eq!(p.line(&line), None, "{bad}");
    }
}

#[test]
fn classic_timestamps_are_shifted_by_the_configured_utc_offset() {
    let line = smtpd("timeout after DATA from x[192.0.2.1]");
    assert_eq!(Parser::new(NOW).with_utc_offset(3600).line(&line).unwrap().at, T - 3600);
    assert_eq!(
        Parser::new(NOW).with_utc_offset(-5 * 3600).line(&line).unwrap().at,
        T + 5 * 3600
    );
}

#[test]
fn rfc3339_timestamps_honour_their_offset() {
    let msg = "mx1 postfix/smtpd[1]: timeout after DATA from x[192.0.2.1]";
    for (stamp, at) in [
        ("2026-11-24T01:02:03.123456+01:00", T - 3600),
        ("2026-11-24T01:02:03Z", T),
        ("2026-11-24T01:02:03-05:00", T + 5 * 3600),
        ("2026-11-24T01:02:03+0100", T - 3600),
        ("2026-11-24T01:02:03", T),
    ] {
        assert_eq!(parse(&format!("{stamp} {msg}")).unwrap().at, at, "{stamp}");
    }
    let local = Parser::new(NOW)
        .with_utc_offset(7200)
        .line(&format!("2026-11-24T01:02:03 {msg}"));
    assert_eq!(local.unwrap().at, T - 7200, "no offset: the configured one");
}

#[test]
fn december_31_read_on_january_1_is_last_year() {
    let now = 1_767_227_400; // 2026-01-01T00:30:00Z
    let mut p = Parser::new(now);
    let dec = p.line("Dec 31 23:59:59 mx1 postfix/smtpd[1]: timeout after DATA from x[192.0.2.1]");
    assert_eq!(dec.unwrap().at, 1_767_225_599); // 2025-12-31T23:59:59Z
    let jan = p.line("Jan  1 00:10:00 mx1 postfix/smtpd[1]: timeout after DATA from x[192.0.2.1]");
    assert_eq!(jan.unwrap().at, 1_767_226_200); // 2026-01-01T00:10:00Z
}

#[test]
fn up_to_a_day_ahead_stays_this_year_beyond_is_last_year() {
    let within = "Nov 25 11:00:00 mx1 postfix/smtpd[1]: timeout after DATA from x[192.0.2.1]";
    assert_eq!(parse(within).unwrap().at, 1_795_604_400); // 2026-11-25T11:00Z
    let beyond = "Nov 25 13:00:00 mx1 postfix/smtpd[1]: timeout after DATA from x[192.0.2.1]";
    assert_eq!(parse(beyond).unwrap().at, 1_764_075_600); // 2025-11-25T13:00Z
}

#[test]
fn february_29_falls_back_to_a_leap_year_or_is_dropped() {
    let line = "Feb 29 10:00:00 mx1 postfix/smtpd[1]: timeout after DATA from x[192.0.2.1]";
    // Read in January 2025: 2025 has no Feb 29, 2024 has.
    assert_eq!(Parser::new(1_736_467_200).line(line).unwrap().at, 1_709_200_800);
    // Read in March 2026: neither 2026 nor 2025 has one.
    assert_eq!(Parser::new(1_773_100_800).line(line), None);
}

#[test]
fn lines_without_a_parseable_timestamp_are_none() {
    let msg = "mx1 postfix/smtpd[1]: timeout after DATA from x[192.0.2.1]";
    for stamp in [
        "",
        "Foo 24 01:02:03",
        "Nov 31 01:02:03",
        "Nov 0 01:02:03",
        "Nov 24 24:00:00",
        "Nov 24 01:02",
        "Nov 24 01:02:03.",
        "2026-13-01T01:02:03Z",
        "2026-11-24 01:02:03",
        "2026-11-24T01:02:03+1:00",
        "2026-11-24T01:02:03Q",
        "1969-12-31T23:59:59Z",
    ] {
        assert_eq!(parse(&format!("{stamp} {msg}")), None, "{stamp:?}");
    }
    assert_eq!(parse("timeout after DATA from x[192.0.2.1]"), None);
}

#[test]
fn days_from_civil_and_back_match_known_dates() {
    assert_eq!(civil(1970, 1, 1), Some(0));
    assert_eq!(civil(2000, 3, 1), Some(951_868_800));
    assert_eq!(civil(2024, 2, 29), Some(1_709_200_800 - 10 * 3600));
    assert_eq!(civil(2100, 2, 29), None);
    assert_eq!(civil(9999, 12, 31), Some(MAX_TIME - DAY + 1));
    for (days, year) in [(0, 1970), (-1, 1969), (11_016, 2000), (20_453, 2025), (20_454, 2026)] {
        assert_eq!(year_of(days), year, "{days}");
    }
    assert_eq!(Parser::new(u64::MAX).year, 9999);
}

#[test]
fn parse_all_sorts_by_time_stably_and_counts_every_line() {
    let lines = [
        "Nov 24 01:02:05 mx1 postfix/smtpd[1]: timeout after DATA from x[192.0.2.5]",
        "Nov 24 01:02:03 mx1 postfix/smtpd[1]: timeout after DATA from x[192.0.2.3]",
        "not a log line",
        "Nov 24 01:02:05 mx1 postfix/smtpd[1]: timeout after DATA from x[192.0.2.6]",
        "Nov 24 01:02:04 mx1 postfix/smtpd[1]: connect from x[192.0.2.4]",
    ];
    let (found, read) = parse_all(lines.iter().map(|l| l.to_string()), NOW);
    assert_eq!(read, 5);
    let order: Vec<(u64, IpAddr)> = found.iter().map(|o| (o.at, o.ip)).collect();
    assert_eq!(
        order,
        [(T, ip("192.0.2.3")), (T + 2, ip("192.0.2.5")), (T + 2, ip("192.0.2.6"))]
    );
}

#[test]
fn never_panics_on_random_truncated_mutated_or_huge_lines() {
    let samples = [
        rcpt_reject(
            "unknown[192.0.2.10]",
            "550 5.1.1 <i@example.org>: Recipient address rejected: User unknown in local recipient table",
        ),
        postscreen("DNSBL rank 6 for [2001:db8::9]:52311"),
        smtpd("warning: Connection rate limit exceeded: 31 from unknown[192.0.2.44] for service smtp"),
        amavis("Blocked INFECTED (Eicär) {Discarded}, [192.0.2.77]:41234 [203.0.113.9] <ä@b> -> <c@d>"),
        "2026-11-24T01:02:03.5+01:00 mx1 postfix/smtpd[1]: timeout after DATA from x[192.0.2.1]".into(),
    ];
    let mut p = Parser::new(NOW);
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for s in &samples {
        for cut in (0..=s.len()).filter(|&i| s.is_char_boundary(i)) {
            p.line(&s[..cut]);
            p.line(&s[cut..]);
        }
        for _ in 0..2000 {
            let mut bytes = s.clone().into_bytes();
            for _ in 0..1 + next() % 4 {
                let i = (next() as usize) % bytes.len();
                bytes[i] = b" []:.;,{}(0123456789abcdefFROM"[(next() % 30) as usize];
            }
            p.line(&String::from_utf8_lossy(&bytes));
        }
    }
    for _ in 0..2000 {
        let bytes: Vec<u8> = (0..next() % 300).map(|_| next() as u8).collect();
        p.line(&String::from_utf8_lossy(&bytes));
    }
    let huge = "[".repeat(1 << 20);
    for prefix in [
        "Nov 24 01:02:03 mx1 postfix/smtpd[1]: lost connection after ",
        "Nov 24 01:02:03 mx1 postfix/smtpd[1]: NOQUEUE: reject: RCPT from x",
        "Nov 24 01:02:03 mx1 amavis[1]: Blocked SPAM },",
        "Nov 24 01:02:03 mx1 postfix/postscreen[1]: PREGREET ",
    ] {
        assert_eq!(p.line(&format!("{prefix}{huge}")), None);
    }
    let long = smtpd(&format!(
        "timeout after DATA ({}) from x[192.0.2.1]",
        "é".repeat(10_000)
    ));
    let o = p.line(&long).unwrap();
    assert!(o.evidence.len() <= MAX_EVIDENCE, "{}", o.evidence.len());
}
