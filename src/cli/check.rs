//! `sluice check`: the Nagios-style check of the running daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use sluice::config::Config;

/// `sluice check`: every failure to even ask is UNKNOWN (exit 3).
pub(crate) fn check(
    config: Option<&PathBuf>,
    addr: Option<std::net::SocketAddr>,
    queue: (u64, u64),
    age: (&str, &str),
    timeout: &str,
) -> ExitCode {
    use sluice::status::check::{Status, Thresholds};
    let unknown = |msg: String| {
        println!("SLUICE UNKNOWN - {msg}");
        ExitCode::from(Status::Unknown as u8)
    };
    let secs = |s: &str| humantime::parse_duration(s).map(|d| d.as_secs());
    let (Ok(warn_age), Ok(crit_age), Ok(within)) = (secs(age.0), secs(age.1), humantime::parse_duration(timeout))
    else {
        return unknown("bad --warn-age, --crit-age or --timeout (e.g. \"1h\", \"10s\")".into());
    };
    let addr = match addr {
        Some(a) => a,
        None => {
            let loaded = match config {
                Some(p) => Config::load(p),
                None => Config::default_config(),
            };
            match loaded {
                Ok(c) => match c.metrics {
                    Some(m) => m.listen,
                    None => return unknown("metrics.enabled is false in the configuration".into()),
                },
                Err(e) => return unknown(format!("configuration: {e}")),
            }
        }
    };
    let t = Thresholds {
        warn_queue: queue.0,
        crit_queue: queue.1,
        warn_age,
        crit_age,
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return unknown(format!("cannot start the runtime: {e}")),
    };
    let (status, line) = rt.block_on(sluice::status::check::run(addr, &t, within));
    println!("{line}");
    ExitCode::from(status as u8)
}
