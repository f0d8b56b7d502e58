//! `[dnsbl]`: DNS lists with weights and answer filters
//! (`zone[=a.b.c.d][*weight]`, postscreen style).

use std::net::Ipv4Addr;

use super::ConfigError;
use super::defaults;
use super::raw::RawDnsbl;

/// One octet of an answer filter: `n`, `[a..b]` or `[a;b;c]`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Octet {
    Range(u8, u8),
    Set(Vec<u8>),
}

impl Octet {
    fn matches(&self, v: u8) -> bool {
        match self {
            Octet::Range(a, b) => (*a..=*b).contains(&v),
            Octet::Set(s) => s.contains(&v),
        }
    }
}

/// A list zone with its weight and optional answer filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    pub name: String,
    pub weight: i32,
    filter: Option<[Octet; 4]>,
}

impl Zone {
    /// Parses `zone[=a.b.c.d][*weight]`.
    pub fn parse(spec: &str) -> Result<Zone, String> {
        let (rest, weight) = match spec.rsplit_once('*') {
            Some((r, w)) => (
                r,
                w.trim()
                    .parse::<i32>()
                    .map_err(|_| format!("{spec:?}: weight {w:?} is not an integer"))?,
            ),
            None => (spec, 1),
        };
        let (name, filter) = match rest.split_once('=') {
            Some((n, f)) => (n, Some(parse_filter(f).map_err(|e| format!("{spec:?}: {e}"))?)),
            None => (rest, None),
        };
        let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() || !crate::proto::address::is_valid_helo(&name) || name.starts_with('[') {
            return Err(format!("{spec:?}: {name:?} is not a DNS zone name"));
        }
        if weight == 0 {
            return Err(format!("{spec:?}: weight 0 has no effect"));
        }
        Ok(Zone { name, weight, filter })
    }

    /// Does this answer count as a listing? Without a filter, any 127/8
    /// answer does (RFC 5782 §2.3); anything else is nonsense.
    pub fn counts(&self, a: Ipv4Addr) -> bool {
        let o = a.octets();
        match &self.filter {
            Some(f) => f.iter().zip(o).all(|(p, v)| p.matches(v)),
            None => o[0] == 127,
        }
    }
}

fn parse_filter(f: &str) -> Result<[Octet; 4], String> {
    // Split on dots outside brackets ("127.0.0.[2..11]").
    let mut parts: Vec<&str> = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in f.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            '.' if depth == 0 => {
                parts.push(&f[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&f[start..]);
    if parts.len() != 4 {
        return Err(format!("answer filter {f:?} needs four octets"));
    }
    let octet = |p: &str| -> Result<Octet, String> {
        let num = |s: &str| s.trim().parse::<u8>().map_err(|_| format!("{s:?} is not an octet"));
        if let Some(inner) = p.strip_prefix('[').and_then(|p| p.strip_suffix(']')) {
            if let Some((a, b)) = inner.split_once("..") {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("empty range [{a}..{b}]"));
                }
                Ok(Octet::Range(a, b))
            } else {
                Ok(Octet::Set(inner.split(';').map(num).collect::<Result<_, _>>()?))
            }
        } else {
            let n = num(p)?;
            Ok(Octet::Range(n, n))
        }
    };
    Ok([octet(parts[0])?, octet(parts[1])?, octet(parts[2])?, octet(parts[3])?])
}

/// Parses the `dnsbl.zones` / `dnsbl.domain_zones` lists.
pub fn parse_zones(key: &str, specs: &[String]) -> Result<Vec<Zone>, ConfigError> {
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| Zone::parse(s).map_err(|e| ConfigError::new(format!("{key}[{i}]"), e)))
        .collect()
}

#[derive(Debug, Clone)]
pub struct Dnsbl {
    pub zones: Vec<Zone>,
    pub domain_zones: Vec<Zone>,
    pub threshold: i32,
    pub replies: std::collections::HashMap<String, String>,
    pub probe_interval: std::time::Duration,
}

pub(super) fn validate_dnsbl(rb: RawDnsbl) -> Result<Dnsbl, ConfigError> {
    let threshold = rb.threshold.unwrap_or(defaults::DNSBL_THRESHOLD);
    if !(1..=1000).contains(&threshold) {
        return Err(ConfigError::new("dnsbl.threshold", "must be between 1 and 1000"));
    }
    let dnsbl = Dnsbl {
        zones: parse_zones("dnsbl.zones", &rb.zones.unwrap_or_default())?,
        domain_zones: parse_zones("dnsbl.domain_zones", &rb.domain_zones.unwrap_or_default())?,
        threshold: threshold as i32,
        replies: rb
            .replies
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k.trim_end_matches('.').to_ascii_lowercase(), v))
            .collect(),
        probe_interval: super::dur(
            "dnsbl.probe_interval",
            rb.probe_interval,
            super::defaults::DNSBL_PROBE_INTERVAL,
        )?,
    };
    for (zone, text) in &dnsbl.replies {
        if !dnsbl.zones.iter().chain(&dnsbl.domain_zones).any(|z| &z.name == zone) {
            return Err(ConfigError::new(
                format!("dnsbl.replies.{zone}"),
                "not a zone listed in dnsbl.zones",
            ));
        }
        if text.contains(['\r', '\n']) {
            return Err(ConfigError::new(format!("dnsbl.replies.{zone}"), "must be one line"));
        }
    }
    Ok(dnsbl)
}
