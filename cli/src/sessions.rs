//! `sessions NAME`: your resumable sessions in a Container (`GET
//! …/sessions`), as a table: ID, KIND, STARTED (age), DETACHED (for how
//! long no connection carried it, or `-`), COMMAND. `shell NAME --resume
//! ID` takes a detached shell over. Then the Container's terminals, every
//! user's: TERMINAL, USER, STARTED, STATE (`live` or `ended`), RECORDED
//! (the recording's size, or `-`), COMMAND; `shell NAME --join ID` watches
//! a live one, `sessions NAME --replay ID` plays a recorded one.

use hatchway_api::wire;
use http::StatusCode;

use crate::router::{Endpoint, RouterError, read_all, refusal};
use crate::table;

/// Asks the router for the caller's sessions in `namespace/name`.
pub async fn list(
    endpoint: &Endpoint,
    namespace: &str,
    name: &str,
) -> Result<wire::SessionList, RouterError> {
    let path = endpoint.path(namespace, name, wire::ACTION_SESSIONS, &[]);
    let response = endpoint.session().send(http::Method::GET, &path, &[]).await?;
    if response.status() != StatusCode::OK {
        return Err(refusal(response).await);
    }
    serde_json::from_slice(&read_all(response.into_body()).await?).map_err(|e| RouterError::Refused {
        status: StatusCode::BAD_GATEWAY,
        message: format!("the gateway's session list is not JSON: {e}"),
    })
}

/// Checks that `--resume` names a shell of the list (any, for `latest`).
pub fn check_resumable(list: &wire::SessionList, wanted: &str, name: &str) -> anyhow::Result<()> {
    let shells = || list.sessions.iter().filter(|s| s.kind == "shell");
    let found = if wanted == wire::resumable::ATTACH_LATEST {
        shells().next().is_some()
    } else {
        shells().any(|s| s.id == wanted)
    };
    if found {
        return Ok(());
    }
    let which = if wanted == wire::resumable::ATTACH_LATEST {
        "no shell of yours".to_owned()
    } else {
        format!("no shell {wanted} of yours")
    };
    anyhow::bail!(
        "{which} in {name} to resume: it ended, or its grace time passed (`kubectl hatch sessions {name}` \
         lists them)"
    )
}

/// Checks a terminal id (`--join`, `--replay`): 16 hex digits.
pub fn terminal_id(value: &str) -> anyhow::Result<&str> {
    if value.len() == 16 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(value)
    } else {
        anyhow::bail!(
            "a terminal id is 16 hex digits, as `kubectl hatch sessions NAME` lists them, not {value:?}"
        )
    }
}

/// Checks that `--join` names a running terminal of the list.
pub fn check_joinable(list: &wire::SessionList, wanted: &str, name: &str) -> anyhow::Result<()> {
    match list.terminals.iter().find(|t| t.id == wanted) {
        Some(t) if t.live => Ok(()),
        Some(t) if t.recorded.is_some() => anyhow::bail!(
            "terminal {wanted} in {name} has ended; its recording plays with `kubectl hatch sessions {name} \
             --replay {wanted}`"
        ),
        _ => anyhow::bail!(
            "no running terminal {wanted} in {name} to join (`kubectl hatch sessions {name}` lists them)"
        ),
    }
}

/// The tables, ages as of `now`; a sentence when there is no session.
pub fn format(list: &wire::SessionList, name: &str, now: jiff::Timestamp) -> String {
    let mut text = format_sessions(list, name, now);
    if !list.terminals.is_empty() {
        text.push('\n');
        text.push_str(&format_terminals(list, now));
    }
    text
}

fn age_at(now: jiff::Timestamp) -> impl Fn(&str) -> String {
    move |time: &str| match time.parse::<jiff::Timestamp>() {
        Ok(t) => table::age(now.duration_since(t)),
        Err(_) => "?".to_owned(),
    }
}

/// The terminals' table.
fn format_terminals(list: &wire::SessionList, now: jiff::Timestamp) -> String {
    let age = age_at(now);
    let header: Vec<String> = ["TERMINAL", "USER", "STARTED", "STATE", "RECORDED", "COMMAND"]
        .map(str::to_owned)
        .to_vec();
    let rows: Vec<Vec<String>> = list
        .terminals
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.user.clone(),
                age(&t.started),
                if t.live { "live" } else { "ended" }.to_owned(),
                t.recorded.map_or_else(|| "-".to_owned(), size),
                t.what.clone(),
            ]
        })
        .collect();
    table::format(&header, &rows)
}

/// Bytes as `512B`, `12KiB`, `3.4MiB`.
fn size(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes}B"),
        1024..1_048_576 => format!("{}KiB", bytes / 1024),
        _ => format!("{:.1}MiB", bytes as f64 / 1_048_576.0),
    }
}

/// The resumable sessions' table, or a sentence when there is none.
fn format_sessions(list: &wire::SessionList, name: &str, now: jiff::Timestamp) -> String {
    if list.sessions.is_empty() {
        return format!("No resumable sessions of yours in {name}.\n");
    }
    let age = age_at(now);
    let header: Vec<String> = ["ID", "KIND", "STARTED", "DETACHED", "COMMAND"]
        .map(str::to_owned)
        .to_vec();
    let rows: Vec<Vec<String>> = list
        .sessions
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                s.kind.clone(),
                age(&s.started),
                s.detached_since.as_deref().map_or_else(|| "-".to_owned(), &age),
                s.what.clone(),
            ]
        })
        .collect();
    table::format(&header, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_ages_and_detached_time() {
        let now: jiff::Timestamp = "2026-12-03T12:10:00Z".parse().unwrap();
        let list = wire::SessionList {
            sessions: vec![
                wire::ListedSession {
                    id: "0123456789abcdef".into(),
                    user: "alice".into(),
                    kind: "shell".into(),
                    what: "shell".into(),
                    started: "2026-12-03T12:00:00Z".into(),
                    detached_since: Some("2026-12-03T12:08:30Z".into()),
                },
                wire::ListedSession {
                    id: "fedcba9876543210".into(),
                    user: "alice".into(),
                    kind: "portforward".into(),
                    what: "port 8080".into(),
                    started: "2026-12-03T12:09:00Z".into(),
                    detached_since: None,
                },
            ],
            terminals: vec![],
        };
        let text = format(&list, "web-1", now);
        let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(lines[0], ["ID", "KIND", "STARTED", "DETACHED", "COMMAND"]);
        assert_eq!(lines[1], ["0123456789abcdef", "shell", "10m", "90s", "shell"]);
        assert_eq!(
            lines[2],
            ["fedcba9876543210", "portforward", "60s", "-", "port", "8080"]
        );
        let none = format(&wire::SessionList::default(), "web-1", now);
        assert_eq!(none, "No resumable sessions of yours in web-1.\n");
    }

    fn terminals() -> wire::SessionList {
        let terminal = |id: &str, user: &str, live, recorded| wire::ListedTerminal {
            id: id.into(),
            user: user.into(),
            what: "shell".into(),
            started: "2026-12-03T12:05:00Z".into(),
            live,
            recorded,
        };
        wire::SessionList {
            sessions: vec![],
            terminals: vec![
                terminal("00000000000000aa", "alice", true, Some(2048)),
                terminal("00000000000000bb", "bob", false, Some(3 << 20)),
                terminal("00000000000000cc", "bob", true, None),
            ],
        }
    }

    #[test]
    fn terminals_are_listed_with_their_state_and_recording() {
        let now: jiff::Timestamp = "2026-12-03T12:10:00Z".parse().unwrap();
        let text = format(&terminals(), "web-1", now);
        let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(
            lines[0],
            ["No", "resumable", "sessions", "of", "yours", "in", "web-1."]
        );
        assert!(lines[1].is_empty());
        assert_eq!(
            lines[2],
            ["TERMINAL", "USER", "STARTED", "STATE", "RECORDED", "COMMAND"]
        );
        assert_eq!(
            lines[3],
            ["00000000000000aa", "alice", "5m", "live", "2KiB", "shell"]
        );
        assert_eq!(
            lines[4],
            ["00000000000000bb", "bob", "5m", "ended", "3.0MiB", "shell"]
        );
        assert_eq!(lines[5], ["00000000000000cc", "bob", "5m", "live", "-", "shell"]);
    }

    #[test]
    fn only_a_live_terminal_can_be_joined() {
        let list = terminals();
        assert!(check_joinable(&list, "00000000000000aa", "web-1").is_ok());
        let ended = check_joinable(&list, "00000000000000bb", "web-1")
            .unwrap_err()
            .to_string();
        assert!(ended.contains("--replay 00000000000000bb"), "{ended}");
        let unknown = check_joinable(&list, "00000000000000dd", "web-1")
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("no running terminal"), "{unknown}");
        assert!(terminal_id("00000000000000aa").is_ok());
        assert!(terminal_id("latest").is_err());
        assert!(terminal_id("../../etc/passwd").is_err());
    }
}
