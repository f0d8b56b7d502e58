//! Signals. SIGTERM and SIGINT start a graceful shutdown; SIGHUP reloads
//! the recipient table (handled by the caller of [`signals`]).

use tokio::signal::unix::{SignalKind, signal};

/// A signal the process acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Terminate,
    Reload,
}

/// Waits for the next SIGTERM/SIGINT (→ `Terminate`) or SIGHUP (→ `Reload`).
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    pub async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Terminate,
            _ = self.int.recv() => Signal::Terminate,
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}

/// Runs `step` on a blocking thread every `interval` until `shutdown`,
/// handing each result to `done` (file watchers: the recipient table, the
/// spam rules and model).
pub async fn every_blocking<T: Send + 'static>(
    interval: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
    step: impl Fn() -> T + Clone + Send + 'static,
    mut done: impl FnMut(T),
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if let Ok(v) = tokio::task::spawn_blocking(step.clone()).await {
            done(v);
        }
    }
}
