//! The socket an `ssh -A` session finds in `SSH_AUTH_SOCK`.
//!
//! As sshd does: a fresh directory (`mkdtemp`, mode 0700) under `/tmp`,
//! owned by the session's user, with `agent.sock` in it. The shim binds it
//! and hands the listening fd to the gateway, which relays every connection
//! to the client's agent over an `auth-agent@openssh.com` channel. The
//! directory's mode is the boundary: only that user and root can connect.
//!
//! The workload is not trusted: once the directory belongs to the session's
//! user, that user may rename it, replace it with a symlink, or swap
//! `agent.sock` for anything. Removal therefore never walks a path: the
//! socket is unlinked relative to the directory's own fd, and the directory
//! relative to `/tmp`'s fd (`rmdir` of a symlink fails).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag, open};
use nix::sys::stat::{Mode, SFlag, fstat, fstatat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, mkdtemp, unlinkat};

/// The socket's name inside its directory.
pub(crate) const SOCKET_NAME: &str = "agent.sock";
/// The directory's name before `mkdtemp` fills in the X's.
const TEMPLATE: &str = "hatchway-agent-XXXXXXXXXX";

/// A bound agent socket; removed (socket and directory) when dropped.
#[derive(Debug)]
pub(crate) struct AgentSocket {
    /// The listening socket, for the gateway.
    pub listener: OwnedFd,
    /// Its path, for `SSH_AUTH_SOCK`.
    pub path: String,
    /// Removes both when the session ends.
    pub made: Made,
}

impl AgentSocket {
    /// Makes the directory under `base` and binds the socket in it; with
    /// `owner`, both then belong to that uid and gid.
    pub fn create(base: &Path, owner: Option<(u32, u32)>) -> io::Result<Self> {
        let base_fd = open(
            base,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| context(e.into(), format!("opening {}", base.display())))?;
        let path = mkdtemp(&base.join(TEMPLATE))
            .map_err(|e| context(e.into(), format!("making a directory in {}", base.display())))?;
        let mut made = Made {
            base: base_fd,
            name: PathBuf::from(path.file_name().expect("mkdtemp names a file")),
            dir: None,
        };
        // Only this uid (or root) could have swapped the fresh 0700
        // directory in the meantime; O_NOFOLLOW and the owner check make
        // sure the handle is a directory of ours, not a link to another.
        let dir = open(
            &path,
            OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| context(e.into(), format!("opening {}", path.display())))?;
        let stat = fstat(&dir)?;
        if stat.st_uid != nix::unistd::geteuid().as_raw() || stat.st_mode & 0o7777 != 0o700 {
            return Err(io::Error::other(format!(
                "{} changed under the shim (uid {}, mode {:o})",
                path.display(),
                stat.st_uid,
                stat.st_mode & 0o7777
            )));
        }
        let dir = made.dir.insert(dir);

        let socket_path = path.join(SOCKET_NAME);
        let listener = std::os::unix::net::UnixListener::bind(&socket_path)
            .map_err(|e| context(e, format!("binding {}", socket_path.display())))?;
        // The bind walked a path: the socket must be in the directory
        // held, or the directory was swapped after it was opened.
        let bound = fstatat(&*dir, SOCKET_NAME, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| context(e.into(), format!("{} moved while binding", path.display())))?;
        if SFlag::from_bits_truncate(bound.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
            return Err(io::Error::other(format!(
                "{} is not the socket just bound",
                socket_path.display()
            )));
        }
        if let Some((uid, gid)) = owner {
            let (uid, gid) = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
            fchownat(&*dir, SOCKET_NAME, uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW)?;
            fchown(&*dir, uid, gid)?;
        }
        Ok(Self {
            listener: listener.into(),
            path: socket_path.to_string_lossy().into_owned(),
            made,
        })
    }
}

/// What [`AgentSocket::create`] made; removed when dropped, whether the
/// socket was handed out or its creation failed half way.
#[derive(Debug)]
pub(crate) struct Made {
    /// The parent directory (`/tmp`).
    base: OwnedFd,
    /// The directory's name in it.
    name: PathBuf,
    dir: Option<OwnedFd>,
}

impl Drop for Made {
    /// Unlinks the socket through the directory's fd and the directory
    /// through its parent's: no path the workload can redirect is walked.
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = unlinkat(dir.as_fd(), SOCKET_NAME, UnlinkatFlags::NoRemoveDir);
        }
        let _ = unlinkat(self.base.as_fd(), self.name.as_path(), UnlinkatFlags::RemoveDir);
    }
}

fn context(error: io::Error, what: String) -> io::Error {
    io::Error::new(error.kind(), format!("{what}: {error}"))
}
