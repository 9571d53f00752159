//! Paths (`~user`, `realpath`) and directory listings (long names as `ls -l`
//! prints them, attributes, batches).

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use russh_sftp::protocol::{File as NameEntry, FileAttributes};

use super::{Accounts, DIR_BATCH};

/// A directory listing in progress.
pub(super) struct Listing {
    pub(super) path: PathBuf,
    /// `.` and `..` are listed first (as `ls -a` and OpenSSH's server do);
    /// `read_dir` never yields them.
    pub(super) dots_sent: bool,
    pub(super) entries: std::fs::ReadDir,
}

/// `~`, `~/rest` and `~user/rest` expanded; other paths unchanged. None
/// for an unknown user. The rest stays under the home (`~//etc` is the
/// home's `etc`, as OpenSSH's server has it, not `/etc`).
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
    Some(
        home.join(rest.trim_start_matches('/'))
            .to_string_lossy()
            .into_owned(),
    )
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
pub(super) fn attributes(metadata: &std::fs::Metadata) -> FileAttributes {
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

/// The next batch of a listing: `.` and `..` first, then the entries.
/// Entries that vanish while listed are skipped.
pub(super) fn next_batch(listing: &mut Listing, accounts: &Accounts) -> io::Result<Vec<NameEntry>> {
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
