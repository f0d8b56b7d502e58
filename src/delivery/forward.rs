//! Passing the real client on to the next hop: Postfix's XFORWARD (for
//! logging; changes no policy) and XCLIENT (the next hop then treats the
//! session as coming from the client; Postfix and Dovecot LMTP).

use std::fmt::Write as _;

use crate::config::ForwardClient;
use crate::mail::envelope::Envelope;

/// The forwarding extensions a next hop offered in its EHLO/LHLO reply:
/// the attribute names it listed after the keyword.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Offered {
    pub xforward: Option<Vec<String>>,
    pub xclient: Option<Vec<String>>,
}

impl Offered {
    /// Reads one EHLO keyword line; true when it was a forwarding one.
    pub fn note(&mut self, line: &str) -> bool {
        let mut words = line.split_ascii_whitespace();
        let kw = words.next().unwrap_or("").to_ascii_uppercase();
        let attrs = || words.clone().map(str::to_ascii_uppercase).collect::<Vec<_>>();
        match kw.as_str() {
            "XFORWARD" => self.xforward = Some(attrs()),
            "XCLIENT" => self.xclient = Some(attrs()),
            _ => return false,
        }
        true
    }
}

/// Which command to send for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Xforward,
    Xclient,
}

/// The method `mode` picks among what the next hop `offered`.
pub fn choose(mode: ForwardClient, offered: &Offered) -> Option<Method> {
    let xf = offered.xforward.is_some();
    let xc = offered.xclient.is_some();
    match mode {
        ForwardClient::None => None,
        ForwardClient::Xforward => xf.then_some(Method::Xforward),
        ForwardClient::Xclient => xc.then_some(Method::Xclient),
        ForwardClient::Auto if xf => Some(Method::Xforward),
        ForwardClient::Auto if xc => Some(Method::Xclient),
        ForwardClient::Auto => None,
    }
}

/// xtext (RFC 3461 §4): `+HH` for `+`, `=`, controls, space and non-ASCII.
fn xtext(s: &str, out: &mut String) {
    for b in s.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "+{b:02X}");
        }
    }
}

/// The command line (with CRLF) for `env`, with only the attributes the
/// next hop listed. `None` when it listed none we can fill.
pub fn command(method: Method, offered: &Offered, env: &Envelope) -> Option<String> {
    let (verb, listed) = match method {
        Method::Xforward => ("XFORWARD", offered.xforward.as_ref()?),
        Method::Xclient => ("XCLIENT", offered.xclient.as_ref()?),
    };
    let addr = match env.client_ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("IPV6:{v6}"),
    };
    // Mail sluice wrote itself (DSNs) comes from this host; the
    // connection may carry a forwarded identity from an earlier message.
    let local = env.generated.is_some();
    let name = match (&env.client_name, local) {
        (_, true) => "localhost",
        (Some(n), false) => n.as_str(),
        (None, false) => "[UNAVAILABLE]",
    };
    let helo = if env.helo.is_empty() {
        "[UNAVAILABLE]"
    } else {
        // Bounded so the command stays under 512 octets.
        &env.helo[..env.helo.floor_char_boundary(255)]
    };
    let proto = if env.esmtp { "ESMTP" } else { "SMTP" };
    let mut attrs: Vec<(&str, &str)> = vec![("NAME", name), ("ADDR", &addr), ("PROTO", proto), ("HELO", helo)];
    if method == Method::Xforward {
        attrs.push(("SOURCE", if local { "LOCAL" } else { "REMOTE" }));
        attrs.push(("IDENT", &env.id));
    }
    let mut line = String::from(verb);
    let mut any = false;
    for (k, v) in attrs {
        if listed.iter().any(|l| l == k) {
            line.push(' ');
            line.push_str(k);
            line.push('=');
            xtext(v, &mut line);
            any = true;
        }
    }
    any.then(|| line + "\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Envelope {
        serde_json::from_value(serde_json::json!({
            "id": "Q1", "received_at": 0, "client_ip": "192.0.2.7", "helo": "client+x.example",
            "mail_from": null, "rcpts": [], "esmtp": true
        }))
        .unwrap()
    }

    #[test]
    fn offered_attributes_only_and_xtext() {
        let mut o = Offered::default();
        assert!(o.note("XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT"));
        assert!(!o.note("PIPELINING"));
        let line = command(Method::Xforward, &o, &env()).unwrap();
        assert_eq!(
            line,
            "XFORWARD NAME=[UNAVAILABLE] ADDR=192.0.2.7 PROTO=ESMTP HELO=client+2Bx.example SOURCE=REMOTE IDENT=Q1\r\n"
        );
        assert_eq!(command(Method::Xclient, &o, &env()), None, "XCLIENT not offered");
        o.note("XCLIENT ADDR HELO");
        assert_eq!(
            command(Method::Xclient, &o, &env()).unwrap(),
            "XCLIENT ADDR=192.0.2.7 HELO=client+2Bx.example\r\n"
        );
    }

    #[test]
    fn auto_prefers_xforward() {
        let mut o = Offered::default();
        assert_eq!(choose(ForwardClient::Auto, &o), None);
        o.note("XCLIENT ADDR");
        assert_eq!(choose(ForwardClient::Auto, &o), Some(Method::Xclient));
        o.note("XFORWARD ADDR");
        assert_eq!(choose(ForwardClient::Auto, &o), Some(Method::Xforward));
        assert_eq!(choose(ForwardClient::Xclient, &o), Some(Method::Xclient));
        assert_eq!(choose(ForwardClient::None, &o), None);
    }
}
