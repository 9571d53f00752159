//! The saved logs of a Container whose pod the gateway no longer serves
//! (it has ended, or `?sinceSeconds=` asks the kubelet for lines by time),
//! as read-only WebDAV over the pod log the Kubernetes API streams.
//!
//! Nothing is held whole: a GET streams the pod log as the client reads it
//! (backpressure reaches the kubelet), so a replica's memory does not grow
//! with the size of the logs or the number of readers. The size a listing
//! or `Content-Length` needs is counted by reading the stream once and kept
//! per finished pod (its logs cannot change). A range is served by
//! skipping to its start. At most `max_saved_log_reads` reads (a stream
//! or a count) run at once; the next ones wait up to `saved_log_wait` for
//! a turn, then get 503 with `Retry-After`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use hatchway_api::crd::Container;
use hatchway_api::webdav::{self, ALLOW, FileProps, Target};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Router;
use super::cluster::{ClusterError, LogQuery, LogStream, SavedLogs};
use super::respond::{Body, BoxError, empty_body, full_body, text};

/// How long a pod log may send nothing before the read is given up (the
/// kubelet streams a finished log as fast as it is taken).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Sizes kept at most (one per finished pod and file: 4096 × ~100 bytes).
const SIZES_KEPT: usize = 4096;

/// A size counted once and shared by the readers who asked for it.
type SizeCell = Arc<tokio::sync::OnceCell<u64>>;

/// The saved-log reads of one replica: the turns and the sizes learnt.
pub struct SavedLogReads {
    turns: Arc<Semaphore>,
    max: usize,
    wait: Duration,
    /// (pod UID, file) → its size, counted once; the cell lets readers
    /// who ask at the same moment share one count.
    sizes: Mutex<HashMap<(String, String), SizeCell>>,
}

impl SavedLogReads {
    /// At most `max` reads at once (at least one); a read waits up to
    /// `wait` for a turn.
    pub fn new(max: usize, wait: Duration) -> Self {
        let max = max.max(1);
        Self {
            turns: Arc::new(Semaphore::new(max)),
            max,
            wait,
            sizes: Mutex::new(HashMap::new()),
        }
    }

    async fn turn(&self) -> Result<OwnedSemaphorePermit, Response<Body>> {
        match tokio::time::timeout(self.wait, self.turns.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => {
                let mut response = text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "{} saved-log reads are in progress on this router replica, the most it serves at once: try again",
                        self.max
                    ),
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
                Err(response)
            }
        }
    }

    fn size_cell(&self, pod_uid: &str, file: &str) -> SizeCell {
        let mut sizes = self.sizes.lock().unwrap_or_else(|e| e.into_inner());
        let key = (pod_uid.to_owned(), file.to_owned());
        if !sizes.contains_key(&key) && sizes.len() >= SIZES_KEPT {
            // Forgetting costs one more count; any entry will do.
            if let Some(old) = sizes.keys().next().cloned() {
                sizes.remove(&old);
            }
        }
        sizes.entry(key).or_default().clone()
    }
}

/// Why a saved log could not be read.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("the saved log {0:?} is gone (the pod was deleted)")]
    Gone(String),
    #[error("cannot read the container's saved logs right now: {0}")]
    Cluster(#[from] ClusterError),
}

impl ReadError {
    fn response(&self) -> Response<Body> {
        match self {
            ReadError::Gone(_) => text(StatusCode::NOT_FOUND, self.to_string()),
            ReadError::Cluster(error) => {
                tracing::warn!(%error, "reading saved logs");
                text(StatusCode::SERVICE_UNAVAILABLE, self.to_string())
            }
        }
    }
}

/// Serves a WebDAV request for the saved logs of `container`.
pub async fn serve(
    router: &Router,
    method: &Method,
    headers: &HeaderMap,
    container: &Container,
    prefix: &str,
    target: &Target,
    query: LogQuery,
) -> Response<Body> {
    if !matches!(method.as_str(), "GET" | "HEAD" | "PROPFIND") {
        return directory(method, headers, prefix, target, &[]);
    }
    if let Target::Recordings | Target::Recording(_) = target {
        // Kept in the sidecar's audit directory: gone with the pod.
        return text(
            StatusCode::NOT_FOUND,
            "terminal recordings are served by the Container's gateway while its pod runs; it has ended",
        );
    }
    let turn = match router.saved_logs.turn().await {
        Ok(turn) => turn,
        Err(refusal) => return refusal,
    };
    let logs = match router.cluster.saved_logs(container).await {
        Ok(Some(logs)) => logs,
        Ok(None) => return directory(method, headers, prefix, target, &[]),
        Err(error) => return ReadError::from(error).response(),
    };
    let wanted: Vec<&String> = match target {
        Target::Root => logs.files.iter().collect(),
        Target::File(name) => logs.files.iter().filter(|f| *f == name).collect(),
        Target::Recordings | Target::Recording(_) => Vec::new(),
    };
    if let (Target::File(name), true) = (target, wanted.is_empty()) {
        return text(StatusCode::NOT_FOUND, format!("no such log file {name:?}"));
    }
    if let (Target::File(name), "GET" | "HEAD") = (target, method.as_str()) {
        let read = Read {
            router,
            logs: &logs,
            file: name,
            query,
        };
        return match read.file(method == Method::HEAD, headers, turn).await {
            Ok(response) => response,
            Err(error) => error.response(),
        };
    }
    // A listing: the size of each file.
    let mut props = Vec::new();
    for file in wanted {
        let read = Read {
            router,
            logs: &logs,
            file,
            query,
        };
        match read.size().await {
            Ok(len) => props.push(FileProps {
                name: file.clone(),
                len,
                modified: read.modified(),
            }),
            Err(ReadError::Gone(_)) => {}
            Err(error) => return error.response(),
        }
    }
    drop(turn);
    directory(method, headers, prefix, target, &props)
}

/// One file of the saved logs.
struct Read<'a> {
    router: &'a Router,
    logs: &'a SavedLogs,
    file: &'a str,
    query: LogQuery,
}

impl Read<'_> {
    fn modified(&self) -> SystemTime {
        self.logs.modified.unwrap_or(SystemTime::UNIX_EPOCH)
    }

    async fn open(&self) -> Result<LogStream, ReadError> {
        self.router
            .cluster
            .saved_log_stream(self.logs, self.file, self.query)
            .await?
            .ok_or_else(|| ReadError::Gone(self.file.to_owned()))
    }

    /// Its size: counted once for a finished pod's whole log, every time
    /// otherwise (lines by time, or a log that still grows).
    async fn size(&self) -> Result<u64, ReadError> {
        if self.query.from_kubelet() || !self.logs.finished {
            return self.count().await;
        }
        let cell = self.router.saved_logs.size_cell(&self.logs.pod_uid, self.file);
        cell.get_or_try_init(|| self.count()).await.copied()
    }

    async fn count(&self) -> Result<u64, ReadError> {
        let mut stream = self.open().await?;
        let mut total = 0u64;
        while let Some(chunk) = next_chunk(&mut stream).await {
            total += chunk?.len() as u64;
        }
        Ok(total)
    }

    /// GET or HEAD of the file. Lines by time are sent as they come, with
    /// no length (counting them first could disagree with what is sent a
    /// moment later) and no ranges.
    async fn file(
        &self,
        head: bool,
        headers: &HeaderMap,
        turn: OwnedSemaphorePermit,
    ) -> Result<Response<Body>, ReadError> {
        let builder = Response::builder()
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .header(header::LAST_MODIFIED, httpdate::fmt_http_date(self.modified()));
        if self.query.from_kubelet() {
            let body = if head {
                empty_body()
            } else {
                body(self.open().await?, 0, None, turn)
            };
            return Ok(builder
                .status(StatusCode::OK)
                .body(body)
                .expect("a valid response"));
        }
        let size = self.size().await?;
        let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
            None => None,
            Some(value) => match webdav::parse_range(value, size) {
                Ok(range) => range,
                Err(()) => {
                    let mut response = text(
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        format!("range {value:?} is outside {} ({size} bytes)", self.file),
                    );
                    response.headers_mut().insert(
                        header::CONTENT_RANGE,
                        HeaderValue::from_str(&format!("bytes */{size}")).expect("a valid header"),
                    );
                    return Ok(response);
                }
            },
        };
        let (status, start, end) = match range {
            Some((start, end)) => (StatusCode::PARTIAL_CONTENT, start, end + 1),
            None => (StatusCode::OK, 0, size),
        };
        let mut builder = builder
            .status(status)
            .header(header::CONTENT_LENGTH, end - start)
            .header(header::ACCEPT_RANGES, "bytes");
        if status == StatusCode::PARTIAL_CONTENT {
            builder = builder.header(header::CONTENT_RANGE, format!("bytes {start}-{}/{size}", end - 1));
        }
        let body = if head || start == end {
            empty_body()
        } else {
            body(self.open().await?, start, Some(end - start), turn)
        };
        Ok(builder.body(body).expect("a valid response"))
    }
}

/// The next chunk of `stream`, or an error when it sends nothing for
/// [`IDLE_TIMEOUT`].
async fn next_chunk(stream: &mut LogStream) -> Option<Result<bytes::Bytes, ClusterError>> {
    match tokio::time::timeout(IDLE_TIMEOUT, stream.next()).await {
        Ok(next) => next,
        Err(_) => Some(Err(ClusterError::Api(format!(
            "the pod log sent nothing for {} s",
            IDLE_TIMEOUT.as_secs()
        )))),
    }
}

/// A response body of `stream` from byte `skip`, `len` bytes (all when
/// `None`; fewer is an error, so the client sees the answer cut rather
/// than complete). `turn` is given back when the body is done or dropped.
fn body(stream: LogStream, skip: u64, len: Option<u64>, turn: OwnedSemaphorePermit) -> Body {
    struct State {
        stream: LogStream,
        skip: u64,
        left: Option<u64>,
        _turn: OwnedSemaphorePermit,
    }
    let state = State {
        stream,
        skip,
        left: len,
        _turn: turn,
    };
    let frames = futures::stream::unfold(Some(state), |state| async move {
        let mut state = state?;
        loop {
            if state.left == Some(0) {
                return None;
            }
            let mut chunk = match next_chunk(&mut state.stream).await {
                Some(Ok(chunk)) => chunk,
                Some(Err(error)) => return Some((Err(BoxError::from(error)), None)),
                None => {
                    return state.left.map(|left| {
                        let error = format!("the saved log ended {left} bytes short of its length");
                        (Err(BoxError::from(error)), None)
                    });
                }
            };
            if state.skip >= chunk.len() as u64 {
                state.skip -= chunk.len() as u64;
                continue;
            }
            let _ = chunk.split_to(state.skip as usize);
            state.skip = 0;
            if let Some(left) = &mut state.left {
                chunk.truncate((*left).min(chunk.len() as u64) as usize);
                *left -= chunk.len() as u64;
            }
            return Some((Ok(Frame::data(chunk)), Some(state)));
        }
    });
    BodyExt::boxed_unsync(StreamBody::new(frames))
}

/// WebDAV over a directory of `files` whose sizes are known (the saved
/// logs' listing; none at all before the Container starts). A file's GET
/// is [`Read::file`]'s.
pub fn directory(
    method: &Method,
    headers: &HeaderMap,
    prefix: &str,
    target: &Target,
    files: &[FileProps],
) -> Response<Body> {
    match (method.as_str(), target) {
        ("OPTIONS", _) => Response::builder()
            .status(StatusCode::OK)
            .header(header::ALLOW, ALLOW)
            .header("dav", "1")
            .body(empty_body())
            .expect("a valid response"),
        ("PROPFIND", _) => {
            let depth = match webdav::check_depth(headers.get("depth").and_then(|v| v.to_str().ok())) {
                Ok(depth) => depth,
                Err(message) => return text(StatusCode::BAD_REQUEST, message),
            };
            match webdav::multistatus(prefix, target, depth, files) {
                Ok(body) => Response::builder()
                    .status(StatusCode::MULTI_STATUS)
                    .header(header::CONTENT_TYPE, "application/xml; charset=utf-8")
                    .body(full_body(body))
                    .expect("a valid response"),
                Err(message) => text(StatusCode::NOT_FOUND, message),
            }
        }
        ("GET" | "HEAD", Target::Root) => {
            let listing = webdav::listing(files);
            let len = listing.len();
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .header(header::CONTENT_LENGTH, len)
                .body(if method == Method::HEAD {
                    empty_body()
                } else {
                    full_body(listing)
                })
                .expect("a valid response")
        }
        ("GET" | "HEAD", Target::File(_) | Target::Recordings | Target::Recording(_)) => text(
            StatusCode::NOT_FOUND,
            format!("no such log file {:?}", target.name()),
        ),
        _ => text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed: the log tree is read-only"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn chunks(parts: &[&'static str]) -> LogStream {
        let parts: Vec<_> = parts
            .iter()
            .map(|p| Ok(Bytes::from_static(p.as_bytes())))
            .collect();
        futures::stream::iter(parts).boxed()
    }

    async fn collect(body: Body) -> Result<String, String> {
        body.collect()
            .await
            .map(|c| String::from_utf8(c.to_bytes().to_vec()).unwrap())
            .map_err(|e| e.to_string())
    }

    fn turn() -> OwnedSemaphorePermit {
        Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap()
    }

    #[tokio::test]
    async fn a_window_skips_across_chunks_and_stops_at_its_length() {
        let parts = ["0123", "4567", "89"];
        assert_eq!(
            collect(body(chunks(&parts), 0, None, turn())).await.unwrap(),
            "0123456789"
        );
        assert_eq!(
            collect(body(chunks(&parts), 5, Some(3), turn())).await.unwrap(),
            "567"
        );
        assert_eq!(
            collect(body(chunks(&parts), 4, Some(6), turn())).await.unwrap(),
            "456789"
        );
        assert_eq!(
            collect(body(chunks(&parts), 9, Some(1), turn())).await.unwrap(),
            "9"
        );
    }

    #[tokio::test]
    async fn a_log_shorter_than_its_length_is_an_error_not_a_complete_answer() {
        let error = collect(body(chunks(&["0123"]), 2, Some(5), turn()))
            .await
            .unwrap_err();
        assert!(error.contains("3 bytes short"), "{error}");
    }

    #[tokio::test]
    async fn the_turn_comes_back_when_the_body_is_dropped_unread() {
        let turns = Arc::new(Semaphore::new(1));
        let turn = turns.clone().try_acquire_owned().unwrap();
        let b = body(chunks(&["x"]), 0, None, turn);
        assert_eq!(turns.available_permits(), 0);
        drop(b);
        assert_eq!(turns.available_permits(), 1);
    }
}
