//! Accept loop: connection limit, TCP_NODELAY, one task per session, the
//! PROXY protocol header on listeners behind a load balancer ([`proxy`]),
//! and the STARTTLS hand-over between plaintext and TLS runs of the
//! session.

use std::net::{IpAddr, SocketAddr};
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
use crate::proto::proxy::Source;
use crate::smtp::session::{Front, Outcome, Session, Shared};

pub mod proxy;

use proxy::{HeaderError, Rewind};

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
/// `proxy_protocol`: the listener is behind a load balancer (only
/// `server.proxy_from` may connect, and each connection starts with a
/// PROXY header naming the client).
pub async fn accept_loop(
    listener: TcpListener,
    front: Arc<Front>,
    limit: Arc<Semaphore>,
    tracker: TaskTracker,
    proxy_protocol: bool,
) {
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
                if proxy_protocol {
                    let ip = peer.ip();
                    // The header is read in the connection's task, and the
                    // filters and the session slot are taken after it, for
                    // the client it names. Only the balancers get that far,
                    // each for at most server.proxy_timeout.
                    if shared.config.server.proxy_from.iter().any(|n| n.contains(&ip)) {
                        tracker.spawn(proxied(front.clone(), sock, peer, limit.clone()));
                    } else {
                        let refusal = Refusal::new(
                            Reply::PROXY_ONLY,
                            Reason::ProxyProtocol,
                            format!("{ip} is not in server.proxy_from"),
                        );
                        tracker.spawn(refuse(&shared, sock, ip, refusal));
                    }
                    continue;
                }
                match admit(&shared, &limit, peer.ip()) {
                    Ok(slots) => {
                        tracker.spawn(serve(front.clone(), Rewind::plain(sock), peer, slots));
                    }
                    Err(refusal) => {
                        tracker.spawn(refuse(&shared, sock, peer.ip(), refusal));
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

/// The connection filters (bans, allowlist, per-client limits) on the
/// client's address, then a global session slot.
fn admit(shared: &Shared, limit: &Arc<Semaphore>, ip: IpAddr) -> Result<Slots, Refusal> {
    let slots = admit_all(&shared.filters, ip)?;
    let permit = limit.clone().try_acquire_owned().map_err(|_| {
        Refusal::new(
            Reply::TOO_MANY_CONNECTIONS,
            Reason::ConnectionLimit,
            "server.max_connections reached",
        )
    })?;
    Ok((permit, slots))
}

/// Reports the refusal at once, and returns the task that gives the
/// client its reply and closes.
fn refuse(
    shared: &Shared,
    sock: TcpStream,
    ip: IpAddr,
    refusal: Refusal,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let Refusal {
        reply,
        reason,
        evidence,
    } = refusal;
    shared.events.emit(Event::ConnectRejected {
        via: crate::events::Via::Smtp,
        session: 0,
        ip,
        reason,
        reply: reply.clone(),
        evidence,
    });
    async move {
        let mut sock = sock;
        let _ = tokio::time::timeout(Duration::from_secs(5), sock.write_all(&reply.to_bytes())).await;
    }
}

/// A load balancer's connection: the PROXY header first (within
/// `server.proxy_timeout`), then the connection filters on the client it
/// names, then the session, as that client.
async fn proxied(front: Arc<Front>, mut sock: TcpStream, balancer: SocketAddr, limit: Arc<Semaphore>) {
    let within = front.load().config.server.proxy_timeout;
    let read = proxy::read_header(&mut sock, within).await;
    let shared = front.load();
    let (peer, early) = match read {
        Ok((Source::Client(client), early)) => (client, early),
        Ok((Source::Balancer, early)) => (balancer, early),
        Err(HeaderError::Silent) => {
            tracing::debug!(balancer = %balancer, "load balancer connected and closed (health check)");
            return;
        }
        Err(e) => {
            let refusal = Refusal::new(Reply::PROXY_HEADER, Reason::ProxyProtocol, e.to_string());
            return refuse(&shared, sock, balancer.ip(), refusal).await;
        }
    };
    match admit(&shared, &limit, peer.ip()) {
        Ok(slots) => serve(front, Rewind::new(early, sock), peer, slots).await,
        Err(refusal) => refuse(&shared, sock, peer.ip(), refusal).await,
    }
}

/// Held for the life of a session: the global slot and the per-client ones.
type Slots = (OwnedSemaphorePermit, Vec<SessionSlot>);

async fn serve(front: Arc<Front>, sock: Rewind<TcpStream>, peer: SocketAddr, _slots: Slots) {
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
