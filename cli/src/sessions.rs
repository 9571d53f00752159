//! `sessions NAME`: your resumable sessions in a Container (`GET
//! …/sessions`), as a table: ID, KIND, STARTED (age), DETACHED (for how
//! long no connection carried it, or `-`), COMMAND. `shell NAME --resume
//! ID` takes a detached shell over.

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

/// The table, ages as of `now`; a sentence when there is none.
pub fn format(list: &wire::SessionList, name: &str, now: jiff::Timestamp) -> String {
    if list.sessions.is_empty() {
        return format!("No resumable sessions of yours in {name}.\n");
    }
    let age = |time: &str| match time.parse::<jiff::Timestamp>() {
        Ok(t) => table::age(now.duration_since(t)),
        Err(_) => "?".to_owned(),
    };
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
                s.detached_since.as_deref().map_or_else(|| "-".to_owned(), age),
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
}
