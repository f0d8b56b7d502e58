//! systemd's service protocol for `sluice serve` (Type=notify): READY=1
//! once the listeners are bound, WATCHDOG=1 from the main loop at half of
//! WatchdogSec, STOPPING=1 when the shutdown starts. Outside systemd
//! (no `NOTIFY_SOCKET`) every call does nothing.

use std::net::SocketAddr;
use std::time::Duration;

use sd_notify::NotifyState;

/// Tells systemd the service is up: `systemctl start` returns now.
pub(crate) fn ready(listening: &[SocketAddr]) {
    let addrs: Vec<String> = listening.iter().map(ToString::to_string).collect();
    let status = format!("listening on {}", addrs.join(", "));
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// Tells systemd the shutdown has started (the grace period runs).
pub(crate) fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}

fn send(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!("cannot notify systemd ({}): {e}", state_names(state));
    }
}

fn state_names(state: &[NotifyState]) -> String {
    state
        .iter()
        .map(|s| s.to_string())
        .map(|s| s.split('=').next().unwrap_or_default().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The watchdog: when systemd asks for one (`WATCHDOG_USEC` for this
/// process), [`Watchdog::tick`] completes at half that interval and
/// [`Watchdog::feed`] says we are alive; otherwise `tick` never completes.
pub(crate) struct Watchdog {
    interval: Option<tokio::time::Interval>,
}

impl Watchdog {
    pub(crate) fn from_env() -> Watchdog {
        let interval = sd_notify::watchdog_enabled().map(|usec| {
            let half = (usec / 2).max(Duration::from_millis(10));
            let mut i = tokio::time::interval(half);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        Watchdog { interval }
    }

    /// Completes when the next WATCHDOG=1 is due.
    pub(crate) async fn tick(&mut self) {
        match self.interval.as_mut() {
            Some(i) => {
                i.tick().await;
            }
            None => std::future::pending().await,
        }
    }

    pub(crate) fn feed(&self) {
        send(&[NotifyState::Watchdog]);
    }
}
