//! `sluice trace QUERY`: what happened to a message (queue id or
//! Message-ID), a client (IP) or an address, from the event log, and what
//! is live now (the message in the queue, the client's ban) from the
//! daemon.

use std::path::PathBuf;

use anyhow::Context as _;
use sluice::config::{Config, EventSink};
use sluice::delivery::queue::control::{Request, Response};
use sluice::trace::{Query, ids_in, read_log, render, select};

pub(crate) struct TraceOpts {
    pub query: String,
    pub since: Option<String>,
    pub json: bool,
    pub log: Option<PathBuf>,
}

/// `--since`: a duration back from now ("2h", "3d") or an RFC 3339 time,
/// as the event log writes times.
fn since(arg: &str) -> anyhow::Result<String> {
    if let Ok(d) = humantime::parse_duration(arg) {
        let t = std::time::SystemTime::now()
            .checked_sub(d)
            .context("--since: too far back")?;
        return Ok(humantime::format_rfc3339_millis(t).to_string());
    }
    let t = humantime::parse_rfc3339_weak(arg).with_context(|| {
        format!("--since {arg:?}: expected a duration (\"2h\") or a time (\"2026-12-07T10:00:00Z\")")
    })?;
    Ok(humantime::format_rfc3339_millis(t).to_string())
}

pub(crate) async fn trace(config: &Config, o: TraceOpts) -> anyhow::Result<()> {
    let path = match (&o.log, &config.log.events) {
        (Some(p), _) => p.clone(),
        (None, EventSink::File(p)) => p.clone(),
        (None, _) => anyhow::bail!(
            "log.events is not a file, so there is no event log to read; set log.events = \"/var/log/sluice/events.jsonl\" or pass --log FILE"
        ),
    };
    let since = o.since.as_deref().map(since).transpose()?;
    let log = read_log(&path, since.as_deref()).with_context(|| format!("cannot read {}", path.display()))?;
    let query = Query::parse(&o.query);
    let picked = select(&log, &query);
    for &i in &picked {
        if o.json {
            println!("{}", log[i]);
        } else {
            println!("{}", render(&log[i]));
        }
    }
    // What is live now: the messages still queued, the client's ban.
    let mut ids = ids_in(&log, &picked);
    if let Query::Id(id) = &query
        && !ids.contains(id)
    {
        ids.push(id.clone());
    }
    let socket = config.spool.dir.join("queue.sock");
    let mut live = 0;
    for id in &ids {
        if let Ok(Response::Message { entry, .. }) =
            sluice::control::request::<_, Response>(&socket, &Request::Show { id: id.clone() }).await
        {
            live += 1;
            if o.json {
                println!("{}", serde_json::json!({"live": "queue", "entry": entry}));
            } else {
                let next = entry
                    .next_attempt
                    .map(|t| {
                        format!(
                            ", next attempt in {}s",
                            t.saturating_sub(sluice::mail::date::now_secs())
                        )
                    })
                    .unwrap_or_default();
                let state = serde_json::to_value(entry.state).unwrap_or_default();
                println!(
                    "now  {}: in the queue, {}, {} attempt(s){next}, waiting for {}{}",
                    entry.id,
                    state.as_str().unwrap_or("?"),
                    entry.attempts,
                    entry.rcpts.join(", "),
                    entry
                        .last_reply
                        .map(|r| format!("; last reply: {r}"))
                        .unwrap_or_default()
                );
            }
        }
    }
    if let (Query::Ip(ip), Some(fw)) = (&query, &config.firewall) {
        let req = sluice::firewall::control::Request::Explain { ip: *ip };
        if let Ok(sluice::firewall::control::Response::Bans(bans)) =
            sluice::firewall::control::request(&fw.control_socket, &req).await
        {
            for b in bans {
                live += 1;
                if o.json {
                    println!(
                        "{}",
                        serde_json::json!({"live": "ban", "net": b.net.to_string(), "until": b.until, "strike": b.strike, "rule": b.rule})
                    );
                } else {
                    println!("now  {ip} is banned ({}, strike {}, rule: {})", b.net, b.strike, b.rule);
                }
            }
        }
    }
    if picked.is_empty() && live == 0 {
        anyhow::bail!("nothing about {} in {}", o.query, path.display());
    }
    Ok(())
}
