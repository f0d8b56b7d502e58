//! The metrics listener (HTTP/1.1, hyper): `/metrics`, `/healthz`,
//! `/readyz`, the status page `/` and its data `/api/status`. It binds to
//! loopback by default; it has no authentication, so keep it private.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::health::{Health, Readiness};
use super::history::History;
use crate::metrics::Metrics;

/// The status page: one file, no external assets (works air-gapped).
const STATUS_PAGE: &str = include_str!("status.html");
/// Connections served at once; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 64;
/// The page refreshes readiness at most this often.
const READY_CACHE: Duration = Duration::from_secs(10);

pub struct Endpoints {
    pub metrics: Arc<Metrics>,
    pub history: Arc<History>,
    pub health: Arc<Health>,
    /// When the status page's readiness was last refreshed.
    ready_at: std::sync::Mutex<Option<Instant>>,
}

impl Endpoints {
    pub fn new(metrics: Arc<Metrics>, history: Arc<History>, health: Arc<Health>) -> Endpoints {
        Endpoints {
            metrics,
            history,
            health,
            ready_at: std::sync::Mutex::new(None),
        }
    }

    /// Readiness for `/readyz` (probed now) as (status, body).
    pub async fn readyz(&self) -> (StatusCode, String, Readiness) {
        let r = self.health.check().await;
        self.history.set_ready(r.clone());
        let mut body = if r.ok {
            "ready\n".to_string()
        } else {
            format!("not ready: {}\n", r.problems.join("; "))
        };
        for d in &r.degraded {
            body.push_str(&format!("degraded: {d}\n"));
        }
        let status = if r.ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (status, body, r)
    }

    /// Refreshes the status page's readiness in the background when stale.
    fn refresh_ready(self: &Arc<Self>) {
        let mut at = self.ready_at.lock().unwrap_or_else(|p| p.into_inner());
        if at.is_some_and(|t| t.elapsed() < READY_CACHE) {
            return;
        }
        *at = Some(Instant::now());
        let this = self.clone();
        tokio::spawn(async move {
            this.readyz().await;
        });
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Ok(reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n"));
        }
        let res = match req.uri().path() {
            "/metrics" => reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics.render(),
            ),
            "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n"),
            "/readyz" => {
                let (status, body, _) = self.readyz().await;
                reply(status, "text/plain", body)
            }
            "/api/status" => {
                self.refresh_ready();
                let json = serde_json::to_string(&self.history.status()).unwrap_or_else(|_| "{}".into());
                reply(StatusCode::OK, "application/json", json)
            }
            "/" | "/index.html" => reply(StatusCode::OK, "text/html; charset=utf-8", STATUS_PAGE),
            _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
        };
        Ok(res)
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    r
}

/// Binds the listener (so a taken port fails the start, naming the key).
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let std = std::net::TcpListener::bind(addr)?;
    std.set_nonblocking(true)?;
    TcpListener::from_std(std)
}

/// Serves until `stop`.
pub async fn serve(listener: TcpListener, endpoints: Arc<Endpoints>, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.cancelled() => return,
        };
        let (sock, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let (ep, stop) = (endpoints.clone(), stop.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let svc = hyper::service::service_fn(move |req| ep.clone().handle(req));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(sock), svc);
            tokio::select! {
                _ = conn => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}
