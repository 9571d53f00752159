//! `config-ssh`: a marked block in `~/.ssh/config` so plain `ssh`, `scp`,
//! `sftp`, `rsync` and editors reach `NAME.NS.hatchway` through
//! `connect-ssh`, checking host keys against the hatchway known_hosts file.
//! The block goes first in the file: ssh uses the first value it finds.

use std::path::Path;

use crate::connect_ssh::{DEFAULT_LOGIN, HOST_SUFFIX};
use crate::proxy_command;

pub const BEGIN: &str = "# BEGIN hatchway";
pub const END: &str = "# END hatchway";

/// The block for hosts `*.SUFFIX` (with a trailing newline).
///
/// `User _` is the container's default user: `ssh NAME.NS.SUFFIX` logs in
/// as it, `ssh root@NAME.NS.SUFFIX` as root (ssh passes the user as `%r`).
/// `connect-ssh` writes the host key the router reports into the
/// known_hosts file before ssh checks it. `connection_args` pin the way
/// and the kubeconfig context the block was written for.
///
/// Refused when it could not be written as given: a suffix that is not a
/// host name (`Host *.SUFFIX` must be one pattern, and the block's marker
/// lines name it), a control character anywhere (a newline would start a
/// directive of its own; ssh's config has no escape for one), or a `"` or
/// `\` in the known_hosts path (quoted for ssh).
pub fn block(
    exe: &Path,
    suffix: &str,
    connection_args: &[String],
    known_hosts: &Path,
) -> Result<String, String> {
    if suffix.is_empty()
        || suffix.starts_with('.')
        || suffix.ends_with('.')
        || !suffix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        return Err(format!(
            "host suffix {suffix:?} is not a host name (letters, digits, '-', '_' and inner '.')"
        ));
    }
    let exe_text = exe.to_string_lossy();
    let known_hosts_text = known_hosts.to_string_lossy();
    let words = [exe_text.as_ref(), known_hosts_text.as_ref()];
    if let Some(word) = words
        .into_iter()
        .chain(connection_args.iter().map(String::as_str))
        .find(|w| w.chars().any(char::is_control))
    {
        return Err(format!(
            "{word:?} has a control character: it cannot go in an ssh config"
        ));
    }
    if known_hosts_text.contains(['"', '\\']) {
        return Err(format!(
            "the known_hosts path {known_hosts_text:?} has a '\"' or '\\': it cannot be quoted for ssh"
        ));
    }
    let mut args = vec![
        "--host-suffix".to_owned(),
        suffix.to_owned(),
        "--known-hosts".to_owned(),
        known_hosts.to_string_lossy().into_owned(),
    ];
    args.extend(connection_args.iter().cloned());
    let proxy = proxy_command::connect_ssh(exe, "%n --login %r", &args);
    let known_hosts = proxy_command::escape_percent(&known_hosts_text);
    Ok(format!(
        "{BEGIN} *.{suffix} (written by `kubectl hatch config-ssh`; changes here are replaced)\n\
         Host *.{suffix}\n\
         \x20   User {DEFAULT_LOGIN}\n\
         \x20   ProxyCommand {proxy}\n\
         \x20   UserKnownHostsFile \"{known_hosts}\"\n\
         \x20   StrictHostKeyChecking yes\n\
         {END} *.{suffix}\n"
    ))
}

/// The suffix a block's first line names (`None`: the first line of a
/// block written before blocks had one, which served `*.hatchway`).
fn block_suffix(begin_line: &str) -> Option<&str> {
    let rest = begin_line.trim().strip_prefix(BEGIN)?.trim_start();
    let suffix = rest.strip_prefix("*.")?;
    Some(suffix.split_whitespace().next().unwrap_or_default())
}

/// Splits `config` into its hatchway blocks (suffix, text) and the rest
/// (without the blank line that followed each block).
fn split(config: &str) -> (Vec<(String, String)>, String) {
    let mut blocks = Vec::new();
    let mut rest = String::new();
    let mut current: Option<(String, String)> = None;
    let mut just_removed = false;
    for line in config.split_inclusive('\n') {
        let trimmed = line.trim();
        if let Some((_, text)) = current.as_mut() {
            text.push_str(line);
            if trimmed.starts_with(END) {
                // A block that ended the file without a newline gets one:
                // it is written back before other text.
                if !text.ends_with('\n') {
                    text.push('\n');
                }
                blocks.push(current.take().expect("inside a block"));
                just_removed = true;
            }
            continue;
        }
        if trimmed.starts_with(BEGIN) {
            let suffix = block_suffix(trimmed).unwrap_or(HOST_SUFFIX).to_owned();
            current = Some((suffix, line.to_owned()));
            continue;
        }
        if just_removed && trimmed.is_empty() {
            just_removed = false;
            continue;
        }
        just_removed = false;
        rest.push_str(line);
    }
    // An unterminated block: keep what was there, as it was.
    if let Some((_, text)) = current {
        rest.push_str(&text);
    }
    (blocks, rest)
}

/// Puts `blocks` first, `*.hatchway` (which also matches every
/// per-context name) last among them: ssh takes the first value it finds.
fn join(mut blocks: Vec<(String, String)>, rest: &str) -> String {
    blocks.sort_by_key(|(suffix, _)| suffix == HOST_SUFFIX);
    let mut out: String = blocks
        .iter()
        .map(|(_, text)| text.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    if !out.is_empty() && !rest.is_empty() {
        out.push('\n');
    }
    out.push_str(rest);
    out
}

/// `config` without the block for `*.suffix`.
pub fn without_block(config: &str, suffix: &str) -> String {
    let (mut blocks, rest) = split(config);
    blocks.retain(|(s, _)| s != suffix);
    join(blocks, &rest)
}

/// `config` with `block` (for `*.suffix`) among the hatchway blocks at the
/// top, replacing any earlier block for the same suffix.
pub fn with_block(config: &str, suffix: &str, block: &str) -> String {
    let (mut blocks, rest) = split(config);
    blocks.retain(|(s, _)| s != suffix);
    blocks.insert(0, (suffix.to_owned(), block.to_owned()));
    join(blocks, &rest)
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

    fn sample(suffix: &str) -> String {
        block(
            Path::new("/bin/kubectl-hatch"),
            suffix,
            &["--server".into(), "https://r:8443".into()],
            Path::new("/k/known_hosts"),
        )
        .unwrap()
    }

    #[test]
    fn the_block_proxies_hatchway_hosts_and_checks_keys() {
        let b = sample("dev.hatchway");
        assert!(b.starts_with("# BEGIN hatchway *.dev.hatchway "), "{b}");
        assert!(b.contains("Host *.dev.hatchway\n"), "{b}");
        assert!(b.contains("    User _\n"), "{b}");
        assert!(
            b.contains(
                "ProxyCommand /bin/kubectl-hatch connect-ssh %n --login %r --host-suffix dev.hatchway \
                 --known-hosts /k/known_hosts --server https://r:8443\n"
            ),
            "{b}"
        );
        assert!(b.contains("UserKnownHostsFile \"/k/known_hosts\"\n"), "{b}");
        assert!(b.contains("StrictHostKeyChecking yes\n"), "{b}");
        assert!(b.ends_with("# END hatchway *.dev.hatchway\n"), "{b}");
    }

    #[test]
    fn adding_is_idempotent_and_removing_restores_the_rest() {
        let user = "Host example\n    User me\n";
        let once = with_block(user, "hatchway", &sample("hatchway"));
        let twice = with_block(&once, "hatchway", &sample("hatchway"));
        assert_eq!(once, twice);
        assert_eq!(once.matches(BEGIN).count(), 1);
        assert!(once.starts_with(BEGIN));
        assert_eq!(without_block(&twice, "hatchway"), user);
        assert_eq!(
            with_block("", "hatchway", &sample("hatchway")),
            sample("hatchway")
        );
        assert_eq!(without_block(&sample("hatchway"), "hatchway"), "");
    }

    #[test]
    fn each_context_has_its_block_and_the_catch_all_comes_last() {
        let user = "Host *\n    ForwardAgent no\n";
        let config = with_block(user, "hatchway", &sample("hatchway"));
        let config = with_block(&config, "dev.hatchway", &sample("dev.hatchway"));
        let config = with_block(&config, "prod.hatchway", &sample("prod.hatchway"));
        let order: Vec<&str> = config.lines().filter(|l| l.starts_with("Host ")).collect();
        assert_eq!(
            order,
            [
                "Host *.prod.hatchway",
                "Host *.dev.hatchway",
                "Host *.hatchway",
                "Host *"
            ]
        );
        let config = without_block(&config, "dev.hatchway");
        assert!(
            !config.contains("*.dev.hatchway") && config.contains("*.prod.hatchway"),
            "{config}"
        );
        assert!(config.ends_with(user), "{config}");
    }

    /// Found by the `ssh_config` fuzz target: an empty suffix wrote `Host
    /// *.` and a marker line that named another suffix, so writing the
    /// block again added a second one; a newline in any argument (a
    /// kubeconfig context's name) would have started a directive of its own.
    #[test]
    fn a_block_that_cannot_be_written_as_given_is_refused() {
        let exe = Path::new("/bin/kubectl-hatch");
        let known_hosts = Path::new("/k/known_hosts");
        for suffix in [
            "",
            ".",
            "a b",
            "x.hatchway\nHost *",
            "*.hatchway",
            "a\"b",
            "hatchway.",
        ] {
            assert!(block(exe, suffix, &[], known_hosts).is_err(), "{suffix:?}");
        }
        let injected = ["--context".to_owned(), "dev\n    ProxyCommand evil".to_owned()];
        assert!(block(exe, "hatchway", &injected, known_hosts).is_err());
        assert!(block(Path::new("/bin/a\rb"), "hatchway", &[], known_hosts).is_err());
        for path in ["/k/known \"hosts", "/k/a\\b", "/k/a\nb"] {
            assert!(block(exe, "hatchway", &[], Path::new(path)).is_err(), "{path:?}");
        }
        assert!(block(exe, "kind-dev.hatchway", &[], Path::new("/k/50% sure")).is_ok());
    }

    /// Found by the `ssh_config` fuzz target: a block that ended the file
    /// without a newline was moved before the rest and written again with
    /// one more blank line each time.
    #[test]
    fn a_block_at_the_end_of_a_file_without_a_newline_is_rewritten_once() {
        let config = "Host x\n\n# BEGIN hatchway *.old.hatchway (written by ...)\nHost *.old.hatchway\n# END hatchway *.old.hatchway";
        let once = with_block(config, "dev.hatchway", &sample("dev.hatchway"));
        assert_eq!(with_block(&once, "dev.hatchway", &sample("dev.hatchway")), once);
        assert_eq!(
            without_block(&once, "dev.hatchway"),
            without_block(config, "dev.hatchway")
        );
    }

    #[test]
    fn a_block_written_before_contexts_is_the_catch_all_one() {
        let legacy = "# BEGIN hatchway (written by `kubectl hatch config-ssh`; changes here are replaced)\n\
                      Host *.hatchway\n    User _\n# END hatchway\n\nHost x\n";
        let config = with_block(legacy, "hatchway", &sample("hatchway"));
        assert_eq!(config.matches(BEGIN).count(), 1, "{config}");
        assert!(config.ends_with("Host x\n"), "{config}");
    }
}
