//! `sluice trace`: every decision about one message, client or address, in
//! order, from the event log (JSON lines, `events::log`). A query is a
//! queue id, a Message-ID (`<...>`), a client IP or an email address.
//!
//! What belongs to a message: the events carrying its queue id (and the
//! ids of the DSNs made from it, `<id>B<n>`/`<id>D<n>`), the events of the
//! session that carried it that have no queue id (connect, HELO, MAIL,
//! refusals of the session), the earlier refusals of the same client and
//! sender (greylisting, say, before the retry that got through), and the
//! bans of its client that followed. For a client IP: its events and the
//! bans covering it, and what happened to its messages. For an address:
//! the messages it sent or was sent, as for a queue id.
//!
//! The log is parsed as JSON values: it is a file format with a documented
//! shape, read back by the same program that wrote it.

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;

use serde_json::Value;

/// What to trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// sluice's queue id (as in `250 2.0.0 Ok: queued as ID`).
    Id(String),
    /// The Message-ID header field, with or without its angle brackets.
    MessageId(String),
    Ip(IpAddr),
    /// A sender or recipient address (case-insensitive).
    Address(String),
}

impl Query {
    /// An IP address, `<...>` a Message-ID, `x@y` an address, else a queue
    /// id.
    pub fn parse(s: &str) -> Query {
        let s = s.trim();
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Query::Ip(ip.to_canonical());
        }
        if s.starts_with('<') && s.ends_with('>') {
            return Query::MessageId(s.to_string());
        }
        if s.contains('@') {
            return Query::Address(s.to_ascii_lowercase());
        }
        Query::Id(s.to_string())
    }
}

fn str_of<'a>(e: &'a Value, key: &str) -> Option<&'a str> {
    e.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn ip_of(e: &Value) -> Option<IpAddr> {
    str_of(e, "ip").and_then(|s| s.parse().ok())
}

fn session_of(e: &Value) -> Option<u64> {
    e.get("session").and_then(Value::as_u64).filter(|s| *s != 0)
}

/// Whether a ban event's network covers `ip`.
fn ban_covers(e: &Value, ip: IpAddr) -> bool {
    matches!(str_of(e, "event"), Some("ban_added" | "ban_removed"))
        && str_of(e, "net")
            .and_then(|n| n.parse::<ipnet::IpNet>().ok())
            .is_some_and(|n| n.contains(&ip))
}

/// Whether `id` is one of `ids` or a DSN made from one (`<id>B<n>`,
/// `<id>D<n>`).
fn tracked(ids: &HashSet<String>, id: &str) -> bool {
    ids.contains(id)
        || ids.iter().any(|t| {
            id.strip_prefix(t.as_str()).is_some_and(|rest| {
                let mut c = rest.chars();
                matches!(c.next(), Some('B' | 'D')) && c.as_str().chars().all(|d| d.is_ascii_digit())
            })
        })
}

fn addresses(e: &Value) -> impl Iterator<Item = String> + '_ {
    ["from", "rcpt", "to"]
        .into_iter()
        .filter_map(move |k| str_of(e, k).map(str::to_ascii_lowercase))
}

fn same_message_id(a: &str, b: &str) -> bool {
    let bare = |s: &str| {
        s.trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_ascii_lowercase()
    };
    bare(a) == bare(b)
}

/// The events of `log` (in log order) that belong to `q`, as positions.
pub fn select(log: &[Value], q: &Query) -> Vec<usize> {
    let mut ids: HashSet<String> = HashSet::new();
    let mut picked: BTreeSet<usize> = BTreeSet::new();
    let mut ips: HashSet<IpAddr> = HashSet::new();
    // 1. The seed: the query's own events, and the queue ids they name.
    for (i, e) in log.iter().enumerate() {
        let hit = match q {
            Query::Id(id) => str_of(e, "id").is_some_and(|x| x == id),
            Query::MessageId(m) => str_of(e, "message_id").is_some_and(|x| same_message_id(x, m)),
            Query::Ip(ip) => ip_of(e) == Some(*ip) || ban_covers(e, *ip),
            Query::Address(a) => addresses(e).any(|x| &x == a),
        };
        if hit {
            picked.insert(i);
            if let Some(id) = str_of(e, "id") {
                ids.insert(id.to_string());
            }
        }
    }
    if let Query::Ip(ip) = q {
        ips.insert(*ip);
    }
    // 2. Everything carrying those ids (deliveries, DSNs, quarantine, ...).
    let mut sessions: HashSet<u64> = HashSet::new();
    let mut envelopes: HashSet<(IpAddr, String)> = HashSet::new();
    for (i, e) in log.iter().enumerate() {
        if str_of(e, "id").is_some_and(|id| tracked(&ids, id)) {
            picked.insert(i);
        }
    }
    for &i in &picked {
        let e = &log[i];
        if str_of(e, "id").is_some_and(|id| tracked(&ids, id)) {
            sessions.extend(session_of(e));
            if let Some(ip) = ip_of(e) {
                ips.insert(ip);
                envelopes.insert((ip, str_of(e, "from").unwrap_or_default().to_ascii_lowercase()));
            }
        }
    }
    for (i, e) in log.iter().enumerate() {
        // 3. The session around the message: what has no queue id.
        let in_session = session_of(e).is_some_and(|s| sessions.contains(&s)) && str_of(e, "id").is_none();
        // 4. Other refusals of the same client and sender (a greylisted
        // first try has its own transaction id).
        let earlier_try = str_of(e, "event") == Some("rcpt_rejected")
            && ip_of(e).is_some_and(|ip| {
                envelopes.contains(&(ip, str_of(e, "from").unwrap_or_default().to_ascii_lowercase()))
            });
        // 5. The bans of its clients.
        let ban = ips.iter().any(|ip| ban_covers(e, *ip));
        if in_session || earlier_try || ban {
            picked.insert(i);
        }
    }
    picked.into_iter().collect()
}

/// The queue ids the selected events name (for the live part).
pub fn ids_in(log: &[Value], picked: &[usize]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for &i in picked {
        if let Some(id) = str_of(&log[i], "id")
            && !out.iter().any(|x| x == id)
        {
            out.push(id.to_string());
        }
    }
    out
}

/// One event as a line an admin reads: time, who, what.
pub fn render(e: &Value) -> String {
    let ts = str_of(e, "ts").unwrap_or("-");
    let s = |k: &str| str_of(e, k).unwrap_or("").to_string();
    let who = match (session_of(e), str_of(e, "ip")) {
        (Some(n), Some(ip)) => format!("[{ip}] session {n}"),
        (None, Some(ip)) => format!("[{ip}]"),
        _ => String::new(),
    };
    let id = str_of(e, "id").map(|i| format!("{i}: ")).unwrap_or_default();
    let from = || format!("<{}>", s("from"));
    let reason = || match e.get("reason") {
        Some(Value::String(r)) => r.clone(),
        Some(Value::Object(o)) => o
            .get("kind")
            .and_then(Value::as_str)
            .map(|k| match o.get("detail") {
                Some(d) => format!("{k} {d}"),
                None => k.to_string(),
            })
            .unwrap_or_default(),
        Some(v) => v.to_string(),
        None => String::new(),
    };
    let what = match str_of(e, "event").unwrap_or("?") {
        "session_opened" => "connected".to_string(),
        "session_closed" => format!(
            "disconnected ({}), {} message(s)",
            reason(),
            e.get("messages").and_then(Value::as_u64).unwrap_or(0)
        ),
        "connect_rejected" => format!("refused at connect: {} ({}; {})", s("reply"), reason(), s("evidence")),
        "pregreet" => format!("talked before the greeting: {}", s("evidence")),
        "helo_rejected" => format!(
            "HELO {} refused: {} ({}; {})",
            s("helo"),
            s("reply"),
            reason(),
            s("evidence")
        ),
        "mail_rejected" => format!(
            "HELO {}, MAIL FROM {} refused: {} ({}; {})",
            s("helo"),
            from(),
            s("reply"),
            reason(),
            s("evidence")
        ),
        "rcpt_rejected" => format!(
            "{id}HELO {}, MAIL FROM {}, RCPT TO <{}> refused: {} ({}; {})",
            s("helo"),
            from(),
            s("rcpt"),
            s("reply"),
            reason(),
            s("evidence")
        ),
        "protocol_error" => format!("protocol error: {} ({})", s("reply"), reason()),
        "message_accepted" => format!(
            "{id}accepted: HELO {}, MAIL FROM {}, {} recipient(s), {} octets, scan {}{}",
            s("helo"),
            from(),
            e.get("rcpts").and_then(Value::as_u64).unwrap_or(0),
            e.get("size").and_then(Value::as_u64).unwrap_or(0),
            s("scan"),
            str_of(e, "message_id")
                .map(|m| format!(", Message-ID {m}"))
                .unwrap_or_default()
        ),
        "message_rejected" => format!("{id}refused at end of DATA: {} ({})", s("reply"), reason()),
        "virus_found" => format!("{id}virus {} ({})", s("name"), s("mode")),
        "content_rejected" => format!("{id}{} part: {} ({})", s("kind"), s("what"), s("mode")),
        "unscannable" => format!(
            "{id}unscannable ({}): {} -> {} ({})",
            s("kind"),
            s("what"),
            s("action"),
            s("mode")
        ),
        "spam_scored" => {
            let vote = |name: &str| {
                e.get(name)
                    .and_then(Value::as_f64)
                    .map(|p| format!("; {name} {p:.2}"))
                    .unwrap_or_default()
            };
            format!(
                "{id}spam score {} -> {} (rules: {}{}{})",
                e.get("score").map(Value::to_string).unwrap_or_default(),
                s("action"),
                s("rules"),
                vote("bayes"),
                vote("ngram")
            )
        }
        "scan_failed" => format!("{id}scan failed: {}", s("error")),
        "quarantined" => format!("{id}quarantined: {}", reason()),
        "quarantine_command" => format!("{id}admin: quarantine {} (it was held for: {})", s("action"), reason()),
        "delivery_attempt" => format!(
            "{id}delivery attempt {} to <{}>: {} — {}",
            e.get("attempt").and_then(Value::as_u64).unwrap_or(0),
            s("rcpt"),
            s("outcome"),
            s("reply")
        ),
        "bounce_queued" => format!("{id}DSN queued to <{}> for {} recipient(s)", s("to"), e["rcpts"]),
        "double_bounce" => format!("{id}undeliverable DSN to <{}>: {}", s("rcpt"), s("reply")),
        "queue_command" => format!("{id}admin: queue {}", s("action")),
        "ban_added" => format!(
            "ban {} for {} until {} (strike {}, rule: {}){}{}",
            s("net"),
            s("offence"),
            e.get("until")
                .and_then(Value::as_u64)
                .map(unix_time)
                .unwrap_or_default(),
            e.get("strike").and_then(Value::as_u64).unwrap_or(0),
            s("rule"),
            if e.get("dry_run").and_then(Value::as_bool) == Some(true) {
                " [dry run]"
            } else {
                ""
            },
            str_of(e, "node")
                .map(|n| format!(", decided on node {n}"))
                .unwrap_or_default()
        ),
        "ban_removed" => format!("ban {} lifted ({})", s("net"), s("by")),
        other => format!("{other}: {e}"),
    };
    if who.is_empty() {
        format!("{ts}  {what}")
    } else {
        format!("{ts}  {who}  {what}")
    }
}

/// Unix seconds as the event log's time format.
fn unix_time(secs: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Reads the event log at `path` (and the rotated `path.1` before it, if
/// there is one): the events at or after `since` (an RFC 3339 time in the
/// log's own format; `None`: all). Lines that do not parse are skipped.
pub fn read_log(path: &std::path::Path, since: Option<&str>) -> std::io::Result<Vec<Value>> {
    use std::io::BufRead as _;
    let mut out = Vec::new();
    let mut rotated = path.as_os_str().to_owned();
    rotated.push(".1");
    for p in [std::path::PathBuf::from(rotated), path.to_path_buf()] {
        let f = match std::fs::File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && p != path => continue,
            Err(e) => return Err(e),
        };
        for line in std::io::BufReader::new(f).lines() {
            let Ok(v) = serde_json::from_str::<Value>(&line?) else {
                continue;
            };
            if since.is_some_and(|t| str_of(&v, "ts").is_some_and(|ts| ts < t)) {
                continue;
            }
            out.push(v);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(lines: &[&str]) -> Vec<Value> {
        lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// A greylisted first try, the retry accepted, scored and delivered,
    /// another client's message, and a ban of the first client.
    fn story() -> Vec<Value> {
        log(&[
            r#"{"ts":"t01","event":"session_opened","session":1,"ip":"192.0.2.7"}"#,
            r#"{"ts":"t02","event":"rcpt_rejected","session":1,"ip":"192.0.2.7","rcpt":"u@example.com","id":"AAA","helo":"h","from":"s@x.org","reason":{"kind":"greylist"},"reply":"451 4.7.1 greylisted","evidence":"new triplet"}"#,
            r#"{"ts":"t03","event":"session_closed","session":1,"ip":"192.0.2.7","reason":{"kind":"quit"},"messages":0}"#,
            r#"{"ts":"t04","event":"session_opened","session":2,"ip":"198.51.100.1"}"#,
            r#"{"ts":"t05","event":"message_accepted","session":2,"ip":"198.51.100.1","id":"CCC","helo":"o","from":"o@y.org","size":10,"rcpts":1,"scan":"in-session"}"#,
            r#"{"ts":"t06","event":"session_opened","session":3,"ip":"192.0.2.7"}"#,
            r#"{"ts":"t07","event":"spam_scored","session":3,"ip":"192.0.2.7","id":"BBB","helo":"h","from":"s@x.org","score":2.5,"action":"deliver","rules":"R1","bayes":null}"#,
            r#"{"ts":"t08","event":"message_accepted","session":3,"ip":"192.0.2.7","id":"BBB","helo":"h","from":"s@x.org","size":10,"rcpts":1,"scan":"in-session","message_id":"<m1@x.org>"}"#,
            r#"{"ts":"t09","event":"session_closed","session":3,"ip":"192.0.2.7","reason":{"kind":"quit"},"messages":1}"#,
            r#"{"ts":"t10","event":"delivery_attempt","id":"BBB","ip":"192.0.2.7","helo":"h","from":"s@x.org","rcpt":"u@example.com","outcome":"delivered","reply":"250 2.0.0 Ok: queued as 4XyZ","attempt":1}"#,
            r#"{"ts":"t11","event":"bounce_queued","id":"CCC","ip":"198.51.100.1","helo":"o","from":"o@y.org","to":"o@y.org","rcpts":1}"#,
            r#"{"ts":"t12","event":"delivery_attempt","id":"CCCB0","ip":"198.51.100.1","helo":"","from":"","rcpt":"o@y.org","outcome":"delivered","reply":"250 ok","attempt":1}"#,
            r#"{"ts":"t13","event":"ban_added","net":"192.0.2.0/24","offence":"unknown_user","until":1,"strike":1,"rule":"r","dry_run":false}"#,
        ])
    }

    fn events(log: &[Value], q: &str) -> Vec<String> {
        select(log, &Query::parse(q))
            .into_iter()
            .map(|i| str_of(&log[i], "ts").unwrap().to_string())
            .collect()
    }

    #[test]
    fn a_message_by_queue_id_has_its_session_its_greylisted_first_try_its_delivery_and_the_ban() {
        let l = story();
        assert_eq!(events(&l, "BBB"), ["t02", "t06", "t07", "t08", "t09", "t10", "t13"]);
        assert_eq!(events(&l, "<m1@x.org>"), events(&l, "BBB"), "by Message-ID");
        assert_eq!(
            events(&l, "m1@x.org"),
            Vec::<String>::new(),
            "an address, not the Message-ID"
        );
    }

    #[test]
    fn a_dsn_follows_its_message_and_a_client_ip_its_sessions_and_bans() {
        let l = story();
        assert_eq!(events(&l, "CCC"), ["t04", "t05", "t11", "t12"]);
        assert_eq!(
            events(&l, "192.0.2.7"),
            ["t01", "t02", "t03", "t06", "t07", "t08", "t09", "t10", "t13"]
        );
        assert_eq!(events(&l, "S@X.org"), events(&l, "192.0.2.7"), "the sender's messages");
    }

    #[test]
    fn lines_read_like_a_log_an_admin_greps() {
        let l = story();
        assert_eq!(
            render(&l[1]),
            "t02  [192.0.2.7] session 1  AAA: HELO h, MAIL FROM <s@x.org>, RCPT TO <u@example.com> refused: 451 4.7.1 greylisted (greylist; new triplet)"
        );
        assert_eq!(
            render(&l[9]),
            "t10  [192.0.2.7]  BBB: delivery attempt 1 to <u@example.com>: delivered — 250 2.0.0 Ok: queued as 4XyZ"
        );
        assert!(
            render(&l[6]).ends_with("BBB: spam score 2.5 -> deliver (rules: R1)"),
            "{}",
            render(&l[6])
        );
        let mut voted = l[6].clone();
        voted["bayes"] = 0.2.into();
        voted["ngram"] = 0.875.into();
        assert!(
            render(&voted).ends_with("(rules: R1; bayes 0.20; ngram 0.88)"),
            "{}",
            render(&voted)
        );
        assert!(
            render(&l[12]).contains("ban 192.0.2.0/24 for unknown_user"),
            "{}",
            render(&l[12])
        );
    }
}
