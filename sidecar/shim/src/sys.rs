//! The crate's only `unsafe` code: the thin layer over system calls that no
//! safe wrapper covers well enough (raw wait statuses, signal numbers that
//! are not in `nix`'s `Signal` enum, fds received over a socket, the pty
//! ioctls, the code that runs between `fork` and `exec`, and one allocator
//! setting).
//!
//! Everything else in the crate is safe Rust on top of these functions.

#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

/// How a child ended, as `waitpid` reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    Exited(i32),
    Signaled(i32),
}

/// Reaps one child that has ended, if any, without blocking.
///
/// `nix::sys::wait::waitpid` is not used because it turns the status into a
/// `Signal`, which fails for real-time signals *after* the child has been
/// reaped: the status would be lost.
pub(crate) fn reap_one() -> io::Result<Option<(i32, Ended)>> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is a valid, writable c_int for the whole call.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid == 0 {
            return Ok(None);
        }
        if pid < 0 {
            let error = io::Error::last_os_error();
            match error.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ECHILD) => return Ok(None),
                _ => return Err(error),
            }
        }
        let ended = if libc::WIFEXITED(status) {
            Ended::Exited(libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            Ended::Signaled(libc::WTERMSIG(status))
        } else {
            // Stopped/continued are only reported with WUNTRACED/WCONTINUED,
            // which are not asked for; skip anything else defensively.
            continue;
        };
        return Ok(Some((pid, ended)));
    }
}

/// Sends signal `sig` (any number, real-time ones included) to `pid`, or to
/// the process group `-pid` when `pid` is negative.
pub(crate) fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::kill(pid, sig) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sends `data` on a unix stream socket with `fds` attached (SCM_RIGHTS).
/// Returns how many bytes of `data` went out; the fds travel with the first
/// byte, so a short write still delivered them.
pub(crate) fn send_with_fds(
    socket: BorrowedFd<'_>,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let cmsgs = if raw.is_empty() {
        vec![]
    } else {
        vec![ControlMessage::ScmRights(&raw)]
    };
    let sent = sendmsg::<()>(
        socket.as_raw_fd(),
        &[IoSlice::new(data)],
        &cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(sent)
}

/// Most fds one message may carry (a spawn passes at most three).
pub(crate) const MAX_FDS_PER_MESSAGE: usize = 3;

/// Receives bytes from a unix stream socket, plus any fds attached to them.
/// The fds come back close-on-exec.
pub(crate) fn recv_with_fds(socket: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut cmsg_space = nix::cmsg_space!([RawFd; MAX_FDS_PER_MESSAGE]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg_space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            for fd in raw {
                // SAFETY: the kernel just installed `fd` in our table for this
                // message; nothing else knows about it, so we own it.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
    let bytes = msg.bytes;
    if truncated {
        // The kernel closed the fds that did not fit; the message is unusable.
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "too many fds attached to one message",
        ));
    }
    Ok((bytes, fds))
}

nix::ioctl_write_ptr_bad!(ioctl_tiocswinsz, libc::TIOCSWINSZ, libc::winsize);

/// Sets a terminal's window size (TIOCSWINSZ). On a pty master this also
/// sends SIGWINCH to the terminal's foreground process group.
pub(crate) fn set_window_size(tty: BorrowedFd<'_>, cols: u16, rows: u16) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: `size` is a valid winsize that outlives the call; TIOCSWINSZ
    // only reads it.
    unsafe { ioctl_tiocswinsz(tty.as_raw_fd(), &size) }?;
    Ok(())
}

/// What a spawned child does between `fork` and `exec`, prepared in full
/// beforehand: the closure must not allocate (the parent is multi-threaded,
/// so only async-signal-safe calls are allowed in the child).
#[derive(Debug, Default)]
pub(crate) struct ChildSetup {
    /// Start a new session (setsid), so the child leads its own process
    /// group and can take a controlling terminal.
    pub new_session: bool,
    /// Make stdin (the pty slave) the controlling terminal (TIOCSCTTY).
    pub controlling_tty: bool,
    /// Switch to this identity: (uid, gid, supplementary groups).
    pub identity: Option<(libc::uid_t, libc::gid_t, Vec<libc::gid_t>)>,
    /// Change to this directory *after* the identity switch, so the
    /// permission check is the target user's.
    pub cwd: Option<CString>,
}

/// Installs `setup` as `cmd`'s pre-exec hook.
pub(crate) fn install_child_setup(cmd: &mut Command, setup: ChildSetup) {
    let hook = move || -> io::Result<()> {
        // Everything below is a bare system call on data prepared before the
        // fork; `io::Error::last_os_error()` does not allocate.
        if setup.new_session {
            // SAFETY: setsid(2) has no memory-safety preconditions.
            if unsafe { libc::setsid() } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        if setup.controlling_tty {
            // SAFETY: fd 0 is the pty slave (std set up stdio before this
            // hook); TIOCSCTTY takes an integer argument.
            if unsafe { libc::ioctl(0, libc::TIOCSCTTY as _, 0) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        if let Some((uid, gid, groups)) = &setup.identity {
            // Order matters: groups and gid while still privileged, uid last.
            // SAFETY: `groups` is a live slice of gid_t of the given length.
            if unsafe { libc::setgroups(groups.len() as _, groups.as_ptr()) } < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: plain integer arguments.
            if unsafe { libc::setgid(*gid) } < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: plain integer argument.
            if unsafe { libc::setuid(*uid) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        if let Some(cwd) = &setup.cwd {
            // SAFETY: `cwd` is a NUL-terminated string that outlives the call.
            if unsafe { libc::chdir(cwd.as_ptr()) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the hook only makes async-signal-safe system calls on data
    // owned by the closure (no allocation, no locks), as `pre_exec` requires.
    unsafe { cmd.pre_exec(hook) };
}

/// Registers an owned fd with the tokio reactor.
pub(crate) fn register_async(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is open and always reports the same fd for as long
    // as it lives, and the AsyncFd owns it for its whole lifetime.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(io::Error::from)
}

/// Fixes glibc's mmap threshold at `bytes` (it no longer follows the
/// largest block freed). Call before other threads start.
pub(crate) fn fix_mmap_threshold(bytes: i32) {
    // SAFETY: mallopt only sets an allocator parameter; the caller runs it
    // before any other thread allocates.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, bytes);
    }
}
