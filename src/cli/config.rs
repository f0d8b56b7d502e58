//! `sluice config` (the effective configuration, as `postconf` and
//! `rspamadm configdump`) and the warnings of `sluice check-config`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use sluice::config::raw::RawConfig;
use sluice::config::{Config, ConfigError, Warning, effective};

/// `sluice config [--changed]`: the file (or the built-in defaults) with
/// every default filled in, as TOML that is itself a valid configuration;
/// `--changed`: only the keys that differ from their default, as
/// `dotted.key = value` lines. An invalid file prints its error (exit 64).
pub(crate) fn show(path: Option<&Path>, changed: bool) -> Result<String, ConfigError> {
    let (raw, base) = match path {
        Some(p) => (Config::load_raw(p)?, absolute(&sluice::config::base_of(p))),
        None => (
            RawConfig::default(),
            PathBuf::from(sluice::config::defaults::CONFIG_DIR),
        ),
    };
    Config::from_raw(raw.clone(), &base)?;
    if changed {
        let mut out = effective::changed(&raw, &base).join("\n");
        if !out.is_empty() {
            out.push('\n');
        }
        return Ok(out);
    }
    let source = match path {
        Some(p) => absolute(p).display().to_string(),
        None => "no file: the built-in defaults".into(),
    };
    let tls = if raw.tls.is_none() {
        "# [tls] is not set: STARTTLS is not offered.\n"
    } else {
        ""
    };
    Ok(format!(
        "# The effective configuration ({source}), every key with its default\n\
         # filled in; `sluice config --changed` prints only what differs.\n{tls}\n{}",
        effective::to_toml(&effective::effective(raw, &base))
    ))
}

/// `path` from the root, so printed paths mean the same anywhere.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The warnings of `config`, one line each on stderr; how many.
pub(crate) fn print_warnings(config: &Config) -> usize {
    let warnings: Vec<Warning> = config.warnings();
    for w in &warnings {
        eprintln!("sluice: warning: {w}");
    }
    warnings.len()
}

/// `sluice config`: printed, or the error and exit 64.
pub(crate) fn run(path: Option<&Path>, changed: bool, ex_config: u8) -> ExitCode {
    match show(path, changed) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluice: configuration error: {e}");
            ExitCode::from(ex_config)
        }
    }
}
