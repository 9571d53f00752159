//! `connect-ssh`: ssh's ProxyCommand. Opens `POST …/ssh` (`Upgrade: ssh`)
//! and copies stdin to the router and the router to stdout until both
//! sides are done (stdin's EOF half-closes the stream towards the router).

use crate::connection::Target;
use crate::upgrade::{UpgradeError, container_path, upgrade};

/// The host-name suffix of Hatchway Containers in ssh: `NAME.NS.hatchway`.
pub const HOST_SUFFIX: &str = ".hatchway";

/// `NAME.NS.hatchway` → (`NAME`, `NS`); anything else → `None`.
pub fn parse_host(host: &str) -> Option<(&str, &str)> {
    let rest = host.strip_suffix(HOST_SUFFIX)?;
    let (name, namespace) = rest.rsplit_once('.')?;
    (!name.is_empty() && !namespace.is_empty()).then_some((name, namespace))
}

/// The ssh host alias of Container `namespace/name`.
pub fn host_alias(name: &str, namespace: &str) -> String {
    format!("{name}.{namespace}{HOST_SUFFIX}")
}

/// What to connect to.
pub struct SshTarget<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub login: Option<&'a str>,
    pub detach_keys: Option<&'a str>,
}

/// Opens the SSH upgrade (also the probe `shell` makes before running ssh).
pub async fn open(
    target: &Target,
    ssh: &SshTarget<'_>,
) -> Result<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>, UpgradeError> {
    let path = container_path(
        &target.server.prefix,
        ssh.namespace,
        ssh.name,
        "ssh",
        &[("login_username", ssh.login), ("detach_keys", ssh.detach_keys)],
    );
    upgrade(target, &path, "ssh").await
}

/// Relays stdin/stdout through the upgraded connection until the router
/// closes it.
pub async fn relay(target: &Target, ssh: &SshTarget<'_>) -> Result<(), UpgradeError> {
    let mut upgraded = open(target, ssh).await?;
    let mut local = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
    match tokio::io::copy_bidirectional(&mut local, &mut upgraded).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(()),
        Err(e) => Err(UpgradeError::Relay(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_name_a_container_and_namespace() {
        assert_eq!(parse_host("web-1.team-a.hatchway"), Some(("web-1", "team-a")));
        assert_eq!(parse_host("a.b.team-a.hatchway"), Some(("a.b", "team-a")));
        assert_eq!(parse_host("web-1.hatchway"), None);
        assert_eq!(parse_host("web-1.team-a"), None);
        assert_eq!(host_alias("web-1", "team-a"), "web-1.team-a.hatchway");
    }
}
