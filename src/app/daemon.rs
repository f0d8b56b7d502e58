//! The daemon's own control socket, `<spool.dir>/daemon.sock` (mode 0600;
//! the wire is [`crate::control`]): `sluice reload`; the admin's actions
//! outside the daemon that are events too (`sluice quarantine release`);
//! `sluice learn --daemon` (the daemon learns the messages into
//! `spam.bayes_model` and scores with the new model at once).

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::reload::{ReloadResult, Reloader};
use crate::config::Config;

pub fn socket_path(config: &Config) -> PathBuf {
    config.spool.dir.join("daemon.sock")
}

/// A request on the socket.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    Reload,
    /// An admin's action outside the daemon, to be an event.
    Record {
        what: crate::events::AdminRecord,
    },
    /// One message to learn as spam or ham (or, `forget`, to take back).
    Learn {
        spam: bool,
        forget: bool,
        message: Vec<u8>,
    },
}

/// The answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Reload(ReloadResult),
    Recorded,
    /// The model now in use.
    Learned {
        nspam: u32,
        nham: u32,
        tokens: usize,
    },
    Error(String),
}

pub(super) async fn serve(reloader: Arc<Reloader>, path: PathBuf, stop: CancellationToken) -> std::io::Result<()> {
    crate::control::serve(&path, stop, Answer::Error, move |req: Request| {
        let reloader = reloader.clone();
        async move {
            match req {
                Request::Reload => Answer::Reload(reloader.reload().await),
                Request::Record { what } => {
                    reloader.lasts.core.events.emit(what.event());
                    Answer::Recorded
                }
                Request::Learn { spam, forget, message } => learn(&reloader, spam, forget, message).await,
            }
        }
    })
    .await
}

/// Learns one message into `spam.bayes_model` (locked, as `sluice learn`
/// does) and puts the new model in use.
async fn learn(reloader: &Reloader, spam: bool, forget: bool, message: Vec<u8>) -> Answer {
    let shared = reloader.front.load();
    let filter = shared.pipeline.spam.clone();
    let path = shared.config.spam.as_ref().and_then(|s| s.bayes_model.clone());
    let part_text = shared
        .config
        .spam
        .as_ref()
        .map_or(crate::spam::tokenize::PART_TEXT, |s| s.part_scan_size);
    let (Some(filter), Some(path)) = (filter, path) else {
        return Answer::Error("spam scoring is off or spam.bayes_model is not set: nothing to learn into".into());
    };
    let done = tokio::task::spawn_blocking(move || {
        crate::spam::learn::update(&path, false, forget, 1, |model| {
            let mut batch = Vec::with_capacity(1);
            crate::spam::learn_message(model, &message, spam, forget, part_text, &mut batch);
            crate::spam::finish_batch(model, &batch, forget);
            Ok(if spam { (1, 0) } else { (0, 1) })
        })
    })
    .await;
    match done {
        Ok(Ok((_, model))) => {
            let answer = Answer::Learned {
                nspam: model.nspam(),
                nham: model.nham(),
                tokens: model.len(),
            };
            filter.set_model(Some(model));
            answer
        }
        Ok(Err(e)) => Answer::Error(e.to_string()),
        Err(e) => Answer::Error(e.to_string()),
    }
}

async fn ask(config: &Config, req: &Request) -> std::io::Result<Answer> {
    crate::control::request(&socket_path(config), req).await
}

/// Sends `sluice reload` to the daemon whose configuration is `config`.
pub async fn request_reload(config: &Config) -> std::io::Result<ReloadResult> {
    match ask(config, &Request::Reload).await? {
        Answer::Reload(r) => Ok(r),
        Answer::Error(error) => Ok(ReloadResult::Failed { error }),
        other => Err(std::io::Error::other(format!("unexpected answer {other:?}"))),
    }
}

/// Sends one message to the daemon to learn (`sluice learn --daemon`).
pub async fn request_learn(config: &Config, spam: bool, forget: bool, message: Vec<u8>) -> std::io::Result<Answer> {
    ask(config, &Request::Learn { spam, forget, message }).await
}

/// Makes an admin's action outside the daemon an event: sent to the
/// daemon (its event log, metrics and bus see it), or, when it does not
/// answer, appended to the event log file (when `log.events` is a file).
pub async fn record(config: &Config, what: crate::events::AdminRecord) -> std::io::Result<()> {
    let req = Request::Record { what: what.clone() };
    if ask(config, &req).await.is_ok() {
        return Ok(());
    }
    if let crate::config::EventSink::File(path) = &config.log.events {
        use std::io::Write as _;
        let line = crate::events::log::line(&what.event(), std::time::SystemTime::now());
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        f.write_all(line.as_bytes())?;
    }
    Ok(())
}
