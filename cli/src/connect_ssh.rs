//! `connect-ssh`: ssh's ProxyCommand. Opens `POST …/ssh` (`Upgrade: ssh`)
//! as a resumable session, records the gateway's host key (from the
//! router's answer) in the hatchway known_hosts file before ssh checks it,
//! then carries stdin to the sidecar and the sidecar's bytes to stdout
//! until both sides are done — through as many connections as it takes
//! (a router replica restarted, the network dropped: ssh never notices).

use std::path::Path;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use hatchway_api::wire;

use crate::known_hosts;
use crate::resumable::{self, Route};
use crate::router::{Endpoint, RouterError, Upgrade};

/// The host-name suffix of Hatchway Containers in ssh without a
/// kubeconfig context: `NAME.NS.hatchway`. With one, `NAME.NS.CONTEXT.hatchway`
/// ([`host_suffix`]), so two clusters never share a name (or a
/// known_hosts entry).
pub const HOST_SUFFIX: &str = "hatchway";

/// The ssh user name that means "the container's default user": the
/// config-ssh block sets it as `User`, so `ssh NAME.NS.hatchway` logs in as
/// the container's user and `ssh root@NAME.NS.hatchway` as root.
pub const DEFAULT_LOGIN: &str = "_";
/// How long a new connection waits for a router that is away or a
/// tunnel that is moving.
const NEW_CONNECTION_WAIT: Duration = Duration::from_secs(60);
/// The longest wait between asks while the Container is not ready.
const WAIT_READY_CEILING: Duration = Duration::from_secs(2);
/// The waits between asks while the Container is not ready: 250 ms
/// doubling to 2 s.
const WAIT_READY: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(250))
    .with_max_delay(WAIT_READY_CEILING)
    .without_max_times();

/// The ssh host-name suffix for kubeconfig context `context`:
/// `CONTEXT.hatchway` with the context's name made a DNS label (lowercase;
/// anything but letters, digits and `-` becomes `-`), or `hatchway`
/// without a context.
pub fn host_suffix(context: Option<&str>) -> String {
    let label: String = context
        .unwrap_or_default()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let label = label.trim_matches('-');
    if label.is_empty() {
        HOST_SUFFIX.to_owned()
    } else {
        format!("{label}.{HOST_SUFFIX}")
    }
}

/// `NAME.NS.SUFFIX` → (`NAME`, `NS`); anything else → `None`.
pub fn parse_host<'a>(host: &'a str, suffix: &str) -> Option<(&'a str, &'a str)> {
    let rest = host.strip_suffix(suffix)?.strip_suffix('.')?;
    let (name, namespace) = rest.rsplit_once('.')?;
    (!name.is_empty() && !namespace.is_empty()).then_some((name, namespace))
}

/// The ssh host alias of Container `namespace/name`: `NAME.NS.SUFFIX`.
pub fn host_alias(name: &str, namespace: &str, suffix: &str) -> String {
    format!("{name}.{namespace}.{suffix}")
}

/// The login to ask for: none for the default marker or an empty name.
pub fn login(login: Option<&str>) -> Option<&str> {
    login.filter(|l| !l.is_empty() && *l != DEFAULT_LOGIN)
}

/// What to connect to.
pub struct SshTarget<'a> {
    /// The host-name suffix (for the known_hosts alias).
    pub suffix: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub login: Option<&'a str>,
    pub detach_keys: Option<&'a str>,
}

impl SshTarget<'_> {
    pub fn alias(&self) -> String {
        host_alias(self.name, self.namespace, self.suffix)
    }
}

/// The route of the SSH upgrade.
fn route<'a>(endpoint: &'a Endpoint, ssh: &SshTarget<'_>) -> Route<'a> {
    let path = endpoint.path(
        ssh.namespace,
        ssh.name,
        wire::ACTION_SSH,
        &[
            (wire::PARAM_LOGIN_USERNAME, login(ssh.login)),
            (wire::PARAM_DETACH_KEYS, ssh.detach_keys),
        ],
    );
    Route {
        endpoint,
        path,
        protocol: wire::UPGRADE_SSH,
        framed: false,
    }
}

/// How long [`open`] rides out a router that says it will serve in a
/// moment ([`RouterError::Settling`]: a tunnel moving between replicas
/// takes under a second, and the router itself waits 2 s for it).
pub const SETTLE_FOR: Duration = Duration::from_secs(5);

/// Opens the SSH upgrade (also the probe `shell` makes before running
/// ssh, which must not leave a resumable session behind). A refusal that
/// says it will pass ([`RouterError::Settling`]) is tried again for up to
/// [`SETTLE_FOR`], and a router that went silent (no answer within
/// `router::UPGRADE_TIMEOUT`: a replica going away mid-request during a
/// rollout, seen once in the e2e suite's loops) once more on a new
/// connection; any other refusal comes back at once (without `--wait`, a
/// Container that is not running yet is an error now).
pub async fn open(endpoint: &Endpoint, ssh: &SshTarget<'_>) -> Result<Upgrade, RouterError> {
    let deadline = Instant::now() + SETTLE_FOR;
    let mut silence_retried = false;
    loop {
        match open_with(endpoint, ssh, &[]).await {
            Err(RouterError::Settling { .. }) if Instant::now() + SETTLE_PAUSE < deadline => {
                tokio::time::sleep(SETTLE_PAUSE).await;
            }
            Err(RouterError::Connect { source, .. })
                if source.kind() == std::io::ErrorKind::TimedOut && !silence_retried =>
            {
                silence_retried = true;
            }
            result => return result,
        }
    }
}

/// The pause between [`open`]'s tries.
const SETTLE_PAUSE: Duration = Duration::from_millis(250);

/// [`open`] with `extra` headers.
async fn open_with(
    endpoint: &Endpoint,
    ssh: &SshTarget<'_>,
    extra: &[(&str, String)],
) -> Result<Upgrade, RouterError> {
    let route = route(endpoint, ssh);
    endpoint.upgrade(&route.path, route.protocol, extra).await
}

/// The gateway's host key the router sent with its `101`.
pub fn host_key(upgrade: &Upgrade) -> Option<&str> {
    upgrade
        .headers
        .get(wire::SSH_HOST_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

/// Opens the SSH upgrade, waiting (with a progress line on stderr each time
/// the router's answer changes) while the Container is not running yet or
/// its gateway not reachable, up to `timeout`.
pub async fn open_when_ready(
    endpoint: &Endpoint,
    ssh: &SshTarget<'_>,
    timeout: Duration,
) -> Result<Upgrade, RouterError> {
    open_when_ready_with(endpoint, ssh, timeout, &[]).await
}

/// [`open_when_ready`] with `extra` headers.
async fn open_when_ready_with(
    endpoint: &Endpoint,
    ssh: &SshTarget<'_>,
    timeout: Duration,
    extra: &[(&str, String)],
) -> Result<Upgrade, RouterError> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    let mut delays = WAIT_READY.build();
    loop {
        let delay = delays.next().unwrap_or(WAIT_READY_CEILING);
        match open_with(endpoint, ssh, extra).await {
            Err(e) if e.is_transient() && Instant::now() + delay < deadline => {
                let message = e.to_string();
                if message != last {
                    eprintln!("kubectl-hatch: waiting for {}: {message}", ssh.alias());
                    last = message;
                }
                tokio::time::sleep(delay).await;
            }
            result => return result,
        }
    }
}

/// Checks `--resume`'s value: a session id (16 hex digits) or `latest`.
pub fn resume_target(value: &str) -> anyhow::Result<&str> {
    let is_id = value.len() == 16 && value.bytes().all(|b| b.is_ascii_hexdigit());
    if is_id || value == wire::resumable::ATTACH_LATEST {
        Ok(value)
    } else {
        anyhow::bail!(
            "--resume takes a session id (16 hex digits, as `kubectl hatch sessions NAME` lists them), \
             not {value:?}"
        )
    }
}

/// Relays stdin/stdout through a resumable session until both sides are
/// done, resuming it through new connections when one breaks (see
/// [`crate::resumable`]). With `known_hosts`, first records the host key
/// the router sent for this Container's alias there. With `resume`, the
/// connection's shell takes over that earlier session's pty; with `join`,
/// it shows that running terminal read-only.
pub async fn relay(
    endpoint: &Endpoint,
    ssh: &SshTarget<'_>,
    known_hosts: Option<&Path>,
    resume: Option<&str>,
    join: Option<&str>,
) -> Result<(), RouterError> {
    let route = route(endpoint, ssh);
    let mut extra = vec![resumable::request_header()];
    if let Some(id) = resume {
        extra.push((wire::resumable::ATTACH, id.to_owned()));
    }
    if let Some(id) = join {
        extra.push((wire::resumable::WATCH, id.to_owned()));
    }
    // A router restarting or a tunnel moving (a rolling upgrade) delays a
    // new connection, as it delays a port-forward's, instead of failing it.
    let upgraded = open_when_ready_with(endpoint, ssh, NEW_CONNECTION_WAIT, &extra).await?;
    if let (Some(path), Some(key)) = (known_hosts, host_key(&upgraded))
        && let Err(error) = known_hosts::record(path, &ssh.alias(), key)
    {
        // ssh then reports the unknown key itself; the relay still works.
        eprintln!("kubectl-hatch: cannot write {}: {error}", path.display());
    }
    // ssh sends its ProxyCommand SIGHUP as it exits, usually before the
    // session's end has reached the gateway, which would then keep it as
    // detached for the whole grace time. The hang-up is taken as "finish
    // now": a short while to close the session, then exit.
    let mut hangup =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).map_err(RouterError::Relay)?;
    let mut local = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
    let outage = resumable::Outage::default();
    let carried = resumable::carry(&route, upgraded, &mut local, &outage);
    tokio::pin!(carried);
    tokio::select! {
        carried = &mut carried => carried,
        _ = hangup.recv() => {
            tokio::time::timeout(CLOSE_AFTER_HANGUP, carried).await.unwrap_or(Ok(()))
        }
    }
}

/// How long `connect-ssh` may still take to close its session after ssh
/// hung it up.
const CLOSE_AFTER_HANGUP: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_name_a_container_and_namespace() {
        assert_eq!(
            parse_host("web-1.team-a.hatchway", "hatchway"),
            Some(("web-1", "team-a"))
        );
        assert_eq!(
            parse_host("a.b.team-a.hatchway", "hatchway"),
            Some(("a.b", "team-a"))
        );
        assert_eq!(parse_host("web-1.hatchway", "hatchway"), None);
        assert_eq!(parse_host("web-1.team-a", "hatchway"), None);
        assert_eq!(parse_host("web-1.team-axhatchway", "hatchway"), None);
        assert_eq!(host_alias("web-1", "team-a", "hatchway"), "web-1.team-a.hatchway");
        let suffix = host_suffix(Some("kubernetes-admin@Kind_1"));
        assert_eq!(suffix, "kubernetes-admin-kind-1.hatchway");
        assert_eq!(
            parse_host("a.b.team-a.kubernetes-admin-kind-1.hatchway", &suffix),
            Some(("a.b", "team-a"))
        );
        assert_eq!(host_suffix(None), "hatchway");
        assert_eq!(host_suffix(Some("@@")), "hatchway");
    }

    #[test]
    fn resume_takes_an_id_or_latest() {
        assert_eq!(resume_target("latest").unwrap(), "latest");
        assert_eq!(resume_target("0123456789abcdef").unwrap(), "0123456789abcdef");
        let error = resume_target("x\r\nEvil: 1").unwrap_err().to_string();
        assert!(error.contains("16 hex digits"), "{error}");
        assert!(resume_target("0123").is_err());
    }

    #[test]
    fn the_default_login_marker_asks_for_no_user() {
        assert_eq!(login(Some("_")), None);
        assert_eq!(login(Some("")), None);
        assert_eq!(login(None), None);
        assert_eq!(login(Some("root")), Some("root"));
    }
}
