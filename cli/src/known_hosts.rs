//! The known_hosts file kubectl-hatch keeps for Containers' SSH host keys
//! (one line per `NAME.NS.hatchway` alias, replaced when the key changes:
//! the key comes from the Container's status, read over verified TLS).

use std::path::{Path, PathBuf};

/// kubectl-hatch's cache directory: `$XDG_CACHE_HOME/hatchway`, else
/// `~/.cache/hatchway`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("hatchway")
}

/// `$HATCHWAY_KNOWN_HOSTS`, else `known_hosts` in the cache directory.
pub fn default_path() -> PathBuf {
    match std::env::var_os("HATCHWAY_KNOWN_HOSTS").filter(|p| !p.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => cache_dir().join("known_hosts"),
    }
}

/// `text` with the lines for `alias` replaced by `alias key`.
pub fn with_entry(text: &str, alias: &str, key: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let hosts = line.split_whitespace().next().unwrap_or("");
        if hosts.split(',').any(|h| h == alias) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&format!("{alias} {}\n", key.trim()));
    out
}

/// Writes the entry for `alias` into the file at `path` (created with its
/// directory when missing).
pub fn record(path: &Path, alias: &str, key: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let current = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, with_entry(&current, alias, key))?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_replaces_the_old_key_of_its_alias_only() {
        let text = "a.ns.hatchway ssh-ed25519 OLD\nb.ns.hatchway ssh-ed25519 B\n";
        assert_eq!(
            with_entry(text, "a.ns.hatchway", "ssh-ed25519 NEW\n"),
            "b.ns.hatchway ssh-ed25519 B\na.ns.hatchway ssh-ed25519 NEW\n"
        );
    }
}
