//! The read-only WebDAV of the log tree (`hatchway_api::webdav`, served by
//! the sidecar for live logs and the router for saved ones): request
//! paths, `Range` and `Depth` from the user, file names from the
//! workload's log directory.
//!
//! - A path names the root, the recordings, or one file by a single name
//!   (no `/`, NUL or leading `.`), and that target's href parses back to
//!   it.
//! - A satisfiable range lies inside the file; only a `bytes=` range can
//!   be unsatisfiable.
//! - `Depth` is `0`, `1` or `infinity` (absent: `1`), or refused.
//! - Whatever the files are named, the plain listing has one line per
//!   file that reads back as its name and size, and the PROPFIND answer is
//!   XML (no character XML forbids) with one response per file listed.

#![no_main]

use std::time::{Duration, SystemTime};

use hatchway_api::webdav::{self, FileProps, Target};
use hatchway_fuzz::Fields;
use libfuzzer_sys::fuzz_target;

// Fields: the path after the prefix, `Range`, the file's size, `Depth`
// (absent: none), the router's prefix (`1`), then one field per file:
// `NAME<TAB>SIZE`.
fuzz_target!(|data: &[u8]| {
    let mut fields = Fields::new(data);
    let rest = fields.text();
    let range = fields.text();
    let size: u64 = fields.number();
    let depth = Some(fields.text()).filter(|d| !d.is_empty());
    let router_prefix = fields.flag();
    let files: Vec<(String, u64, u32)> = fields
        .rest()
        .into_iter()
        .enumerate()
        .map(|(i, file)| match file.rsplit_once('\t') {
            Some((name, len)) => (name.to_owned(), len.parse().unwrap_or(0), i as u32),
            None => (file, 0, i as u32),
        })
        .collect();
    let target = target(&rest);
    ranges(&range, size);
    let depth = match webdav::check_depth(depth.as_deref()) {
        Ok(d) => {
            assert!(matches!(d, "0" | "1" | "infinity"));
            assert!(depth.is_none() || depth.as_deref() == Some(d));
            d
        }
        Err(_) => {
            assert!(depth.is_some());
            "1"
        }
    };
    // Names as a directory can hold them: no `/` or NUL, no leading `.`.
    let files: Vec<FileProps> = files
        .into_iter()
        .filter(|(name, _, _)| !name.is_empty() && !name.contains(['/', '\0']) && !name.starts_with('.'))
        .map(|(name, len, secs)| FileProps {
            name,
            len,
            modified: SystemTime::UNIX_EPOCH + Duration::from_secs(secs.into()),
        })
        .collect();
    listing(&files);
    let prefix = if router_prefix {
        "/v1/namespaces/ns/containers/web-1/log"
    } else {
        "/log"
    };
    if let Some(target) = target {
        propfind(prefix, &target, depth, &files);
    }
});

fn target(rest: &str) -> Option<Target> {
    let target = Target::parse(rest).ok()?;
    let single = |name: &str| !name.is_empty() && !name.contains(['/', '\0']) && !name.starts_with('.');
    match &target {
        Target::File(name) | Target::Recording(name) => assert!(single(name), "{target:?}"),
        Target::Root | Target::Recordings => {}
    }
    let href = webdav::href("", &target.name());
    assert_eq!(Target::parse(&href), Ok(target.clone()), "{href:?}");
    Some(target)
}

fn ranges(value: &str, size: u64) {
    match webdav::parse_range(value, size) {
        Ok(Some((start, end))) => assert!(start <= end && end < size, "{value:?} of {size}: {start}-{end}"),
        Ok(None) => {}
        Err(()) => assert!(value.trim().starts_with("bytes="), "{value:?} refused"),
    }
}

fn listing(files: &[FileProps]) {
    let listing = webdav::listing(files);
    let mut lines = listing.lines();
    for file in files
        .iter()
        .filter(|f| Target::parse(&webdav::href("", &f.name)).is_ok())
    {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("{:?} is missing from {listing:?}", file.name));
        assert_eq!(
            line.rsplit_once('\t'),
            Some((file.name.as_str(), file.len.to_string().as_str()))
        );
    }
    assert_eq!(lines.next(), None, "{listing:?} lists more files than there are");
}

fn propfind(prefix: &str, target: &Target, depth: &str, files: &[FileProps]) {
    let Ok(body) = webdav::multistatus(prefix, target, depth, files) else {
        return;
    };
    // XML 1.0's characters: no control character but tab and newlines.
    assert!(
        !body
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r')),
        "{body:?} is not XML"
    );
    let responses = body.matches("<D:response>").count();
    assert_eq!(responses, body.matches("</D:response>").count());
    assert_eq!(responses, body.matches("<D:displayname>").count(), "{body:?}");
    let listed = files
        .iter()
        .filter(|f| Target::parse(&webdav::href("", &f.name)).is_ok())
        .count();
    match target {
        Target::Root | Target::Recordings if depth != "0" => assert_eq!(responses, 1 + listed, "{body:?}"),
        _ => assert_eq!(responses, 1, "{body:?}"),
    }
}
