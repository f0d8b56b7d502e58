//! `[greylist]`: postgrey-style greylisting.

use super::defaults;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What greylisting does when the shared store (`[cluster]`) cannot
/// answer in time (`greylist.on_store_failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreFailure {
    /// Pass the recipient (counted in `sluice_cluster_fallbacks_total`).
    #[default]
    Open,
    /// Defer it (451) as if the triplet were new.
    Closed,
}

#[derive(Debug, Clone)]
pub struct GreylistConfig {
    pub delay: Duration,
    pub retry_window: Duration,
    pub max_age: Duration,
    pub auto_allowlist_after: u32,
    /// With `[cluster]`: what a recipient gets when the store is away.
    pub on_store_failure: StoreFailure,
    pub state: PathBuf,
}

/// `None` when greylisting is off; the state file defaults to the spool.
pub(super) fn validate_greylist(
    g: super::raw::RawGreylist,
    base: &Path,
    spool_dir: &Path,
) -> Result<Option<GreylistConfig>, super::ConfigError> {
    use super::{ConfigError, dur, resolve};
    let greylist = if g.enabled.unwrap_or(defaults::GREYLIST_ENABLED) {
        let cfg = GreylistConfig {
            delay: dur("greylist.delay", g.delay, defaults::GREYLIST_DELAY)?,
            retry_window: dur("greylist.retry_window", g.retry_window, defaults::GREYLIST_RETRY_WINDOW)?,
            max_age: dur("greylist.max_age", g.max_age, defaults::GREYLIST_MAX_AGE)?,
            auto_allowlist_after: g
                .auto_allowlist_after
                .unwrap_or(defaults::GREYLIST_AUTO_ALLOWLIST_AFTER),
            on_store_failure: match g
                .on_store_failure
                .as_deref()
                .unwrap_or(defaults::GREYLIST_ON_STORE_FAILURE)
            {
                "open" => StoreFailure::Open,
                "closed" => StoreFailure::Closed,
                other => {
                    return Err(ConfigError::new(
                        "greylist.on_store_failure",
                        format!("{other:?}: use \"open\" or \"closed\""),
                    ));
                }
            },
            state: match g.state {
                Some(p) => resolve(base, &p),
                None => spool_dir.join("greylist.state"),
            },
        };
        if cfg.retry_window <= cfg.delay {
            return Err(ConfigError::new(
                "greylist.retry_window",
                "must be longer than greylist.delay",
            ));
        }
        Some(cfg)
    } else {
        None
    };
    Ok(greylist)
}
