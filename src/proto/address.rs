//! Mailbox and reverse/forward path parsing (RFC 5321 §4.1.2, RFC 6531).

use std::fmt;

/// A mailbox `local@domain`. The domain is lowercased (domains are
/// case-insensitive); the local part is kept as sent, because only the
/// final destination may interpret it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Mailbox {
    pub local: String,
    pub domain: String,
}

impl Mailbox {
    /// True if any byte is outside ASCII (needs SMTPUTF8).
    pub fn is_utf8(&self) -> bool {
        !self.local.is_ascii() || !self.domain.is_ascii()
    }

    /// The lookup key used by recipient tables: local part and domain lowercased.
    pub fn key(&self) -> String {
        let mut k = String::with_capacity(self.local.len() + self.domain.len() + 1);
        k.push_str(&self.local.to_lowercase());
        k.push('@');
        k.push_str(&self.domain);
        k
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// Why an address could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address must be enclosed in <>")]
    NotBracketed,
    #[error("empty local part")]
    EmptyLocal,
    #[error("missing @domain")]
    NoDomain,
    #[error("invalid character in address")]
    BadChar,
    #[error("invalid domain")]
    BadDomain,
    #[error("address too long")]
    TooLong,
}

/// Longest path accepted (RFC 5321 §4.5.3.1.3 says 256 octets).
pub const MAX_PATH: usize = 256;

/// Parses `<...>` (with optional obsolete source route) into a mailbox;
/// `Ok(None)` is the null path `<>`. Returns the rest of the input after `>`.
pub fn parse_path(input: &str) -> Result<(Option<Mailbox>, &str), AddressError> {
    let input = input.trim_start_matches(' ');
    let Some(rest) = input.strip_prefix('<') else {
        return Err(AddressError::NotBracketed);
    };
    // Find the closing '>' outside a quoted string.
    let bytes = rest.as_bytes();
    let mut i = 0;
    let mut in_quote = false;
    let mut end = None;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_quote => i += 1,
            b'"' => in_quote = !in_quote,
            b'>' if !in_quote => {
                end = Some(i);
                break;
            }
            _ => {}
        }
        i += 1;
    }
    let end = end.ok_or(AddressError::NotBracketed)?;
    let inner = &rest[..end];
    let after = &rest[end + 1..];
    if inner.is_empty() {
        return Ok((None, after));
    }
    if inner.len() > MAX_PATH {
        return Err(AddressError::TooLong);
    }
    // Obsolete source route: "@a,@b:user@domain" — ignored (RFC 5321 §4.1.2).
    let inner = if inner.starts_with('@') {
        match inner.find(':') {
            Some(c) => &inner[c + 1..],
            None => return Err(AddressError::BadChar),
        }
    } else {
        inner
    };
    parse_mailbox(inner).map(|m| (Some(m), after))
}

/// Parses `local@domain` without brackets.
pub fn parse_mailbox(s: &str) -> Result<Mailbox, AddressError> {
    let at = s.rfind('@').ok_or(AddressError::NoDomain)?;
    let (local, domain) = (&s[..at], &s[at + 1..]);
    if local.is_empty() {
        return Err(AddressError::EmptyLocal);
    }
    check_local(local)?;
    let domain = check_domain(domain)?;
    Ok(Mailbox {
        local: unquote_if_plain(local),
        domain,
    })
}

/// A quoted local part whose content needs no quoting is the same mailbox
/// as its unquoted form (`"user"@d` is `user@d`, RFC 5321 §4.1.2): the
/// plain form, so tables and duplicates compare equal. Others are kept.
fn unquote_if_plain(local: &str) -> String {
    if let Some(inner) = local.strip_prefix('"').and_then(|l| l.strip_suffix('"'))
        && !inner.contains('\\')
        && !inner.is_empty()
        && !inner.starts_with('"')
        && check_local(inner).is_ok()
    {
        return inner.to_string();
    }
    local.to_string()
}

fn check_local(local: &str) -> Result<(), AddressError> {
    if local.starts_with('"') {
        // Quoted string: printable ASCII / UTF-8 with backslash escapes.
        if local.len() < 2 || !local.ends_with('"') {
            return Err(AddressError::BadChar);
        }
        let inner = &local[1..local.len() - 1];
        let mut esc = false;
        for c in inner.chars() {
            if esc {
                esc = false;
                continue;
            }
            match c {
                '\\' => esc = true,
                '"' => return Err(AddressError::BadChar),
                c if (c as u32) < 0x20 || c == '\x7f' => return Err(AddressError::BadChar),
                _ => {}
            }
        }
        return Ok(());
    }
    // Dot-string of atoms.
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(AddressError::BadChar);
    }
    for c in local.chars() {
        let ok = c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c) || !c.is_ascii();
        if !ok || c.is_control() {
            return Err(AddressError::BadChar);
        }
    }
    Ok(())
}

fn check_domain(domain: &str) -> Result<String, AddressError> {
    if domain.is_empty() || domain.len() > 255 {
        return Err(AddressError::BadDomain);
    }
    if domain.starts_with('[') {
        // Address literal: [192.0.2.1] or [IPv6:...]
        if !domain.ends_with(']') {
            return Err(AddressError::BadDomain);
        }
        let lit = &domain[1..domain.len() - 1];
        let ok = match lit.get(..5) {
            Some(p) if p.eq_ignore_ascii_case("IPv6:") => lit[5..].parse::<std::net::Ipv6Addr>().is_ok(),
            _ => lit.parse::<std::net::Ipv4Addr>().is_ok(),
        };
        return if ok {
            Ok(domain.to_ascii_lowercase())
        } else {
            Err(AddressError::BadDomain)
        };
    }
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    for label in domain.split('.') {
        if label.is_empty() || label.len() > 63 || label.starts_with('-') || label.ends_with('-') {
            return Err(AddressError::BadDomain);
        }
        if !label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || !c.is_ascii())
        {
            return Err(AddressError::BadDomain);
        }
    }
    Ok(domain.to_lowercase())
}

/// Validates a HELO/EHLO argument: a domain or an address literal.
pub fn is_valid_helo(s: &str) -> bool {
    !s.is_empty() && check_domain(s).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mb(s: &str) -> Option<Mailbox> {
        parse_path(s).unwrap().0
    }

    #[test]
    fn table() {
        let ok: &[(&str, &str)] = &[
            ("<a@b.example>", "a@b.example"),
            ("<User@Example.COM>", "User@example.com"),
            ("<@relay.example,@r2.example:u@d.example>", "u@d.example"),
            ("<\"quoted local\"@d.example>", "\"quoted local\"@d.example"),
            ("<\"a>b\"@d.example>", "\"a>b\"@d.example"),
            ("<u@[192.0.2.1]>", "u@[192.0.2.1]"),
            ("<u@[IPv6:2001:db8::1]>", "u@[ipv6:2001:db8::1]"),
            ("<jörg@exämple.de>", "jörg@exämple.de"),
            ("<u@d.example.>", "u@d.example"),
        ];
        for (input, want) in ok {
            assert_eq!(mb(input).unwrap().to_string(), *want, "{input}");
        }
        assert_eq!(mb("<>"), None);
        let bad: &[(&str, AddressError)] = &[
            ("a@b", AddressError::NotBracketed),
            ("<a@b", AddressError::NotBracketed),
            ("<ab>", AddressError::NoDomain),
            ("<@b>", AddressError::BadChar),
            ("<a..b@c>", AddressError::BadChar),
            ("<a b@c>", AddressError::BadChar),
            ("<a@b..c>", AddressError::BadDomain),
            ("<a@-b.c>", AddressError::BadDomain),
            ("<a@[1.2.3]>", AddressError::BadDomain),
            ("<a@>", AddressError::BadDomain),
        ];
        for (input, want) in bad {
            assert_eq!(parse_path(input).unwrap_err(), *want, "{input}");
        }
    }

    #[test]
    fn rest_after_path_is_returned() {
        let (_, rest) = parse_path("<a@b> SIZE=10").unwrap();
        assert_eq!(rest, " SIZE=10");
    }

    #[test]
    fn too_long_is_refused() {
        let long = format!("<{}@example.com>", "a".repeat(300));
        assert_eq!(parse_path(&long).unwrap_err(), AddressError::TooLong);
    }

    #[test]
    fn key_lowercases_local_part() {
        assert_eq!(mb("<Info@Example.com>").unwrap().key(), "info@example.com");
    }
}
