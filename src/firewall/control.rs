//! The control socket of the running daemon, for `sluice bans` (the wire
//! is [`crate::control`]).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::engine::{Ban, Decision, Offence};
use super::service::Firewall;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    List,
    Add {
        net: IpNet,
        seconds: u64,
    },
    Del {
        net: IpNet,
    },
    Explain {
        ip: IpAddr,
    },
    /// Offences from an imported log (`sluice bans import-postfix-log`):
    /// (when, client, offence), oldest first. Answered with the bans they
    /// caused that are in force now.
    Record {
        offences: Vec<(u64, IpAddr, Offence)>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Bans(Vec<Ban>),
    Done,
    /// `add` or `del` done in sluice (its listener refuses or admits at
    /// once), but not in the kernel: why (the exporter is failing).
    NotInKernel(String),
    /// `explain` of an address that is not banned.
    NotBanned,
    Error(String),
}

/// Serves the socket until shutdown (see [`crate::control`]).
pub async fn serve(fw: Arc<Firewall>, path: &Path, shutdown: CancellationToken) -> std::io::Result<()> {
    crate::control::serve(path, shutdown, Response::Error, move |req: Request| {
        let fw = fw.clone();
        async move {
            let by_hand = matches!(req, Request::Add { .. } | Request::Del { .. });
            match handle(&fw, req) {
                Response::Done if by_hand => match fw.kernel_state().await {
                    Some(why) => Response::NotInKernel(why),
                    None => Response::Done,
                },
                other => other,
            }
        }
    })
    .await
}

fn handle(fw: &Firewall, req: Request) -> Response {
    match req {
        Request::List => Response::Bans(fw.bans()),
        Request::Explain { ip } => match fw.is_banned(ip) {
            Some(b) => Response::Bans(vec![b]),
            None => Response::NotBanned,
        },
        Request::Record { offences } => {
            let now = super::service::now();
            let bans = offences
                .into_iter()
                .filter_map(|(at, ip, o)| match fw.record_at(at, ip, o) {
                    Decision::Ban(b) | Decision::Aggregated(b) if b.until > now => Some(b),
                    _ => None,
                })
                .collect();
            Response::Bans(bans)
        }
        Request::Del { net } => match fw.remove(net) {
            Some(_) => Response::Done,
            None => Response::Error(format!("{net} is not banned")),
        },
        Request::Add { net, seconds } => {
            let now = super::service::now();
            let ban = Ban {
                net: net.trunc(),
                offence: Offence::Protocol,
                since: now,
                until: now.saturating_add(seconds),
                rule: "added by hand (sluice bans add)".into(),
                strike: 1,
                evidence: Vec::new(),
            };
            match fw.insert(ban) {
                Ok(()) => Response::Done,
                Err(b) => Response::Error(format!("{} is allowlisted: not banned", b.net)),
            }
        }
    }
}

/// One request to the daemon's socket (the `sluice bans` side).
pub async fn request(path: &Path, req: &Request) -> std::io::Result<Response> {
    crate::control::request(path, req).await
}
