//! `sluice learn`: train the classifier (from nothing, or adding to the
//! model file as `sa-learn` does, or `--forget`ting messages), or
//! `--cross-validate K`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sluice::config::Config;
use sluice::spam::bayes::{MIN_MESSAGES, Model};

pub(crate) struct LearnOpts {
    pub spam: Vec<PathBuf>,
    pub ham: Vec<PathBuf>,
    pub out: PathBuf,
    pub rebuild: bool,
    pub forget: bool,
    pub min_count: u32,
}

/// Learns (or forgets) the messages and writes the model. The model file
/// is locked while it is read, changed and replaced, so two learns at once
/// (an IMAPSieve script per moved message) both count.
pub(crate) fn learn(o: &LearnOpts) -> anyhow::Result<()> {
    let lock_path = o.out.with_extension("lock");
    // Another user's lock file is locked through a read-only handle.
    let lock = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&lock_path)
        .or_else(|_| std::fs::File::open(&lock_path))
        .with_context(|| format!("{}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    let existing = !o.rebuild && o.out.exists();
    let mut model = if existing {
        let f = std::fs::File::open(&o.out).with_context(|| format!("{}", o.out.display()))?;
        Model::load(&mut std::io::BufReader::new(f)).with_context(|| format!("{}", o.out.display()))?
    } else {
        Model::new()
    };
    if o.forget && !existing {
        anyhow::bail!("--forget: there is no model at {} to forget from", o.out.display());
    }
    let (nspam, nham) =
        sluice::spam::learn_paths(&mut model, &o.spam, &o.ham, o.forget).context("reading the training mail")?;
    if nspam + nham == 0 {
        let given: Vec<String> = o.spam.iter().chain(&o.ham).map(|p| p.display().to_string()).collect();
        anyhow::bail!("no messages found in {}; nothing learned", given.join(", "));
    }
    let short = model.nspam() < MIN_MESSAGES || model.nham() < MIN_MESSAGES;
    if short && !existing {
        anyhow::bail!(
            "too few messages to train on: {} spam and {} ham; the classifier needs at least {MIN_MESSAGES} of each \
             (and does better with hundreds). Nothing written.",
            model.nspam(),
            model.nham()
        );
    }
    save(&model, &o.out, o.min_count)?;
    let verb = if o.forget { "forgot" } else { "learned" };
    println!(
        "{}: {verb} {nspam} spam and {nham} ham; the model has {} spam, {} ham, {} tokens",
        o.out.display(),
        model.nspam(),
        model.nham(),
        model.len()
    );
    if short {
        println!("the classifier does not vote until it has learned {MIN_MESSAGES} spam and {MIN_MESSAGES} ham");
    }
    Ok(())
}

/// Writes `model` to `out` through a temporary file (a running daemon
/// sees the old file or the new one, never half of one).
fn save(model: &Model, out: &Path, min_count: u32) -> anyhow::Result<()> {
    let tmp = out.with_extension("tmp");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp).with_context(|| format!("{}", tmp.display()))?);
    model.save(&mut w, min_count)?;
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, out).with_context(|| format!("{}", out.display()))?;
    Ok(())
}

/// `sluice learn --cross-validate K`: the report of [`sluice::spam::eval`],
/// with each directory as a group.
pub(crate) fn cross_validate(config: &Config, spam: &[PathBuf], ham: &[PathBuf], k: usize) -> anyhow::Result<String> {
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
