//! What operators see: the metrics listener (`/metrics`, `/healthz`,
//! `/readyz`, the status page `/` and its `/api/status`), the per-second
//! history the page draws, the readiness probes, and `sluice check`.
//!
//! - `http`: the listener.
//! - `history`: one sample per second of the figures the status page draws.
//! - `health`: the readiness probes (spool, next hop, scanners).
//! - `check`: the Nagios-style client of `/api/status`.

pub mod check;
pub mod health;
pub mod history;
pub mod http;
