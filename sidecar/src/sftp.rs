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

use std::collections::HashMap;
use std::fs::{File, FileTimes, OpenOptions, Permissions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes};
use hatchway_shim::passwd::UserDb;
use russh_sftp::extensions::{LimitsExtension, Statvfs};
use russh_sftp::protocol::{
    Attrs, Data, ExtendedReply, File as NameEntry, FileAttributes, Handle, Name, OpenFlags, Packet, Status,
    StatusCode, Version,
};
use russh_sftp::server::StatusReply;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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

/// Why a request failed; each maps to an SFTP status code.
#[derive(Debug, thiserror::Error)]
pub enum SftpError {
    /// The filesystem refused.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Nothing more to read from a file or directory.
    #[error("end of file")]
    Eof,
    /// The handle was never opened, or is already closed.
    #[error("no open file or directory has the handle {0:?}")]
    NoSuchHandle(String),
    /// A file handle where a directory handle is needed, or the reverse.
    #[error("the handle {handle:?} is not an open {wanted}")]
    WrongHandle {
        /// The handle.
        handle: String,
        /// "file" or "directory".
        wanted: &'static str,
    },
    /// [`MAX_HANDLES`] are open already.
    #[error("too many open files and directories ({MAX_HANDLES}): close some first")]
    TooManyHandles,
    /// The request's data could not be parsed.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// A request or extension this server does not implement.
    #[error("{0} is not supported")]
    Unsupported(String),
}

impl SftpError {
    /// The status code the client gets for this error.
    pub fn status_code(&self) -> StatusCode {
        match self {
            SftpError::Io(error) => status_for_io(error),
            SftpError::Eof => StatusCode::Eof,
            SftpError::NoSuchHandle(_) | SftpError::WrongHandle { .. } | SftpError::TooManyHandles => {
                StatusCode::Failure
            }
            SftpError::Malformed(_) => StatusCode::BadMessage,
            SftpError::Unsupported(_) => StatusCode::OpUnsupported,
        }
    }
}

impl From<SftpError> for StatusReply {
    fn from(error: SftpError) -> Self {
        let code = error.status_code();
        // The status code alone says "end of file" better than a message.
        if code == StatusCode::Eof {
            return StatusReply::new(code);
        }
        code.with_message(error.to_string())
    }
}

/// The status code for a filesystem error, the way OpenSSH's sftp-server
/// maps errno values (clients act on these codes: e.g. "No such file" makes
/// `sftp` report a missing file rather than a generic failure).
pub fn status_for_io(error: &io::Error) -> StatusCode {
    if let Some(errno) = error.raw_os_error() {
        return match errno {
            libc::ENOENT | libc::ENOTDIR | libc::EBADF | libc::ELOOP => StatusCode::NoSuchFile,
            libc::EPERM | libc::EACCES | libc::EFAULT => StatusCode::PermissionDenied,
            libc::ENAMETOOLONG | libc::EINVAL => StatusCode::BadMessage,
            libc::ENOSYS | libc::EOPNOTSUPP => StatusCode::OpUnsupported,
            _ => StatusCode::Failure,
        };
    }
    match error.kind() {
        io::ErrorKind::NotFound => StatusCode::NoSuchFile,
        io::ErrorKind::PermissionDenied => StatusCode::PermissionDenied,
        io::ErrorKind::InvalidInput => StatusCode::BadMessage,
        io::ErrorKind::Unsupported => StatusCode::OpUnsupported,
        io::ErrorKind::UnexpectedEof => StatusCode::Eof,
        _ => StatusCode::Failure,
    }
}

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

/// A directory listing in progress.
struct Listing {
    path: PathBuf,
    /// `.` and `..` are listed first (as `ls -a` and OpenSSH's server do);
    /// `read_dir` never yields them.
    dots_sent: bool,
    entries: std::fs::ReadDir,
}

/// User and group names for long names, and home directories for `~user`:
/// the shim's parse of `/etc/passwd` and `/etc/group` (this static binary
/// runs in arbitrary images where NSS cannot be used).
#[derive(Debug, Default)]
pub struct Accounts(UserDb);

impl Accounts {
    /// Reads `root/etc/passwd` and `root/etc/group`; missing files are empty.
    pub fn load(root: &Path) -> Self {
        Self(UserDb::load(root))
    }

    /// Parses `passwd` and `group` text; malformed lines are skipped.
    pub fn parse(passwd: &str, group: &str) -> Self {
        Self(UserDb::parse(passwd, group))
    }

    fn user_name(&self, uid: u32) -> String {
        self.0
            .by_uid(uid)
            .map_or_else(|| uid.to_string(), |u| u.name.clone())
    }

    fn group_name(&self, gid: u32) -> String {
        let group = self.0.groups.iter().find(|g| g.gid == gid);
        group.map_or_else(|| gid.to_string(), |g| g.name.clone())
    }

    fn home_of(&self, name: &str) -> Option<&Path> {
        self.0.by_name(name).map(|u| Path::new(u.home.as_str()))
    }
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

/// `~`, `~/rest` and `~user/rest` expanded; other paths unchanged. None
/// for an unknown user.
pub fn expand_tilde(path: &str, home: &Path, accounts: &Accounts) -> Option<String> {
    let Some(rest) = path.strip_prefix('~') else {
        return Some(path.to_owned());
    };
    let (user, rest) = rest.split_once('/').unwrap_or((rest, ""));
    let home = if user.is_empty() {
        home
    } else {
        accounts.home_of(user)?
    };
    Some(home.join(rest).to_string_lossy().into_owned())
}

/// The canonical form of an absolute path; for a path that does not exist
/// (an upload's target, say), its lexical normal form, since there is
/// nothing on disk to resolve.
pub fn real_path(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| normalize(path))
        .to_string_lossy()
        .into_owned()
}

/// Removes `.` components and applies `..` to the component before it,
/// without looking at the filesystem; `..` at the root stays at the root.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// A file's attributes as SFTP v3 carries them.
fn attributes(metadata: &std::fs::Metadata) -> FileAttributes {
    FileAttributes {
        size: Some(metadata.size()),
        uid: Some(metadata.uid()),
        gid: Some(metadata.gid()),
        permissions: Some(metadata.mode()),
        atime: Some(seconds(metadata.atime())),
        mtime: Some(seconds(metadata.mtime())),
        ..FileAttributes::empty()
    }
}

/// SFTP v3 times are unsigned 32-bit seconds.
fn seconds(time: i64) -> u32 {
    time.clamp(0, u32::MAX.into()) as u32
}

/// An `ls -l` line for a directory entry, as OpenSSH's server writes it:
/// `sftp`'s `ls -l` shows it as is.
pub fn long_name(name: &str, metadata: &std::fs::Metadata, accounts: &Accounts, now: SystemTime) -> String {
    let user = accounts.user_name(metadata.uid());
    let group = accounts.group_name(metadata.gid());
    format!(
        "{} {:>3} {user:<8} {group:<8} {:>8} {} {name}",
        mode_string(metadata.mode()),
        metadata.nlink(),
        metadata.size(),
        ls_date(metadata.mtime(), now),
    )
}

/// `drwxr-xr-x` and friends, with setuid, setgid and sticky bits.
pub fn mode_string(mode: u32) -> String {
    let kind = match mode & libc::S_IFMT {
        libc::S_IFDIR => 'd',
        libc::S_IFLNK => 'l',
        libc::S_IFCHR => 'c',
        libc::S_IFBLK => 'b',
        libc::S_IFIFO => 'p',
        libc::S_IFSOCK => 's',
        _ => '-',
    };
    let mut s = String::with_capacity(10);
    s.push(kind);
    // (read, write, execute bits, special bit, its letter) per class.
    let classes = [
        (0o400, 0o200, 0o100, libc::S_ISUID, 's'),
        (0o040, 0o020, 0o010, libc::S_ISGID, 's'),
        (0o004, 0o002, 0o001, libc::S_ISVTX, 't'),
    ];
    for (r, w, x, special, letter) in classes {
        s.push(if mode & r != 0 { 'r' } else { '-' });
        s.push(if mode & w != 0 { 'w' } else { '-' });
        s.push(match (mode & x != 0, mode & special != 0) {
            (true, true) => letter,
            (false, true) => letter.to_ascii_uppercase(),
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// `ls`'s date column in UTC: `Mon dd HH:MM` within six months of now,
/// else `Mon dd  YYYY`.
pub fn ls_date(mtime: i64, now: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    const SIX_MONTHS: i64 = 365 * 24 * 60 * 60 / 2;
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let date = time::OffsetDateTime::from_unix_timestamp(mtime).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let (year, day) = (date.year(), date.day());
    let month = MONTHS[u8::from(date.month()) as usize - 1];
    if (now - SIX_MONTHS..now + SIX_MONTHS).contains(&mtime) {
        let of_day = mtime.rem_euclid(86_400);
        format!("{month} {day:>2} {:02}:{:02}", of_day / 3600, of_day % 3600 / 60)
    } else {
        format!("{month} {day:>2}  {year}")
    }
}

/// What `SSH_FXP_OPEN`'s flags ask of `open(2)`.
fn open_options(flags: OpenFlags, mode: u32) -> OpenOptions {
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
enum Target {
    Path(PathBuf),
    File(Arc<File>),
}

/// Applies size, permissions, times and owner, in the order OpenSSH's
/// server does (a chown may drop setuid bits a chmod just set, so the
/// order is visible).
fn set_attributes(target: &Target, attrs: &FileAttributes) -> io::Result<()> {
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
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
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

/// The next batch of a listing: `.` and `..` first, then the entries.
/// Entries that vanish while listed are skipped.
fn next_batch(listing: &mut Listing, accounts: &Accounts) -> io::Result<Vec<NameEntry>> {
    let now = SystemTime::now();
    let entry = |name: &str, metadata: &std::fs::Metadata| NameEntry {
        filename: name.to_owned(),
        longname: long_name(name, metadata, accounts, now),
        attrs: attributes(metadata),
    };
    let mut batch = Vec::new();
    if !listing.dots_sent {
        listing.dots_sent = true;
        for (name, path) in [(".", listing.path.clone()), ("..", listing.path.join(".."))] {
            if let Ok(metadata) = std::fs::symlink_metadata(&path) {
                batch.push(entry(name, &metadata));
            }
        }
    }
    while batch.len() < DIR_BATCH {
        let Some(next) = listing.entries.next() else { break };
        let next = next?;
        // `DirEntry::metadata` does not follow symlinks: like lstat.
        let Ok(metadata) = next.metadata() else { continue };
        batch.push(entry(&next.file_name().to_string_lossy(), &metadata));
    }
    Ok(batch)
}

/// Reads at `offset` until `buf` is full or the file ends: one short read
/// would cost the client another round trip.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
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

/// The protocol stream, watched: the protocol library keeps reading after
/// most errors, so a read error, or a write error (the client is gone),
/// ends the stream here; and dropping the stream, which the library does
/// when its loop ends, tells [`serve`] the session is over.
struct Watched<S> {
    inner: S,
    broken: bool,
    _ended: tokio::sync::oneshot::Sender<()>,
}

fn ended() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "the SFTP stream ended")
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.broken {
            return Poll::Ready(Err(ended()));
        }
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Err(error)) => {
                tracing::debug!(%error, "reading SFTP requests");
                self.broken = true;
                Poll::Ready(Err(ended()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Err(error)) = &result {
            tracing::debug!(%error, "writing SFTP replies");
            self.broken = true;
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        if let Poll::Ready(Err(_)) = &result {
            self.broken = true;
        }
        result
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves one SFTP session on `stream` until the client closes it.
pub async fn serve<S>(stream: S, server: SftpServer)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel();
    let stream = Watched {
        inner: stream,
        broken: false,
        _ended: ended_tx,
    };
    let config = russh_sftp::server::Config {
        max_client_packet_len: MAX_CLIENT_PACKET_LEN,
    };
    russh_sftp::server::run_with_config(stream, server, config).await;
    // Resolves (with an error) when the library drops the stream.
    let _ = ended_rx.await;
    tracing::debug!("SFTP session ended");
}

/// Standard input or output used directly, without tokio's helper thread
/// per read and write, when it is a pipe or a socket (under the shim it is
/// a pipe only this process uses, so making it non-blocking is harmless).
/// None for anything else, such as a terminal shared with a shell, which
/// must stay blocking.
fn direct(fd: BorrowedFd<'_>) -> Option<hatchway_shim::FdStream> {
    let kind = nix::sys::stat::fstat(fd).ok()?.st_mode & libc::S_IFMT;
    if kind != libc::S_IFIFO && kind != libc::S_IFSOCK {
        return None;
    }
    hatchway_shim::FdStream::new(fd.try_clone_to_owned().ok()?).ok()
}

/// Runs `hatchway-sidecar sftp-server`: one SFTP session on standard input
/// and output, in this process's working directory. Returns the exit code.
pub fn run_stdio() -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "starting the runtime");
            return 1;
        }
    };
    runtime.block_on(async {
        let input: Box<dyn AsyncRead + Unpin + Send> = match direct(std::io::stdin().as_fd()) {
            Some(stream) => Box::new(stream),
            None => Box::new(tokio::io::stdin()),
        };
        let output: Box<dyn AsyncWrite + Unpin + Send> = match direct(std::io::stdout().as_fd()) {
            Some(stream) => Box::new(stream),
            None => Box::new(tokio::io::stdout()),
        };
        // Buffered, so a packet's 4-byte length and its body come in one
        // read rather than two.
        let input = tokio::io::BufReader::with_capacity(MAX_PACKET_LEN as usize, input);
        serve(tokio::io::join(input, output), SftpServer::for_this_process()).await;
    });
    // Nothing should be left running; don't wait on a stuck filesystem call.
    runtime.shutdown_timeout(Duration::from_secs(1));
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filesystem_errors_map_to_the_status_codes_openssh_uses() {
        let code = |errno| status_for_io(&io::Error::from_raw_os_error(errno));
        assert_eq!(code(libc::ENOENT), StatusCode::NoSuchFile);
        assert_eq!(code(libc::ENOTDIR), StatusCode::NoSuchFile);
        assert_eq!(code(libc::ELOOP), StatusCode::NoSuchFile);
        assert_eq!(code(libc::EACCES), StatusCode::PermissionDenied);
        assert_eq!(code(libc::EPERM), StatusCode::PermissionDenied);
        assert_eq!(code(libc::EINVAL), StatusCode::BadMessage);
        assert_eq!(code(libc::ENOSYS), StatusCode::OpUnsupported);
        assert_eq!(code(libc::EEXIST), StatusCode::Failure);
        assert_eq!(code(libc::ENOSPC), StatusCode::Failure);
        // Errors without an errno go by their kind.
        let kind = |kind| status_for_io(&io::Error::new(kind, "x"));
        assert_eq!(kind(io::ErrorKind::NotFound), StatusCode::NoSuchFile);
        assert_eq!(
            kind(io::ErrorKind::PermissionDenied),
            StatusCode::PermissionDenied
        );
        assert_eq!(kind(io::ErrorKind::InvalidInput), StatusCode::BadMessage);
        assert_eq!(kind(io::ErrorKind::Unsupported), StatusCode::OpUnsupported);
        assert_eq!(kind(io::ErrorKind::Other), StatusCode::Failure);
    }

    #[test]
    fn session_errors_map_to_status_codes_with_messages() {
        let reply = StatusReply::from(SftpError::TooManyHandles);
        assert_eq!(reply.status_code, StatusCode::Failure);
        assert!(reply.error_message.unwrap().contains("too many open"));
        let reply = StatusReply::from(SftpError::Io(io::Error::from_raw_os_error(libc::ENOENT)));
        assert_eq!(reply.status_code, StatusCode::NoSuchFile);
        assert!(reply.error_message.unwrap().contains("No such file"));
        assert_eq!(StatusReply::from(SftpError::Eof).status_code, StatusCode::Eof);
        assert_eq!(
            StatusReply::from(SftpError::NoSuchHandle("9".into())).status_code,
            StatusCode::Failure
        );
        assert_eq!(
            StatusReply::from(SftpError::Unsupported("x".into())).status_code,
            StatusCode::OpUnsupported
        );
        assert_eq!(
            StatusReply::from(SftpError::Malformed("x".into())).status_code,
            StatusCode::BadMessage
        );
    }

    #[test]
    fn normalizing_removes_dots_and_applies_parents_without_the_filesystem() {
        let n = |p: &str| normalize(Path::new(p)).to_string_lossy().into_owned();
        assert_eq!(n("/home/u/./new/../file"), "/home/u/file");
        assert_eq!(n("/home/u/"), "/home/u");
        assert_eq!(n("/.."), "/");
        assert_eq!(n("/../../a"), "/a");
        assert_eq!(n("/a//b/./c/.."), "/a/b");
        assert_eq!(n("/"), "/");
    }

    #[test]
    fn real_paths_are_canonical_when_they_exist_and_normalized_when_not() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(root.join("real")).unwrap();
        std::os::unix::fs::symlink("real", root.join("link")).unwrap();
        let server = SftpServer::new(root.clone(), root.clone(), Accounts::default());
        let real = |p: &str| real_path(&server.resolve(p));
        let root_text = root.to_string_lossy().into_owned();
        assert_eq!(real("."), root_text);
        assert_eq!(real(""), root_text);
        assert_eq!(real("link/../real/."), format!("{root_text}/real"));
        // Symlinks resolve when the path exists...
        assert_eq!(real("link"), format!("{root_text}/real"));
        // ...and a path that does not exist is normalized lexically.
        assert_eq!(
            real("missing/../also-missing/x"),
            format!("{root_text}/also-missing/x")
        );
        assert_eq!(real("/no/such/./dir/.."), "/no/such");
    }

    #[test]
    fn tilde_expands_to_homes() {
        let accounts = Accounts::parse(
            "root:x:0:0:root:/root:/bin/sh\n# comment\nbroken line\nalice:x:1000:1000::/home/alice:/bin/bash\n",
            "root:x:0:\nstaff:x:50:alice\n",
        );
        let home = Path::new("/home/me");
        assert_eq!(expand_tilde("~", home, &accounts).unwrap(), "/home/me/");
        assert_eq!(expand_tilde("~/a/b", home, &accounts).unwrap(), "/home/me/a/b");
        assert_eq!(
            expand_tilde("~alice/x", home, &accounts).unwrap(),
            "/home/alice/x"
        );
        assert_eq!(expand_tilde("plain/~x", home, &accounts).unwrap(), "plain/~x");
        assert_eq!(expand_tilde("~nobody/x", home, &accounts), None);
        assert_eq!(accounts.user_name(1000), "alice");
        assert_eq!(accounts.user_name(4242), "4242");
        assert_eq!(accounts.group_name(50), "staff");
    }

    #[test]
    fn long_names_look_like_ls() {
        assert_eq!(mode_string(libc::S_IFDIR | 0o755), "drwxr-xr-x");
        assert_eq!(mode_string(libc::S_IFREG | 0o4755), "-rwsr-xr-x");
        assert_eq!(mode_string(libc::S_IFREG | 0o2644), "-rw-r-Sr--");
        assert_eq!(mode_string(libc::S_IFDIR | 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string(libc::S_IFLNK | 0o777), "lrwxrwxrwx");
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000); // 2023-11-14 22:13:20 UTC
        assert_eq!(ls_date(1_700_000_000 - 3600, now), "Nov 14 21:13");
        assert_eq!(ls_date(0, now), "Jan  1  1970");
        assert_eq!(ls_date(951_782_400, now), "Feb 29  2000");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("notes.txt");
        std::fs::write(&file, b"12345").unwrap();
        std::fs::set_permissions(&file, Permissions::from_mode(0o640)).unwrap();
        let metadata = std::fs::symlink_metadata(&file).unwrap();
        let line = long_name("notes.txt", &metadata, &Accounts::default(), SystemTime::now());
        assert!(line.starts_with("-rw-r-----   1 "), "{line}");
        assert!(line.ends_with(" notes.txt"), "{line}");
        assert!(line.contains(&format!(" {} ", metadata.uid())), "{line}");
    }

    /// SFTP strings, as extension requests carry them.
    fn sftp_strings(parts: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for part in parts {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
        out
    }

    fn status_of(error: russh_sftp::client::error::Error) -> StatusCode {
        match error {
            russh_sftp::client::error::Error::Status(status) => status.status_code,
            other => panic!("expected a status, got {other:?}"),
        }
    }

    /// The protocol library's own client, in process over a duplex pipe:
    /// what OpenSSH's client cannot be made to do (a thousand open handles,
    /// readlink, a directory handle used as a file).
    #[tokio::test]
    async fn a_library_client_sees_limits_handles_listings_and_links() {
        use russh_sftp::client::RawSftpSession;
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::write(root.join("f"), b"abc").unwrap();
        let (client, server) = tokio::io::duplex(1 << 20);
        let served = tokio::spawn(serve(
            server,
            SftpServer::new(root.clone(), root.clone(), Accounts::default()),
        ));
        let raw = RawSftpSession::new(client);
        let version = raw.init().await.unwrap();
        assert_eq!(version.version, 3);
        assert_eq!(
            version
                .extensions
                .get("posix-rename@openssh.com")
                .map(String::as_str),
            Some("1")
        );
        let limits = raw.limits().await.unwrap();
        assert_eq!(limits.max_open_handles, MAX_HANDLES as u64);
        assert_eq!(limits.max_read_len, u64::from(MAX_READ_LEN));

        // Reads end with an EOF status.
        let none = FileAttributes::empty();
        let file = raw.open("f", OpenFlags::READ, none.clone()).await.unwrap().handle;
        assert_eq!(raw.read(&file, 0, 100).await.unwrap().data, b"abc");
        assert_eq!(
            status_of(raw.read(&file, 3, 100).await.unwrap_err()),
            StatusCode::Eof
        );

        // Past the cap, opening fails clearly until a handle is closed.
        let mut handles = vec![file];
        while handles.len() < MAX_HANDLES {
            handles.push(raw.open("f", OpenFlags::READ, none.clone()).await.unwrap().handle);
        }
        match raw.opendir(".").await.unwrap_err() {
            russh_sftp::client::error::Error::Status(status) => {
                assert_eq!(status.status_code, StatusCode::Failure);
                assert!(status.error_message.contains("too many open"), "{status:?}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            status_of(raw.open("f", OpenFlags::READ, none.clone()).await.unwrap_err()),
            StatusCode::Failure
        );
        raw.close(handles.pop().unwrap()).await.unwrap();
        let listing = raw.opendir(".").await.unwrap().handle;

        // A listing: the dots first, then the entries, then EOF.
        let names: Vec<String> = raw
            .readdir(&listing)
            .await
            .unwrap()
            .files
            .into_iter()
            .map(|f| f.filename)
            .collect();
        assert_eq!(names, [".", "..", "f"]);
        assert_eq!(
            status_of(raw.readdir(&listing).await.unwrap_err()),
            StatusCode::Eof
        );
        assert_eq!(
            status_of(raw.read(&listing, 0, 1).await.unwrap_err()),
            StatusCode::Failure
        );
        raw.close(&listing).await.unwrap();
        assert_eq!(
            status_of(raw.close(&listing).await.unwrap_err()),
            StatusCode::Failure
        );

        // OpenSSH's order: the target first, then the link.
        raw.symlink("f", "link").await.unwrap();
        assert_eq!(std::fs::read_link(root.join("link")).unwrap(), Path::new("f"));
        assert_eq!(raw.readlink("link").await.unwrap().files[0].filename, "f");

        // Plain rename never replaces; posix-rename does.
        std::fs::write(root.join("g"), b"g").unwrap();
        assert_eq!(
            status_of(raw.rename("f", "g").await.unwrap_err()),
            StatusCode::Failure
        );
        assert_eq!(std::fs::read(root.join("g")).unwrap(), b"g");
        match raw
            .extended("posix-rename@openssh.com", sftp_strings(&["f", "g"]))
            .await
            .unwrap()
        {
            Packet::Status(status) => assert_eq!(status.status_code, StatusCode::Ok),
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::read(root.join("g")).unwrap(), b"abc");
        assert!(!root.join("f").exists());

        assert_eq!(
            status_of(raw.stat("f").await.unwrap_err()),
            StatusCode::NoSuchFile
        );
        match raw.extended("no-such@example.com", Vec::new()).await.unwrap() {
            Packet::Status(status) => assert_eq!(status.status_code, StatusCode::OpUnsupported),
            other => panic!("{other:?}"),
        }
        let home = raw.expand_path("~/g").await.unwrap();
        assert_eq!(home.files[0].filename, root.join("g").to_string_lossy());

        // The session ends when the client goes away.
        drop(raw);
        tokio::time::timeout(Duration::from_secs(10), served)
            .await
            .expect("the server stops at the end of its input")
            .unwrap();
    }
}
