//! `[policy_server]`: binds its listeners and serves Postfix's policy
//! requests with the front end's checks (see [`crate::policy_server`]).

use std::net::SocketAddr;
use std::sync::Arc;

use super::core::Core;
use crate::firewall::service::Firewall;
use crate::policy::connection::ConnectionFilter;
use crate::policy_server::{PolicyServer, accept_loop};
use crate::smtp::session::Front;

/// Binds `policy_server.listen` (nothing without the section); returns
/// the bound addresses.
pub(super) fn listen(
    core: &Core,
    front: Arc<Front>,
    firewall: Option<Arc<Firewall>>,
) -> anyhow::Result<Vec<SocketAddr>> {
    let Some(cfg) = core.config.policy_server.clone() else {
        return Ok(Vec::new());
    };
    let bans = firewall.map(|f| f as Arc<dyn ConnectionFilter>);
    // SPF for `Received-SPF:` when the spam filter's authentication is on.
    let spf = super::authenticator(&core.config, false, None)?;
    let server = Arc::new(PolicyServer::new(front, bans, spf, cfg.clone()));
    let mut addrs = Vec::new();
    for addr in cfg.listen {
        let l = crate::listener::bind(addr).map_err(|e| super::bind_error("policy_server.listen", addr, &e))?;
        addrs.push(l.local_addr()?);
        core.sessions.spawn(accept_loop(
            l,
            server.clone(),
            core.sessions.clone(),
            core.shutdown.clone(),
        ));
    }
    tracing::info!(listen = ?addrs, "policy server started");
    Ok(addrs)
}
