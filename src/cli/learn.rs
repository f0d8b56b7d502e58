//! `sluice learn`: train the classifier, or `--cross-validate K`.

use std::path::PathBuf;

use sluice::config::Config;

pub(crate) fn learn(spam: &[PathBuf], ham: &[PathBuf], out: &std::path::Path, min_count: u32) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let model = sluice::spam::learn_dirs(spam, ham).context("reading the training mail")?;
    let tmp = out.with_extension("tmp");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp).with_context(|| format!("{}", tmp.display()))?);
    model.save(&mut w, min_count)?;
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, out).with_context(|| format!("{}", out.display()))?;
    println!(
        "{}: {} spam, {} ham, {} tokens",
        out.display(),
        model.nspam(),
        model.nham(),
        model.len()
    );
    Ok(())
}

/// `sluice learn --cross-validate K`: the report of [`sluice::spam::eval`],
/// with each directory as a group.
pub(crate) fn cross_validate(config: &Config, spam: &[PathBuf], ham: &[PathBuf], k: usize) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let mut cfg = config.spam.clone().unwrap_or_default();
    cfg.bayes_model = None;
    cfg.auth = false;
    let threshold = cfg.default.required().unwrap_or(5.0);
    let filter = sluice::spam::filter::SpamFilter::new(cfg, None)?;
    let mut samples = Vec::new();
    for (dirs, is_spam) in [(spam, true), (ham, false)] {
        for dir in dirs {
            let group = dir
                .file_name()
                .map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned());
            for f in sluice::spam::message_files(dir).with_context(|| format!("{}", dir.display()))? {
                let raw = std::fs::read(&f).with_context(|| format!("{}", f.display()))?;
                samples.push(sluice::spam::eval::Sample {
                    name: f.display().to_string(),
                    raw,
                    group: group.clone(),
                    spam: is_spam,
                });
            }
        }
    }
    // Fold = index mod K, so every fold has some of each directory.
    let scores = sluice::spam::eval::cross_validate(&filter, &samples, k, true);
    Ok(format!(
        "{k}-fold cross-validation of {} messages\n\n{}\n{}",
        samples.len(),
        scores.report(threshold),
        scores.mistakes(threshold)
    ))
}
