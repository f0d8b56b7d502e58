//! The daemon's control sockets (`sluice bans`, `sluice queue`): a unix
//! socket (mode 0600: only its owner, normally root or the sluice user, may
//! talk to it) taking one JSON request per line and answering one JSON
//! line. The services say what a request means; this is the wire.

use std::future::Future;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

/// Serves the socket at `path` until `stop`: each request is answered by
/// `handle`, one that does not parse by `bad` with the reason. An old
/// socket file is replaced, and removed at the end.
pub async fn serve<Req, Resp, F, Fut>(
    path: &Path,
    stop: CancellationToken,
    bad: fn(String) -> Resp,
    handle: F,
) -> std::io::Result<()>
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    F: Fn(Req) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Resp> + Send,
{
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    loop {
        let (sock, _) = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(_) => continue,
            },
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let (r, mut w) = sock.into_split();
            let mut line = String::new();
            if BufReader::new(r).read_line(&mut line).await.is_err() {
                return;
            }
            let resp = match serde_json::from_str::<Req>(&line) {
                Ok(req) => handle(req).await,
                Err(e) => bad(format!("bad request: {e}")),
            };
            let mut out = serde_json::to_vec(&resp).unwrap_or_default();
            out.push(b'\n');
            let _ = w.write_all(&out).await;
        });
    }
    let _ = std::fs::remove_file(path);
    Ok(())
}

/// Sends one request to the socket at `path` and reads the answer (the
/// CLI's side).
pub async fn request<Req: Serialize, Resp: DeserializeOwned>(path: &Path, req: &Req) -> std::io::Result<Resp> {
    let sock = tokio::net::UnixStream::connect(path).await?;
    let (r, mut w) = sock.into_split();
    let mut line = serde_json::to_vec(req).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await?;
    let mut answer = String::new();
    BufReader::new(r).read_line(&mut answer).await?;
    serde_json::from_str(&answer).map_err(std::io::Error::other)
}
