//! `sluice learn`: train the classifier (from nothing, or adding to the
//! model file as `sa-learn` does, or `--forget`ting messages), or
//! `--cross-validate K`.

use std::path::PathBuf;

use anyhow::Context as _;
use sluice::config::Config;
use sluice::spam::bayes::Model;

pub(crate) struct LearnOpts {
    pub spam: Vec<PathBuf>,
    pub ham: Vec<PathBuf>,
    pub out: PathBuf,
    pub rebuild: bool,
    pub forget: bool,
    pub min_count: u32,
    /// `spam.part_scan_size` of the configuration, if one was given.
    pub part_text: usize,
    /// `spam.bayes_min_messages` of the configuration, if one was given.
    pub min_messages: u32,
}

/// Learns (or forgets) the messages and writes the model file
/// ([`sluice::spam::learn::update`]).
pub(crate) fn learn(o: &LearnOpts) -> anyhow::Result<()> {
    // A batch the n-gram classifier learns (or forgets) always changes its counts.
    let mut ngram_before = None;
    let (done, model) = sluice::spam::learn::update(&o.out, o.rebuild, o.forget, o.min_count, |model| {
        ngram_before = Some(model.ngram().counts());
        sluice::spam::learn_paths(model, &o.spam, &o.ham, o.forget, o.part_text)
    })
    .map_err(|e| match e {
        sluice::spam::learn::LearnError::NoMessages => {
            let given: Vec<String> = o.spam.iter().chain(&o.ham).map(|p| p.display().to_string()).collect();
            anyhow::anyhow!("no messages found in {}; nothing learned", given.join(", "))
        }
        e => anyhow::Error::from(e),
    })?;
    report(&o.out.display().to_string(), o.forget, done, &model, o.min_messages);
    let (ns, nh) = model.ngram().counts();
    if ngram_before == Some((ns, nh)) {
        println!(
            "the n-gram classifier ({ns} spam, {nh} ham) is left as it was: it learns only from runs with at least {n} \
             spam and {n} ham (e.g. a nightly `sluice learn --rebuild --spam Maildir/.Junk --ham Maildir`)",
            n = sluice::spam::ngram::MIN_EACH
        );
    } else {
        println!("the n-gram classifier has learned {ns} spam and {nh} ham");
    }
    Ok(())
}

/// `sluice learn --daemon`: each message to the running daemon, which
/// learns it into its model file and uses the new model at once.
pub(crate) async fn via_daemon(config: &Config, spam: &[PathBuf], ham: &[PathBuf], forget: bool) -> anyhow::Result<()> {
    use sluice::app::DaemonAnswer;
    let mut last = None;
    let mut sent = (0, 0);
    for (paths, is_spam) in [(spam, true), (ham, false)] {
        for p in paths {
            for message in sluice::spam::corpus::read_messages(p).with_context(|| format!("{}", p.display()))? {
                let socket = sluice::app::daemon_socket(config);
                match sluice::app::request_learn(config, is_spam, forget, message)
                    .await
                    .with_context(|| format!("cannot reach the daemon at {}", socket.display()))?
                {
                    DaemonAnswer::Learned { nspam, nham, tokens } => last = Some((nspam, nham, tokens)),
                    DaemonAnswer::Error(e) => anyhow::bail!("the daemon did not learn it: {e}"),
                    other => anyhow::bail!("unexpected answer from the daemon: {other:?}"),
                }
                if is_spam {
                    sent.0 += 1;
                } else {
                    sent.1 += 1;
                }
            }
        }
    }
    let Some((nspam, nham, tokens)) = last else {
        anyhow::bail!("no messages found; nothing learned");
    };
    let verb = if forget { "forgot" } else { "learned" };
    println!(
        "daemon: {verb} {} spam and {} ham; the model in use has {nspam} spam, {nham} ham, {tokens} tokens",
        sent.0, sent.1
    );
    println!(
        "(one message at a time: the token counts only; the n-gram classifier learns from `sluice learn` runs of at \
         least {n} spam and {n} ham)",
        n = sluice::spam::ngram::MIN_EACH
    );
    Ok(())
}

/// What a learn did, as the admin reads it.
fn report(what: &str, forget: bool, done: sluice::spam::learn::Learned, model: &Model, min: u32) {
    let verb = if forget { "forgot" } else { "learned" };
    println!(
        "{what}: {verb} {} spam and {} ham; the model has {} spam, {} ham, {} tokens",
        done.spam,
        done.ham,
        model.nspam(),
        model.nham(),
        model.len()
    );
    if model.nspam() < min || model.nham() < min {
        println!("the classifier does not vote until it has learned {min} spam and {min} ham");
    }
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
