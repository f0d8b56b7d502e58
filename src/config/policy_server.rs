//! `[policy_server]`: Postfix's policy delegation protocol
//! (`check_policy_service`), answered with the pre-DATA checks.

use std::net::SocketAddr;
use std::time::Duration;

use super::defaults;

#[derive(Debug, Clone, PartialEq)]
pub struct PolicyServerConfig {
    pub listen: Vec<SocketAddr>,
    /// A connection with no request for this long is closed (Postfix
    /// reconnects when it needs to).
    pub idle_timeout: Duration,
    /// The longest the checks may take for one request; past it the
    /// answer is `DUNNO` (and a warning).
    pub check_timeout: Duration,
    /// Octets in one request; a larger one is answered `DUNNO`.
    pub max_request_size: usize,
    /// Attributes in one request; more are answered `DUNNO`.
    pub max_attributes: usize,
}

impl PolicyServerConfig {
    /// An empty `[policy_server]` section: every key at its default.
    pub fn defaults() -> PolicyServerConfig {
        validate_policy_server(Some(Default::default()))
            .ok()
            .flatten()
            .expect("the defaults validate")
    }
}

/// `None` when the section is absent.
pub(super) fn validate_policy_server(
    raw: Option<super::raw::RawPolicyServer>,
) -> Result<Option<PolicyServerConfig>, super::ConfigError> {
    use super::{ConfigError, dur, positive};
    let Some(p) = raw else { return Ok(None) };
    let listen = match p.listen {
        Some(list) => list,
        None => defaults::POLICY_SERVER_LISTEN.iter().map(|s| s.to_string()).collect(),
    };
    if listen.is_empty() {
        return Err(ConfigError::new(
            "policy_server.listen",
            "give at least one address, or leave out [policy_server]",
        ));
    }
    let listen = listen
        .iter()
        .map(|a| {
            a.parse::<SocketAddr>().map_err(|_| {
                ConfigError::new(
                    "policy_server.listen",
                    format!("{a:?} is not an address with a port, such as \"127.0.0.1:10023\""),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let max_request_size = positive(
        "policy_server.max_request_size",
        p.max_request_size,
        defaults::POLICY_SERVER_MAX_REQUEST_SIZE,
    )?;
    if max_request_size < 256 {
        return Err(ConfigError::new(
            "policy_server.max_request_size",
            "must be at least 256 (Postfix's requests are about 1000 octets)",
        ));
    }
    Ok(Some(PolicyServerConfig {
        listen,
        idle_timeout: dur(
            "policy_server.idle_timeout",
            p.idle_timeout,
            defaults::POLICY_SERVER_IDLE_TIMEOUT,
        )?,
        check_timeout: dur(
            "policy_server.check_timeout",
            p.check_timeout,
            defaults::POLICY_SERVER_CHECK_TIMEOUT,
        )?,
        max_request_size,
        max_attributes: positive(
            "policy_server.max_attributes",
            p.max_attributes,
            defaults::POLICY_SERVER_MAX_ATTRIBUTES,
        )?,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use std::path::Path;

    fn load(text: &str) -> Result<Config, String> {
        Config::from_toml(text, Path::new("/etc/sluice")).map_err(|e| e.to_string())
    }

    #[test]
    fn off_when_absent_defaults_when_empty() {
        assert!(load("").unwrap().policy_server.is_none());
        let p = load("[policy_server]\n").unwrap().policy_server.unwrap();
        assert_eq!(p.listen, ["127.0.0.1:10023".parse().unwrap()]);
        assert_eq!(p.idle_timeout, std::time::Duration::from_secs(600));
        assert_eq!(p.check_timeout, std::time::Duration::from_secs(10));
        assert_eq!((p.max_request_size, p.max_attributes), (16384, 100));
    }

    #[test]
    fn errors_name_the_key() {
        for (text, want) in [
            (
                "[policy_server]\nlisten = [\"localhost\"]",
                "policy_server.listen: \"localhost\" is not an address with a port, such as \"127.0.0.1:10023\"",
            ),
            (
                "[policy_server]\nlisten = []",
                "policy_server.listen: give at least one address, or leave out [policy_server]",
            ),
            (
                "[policy_server]\nmax_request_size = 100",
                "policy_server.max_request_size: must be at least 256 (Postfix's requests are about 1000 octets)",
            ),
            (
                "[policy_server]\ncheck_timeout = \"0s\"",
                "policy_server.check_timeout: must be greater than zero",
            ),
            (
                "[policy_server]\nmax_attributes = 0",
                "policy_server.max_attributes: must be greater than zero",
            ),
        ] {
            assert_eq!(load(text).unwrap_err(), want, "{text}");
        }
    }
}
