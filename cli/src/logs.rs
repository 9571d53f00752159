//! `logs NAME [FILE] [-f] [--tail N] [--since D]`: reads the Container's log files
//! through the router's WebDAV tree with `Range` requests from the last
//! offset read, so following needs no server-side state and crosses the
//! end of the Container without a gap: the router answers from the gateway
//! while it runs and from the saved logs after (`Hatchway-Log-Source`),
//! at the same offsets. Without FILE, `stdout.txt` goes to stdout and
//! `stderr.txt` to stderr (the saved combined `output.txt` when the
//! cluster keeps no split streams). `--since` asks the router for the lines
//! of the last D (`?sinceSeconds=`: the kubelet timestamps each line, the
//! files do not); following then goes on from the file's size read just
//! before, so a line written in between may show twice but none is lost.

use std::io::Write;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode, header};

use hatchway_api::pod::log_file;
use hatchway_api::wire;

use crate::router::{self, Endpoint, RouterError, Session};

/// How often a followed log is polled.
const POLL: Duration = Duration::from_millis(200);
/// How long following waits for a router (or gateway) that went away.
const RETRY_FOR: Duration = Duration::from_secs(60);
/// How long such a wait goes unmentioned: the hand-over from a live log
/// to the saved one when a Container ends (its gateway goes with the pod a
/// moment before status says it ended) took 0.4-1.4 s on the e2e cluster,
/// which asserts that `logs -f` never mentions it.
const QUIET_FOR: Duration = Duration::from_secs(2);
/// The first chunk read from the end for `--tail`.
const TAIL_CHUNK: u64 = 64 * 1024;

/// What to print.
pub struct LogsRequest {
    pub namespace: String,
    pub name: String,
    pub file: Option<String>,
    pub follow: bool,
    pub tail: Option<usize>,
    pub since: Option<Duration>,
    /// At most this many bytes of each file (`--limit-bytes`).
    pub limit_bytes: Option<u64>,
    /// Each line with its time (`--timestamps`): from the kubelet.
    pub timestamps: bool,
    /// The previous run's logs (`--previous`): from the kubelet.
    pub previous: bool,
}

/// `--since-time`: an RFC 3339 time → the duration from it until `now`
/// (at least a second: the API counts whole seconds).
pub fn since_time(text: &str, now: jiff::Timestamp) -> Result<Duration, String> {
    let time: jiff::Timestamp = text
        .trim()
        .parse()
        .map_err(|e| format!("{text:?} is not an RFC 3339 time such as 2026-12-03T14:00:00Z: {e}"))?;
    let seconds = now.duration_since(time).as_secs();
    Ok(Duration::from_secs(seconds.max(1) as u64))
}

/// `90`, `30s`, `10m`, `2h`, `1d`, `1h30m` → a duration (whole seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration such as 30s, 10m, 2h, 1d or 1h30m");
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        total = total.saturating_add(n.saturating_mul(unit));
        number.clear();
    }
    if !number.is_empty() {
        total = total.saturating_add(number.parse::<u64>().map_err(|_| bad())?);
    } else if total == 0 {
        return Err(bad());
    }
    if total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// One file being read.
struct Stream {
    file: String,
    offset: u64,
    to_stderr: bool,
    /// `--tail` still to apply (on the first read).
    tail: Option<usize>,
    /// `--since` still to apply (on the first read).
    since: Option<Duration>,
    /// The last answer: where from, and whether the file existed.
    source: Option<String>,
    found: bool,
    /// Bytes still to print (`--limit-bytes`).
    left: Option<u64>,
    /// Read whole, once (from the kubelet): nothing more to do.
    finished: bool,
    /// Read to its end after the workload ended (the gateway said
    /// [`wire::LOG_COMPLETE`]): nothing more will come.
    complete: bool,
}

impl Stream {
    fn new(file: &str, to_stderr: bool, request: &LogsRequest) -> Self {
        Self {
            file: file.to_owned(),
            offset: 0,
            to_stderr,
            tail: request.tail,
            since: request.since,
            source: None,
            found: false,
            left: request.limit_bytes,
            finished: false,
            complete: false,
        }
    }

    /// Whether `--limit-bytes` has been printed.
    fn exhausted(&self) -> bool {
        self.finished || self.left == Some(0)
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let bytes = match &mut self.left {
            Some(left) => {
                let n = bytes.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= n as u64;
                &bytes[..n]
            }
            None => bytes,
        };
        if self.to_stderr {
            let mut err = std::io::stderr().lock();
            err.write_all(bytes)?;
            err.flush()
        } else {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes)?;
            out.flush()
        }
    }
}

/// The requests of one `logs` run, in order (over one connection where
/// the way allows).
struct Connection<'a> {
    session: Session<'a>,
}

/// An answer, read whole.
struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Connection<'_> {
    async fn get(&mut self, path: &str, range: Option<String>) -> Result<Answer, RouterError> {
        let headers: Vec<_> = range.into_iter().map(|r| (header::RANGE, r)).collect();
        let response = self.session.send(Method::GET, path, &headers).await?;
        let status = response.status();
        if !matches!(status.as_u16(), 200 | 206 | 404 | 416) {
            return Err(router::refusal(response).await);
        }
        let (parts, body) = response.into_parts();
        Ok(Answer {
            status,
            headers: parts.headers,
            body: router::read_all(body).await?,
        })
    }
}

/// `Content-Range: bytes A-B/SIZE` or `bytes */SIZE` → (A, SIZE).
fn content_range(headers: &http::HeaderMap) -> Option<(Option<u64>, u64)> {
    let value = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, size) = rest.split_once('/')?;
    let size = size.trim().parse().ok()?;
    let start = match range.trim() {
        "*" => None,
        r => Some(r.split_once('-')?.0.parse().ok()?),
    };
    Some((start, size))
}

/// The start of the last `n` lines of `text` (a final line without its
/// newline counts as a line).
pub fn tail_start(text: &[u8], n: usize) -> Option<usize> {
    if n == 0 {
        return Some(text.len());
    }
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return Some(i + 1);
            }
        }
    }
    None
}

/// Prints the logs; with `follow`, until the Container has ended and its
/// saved logs are printed to their end.
pub async fn run(endpoint: &Endpoint, request: &LogsRequest) -> Result<(), RouterError> {
    let mut conn = Connection {
        session: endpoint.session(),
    };
    let default_files = request.file.is_none();
    let mut streams = match &request.file {
        Some(file) => vec![Stream::new(file, false, request)],
        None => vec![
            Stream::new(log_file::STDOUT, false, request),
            Stream::new(log_file::STDERR, true, request),
        ],
    };
    let mut away_since: Option<(Instant, bool)> = None;
    loop {
        let mut printed_any = false;
        let mut failure = None;
        if streams.iter().all(Stream::exhausted) {
            return Ok(());
        }
        for stream in streams.iter_mut().filter(|s| !s.exhausted()) {
            match read(&mut conn, endpoint, request, stream).await {
                Ok(printed) => printed_any |= printed,
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        if let Some(error) = failure {
            if !(request.follow && error.is_transient()) {
                return Err(error);
            }
            // A Container that is ending takes its gateway down a moment
            // before status says so (503 until the saved logs answer): say
            // nothing unless it lasts.
            let (since, said) = away_since.get_or_insert((Instant::now(), false));
            if !*said && since.elapsed() >= QUIET_FOR {
                eprintln!("kubectl-hatch: {error}; retrying…");
                *said = true;
            }
            if since.elapsed() > RETRY_FOR {
                return Err(error);
            }
            tokio::time::sleep(POLL * 2).await;
            continue;
        }
        if let Some((_, true)) = away_since.take() {
            eprintln!("kubectl-hatch: reading the logs again");
        }
        let saved = streams
            .iter()
            .all(|s| s.source.as_deref() == Some(wire::log_source::SAVED));
        if saved && default_files && streams.len() == 2 && !streams.iter().any(|s| s.found) {
            // The cluster keeps stdout and stderr combined.
            if streams.iter().any(|s| s.offset > 0) {
                eprintln!(
                    "kubectl-hatch: the saved log combines stdout and stderr; see `kubectl hatch logs {} {}`",
                    request.name,
                    log_file::OUTPUT
                );
                return Ok(());
            }
            streams = vec![Stream::new(log_file::OUTPUT, false, request)];
            continue;
        }
        // Every file read to its end after the workload ended: done, without
        // waiting for the Container's status to say so.
        let complete = streams.iter().all(|s| s.complete);
        if !request.follow || saved || complete {
            return Ok(());
        }
        if !printed_any {
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Reads what is new in one file and prints it. Returns whether anything
/// was printed.
async fn read(
    conn: &mut Connection<'_>,
    endpoint: &Endpoint,
    request: &LogsRequest,
    stream: &mut Stream,
) -> Result<bool, RouterError> {
    let path = endpoint.path(
        &request.namespace,
        &request.name,
        &format!("{}/{}", wire::ACTION_LOG, stream.file),
        &[],
    );
    if request.timestamps || request.previous {
        return read_from_kubelet(conn, endpoint, request, stream).await;
    }
    if let Some(since) = stream.since.take() {
        return read_since(conn, endpoint, request, &path, stream, since).await;
    }
    if let Some(n) = stream.tail {
        return read_tail(conn, &path, stream, n).await;
    }
    let range = (stream.offset > 0).then(|| format!("bytes={}-", stream.offset));
    let answer = conn.get(&path, range).await?;
    note_source(stream, &answer);
    let ended = answer
        .headers
        .get(wire::LOG_COMPLETE)
        .is_some_and(|v| v.as_bytes() == b"true");
    // An answer past the end (416) or for a file never written (404)
    // holds nothing more; a whole file is all of it; a range, up to SIZE.
    stream.complete = ended
        && match answer.status.as_u16() {
            206 => content_range(&answer.headers)
                .is_some_and(|(start, size)| start.unwrap_or(0) + answer.body.len() as u64 >= size),
            _ => true,
        };
    match answer.status.as_u16() {
        200 => {
            // The whole file: skip what was printed, unless it shrank
            // (rotated), then it is all new.
            let skip = if answer.body.len() as u64 >= stream.offset {
                stream.offset as usize
            } else {
                0
            };
            let new = &answer.body[skip..];
            stream.write(new).map_err(RouterError::Relay)?;
            stream.offset = answer.body.len() as u64;
            Ok(!new.is_empty())
        }
        206 => {
            stream.write(&answer.body).map_err(RouterError::Relay)?;
            stream.offset += answer.body.len() as u64;
            Ok(!answer.body.is_empty())
        }
        416 => {
            // Nothing new; a file now shorter than the offset was rotated.
            if let Some((_, size)) = content_range(&answer.headers)
                && size < stream.offset
            {
                stream.offset = 0;
            }
            Ok(false)
        }
        _ => Ok(false), // 404: not written yet
    }
}

/// The first read with `--since`: the file's size now (when following),
/// then the lines of the last `since` from the API, `--tail` applied.
async fn read_since(
    conn: &mut Connection<'_>,
    endpoint: &Endpoint,
    request: &LogsRequest,
    path: &str,
    stream: &mut Stream,
    since: Duration,
) -> Result<bool, RouterError> {
    let size = if request.follow {
        let answer = conn.get(path, Some("bytes=-1".to_owned())).await?;
        match answer.status.as_u16() {
            206 | 416 => content_range(&answer.headers).map_or(0, |(_, size)| size),
            200 => answer.body.len() as u64,
            _ => 0,
        }
    } else {
        0
    };
    let seconds = since.as_secs().max(1).to_string();
    let since_path = endpoint.path(
        &request.namespace,
        &request.name,
        &format!("{}/{}", wire::ACTION_LOG, stream.file),
        &[(wire::PARAM_SINCE_SECONDS, Some(&seconds))],
    );
    let answer = conn.get(&since_path, None).await?;
    note_source(stream, &answer);
    stream.offset = size;
    let tail = stream.tail.take();
    if answer.status != StatusCode::OK {
        return Ok(false);
    }
    let at = tail.and_then(|n| tail_start(&answer.body, n)).unwrap_or(0);
    stream.write(&answer.body[at..]).map_err(RouterError::Relay)?;
    Ok(at < answer.body.len())
}

/// `--timestamps` or `--previous`: the file once, as the kubelet keeps it
/// (the files carry no times and only the current run), `--since` and
/// `--tail` applied.
async fn read_from_kubelet(
    conn: &mut Connection<'_>,
    endpoint: &Endpoint,
    request: &LogsRequest,
    stream: &mut Stream,
) -> Result<bool, RouterError> {
    let since = stream.since.take().map(|s| s.as_secs().max(1).to_string());
    let yes = |on: bool| on.then_some("true");
    let path = endpoint.path(
        &request.namespace,
        &request.name,
        &format!("{}/{}", wire::ACTION_LOG, stream.file),
        &[
            (wire::PARAM_SINCE_SECONDS, since.as_deref()),
            (wire::PARAM_TIMESTAMPS, yes(request.timestamps)),
            (wire::PARAM_PREVIOUS, yes(request.previous)),
        ],
    );
    let answer = conn.get(&path, None).await?;
    note_source(stream, &answer);
    stream.finished = true;
    if answer.status != StatusCode::OK {
        return Ok(false);
    }
    let at = stream
        .tail
        .take()
        .and_then(|n| tail_start(&answer.body, n))
        .unwrap_or(0);
    stream.write(&answer.body[at..]).map_err(RouterError::Relay)?;
    Ok(at < answer.body.len())
}

/// The first read with `--tail n`: chunks from the end until `n` lines.
async fn read_tail(
    conn: &mut Connection<'_>,
    path: &str,
    stream: &mut Stream,
    n: usize,
) -> Result<bool, RouterError> {
    let mut chunk = TAIL_CHUNK;
    loop {
        let answer = conn.get(path, Some(format!("bytes=-{chunk}"))).await?;
        note_source(stream, &answer);
        let (start, size) = match answer.status.as_u16() {
            206 => content_range(&answer.headers).map_or((0, 0), |(s, size)| (s.unwrap_or(0), size)),
            200 => (0, answer.body.len() as u64),
            // Empty (416) or absent (404): nothing to tail yet.
            _ => {
                // Whatever is written from now on is new.
                stream.tail = None;
                return Ok(false);
            }
        };
        match tail_start(&answer.body, n) {
            Some(at) => {
                stream.write(&answer.body[at..]).map_err(RouterError::Relay)?;
            }
            None if start > 0 => {
                chunk *= 4;
                continue;
            }
            None => stream.write(&answer.body).map_err(RouterError::Relay)?,
        }
        stream.tail = None;
        stream.offset = size;
        return Ok(true);
    }
}

fn note_source(stream: &mut Stream, answer: &Answer) {
    stream.source = answer
        .headers
        .get(wire::LOG_SOURCE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    stream.found = answer.status != StatusCode::NOT_FOUND;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_count_lines_from_the_end() {
        assert_eq!(tail_start(b"a\nb\nc\n", 2), Some(2));
        assert_eq!(tail_start(b"a\nb\nc", 2), Some(2));
        assert_eq!(tail_start(b"a\nb\nc\n", 3), None);
        assert_eq!(tail_start(b"a\nb\nc\n", 0), Some(6));
        assert_eq!(tail_start(b"", 1), None);
    }

    #[test]
    fn since_time_is_the_time_until_now() {
        let now: jiff::Timestamp = "2026-12-03T14:00:00Z".parse().unwrap();
        assert_eq!(
            since_time("2026-12-03T13:58:30Z", now).unwrap(),
            Duration::from_secs(90)
        );
        assert_eq!(
            since_time("2026-12-03T15:00:00+01:00", now).unwrap(),
            Duration::from_secs(1)
        );
        assert_eq!(
            since_time("2027-01-01T00:00:00Z", now).unwrap(),
            Duration::from_secs(1)
        );
        assert!(since_time("yesterday", now).unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        for bad in ["", "0", "0s", "m", "1x", "-5m", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn content_ranges_parse() {
        let mut h = http::HeaderMap::new();
        h.insert(header::CONTENT_RANGE, "bytes 10-19/20".parse().unwrap());
        assert_eq!(content_range(&h), Some((Some(10), 20)));
        h.insert(header::CONTENT_RANGE, "bytes */7".parse().unwrap());
        assert_eq!(content_range(&h), Some((None, 7)));
    }
}
