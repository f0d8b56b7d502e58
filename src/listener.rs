//! Accept loop: connection limit, TCP_NODELAY, one task per session, and
//! the STARTTLS hand-over between plaintext and TLS runs of the session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

use crate::events::{Disconnect, Event, Limit, Reason, Refusal};
use crate::policy::limits::SessionSlot;
use crate::proto::Reply;
use crate::smtp::session::{Outcome, Session, Shared};

/// Binds a listening socket. IPv6 sockets are v6-only, so `0.0.0.0:25`
/// and `[::]:25` can both be listed; the backlog is deep enough for
/// connection bursts.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_reuse_address(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(4096)?;
    TcpListener::from_std(sock.into())
}

/// Accepts until shutdown. `limit` caps concurrent sessions
/// (`server.max_connections`); a client over the limit gets 421 4.7.0.
pub async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, limit: Arc<Semaphore>, tracker: TaskTracker) {
    let shutdown = shared.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((sock, peer)) => {
                let _ = sock.set_nodelay(true);
                let (slot, refusal) = admit(&shared, peer.ip());
                match (refusal, limit.clone().try_acquire_owned()) {
                    (None, Ok(permit)) => {
                        tracker.spawn(serve(shared.clone(), sock, peer, (permit, slot)));
                    }
                    (refusal, _) => {
                        let Refusal {
                            reply,
                            reason,
                            evidence,
                        } = refusal.unwrap_or_else(|| {
                            Refusal::new(
                                Reply::TOO_MANY_CONNECTIONS,
                                Reason::ConnectionLimit,
                                "server.max_connections reached",
                            )
                        });
                        shared.events.emit(Event::ConnectRejected {
                            session: 0,
                            ip: peer.ip(),
                            reason,
                            reply: reply.clone(),
                            evidence,
                        });
                        tracker.spawn(async move {
                            let mut sock = sock;
                            let _ =
                                tokio::time::timeout(Duration::from_secs(5), sock.write_all(&reply.to_bytes())).await;
                        });
                    }
                }
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Per-client connection limits (rate, then concurrency), cheap and
/// synchronous, before any task is spawned. Allowlisted clients pass.
fn admit(shared: &Shared, ip: std::net::IpAddr) -> (Option<SessionSlot>, Option<Refusal>) {
    let ip = crate::policy::client_ip(ip);
    if let Some(ban) = shared.firewall.as_ref().and_then(|f| f.is_banned(ip)) {
        let evidence = format!("{} banned until {} ({})", ban.net, ban.until, ban.rule);
        return (None, Some(Refusal::new(Reply::CLIENT_BANNED, Reason::Banned, evidence)));
    }
    if shared.config.policy.allowlist.iter().any(|n| n.contains(&ip)) {
        return (None, None);
    }
    let limits = &shared.limits;
    if !limits.connections.hit(ip, tokio::time::Instant::now()) {
        let evidence = format!(
            "connection rate of {ip} over {}/min",
            shared.config.limits.per_ip_connection_rate
        );
        let reason = Reason::RateLimit {
            limit: Limit::Connections,
        };
        return (
            None,
            Some(Refusal::new(Reply::CLIENT_CONNECTION_RATE, reason, evidence)),
        );
    }
    if limits.per_ip_connections == 0 {
        // Unlimited: no per-client bookkeeping on the accept path.
        return (None, None);
    }
    match limits.concurrency.acquire(ip, limits.per_ip_connections) {
        Some(slot) => (Some(slot), None),
        None => {
            let evidence = format!("{ip} already has {} sessions", limits.per_ip_connections);
            let reason = Reason::RateLimit {
                limit: Limit::Concurrency,
            };
            (None, Some(Refusal::new(Reply::CLIENT_CONCURRENCY, reason, evidence)))
        }
    }
}

/// Held for the life of a session: the global slot and the per-client one.
type Slots = (OwnedSemaphorePermit, Option<SessionSlot>);

async fn serve(shared: Arc<Shared>, sock: TcpStream, peer: SocketAddr, _slots: Slots) {
    let mut session = Session::new(shared.clone(), peer);
    shared.events.emit(Event::SessionOpened {
        session: session.id(),
        ip: peer.ip(),
    });
    let reason = match session.run(sock, true).await {
        Outcome::Closed(d) => d,
        Outcome::StartTls(sock) => match &shared.tls {
            None => Disconnect::TlsFailed("TLS not configured".into()),
            Some(tls) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
                match tokio::time::timeout(shared.config.timeouts.command, acceptor.accept(sock)).await {
                    Ok(Ok(stream)) => {
                        session.tls_established();
                        match session.run(stream, false).await {
                            Outcome::Closed(d) => d,
                            Outcome::StartTls(_) => Disconnect::TlsFailed("STARTTLS inside TLS".into()),
                        }
                    }
                    Ok(Err(e)) => Disconnect::TlsFailed(e.to_string()),
                    Err(_) => Disconnect::Timeout,
                }
            }
        },
    };
    shared.events.emit(Event::SessionClosed {
        session: session.id(),
        ip: peer.ip(),
        reason,
        messages: session.messages(),
    });
}
