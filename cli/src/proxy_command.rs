//! The ProxyCommand line ssh runs: this binary's `connect-ssh`, quoted for
//! the shell ssh hands it to, with `%` escaped from ssh's own expansion.

use std::path::Path;

/// `word` quoted for `sh` when it needs to be.
pub fn sh_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./:@+=,".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// `value` with `%` doubled, as ssh's configuration expects.
pub fn escape_percent(value: &str) -> String {
    value.replace('%', "%%")
}

/// `<exe> connect-ssh <host> <args…>`, ready for `ProxyCommand`. `host` is
/// inserted unquoted and unescaped (it may be an ssh token such as `%n`).
pub fn connect_ssh(exe: &Path, host: &str, args: &[String]) -> String {
    let mut line = escape_percent(&sh_quote(&exe.to_string_lossy()));
    line.push_str(" connect-ssh ");
    line.push_str(host);
    for arg in args {
        line.push(' ');
        line.push_str(&escape_percent(&sh_quote(arg)));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_and_percents_escaped() {
        assert_eq!(sh_quote("web-1"), "web-1");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(
            connect_ssh(
                Path::new("/opt/my bin/kubectl-hatch"),
                "%n",
                &["--ca-file".into(), "/tmp/50%/ca.pem".into()]
            ),
            "'/opt/my bin/kubectl-hatch' connect-ssh %n --ca-file '/tmp/50%%/ca.pem'"
        );
    }
}
