//! The `Authentication-Results` header we add (RFC 8601): one resinfo
//! per result, property values quoted where they must be, folded at
//! spaces.

/// Folded header lines are kept to this many characters (RFC 5322 §2.1.1),
/// except where a single token is longer.
pub(super) const LINE_LIMIT: usize = 78;

/// Property values longer than this are left out of the header rather than
/// producing an unreasonably long line.
const MAX_PVALUE: usize = 255;

/// One `method=result` entry of the header.
pub(super) struct ResInfo {
    pub(super) method: &'static str,
    pub(super) result: &'static str,
    pub(super) comment: Option<&'static str>,
    pub(super) props: Vec<(&'static str, String)>,
}

/// Adds `name=value` if the value can be written sensibly.
pub(super) fn push_prop(props: &mut Vec<(&'static str, String)>, name: &'static str, value: &str) {
    if let Some(v) = pvalue(value) {
        props.push((name, v));
    }
}

/// A property value (RFC 8601 `pvalue`): as is when it is a plain
/// [local-part@]domain made of atext, dots and one `@`; otherwise a
/// quoted-string. Control characters are dropped; empty or overlong
/// values give `None`.
pub(super) fn pvalue(v: &str) -> Option<String> {
    let clean: String = v.chars().filter(|c| !c.is_control()).collect();
    if clean.is_empty() || clean.len() > MAX_PVALUE {
        return None;
    }
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c);
    let dot_atom = |s: &str| !s.is_empty() && s.split('.').all(|p| !p.is_empty() && p.chars().all(atext));
    let plain = match clean.rsplit_once('@') {
        Some((local, domain)) => (local.is_empty() || dot_atom(local)) && dot_atom(domain),
        None => dot_atom(&clean),
    };
    if plain {
        return Some(clean);
    }
    let mut q = String::with_capacity(clean.len() + 2);
    q.push('"');
    for c in clean.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    Some(q)
}

/// Standard base64 of a few bytes (the `header.b` prefix).
pub(super) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `Authentication-Results: id;` then one resinfo per line (`;` between
/// them), each folded at spaces to keep lines within [`LINE_LIMIT`].
pub(super) fn format_header(authserv_id: &str, infos: &[ResInfo]) -> String {
    let id: String = authserv_id
        .chars()
        .filter(|c| !c.is_control() && !c.is_whitespace() && *c != ';')
        .collect();
    let mut out = String::with_capacity(256);
    out.push_str("Authentication-Results: ");
    out.push_str(&id);
    if infos.is_empty() {
        out.push_str("; none\r\n");
        return out;
    }
    out.push(';');
    for (n, info) in infos.iter().enumerate() {
        let mut tokens = vec![format!("{}={}", info.method, info.result)];
        if let Some(c) = info.comment {
            let words: Vec<&str> = c.split(' ').collect();
            let last = words.len().saturating_sub(1);
            for (i, w) in words.iter().enumerate() {
                let open = if i == 0 { "(" } else { "" };
                let close = if i == last { ")" } else { "" };
                tokens.push(format!("{open}{w}{close}"));
            }
        }
        tokens.extend(info.props.iter().map(|(k, v)| format!("{k}={v}")));
        if n + 1 < infos.len()
            && let Some(t) = tokens.last_mut()
        {
            t.push(';');
        }
        out.push_str("\r\n\t");
        let mut col = 1;
        for (i, t) in tokens.iter().enumerate() {
            if i > 0 {
                if col + 1 + t.len() > LINE_LIMIT {
                    out.push_str("\r\n\t");
                    col = 1;
                } else {
                    out.push(' ');
                    col += 1;
                }
            }
            out.push_str(t);
            col += t.len();
        }
    }
    out.push_str("\r\n");
    out
}
