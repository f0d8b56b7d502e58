//! The milter listener (`[milter]`): sluice's content checks for Postfix,
//! over the front end's current settings.

use std::net::SocketAddr;
use std::sync::Arc;

use super::core::Core;
use crate::milter::Milter;
use crate::smtp::session::Front;

/// Binds `milter.listen` and serves (nothing without `[milter]`); returns
/// the bound addresses.
pub(super) fn listen(
    core: &Core,
    front: Arc<Front>,
    bans: Option<Arc<dyn crate::policy::connection::ConnectionFilter>>,
) -> anyhow::Result<Vec<SocketAddr>> {
    let Some(m) = &core.config.milter else {
        return Ok(Vec::new());
    };
    let milter = Arc::new(Milter {
        front,
        timeout: m.timeout,
        bans,
    });
    let addrs = crate::milter::listen_all(&m.listen, milter, m.max_connections, &core.sessions)
        .map_err(|(addr, e)| super::bind_error("milter.listen", addr, &e))?;
    tracing::info!(listen = ?addrs, "milter listening");
    Ok(addrs)
}
