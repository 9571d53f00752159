//! Hatchway's SFTP server: SFTP version 3 over the local filesystem, spoken
//! on standard input and output (`hatchway-sidecar sftp-server`).
//!
//! The gateway serves the SSH `sftp` subsystem by asking the workload's shim
//! to start this command inside the workload container, because workload
//! images rarely ship an sftp-server of their own. The shim has already
//! switched to the session's user and working directory (the user's home),
//! so files are read and written with that user's rights and no other
//! restriction: it is the user's own container. Relative paths are relative
//! to that directory.
//!
//! Besides the version 3 requests it speaks the OpenSSH extensions that
//! OpenSSH's `sftp` and `scp` use when a server offers them: `posix-rename`,
//! `hardlink`, `fsync`, `statvfs`, `fstatvfs`, `limits` (reads and writes of
//! 63 KiB rather than 32 KiB, so a copy takes fewer round trips) and
//! `expand-path` (`~` in scp paths).
//!
//! Standard output carries the protocol: logs go to standard error only,
//! and only problems are logged at `info` or above, because the SSH client
//! shows this process's standard error to the user.
//!
//! Limits: paths are UTF-8 on the wire (the protocol library replaces
//! invalid bytes), and times have whole-second precision (SFTP v3).

/// User and group names, home directories.
mod accounts;
/// Why a request fails, and the status code each failure gets.
mod error;
/// Opening, changing and renaming files.
mod files;
/// Paths (`~`, `realpath`) and listings (long names, attributes).
mod names;
/// Serving a session on standard input and output.
mod stdio;

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes};
use russh_sftp::extensions::{LimitsExtension, Statvfs};
use russh_sftp::protocol::{
    Attrs, Data, ExtendedReply, File as NameEntry, FileAttributes, Handle, Name, OpenFlags, Packet, Status,
    StatusCode, Version,
};

pub use accounts::Accounts;
pub use error::{SftpError, status_for_io};
use files::{Target, open_options, read_full_at, rename_no_replace, set_attributes};
use names::{Listing, attributes, next_batch};
pub use names::{expand_tilde, long_name, ls_date, mode_string, normalize, real_path};
pub use stdio::{run_stdio, serve};

/// Most files and directories one session may hold open at once: a client
/// that leaks handles gets a clear error instead of exhausting the
/// workload's file descriptors.
pub const MAX_HANDLES: usize = 1024;

/// The largest packet we promise to accept (`limits@openssh.com`). Twice
/// what OpenSSH's client uses without the extension, but not OpenSSH's
/// 256 KiB: the protocol library allocates every request's buffers afresh,
/// and at 256 KiB the allocator hands them back to the kernel between
/// requests, which made uploads measurably slower than at 64 KiB.
const MAX_PACKET_LEN: u32 = 64 * 1024;

/// The largest read or write we promise: a data reply and its header fit
/// in one packet of [`MAX_PACKET_LEN`].
pub const MAX_READ_LEN: u32 = MAX_PACKET_LEN - 1024;

/// What we accept from clients before giving up on a packet: more than we
/// promise, because a client that ignores `limits` still deserves service
/// rather than a desynchronized stream.
const MAX_CLIENT_PACKET_LEN: u32 = 1024 * 1024;

/// Directory entries per `SSH_FXP_NAME` reply: large listings arrive in
/// batches, as OpenSSH's server sends them.
const DIR_BATCH: usize = 100;

/// Runs `call` on the blocking pool: filesystem calls may take long (a slow
/// disk, a network filesystem) and must not stall the protocol's I/O.
async fn blocking<T, F>(call: F) -> Result<T, SftpError>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    match tokio::task::spawn_blocking(call).await {
        Ok(result) => result.map_err(SftpError::from),
        Err(error) => Err(SftpError::Io(io::Error::other(format!(
            "the filesystem call did not finish: {error}"
        )))),
    }
}

/// An open handle.
enum Opened {
    /// A file from `SSH_FXP_OPEN`; shared with the blocking pool while a
    /// read or write runs.
    File(Arc<File>),
    /// A directory being listed, from `SSH_FXP_OPENDIR`.
    Dir(Arc<Mutex<Listing>>),
}

/// One SFTP session's state.
pub struct SftpServer {
    /// Where relative paths start: the directory the shim started us in.
    cwd: PathBuf,
    /// What `~` means in `expand-path@openssh.com`.
    home: PathBuf,
    /// Open files and directories by handle.
    handles: HashMap<String, Opened>,
    /// Handles are never reused within a session, so a stale handle from a
    /// client cannot reach a file opened later.
    next_handle: u64,
    accounts: Arc<Accounts>,
}

impl SftpServer {
    /// A server whose relative paths start at `cwd` and whose `~` is `home`.
    pub fn new(cwd: PathBuf, home: PathBuf, accounts: Accounts) -> Self {
        Self {
            cwd,
            home,
            handles: HashMap::new(),
            next_handle: 0,
            accounts: Arc::new(accounts),
        }
    }

    /// A server for this process: its working directory, `$HOME` (which
    /// the shim sets), and the system's accounts.
    pub fn for_this_process() -> Self {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .filter(|home| home.is_absolute())
            .unwrap_or_else(|| cwd.clone());
        Self::new(cwd, home, Accounts::load(Path::new("/")))
    }

    /// The absolute path a client's path names.
    fn resolve(&self, path: &str) -> PathBuf {
        self.cwd.join(path)
    }

    fn insert(&mut self, opened: Opened) -> Result<String, SftpError> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(SftpError::TooManyHandles);
        }
        self.next_handle += 1;
        let handle = self.next_handle.to_string();
        self.handles.insert(handle.clone(), opened);
        Ok(handle)
    }

    fn file(&self, handle: &str) -> Result<Arc<File>, SftpError> {
        match self.handles.get(handle) {
            Some(Opened::File(file)) => Ok(file.clone()),
            Some(Opened::Dir(_)) => Err(SftpError::WrongHandle {
                handle: handle.to_owned(),
                wanted: "file",
            }),
            None => Err(SftpError::NoSuchHandle(handle.to_owned())),
        }
    }

    fn listing(&self, handle: &str) -> Result<Arc<Mutex<Listing>>, SftpError> {
        match self.handles.get(handle) {
            Some(Opened::Dir(listing)) => Ok(listing.clone()),
            Some(Opened::File(_)) => Err(SftpError::WrongHandle {
                handle: handle.to_owned(),
                wanted: "directory",
            }),
            None => Err(SftpError::NoSuchHandle(handle.to_owned())),
        }
    }

    /// The reply to request `id`: `path` resolved against the working
    /// directory, then made canonical.
    async fn real_path_reply(&self, id: u32, path: &str) -> Result<Name, SftpError> {
        let path = self.resolve(if path.is_empty() { "." } else { path });
        Ok(name_reply(id, blocking(move || Ok(real_path(&path))).await?))
    }

    async fn extended_request(&mut self, id: u32, request: &str, data: Vec<u8>) -> Result<Packet, SftpError> {
        let mut data = Bytes::from(data);
        match request {
            "posix-rename@openssh.com" => {
                let (from, to) = (
                    self.resolve(&take_string(&mut data)?),
                    self.resolve(&take_string(&mut data)?),
                );
                blocking(move || std::fs::rename(from, to)).await?;
                Ok(ok(id).into())
            }
            "hardlink@openssh.com" => {
                let (from, to) = (
                    self.resolve(&take_string(&mut data)?),
                    self.resolve(&take_string(&mut data)?),
                );
                blocking(move || std::fs::hard_link(from, to)).await?;
                Ok(ok(id).into())
            }
            "fsync@openssh.com" => {
                let file = self.file(&take_string(&mut data)?)?;
                blocking(move || file.sync_all()).await?;
                Ok(ok(id).into())
            }
            "statvfs@openssh.com" => {
                let path = self.resolve(&take_string(&mut data)?);
                let stats = blocking(move || Ok(nix::sys::statvfs::statvfs(&path)?)).await?;
                extended_reply(id, &statvfs_reply(&stats))
            }
            "fstatvfs@openssh.com" => {
                let file = self.file(&take_string(&mut data)?)?;
                let stats = blocking(move || Ok(nix::sys::statvfs::fstatvfs(&*file)?)).await?;
                extended_reply(id, &statvfs_reply(&stats))
            }
            "limits@openssh.com" => extended_reply(
                id,
                &LimitsExtension {
                    max_packet_len: MAX_PACKET_LEN.into(),
                    max_read_len: MAX_READ_LEN.into(),
                    max_write_len: MAX_READ_LEN.into(),
                    max_open_handles: MAX_HANDLES as u64,
                },
            ),
            "expand-path@openssh.com" => {
                let path = take_string(&mut data)?;
                let expanded = expand_tilde(&path, &self.home, &self.accounts).ok_or_else(|| {
                    SftpError::Io(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{path}: no such user"),
                    ))
                })?;
                Ok(self.real_path_reply(id, &expanded).await?.into())
            }
            other => Err(SftpError::Unsupported(format!("the extension {other:?}"))),
        }
    }
}

/// The extensions we offer in `SSH_FXP_VERSION`, with their versions (as
/// OpenSSH's server numbers them, which is what clients check).
const EXTENSIONS: [(&str, &str); 7] = [
    ("posix-rename@openssh.com", "1"),
    ("statvfs@openssh.com", "2"),
    ("fstatvfs@openssh.com", "2"),
    ("hardlink@openssh.com", "1"),
    ("fsync@openssh.com", "1"),
    ("limits@openssh.com", "1"),
    ("expand-path@openssh.com", "1"),
];

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".into(),
        language_tag: "en-US".into(),
    }
}

/// A one-name reply (realpath, readlink) with no attributes, as OpenSSH's
/// server sends it.
fn name_reply(id: u32, path: String) -> Name {
    Name {
        id,
        files: vec![NameEntry {
            longname: path.clone(),
            filename: path,
            attrs: FileAttributes::empty(),
        }],
    }
}

fn extended_reply(id: u32, value: &impl serde::Serialize) -> Result<Packet, SftpError> {
    let data =
        russh_sftp::ser::to_bytes(value).map_err(|e| SftpError::Io(io::Error::other(e.to_string())))?;
    Ok(ExtendedReply {
        id,
        data: data.to_vec(),
    }
    .into())
}

/// Reads one SFTP string (u32 length, bytes) from extension data.
fn take_string(data: &mut Bytes) -> Result<String, SftpError> {
    let short = || SftpError::Malformed("the extension's data ends early".into());
    let len = data.try_get_u32().map_err(|_| short())? as usize;
    if data.remaining() < len {
        return Err(short());
    }
    let bytes = data.split_to(len);
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn statvfs_reply(stats: &nix::sys::statvfs::Statvfs) -> Statvfs {
    use nix::sys::statvfs::FsFlags;
    // The two flags the extension defines.
    let mut flags = 0;
    if stats.flags().contains(FsFlags::ST_RDONLY) {
        flags |= 0x1;
    }
    if stats.flags().contains(FsFlags::ST_NOSUID) {
        flags |= 0x2;
    }
    Statvfs {
        block_size: stats.block_size(),
        fragment_size: stats.fragment_size(),
        blocks: stats.blocks(),
        blocks_free: stats.blocks_free(),
        blocks_avail: stats.blocks_available(),
        inodes: stats.files(),
        inodes_free: stats.files_free(),
        inodes_avail: stats.files_available(),
        fs_id: stats.filesystem_id(),
        flags,
        name_max: stats.name_max(),
    }
}

impl russh_sftp::server::Handler for SftpServer {
    type Error = SftpError;

    fn unimplemented(&self) -> Self::Error {
        SftpError::Unsupported("this request".into())
    }

    async fn init(
        &mut self,
        version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, Self::Error> {
        tracing::debug!(client_version = version, "SFTP session starts");
        Ok(Version {
            version: russh_sftp::protocol::VERSION,
            extensions: EXTENSIONS
                .iter()
                .map(|(name, version)| (name.to_string(), version.to_string()))
                .collect(),
        })
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(SftpError::TooManyHandles);
        }
        let path = self.resolve(&filename);
        let mode = attrs.permissions.map_or(0o666, |mode| mode & 0o7777);
        let file = blocking(move || open_options(pflags, mode).open(path)).await?;
        let handle = self.insert(Opened::File(Arc::new(file)))?;
        Ok(Handle { id, handle })
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        match self.handles.remove(&handle) {
            Some(_) => Ok(ok(id)),
            None => Err(SftpError::NoSuchHandle(handle)),
        }
    }

    async fn read(&mut self, id: u32, handle: String, offset: u64, len: u32) -> Result<Data, Self::Error> {
        let file = self.file(&handle)?;
        let len = len.min(MAX_READ_LEN) as usize;
        let data = blocking(move || {
            let mut buf = vec![0; len];
            let n = read_full_at(&file, &mut buf, offset)?;
            buf.truncate(n);
            Ok(buf)
        })
        .await?;
        if data.is_empty() && len > 0 {
            return Err(SftpError::Eof);
        }
        Ok(Data { id, data })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, Self::Error> {
        let file = self.file(&handle)?;
        blocking(move || file.write_all_at(&data, offset)).await?;
        Ok(ok(id))
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let path = self.resolve(&path);
        let metadata = blocking(move || std::fs::symlink_metadata(path)).await?;
        Ok(Attrs {
            id,
            attrs: attributes(&metadata),
        })
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let path = self.resolve(&path);
        let metadata = blocking(move || std::fs::metadata(path)).await?;
        Ok(Attrs {
            id,
            attrs: attributes(&metadata),
        })
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        let metadata = match self.handles.get(&handle) {
            Some(Opened::File(file)) => {
                let file = file.clone();
                blocking(move || file.metadata()).await?
            }
            Some(Opened::Dir(listing)) => {
                let path = listing.lock().map_err(|_| poisoned())?.path.clone();
                blocking(move || std::fs::metadata(path)).await?
            }
            None => return Err(SftpError::NoSuchHandle(handle)),
        };
        Ok(Attrs {
            id,
            attrs: attributes(&metadata),
        })
    }

    async fn setstat(&mut self, id: u32, path: String, attrs: FileAttributes) -> Result<Status, Self::Error> {
        let target = Target::Path(self.resolve(&path));
        blocking(move || set_attributes(&target, &attrs)).await?;
        Ok(ok(id))
    }

    async fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let target = match self.handles.get(&handle) {
            Some(Opened::File(file)) => Target::File(file.clone()),
            Some(Opened::Dir(listing)) => Target::Path(listing.lock().map_err(|_| poisoned())?.path.clone()),
            None => return Err(SftpError::NoSuchHandle(handle)),
        };
        blocking(move || set_attributes(&target, &attrs)).await?;
        Ok(ok(id))
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(SftpError::TooManyHandles);
        }
        let path = self.resolve(&path);
        let listing = blocking(move || {
            let entries = std::fs::read_dir(&path)?;
            Ok(Listing {
                path,
                dots_sent: false,
                entries,
            })
        })
        .await?;
        let handle = self.insert(Opened::Dir(Arc::new(Mutex::new(listing))))?;
        Ok(Handle { id, handle })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, Self::Error> {
        let listing = self.listing(&handle)?;
        let accounts = self.accounts.clone();
        let files = blocking(move || {
            let mut listing = listing
                .lock()
                .map_err(|_| io::Error::other("a listing failed earlier"))?;
            next_batch(&mut listing, &accounts)
        })
        .await?;
        if files.is_empty() {
            return Err(SftpError::Eof);
        }
        Ok(Name { id, files })
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, Self::Error> {
        let path = self.resolve(&filename);
        blocking(move || std::fs::remove_file(path)).await?;
        Ok(ok(id))
    }

    async fn mkdir(&mut self, id: u32, path: String, attrs: FileAttributes) -> Result<Status, Self::Error> {
        let path = self.resolve(&path);
        let mode = attrs.permissions.map_or(0o777, |mode| mode & 0o7777);
        blocking(move || std::fs::DirBuilder::new().mode(mode).create(path)).await?;
        Ok(ok(id))
    }

    async fn rmdir(&mut self, id: u32, path: String) -> Result<Status, Self::Error> {
        let path = self.resolve(&path);
        blocking(move || std::fs::remove_dir(path)).await?;
        Ok(ok(id))
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        self.real_path_reply(id, &path).await
    }

    async fn rename(&mut self, id: u32, oldpath: String, newpath: String) -> Result<Status, Self::Error> {
        let (from, to) = (self.resolve(&oldpath), self.resolve(&newpath));
        blocking(move || rename_no_replace(&from, &to)).await?;
        Ok(ok(id))
    }

    async fn readlink(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let path = self.resolve(&path);
        let target = blocking(move || std::fs::read_link(path)).await?;
        Ok(name_reply(id, target.to_string_lossy().into_owned()))
    }

    /// OpenSSH sends the symlink's target first and the link's own path
    /// second: the reverse of the draft, which the protocol library's field
    /// names follow. Every common client follows OpenSSH, and so do we.
    async fn symlink(
        &mut self,
        id: u32,
        linkpath: String,
        targetpath: String,
    ) -> Result<Status, Self::Error> {
        let (target, link) = (linkpath, self.resolve(&targetpath));
        // The target is stored as given: a relative target is relative to
        // the link's directory, not to ours.
        blocking(move || std::os::unix::fs::symlink(target, link)).await?;
        Ok(ok(id))
    }

    async fn extended(&mut self, id: u32, request: String, data: Vec<u8>) -> Result<Packet, Self::Error> {
        self.extended_request(id, &request, data).await
    }
}

fn poisoned() -> SftpError {
    SftpError::Io(io::Error::other("a listing failed earlier"))
}

#[cfg(test)]
mod tests;
