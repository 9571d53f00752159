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

/// `text` with the lines for `alias` replaced by `alias key`. Refused
/// unless the alias is one host name (letters, digits, `-`, `.`, `_`: no
/// pattern, list, marker or blank) and the key one line: neither may add
/// an entry of its own.
pub fn with_entry(text: &str, alias: &str, key: &str) -> Result<String, String> {
    if alias.is_empty()
        || !alias
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        return Err(format!(
            "{alias:?} is not a host name a known_hosts entry can name"
        ));
    }
    let key = key.trim();
    if key.is_empty() || key.chars().any(char::is_control) {
        return Err(format!("the host key of {alias} is not one line of text"));
    }
    let mut out = String::new();
    for line in text.lines() {
        let hosts = line.split_whitespace().next().unwrap_or("");
        if hosts.split(',').any(|h| h == alias) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&format!("{alias} {key}\n"));
    Ok(out)
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
    let text = with_entry(&current, alias, key)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_replaces_the_old_key_of_its_alias_only() {
        let text = "a.ns.hatchway ssh-ed25519 OLD\nb.ns.hatchway ssh-ed25519 B\n";
        assert_eq!(
            with_entry(text, "a.ns.hatchway", "ssh-ed25519 NEW\n").unwrap(),
            "b.ns.hatchway ssh-ed25519 B\na.ns.hatchway ssh-ed25519 NEW\n"
        );
    }

    /// Found by the `known_hosts` fuzz target: an empty alias and key wrote
    /// the line " ", and a key with a newline (or an alias with a blank, a
    /// comma or a `*`) could add an entry of its own.
    #[test]
    fn an_alias_or_key_that_is_not_one_entry_is_refused() {
        let text = "a.ns.hatchway ssh-ed25519 A\n";
        for (alias, key) in [
            ("", ""),
            ("a.ns.hatchway", " \n"),
            ("a.ns.hatchway", "ssh-ed25519 K\n* ssh-ed25519 EVIL"),
            ("a.ns.hatchway", "ssh-ed25519 K\r@cert-authority * ssh-ed25519 CA"),
            ("* ssh-ed25519 EVIL\nb", "ssh-ed25519 K"),
            ("a.ns.hatchway,*", "ssh-ed25519 K"),
            ("a b", "ssh-ed25519 K"),
            ("@revoked", "ssh-ed25519 K"),
        ] {
            assert!(with_entry(text, alias, key).is_err(), "{alias:?} {key:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        let error = record(&path, "a.ns.hatchway", "k\n* evil").unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
        assert!(!path.exists());
    }
}
