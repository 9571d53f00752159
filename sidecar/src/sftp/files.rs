//! Opening, changing and renaming files for SFTP requests.

use std::fs::{File, FileTimes, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use russh_sftp::protocol::{FileAttributes, OpenFlags};

/// What `SSH_FXP_OPEN`'s flags ask of `open(2)`.
pub(super) fn open_options(flags: OpenFlags, mode: u32) -> OpenOptions {
    let write = flags.contains(OpenFlags::WRITE);
    let append = flags.contains(OpenFlags::APPEND);
    let mut options = OpenOptions::new();
    // A request with no access flag at all still gets a readable file, as
    // `O_RDONLY` is zero in OpenSSH's mapping.
    options
        .read(flags.contains(OpenFlags::READ) || !(write || append))
        .write(write)
        .append(append)
        .mode(mode);
    if flags.contains(OpenFlags::CREATE) {
        if flags.contains(OpenFlags::EXCLUDE) {
            options.create_new(true);
        } else {
            options.create(true);
        }
    }
    if flags.contains(OpenFlags::TRUNCATE) {
        options.truncate(true);
    }
    options
}

/// Where `SSH_FXP_SETSTAT` or `SSH_FXP_FSETSTAT` applies.
pub(super) enum Target {
    Path(PathBuf),
    File(Arc<File>),
}

/// Applies size, permissions, times and owner, in the order OpenSSH's
/// server does (a chown may drop setuid bits a chmod just set, so the
/// order is visible).
pub(super) fn set_attributes(target: &Target, attrs: &FileAttributes) -> io::Result<()> {
    if let Some(size) = attrs.size {
        let size = i64::try_from(size).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        match target {
            Target::Path(path) => nix::unistd::truncate(path, size)?,
            Target::File(file) => file.set_len(size as u64)?,
        }
    }
    if let Some(mode) = attrs.permissions {
        let permissions = Permissions::from_mode(mode & 0o7777);
        match target {
            Target::Path(path) => std::fs::set_permissions(path, permissions)?,
            Target::File(file) => file.set_permissions(permissions)?,
        }
    }
    if attrs.atime.is_some() || attrs.mtime.is_some() {
        let time = |t: Option<u32>| UNIX_EPOCH + Duration::from_secs(t.unwrap_or(0).into());
        let times = FileTimes::new()
            .set_accessed(time(attrs.atime))
            .set_modified(time(attrs.mtime));
        match target {
            Target::Path(path) => {
                let spec = |t: Option<u32>| nix::sys::time::TimeSpec::new(t.unwrap_or(0).into(), 0);
                nix::sys::stat::utimensat(
                    nix::fcntl::AT_FDCWD,
                    path,
                    &spec(attrs.atime),
                    &spec(attrs.mtime),
                    nix::sys::stat::UtimensatFlags::FollowSymlink,
                )?
            }
            Target::File(file) => file.set_times(times)?,
        }
    }
    if attrs.uid.is_some() || attrs.gid.is_some() {
        match target {
            Target::Path(path) => std::os::unix::fs::chown(path, attrs.uid, attrs.gid)?,
            Target::File(file) => std::os::unix::fs::fchown(&**file, attrs.uid, attrs.gid)?,
        }
    }
    Ok(())
}

/// SFTP v3 rename: fails when the new name exists (unlike `rename(2)`;
/// clients that want replacing use `posix-rename@openssh.com`).
pub(super) fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        // A filesystem without RENAME_NOREPLACE: check, then rename (racy,
        // but the best such a filesystem allows).
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) => {
            if std::fs::symlink_metadata(to).is_ok() {
                return Err(io::Error::from_raw_os_error(libc::EEXIST));
            }
            std::fs::rename(from, to)
        }
        Err(errno) => Err(errno.into()),
    }
}

/// Reads at `offset` until `buf` is full or the file ends: one short read
/// would cost the client another round trip.
pub(super) fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}
