//! The sidecar's SFTP server's path handling (`hatchway_sidecar::sftp`):
//! paths from the SFTP client, `~user` against the workload's
//! `/etc/passwd` and `/etc/group` (which the workload writes), and the
//! long names and dates a listing shows.
//!
//! - `normalize` gives an absolute path without `.` or `..`, and is
//!   idempotent; `..` never climbs above the root.
//! - `expand_tilde` leaves a path without `~` as it is, expands `~` and
//!   `~/…` to the home, `~user/…` to that user's home, and nothing for an
//!   unknown user.
//! - Reading any passwd and group text never panics.
//! - `mode_string` is ten characters; `ls_date` never panics.

#![no_main]

use std::path::{Component, Path};
use std::time::{Duration, SystemTime};

use hatchway_fuzz::Fields;
use hatchway_sidecar::sftp::{self, Accounts};
use libfuzzer_sys::fuzz_target;

// Fields: a client's path, passwd text, group text, a file's mtime, now
// (seconds), a mode.
fuzz_target!(|data: &[u8]| {
    let mut fields = Fields::new(data);
    let path = fields.text();
    let passwd = fields.text();
    let group = fields.text();
    let mtime: i64 = fields.number();
    let now: u32 = fields.number();
    let mode: u32 = fields.number();
    let normal = sftp::normalize(Path::new(&path));
    assert!(normal.is_absolute(), "{normal:?}");
    assert!(
        normal
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_))),
        "{normal:?}"
    );
    assert_eq!(sftp::normalize(&normal), normal);

    let accounts = Accounts::parse(&passwd, &group);
    let home = Path::new("/home/me");
    match path.strip_prefix('~') {
        None => assert_eq!(
            sftp::expand_tilde(&path, home, &accounts).as_deref(),
            Some(path.as_str())
        ),
        Some(rest) => {
            let (user, _) = rest.split_once('/').unwrap_or((rest, ""));
            match sftp::expand_tilde(&path, home, &accounts) {
                Some(expanded) if user.is_empty() => {
                    assert!(expanded.starts_with("/home/me"), "{expanded:?}")
                }
                Some(_) => {}
                None => assert!(!user.is_empty(), "~ alone is always the home"),
            }
        }
    }

    let listed = sftp::mode_string(mode);
    assert_eq!(listed.chars().count(), 10, "{listed:?}");
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now.into());
    let _ = sftp::ls_date(mtime, now);
});
