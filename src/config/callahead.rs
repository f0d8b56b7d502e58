//! `[callahead]`: recipient verification at the next hop.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct CallAheadConfig {
    pub positive_ttl: Duration,
    pub negative_ttl: Duration,
    /// Probes each client may cause per minute.
    pub probes_per_client: u32,
    /// Idle probe connections kept open.
    pub pool_size: usize,
}
