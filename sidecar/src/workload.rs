//! Watches for the workload's end: the shim writes its exit code to
//! `exit-code` in the shared log directory, and the gateway reports it (the
//! sidecar has no Kubernetes credentials to write it into the status).

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use hatchway_api::pod::log_file;

use crate::logdir::LogDir;
use crate::report::Reporter;

/// Reads the exit code if the shim wrote it. The directory is shared with
/// the workload, so the file is resolved beneath the held directory without
/// following any symlink, and only a short integer is accepted.
pub fn read_exit_code(log_dir: &LogDir) -> Option<i32> {
    let (file, _) = log_dir.open_file(log_file::EXIT_CODE)?;
    let mut text = String::new();
    file.take(16).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Polls for the exit code every `interval` until it appears.
pub async fn watch(log_dir: Arc<LogDir>, reporter: Arc<Reporter>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        let dir = Arc::clone(&log_dir);
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
        let log = LogDir::open(dir.path()).unwrap();
        assert_eq!(read_exit_code(&log), None);
        std::fs::write(dir.path().join(log_file::EXIT_CODE), "137\n").unwrap();
        assert_eq!(read_exit_code(&log), Some(137));
        std::fs::write(dir.path().join(log_file::EXIT_CODE), "secret-key-material").unwrap();
        assert_eq!(read_exit_code(&log), None);
        std::fs::remove_file(dir.path().join(log_file::EXIT_CODE)).unwrap();
        std::fs::write(dir.path().join("target"), "5\n").unwrap();
        std::os::unix::fs::symlink(dir.path().join("target"), dir.path().join(log_file::EXIT_CODE)).unwrap();
        assert_eq!(read_exit_code(&log), None, "symlinks are not followed");
    }
}
