//! `sluice check`: a Nagios-style probe of a running sluice through its
//! metrics listener. One status line, perfdata after `|`, and the plugin
//! exit codes: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
//!
//! - `/readyz` not ready (spool, next hop, every scanner, the firewall
//!   exporter not writing to the kernel) → CRITICAL;
//!   degraded (one scanner of several down) → WARNING.
//! - The spool backlog and its oldest message against thresholds.
//! - The listener not answering → UNKNOWN (sluice down or not reachable).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Ok = 0,
    Warning = 1,
    Critical = 2,
    Unknown = 3,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warning => "WARNING",
            Status::Critical => "CRITICAL",
            Status::Unknown => "UNKNOWN",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Thresholds {
    pub warn_queue: u64,
    pub crit_queue: u64,
    /// Seconds.
    pub warn_age: u64,
    pub crit_age: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            warn_queue: 1000,
            crit_queue: 10_000,
            warn_age: 3600,
            crit_age: 4 * 3600,
        }
    }
}

/// One value of a metric without labels in a Prometheus text scrape.
pub fn scalar(scrape: &str, name: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let v = rest.strip_prefix(' ')?;
        v.trim().parse().ok()
    })
}

/// The verdict from `/readyz` (status code and body) and a `/metrics`
/// scrape.
pub fn evaluate(ready: (u16, &str), scrape: &str, t: &Thresholds) -> (Status, String) {
    let mut status = Status::Ok;
    let mut notes: Vec<String> = Vec::new();
    let (code, body) = ready;
    if code != 200 {
        status = Status::Critical;
        notes.push(body.lines().next().unwrap_or("not ready").trim().to_string());
    } else {
        notes.push("ready".into());
    }
    for d in body.lines().filter_map(|l| l.strip_prefix("degraded: ")) {
        status = status.max(Status::Warning);
        notes.push(format!("degraded: {d}"));
    }
    let get = |n| scalar(scrape, n).unwrap_or(0.0) as u64;
    let (queue, age) = (get("sluice_spool_messages"), get("sluice_spool_oldest_age_seconds"));
    let (sessions, bans) = (get("sluice_sessions_active"), get("sluice_bans_active"));
    let level = |v: u64, w: u64, c: u64| match v {
        v if v >= c => Status::Critical,
        v if v >= w => Status::Warning,
        _ => Status::Ok,
    };
    let q = level(queue, t.warn_queue, t.crit_queue);
    let a = level(age, t.warn_age, t.crit_age);
    if q > Status::Ok {
        notes.push(format!(
            "queue {queue} >= {}",
            if q == Status::Critical {
                t.crit_queue
            } else {
                t.warn_queue
            }
        ));
    }
    if a > Status::Ok {
        notes.push(format!("oldest message {age}s old"));
    }
    status = status.max(q).max(a);
    let line = format!(
        "SLUICE {} - {}; queue {queue}, oldest {age}s, sessions {sessions}, bans {bans} | queue={queue};{};{} oldest_age={age}s;{};{} sessions={sessions} bans={bans}",
        status.word(),
        notes.join("; "),
        t.warn_queue,
        t.crit_queue,
        t.warn_age,
        t.crit_age,
    );
    (status, line)
}

/// GET `path` from the listener at `addr`: (status code, body).
pub async fn get(addr: std::net::SocketAddr, path: &str, within: Duration) -> Result<(u16, String), String> {
    let fetch = async {
        let sock = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(sock))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let res = send.send_request(req).await.map_err(|e| e.to_string())?;
        let code = res.status().as_u16();
        let body = res.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((code, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(within, fetch)
        .await
        .map_err(|_| format!("no answer within {within:?}"))?
}

/// Runs the whole check against `addr`: (status, line).
pub async fn run(addr: std::net::SocketAddr, t: &Thresholds, within: Duration) -> (Status, String) {
    let ready = match get(addr, "/readyz", within).await {
        Ok(r) => r,
        Err(e) => {
            return (
                Status::Unknown,
                format!("SLUICE UNKNOWN - metrics listener http://{addr}/ not answering: {e}"),
            );
        }
    };
    let scrape = match get(addr, "/metrics", within).await {
        Ok((200, s)) => s,
        Ok((code, _)) => return (Status::Unknown, format!("SLUICE UNKNOWN - /metrics answered {code}")),
        Err(e) => return (Status::Unknown, format!("SLUICE UNKNOWN - /metrics: {e}")),
    };
    evaluate((ready.0, &ready.1), &scrape, t)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = "# HELP sluice_spool_messages x\n# TYPE sluice_spool_messages gauge\nsluice_spool_messages 1500\nsluice_spool_oldest_age_seconds 20\nsluice_sessions_active 3\nsluice_bans_active 7\n";

    #[test]
    fn ready_with_a_big_queue_is_a_warning_with_perfdata() {
        let (s, line) = evaluate((200, "ready\n"), SCRAPE, &Thresholds::default());
        assert_eq!(s, Status::Warning);
        assert!(
            line.starts_with("SLUICE WARNING - ready; queue 1500 >= 1000;"),
            "{line}"
        );
        assert!(
            line.ends_with("| queue=1500;1000;10000 oldest_age=20s;3600;14400 sessions=3 bans=7"),
            "{line}"
        );
    }

    #[test]
    fn not_ready_is_critical_and_names_the_part() {
        let (s, line) = evaluate(
            (503, "not ready: next hop 127.0.0.1:1: connection refused\n"),
            "sluice_spool_messages 0\n",
            &Thresholds::default(),
        );
        assert_eq!(s, Status::Critical);
        assert!(line.contains("CRITICAL - not ready: next hop 127.0.0.1:1"), "{line}");
    }

    #[test]
    fn degraded_scanner_is_a_warning_and_scalar_skips_prefixes() {
        let (s, _) = evaluate(
            (200, "ready\ndegraded: clamd tcp://127.0.0.1:1 not answering\n"),
            "sluice_spool_messages_x 99999\nsluice_spool_messages 2\n",
            &Thresholds::default(),
        );
        assert_eq!(s, Status::Warning);
        assert_eq!(
            scalar(
                "sluice_spool_messages_x 9\nsluice_spool_messages 2\n",
                "sluice_spool_messages"
            ),
            Some(2.0)
        );
    }
}
