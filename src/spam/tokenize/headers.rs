//! Tokens from the header section: every header by name, the shapes of
//! Subject, Message-ID and dates, the Received chain (hops, IP classes,
//! clock skew), mailers, addresses. The MIME structure is `mime`'s.

use super::*;

/// The raw text of a header value of the message (unfolded, trimmed), if it is valid UTF-8.
pub(super) fn raw_value<'a>(message: &'a Message<'_>, header: &mail_parser::Header<'_>) -> Option<&'a str> {
    let bytes = message
        .raw_message
        .get(header.offset_start as usize..header.offset_end as usize)?;
    std::str::from_utf8(bytes).ok().map(str::trim)
}

/// The raw text of the first header `name` (case-insensitive).
pub(super) fn raw_header<'a>(message: &'a Message<'_>, name: &str) -> Option<&'a str> {
    message
        .root_part()
        .headers
        .iter()
        .find(|h| h.name().eq_ignore_ascii_case(name))
        .and_then(|h| raw_value(message, h))
}

/// Whether the header `name` is one of [`IGNORED_HEADERS`] (compared ASCII-case-insensitively; the patterns are
/// lowercase ASCII).
pub(crate) fn is_ignored_header(name: &str) -> bool {
    let name = name.as_bytes();
    let Some(first) = name.first().map(u8::to_ascii_lowercase) else {
        return false;
    };
    // Cheap first-byte filter before the full comparison (no pattern is empty).
    IGNORED_HEADERS
        .iter()
        .filter(|pat| pat.as_bytes()[0] == first)
        .any(|pat| match pat.strip_suffix('*') {
            Some(prefix) => name.len() >= prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes()),
            None => name.eq_ignore_ascii_case(pat.as_bytes()),
        })
}

/// Tokens of the header section: Subject, the addresses, and (for the top
/// message only, `depth` 0) header names, mailers, priorities, Return-Path,
/// Message-ID, the Received chain and Date.
pub(super) fn header_tokens(message: &Message<'_>, sink: &mut Sink, depth: usize) {
    subject_tokens(message, sink, depth);
    let from_reg = from_address_tokens(message, sink, depth);
    if let Some(reply_to) = message.reply_to() {
        address_tokens(reply_to, "r:", sink, true);
        let rt_reg = first_domain(reply_to);
        let same = rt_reg.as_deref().and_then(registrable) == from_reg.as_deref();
        sink.push(if same { "r:same" } else { "r:differs" });
    }
    recipient_tokens(message, sink, depth);
    if depth > 0 {
        return;
    }
    header_name_tokens(message, sink);
    header_order_tokens(message, sink);
    header_shape_tokens(message, sink);
    client_tokens(message, sink);
    return_path_tokens(message, from_reg.as_deref(), sink);
    message_id_tokens(message, from_reg.as_deref(), sink);
    let received_time = received_chain_tokens(message, sink);
    date_tokens(message, received_time, sink);
}

/// The domain of the first address (trimmed, lower case), if it has one.
fn first_domain(address: &Address<'_>) -> Option<String> {
    address
        .first()
        .and_then(|a| a.address())
        .and_then(|a| a.rsplit_once('@'))
        .map(|(_, d)| d.trim().trim_end_matches('.').to_ascii_lowercase())
}

/// `s:` words of the Subject and the encoded words it was written in.
fn subject_tokens(message: &Message<'_>, sink: &mut Sink, depth: usize) {
    if let Some(subject) = message.subject() {
        text_tokens(subject, "s:", sink);
        if let Some(raw) = raw_header(message, "Subject") {
            encoded_word_tokens(raw, "s:enc:", sink);
        }
    } else if depth == 0 {
        sink.push("h:nosubject");
    }
}

/// `f:` tokens of the From addresses (display name, local-part shape);
/// returns the registrable domain of the first, which other headers are
/// compared with.
fn from_address_tokens(message: &Message<'_>, sink: &mut Sink, depth: usize) -> Option<String> {
    let from_domain = message.from().and_then(first_domain);
    let from_reg = from_domain.as_deref().and_then(registrable).map(str::to_string);
    if let Some(from) = message.from() {
        address_tokens(from, "f:", sink, true);
        if let Some(first) = from.first() {
            if first.name().is_none() {
                sink.push("f:noname");
            }
            if let Some((local, _)) = first.address().and_then(|a| a.rsplit_once('@')) {
                sink.push_shape("f:lp:", local, 12);
            }
        }
    } else if depth == 0 {
        sink.push("h:nofrom");
    }
    from_reg
}

/// `to:` and `cc:` tokens, with the number of addresses.
fn recipient_tokens(message: &Message<'_>, sink: &mut Sink, depth: usize) {
    if let Some(to) = message.to() {
        address_tokens(to, "to:", sink, true);
        sink.push2("h:nto:", bucket_count(to.iter().count()));
    } else if depth == 0 {
        sink.push("h:noto");
    }
    if let Some(cc) = message.cc() {
        address_tokens(cc, "cc:", sink, false);
        sink.push2("h:ncc:", bucket_count(cc.iter().count()));
    }
}

/// `hn:` the name of each header present, except the ignored ones.
fn header_name_tokens(message: &Message<'_>, sink: &mut Sink) {
    for header in message.headers() {
        let name = header.name();
        if name.len() > 30 {
            sink.push("hn:long");
            continue;
        }
        if !is_ignored_header(name) {
            sink.push_with(|b| {
                b.push_str("hn:");
                push_ascii_lower(b, name);
            });
        }
    }
}

/// `ho:` the order of the headers, which differs from one mail program to another: the first header
/// (`ho:^>from`) and each pair of neighbours (`ho:from>to`), up to 16 headers, names cut to 16 characters.
/// Received headers and the ignored ones (added along the way, not by the sender) are left out.
fn header_order_tokens(message: &Message<'_>, sink: &mut Sink) {
    let mut prev: Option<&str> = None;
    let mut n = 0;
    for header in message.headers() {
        let name = header.name();
        if name.eq_ignore_ascii_case("Received") || is_ignored_header(name) || name.len() > 30 {
            continue;
        }
        let name = truncate(name, 16);
        sink.push_short_with(|b| {
            b.push_str("ho:");
            match prev {
                Some(p) => push_ascii_lower(b, p),
                None => b.push('^'),
            }
            b.push('>');
            push_ascii_lower(b, name);
        });
        prev = Some(name);
        n += 1;
        if n >= 16 {
            break;
        }
    }
}

/// How the header section is written: the top Content-Type's parameters (`h:ctp:` name, quoted `"` or not
/// `=`, and what separates it from the `;`: `sp`, `tab`, `nl` or `none`), the transfer encodings of the parts
/// (`h:cte:`), and whether the first To is in the From's domain
/// (`h:todom:same` / `h:todom:differs`).
fn header_shape_tokens(message: &Message<'_>, sink: &mut Sink) {
    if let Some(ct) = raw_header(message, "Content-Type") {
        for param in ct.split(';').skip(1).take(4) {
            let sep = if param.starts_with(['\r', '\n']) {
                "nl"
            } else if param.starts_with('\t') {
                "tab"
            } else if param.starts_with(' ') {
                "sp"
            } else {
                "none"
            };
            let Some((name, value)) = param.trim().split_once('=') else {
                continue;
            };
            let quoted = value.trim_start().starts_with('"');
            sink.push_short_with(|b| {
                b.push_str("h:ctp:");
                push_ascii_lower(b, name.trim());
                b.push(if quoted { '"' } else { '=' });
                b.push_str(sep);
            });
        }
    }
    for part in &message.parts {
        if let Some(cte) = part.content_transfer_encoding() {
            sink.push_short_with(|b| {
                b.push_str("h:cte:");
                push_ascii_lower(b, cte.trim());
            });
        }
    }
    if let (Some(from), Some(to)) = (
        message.from().and_then(first_domain),
        message.to().and_then(first_domain),
    ) {
        sink.push(if registrable(&from) == registrable(&to) {
            "h:todom:same"
        } else {
            "h:todom:differs"
        });
    }
}

/// What the sending client says of itself: mailer headers (`h:xm:none`
/// when there is none), priority and precedence words, Organization words.
fn client_tokens(message: &Message<'_>, sink: &mut Sink) {
    let mut mailer = false;
    for (tag, header) in [("xm", "X-Mailer"), ("xm", "User-Agent"), ("xo", "X-MimeOLE")] {
        if let Some(value) = raw_header(message, header) {
            mailer |= tag == "xm";
            mailer_tokens(value, tag, sink);
        }
    }
    if !mailer {
        sink.push("h:xm:none");
    }
    for (tag, header) in [
        ("pri", "X-Priority"),
        ("prec", "Precedence"),
        ("imp", "Importance"),
        ("msp", "X-MSMail-Priority"),
    ] {
        if let Some(value) = raw_header(message, header)
            && let Some(word) = value.split(|c: char| !c.is_alphanumeric()).find(|w| !w.is_empty())
        {
            sink.push_short_with(|b| {
                b.push_str("h:");
                b.push_str(tag);
                b.push(':');
                push_ascii_lower(b, word);
            });
        }
    }
    if let Some(org) = raw_header(message, "Organization") {
        for w in org
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.len() >= MIN_WORD_LEN)
            .take(8)
        {
            sink.push2("org:", &w.to_lowercase());
        }
    }
}

/// `rp:` the registrable domain of the Return-Path, and whether it is the
/// From one (`from_reg`).
fn return_path_tokens(message: &Message<'_>, from_reg: Option<&str>, sink: &mut Sink) {
    if let Some(rp) = message.return_address()
        && let Some((_, domain)) = rp.rsplit_once('@')
    {
        let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
        if let Some(reg) = registrable(&domain) {
            sink.push2("rp:", reg);
            sink.push(if Some(reg) == from_reg { "rp:same" } else { "rp:differs" });
        }
    }
}

/// The shape of the Message-ID's local part, and whether its domain is the
/// From one (`from_reg`).
fn message_id_tokens(message: &Message<'_>, from_reg: Option<&str>, sink: &mut Sink) {
    let Some(id) = raw_header(message, "Message-ID") else {
        sink.push("h:nomsgid");
        return;
    };
    let id = id.trim_start_matches('<').trim_end_matches('>');
    let Some((local, domain)) = id.rsplit_once('@') else {
        sink.push("h:mid:noat");
        return;
    };
    sink.push_shape("h:mid:", local, 20);
    let domain = domain.trim().to_ascii_lowercase();
    let same = registrable(&domain).is_some() && registrable(&domain) == from_reg;
    sink.push(if same { "h:mid:dom:same" } else { "h:mid:dom:differs" });
    if !domain.contains('.') {
        sink.push("h:mid:dom:nodot");
    }
}

/// The length of the Received chain and the tokens of its first
/// [`MAX_RECEIVED`] hops; returns the first valid time a hop gives.
fn received_chain_tokens(message: &Message<'_>, sink: &mut Sink) -> Option<i64> {
    let received: Vec<&mail_parser::Header<'_>> = message
        .headers()
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case("Received"))
        .collect();
    sink.push(match received.len() {
        0 => "h:rcvd:0",
        1 => "h:rcvd:1",
        2 => "h:rcvd:2",
        3 => "h:rcvd:3",
        4 => "h:rcvd:4",
        5..=6 => "h:rcvd:5-6",
        7..=9 => "h:rcvd:7-9",
        _ => "h:rcvd:10+",
    });
    let mut received_time = None;
    for header in received.iter().take(MAX_RECEIVED) {
        if let Some(r) = header.value().as_received() {
            received_tokens(r, sink);
            if received_time.is_none()
                && let Some(date) = &r.date
                && date.is_valid()
            {
                received_time = Some(date.to_timestamp());
            }
        }
    }
    received_time
}

/// The shape of the Date, its time zone, and how far it is from the time
/// of the first hop (`received_time`).
fn date_tokens(message: &Message<'_>, received_time: Option<i64>, sink: &mut Sink) {
    let Some(raw) = raw_header(message, "Date") else {
        sink.push("h:nodate");
        return;
    };
    sink.push_shape("h:date:", raw, 30);
    match message.date().filter(|d| d.is_valid()) {
        Some(date) => {
            let sign = if date.tz_before_gmt { '-' } else { '+' };
            sink.push(&format!("h:tz:{sign}{:02}{:02}", date.tz_hour, date.tz_minute));
            if let Some(received) = received_time {
                sink.push2("h:dskew:", skew_bucket(date.to_timestamp() - received));
            }
        }
        None => sink.push("h:date:bad"),
    }
}

/// Bucket of `date - received` in seconds.
pub(super) fn skew_bucket(diff: i64) -> &'static str {
    let a = diff.unsigned_abs();
    let future = diff > 0;
    match (a, future) {
        (0..=600, _) => "10m",
        (601..=7200, false) => "-2h",
        (601..=7200, true) => "+2h",
        (7201..=129_600, false) => "-36h",
        (7201..=129_600, true) => "+36h",
        (_, false) => "-far",
        (_, true) => "+far",
    }
}

/// `h:xm:` words of a mailer header value and one token of its overall shape.
pub(super) fn mailer_tokens(value: &str, tag: &str, sink: &mut Sink) {
    let mut words = 0;
    for w in value.split(|c: char| !c.is_alphabetic()).filter(|w| w.len() >= 2) {
        sink.push_with(|b| {
            b.push_str("h:");
            b.push_str(tag);
            b.push(':');
            push_lowercase(b, w);
        });
        words += 1;
        if words >= 6 {
            break;
        }
    }
    sink.push_short_with(|b| {
        b.push_str("h:");
        b.push_str(tag);
        b.push_str("v:");
        shape_into(b, value, 30);
    });
}

/// `prefix + charset + ":" + encoding` for each RFC 2047 encoded word in a raw header value.
pub(super) fn encoded_word_tokens(raw: &str, prefix: &str, sink: &mut Sink) {
    for piece in raw.split("=?").skip(1).take(5) {
        let mut fields = piece.splitn(3, '?');
        if let (Some(charset), Some(enc)) = (fields.next(), fields.next()) {
            sink.push_short_with(|b| {
                b.push_str(prefix);
                push_ascii_lower(b, charset);
                b.push(':');
                push_ascii_lower(b, enc);
            });
        }
    }
}

/// Structure tokens of one Received header: protocol, HELO shape, reverse DNS, IP class and domains.
pub(super) fn received_tokens(r: &mail_parser::Received<'_>, sink: &mut Sink) {
    if let Some(with) = &r.with {
        sink.push_with(|b| {
            b.push_str("rc:with:");
            let start = b.len();
            // Display of the protocol (at most a few letters); lowercased in place.
            let _ = write!(b, "{with}");
            b[start..].make_ascii_lowercase();
        });
    }
    if r.tls_version.is_some() || r.tls_cipher.is_some() {
        sink.push("rc:tls");
    }
    let rdns = r
        .from_iprev
        .as_deref()
        .map(|s| s.trim().trim_end_matches('.').to_ascii_lowercase());
    match &r.from {
        Some(Host::Name(name)) => {
            let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
            let helo = if name.parse::<IpAddr>().is_ok() {
                "ip"
            } else if !name.contains('.') {
                "bare"
            } else if rdns.as_deref() == Some(name.as_str()) {
                "same"
            } else {
                "fqdn"
            };
            sink.push2("rc:helo:", helo);
            if helo == "fqdn" || helo == "same" {
                host_tokens(&name, "rc:dom:", sink);
            }
        }
        Some(Host::IpAddr(_)) => sink.push("rc:helo:literal"),
        None => sink.push("rc:nofrom"),
    }
    match rdns.as_deref() {
        Some("unknown") | Some("") => sink.push("rc:rdns:unknown"),
        Some(name) if name.parse::<IpAddr>().is_err() && name.contains('.') => {
            host_tokens(name, "rc:dom:", sink);
            if name.bytes().filter(u8::is_ascii_digit).count() >= 4 {
                sink.push("rc:rdns:dynamic");
            }
        }
        Some(_) => sink.push("rc:rdns:odd"),
        // An address without a name: "from pc (unknown [192.0.2.1])" or "from pc ([192.0.2.1])".
        None if r.from_ip.is_some() => sink.push("rc:rdns:unknown"),
        None => {}
    }
    if let Some(ip) = r.from_ip {
        sink.push2("rc:ip:", ip_class(ip));
    }
    if let Some(Host::Name(by)) = &r.by {
        let by = by.trim().trim_end_matches('.').to_ascii_lowercase();
        if let Some(reg) = registrable(&by) {
            sink.push2("rc:by:", reg);
        }
    }
}

pub(super) fn ip_class(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => "loopback",
        IpAddr::V4(v4) if v4.is_private() || v4.is_link_local() => "private",
        IpAddr::V4(_) => "public4",
        IpAddr::V6(v6) if v6.is_loopback() => "loopback",
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => "mapped",
        IpAddr::V6(_) => "public6",
    }
}

/// `prefix + host` and `prefix + registrable domain` of a host name.
pub(super) fn host_tokens(host: &str, prefix: &str, sink: &mut Sink) {
    sink.push2(prefix, host);
    if let Some(reg) = registrable(host)
        && reg != host
    {
        sink.push2(prefix, reg);
    }
}

pub(super) fn address_tokens(address: &Address<'_>, prefix: &str, sink: &mut Sink, names: bool) {
    for addr in address.iter().take(20) {
        if names && let Some(name) = addr.name() {
            text_tokens(name, prefix, sink);
        }
        if let Some(email) = addr.address()
            && let Some((_, domain)) = email.rsplit_once('@')
        {
            let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
            if !domain.is_empty() {
                host_tokens(&domain, prefix, sink);
            }
        }
    }
}

/// The registrable domain of a host name: its last two labels, or three when the second-level label looks like
/// a country's public suffix ("example.co.uk", "example.com.au"). None for names without a dot.
pub(super) fn registrable(host: &str) -> Option<&str> {
    let last_dot = host.rfind('.')?;
    let tld = &host[last_dot + 1..];
    let Some(second_dot) = host[..last_dot].rfind('.') else {
        return Some(host);
    };
    let second = &host[second_dot + 1..last_dot];
    let cc_suffix = tld.len() == 2
        && (second.len() <= 2 || matches!(second, "com" | "net" | "org" | "gov" | "edu" | "ltd" | "plc" | "nic"));
    if cc_suffix {
        Some(
            host[..second_dot]
                .rfind('.')
                .map_or(host, |third_dot| &host[third_dot + 1..]),
        )
    } else {
        Some(&host[second_dot + 1..])
    }
}
