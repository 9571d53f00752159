//! `sessions NAME --replay ID`: plays a terminal's recording (asciicast
//! v2, `sessions/ID.cast` in the Container's log tree) in this terminal,
//! at its pace: each output event after the time it came, sped up with
//! `--speed`, pauses cut to `--idle-limit` (as `asciinema play -i`).

use std::io::Write;
use std::time::Duration;

use hatchway_api::wire;
use http::StatusCode;

use crate::router::{Endpoint, RouterError, read_all, refusal};

/// Why a recording cannot be played.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReplayError {
    #[error("the recording's first line is not an asciicast v2 header: {0}")]
    Header(String),
    #[error("line {line} of the recording is not an asciicast event: {message}")]
    Event { line: usize, message: String },
}

/// What to show when: the waits before each piece of output.
#[derive(Debug, PartialEq)]
pub struct Step<'a> {
    pub wait: Duration,
    pub output: std::borrow::Cow<'a, str>,
}

/// The recording's output events as steps: waits divided by `speed`,
/// each at most `idle_limit`. Other events (resizes, markers) only pass
/// time.
pub fn steps(cast: &str, speed: f64, idle_limit: Duration) -> Result<Vec<Step<'_>>, ReplayError> {
    let mut lines = cast.lines();
    let header: serde_json::Value = serde_json::from_str(lines.next().unwrap_or_default())
        .map_err(|e| ReplayError::Header(e.to_string()))?;
    if header["version"] != 2 {
        return Err(ReplayError::Header(format!("version {}", header["version"])));
    }
    let mut steps = Vec::new();
    let mut last = 0.0f64;
    let mut pending = Duration::ZERO;
    for (index, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| ReplayError::Event {
            line: index + 2,
            message,
        };
        let (at, code, data): (f64, String, String) =
            serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        if !at.is_finite() || at < 0.0 {
            return Err(bad(format!("time {at}")));
        }
        let gap = Duration::from_secs_f64(((at - last).max(0.0)) / speed.max(1e-3));
        pending += gap.min(idle_limit);
        last = at.max(last);
        if code == "o" {
            steps.push(Step {
                wait: std::mem::take(&mut pending),
                output: data.into(),
            });
        }
    }
    Ok(steps)
}

/// Fetches recording `id` of `namespace/name` through the router.
pub async fn fetch(
    endpoint: &Endpoint,
    namespace: &str,
    name: &str,
    id: &str,
) -> Result<String, RouterError> {
    let file = format!(
        "{}/{id}{}",
        hatchway_api::webdav::RECORDINGS,
        hatchway_api::pod::log_file::RECORDING_SUFFIX
    );
    let path = endpoint.path(namespace, name, &format!("{}/{file}", wire::ACTION_LOG), &[]);
    let response = endpoint.session().send(http::Method::GET, &path, &[]).await?;
    if response.status() != StatusCode::OK {
        return Err(refusal(response).await);
    }
    let body = read_all(response.into_body()).await?;
    String::from_utf8(body.to_vec()).map_err(|_| RouterError::Refused {
        status: StatusCode::BAD_GATEWAY,
        message: format!("recording {id} is not UTF-8 text"),
    })
}

/// Plays `steps` to `out`.
pub async fn play(steps: &[Step<'_>], out: &mut dyn Write) -> std::io::Result<()> {
    for step in steps {
        if !step.wait.is_zero() {
            tokio::time::sleep(step.wait).await;
        }
        out.write_all(step.output.as_bytes())?;
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAST: &str = concat!(
        r#"{"version":2,"width":80,"height":24,"timestamp":1}"#,
        "\n",
        r#"[0.5,"o","$ "]"#,
        "\n",
        r#"[1.0,"r","100x30"]"#,
        "\n",
        r#"[1.5,"o","echo 42\r\n42\r\n"]"#,
        "\n",
        r#"[30.0,"o","bye"]"#,
        "\n"
    );

    #[test]
    fn output_comes_at_its_time_sped_up_and_with_pauses_cut() {
        let s = steps(CAST, 1.0, Duration::from_secs(2)).unwrap();
        let waits: Vec<f64> = s.iter().map(|s| s.wait.as_secs_f64()).collect();
        let outputs: Vec<&str> = s.iter().map(|s| s.output.as_ref()).collect();
        assert_eq!(outputs, ["$ ", "echo 42\r\n42\r\n", "bye"]);
        assert_eq!(waits, [0.5, 1.0, 2.0], "the resize passes time; 28.5 s cut to 2");
        let fast = steps(CAST, 2.0, Duration::from_secs(60)).unwrap();
        let waits: Vec<f64> = fast.iter().map(|s| s.wait.as_secs_f64()).collect();
        assert_eq!(waits, [0.25, 0.5, 14.25]);
    }

    #[test]
    fn what_is_not_a_recording_is_refused_with_its_line() {
        assert!(matches!(
            steps("hello\n", 1.0, Duration::ZERO),
            Err(ReplayError::Header(_))
        ));
        assert_eq!(
            steps("{\"version\":1}\n", 1.0, Duration::ZERO),
            Err(ReplayError::Header("version 1".into()))
        );
        let bad = "{\"version\":2}\n[0.1,\"o\",\"a\"]\n[\"x\"]\n";
        assert!(matches!(
            steps(bad, 1.0, Duration::ZERO),
            Err(ReplayError::Event { line: 3, .. })
        ));
        let negative = "{\"version\":2}\n[-1,\"o\",\"a\"]\n";
        assert!(matches!(
            steps(negative, 1.0, Duration::ZERO),
            Err(ReplayError::Event { line: 2, .. })
        ));
    }
}
