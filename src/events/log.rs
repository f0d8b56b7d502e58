//! The event log: one JSON line per event, with its time
//! (`{"ts":"2026-11-24T01:02:03.456Z","event":"rcpt_rejected",...}`),
//! to the human log, stdout, or a file reopened on SIGUSR1 (logrotate's
//! `postrotate kill -USR1`). Lines reach the file within 100 ms.
//!
//! It reads the bus like any subscriber; if it falls behind, the events it
//! lost are counted (`sluice_events_dropped_total`), sessions never wait.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;

use super::{Event, EventBus};
use crate::config::EventSink;

/// Events written between two flushes at most.
const BATCH: usize = 512;

/// Appends one event as a log line (ending with a newline) to `out`;
/// `scratch` is reused between calls.
pub fn append_line(out: &mut Vec<u8>, scratch: &mut Vec<u8>, e: &Event, ts: &str) {
    scratch.clear();
    if serde_json::to_writer(&mut *scratch, e).is_err() {
        scratch.clear();
    }
    out.extend_from_slice(b"{\"ts\":\"");
    out.extend_from_slice(ts.as_bytes());
    // The event is a JSON object: the time goes first, then its fields.
    match scratch.strip_prefix(b"{") {
        Some(rest) if rest != b"}" => {
            out.extend_from_slice(b"\",");
            out.extend_from_slice(rest);
        }
        _ => out.extend_from_slice(b"\"}"),
    }
    out.push(b'\n');
}

/// One event as a log line (ends with a newline).
pub fn line(e: &Event, at: std::time::SystemTime) -> String {
    let (mut out, mut scratch) = (Vec::new(), Vec::new());
    append_line(&mut out, &mut scratch, e, &crate::mail::date::rfc3339_millis(at));
    String::from_utf8(out).unwrap_or_default()
}

/// Writes every event to `sink` until `shutdown` (then drains what is
/// queued).
pub async fn run(bus: EventBus, sink: EventSink, shutdown: CancellationToken) {
    match sink {
        EventSink::Log => to_tracing(bus, shutdown).await,
        EventSink::Stdout => to_writer(bus, BufWriter::new(Box::new(tokio::io::stdout())), None, shutdown).await,
        EventSink::File(path) => match open(&path).await {
            Ok(f) => to_writer(bus, BufWriter::new(Box::new(f)), Some(path), shutdown).await,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot open the event log; events go to the log");
                to_tracing(bus, shutdown).await
            }
        },
    }
}

async fn open(path: &Path) -> std::io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new().create(true).append(true).open(path).await
}

async fn to_tracing(bus: EventBus, shutdown: CancellationToken) {
    let mut rx = bus.subscribe();
    loop {
        let ev = tokio::select! {
            r = rx.recv() => r,
            _ = shutdown.cancelled() => match rx.try_recv() {
                Ok(e) => Ok(e),
                Err(_) => return,
            },
        };
        match ev {
            Ok(e) => {
                let warning = matches!(
                    *e,
                    Event::Warning { .. }
                        | Event::ResolverHealth { failing: true, .. }
                        | Event::StressMode { on: true, .. }
                );
                if !warning && !tracing::enabled!(target: "sluice::event", tracing::Level::INFO) {
                    continue;
                }
                let json = serde_json::to_string(&*e).unwrap_or_default();
                if warning {
                    tracing::warn!(target: "sluice::event", "{json}")
                } else {
                    tracing::info!(target: "sluice::event", "{json}")
                }
            }
            Err(RecvError::Lagged(n)) => bus.note_lagged(n),
            Err(RecvError::Closed) => return,
        }
    }
}

type Out = BufWriter<Box<dyn AsyncWrite + Unpin + Send>>;

/// Lines are written out when this much is waiting...
const WRITE_AT: usize = 64 * 1024;
/// ...or when the oldest has waited this long: one write per burst, not
/// one per event (at 4,000 msg/s that was 16,000 syscalls a second).
const WRITE_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// A stream of lines; `reopen` is the file to reopen on SIGUSR1.
async fn to_writer(bus: EventBus, mut out: Out, reopen: Option<PathBuf>, shutdown: CancellationToken) {
    let mut rx = bus.subscribe();
    let mut usr1 = match reopen {
        Some(_) => tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()).ok(),
        None => None,
    };
    let (mut buf, mut scratch) = (Vec::with_capacity(2 * WRITE_AT), Vec::with_capacity(1024));
    let reopened = async |usr1: &mut Option<tokio::signal::unix::Signal>| match usr1.as_mut() {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    };
    let mut tick = tokio::time::interval(WRITE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut batch: Vec<Arc<Event>> = Vec::new();
    loop {
        batch.clear();
        let stopping = tokio::select! {
            r = rx.recv() => {
                match r {
                    Ok(e) => batch.push(e),
                    Err(RecvError::Lagged(n)) => bus.note_lagged(n),
                    Err(RecvError::Closed) => return,
                }
                false
            }
            _ = tick.tick() => {
                write_out(&mut out, &mut buf).await;
                continue;
            }
            _ = reopened(&mut usr1) => {
                write_out(&mut out, &mut buf).await;
                if let Some(path) = &reopen {
                    match open(path).await {
                        Ok(f) => out = BufWriter::new(Box::new(f)),
                        Err(e) => tracing::error!(path = %path.display(), error = %e, "cannot reopen the event log; writing to the old file"),
                    }
                }
                continue;
            }
            _ = shutdown.cancelled() => true,
        };
        loop {
            if !stopping && batch.len() >= BATCH {
                break;
            }
            match rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(TryRecvError::Lagged(n)) => bus.note_lagged(n),
                Err(_) => break,
            }
        }
        let ts = crate::mail::date::rfc3339_millis(std::time::SystemTime::now());
        for e in &batch {
            append_line(&mut buf, &mut scratch, e, &ts);
        }
        if stopping || buf.len() >= WRITE_AT {
            write_out(&mut out, &mut buf).await;
        }
        if stopping {
            return;
        }
    }
}

async fn write_out(out: &mut Out, buf: &mut Vec<u8>) {
    if buf.is_empty() {
        return;
    }
    let _ = out.write_all(buf).await;
    let _ = out.flush().await;
    buf.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_the_event_with_its_time_first() {
        let e = Event::BanRemoved {
            net: "192.0.2.0/24".into(),
            by: "expiry",
        };
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_795_482_123_456);
        assert_eq!(
            line(&e, t),
            "{\"ts\":\"2026-11-24T01:02:03.456Z\",\"event\":\"ban_removed\",\"net\":\"192.0.2.0/24\",\"by\":\"expiry\"}\n"
        );
    }
}
