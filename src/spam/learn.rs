//! Changing the model file: `sluice learn` and the daemon's `learn`
//! request share this. The file is locked (`<model>.lock`) while it is
//! read, changed and replaced, so learns at once (an IMAPSieve script per
//! moved message, the daemon) all count; it is replaced through a
//! temporary file, so a reader sees the old model or the new one.

use std::path::{Path, PathBuf};

use super::bayes::{BayesError, MIN_MESSAGES, Model};

#[derive(Debug, thiserror::Error)]
pub enum LearnError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {source}", path.display())]
    Model { path: PathBuf, source: BayesError },
    #[error("--forget: there is no model at {} to forget from", .0.display())]
    NothingToForget(PathBuf),
    #[error("no messages given; nothing learned")]
    NoMessages,
    #[error(
        "too few messages to train on: {spam} spam and {ham} ham; the classifier needs at least {MIN_MESSAGES} of each \
         (and does better with hundreds). Nothing written."
    )]
    TooFew { spam: u32, ham: u32 },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LearnError + '_ {
    move |source| LearnError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What one update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Learned {
    /// Messages read, spam and ham.
    pub spam: usize,
    pub ham: usize,
    /// The model file existed (and was added to).
    pub existed: bool,
}

/// Reads the model at `path` (or starts from nothing: `rebuild`, or no
/// file), lets `change` learn or forget messages (it returns how many spam
/// and ham it read), and writes the result, keeping tokens seen at least
/// `min_count` times. A new model below the minimum is refused.
pub fn update(
    path: &Path,
    rebuild: bool,
    forget: bool,
    min_count: u32,
    change: impl FnOnce(&mut Model) -> std::io::Result<(usize, usize)>,
) -> Result<(Learned, Model), LearnError> {
    let lock_path = path.with_extension("lock");
    // Another user's lock file is locked through a read-only handle.
    let lock = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&lock_path)
        .or_else(|_| std::fs::File::open(&lock_path))
        .map_err(io(&lock_path))?;
    lock.lock().map_err(io(&lock_path))?;
    let existed = !rebuild && path.exists();
    let mut model = if existed {
        let f = std::fs::File::open(path).map_err(io(path))?;
        Model::load(&mut std::io::BufReader::new(f)).map_err(|source| LearnError::Model {
            path: path.to_path_buf(),
            source,
        })?
    } else {
        Model::new()
    };
    if forget && !existed {
        return Err(LearnError::NothingToForget(path.to_path_buf()));
    }
    let (spam, ham) = change(&mut model).map_err(io(path))?;
    if spam + ham == 0 {
        return Err(LearnError::NoMessages);
    }
    if !existed && (model.nspam() < MIN_MESSAGES || model.nham() < MIN_MESSAGES) {
        return Err(LearnError::TooFew {
            spam: model.nspam(),
            ham: model.nham(),
        });
    }
    save(&model, path, min_count)?;
    Ok((Learned { spam, ham, existed }, model))
}

/// Writes `model` to `path` through a temporary file.
fn save(model: &Model, path: &Path, min_count: u32) -> Result<(), LearnError> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    let mut w = std::io::BufWriter::new(f);
    model.save(&mut w, min_count).map_err(io(&tmp))?;
    w.flush().map_err(io(&tmp))?;
    let f = w.into_inner().map_err(|e| io(&tmp)(e.into_error()))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}
