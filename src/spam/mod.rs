//! Spam scoring: the message as the rules see it ([`view`]), the rules
//! engine ([`rules`]: the format of `rules/`, with `.test` fixtures), two
//! classifiers learned from the site's own mail with `sluice learn` and
//! kept in one model file (the token counts of [`bayes`], Robinson/Fisher
//! as in SpamAssassin and SpamBayes, over [`tokenize`]'s tokens; and
//! [`ngram`], a logistic regression over octet 4-grams), SPF/DKIM/DMARC
//! ([`auth`]), and the score -> action per recipient domain with hot
//! reload ([`filter`]). [`learn`] changes the model file under a lock,
//! [`eval`] cross-validates the whole score.

pub mod auth;
pub mod bayes;
pub mod corpus;
pub mod eval;
pub mod filter;
pub mod learn;
pub mod ngram;
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
/// ([`corpus::each_message`]: Maildirs, directories, mbox files, `-`) to
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
    let mut batch = Vec::new();
    for (paths, is_spam) in [(spam, true), (ham, false)] {
        for p in paths {
            corpus::each_message(p, |raw| {
                learn_message(model, &raw, is_spam, forget, part_text, &mut batch);
                if is_spam {
                    read.0 += 1;
                } else {
                    read.1 += 1;
                }
                Ok(())
            })
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
        }
    }
    finish_batch(model, &batch, forget);
    Ok(read)
}

/// Counts one message into (or out of) the Bayes model and keeps its
/// n-gram features for [`finish_batch`]: the n-gram classifier learns a
/// batch as a whole, spam and ham interleaved, and only one with enough of
/// both ([`ngram::MIN_EACH`]).
pub fn learn_message(
    model: &mut bayes::Model,
    raw: &[u8],
    spam: bool,
    forget: bool,
    part_text: usize,
    batch: &mut Vec<(ngram::Packed, bool)>,
) {
    let tokens = tokenize::tokens_upto(raw, part_text);
    if forget {
        model.forget(&tokens, spam);
    } else {
        model.learn(&tokens, spam);
    }
    batch.push((ngram::Features::of(raw).pack(), spam));
}

/// Lets the n-gram classifier learn (or forget) the batch [`learn_message`]
/// gathered; returns whether its weights changed (not for a batch with
/// fewer than [`ngram::MIN_EACH`] of either class).
pub fn finish_batch(model: &mut bayes::Model, batch: &[(ngram::Packed, bool)], forget: bool) -> bool {
    if forget {
        model.ngram_mut().untrain(batch)
    } else {
        model.ngram_mut().train(batch)
    }
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
