//! `[cluster]`: shared state across nodes in Valkey/Redis (issue 20).
//! Absent: every node keeps its own state in memory, as before.

use std::time::Duration;

use super::{ConfigError, defaults, dur};

/// Where the shared store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `cluster.redis`: one server (`redis://host:6379/0`, `rediss://`,
    /// `redis+unix:///path`).
    Url(String),
    /// `cluster.sentinels` and `cluster.master`: the master Sentinel names
    /// now; `redis` (optional) gives the database and credentials.
    Sentinel {
        sentinels: Vec<String>,
        master: String,
        node: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub endpoint: Endpoint,
    /// Prepended to every key (several deployments can share a server).
    pub prefix: String,
    /// The longest a session waits for the store; past it, the operation
    /// falls back (see the README, "Running several nodes").
    pub timeout: Duration,
    /// This node's name in the heartbeat (the count of nodes divides the
    /// rate limits while the store is away).
    pub node: String,
}

fn url_ok(key: &str, url: &str) -> Result<(), ConfigError> {
    use redis::IntoConnectionInfo;
    url.into_connection_info()
        .map(|_| ())
        .map_err(|e| ConfigError::new(key, format!("not a Redis address {url:?}: {e}")))
}

pub(super) fn validate_cluster(
    c: Option<super::raw::RawCluster>,
    hostname: &str,
) -> Result<Option<ClusterConfig>, ConfigError> {
    let Some(c) = c else { return Ok(None) };
    let sentinels = c.sentinels.unwrap_or_default();
    let endpoint = match (c.redis, sentinels.is_empty(), c.master) {
        (url, false, Some(master)) => {
            for (i, s) in sentinels.iter().enumerate() {
                let url = if s.contains("://") {
                    s.clone()
                } else {
                    format!("redis://{s}")
                };
                url_ok(&format!("cluster.sentinels[{i}]"), &url)?;
            }
            if let Some(u) = &url {
                url_ok("cluster.redis", u)?;
            }
            if master.trim().is_empty() {
                return Err(ConfigError::new(
                    "cluster.master",
                    "must name the master Sentinel watches",
                ));
            }
            Endpoint::Sentinel {
                sentinels,
                master,
                node: url,
            }
        }
        (_, false, None) => {
            return Err(ConfigError::new(
                "cluster.master",
                "is needed with cluster.sentinels (the name Sentinel knows the master by)",
            ));
        }
        (Some(url), true, None) => {
            url_ok("cluster.redis", &url)?;
            Endpoint::Url(url)
        }
        (_, true, Some(_)) => {
            return Err(ConfigError::new("cluster.sentinels", "is needed with cluster.master"));
        }
        (None, true, None) => {
            return Err(ConfigError::new(
                "cluster.redis",
                "is needed in [cluster] (or cluster.sentinels and cluster.master)",
            ));
        }
    };
    let timeout = dur("cluster.timeout", c.timeout, defaults::CLUSTER_TIMEOUT)?;
    let node = c.node.unwrap_or_else(|| hostname.to_string());
    if node.is_empty() || node.contains(char::is_whitespace) {
        return Err(ConfigError::new("cluster.node", "must be a name without spaces"));
    }
    Ok(Some(ClusterConfig {
        endpoint,
        prefix: c.prefix.unwrap_or_else(|| defaults::CLUSTER_PREFIX.to_string()),
        timeout,
        node,
    }))
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    fn cfg(text: &str) -> Result<Config, crate::config::ConfigError> {
        Config::from_toml(text, Path::new("/"))
    }

    #[test]
    fn absent_is_off_and_a_url_or_sentinels_is_on() {
        assert!(cfg("").unwrap().cluster.is_none());
        let c = cfg("[cluster]\nredis = \"redis://10.0.0.5:6379/2\"\nnode = \"mx1\"\n")
            .unwrap()
            .cluster
            .unwrap();
        assert_eq!(c.endpoint, super::Endpoint::Url("redis://10.0.0.5:6379/2".into()));
        assert_eq!(
            (c.prefix.as_str(), c.timeout, c.node.as_str()),
            ("sluice:", std::time::Duration::from_millis(50), "mx1")
        );
        let s = cfg("[cluster]\nsentinels = [\"10.0.0.1:26379\", \"redis://10.0.0.2:26379\"]\nmaster = \"mymaster\"\ntimeout = \"20ms\"\n")
            .unwrap()
            .cluster
            .unwrap();
        assert!(matches!(s.endpoint, super::Endpoint::Sentinel { ref master, .. } if master == "mymaster"));
        assert_eq!(s.timeout, std::time::Duration::from_millis(20));
    }

    #[test]
    fn errors_name_the_key() {
        for (text, key) in [
            ("[cluster]\n", "cluster.redis"),
            ("[cluster]\nredis = \"http://x\"\n", "cluster.redis"),
            ("[cluster]\nsentinels = [\"10.0.0.1:26379\"]\n", "cluster.master"),
            ("[cluster]\nmaster = \"m\"\n", "cluster.sentinels"),
            (
                "[cluster]\nredis = \"redis://h/0\"\ntimeout = \"0s\"\n",
                "cluster.timeout",
            ),
            ("[cluster]\nredis = \"redis://h/0\"\nnode = \"a b\"\n", "cluster.node"),
        ] {
            let e = cfg(text).unwrap_err();
            assert_eq!(e.key, key, "{text}: {e}");
        }
    }

    #[test]
    fn greylist_on_store_failure_is_open_or_closed() {
        let g = |v: &str| cfg(&format!("[greylist]\nenabled = true\non_store_failure = \"{v}\"\n"));
        use crate::config::greylist::StoreFailure;
        assert_eq!(
            g("open").unwrap().greylist.unwrap().on_store_failure,
            StoreFailure::Open
        );
        assert_eq!(
            g("closed").unwrap().greylist.unwrap().on_store_failure,
            StoreFailure::Closed
        );
        assert_eq!(g("maybe").unwrap_err().key, "greylist.on_store_failure");
        let default = cfg("[greylist]\nenabled = true\n").unwrap().greylist.unwrap();
        assert_eq!(default.on_store_failure, StoreFailure::Open);
    }

    /// `sluice config` fills `[cluster]` when it is there (and leaves it
    /// out when not); the filled file validates to the same and reads back.
    #[test]
    fn the_effective_configuration_fills_cluster_and_reads_back() {
        use crate::config::effective::{filled, to_toml};
        let raw =
            Config::parse_raw("[server]\nhostname = \"mx1.example.org\"\n[cluster]\nredis = \"redis://10.0.0.5/0\"\n")
                .unwrap();
        let full = filled(raw.clone());
        let c = full.cluster.clone().unwrap();
        assert_eq!(
            (c.prefix.as_deref(), c.timeout.as_deref(), c.node.as_deref()),
            (Some("sluice:"), Some("50ms"), Some("mx1.example.org"))
        );
        let a = Config::from_raw(raw, Path::new("/")).unwrap().cluster;
        let b = Config::from_raw(full.clone(), Path::new("/")).unwrap().cluster;
        assert_eq!(a, b);
        assert_eq!(Config::parse_raw(&to_toml(&full)).unwrap(), full);
        assert!(filled(Config::parse_raw("").unwrap()).cluster.is_none());
    }
}
