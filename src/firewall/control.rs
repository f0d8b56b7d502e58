//! The control socket of the running daemon, for `sluice bans`: a unix
//! socket (mode 0600: only its owner, normally root or the sluice user, may
//! talk to it) taking one JSON request per line and answering one JSON
//! line.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
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
    /// `explain` of an address that is not banned.
    NotBanned,
    Error(String),
}

/// Serves the socket until shutdown. An old socket file is replaced.
pub async fn serve(fw: Arc<Firewall>, path: &Path, shutdown: CancellationToken) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    loop {
        let (sock, _) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(_) => continue,
            },
        };
        let fw = fw.clone();
        tokio::spawn(async move {
            let (r, mut w) = sock.into_split();
            let mut line = String::new();
            let mut r = BufReader::new(r);
            if r.read_line(&mut line).await.is_err() {
                return;
            }
            let resp = match serde_json::from_str::<Request>(&line) {
                Ok(req) => handle(&fw, req),
                Err(e) => Response::Error(format!("bad request: {e}")),
            };
            let mut out = serde_json::to_vec(&resp).unwrap_or_default();
            out.push(b'\n');
            let _ = w.write_all(&out).await;
        });
    }
    let _ = std::fs::remove_file(path);
    Ok(())
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
    let sock = tokio::net::UnixStream::connect(path).await?;
    let (r, mut w) = sock.into_split();
    let mut line = serde_json::to_vec(req).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await?;
    let mut answer = String::new();
    BufReader::new(r).read_line(&mut answer).await?;
    serde_json::from_str(&answer).map_err(std::io::Error::other)
}
