//! Accept loop: connection limit, TCP_NODELAY, one task per session, and
//! the STARTTLS hand-over between plaintext and TLS runs of the session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

use crate::events::{Disconnect, Event, Reason, Refusal};
use crate::policy::connection::admit_all;
use crate::policy::limits::SessionSlot;
use crate::proto::Reply;
use crate::smtp::session::{Front, Outcome, Session};

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
pub async fn accept_loop(listener: TcpListener, front: Arc<Front>, limit: Arc<Semaphore>, tracker: TaskTracker) {
    let shutdown = front.load().shutdown.clone();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((sock, peer)) => {
                // The one place the client address is normalised: an
                // IPv4-mapped IPv6 peer (`::ffff:192.0.2.1`) is the IPv4
                // client it stands for, for checks, limits, bans and logs.
                let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
                let _ = sock.set_nodelay(true);
                let shared = front.load();
                let admitted = admit_all(&shared.filters, peer.ip());
                match (admitted, limit.clone().try_acquire_owned()) {
                    (Ok(slots), Ok(permit)) => {
                        tracker.spawn(serve(front.clone(), sock, peer, (permit, slots)));
                    }
                    (admitted, _) => {
                        let refusal = admitted.err();
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

/// Held for the life of a session: the global slot and the per-client ones.
type Slots = (OwnedSemaphorePermit, Vec<SessionSlot>);

async fn serve(front: Arc<Front>, sock: TcpStream, peer: SocketAddr, _slots: Slots) {
    let mut session = Session::new(front.load(), peer).with_front(front);
    let events = session.shared().events.clone();
    events.emit(Event::SessionOpened {
        session: session.id(),
        ip: peer.ip(),
    });
    let reason = match session.run(sock, true).await {
        Outcome::Closed(d) => d,
        Outcome::StartTls(sock) => match session.shared().tls.clone() {
            None => Disconnect::TlsFailed("TLS not configured".into()),
            Some(tls) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
                let within = session.shared().config.timeouts.command;
                match tokio::time::timeout(within, acceptor.accept(sock)).await {
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
    events.emit(Event::SessionClosed {
        session: session.id(),
        ip: peer.ip(),
        reason,
        messages: session.messages(),
    });
}
