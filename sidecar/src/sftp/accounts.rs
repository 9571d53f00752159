//! User and group names for long names, and home directories for `~user`.

use std::path::Path;

use hatchway_shim::passwd::UserDb;

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

    pub(super) fn user_name(&self, uid: u32) -> String {
        self.0
            .by_uid(uid)
            .map_or_else(|| uid.to_string(), |u| u.name.clone())
    }

    pub(super) fn group_name(&self, gid: u32) -> String {
        let group = self.0.groups.iter().find(|g| g.gid == gid);
        group.map_or_else(|| gid.to_string(), |g| g.name.clone())
    }

    pub(super) fn home_of(&self, name: &str) -> Option<&Path> {
        self.0.by_name(name).map(|u| Path::new(u.home.as_str()))
    }
}
