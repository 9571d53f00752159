//! The known_hosts file `kubectl hatch` writes (`kubectl_hatch::known_hosts`):
//! a Container's host key (from the router's answer or the Container's
//! status) under its ssh alias (`NAME.NS.SUFFIX`, partly the user's
//! input), into a file that may hold anything.
//!
//! - Whatever the alias and key, the file written either has exactly one
//!   entry for the alias — the last line, `ALIAS KEY` — and every other
//!   line is one that was there, or the entry is refused: a key or alias
//!   never adds a line, a host pattern or a marker of its own.

#![no_main]

use hatchway_fuzz::Fields;
use kubectl_hatch::known_hosts;
use libfuzzer_sys::fuzz_target;

// Fields: the file's text, the alias, the key.
fuzz_target!(|data: &[u8]| {
    let mut fields = Fields::new(data);
    let (text, alias, key) = (fields.text(), fields.text(), fields.text());
    let Ok(written) = known_hosts::with_entry(&text, &alias, &key) else {
        return;
    };
    let lines: Vec<&str> = written.lines().collect();
    let (last, before) = lines.split_last().expect("at least the entry");
    // The entry: the alias alone as its host field, then the key.
    let mut fields = last.split_whitespace();
    assert_eq!(fields.next(), Some(alias.as_str()), "{last:?}");
    assert_eq!(
        fields.collect::<Vec<_>>(),
        key.split_whitespace().collect::<Vec<_>>(),
        "{last:?}"
    );
    assert!(
        !alias.starts_with(['@', '|', '!', '#']),
        "{alias:?} is a marker, hash, negation or comment"
    );
    assert!(!alias.contains([',', '*', '?']), "{alias:?} is a pattern");
    // Nothing else names it; nothing else was made up.
    // (A last line of a lone `\r` comes back as an empty one.)
    let old: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).collect();
    for line in before {
        let hosts = line.split_whitespace().next().unwrap_or("");
        assert!(!hosts.split(',').any(|h| h == alias), "a second entry {line:?}");
        assert!(
            old.contains(&line.trim_end_matches('\r')),
            "{line:?} was not in the file"
        );
    }
    assert!(written.ends_with('\n'));
});
