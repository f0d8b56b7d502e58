//! The PROXY protocol header (HAProxy's, v1 text and v2 binary) a load
//! balancer sends before anything else on a connection it relays, sans
//! I/O: [`parse`] looks at the octets read so far and says whether the
//! header is complete, who the client is, and how many octets it took.
//! The listener reads (with a deadline) and asks; the octets after the
//! header belong to the SMTP session.
//!
//! Parsing is the `ppp` crate's; this module turns its results into what
//! the relay needs: the client's address, or "the balancer's own
//! connection" (a v2 LOCAL command, such as a health check, or a v1
//! UNKNOWN), for which the specification says to use the connection's own
//! endpoints.

use std::net::{IpAddr, SocketAddr};

use ppp::PartialResult;
use ppp::v1;
use ppp::v2;

/// Who a PROXY header says the connection is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A relayed client: its address and port (IPv4-mapped IPv6
    /// addresses as the IPv4 address they stand for).
    Client(SocketAddr),
    /// The balancer's own connection (v2 LOCAL, v1 UNKNOWN, or an address
    /// family without an IP address): the connection's peer is the client.
    Balancer,
}

/// A complete header: who it names, and how many octets of the input it
/// took (the rest is the session's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub source: Source,
    pub len: usize,
}

/// The input is not (the start of) a PROXY protocol header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("invalid PROXY v1 header: {0}")]
    V1(String),
    #[error("invalid PROXY v2 header: {0}")]
    V2(String),
    #[error("PROXY v2 header for a datagram protocol, on a stream")]
    Datagram,
}

/// Looks at the octets received so far: `Ok(None)` when they are the start
/// of a header and more are needed, `Ok(Some(header))` once it is whole.
pub fn parse(input: &[u8]) -> Result<Option<Header>, ProxyError> {
    let v1 = !input.is_empty() && (input.starts_with(V1_PREFIX) || V1_PREFIX.starts_with(input));
    if v1 { parse_v1(input) } else { parse_v2(input) }
}

/// The text header's first word, and its longest form with CRLF (a TCP6
/// line with every field at its widest).
const V1_PREFIX: &[u8] = b"PROXY";
const V1_MAX: usize = 107;

/// A text header is judged once its line is whole: a partial line such
/// as `PROXY TCP4 192.0.2.7 198.51.100.1 51000 2` is not yet wrong.
fn parse_v1(input: &[u8]) -> Result<Option<Header>, ProxyError> {
    let line = match input.iter().position(|&c| c == b'\n') {
        None if input.len() < V1_MAX => return Ok(None),
        None => return Err(ProxyError::V1(format!("no end of line within {V1_MAX} octets"))),
        Some(lf) if lf == 0 || input[lf - 1] != b'\r' => {
            return Err(ProxyError::V1("the line must end in CRLF".into()));
        }
        Some(lf) => &input[..=lf],
    };
    let h = v1::Header::try_from(line).map_err(|e| ProxyError::V1(e.to_string()))?;
    let source = match h.addresses {
        v1::Addresses::Tcp4(a) => client(IpAddr::V4(a.source_address), a.source_port),
        v1::Addresses::Tcp6(a) => client(IpAddr::V6(a.source_address), a.source_port),
        v1::Addresses::Unknown => Source::Balancer,
    };
    Ok(Some(Header {
        source,
        len: line.len(),
    }))
}

fn parse_v2(input: &[u8]) -> Result<Option<Header>, ProxyError> {
    let parsed = v2::Header::try_from(input);
    if parsed.is_incomplete() {
        return Ok(None);
    }
    let h = parsed.map_err(|e| ProxyError::V2(e.to_string()))?;
    let source = match (h.command, h.addresses) {
        (v2::Command::Local, _) => Source::Balancer,
        (v2::Command::Proxy, _) if h.protocol == v2::Protocol::Datagram => return Err(ProxyError::Datagram),
        (v2::Command::Proxy, v2::Addresses::IPv4(a)) => client(IpAddr::V4(a.source_address), a.source_port),
        (v2::Command::Proxy, v2::Addresses::IPv6(a)) => client(IpAddr::V6(a.source_address), a.source_port),
        (v2::Command::Proxy, v2::Addresses::Unspecified | v2::Addresses::Unix(_)) => Source::Balancer,
    };
    Ok(Some(Header {
        source,
        len: h.header.len(),
    }))
}

fn client(ip: IpAddr, port: u16) -> Source {
    Source::Client(SocketAddr::new(ip.to_canonical(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v2 header as HAProxy's `send-proxy-v2` writes it: PROXY, TCP over
    /// IPv4, client 127.0.0.2:40000 to 127.0.0.1:2526, and a NOOP TLV.
    fn v2_tcp4() -> Vec<u8> {
        let mut h = v2::PROTOCOL_PREFIX.to_vec();
        h.extend([0x21, 0x11, 0, 16]);
        h.extend([127, 0, 0, 2, 127, 0, 0, 1]);
        h.extend(40000u16.to_be_bytes());
        h.extend(2526u16.to_be_bytes());
        h.extend([0x04, 0, 1, 0]); // PP2_TYPE_NOOP, length 1
        h
    }

    fn at(s: &str) -> Source {
        Source::Client(s.parse().unwrap())
    }

    #[test]
    fn v1_names_the_client_and_leaves_what_follows() {
        let input = b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 25\r\nEHLO x\r\n";
        let h = parse(input).unwrap().unwrap();
        assert_eq!(h.source, at("192.0.2.7:51000"));
        assert_eq!(&input[h.len..], b"EHLO x\r\n");

        let input = b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 25\r\n";
        let h = parse(input).unwrap().unwrap();
        assert_eq!(h.source, at("[2001:db8::7]:51000"));
        assert_eq!(h.len, input.len());
    }

    #[test]
    fn v1_unknown_is_the_balancers_own_connection() {
        let h = parse(b"PROXY UNKNOWN\r\n").unwrap().unwrap();
        assert_eq!(
            h,
            Header {
                source: Source::Balancer,
                len: 15
            }
        );
    }

    #[test]
    fn v2_names_the_client_and_leaves_what_follows() {
        let mut input = v2_tcp4();
        let header_len = input.len();
        input.extend(b"QUIT\r\n");
        let h = parse(&input).unwrap().unwrap();
        assert_eq!(h.source, at("127.0.0.2:40000"));
        assert_eq!(h.len, header_len);
    }

    #[test]
    fn v2_ipv4_mapped_client_is_the_ipv4_client() {
        let mut h = v2::PROTOCOL_PREFIX.to_vec();
        h.extend([0x21, 0x21, 0, 36]);
        h.extend("::ffff:192.0.2.9".parse::<std::net::Ipv6Addr>().unwrap().octets());
        h.extend("::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        h.extend([0xc3, 0x50, 0, 25]);
        assert_eq!(parse(&h).unwrap().unwrap().source, at("192.0.2.9:50000"));
    }

    #[test]
    fn v2_local_is_the_balancers_own_connection() {
        // HAProxy's health checks with check-send-proxy: LOCAL, UNSPEC.
        let mut h = v2::PROTOCOL_PREFIX.to_vec();
        h.extend([0x20, 0x00, 0, 0]);
        assert_eq!(
            parse(&h).unwrap().unwrap(),
            Header {
                source: Source::Balancer,
                len: 16
            }
        );
    }

    #[test]
    fn every_prefix_of_a_header_asks_for_more() {
        let v2 = v2_tcp4();
        let v1 = b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 25\r\n";
        for whole in [&v2[..], &v1[..]] {
            for n in 0..whole.len() {
                assert_eq!(parse(&whole[..n]), Ok(None), "{n} octets of {whole:?}");
            }
            assert!(parse(whole).unwrap().is_some());
        }
    }

    #[test]
    fn anything_else_is_refused_at_once() {
        for input in [
            &b"EHLO client.example\r\n"[..],
            b"GET / HTTP/1.0\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"PROXY TCP4 300.0.0.1 198.51.100.1 51000 25\r\n",
            b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 25\n",
        ] {
            assert!(parse(input).is_err(), "{input:?}");
        }
        // Not the start of either header: refused at the first octet.
        assert!(parse(b"E").is_err());
        // No end of line within the longest a v1 header may be.
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        assert!(matches!(parse(&long), Err(ProxyError::V1(_))));
        // A v2 signature with version 1.
        let mut bad = v2::PROTOCOL_PREFIX.to_vec();
        bad.extend([0x11, 0x11, 0, 12]);
        assert!(matches!(parse(&bad), Err(ProxyError::V2(_))));
        // A datagram protocol is not what a TCP listener relays.
        let mut udp = v2_tcp4();
        udp[13] = 0x12;
        assert_eq!(parse(&udp), Err(ProxyError::Datagram));
    }
}
