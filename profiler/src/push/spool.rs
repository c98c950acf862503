//! The push queue on disk, so captures queued while the server was down are still
//! pushed after the profiler restarts. One JSON file, replaced atomically (written
//! next to it, then renamed) after every change.
use std::{
    collections::VecDeque,
    io,
    path::{Path, PathBuf},
};

use super::Capture;

/// A queued capture and its profiles still to send.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct Pending {
    pub capture: Capture,
    /// `*.pb.gz` files not yet accepted, in name order.
    pub files: Vec<PathBuf>,
}

/// The queue saved at `path`, without captures whose directory is gone (retention
/// removed them); empty if there is no file yet.
pub fn load(path: &Path) -> io::Result<VecDeque<Pending>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(VecDeque::new()),
        Err(e) => return Err(e),
    };
    let queue: VecDeque<Pending> =
        serde_json::from_str(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(queue
        .into_iter()
        .filter(|p| p.capture.dir.is_dir())
        .collect())
}

/// Replace the file at `path` with `queue`.
pub fn save(path: &Path, queue: &VecDeque<Pending>) -> io::Result<()> {
    let text = serde_json::to_string(queue).map_err(io::Error::other)?;
    let tmp: PathBuf = {
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".tmp");
        path.with_file_name(name)
    };
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}
