//! Read-only WebDAV of the log directory: GET, HEAD, OPTIONS, PROPFIND
//! (Depth 0 and 1), with single byte ranges.
//!
//! The tree: the regular files directly in the log directory
//! (`stdout.txt`, `stderr.txt`, `usage.txt`, rotations) plus `gateway.txt`
//! and `sessions/` (terminal recordings, `sessions/{id}.cast`) from the
//! sidecar's own audit directory. The log directory is shared with
//! the workload, which may plant symlinks, FIFOs or directories there and
//! swap them at any time, so every file is resolved beneath the directory
//! handle the sidecar opened at its start ([`LogDir`]): no symlink at any
//! depth, regular files only. A `gateway.txt` in the log directory is the
//! workload's forgery and is never listed or served, as is a `sessions` in
//! it. There is no path that leads outside the two directories.
//!
//! URLs: a request path is `X-Webdav-Prefix` (default `/log`) followed by
//! `/` or `/{name}`; hrefs in answers use the same prefix, so the router can
//! forward `/v1/namespaces/NS/containers/NAME/log/...` unchanged. The only
//! `X-Webdav-Source` a flat tree has is `/` (the default).

use std::fs::Metadata;
use std::io::SeekFrom;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures::TryStreamExt;
use hatchway_api::pod::log_file;
use hatchway_api::webdav::{self, ALLOW, FileProps, RECORDINGS, Target, parse_range};
use http::{HeaderMap, Method, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::body::{Body, empty, full, text};
use crate::logdir::{LogDir, LogEntry as Entry};

/// The default `X-Webdav-Prefix`: the gateway's own path.
pub const DEFAULT_PREFIX: &str = "/log";

/// Where the files are.
#[derive(Clone, Debug)]
pub struct LogTree {
    /// The shared log directory the shim writes, held open.
    pub log_dir: Arc<LogDir>,
    /// The sidecar's private directory holding `gateway.txt`.
    pub audit_dir: PathBuf,
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
                Target::Root => list_plain(entries(tree).await, head),
                Target::Recordings => list_plain(recordings(tree).await, head),
                Target::File(_) | Target::Recording(_) => get_file(tree, &target.name(), headers, head).await,
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

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
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

/// Opens a regular file of the tree by its listed name: `gateway.txt` and
/// `sessions/{id}.cast` from the sidecar's own audit directory, anything
/// else beneath the log directory's handle.
async fn open(tree: &LogTree, name: &str) -> Option<(tokio::fs::File, Metadata)> {
    let tree = tree.clone();
    let name = name.to_owned();
    let opened = tokio::task::spawn_blocking(move || {
        let private = if name == log_file::AUDIT {
            Some(tree.audit_dir.join(log_file::AUDIT))
        } else {
            // `Target::parse` made it a single name.
            name.strip_prefix(&format!("{RECORDINGS}/"))
                .map(|file| tree.audit_dir.join(log_file::SESSIONS_DIR).join(file))
        };
        match private {
            Some(path) => {
                // The audit directory is the sidecar's alone (no workload
                // path reaches it); O_NOFOLLOW all the same.
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                    .open(path)
                    .ok()?;
                let meta = file.metadata().ok()?;
                meta.is_file().then_some((file, meta))
            }
            None => tree.log_dir.open_file(&name),
        }
    })
    .await
    .ok()??;
    Some((tokio::fs::File::from_std(opened.0), opened.1))
}

async fn entries(tree: &LogTree) -> Vec<Entry> {
    let tree = tree.clone();
    tokio::task::spawn_blocking(move || {
        let mut entries: Vec<Entry> = tree
            .log_dir
            .entries()
            .into_iter()
            .filter(|entry| entry.name != log_file::AUDIT && entry.name != RECORDINGS)
            .collect();
        if let Ok(meta) = std::fs::symlink_metadata(tree.audit_dir.join(log_file::AUDIT))
            && meta.is_file()
        {
            entries.push(Entry {
                name: log_file::AUDIT.to_owned(),
                meta,
            });
        }
        if let Ok(meta) = std::fs::symlink_metadata(tree.audit_dir.join(log_file::SESSIONS_DIR))
            && meta.is_dir()
        {
            entries.push(Entry {
                name: format!("{RECORDINGS}/"),
                meta,
            });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        entries
    })
    .await
    .unwrap_or_default()
}

/// The recordings, `sessions/{id}.cast`, by name.
async fn recordings(tree: &LogTree) -> Vec<Entry> {
    let dir = tree.audit_dir.join(log_file::SESSIONS_DIR);
    tokio::task::spawn_blocking(move || {
        let Ok(listing) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut entries: Vec<Entry> = listing
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let meta = std::fs::symlink_metadata(entry.path()).ok()?;
                let name = entry.file_name().into_string().ok()?;
                meta.is_file().then(|| Entry {
                    name: format!("{RECORDINGS}/{name}"),
                    meta,
                })
            })
            .collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        entries
    })
    .await
    .unwrap_or_default()
}

fn list_plain(entries: Vec<Entry>, head: bool) -> Response<Body> {
    let files: Vec<FileProps> = entries.iter().map(props).collect();
    let listing = webdav::listing(&files);
    let len = listing.len();
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CONTENT_LENGTH, len)
        .body(if head { empty() } else { full(listing) })
        .unwrap()
}

/// A file's answer; a workload log file's says whether the workload had
/// ended before it was read ([`hatchway_api::wire::LOG_COMPLETE`]).
async fn get_file(tree: &LogTree, name: &str, headers: &HeaderMap, head: bool) -> Response<Body> {
    let workload_log = name != log_file::AUDIT && !name.starts_with(&format!("{RECORDINGS}/"));
    // Read before the file: an exit code seen now means the file read
    // next already holds the workload's last byte.
    let ended = workload_log && {
        let log_dir = Arc::clone(&tree.log_dir);
        tokio::task::spawn_blocking(move || crate::workload::read_exit_code(&log_dir).is_some())
            .await
            .unwrap_or(false)
    };
    let mut response = read_file(tree, name, headers, head).await;
    if ended {
        response.headers_mut().insert(
            hatchway_api::wire::LOG_COMPLETE,
            http::HeaderValue::from_static("true"),
        );
    }
    response
}

async fn read_file(tree: &LogTree, name: &str, headers: &HeaderMap, head: bool) -> Response<Body> {
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
        .header(header::CONTENT_TYPE, content_type(name))
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
    builder
        .body(BodyExt::boxed_unsync(StreamBody::new(stream)))
        .unwrap()
}

/// asciicast for recordings (players pick it up), text for the rest.
fn content_type(name: &str) -> &'static str {
    if name.ends_with(log_file::RECORDING_SUFFIX) {
        "application/x-asciicast"
    } else {
        "text/plain; charset=utf-8"
    }
}

fn props(entry: &Entry) -> FileProps {
    FileProps {
        name: entry.name.clone(),
        len: if entry.name.ends_with('/') {
            0
        } else {
            entry.meta.len()
        },
        modified: entry.meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
    }
}

async fn propfind(tree: &LogTree, prefix: &str, target: &Target, headers: &HeaderMap) -> Response<Body> {
    let depth = match webdav::check_depth(header_str(headers, "depth")) {
        Ok(depth) => depth,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    let files: Vec<FileProps> = match target {
        Target::Root if depth == "0" => Vec::new(),
        Target::Root => entries(tree).await.iter().map(props).collect(),
        Target::Recordings if depth == "0" => Vec::new(),
        Target::Recordings => recordings(tree).await.iter().map(props).collect(),
        Target::File(_) | Target::Recording(_) => {
            let name = target.name();
            match open(tree, &name).await {
                Some((_, meta)) => vec![props(&Entry { name, meta })],
                None => return text(StatusCode::NOT_FOUND, format!("no such log file {name:?}")),
            }
        }
    };
    match webdav::multistatus(prefix, target, depth, &files) {
        Ok(body) => Response::builder()
            .status(StatusCode::MULTI_STATUS)
            .header(header::CONTENT_TYPE, "application/xml; charset=utf-8")
            .body(full(Bytes::from(body)))
            .unwrap(),
        Err(message) => text(StatusCode::NOT_FOUND, message),
    }
}
