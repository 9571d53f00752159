//! Read-only WebDAV of the log directory: GET, HEAD, OPTIONS, PROPFIND
//! (Depth 0 and 1), with single byte ranges.
//!
//! The tree is flat: the regular files directly in the log directory
//! (`stdout.txt`, `stderr.txt`, `usage.txt`, rotations) plus `gateway.txt`
//! from the sidecar's own audit directory. The log directory is shared with
//! the workload, which could plant symlinks or FIFOs there, so files are
//! opened with `O_NOFOLLOW | O_NONBLOCK` and served only if the opened file
//! is a regular file; names with `/`, `..` or NUL never resolve. There is no
//! path that leads outside the two directories.
//!
//! URLs: a request path is `X-Webdav-Prefix` (default `/log`) followed by
//! `/` or `/{name}`; hrefs in answers use the same prefix, so the router can
//! forward `/v1/namespaces/NS/containers/NAME/log/...` unchanged. The only
//! `X-Webdav-Source` a flat tree has is `/` (the default).

use std::fs::Metadata;
use std::io::SeekFrom;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::SystemTime;

use bytes::Bytes;
use futures::TryStreamExt;
use http::{HeaderMap, Method, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::body::{Body, empty, full, text};
use crate::report::AUDIT_FILE;

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

/// The default `X-Webdav-Prefix`: the gateway's own path.
pub const DEFAULT_PREFIX: &str = "/log";

/// Where the files are.
#[derive(Clone, Debug)]
pub struct LogTree {
    /// The shared log directory the shim writes.
    pub log_dir: PathBuf,
    /// The sidecar's private directory holding `gateway.txt`.
    pub audit_dir: PathBuf,
}

struct Entry {
    name: String,
    meta: Metadata,
}

/// Answers one WebDAV request. `path` is the request's path (still
/// percent-encoded).
pub async fn serve(tree: &LogTree, method: &Method, path: &str, headers: &HeaderMap) -> Response<Body> {
    let prefix = header_str(headers, hatchway_api::wire::WEBDAV_PREFIX).unwrap_or(DEFAULT_PREFIX);
    let prefix = prefix.trim_end_matches('/');
    let source = header_str(headers, hatchway_api::wire::WEBDAV_SOURCE).unwrap_or("/");
    if !source.trim_matches('/').is_empty() {
        return text(
            StatusCode::NOT_FOUND,
            format!("no such log directory {source:?}: the log tree is flat"),
        );
    }
    let Some(rest) = path.strip_prefix(prefix) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("path {path:?} is not under the log prefix {prefix:?}"),
        );
    };
    let target = match Target::parse(rest) {
        Ok(target) => target,
        Err(message) => return text(StatusCode::NOT_FOUND, message),
    };
    match *method {
        Method::OPTIONS => options(),
        Method::GET | Method::HEAD => {
            let head = *method == Method::HEAD;
            match target {
                Target::Root => list_plain(tree, head).await,
                Target::File(name) => get_file(tree, &name, headers, head).await,
            }
        }
        _ if method.as_str() == "PROPFIND" => propfind(tree, prefix, &target, headers).await,
        _ => {
            let mut response = text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed: the log tree is read-only"),
            );
            response
                .headers_mut()
                .insert(header::ALLOW, ALLOW.parse().unwrap());
            response
        }
    }
}

const ALLOW: &str = "GET, HEAD, OPTIONS, PROPFIND";

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

enum Target {
    Root,
    File(String),
}

impl Target {
    fn parse(rest: &str) -> Result<Self, String> {
        let rest = rest.strip_prefix('/').unwrap_or(rest);
        if rest.is_empty() {
            return Ok(Target::Root);
        }
        let name = percent_decode_str(rest)
            .decode_utf8()
            .map_err(|_| "file names are UTF-8".to_owned())?;
        if name.contains('/') || name.contains('\0') || name == "." || name == ".." || name.starts_with('.') {
            return Err(format!("no such log file {name:?}"));
        }
        Ok(Target::File(name.into_owned()))
    }
}

fn options() -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::ALLOW, ALLOW)
        .header("dav", "1")
        .header(header::CONTENT_LENGTH, "0")
        .body(empty())
        .unwrap()
}

/// Opens a file of the tree without following symlinks or blocking on a
/// FIFO, and checks the opened file is a regular one.
async fn open(tree: &LogTree, name: &str) -> Option<(tokio::fs::File, Metadata)> {
    let path = if name == AUDIT_FILE {
        tree.audit_dir.join(name)
    } else {
        tree.log_dir.join(name)
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    meta.is_file().then(|| (tokio::fs::File::from_std(file), meta))
}

async fn entries(tree: &LogTree) -> Vec<Entry> {
    let mut entries = Vec::new();
    if let Ok(mut dir) = tokio::fs::read_dir(&tree.log_dir).await {
        while let Ok(Some(item)) = dir.next_entry().await {
            let Ok(name) = item.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.') || (name == AUDIT_FILE && tree.audit_dir != tree.log_dir) {
                continue;
            }
            // symlink_metadata: a symlink is not a regular file and is skipped.
            if let Ok(meta) = tokio::fs::symlink_metadata(item.path()).await
                && meta.is_file()
            {
                entries.push(Entry { name, meta });
            }
        }
    }
    if tree.audit_dir != tree.log_dir
        && let Ok(meta) = tokio::fs::symlink_metadata(tree.audit_dir.join(AUDIT_FILE)).await
        && meta.is_file()
    {
        entries.push(Entry {
            name: AUDIT_FILE.to_owned(),
            meta,
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    entries
}

async fn list_plain(tree: &LogTree, head: bool) -> Response<Body> {
    let listing: String = entries(tree)
        .await
        .iter()
        .map(|e| format!("{}\t{}\n", e.name, e.meta.len()))
        .collect();
    let len = listing.len();
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CONTENT_LENGTH, len)
        .body(if head { empty() } else { full(listing) })
        .unwrap()
}

/// A single `bytes=` range resolved against a file's size: `Ok(None)` for
/// the whole file, `Err(())` when unsatisfiable.
fn parse_range(value: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        // Multiple ranges: answer with the whole file, as RFC 9110 allows.
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

async fn get_file(tree: &LogTree, name: &str, headers: &HeaderMap, head: bool) -> Response<Body> {
    let Some((mut file, meta)) = open(tree, name).await else {
        return text(StatusCode::NOT_FOUND, format!("no such log file {name:?}"));
    };
    let size = meta.len();
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => None,
        Some(value) => match parse_range(value, size) {
            Ok(range) => range,
            Err(()) => {
                let mut response = text(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    format!("range {value:?} is outside {name} ({size} bytes)"),
                );
                response
                    .headers_mut()
                    .insert(header::CONTENT_RANGE, format!("bytes */{size}").parse().unwrap());
                return response;
            }
        },
    };
    let (status, start, len) = match range {
        Some((start, end)) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        None => (StatusCode::OK, 0, size),
    };
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CONTENT_LENGTH, len)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(
            header::LAST_MODIFIED,
            httpdate::fmt_http_date(meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)),
        );
    if status == StatusCode::PARTIAL_CONTENT {
        builder = builder.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", start + len - 1),
        );
    }
    if head || len == 0 {
        return builder.body(empty()).unwrap();
    }
    if let Err(error) = file.seek(SeekFrom::Start(start)).await {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading {name}: {error}"),
        );
    }
    // The file may grow while it is read: send exactly the length announced.
    let stream = tokio_util::io::ReaderStream::new(file.take(len)).map_ok(Frame::data);
    builder.body(BodyExt::boxed(StreamBody::new(stream))).unwrap()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn response_xml(href: &str, name: &str, meta: Option<&Metadata>) -> String {
    let modified = meta
        .and_then(|m| m.modified().ok())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let props = match meta {
        Some(meta) => format!(
            "<D:resourcetype/><D:getcontentlength>{}</D:getcontentlength><D:getcontenttype>text/plain; charset=utf-8</D:getcontenttype>",
            meta.len()
        ),
        None => "<D:resourcetype><D:collection/></D:resourcetype>".to_owned(),
    };
    format!(
        "<D:response><D:href>{}</D:href><D:propstat><D:prop><D:displayname>{}</D:displayname>{props}<D:getlastmodified>{}</D:getlastmodified></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>",
        xml_escape(href),
        xml_escape(name),
        httpdate::fmt_http_date(modified)
    )
}

async fn propfind(tree: &LogTree, prefix: &str, target: &Target, headers: &HeaderMap) -> Response<Body> {
    let depth = header_str(headers, "depth").unwrap_or("1");
    if !matches!(depth, "0" | "1" | "infinity") {
        return text(
            StatusCode::BAD_REQUEST,
            format!("Depth {depth:?} is not 0, 1 or infinity"),
        );
    }
    let href_of = |name: &str| format!("{prefix}/{}", utf8_percent_encode(name, SEGMENT));
    let mut body = String::from(r#"<?xml version="1.0" encoding="utf-8"?><D:multistatus xmlns:D="DAV:">"#);
    match target {
        Target::Root => {
            body.push_str(&response_xml(&format!("{prefix}/"), "", None));
            if depth != "0" {
                for entry in entries(tree).await {
                    body.push_str(&response_xml(
                        &href_of(&entry.name),
                        &entry.name,
                        Some(&entry.meta),
                    ));
                }
            }
        }
        Target::File(name) => {
            let Some((_, meta)) = open(tree, name).await else {
                return text(StatusCode::NOT_FOUND, format!("no such log file {name:?}"));
            };
            body.push_str(&response_xml(&href_of(name), name, Some(&meta)));
        }
    }
    body.push_str("</D:multistatus>");
    Response::builder()
        .status(StatusCode::MULTI_STATUS)
        .header(header::CONTENT_TYPE, "application/xml; charset=utf-8")
        .body(full(Bytes::from(body)))
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_against_the_size() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=-500", 100), Ok(Some((0, 99))));
        assert_eq!(parse_range("bytes=50-500", 100), Ok(Some((50, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=9-3", 100), Err(()));
        assert_eq!(parse_range("bytes=x-3", 100), Err(()));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(parse_range("items=0-1", 100), Ok(None));
    }

    #[test]
    fn traversal_names_never_resolve() {
        for bad in [
            "/..",
            "/%2e%2e",
            "/a%2fb",
            "/.hidden",
            "/x%00y",
            "/../etc/passwd",
            "/%2e%2e%2fsecret",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad} must not resolve");
        }
        assert!(matches!(Target::parse("/stdout.txt"), Ok(Target::File(n)) if n == "stdout.txt"));
        assert!(matches!(Target::parse("/"), Ok(Target::Root)));
        assert!(matches!(Target::parse(""), Ok(Target::Root)));
    }
}
