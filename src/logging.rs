//! Log output: text or JSON lines on stderr; `RUST_LOG` overrides the level.
//! The level (`log.level`) can be changed while running ([`set_level`]).
//! The text format is coloured only when stderr is a terminal and
//! `NO_COLOR` is not set: no ANSI codes in files or the journal.

use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

type SetLevel = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// Replaces the running filter; set by [`init`].
static SET_LEVEL: OnceLock<SetLevel> = OnceLock::new();

pub fn init(cfg: &crate::config::Log) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.level));
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr);
    if cfg.json {
        let b = builder.json().with_env_filter(filter).with_filter_reloading();
        let handle = b.reload_handle();
        if b.try_init().is_ok() {
            let _ = SET_LEVEL.set(Box::new(move |f| handle.reload(f).map_err(|e| e.to_string())));
        }
    } else {
        let b = builder
            .with_ansi(colour())
            .with_env_filter(filter)
            .with_filter_reloading();
        let handle = b.reload_handle();
        if b.try_init().is_ok() {
            let _ = SET_LEVEL.set(Box::new(move |f| handle.reload(f).map_err(|e| e.to_string())));
        }
    }
}

/// Whether the text log may use ANSI colours: stderr is a terminal and
/// `NO_COLOR` (<https://no-color.org>) is not set.
fn colour() -> bool {
    use std::io::IsTerminal as _;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Applies a new `log.level` (unless `RUST_LOG` set the level at start).
pub fn set_level(level: &str) -> Result<(), String> {
    if std::env::var_os("RUST_LOG").is_some() {
        return Ok(());
    }
    let Some(set) = SET_LEVEL.get() else {
        return Ok(());
    };
    let filter = EnvFilter::try_new(level).map_err(|e| format!("log.level {level:?}: {e}"))?;
    set(filter)
}
