//! The SSH server behind `POST /ssh` (`Upgrade: ssh`).
//!
//! SSH-level authentication is not what guards access: the router already
//! authorized the user, and the gateway's HMAC proof guards the channel the
//! SSH bytes travel in. So every SSH auth method is accepted; the user
//! name comes from the router's `login_username` parameter, never from the
//! SSH client. The host key is generated at every start and reported (its
//! fingerprint reaches `status.gateway`) so clients can verify it.

mod agent;
mod handler;
mod process;
pub mod recording;
mod reverse;
mod session;
mod terminal;

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use russh::keys::{Algorithm, HashAlg, PrivateKey};

use crate::body::{Body, RequestBody, empty, text};
use crate::report::{Reporter, Who};
use crate::resumable::{self, Kind, Registry};

/// Settings of SSH sessions that come from the request.
#[derive(Clone, Debug, Default)]
pub struct SessionParams {
    /// Run commands as this user (only when the workload runs as root).
    pub login_username: Option<String>,
    /// The bytes that end an interactive session when typed in a row.
    pub detach_keys: Vec<u8>,
    /// Who asked, for the audit trail.
    pub who: Who,
    /// The resumable session carrying the connection, if it is one.
    pub resumable_id: Option<String>,
}

/// The SSH server: host key, configuration, and where to spawn sessions.
pub struct SshServer {
    config: Arc<russh::server::Config>,
    /// For resumable sessions: no keepalive, which would end the
    /// connection while it is detached (the session's grace time bounds
    /// that instead).
    resumable_config: Arc<russh::server::Config>,
    host_key: PrivateKey,
    /// The name of the shim's abstract spawn socket.
    pub spawn_socket: String,
    /// A program to serve SFTP inside the workload container; empty: the
    /// shim's own `sftp-server` helper.
    pub sftp_command: Vec<String>,
    /// Audit trail and reports.
    pub reporter: Arc<Reporter>,
    /// The processes of resumable connections, for `--resume`, and the
    /// running ptys, for `--join`.
    pub terminals: Arc<terminal::Terminals>,
    /// Where ptys are recorded, if they are.
    pub recordings: recording::Recordings,
    /// Which ports `direct-tcpip` (and the gateway's `/portforward`) may
    /// reach: one rule for both (api/src/ports.rs).
    pub forward: hatchway_api::ports::ForwardRule,
    /// Whether `ssh -R` may open listeners in the pod (reverse.rs).
    pub reverse_forward: bool,
    /// Whether `ssh -A` may put an agent socket in the container (agent.rs).
    pub agent_forward: bool,
}

/// Why the SSH server could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("generating the SSH host key: {0}")]
pub struct HostKeyError(#[from] russh::keys::ssh_key::Error);

impl SshServer {
    /// A server with a fresh Ed25519 host key.
    pub fn new(
        spawn_socket: String,
        sftp_command: Vec<String>,
        reporter: Arc<Reporter>,
        recordings: recording::Recordings,
    ) -> Result<Self, HostKeyError> {
        let host_key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)?;
        let config = server_config(&host_key, Some(Duration::from_secs(30)));
        let resumable_config = server_config(&host_key, None);
        Ok(Self {
            config: Arc::new(config),
            resumable_config: Arc::new(resumable_config),
            host_key,
            spawn_socket,
            sftp_command,
            reporter,
            terminals: Default::default(),
            recordings,
            forward: hatchway_api::ports::ForwardRule::any(),
            reverse_forward: false,
            agent_forward: false,
        })
    }

    /// The host public key in OpenSSH `authorized_keys` form.
    pub fn host_key_openssh(&self) -> String {
        self.host_key.public_key().to_openssh().unwrap_or_default()
    }

    /// The host key fingerprint, `SHA256:...`.
    pub fn host_key_fingerprint(&self) -> String {
        self.host_key
            .public_key()
            .fingerprint(HashAlg::Sha256)
            .to_string()
    }

    /// Answers `POST /ssh` with 101 and runs an SSH session on the
    /// upgraded connection, or, when asked, on a resumable session
    /// carried by it (see [`crate::resumable`]).
    pub async fn serve(
        self: Arc<Self>,
        mut req: Request<RequestBody>,
        who: Who,
        sessions: &Arc<Registry>,
    ) -> Response<Body> {
        if !hatchway_api::headers::upgrade_is(req.headers(), hatchway_api::wire::UPGRADE_SSH) {
            return text(
                StatusCode::BAD_REQUEST,
                "SSH needs `Connection: upgrade` and `Upgrade: ssh`",
            );
        }
        let mut params = match session_params(req.uri().query(), who) {
            Ok(params) => params,
            Err(message) => return text(StatusCode::BAD_REQUEST, message),
        };
        let take_over = match self.pty_to_take_over(req.headers(), &params.who, sessions) {
            Ok(found) => found,
            Err((status, message)) => return text(status, message),
        };
        let watch = match self.pty_to_watch(req.headers(), &params.who) {
            Ok(found) => found,
            Err((status, message)) => return text(status, message),
        };
        if take_over.is_some() && watch.is_some() {
            return text(
                StatusCode::BAD_REQUEST,
                "a connection either resumes a shell or watches one, not both",
            );
        }
        let on_upgrade = hyper::upgrade::on(&mut req);
        let mut response = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, hatchway_api::wire::UPGRADE_SSH)
            .body(empty())
            .unwrap();
        // The key this process holds, for the client's known_hosts: the
        // status may still carry the last process's for a moment.
        if let Ok(key) = http::HeaderValue::from_str(&self.host_key_openssh()) {
            response
                .headers_mut()
                .insert(hatchway_api::wire::SSH_HOST_KEY, key);
        }
        if resumable::wanted(req.headers()) {
            let (ssh_end, session_end) = tokio::io::duplex(RESUMABLE_PIPE);
            let what = match &params.login_username {
                Some(user) => format!("ssh as {user}"),
                None => "ssh".to_owned(),
            };
            match sessions.open(Kind::Shell, &params.who, what, session_end, false) {
                Ok(opened) => {
                    opened.add_headers(response.headers_mut());
                    params.resumable_id = Some(opened.id.clone());
                    let take_over = take_over.map(|(old, terminal)| TakeOver {
                        old,
                        terminal,
                        sessions: sessions.clone(),
                    });
                    crate::spawn(async move {
                        match on_upgrade.await {
                            Ok(upgraded) => opened.attach(TokioIo::new(upgraded)),
                            Err(error) => return tracing::debug!(%error, "SSH upgrade failed"),
                        }
                        let config = self.resumable_config.clone();
                        self.run(config, ssh_end, params, take_over, watch).await;
                    });
                    return response;
                }
                Err(_) if take_over.is_some() => {
                    return text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "this container's gateway holds the most resumable sessions it keeps: \
                         the session cannot be resumed now; try again",
                    );
                }
                Err(_) => {}
            }
        }
        crate::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let config = self.config.clone();
                    self.run(config, TokioIo::new(upgraded), params, None, watch)
                        .await
                }
                Err(error) => tracing::debug!(%error, "SSH upgrade failed"),
            }
        });
        response
    }

    /// The pty a new connection asks to take over (`Hatchway-Session-Attach`:
    /// an earlier session's id, or `latest`), checked: the session must be
    /// the same user's SSH session and still run a pty.
    fn pty_to_take_over(
        &self,
        headers: &http::HeaderMap,
        who: &Who,
        sessions: &Registry,
    ) -> Result<Option<(String, Arc<terminal::Terminal>)>, resumable::Refusal> {
        use hatchway_api::wire::resumable::{ATTACH, ATTACH_LATEST};
        let Some(wanted) = headers.get(ATTACH) else {
            return Ok(None);
        };
        let wanted = wanted.to_str().unwrap_or_default();
        if !resumable::wanted(headers) || !sessions.enabled() {
            return Err((
                StatusCode::BAD_REQUEST,
                "sessions in this container are not resumable (its resume grace time is 0)".into(),
            ));
        }
        if wanted == ATTACH_LATEST {
            return sessions
                .ids_of(&who.user, Kind::Shell)
                .into_iter()
                .find_map(|id| self.terminals.pty(&id).map(|t| (id, t)))
                .map(Some)
                .ok_or_else(|| {
                    (
                        StatusCode::NOT_FOUND,
                        format!(
                            "{} has no shell in this container to resume: it ended, or its grace time passed",
                            who.user
                        ),
                    )
                });
        }
        match sessions.owner(wanted) {
            None => Err((
                StatusCode::GONE,
                format!(
                    "session {wanted} is not known to this container's gateway: it ended, its grace time \
                     passed, or the pod restarted"
                ),
            )),
            Some((user, kind)) if user != who.user || kind != Kind::Shell => {
                self.reporter.audit(&format!(
                    "resumable {wanted} take-over refused (other_user) {}",
                    who.audited()
                ));
                Err((
                    StatusCode::FORBIDDEN,
                    format!(
                        "session {wanted} is not one of your SSH sessions; it is never handed to anyone else"
                    ),
                ))
            }
            Some(_) => match self.terminals.pty(wanted) {
                Some(terminal) => Ok(Some((wanted.to_owned(), terminal))),
                None => Err((
                    StatusCode::CONFLICT,
                    format!("session {wanted} runs no terminal to resume (no pty, or its shell ended)"),
                )),
            },
        }
    }

    /// The running pty a new connection asks to watch read-only
    /// (`Hatchway-Session-Watch: ID`, `shell --join`). Any user the router
    /// let open a shell here may watch any terminal in it (they could read
    /// its processes' memory anyway); the audit trail says who watched whom.
    fn pty_to_watch(
        &self,
        headers: &http::HeaderMap,
        who: &Who,
    ) -> Result<Option<Arc<terminal::Terminal>>, resumable::Refusal> {
        let Some(wanted) = headers.get(hatchway_api::wire::resumable::WATCH) else {
            return Ok(None);
        };
        let wanted = wanted.to_str().unwrap_or_default();
        match self.terminals.live_pty(wanted) {
            Some(terminal) => {
                self.reporter.audit(&format!(
                    "terminal {wanted} of user={:?} watched {}",
                    terminal.user,
                    who.audited()
                ));
                Ok(Some(terminal))
            }
            None => Err((
                StatusCode::NOT_FOUND,
                format!(
                    "terminal {wanted:?} is not running in this container: it ended (a recorded one can be \
                     replayed: `kubectl hatch sessions NAME --replay ID`), or there is none of that id"
                ),
            )),
        }
    }

    /// Runs the SSH server side of one connection on `io`.
    async fn run<IO>(
        self: Arc<Self>,
        config: Arc<russh::server::Config>,
        io: IO,
        params: SessionParams,
        take_over: Option<TakeOver>,
        watch: Option<Arc<terminal::Terminal>>,
    ) where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let handler = handler::Connection::new(self, params, take_over, watch);
        match russh::server::run_stream(config, io, handler).await {
            Ok(session) => {
                if let Err(error) = session.await {
                    tracing::debug!(%error, "SSH session ended");
                }
            }
            Err(error) => tracing::debug!(%error, "SSH handshake failed"),
        }
    }
}

/// A pty the connection's first shell request takes over from an earlier
/// session, which then ends.
pub struct TakeOver {
    pub old: String,
    pub terminal: Arc<terminal::Terminal>,
    pub sessions: Arc<Registry>,
}

/// The SSH server's configuration; `keepalive` off for resumable sessions,
/// whose keepalives would end a detached connection (the grace time bounds
/// it instead).
fn server_config(host_key: &PrivateKey, keepalive: Option<Duration>) -> russh::server::Config {
    russh::server::Config {
        keys: vec![host_key.clone()],
        methods: russh::MethodSet::server_supported(),
        auth_rejection_time: Duration::ZERO,
        auth_rejection_time_initial: Some(Duration::ZERO),
        inactivity_timeout: None,
        keepalive_interval: keepalive,
        keepalive_max: 4,
        nodelay: true,
        // Larger windows and packets than the defaults: bulk copies
        // (scp, sftp, ssh -L) are limited by the window on long paths.
        window_size: 8 * 1024 * 1024,
        maximum_packet_size: 64 * 1024,
        ..Default::default()
    }
}

/// The pipe between a resumable session and its SSH server: large enough
/// that bulk copies are not bounded by it.
const RESUMABLE_PIPE: usize = 256 * 1024;

/// Reads `login_username` and `detach_keys` from the query string.
pub fn session_params(query: Option<&str>, who: Who) -> Result<SessionParams, String> {
    let mut params = SessionParams {
        who,
        ..Default::default()
    };
    let mut detach = hatchway_api::wire::DEFAULT_DETACH_KEYS.to_owned();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .map_err(|_| format!("{key} is not UTF-8"))?
            .replace('+', " ");
        match key {
            hatchway_api::wire::PARAM_LOGIN_USERNAME if !value.is_empty() => {
                if !value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                    || value.len() > 32
                {
                    return Err(format!("login_username {value:?} is not a user name"));
                }
                params.login_username = Some(value);
            }
            hatchway_api::wire::PARAM_DETACH_KEYS => detach = value,
            _ => {}
        }
    }
    params.detach_keys = parse_detach_keys(&detach)?;
    Ok(params)
}

/// Parses detach keys the way Docker and Arvados write them:
/// comma-separated `ctrl-X` or single characters, e.g. `ctrl-],ctrl-]`.
/// An empty string disables detaching.
pub fn parse_detach_keys(spec: &str) -> Result<Vec<u8>, String> {
    if spec.is_empty() {
        return Ok(Vec::new());
    }
    spec.split(',')
        .map(|key| {
            let bad = || format!("detach key {key:?} is not ctrl-<char> or a single character");
            if let Some(c) = key.strip_prefix("ctrl-") {
                let [c] = c.as_bytes() else { return Err(bad()) };
                match c.to_ascii_uppercase() {
                    c @ b'@'..=b'_' => Ok(c - b'@'),
                    b'?' => Ok(0x7f),
                    _ => Err(bad()),
                }
            } else {
                match key.as_bytes() {
                    [c] if c.is_ascii() => Ok(*c),
                    _ => Err(bad()),
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_parse_like_docker() {
        assert_eq!(parse_detach_keys("ctrl-],ctrl-]").unwrap(), vec![0x1d, 0x1d]);
        assert_eq!(parse_detach_keys("ctrl-p,ctrl-q").unwrap(), vec![0x10, 0x11]);
        assert_eq!(parse_detach_keys("ctrl-a,x").unwrap(), vec![0x01, b'x']);
        assert_eq!(parse_detach_keys("").unwrap(), Vec::<u8>::new());
        assert!(parse_detach_keys("ctrl-").is_err());
        assert!(parse_detach_keys("alt-x").is_err());
    }

    #[test]
    fn session_params_come_from_the_query() {
        let p = session_params(
            Some("login_username=alice&detach_keys=ctrl-p%2Cctrl-q"),
            Who::default(),
        )
        .unwrap();
        assert_eq!(p.login_username.as_deref(), Some("alice"));
        assert_eq!(p.detach_keys, vec![0x10, 0x11]);
        let p = session_params(None, Who::default()).unwrap();
        assert_eq!((p.login_username, p.detach_keys), (None, vec![0x1d, 0x1d]));
        assert!(session_params(Some("login_username=a;rm"), Who::default()).is_err());
    }

    #[test]
    fn the_host_key_is_fresh_and_fingerprinted() {
        let dir = tempfile::tempdir().unwrap();
        let reporter = Reporter::new(dir.path(), crate::metrics::Metrics::new());
        let off = recording::Recordings::off;
        let a = SshServer::new("/nonexistent".into(), vec![], reporter.clone(), off()).unwrap();
        let b = SshServer::new("/nonexistent".into(), vec![], reporter, off()).unwrap();
        assert!(a.host_key_fingerprint().starts_with("SHA256:"));
        assert!(a.host_key_openssh().starts_with("ssh-ed25519 "));
        assert_ne!(a.host_key_fingerprint(), b.host_key_fingerprint());
    }
}
