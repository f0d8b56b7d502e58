//! Log output: text or JSON lines on stderr; `RUST_LOG` overrides the level.

use tracing_subscriber::EnvFilter;

pub fn init(cfg: &crate::config::Log) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if cfg.json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
