//! The log directory the workload's shim writes, as the sidecar reads it.
//!
//! The workload is untrusted: any of its processes, as any uid, may put a
//! symlink, a FIFO, a device node or a directory in the log directory, and
//! swap them while the sidecar looks. So the directory is opened once, at
//! the sidecar's start (before the workload runs, and on a read-only mount
//! of its own in the pod), and every file is resolved *beneath that handle*
//! with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS
//! | RESOLVE_NO_XDEV)`: no symlink at any depth, no `..`, no other mount.
//! Only single names are accepted, and only regular files are served.
//! Nothing here can name a file outside the directory.

use std::fs::{File, Metadata};
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{AT_FDCWD, OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{FileStat, Mode, SFlag, fstatat};

/// A regular file's name and metadata.
#[derive(Debug)]
pub struct LogEntry {
    pub name: String,
    pub meta: Metadata,
}

/// The log directory, held open.
#[derive(Debug)]
pub struct LogDir {
    fd: OwnedFd,
    path: PathBuf,
}

fn beneath() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH
        | ResolveFlag::RESOLVE_NO_SYMLINKS
        | ResolveFlag::RESOLVE_NO_MAGICLINKS
        | ResolveFlag::RESOLVE_NO_XDEV
}

/// A name that is one entry of the directory: not empty, no `/`, no NUL,
/// not `.` or `..`.
fn is_single_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

fn is_regular(stat: &FileStat) -> bool {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG
}

impl LogDir {
    /// Opens `path` (created if missing). No component of `path` may be a
    /// symlink: the handle is the directory itself.
    pub fn open(path: &Path) -> io::Result<Self> {
        if !path.exists() {
            std::fs::create_dir_all(path)?;
        }
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let fd = openat2(AT_FDCWD, path, how).map_err(|errno| {
            io::Error::new(
                io::Error::from(errno).kind(),
                format!("opening the log directory {}: {errno}", path.display()),
            )
        })?;
        Ok(Self {
            fd,
            path: path.to_owned(),
        })
    }

    /// The path it was opened at (for messages; never used to open files).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the regular file `name` directly in the directory, or `None`:
    /// no such name, not a single name, a symlink, a FIFO, a device, a
    /// directory. Never blocks (`O_NONBLOCK`), never follows a link.
    pub fn open_file(&self, name: &str) -> Option<(File, Metadata)> {
        if !is_single_name(name) {
            return None;
        }
        // Look before opening, so a device or FIFO is never opened...
        let stat = fstatat(&self.fd, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).ok()?;
        if !is_regular(&stat) {
            return None;
        }
        let how = OpenHow::new()
            .flags(
                OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
            )
            .mode(Mode::empty())
            .resolve(beneath());
        let file = File::from(openat2(&self.fd, name, how).ok()?);
        // ...and check what was opened: the name may have been swapped in
        // between.
        let meta = file.metadata().ok()?;
        meta.is_file().then_some((file, meta))
    }

    /// The regular files in the directory whose names are UTF-8 and do not
    /// start with `.`, sorted by name.
    pub fn entries(&self) -> Vec<LogEntry> {
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(beneath());
        let Ok(fd) = openat2(&self.fd, ".", how) else {
            return Vec::new();
        };
        let Ok(mut dir) = nix::dir::Dir::from_fd(fd) else {
            return Vec::new();
        };
        let mut entries: Vec<LogEntry> = dir
            .iter()
            .filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().to_str().ok().map(String::from))
            .filter(|name| !name.starts_with('.'))
            .filter_map(|name| {
                let (_, meta) = self.open_file(&name)?;
                Some(LogEntry { name, meta })
            })
            .collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> (tempfile::TempDir, LogDir) {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("log");
        std::fs::create_dir(&log).unwrap();
        std::fs::write(log.join("stdout.txt"), "out\n").unwrap();
        let dir = LogDir::open(&log).unwrap();
        (tmp, dir)
    }

    #[test]
    fn regular_files_open_and_list() {
        let (_tmp, dir) = dir();
        let (_, meta) = dir.open_file("stdout.txt").unwrap();
        assert_eq!(meta.len(), 4);
        let names: Vec<_> = dir.entries().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["stdout.txt"]);
    }

    #[test]
    fn symlinks_fifos_directories_and_paths_never_open() {
        let (tmp, dir) = dir();
        let secret = tmp.path().join("secret");
        std::fs::create_dir(&secret).unwrap();
        std::fs::write(secret.join("ctr_key"), "KEY").unwrap();
        let log = dir.path().to_owned();
        std::os::unix::fs::symlink(secret.join("ctr_key"), log.join("key.txt")).unwrap();
        std::os::unix::fs::symlink(&secret, log.join("sub")).unwrap();
        std::os::unix::fs::symlink("..", log.join("up")).unwrap();
        std::fs::create_dir(log.join("real")).unwrap();
        std::fs::write(log.join("real/inner.txt"), "x").unwrap();
        nix::unistd::mkfifo(&log.join("fifo.txt"), Mode::from_bits_truncate(0o644)).unwrap();
        for name in [
            "key.txt",
            "sub/ctr_key",
            "up/secret/ctr_key",
            "../secret/ctr_key",
            "real/inner.txt",
            "real",
            "fifo.txt",
            "",
            ".",
            "..",
            "/etc/passwd",
            "stdout.txt\0",
        ] {
            assert!(dir.open_file(name).is_none(), "{name:?} opened");
        }
        let names: Vec<_> = dir.entries().into_iter().map(|e| e.name).collect();
        assert_eq!(names, ["stdout.txt"]);
    }

    #[test]
    fn the_handle_outlives_a_rename_of_the_directory() {
        let (tmp, dir) = dir();
        // The workload moves the directory away and plants a symlink to a
        // secret in its place: the handle still reads the original.
        let secret = tmp.path().join("secret");
        std::fs::create_dir(&secret).unwrap();
        std::fs::write(secret.join("stdout.txt"), "KEY").unwrap();
        std::fs::rename(dir.path(), tmp.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&secret, tmp.path().join("log")).unwrap();
        let (mut file, _) = dir.open_file("stdout.txt").unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut file, &mut text).unwrap();
        assert_eq!(text, "out\n");
    }

    #[test]
    fn a_symlinked_directory_is_refused_at_open() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("real")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("real"), tmp.path().join("log")).unwrap();
        let error = LogDir::open(&tmp.path().join("log")).unwrap_err();
        assert!(error.to_string().contains("opening the log directory"), "{error}");
    }
}
