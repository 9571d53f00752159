//! Watches for the workload's end: the shim writes its exit code to
//! `exit-code` in the shared log directory, and the gateway reports it (the
//! sidecar has no Kubernetes credentials to write it into the status).

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::report::Reporter;

/// The file the shim writes.
pub const EXIT_CODE_FILE: &str = "exit-code";

/// Reads the exit code if the shim wrote it. The directory is shared with
/// the workload, so the file is opened without following symlinks and only
/// a short integer is accepted.
pub fn read_exit_code(log_dir: &Path) -> Option<i32> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(log_dir.join(EXIT_CODE_FILE))
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    file.take(16).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Polls for the exit code every `interval` until it appears.
pub async fn watch(log_dir: PathBuf, reporter: Arc<Reporter>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        let dir = log_dir.clone();
        if let Ok(Some(code)) = tokio::task::spawn_blocking(move || read_exit_code(&dir)).await {
            reporter.set_exit_code(code);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_code_file_is_read_strictly() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_exit_code(dir.path()), None);
        std::fs::write(dir.path().join(EXIT_CODE_FILE), "137\n").unwrap();
        assert_eq!(read_exit_code(dir.path()), Some(137));
        std::fs::write(dir.path().join(EXIT_CODE_FILE), "secret-key-material").unwrap();
        assert_eq!(read_exit_code(dir.path()), None);
        std::fs::remove_file(dir.path().join(EXIT_CODE_FILE)).unwrap();
        std::fs::write(dir.path().join("target"), "5\n").unwrap();
        std::os::unix::fs::symlink(dir.path().join("target"), dir.path().join(EXIT_CODE_FILE)).unwrap();
        assert_eq!(read_exit_code(dir.path()), None, "symlinks are not followed");
    }
}
