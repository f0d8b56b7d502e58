//! Tokens of the MIME structure: the content types, transfer encodings,
//! charsets and boundary of the parts, and the attachments.

use super::*;

/// MIME structure: content types of all parts, transfer encodings, charsets, boundary shape, part count.
pub(super) fn mime_tokens(message: &Message<'_>, sink: &mut Sink, depth: usize) {
    if depth == 0 {
        match message.root_part().content_type() {
            Some(ct) => sink.push2("h:ct:", &content_type_name(ct)),
            None => sink.push("h:ct:none"),
        }
        if raw_header(message, "MIME-Version").is_none() {
            sink.push("h:nomimever");
        }
        sink.push2("h:nparts:", bucket_count(message.parts.len()));
    }
    let mut structure = String::new();
    for part in &message.parts {
        if sink.full() {
            break;
        }
        let ct = part.content_type();
        let name = ct.map_or_else(|| "none".to_string(), content_type_name);
        if let Some(ct) = ct {
            if let Some(charset) = ct.attribute("charset") {
                sink.push_short_with(|b| {
                    b.push_str("h:cs:");
                    push_ascii_lower(b, charset.trim());
                });
            }
            if let Some(boundary) = ct.attribute("boundary") {
                sink.push_shape("h:bnd:", boundary, 30);
            }
        }
        if part.is_encoding_problem {
            sink.push("h:encproblem");
        }
        if structure.len() < 64 {
            if !structure.is_empty() {
                structure.push(',');
            }
            structure.push_str(&short_type(&name));
        }
    }
    if depth == 0 && message.parts.len() > 1 {
        sink.push_short2("h:mime:", &structure);
    }
}

/// "type/subtype", lowercased.
pub(super) fn content_type_name(ct: &mail_parser::ContentType<'_>) -> String {
    format!(
        "{}/{}",
        ct.ctype().to_ascii_lowercase(),
        ct.subtype().unwrap_or("").to_ascii_lowercase()
    )
}

/// Short form of a content type name for the structure token.
pub(super) fn short_type(name: &str) -> String {
    match name {
        "text/plain" => "tp".to_string(),
        "text/html" => "th".to_string(),
        "none" => "n".to_string(),
        _ => {
            let (t, s) = name.split_once('/').unwrap_or((name, ""));
            let mut out: String = t.chars().take(1).collect();
            out.extend(s.chars().take(3));
            out
        }
    }
}

pub(super) fn attachment_tokens(part: &MessagePart<'_>, sink: &mut Sink) {
    if let Some(ct) = part.content_type() {
        sink.push_short2("h:att:", &content_type_name(ct));
    }
    if let Some(name) = part.attachment_name()
        && let Some((_, ext)) = name.rsplit_once('.')
        && (1..=5).contains(&ext.len())
    {
        sink.push_short_with(|b| {
            b.push_str("h:attx:");
            push_ascii_lower(b, ext);
        });
    }
}
