//! Spam scoring (issue 6, being built). So far: the tokenizer and the
//! statistical classifier (Bayes-style, Robinson/Fisher as in SpamAssassin
//! and SpamBayes), trained with `sluice learn --spam DIR --ham DIR`, and the
//! rules engine ([`rules`]: the format of `rules/`, compiled into one
//! RegexSet per rule kind, with `.test` fixtures). Not yet wired into the
//! verdict: the default rule set, SPF/DKIM/DMARC, the message view built
//! from our MIME decoding, and the actions come next.

pub mod auth;
pub mod bayes;
pub mod corpus;
pub mod eval;
pub mod filter;
pub mod learn;
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
    learn_paths(&mut model, spam, ham, false, tokenize::PART_TEXT)?;
    Ok(model)
}

/// Adds (or, `forget`, takes back) the messages under `spam` and `ham`
/// ([`corpus::read_messages`]: Maildirs, directories, mbox files, `-`) to
/// `model`, reading at most `part_text` octets of each text part
/// (`spam.part_scan_size`); returns how many spam and ham messages were read.
pub fn learn_paths(
    model: &mut bayes::Model,
    spam: &[PathBuf],
    ham: &[PathBuf],
    forget: bool,
    part_text: usize,
) -> std::io::Result<(usize, usize)> {
    let mut read = (0, 0);
    for (paths, is_spam) in [(spam, true), (ham, false)] {
        for p in paths {
            for raw in
                corpus::read_messages(p).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display())))?
            {
                let tokens = tokenize::tokens_upto(&raw, part_text);
                if forget {
                    model.forget(&tokens, is_spam);
                } else {
                    model.learn(&tokens, is_spam);
                }
                if is_spam {
                    read.0 += 1;
                } else {
                    read.1 += 1;
                }
            }
        }
    }
    Ok(read)
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
