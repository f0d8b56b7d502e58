//! The plain-file export, for other tools: the banned networks, one CIDR
//! per line, at `firewall.file`, and the bans with their evidence as JSON
//! at the same path plus `.json`. In dry run the decisions are exported,
//! for other tools to judge.

use std::path::{Path, PathBuf};

use super::engine::Ban;
use super::export::{ExportError, Exporter};

pub struct FileExporter {
    pub path: PathBuf,
}

impl Exporter for FileExporter {
    fn name(&self) -> &'static str {
        "file"
    }

    fn snapshot(&self, bans: &[&Ban]) -> Result<(), ExportError> {
        let list: String = bans.iter().map(|b| format!("{}\n", b.net)).collect();
        write_atomically(&self.path, list.as_bytes())?;
        let mut json = self.path.as_os_str().to_owned();
        json.push(".json");
        write_atomically(Path::new(&json), &serde_json::to_vec_pretty(bans).unwrap_or_default())
    }
}

/// Writes a temporary file beside `path`, syncs it and renames it over
/// `path`: readers see the old or the new content, never a part.
pub(super) fn write_atomically(path: &Path, data: &[u8]) -> Result<(), ExportError> {
    use std::io::Write as _;
    let write = || -> std::io::Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(tmp, path)
    };
    write().map_err(|source| ExportError::Write {
        path: path.display().to_string(),
        source,
    })
}
