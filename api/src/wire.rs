//! Names on the wire: headers, upgrade protocols, query parameters, paths.
//!
//! Header names are lowercase (HTTP/2 requires it and HTTP/1.1 does not
//! care), so they can be used directly as `http::HeaderName`s.

/// Router -> gateway: the container UID the request is for. A gateway
/// refuses (403) any UID but its own.
pub const CONTAINER_UID: &str = "x-hatchway-container-uid";
/// Router -> gateway: `request_auth`, the proof over the gateway's
/// certificate.
pub const AUTHORIZATION: &str = "x-hatchway-authorization";
/// Gateway -> router: `respond_auth`. A response without a valid one is
/// refused with 502 (a man-in-the-middle cannot make it).
pub const AUTHORIZATION_RESPONSE: &str = "x-hatchway-authorization-response";
/// Router -> gateway: the published port a web-app request is for.
pub const TARGET_PORT: &str = "x-hatchway-target-port";
/// Router -> gateway: the `Host` the user asked for; a web-app request
/// without it is refused with 502.
pub const REQUEST_HOST: &str = "x-hatchway-request-host";
/// Router -> router: set on a request forwarded to the replica holding the
/// tunnel; a request carrying it is never forwarded again.
pub const NO_FORWARD: &str = "x-hatchway-no-forward";
/// Router -> gateway: which router request this is, for the audit trail.
pub const REQUEST_ID: &str = "x-hatchway-request-id";

/// Whether a [`REQUEST_ID`] value may go into logs as it came: at most 64
/// visible ASCII characters (no spaces, quotes or line breaks to forge a
/// log line with). The router makes its own id otherwise; the gateway
/// logs `-`.
pub fn is_sane_request_id(id: &str) -> bool {
    id.len() <= 64 && id.bytes().all(|b| b.is_ascii_graphic())
}
/// Router -> gateway: who is asking (the authenticated user name), for the
/// audit trail. Informational: the gateway trusts it because the proof
/// shows the router sent it.
pub const REQUEST_USER: &str = "x-hatchway-request-user";
/// Router -> gateway, on a web-app request: a tag naming the user's
/// web-app session (a hash of its cookie: it opens nothing), so the audit
/// trail records each login once.
pub const WEB_SESSION: &str = "x-hatchway-web-session";
/// Router -> gateway: which router replica sent the request (its pod name),
/// for the audit trail.
pub const REQUEST_REPLICA: &str = "x-hatchway-request-replica";
/// Router -> gateway (WebDAV): the path prefix the user sees, so hrefs in
/// PROPFIND answers are right.
pub const WEBDAV_PREFIX: &str = "x-webdav-prefix";
/// Router -> gateway (WebDAV): the directory inside the log tree to serve.
pub const WEBDAV_SOURCE: &str = "x-webdav-source";

/// Gateway -> router -> user, on a shell's `101`: the gateway's SSH host
/// key (`TYPE BASE64`) — the answering gateway's own (the router falls back
/// to the Container's status), so the CLI can write its known_hosts entry
/// before ssh checks it, right after a sidecar restart too. (Not `x-hatchway-*`: those are
/// stripped from every answer passed on.)
pub const SSH_HOST_KEY: &str = "hatchway-ssh-host-key";
/// Router -> user, on every log response: where the logs came from —
/// `live` (the gateway), `saved` (the API, after the end: nothing more will
/// come), `api` (a `?sinceSeconds=` answer, from the API while running or
/// after) or `none` (not started yet). `logs -f` stops after `saved`.
pub const LOG_SOURCE: &str = "hatchway-log-source";
/// Gateway -> user (through the router), on a workload log file's answer:
/// `true` when the workload had ended before the file was read — the shim
/// writes its exit code after the last byte of the logs, so the answer
/// reaches the log's end. `logs -f` stops there, without waiting for the
/// Container's status (kubelet, operator, router's cache: seconds on a
/// busy node). The workload could write the exit code early; that only
/// ends its own user's `logs -f` early.
pub const LOG_COMPLETE: &str = "hatchway-log-complete";

/// Sidecar -> router (tunnel): the hex tunnel proof over the session's
/// exported keying material.
pub const TUNNEL_PROOF: &str = "x-hatchway-tunnel-proof";
/// Sidecar -> router (tunnel): the control protocol version it speaks.
pub const TUNNEL_VERSION: &str = "x-hatchway-tunnel-version";
/// Sidecar -> router on the tunnel request, router -> sidecar echoed on
/// its 101: the tunnel's streams carry HTTP as it is, with no TLS of their
/// own (value [`TUNNEL_STREAMS_HTTP`]); their proof is bound to the
/// tunnel's TLS session ([`crate::tunnel::stream_proof`]). Without it on
/// both, each stream is TLS to the gateway's certificate, as on the direct
/// path (an older router or sidecar).
pub const TUNNEL_STREAMS: &str = "x-hatchway-tunnel-streams";
/// The one value of [`TUNNEL_STREAMS`].
pub const TUNNEL_STREAMS_HTTP: &str = "http";

/// Whether `headers` (the sidecar's tunnel request, or the router's 101)
/// carry [`TUNNEL_STREAMS`]: [`TUNNEL_STREAMS_HTTP`].
pub fn asks_plain_tunnel_streams(headers: &http::HeaderMap) -> bool {
    headers
        .get(TUNNEL_STREAMS)
        .is_some_and(|v| v.as_bytes() == TUNNEL_STREAMS_HTTP.as_bytes())
}

/// `Upgrade:` value of an SSH session.
pub const UPGRADE_SSH: &str = "ssh";
/// `Upgrade:` value of a raw TCP port-forward.
pub const UPGRADE_TCP: &str = "tcp";
/// A port-forward whose stream is in frames ([`crate::frames`]), so a
/// half-close survives a proxy that ends the connection at the first one
/// (the Kubernetes API server's): what the CLI asks for through the
/// aggregated API.
pub const UPGRADE_TCP_FRAMED: &str = "hatchway-tcp-frames";
/// A UDP port-forward: one flow of datagrams ([`crate::datagrams`]) to
/// the port, from a socket in the pod `connect`ed to it.
pub const UPGRADE_UDP: &str = "hatchway-udp";
/// `Upgrade:` value of a sidecar's tunnel to the router.
pub const UPGRADE_TUNNEL: &str = "hatchway-tunnel";

/// Resumable sessions (docs/sessions.md): the headers of a shell's or a
/// port-forward's upgrade that open one and resume it. They pass between
/// the client and the gateway through the router unchanged (they are not
/// `X-Hatchway-*`, which the router owns), and are never logged.
pub mod resumable {
    /// Request: `1` asks for a resumable session.
    pub const REQUEST: &str = "hatchway-resumable";
    /// The session's id: in the `101` that opened it, and in a resume.
    pub const ID: &str = "hatchway-session-id";
    /// The session's resume secret (64 hex digits): in the `101` that
    /// opened it, and in a resume.
    pub const SECRET: &str = "hatchway-session-secret";
    /// Bytes received so far: the client's in a resume, the gateway's in
    /// its `101`.
    pub const OFFSET: &str = "hatchway-session-offset";
    /// Seconds the gateway keeps a detached session: in the `101` that
    /// opened it (how long the client keeps trying).
    pub const GRACE: &str = "hatchway-session-grace";
    /// Request of a new resumable SSH connection: its first shell takes
    /// over the pty of this earlier session of the same user (its id, or
    /// [`ATTACH_LATEST`]) instead of starting one (`shell --resume`).
    pub const ATTACH: &str = "hatchway-session-attach";
    /// [`ATTACH`]'s value for the user's most recently detached session.
    pub const ATTACH_LATEST: &str = "latest";
    /// Request of a new SSH connection: its shell shows this running
    /// terminal (its id, as `sessions` lists it) read-only
    /// (`shell --join`).
    pub const WATCH: &str = "hatchway-session-watch";
    /// What the router passes from the client to the gateway.
    pub const REQUEST_HEADERS: [&str; 6] = [REQUEST, ID, SECRET, OFFSET, ATTACH, WATCH];
    /// What the router passes from the gateway's `101` to the client.
    pub const RESPONSE_HEADERS: [&str; 4] = [ID, SECRET, OFFSET, GRACE];
}

/// Query parameter: run the shell as this user (when the workload runs as
/// root).
pub const PARAM_LOGIN_USERNAME: &str = "login_username";
/// Query parameter: the key sequence that ends an interactive session.
pub const PARAM_DETACH_KEYS: &str = "detach_keys";
/// Query parameter: the port of a port-forward.
pub const PARAM_PORT: &str = "port";
/// Query parameter of a web app's login link: a one-time code (never the
/// user's token), exchanged for the router's session cookie and never
/// passed to the container.
pub const PARAM_LOGIN_CODE: &str = "hatchway_code";
/// The router's web-app session cookie (host-only: the `__Host-` prefix).
pub const SESSION_COOKIE: &str = "__Host-hatchway_session";
/// The header a web app gets on every authenticated request: a JWT naming
/// the user, signed by the router (keys at `/.well-known/jwks.json`).
/// One sent by a client is dropped.
pub const JWT_ASSERTION: &str = "hatchway-jwt-assertion";
/// Query parameter of a log file request: only the lines of the last N
/// seconds (answered from the API server, by the kubelet's timestamps).
pub const PARAM_SINCE_SECONDS: &str = "sinceSeconds";
/// Query parameter of a log file: `timestamps=true`, each line with the
/// time the kubelet read it (from the Kubernetes API, as `sinceSeconds`).
pub const PARAM_TIMESTAMPS: &str = "timestamps";
/// Query parameter of a log file: `previous=true`, the workload's previous
/// run (a restarted `OnFailure` workload; from the Kubernetes API).
pub const PARAM_PREVIOUS: &str = "previous";

/// The user API's path prefix: every user request is
/// `/v1/namespaces/{ns}/containers/{name}/{action}` (see [`container_path`]).
pub const USER_API_PREFIX: &str = "/v1/namespaces/";
/// The user-API action of a shell: `POST` with `Upgrade: ssh`.
pub const ACTION_SSH: &str = "ssh";
/// The user-API action of a port-forward: `POST ?port=N` with `Upgrade: tcp`.
pub const ACTION_PORTFORWARD: &str = "portforward";
/// The user-API action of the log tree (WebDAV): `log`, `log/`,
/// `log/{file}`.
pub const ACTION_LOG: &str = "log";
/// The user-API action that mints a login link: `POST
/// /v1/namespaces/{ns}/containers/{name}/weblogin?port=N`.
pub const ACTION_WEBLOGIN: &str = "weblogin";
/// The user-API action that lists the caller's resumable sessions in a
/// Container (JSON, [`SessionList`]): `GET`.
pub const ACTION_SESSIONS: &str = "sessions";
/// The router-only action of the web page's terminal: `GET
/// /v1/namespaces/{ns}/containers/{name}/terminal` (a WebSocket).
pub const ACTION_TERMINAL: &str = "terminal";
/// Where a one-time link that logs the web page in is minted (`POST`,
/// bearer token): `https://ROUTER/ui/login-link`.
pub const PAGE_LOGIN_LINK_PATH: &str = "/ui/login-link";

/// Characters escaped in the user API's path segments and query values.
const ESCAPE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The user-API path of `action` (which may go on: `log/stdout.txt`) on
/// Container `namespace/name`, with query `params` (empty values left out),
/// names and values percent-encoded.
pub fn container_path(namespace: &str, name: &str, action: &str, params: &[(&str, Option<&str>)]) -> String {
    Api::Router.container_path(namespace, name, action, params)
}

/// The two ways to the user API: the router's own URL, and the aggregated
/// API the Kubernetes API server proxies to the router.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Api {
    /// `https://ROUTER/v1/namespaces/{ns}/containers/{name}/{action}`.
    Router,
    /// `https://APISERVER/apis/access.hatchway.dev/v1alpha1/namespaces/{ns}/containers/{name}/{subresource}`.
    Aggregated,
}

impl Api {
    /// Where Container paths begin (ends with `namespaces/`).
    pub fn prefix(self) -> &'static str {
        match self {
            Api::Router => USER_API_PREFIX,
            Api::Aggregated => access_api::PREFIX,
        }
    }

    /// The path segment of a user-API action (`ssh`, `portforward`, `log`,
    /// `weblogin`) in this API. The aggregated API names the shell `exec`:
    /// see [`access_api::SHELL`].
    pub fn segment(self, action: &str) -> &str {
        match (self, action) {
            (Api::Aggregated, ACTION_SSH) => access_api::SHELL,
            _ => action,
        }
    }

    /// The user-API action of a path segment, if this API has it.
    pub fn action(self, segment: &str) -> Option<&'static str> {
        let actions = [
            ACTION_SSH,
            ACTION_PORTFORWARD,
            ACTION_LOG,
            ACTION_WEBLOGIN,
            ACTION_SESSIONS,
        ];
        actions.into_iter().find(|a| self.segment(a) == segment)
    }

    /// The path of `action` (which may go on: `log/stdout.txt`) on
    /// Container `namespace/name`, with query `params` (empty values left
    /// out), names and values percent-encoded.
    pub fn container_path(
        self,
        namespace: &str,
        name: &str,
        action: &str,
        params: &[(&str, Option<&str>)],
    ) -> String {
        use percent_encoding::utf8_percent_encode;
        let (head, rest) = match action.split_once('/') {
            Some((head, rest)) => (head, Some(rest)),
            None => (action, None),
        };
        let mut path = format!(
            "{}{}/containers/{}/{}",
            self.prefix(),
            utf8_percent_encode(namespace, ESCAPE),
            utf8_percent_encode(name, ESCAPE),
            self.segment(head),
        );
        if let Some(rest) = rest {
            path.push('/');
            path.push_str(rest);
        }
        let mut sep = '?';
        for (key, value) in params {
            if let Some(value) = value.filter(|v| !v.is_empty()) {
                path.push(sep);
                path.push_str(key);
                path.push('=');
                path.extend(utf8_percent_encode(value, ESCAPE));
                sep = '&';
            }
        }
        path
    }
}

/// The aggregated API (`APIService` `v1alpha1.access.hatchway.dev`): the
/// user API through the Kubernetes API server, which authenticates the
/// user (any kubeconfig: client certificates, OIDC, exec plugins), checks
/// RBAC on these subresources, and proxies to the router's aggregated port
/// with the user in `X-Remote-User`/`-Group`/`-Extra-*`.
pub mod access_api {
    /// The API group (the CRD keeps `hatchway.dev`).
    pub const GROUP: &str = "access.hatchway.dev";
    /// Its one version.
    pub const VERSION: &str = "v1alpha1";
    /// `GROUP/VERSION`.
    pub const GROUP_VERSION: &str = "access.hatchway.dev/v1alpha1";
    /// The `APIService` object's name.
    pub const APISERVICE: &str = "v1alpha1.access.hatchway.dev";
    /// Where Container paths begin.
    pub const PREFIX: &str = "/apis/access.hatchway.dev/v1alpha1/namespaces/";
    /// Discovery: `GET /apis/access.hatchway.dev/v1alpha1`.
    pub const DISCOVERY: &str = "/apis/access.hatchway.dev/v1alpha1";
    /// The resource the subresources hang off.
    pub const RESOURCE: &str = "containers";
    /// The shell's subresource. Not `ssh`: the API server treats only
    /// `exec`, `attach`, `portforward`, `log` and `proxy` subresources as
    /// long-running; any other request is cut at `--request-timeout`
    /// (60 s) and holds a priority-and-fairness seat while it lasts.
    pub const SHELL: &str = "exec";
    /// The port-forward's subresource.
    pub const PORTFORWARD: &str = "portforward";
    /// The log tree's subresource.
    pub const LOG: &str = "log";
    /// The login link's subresource.
    pub const WEBLOGIN: &str = "weblogin";
    /// The resumable sessions' subresource.
    pub const SESSIONS: &str = "sessions";
}

/// Values of [`LOG_SOURCE`].
pub mod log_source {
    /// From the running Container's gateway.
    pub const LIVE: &str = "live";
    /// From the API server after the end: nothing more will come.
    pub const SAVED: &str = "saved";
    /// A `?sinceSeconds=` answer, from the API server.
    pub const API: &str = "api";
    /// Not started yet: nothing to read.
    pub const NONE: &str = "none";
}

/// The ConfigMap (in the operator's namespace) where clients find the
/// router: public information only, readable by every authenticated user.
pub mod client_config {
    /// Its name.
    pub const NAME: &str = "hatchway-client";
    /// The key holding the router's URL.
    pub const SERVER: &str = "server";
    /// The key holding the CA (PEM) the router's certificate chains to.
    pub const CA: &str = "ca.crt";
}

/// The answer to `weblogin`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebLogin {
    /// The app's URL with the one-time code: open it in a browser.
    pub url: String,
    /// How long the code is good for.
    pub expires_in_seconds: u64,
}

/// The answer to `sessions`: the caller's resumable sessions in a
/// Container, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionList {
    pub sessions: Vec<ListedSession>,
    /// The Container's terminals, every user's: those running (`shell
    /// --join ID` watches one) and those recorded (`sessions --replay ID`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub terminals: Vec<ListedTerminal>,
}

/// One terminal (pty), as `sessions` lists it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedTerminal {
    /// What `--join ID` and `--replay ID` name.
    pub id: String,
    pub user: String,
    /// What it runs (`shell`, `exec: CMD`).
    pub what: String,
    /// RFC 3339.
    pub started: String,
    /// Whether it still runs (and may be watched).
    pub live: bool,
    /// The recording's size in bytes, if it is recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded: Option<u64>,
}

/// One resumable session, as `sessions` lists it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedSession {
    /// What `--resume ID` names.
    pub id: String,
    pub user: String,
    /// `shell` or `portforward`.
    pub kind: String,
    /// What it runs: the shell's commands, the forwarded port.
    pub what: String,
    /// RFC 3339.
    pub started: String,
    /// RFC 3339, while no connection carries it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detached_since: Option<String>,
}

/// Default detach keys, as in Arvados: ctrl-] twice.
pub const DEFAULT_DETACH_KEYS: &str = "ctrl-],ctrl-]";

/// Gateway paths (sidecar side).
pub mod gateway_path {
    /// `POST` with `Upgrade: ssh`.
    pub const SSH: &str = "/ssh";
    /// `POST ?port=N` with `Upgrade: tcp`.
    pub const PORTFORWARD: &str = "/portforward";
    /// WebDAV root of the log directory.
    pub const LOG: &str = "/log/";
    /// `GET`: the listening ports, as JSON.
    pub const PORTS: &str = "/ports";
    /// `GET`: the resumable sessions of the user the router names (JSON).
    pub const SESSIONS: &str = "/sessions";
}

/// Router path of its version (`GET`, no credentials): [`ServerVersion`]
/// as JSON.
pub const VERSION_PATH: &str = "/version";
/// Router -> user, on the aggregated API's discovery answer: the router's
/// version (the aggregated API has no `/version` of its own).
pub const SERVER_VERSION: &str = "hatchway-server-version";
/// Router -> user, with [`SERVER_VERSION`]: the control protocol version.
pub const SERVER_PROTOCOL: &str = "hatchway-server-protocol";

/// What `GET /version` answers.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServerVersion {
    /// The operator's version (`0.1.0`).
    pub version: String,
    /// The control protocol version it speaks.
    pub protocol: u32,
}

/// Router path of the tunnel endpoint that sidecars dial.
pub const TUNNEL_PATH: &str = "/v1/tunnel";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_paths_escape_names_and_skip_empty_params() {
        assert_eq!(
            container_path("team-a", "web.1", ACTION_SSH, &[(PARAM_LOGIN_USERNAME, None)]),
            "/v1/namespaces/team-a/containers/web.1/ssh"
        );
        assert_eq!(
            container_path(
                "a b",
                "x/y",
                ACTION_SSH,
                &[
                    (PARAM_LOGIN_USERNAME, Some("root")),
                    (PARAM_DETACH_KEYS, Some("ctrl-p,ctrl-q")),
                    (PARAM_PORT, Some("")),
                ]
            ),
            "/v1/namespaces/a%20b/containers/x%2Fy/ssh?login_username=root&detach_keys=ctrl-p%2Cctrl-q"
        );
    }

    #[test]
    fn the_aggregated_api_names_the_shell_exec_and_keeps_the_rest() {
        assert_eq!(
            Api::Aggregated.container_path("ns", "web", ACTION_SSH, &[(PARAM_LOGIN_USERNAME, Some("root"))]),
            "/apis/access.hatchway.dev/v1alpha1/namespaces/ns/containers/web/exec?login_username=root"
        );
        assert_eq!(
            Api::Aggregated.container_path("ns", "web", "log/stdout.txt", &[]),
            "/apis/access.hatchway.dev/v1alpha1/namespaces/ns/containers/web/log/stdout.txt"
        );
        assert_eq!(
            Api::Router.container_path("ns", "web", "log/", &[]),
            "/v1/namespaces/ns/containers/web/log/"
        );
        assert_eq!(Api::Aggregated.action("exec"), Some(ACTION_SSH));
        assert_eq!(Api::Aggregated.action("ssh"), None);
        assert_eq!(Api::Router.action("exec"), None);
        assert_eq!(Api::Router.action("portforward"), Some(ACTION_PORTFORWARD));
    }
}
