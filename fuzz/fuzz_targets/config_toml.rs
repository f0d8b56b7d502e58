//! The configuration loader on arbitrary text: `Config::from_toml` must give
//! a config or a `ConfigError` naming a key, never panic. It does no I/O
//! (relative paths only resolve against the base, which does not exist).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sluice::config::Config;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match Config::from_toml(&text, Path::new("/nonexistent/sluice")) {
        Ok(c) => {
            let _ = format!("{c:?}");
        }
        Err(e) => {
            assert!(!e.key.is_empty(), "error without a key: {e:?}");
            assert!(!e.problem.is_empty(), "error without a problem: {e:?}");
            let _ = e.to_string();
        }
    }
});
