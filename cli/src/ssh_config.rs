//! `config-ssh`: a marked block in `~/.ssh/config` so plain `ssh`, `scp`,
//! `sftp`, `rsync` and editors reach `NAME.NS.hatchway` through
//! `connect-ssh`, checking host keys against the hatchway known_hosts file.
//! The block goes first in the file: ssh uses the first value it finds.

use std::path::Path;

use crate::connect_ssh::DEFAULT_LOGIN;
use crate::proxy_command;

pub const BEGIN: &str = "# BEGIN hatchway";
pub const END: &str = "# END hatchway";

/// The block (with a trailing newline).
///
/// `User _` is the container's default user: `ssh NAME.NS.hatchway` logs in
/// as it, `ssh root@NAME.NS.hatchway` as root (ssh passes the user as
/// `%r`). `connect-ssh` writes the host key the router reports into the
/// known_hosts file before ssh checks it.
pub fn block(exe: &Path, connection_args: &[String], known_hosts: &Path) -> String {
    let mut args = vec![
        "--known-hosts".to_owned(),
        known_hosts.to_string_lossy().into_owned(),
    ];
    args.extend(connection_args.iter().cloned());
    let proxy = proxy_command::connect_ssh(exe, "%n --login %r", &args);
    let known_hosts = proxy_command::escape_percent(&known_hosts.to_string_lossy());
    format!(
        "{BEGIN} (written by `kubectl hatch config-ssh`; changes here are replaced)\n\
         Host *.hatchway\n\
         \x20   User {DEFAULT_LOGIN}\n\
         \x20   ProxyCommand {proxy}\n\
         \x20   UserKnownHostsFile \"{known_hosts}\"\n\
         \x20   StrictHostKeyChecking yes\n\
         {END}\n"
    )
}

/// `config` without the hatchway block (and without the blank line that
/// followed it).
pub fn without_block(config: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    let mut just_removed = false;
    for line in config.split_inclusive('\n') {
        let trimmed = line.trim();
        if !inside && trimmed.starts_with(BEGIN) {
            inside = true;
            continue;
        }
        if inside {
            if trimmed == END {
                inside = false;
                just_removed = true;
            }
            continue;
        }
        if just_removed && trimmed.is_empty() {
            just_removed = false;
            continue;
        }
        just_removed = false;
        out.push_str(line);
    }
    out
}

/// `config` with `block` first, replacing any earlier block.
pub fn with_block(config: &str, block: &str) -> String {
    let rest = without_block(config);
    if rest.is_empty() {
        block.to_owned()
    } else {
        format!("{block}\n{rest}")
    }
}

/// Reads `path` (absent: empty), applies `change`, writes it back when it
/// changed (creating `~/.ssh` with mode 0700 when missing). Returns whether
/// it changed.
pub fn update(path: &Path, change: impl FnOnce(&str) -> String) -> std::io::Result<bool> {
    let current = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let next = change(&current);
    if next == current {
        return Ok(false);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let tmp = path.with_extension(format!("hatchway-tmp{}", std::process::id()));
    std::fs::write(&tmp, &next)?;
    if let Ok(meta) = std::fs::metadata(path) {
        std::fs::set_permissions(&tmp, meta.permissions())?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> String {
        block(
            Path::new("/bin/kubectl-hatch"),
            &["--server".into(), "https://r:8443".into()],
            Path::new("/k/known_hosts"),
        )
    }

    #[test]
    fn the_block_proxies_hatchway_hosts_and_checks_keys() {
        let b = sample();
        assert!(b.starts_with(BEGIN), "{b}");
        assert!(b.contains("Host *.hatchway\n"), "{b}");
        assert!(b.contains("    User _\n"), "{b}");
        assert!(
            b.contains(
                "ProxyCommand /bin/kubectl-hatch connect-ssh %n --login %r --known-hosts /k/known_hosts \
                 --server https://r:8443\n"
            ),
            "{b}"
        );
        assert!(b.contains("UserKnownHostsFile \"/k/known_hosts\"\n"), "{b}");
        assert!(b.contains("StrictHostKeyChecking yes\n"), "{b}");
        assert!(b.ends_with(&format!("{END}\n")), "{b}");
    }

    #[test]
    fn adding_is_idempotent_and_removing_restores_the_rest() {
        let user = "Host example\n    User me\n";
        let once = with_block(user, &sample());
        let twice = with_block(&once, &sample());
        assert_eq!(once, twice);
        assert_eq!(once.matches(BEGIN).count(), 1);
        assert!(once.starts_with(BEGIN));
        assert_eq!(without_block(&twice), user);
        assert_eq!(with_block("", &sample()), sample());
        assert_eq!(without_block(&sample()), "");
    }
}
