//! `[milter]`: sluice's content checks offered to Postfix (`smtpd_milters`)
//! over the milter protocol (issue 21). Absent: no milter listener.

use std::net::SocketAddr;
use std::time::Duration;

use super::{ConfigError, defaults, dur, positive};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MilterConfig {
    /// Where Postfix connects (`smtpd_milters = inet:127.0.0.1:8891`).
    pub listen: Vec<SocketAddr>,
    /// The longest wait for Postfix's next command; past it the
    /// connection is closed (Postfix applies `milter_default_action`).
    pub timeout: Duration,
    /// Milter connections at once (Postfix opens one per SMTP session).
    pub max_connections: usize,
}

impl Default for MilterConfig {
    /// `[milter]` with every key at its default (`sluice milter` without
    /// a `[milter]` section).
    fn default() -> Self {
        MilterConfig {
            listen: defaults::MILTER_LISTEN.iter().filter_map(|a| a.parse().ok()).collect(),
            timeout: humantime::parse_duration(defaults::MILTER_TIMEOUT).unwrap_or(Duration::from_secs(600)),
            max_connections: defaults::MILTER_MAX_CONNECTIONS as usize,
        }
    }
}

pub(super) fn validate_milter(m: Option<super::raw::RawMilter>) -> Result<Option<MilterConfig>, ConfigError> {
    let Some(m) = m else { return Ok(None) };
    let given = m
        .listen
        .unwrap_or_else(|| defaults::MILTER_LISTEN.iter().map(|s| s.to_string()).collect());
    if given.is_empty() {
        return Err(ConfigError::new(
            "milter.listen",
            "needs at least one address (leave out [milter] to turn the milter off)",
        ));
    }
    let mut listen = Vec::with_capacity(given.len());
    for (i, a) in given.iter().enumerate() {
        let addr = a.trim().trim_start_matches("inet:");
        let addr: SocketAddr = addr.parse().map_err(|_| {
            ConfigError::new(
                format!("milter.listen[{i}]"),
                format!("{a:?} is not an address and port such as \"127.0.0.1:8891\""),
            )
        })?;
        listen.push(addr);
    }
    Ok(Some(MilterConfig {
        listen,
        timeout: dur("milter.timeout", m.timeout, defaults::MILTER_TIMEOUT)?,
        max_connections: positive(
            "milter.max_connections",
            m.max_connections,
            defaults::MILTER_MAX_CONNECTIONS,
        )?,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use std::path::Path;

    #[test]
    fn absent_is_off_and_keys_are_checked() {
        let c = |t: &str| Config::from_toml(t, Path::new("/tmp"));
        assert!(c("").unwrap().milter.is_none());
        let m = c("[milter]\n").unwrap().milter.unwrap();
        assert_eq!(m.listen, ["127.0.0.1:8891".parse().unwrap()]);
        assert_eq!(m.timeout, std::time::Duration::from_secs(600));
        let m = c("[milter]\nlisten = [\"inet:127.0.0.1:9000\", \"[::1]:9000\"]\ntimeout = \"30s\"\n")
            .unwrap()
            .milter
            .unwrap();
        assert_eq!(m.listen.len(), 2);
        assert_eq!(m.timeout, std::time::Duration::from_secs(30));
        for (text, key) in [
            ("[milter]\nlisten = [\"nope\"]\n", "milter.listen[0]"),
            ("[milter]\nlisten = []\n", "milter.listen"),
            ("[milter]\ntimeout = \"0s\"\n", "milter.timeout"),
            ("[milter]\nmax_connections = 0\n", "milter.max_connections"),
            ("[milter]\nlisen = []\n", "milter.lisen"),
        ] {
            let e = c(text).unwrap_err();
            assert_eq!(e.key, key, "{text}: {e}");
        }
    }
}
