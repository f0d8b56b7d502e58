//! Content scanning. The [`Scanner`] seam and its clamd implementation.
//! A scan runs at the end of DATA, before the message is spooled, so a
//! virus gets `554 5.7.1` in the session (no bounce, no backscatter).

pub mod clamd;

use std::future::Future;
use std::pin::Pin;

/// What a scanner found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanOutcome {
    Clean,
    /// The malware name as the scanner reports it.
    Infected(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("scanner unavailable: {0}")]
    Unavailable(String),
    #[error("scan timed out")]
    Timeout,
    #[error("scanner error: {0}")]
    Failed(String),
}

pub type ScanFuture<'a> = Pin<Box<dyn Future<Output = Result<ScanOutcome, ScanError>> + Send + 'a>>;

/// The scanning seam. A scanner never returns "clean" when it could not
/// scan: errors are errors, and the failure policy decides.
pub trait Scanner: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn scan<'a>(&'a self, message: &'a [u8]) -> ScanFuture<'a>;
}

/// `sluice scan FILE...`: scans each file with clamd and prints
/// `FILE: OK`, `FILE: FOUND name` or `FILE: ERROR reason`. Returns the exit
/// code: 0 all clean, 1 something found, 75 (EX_TEMPFAIL) a scan failed.
pub async fn scan_files(cfg: clamd::ClamdConfig, files: &[std::path::PathBuf]) -> u8 {
    let scanner = clamd::Clamd::new(cfg);
    let (mut found, mut failed) = (false, false);
    for f in files {
        let verdict = match tokio::fs::read(f).await {
            Err(e) => Err(ScanError::Failed(e.to_string())),
            Ok(bytes) => scanner.scan(&bytes).await,
        };
        match verdict {
            Ok(ScanOutcome::Clean) => println!("{}: OK", f.display()),
            Ok(ScanOutcome::Infected(name)) => {
                found = true;
                println!("{}: FOUND {name}", f.display());
            }
            Err(e) => {
                failed = true;
                println!("{}: ERROR {e}", f.display());
            }
        }
    }
    if failed { 75 } else { u8::from(found) }
}
