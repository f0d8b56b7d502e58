//! Spam scoring (issue 6, being built). So far: the tokenizer and the
//! statistical classifier (Bayes-style, Robinson/Fisher as in SpamAssassin
//! and SpamBayes), trained with `sluice learn --spam DIR --ham DIR`, and the
//! rules engine ([`rules`]: the format of `rules/`, compiled into one
//! RegexSet per rule kind, with `.test` fixtures). Not yet wired into the
//! verdict: the default rule set, SPF/DKIM/DMARC, the message view built
//! from our MIME decoding, and the actions come next.

pub mod auth;
pub mod bayes;
pub mod eval;
pub mod filter;
pub mod rules;
pub mod tokenize;
pub mod view;

use std::path::{Path, PathBuf};

/// The files of `dir` (not recursive), sorted; hidden files are skipped.
pub fn message_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let hidden = e.file_name().to_string_lossy().starts_with('.');
        if !hidden && e.file_type()?.is_file() {
            files.push(e.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Trains a model on every file in the spam and ham directories.
pub fn learn_dirs(spam: &[PathBuf], ham: &[PathBuf]) -> std::io::Result<bayes::Model> {
    let mut model = bayes::Model::new();
    for (dirs, is_spam) in [(spam, true), (ham, false)] {
        for dir in dirs {
            for f in message_files(dir)? {
                let raw = std::fs::read(&f)?;
                model.learn(&tokenize::tokens(&raw), is_spam);
            }
        }
    }
    Ok(model)
}

/// The shared test corpora for unit tests: `$SLUICE_CORPORA`, else
/// `../shared/corpora` beside the checkout, else `/work/shared/corpora` (as
/// the integration tests' `util::corpora`).
#[cfg(test)]
pub(crate) fn test_corpora() -> std::path::PathBuf {
    use std::path::PathBuf;
    [
        std::env::var_os("SLUICE_CORPORA").map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpora")),
        Some(PathBuf::from("/work/shared/corpora")),
    ]
    .into_iter()
    .flatten()
    .find(|p| p.join("README.md").is_file())
    .expect("test corpora not found: set SLUICE_CORPORA")
}
