//! The read-only WebDAV both the sidecar (live logs) and the router (saved
//! logs) speak: paths, byte ranges and PROPFIND answers, without I/O.
//!
//! A log tree is a collection whose members are files, plus one
//! sub-collection, `sessions/`, of terminal recordings (`sessions/{id}.cast`).
//! URLs are a prefix followed by `/`, `/{name}`, `/sessions/` or
//! `/sessions/{name}`; hrefs in answers use the same prefix, so the
//! router's user-visible paths come back right.

use std::time::SystemTime;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

/// The methods a read-only tree answers.
pub const ALLOW: &str = "GET, HEAD, OPTIONS, PROPFIND";

/// Characters escaped in href path segments.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/');

/// What a path under the prefix names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The collection itself.
    Root,
    /// One file, by its decoded name.
    File(String),
    /// The recordings' collection, `sessions/`.
    Recordings,
    /// One recording, `sessions/{name}`: its decoded name.
    Recording(String),
}

/// The recordings' collection's name in the tree.
pub const RECORDINGS: &str = "sessions";

impl Target {
    /// Parses what follows the prefix (`""`, `/`, `/name`, still
    /// percent-encoded). Names with `/`, a control character (NUL among
    /// them), or a leading `.` never resolve: there is no path out of the
    /// tree, and no name a listing could not write as it is.
    pub fn parse(rest: &str) -> Result<Self, String> {
        let rest = rest.strip_prefix('/').unwrap_or(rest);
        if rest.is_empty() {
            return Ok(Target::Root);
        }
        let name = percent_decode_str(rest)
            .decode_utf8()
            .map_err(|_| "file names are UTF-8".to_owned())?;
        let single =
            |name: &str| !(name.is_empty() || name.contains('/') || name.starts_with('.')) && listable(name);
        if let Some(inner) = name.strip_prefix(RECORDINGS) {
            match inner.strip_prefix('/') {
                _ if inner.is_empty() => return Ok(Target::Recordings),
                Some("") => return Ok(Target::Recordings),
                Some(file) if single(file) => return Ok(Target::Recording(file.to_owned())),
                Some(_) => return Err(format!("no such recording {name:?}")),
                None => {}
            }
        }
        if !single(&name) {
            return Err(format!("no such log file {name:?}"));
        }
        Ok(Target::File(name.into_owned()))
    }

    /// The name a listing gives what this names (`sessions/{name}` for a
    /// recording, `sessions/` for their collection).
    pub fn name(&self) -> String {
        match self {
            Target::Root => String::new(),
            Target::File(name) => name.clone(),
            Target::Recordings => format!("{RECORDINGS}/"),
            Target::Recording(name) => format!("{RECORDINGS}/{name}"),
        }
    }
}

/// Whether a name can be listed as it is: a control character (a newline,
/// a tab, an escape) would forge a line of the plain listing or make the
/// PROPFIND answer something that is not XML. The workload names the files
/// of its log directory; such names are left out of listings and never
/// resolve.
fn listable(name: &str) -> bool {
    !name.chars().any(char::is_control)
}

/// A file's properties in a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileProps {
    /// Its name: `NAME`, `sessions/NAME`, or `sessions/` (a name ending in
    /// `/` is a collection).
    pub name: String,
    /// Its size in bytes.
    pub len: u64,
    /// When it last changed.
    pub modified: SystemTime,
}

/// A single `bytes=` range resolved against a file's size: `Ok(None)` for
/// the whole file (no range, another unit, or several ranges, as RFC 9110
/// allows), `Err(())` when unsatisfiable. Inclusive bounds.
#[allow(clippy::result_unit_err)]
pub fn parse_range(value: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (start, end) = spec.split_once('-').ok_or(())?;
    let (start, end) = match (start.trim(), end.trim()) {
        ("", "") => return Err(()),
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| ())?;
            if n == 0 || size == 0 {
                return Err(());
            }
            (size.saturating_sub(n), size - 1)
        }
        (start, end) => {
            let start: u64 = start.parse().map_err(|_| ())?;
            let end = if end.is_empty() {
                size.saturating_sub(1)
            } else {
                end.parse::<u64>().map_err(|_| ())?
            };
            if start >= size || end < start {
                return Err(());
            }
            (start, end.min(size - 1))
        }
    };
    Ok(Some((start, end)))
}

/// Checks a PROPFIND `Depth` header (absent means 1 here: the tree is flat).
pub fn check_depth(depth: Option<&str>) -> Result<&str, String> {
    match depth.unwrap_or("1") {
        d @ ("0" | "1" | "infinity") => Ok(d),
        d => Err(format!("Depth {d:?} is not 0, 1 or infinity")),
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The href of a file under `prefix` (no trailing slash).
pub fn href(prefix: &str, name: &str) -> String {
    let segments: Vec<String> = name
        .split('/')
        .map(|segment| utf8_percent_encode(segment, SEGMENT).to_string())
        .collect();
    format!("{prefix}/{}", segments.join("/"))
}

fn response_xml(href: &str, name: &str, file: Option<&FileProps>) -> String {
    let modified = file.map_or(SystemTime::UNIX_EPOCH, |f| f.modified);
    let props = match file {
        Some(file) if !file.name.ends_with('/') => format!(
            "<D:resourcetype/><D:getcontentlength>{}</D:getcontentlength><D:getcontenttype>text/plain; charset=utf-8</D:getcontenttype>",
            file.len
        ),
        _ => "<D:resourcetype><D:collection/></D:resourcetype>".to_owned(),
    };
    format!(
        "<D:response><D:href>{}</D:href><D:propstat><D:prop><D:displayname>{}</D:displayname>{props}<D:getlastmodified>{}</D:getlastmodified></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>",
        xml_escape(href),
        xml_escape(name),
        httpdate::fmt_http_date(modified)
    )
}

/// The PROPFIND answer (a `207 Multi-Status` body) for the collection
/// (with its members unless `depth` is `0`) or for one file.
pub fn multistatus(
    prefix: &str,
    target: &Target,
    depth: &str,
    files: &[FileProps],
) -> Result<String, String> {
    let mut body = String::from(r#"<?xml version="1.0" encoding="utf-8"?><D:multistatus xmlns:D="DAV:">"#);
    match target {
        Target::Root => {
            body.push_str(&response_xml(&format!("{prefix}/"), "", None));
            if depth != "0" {
                for file in files.iter().filter(|f| listable(&f.name)) {
                    body.push_str(&response_xml(&href(prefix, &file.name), &file.name, Some(file)));
                }
            }
        }
        Target::Recordings => {
            let name = target.name();
            body.push_str(&response_xml(&href(prefix, &name), &name, None));
            if depth != "0" {
                for file in files.iter().filter(|f| listable(&f.name)) {
                    body.push_str(&response_xml(&href(prefix, &file.name), &file.name, Some(file)));
                }
            }
        }
        Target::File(_) | Target::Recording(_) => {
            let name = target.name();
            let file = files
                .iter()
                .find(|f| f.name == name)
                .ok_or_else(|| format!("no such log file {name:?}"))?;
            body.push_str(&response_xml(&href(prefix, &name), &name, Some(file)));
        }
    }
    body.push_str("</D:multistatus>");
    Ok(body)
}

/// The plain listing a GET of the collection answers: `name<TAB>size`,
/// one line per file whose name can be listed.
pub fn listing(files: &[FileProps]) -> String {
    files
        .iter()
        .filter(|f| listable(&f.name))
        .map(|f| format!("{}\t{}\n", f.name, f.len))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_against_the_size() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=50-1000", 100), Ok(Some((50, 99))));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(parse_range("items=0-1", 100), Ok(None));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=-0", 100), Err(()));
        assert_eq!(parse_range("bytes=5-2", 100), Err(()));
        assert_eq!(parse_range("bytes=-", 100), Err(()));
    }

    /// Found by the `webdav` fuzz target: a log file the workload named
    /// `a\n…` forged lines of the plain listing, and one with an escape
    /// made the PROPFIND answer invalid XML.
    #[test]
    fn names_with_control_characters_are_never_listed_or_served() {
        let file = |name: &str| FileProps {
            name: name.into(),
            len: 1,
            modified: SystemTime::UNIX_EPOCH,
        };
        let files = [file("ok.txt"), file("evil\t9\nfake.txt"), file("\u{1b}[31m")];
        assert_eq!(listing(&files), "ok.txt\t1\n");
        let body = multistatus("/log", &Target::Root, "1", &files).unwrap();
        assert_eq!(body.matches("<D:response>").count(), 2, "{body}");
        assert!(!body.chars().any(char::is_control), "{body}");
        for bad in ["/evil%0Afake.txt", "/%1B%5B31m", "/sessions/a%09b"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn traversal_names_never_resolve() {
        assert_eq!(Target::parse(""), Ok(Target::Root));
        assert_eq!(Target::parse("/"), Ok(Target::Root));
        assert_eq!(
            Target::parse("/stdout.txt"),
            Ok(Target::File("stdout.txt".into()))
        );
        assert_eq!(Target::parse("/a%20b"), Ok(Target::File("a b".into())));
        for bad in ["/..", "/.", "/%2e%2e", "/a/b", "/a%2fb", "/.hidden", "/a%00"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Target::parse("/sessions"), Ok(Target::Recordings));
        assert_eq!(Target::parse("/sessions/"), Ok(Target::Recordings));
        assert_eq!(
            Target::parse("/sessions/ab.cast"),
            Ok(Target::Recording("ab.cast".into()))
        );
        assert_eq!(Target::parse("/sessionsx"), Ok(Target::File("sessionsx".into())));
        for bad in [
            "/sessions/..",
            "/sessions/a/b",
            "/sessions/.x",
            "/sessions/%2e%2e",
            "/sessions//a",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn propfind_answers_name_every_file_with_escaped_hrefs() {
        let files = [FileProps {
            name: "a b&c.txt".into(),
            len: 7,
            modified: SystemTime::UNIX_EPOCH,
        }];
        let xml = multistatus("/p/log", &Target::Root, "1", &files).unwrap();
        assert!(xml.contains("<D:href>/p/log/</D:href>"), "{xml}");
        assert!(xml.contains("<D:href>/p/log/a%20b&amp;c.txt</D:href>"), "{xml}");
        assert!(
            xml.contains("<D:getcontentlength>7</D:getcontentlength>"),
            "{xml}"
        );
        let shallow = multistatus("/p/log", &Target::Root, "0", &files).unwrap();
        assert!(!shallow.contains("getcontentlength"), "{shallow}");
        assert!(multistatus("/p/log", &Target::File("nope".into()), "0", &files).is_err());
        assert_eq!(
            check_depth(Some("2")),
            Err("Depth \"2\" is not 0, 1 or infinity".into())
        );
        assert_eq!(listing(&files), "a b&c.txt\t7\n");
    }
}
