//! HTML reduced to text for the word tokens: tags and comments stripped
//! (tag names are tokens of their own), script and style content dropped,
//! character references decoded.

use super::*;

/// Reduce HTML to text: strip tags and comments, drop script/style content, decode entities.
/// Tag names are emitted as `tag:name` tokens.
pub(super) fn html_to_text(html: &str, out: &mut String, sink: &mut Sink) {
    let mut rest = html;
    let mut ntags = 0usize;
    let html_exp = exp("html") || exp("htmlta") || exp("htmlsig") || exp("htmlcnt") || exp("htmla");
    let mut st = HtmlState::default();
    let text_start = out.len();
    while let Some(lt) = rest.find('<') {
        decode_entities(&rest[..lt], out);
        rest = &rest[lt..];
        if rest.starts_with("<!--") {
            rest = match rest.find("-->") {
                Some(end) => &rest[end + 3..],
                None => "",
            };
            sink.push("tag:comment");
            out.push(' ');
            continue;
        }
        let end = rest.find('>').map_or(rest.len(), |e| e + 1);
        let tag = &rest[..end];
        rest = &rest[end..];
        let body = tag.trim_start_matches('<');
        let closing = body.starts_with('/');
        let body = body.trim_start_matches('/');
        let name_len = body.bytes().take_while(|b| b.is_ascii_alphanumeric()).count();
        // ASCII alphanumerics only, so any cut is on a character boundary.
        let name = &body[..name_len.min(12)];
        if !name.is_empty() {
            ntags += 1;
            if ntags <= 2000 {
                sink.push_with(|b| {
                    b.push_str("tag:");
                    push_ascii_lower(b, name);
                });
            }
        }
        if html_exp && !name.is_empty() {
            st.tag(name, closing, &body[name.len()..], out, sink);
        }
        let close = if closing {
            None
        } else if name.eq_ignore_ascii_case("script") {
            Some("</script")
        } else if name.eq_ignore_ascii_case("style") {
            Some("</style")
        } else {
            None
        };
        if let Some(close) = close {
            rest = match find_ignore_ascii_case(rest, close) {
                Some(pos) => &rest[pos..],
                None => "",
            };
        }
        out.push(' ');
    }
    decode_entities(rest, out);
    if html_exp {
        st.finish(out.len() - text_start, sink);
    }
}

/// EXPERIMENT `html`: what the tags of an HTML part say besides their names.
#[derive(Default)]
struct HtmlState {
    imgs: usize,
    links: usize,
    /// The registrable domain of the open `<a href>`, and where its text starts in `out`.
    anchor: Option<(String, usize)>,
}

/// The value of attribute `name` in the attribute text of a tag (ASCII case-insensitive name).
fn attr<'a>(attrs: &'a str, name: &str) -> Option<&'a str> {
    let mut pos = 0;
    while let Some(found) = find_ignore_ascii_case(&attrs[pos..], name) {
        let at = pos + found;
        pos = at + name.len();
        let before_ok = at == 0 || !attrs.as_bytes()[at - 1].is_ascii_alphanumeric() && attrs.as_bytes()[at - 1] != b'-';
        let rest = attrs[pos..].trim_start();
        if before_ok && let Some(rest) = rest.strip_prefix('=') {
            let rest = rest.trim_start();
            return Some(if let Some(q) = rest.strip_prefix('"') {
                q.split('"').next().unwrap_or("")
            } else if let Some(q) = rest.strip_prefix('\'') {
                q.split('\'').next().unwrap_or("")
            } else {
                rest.split(|c: char| c.is_ascii_whitespace() || c == '>').next().unwrap_or("")
            });
        }
    }
    None
}

/// The registrable domain of an http(s) URL.
fn url_domain(url: &str) -> Option<String> {
    let url = url.trim();
    let lower = url.get(..8).map(str::to_ascii_lowercase).unwrap_or_default();
    let rest = if lower.starts_with("http://") {
        &url[7..]
    } else if lower.starts_with("https://") {
        &url[8..]
    } else if lower.starts_with("www.") {
        url
    } else {
        return None;
    };
    let host = rest.split(['/', '?', '#', ':', ' ']).next()?;
    let host = host.rsplit('@').next()?.trim_end_matches('.').to_ascii_lowercase();
    registrable(&host).map(str::to_string)
}

impl HtmlState {
    fn tag(&mut self, name: &str, closing: bool, attrs: &str, out: &str, sink: &mut Sink) {
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        let all = exp("html");
        let (ta, sig, cnt, an) = (all || exp("htmlta"), all || exp("htmlsig"), all || exp("htmlcnt"), all || exp("htmla"));
        let _ = cnt;
        if closing {
            if an && is("a")
                && let Some((domain, start)) = self.anchor.take()
            {
                let text = out.get(start..).unwrap_or("").trim();
                if text.is_empty() {
                    return;
                }
                if let Some(shown) = text
                    .split_whitespace()
                    .find(|w| w.contains('.') && (w.len() > 4))
                    .filter(|w| {
                        let l = w.to_ascii_lowercase();
                        l.starts_with("http") || l.starts_with("www.")
                    })
                {
                    match url_domain(shown) {
                        Some(d) if d == domain => sink.push("html:a:same"),
                        Some(_) => sink.push("html:a:mismatch"),
                        None => {}
                    }
                } else {
                    sink.push("html:a:words");
                }
            }
            return;
        }
        if is("img") {
            self.imgs += 1;
            if an && self.anchor.is_some() {
                sink.push("html:a:img");
            }
            if sig && let Some(w) = attr(attrs, "width")
                && let Ok(w) = w.trim().trim_end_matches("px").parse::<u32>()
                && w <= 2
            {
                sink.push("html:img:tiny");
            }
        } else if is("a") {
            if let Some(href) = attr(attrs, "href") {
                self.links += 1;
                if let Some(d) = url_domain(href) {
                    self.anchor = Some((d, out.len()));
                }
            }
        } else if sig && is("font") {
            if let Some(c) = attr(attrs, "color") {
                let c = c.trim().to_ascii_lowercase();
                if matches!(c.as_str(), "white" | "#fff" | "#ffffff" | "fff" | "ffffff") {
                    sink.push("html:white");
                }
            }
            if let Some(sz) = attr(attrs, "size") {
                let sz = sz.trim();
                if sz == "0" || sz == "1" || sz.starts_with('-') {
                    sink.push("html:font:tiny");
                } else if sz.starts_with('+') || sz.parse::<u32>().is_ok_and(|n| n >= 5) {
                    sink.push("html:font:big");
                }
            }
        }
        if sig && let Some(style) = attr(attrs, "style") {
            let style: String = style.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_lowercase();
            if style.contains("display:none") || style.contains("visibility:hidden") {
                sink.push("html:hidden");
            }
            if style.contains("font-size:0") || style.contains("font-size:1px") || style.contains("font-size:2px") {
                sink.push("html:font:tiny");
            }
            if style.contains("color:#fff") || style.contains("color:white") {
                sink.push("html:white");
            }
        }
        let mut n = 0;
        if !ta {
            return;
        }
        for a in attrs.split(|c: char| c.is_ascii_whitespace()).filter_map(|a| a.split_once('=').map(|(n, _)| n)) {
            let a = a.trim();
            if a.is_empty() || a.len() > 12 || !a.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-') {
                continue;
            }
            sink.push_short_with(|b| {
                b.push_str("ta:");
                push_ascii_lower(b, name);
                b.push(':');
                push_ascii_lower(b, a);
            });
            n += 1;
            if n >= 6 {
                break;
            }
        }
    }

    fn finish(&self, text_len: usize, sink: &mut Sink) {
        if !(exp("html") || exp("htmlcnt")) {
            return;
        }
        sink.push2("html:img:", bucket_count(self.imgs));
        sink.push2("html:links:", bucket_count(self.links));
        if self.imgs > 0 {
            sink.push2("html:txtperimg:", log_bucket(text_len / self.imgs));
        }
    }
}

/// Byte offset of the first ASCII-case-insensitive occurrence of the ASCII string `needle` in `hay`.
pub(super) fn find_ignore_ascii_case(hay: &str, needle: &str) -> Option<usize> {
    let n = needle.as_bytes();
    if n.is_empty() {
        return Some(0);
    }
    // Candidates start with the needle's first byte (exactly, unless it is a letter).
    let hay = hay.as_bytes();
    let first = n[0];
    let matches = |pos: usize| hay.get(pos..pos + n.len()).is_some_and(|w| w.eq_ignore_ascii_case(n));
    if first.is_ascii_alphabetic() {
        memchr::memchr2_iter(first.to_ascii_lowercase(), first.to_ascii_uppercase(), hay).find(|&pos| matches(pos))
    } else {
        memchr::memchr_iter(first, hay).find(|&pos| matches(pos))
    }
}

/// Named character references decoded besides numeric ones.
pub(super) const ENTITIES: &[(&str, char)] = &[
    ("nbsp", ' '),
    ("amp", '&'),
    ("lt", '<'),
    ("gt", '>'),
    ("quot", '"'),
    ("apos", '\''),
    ("copy", '©'),
    ("reg", '®'),
    ("trade", '™'),
    ("euro", '€'),
    ("pound", '£'),
    ("cent", '¢'),
    ("yen", '¥'),
    ("middot", '·'),
    ("bull", '•'),
    ("hellip", '…'),
    ("ndash", '–'),
    ("mdash", '—'),
    ("lsquo", '\''),
    ("rsquo", '\''),
    ("ldquo", '"'),
    ("rdquo", '"'),
    ("laquo", '«'),
    ("raquo", '»'),
    ("shy", '\u{ad}'),
    ("eacute", 'é'),
    ("egrave", 'è'),
    ("aacute", 'á'),
    ("agrave", 'à'),
    ("iacute", 'í'),
    ("oacute", 'ó'),
    ("uacute", 'ú'),
    ("ntilde", 'ñ'),
    ("ccedil", 'ç'),
    ("auml", 'ä'),
    ("ouml", 'ö'),
    ("uuml", 'ü'),
    ("szlig", 'ß'),
];

pub(super) fn decode_entities(text: &str, out: &mut String) {
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let semi = rest.bytes().take(12).skip(1).position(|b| b == b';').map(|p| p + 1);
        let Some(semi) = semi else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..semi];
        let decoded = if let Some(hex) = entity.strip_prefix("#x").or_else(|| entity.strip_prefix("#X")) {
            u32::from_str_radix(hex, 16).ok().and_then(char::from_u32)
        } else if let Some(dec) = entity.strip_prefix('#') {
            dec.parse::<u32>().ok().and_then(char::from_u32)
        } else {
            ENTITIES
                .iter()
                .find(|(name, _)| *name == entity)
                .or_else(|| ENTITIES.iter().find(|(name, _)| name.eq_ignore_ascii_case(entity)))
                .map(|&(_, c)| c)
        };
        match decoded {
            Some(c) => {
                out.push(if c == '\u{a0}' { ' ' } else { c });
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
}
