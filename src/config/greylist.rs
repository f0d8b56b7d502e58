//! `[greylist]`: postgrey-style greylisting.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct GreylistConfig {
    pub delay: Duration,
    pub retry_window: Duration,
    pub max_age: Duration,
    pub auto_allowlist_after: u32,
    pub state: PathBuf,
}
