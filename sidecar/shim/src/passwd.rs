//! Users and groups read straight from the workload's `/etc/passwd` and
//! `/etc/group`.
//!
//! The shim is a static binary running in an arbitrary image: there is no
//! NSS to ask (and a static binary must not try), so the files are parsed
//! here. An image without them still works: lookups then find nobody but
//! the shim's own uid, described with sensible defaults.

use std::path::Path;

/// One `/etc/passwd` entry (the fields the shim uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: String,
    /// Login shell.
    pub shell: String,
}

/// One `/etc/group` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Group name.
    pub name: String,
    /// Group id.
    pub gid: u32,
    /// Supplementary members' names.
    pub members: Vec<String>,
}

/// The workload's user database, as read once per lookup (the files can
/// change while the workload runs, e.g. an entrypoint adding a user).
#[derive(Debug, Default, Clone)]
pub struct UserDb {
    /// `/etc/passwd`'s entries.
    pub users: Vec<User>,
    /// `/etc/group`'s entries.
    pub groups: Vec<Group>,
}

impl UserDb {
    /// Reads `root/etc/passwd` and `root/etc/group`; a missing or unreadable
    /// file is an empty database, not an error.
    pub fn load(root: &Path) -> Self {
        let read = |name: &str| std::fs::read_to_string(root.join("etc").join(name)).unwrap_or_default();
        Self::parse(&read("passwd"), &read("group"))
    }

    /// Parses `passwd` and `group` text; malformed lines are skipped.
    pub fn parse(passwd: &str, group: &str) -> Self {
        Self {
            users: parse_passwd(passwd),
            groups: parse_group(group),
        }
    }

    /// The user named `name`.
    pub fn by_name(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    /// The first user with `uid`.
    pub fn by_uid(&self, uid: u32) -> Option<&User> {
        self.users.iter().find(|u| u.uid == uid)
    }

    /// The group named `name`.
    pub fn group_by_name(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// What `initgroups` would give `user`: its primary group plus every
    /// group that lists it as a member, without duplicates.
    pub fn groups_of(&self, user: &str, primary: u32) -> Vec<u32> {
        let mut gids = vec![primary];
        for group in &self.groups {
            if group.members.iter().any(|m| m == user) && !gids.contains(&group.gid) {
                gids.push(group.gid);
            }
        }
        gids
    }
}

/// The `:`-separated records of a passwd-style file with at least
/// `min_fields` fields; comments, blank lines and NIS `+`/`-` lines skipped.
fn records(text: &str, min_fields: usize) -> impl Iterator<Item = Vec<&str>> {
    text.lines().filter_map(move |line| {
        let line = line.trim_end_matches('\r');
        if line.is_empty() || line.starts_with('#') || line.starts_with('+') || line.starts_with('-') {
            return None;
        }
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= min_fields).then_some(fields)
    })
}

/// Parses `/etc/passwd` text: `name:password:uid:gid:gecos:home:shell`.
/// Comments, blank lines, NIS `+`/`-` lines and malformed lines are skipped.
pub(crate) fn parse_passwd(text: &str) -> Vec<User> {
    records(text, 7)
        .filter_map(|fields| {
            if fields[0].is_empty() {
                return None;
            }
            Some(User {
                name: fields[0].to_string(),
                uid: fields[2].parse().ok()?,
                gid: fields[3].parse().ok()?,
                home: fields[5].to_string(),
                shell: fields[6].to_string(),
            })
        })
        .collect()
}

/// Parses `/etc/group` text: `name:password:gid:member,member`.
pub(crate) fn parse_group(text: &str) -> Vec<Group> {
    records(text, 4)
        .filter_map(|fields| {
            Some(Group {
                name: fields[0].to_string(),
                gid: fields[2].parse().ok()?,
                members: fields[3]
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
