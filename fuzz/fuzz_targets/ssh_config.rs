//! The `~/.ssh/config` block `kubectl hatch config-ssh` writes
//! (`kubectl_hatch::ssh_config`, `proxy_command`): a host suffix (the
//! kubeconfig context's name, or `--host-suffix`), paths and arguments
//! (kubeconfig, context, server URL, CA file), into a file that may hold
//! anything.
//!
//! - The block is refused or it is exactly its seven lines: `Host` names
//!   the one pattern `*.SUFFIX`; the `ProxyCommand` line, expanded as ssh
//!   does (`%%`, `%n`, `%r`) and split as `sh` does, gives back exactly
//!   the program, `connect-ssh`, the host, the login and every argument;
//!   `UserKnownHostsFile` reads back as the path. No input adds a line or
//!   a directive.
//! - Adding a block is idempotent, and removing it gives back what the
//!   file had without it.

#![no_main]

use std::path::Path;

use hatchway_fuzz::Fields;
use kubectl_hatch::ssh_config;
use libfuzzer_sys::fuzz_target;

// Fields: the program, the suffix, the known_hosts path, the file's
// text, then one field per argument.
fuzz_target!(|data: &[u8]| {
    let mut fields = Fields::new(data);
    let exe = fields.text();
    let suffix = fields.text();
    let known_hosts = fields.text();
    let config = fields.text();
    let args = fields.rest();
    // As config-ssh calls it: the program and the file are absolute paths.
    let (exe, known_hosts) = (format!("/{exe}"), format!("/{known_hosts}"));
    let Ok(block) = ssh_config::block(Path::new(&exe), &suffix, &args, Path::new(&known_hosts)) else {
        return;
    };
    assert!(!block.contains('\0'), "{block:?}");
    let lines: Vec<&str> = block.lines().collect();
    assert_eq!(lines.len(), 7, "{block:?}");
    assert!(block.ends_with('\n'));
    assert!(
        lines[0].starts_with(&format!("{} *.{suffix} ", ssh_config::BEGIN)),
        "{block:?}"
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["Host", &format!("*.{suffix}")]
    );
    assert_eq!(lines[2], "    User _");
    let proxy = lines[3].strip_prefix("    ProxyCommand ").expect("ProxyCommand");
    let mut expected = vec![
        exe.clone(),
        "connect-ssh".to_owned(),
        "HOST".to_owned(),
        "--login".to_owned(),
        "USER".to_owned(),
        "--host-suffix".to_owned(),
        suffix.clone(),
        "--known-hosts".to_owned(),
        known_hosts.clone(),
    ];
    expected.extend(args.iter().cloned());
    let expanded = ssh_tokens(proxy.trim_end()).expect("ssh expands the line");
    assert_eq!(sh_words(&expanded), Some(expected), "{proxy:?}");
    let file = lines[4]
        .strip_prefix("    UserKnownHostsFile ")
        .expect("UserKnownHostsFile");
    let file = ssh_argument(file).and_then(|f| ssh_tokens(&f));
    assert_eq!(file.as_deref(), Some(known_hosts.as_str()), "{:?}", lines[4]);
    assert_eq!(lines[5], "    StrictHostKeyChecking yes");
    assert!(
        lines[6].starts_with(&format!("{} *.{suffix}", ssh_config::END)),
        "{block:?}"
    );

    let once = ssh_config::with_block(&config, &suffix, &block);
    assert!(once.contains(&block), "{once:?}");
    assert_eq!(
        ssh_config::with_block(&once, &suffix, &block),
        once,
        "not idempotent"
    );
    assert_eq!(
        ssh_config::without_block(&once, &suffix),
        ssh_config::without_block(&config, &suffix),
        "removing the block changed the rest"
    );
});

/// ssh's `%` expansion of a ProxyCommand (`%n` the host, `%r` the user);
/// `None` for a token ssh refuses.
fn ssh_tokens(line: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            '%' => out.push('%'),
            'n' => out.push_str("HOST"),
            'r' => out.push_str("USER"),
            _ => return None,
        }
    }
    Some(out)
}

/// A line split into words as `sh` does for words `sh_quote` writes:
/// blanks separate, `'…'` quotes, `\` escapes; `None` for anything else
/// the shell would read differently (`$`, backquotes, globs, …).
fn sh_words(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' => words.extend(word.take()),
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => w.push(c),
                    }
                }
            }
            '\\' => word.get_or_insert_with(String::new).push(chars.next()?),
            c if c.is_ascii_alphanumeric() || "_-./:@+=,%".contains(c) => {
                word.get_or_insert_with(String::new).push(c)
            }
            _ => return None,
        }
    }
    words.extend(word);
    Some(words)
}

/// One argument of an ssh_config line as OpenSSH reads it: `"…"` quotes
/// (`\"` and `\\` escaped inside), the whole value one word.
fn ssh_argument(value: &str) -> Option<String> {
    let inner = value.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                c @ ('"' | '\\' | '\'') => out.push(c),
                other => {
                    out.push('\\');
                    out.push(other);
                }
            },
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}
