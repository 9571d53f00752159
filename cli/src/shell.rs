//! `shell [user@]NAME [-- command…]`: checks the router lets us in, records
//! the Container's SSH host key, then runs the system `ssh` with
//! `connect-ssh` as its ProxyCommand and strict host key checking.

use std::path::Path;
use std::process::Command;

use crate::connect_ssh::host_alias;
use crate::proxy_command;

/// `[user@]NAME` → (user, name).
pub fn parse_destination(destination: &str) -> (Option<&str>, &str) {
    match destination.rsplit_once('@') {
        Some((user, name)) if !user.is_empty() => (Some(user), name),
        Some((_, name)) => (None, name),
        None => (None, destination),
    }
}

/// What ssh is run with.
pub struct SshInvocation<'a> {
    pub exe: &'a Path,
    /// The host-name suffix (for the known_hosts alias).
    pub suffix: &'a str,
    pub name: &'a str,
    pub namespace: &'a str,
    pub login: Option<&'a str>,
    pub detach_keys: Option<&'a str>,
    /// `--resume`: the session whose pty to take over, or `latest`.
    pub resume: Option<&'a str>,
    /// `--join`: the terminal to watch.
    pub join: Option<&'a str>,
    pub known_hosts: &'a Path,
    /// The flags that pin the way and the kubeconfig context.
    pub connection: &'a [String],
    pub command: &'a [String],
}

/// The `ssh` command line (the way and context are pinned by flags; a
/// token travels in the environment, so it never shows in a process list).
pub fn ssh_command(program: &str, ssh: &SshInvocation<'_>) -> Command {
    let alias = host_alias(ssh.name, ssh.namespace, ssh.suffix);
    let mut args = vec!["-n".to_owned(), ssh.namespace.to_owned()];
    if let Some(login) = ssh.login {
        args.extend(["--login".to_owned(), login.to_owned()]);
    }
    if let Some(keys) = ssh.detach_keys {
        args.extend(["--detach-keys".to_owned(), keys.to_owned()]);
    }
    if let Some(id) = ssh.resume {
        args.push(format!("--resume={id}"));
    }
    if let Some(id) = ssh.join {
        args.push(format!("--join={id}"));
    }
    args.extend(ssh.connection.iter().cloned());
    let proxy = proxy_command::connect_ssh(ssh.exe, &proxy_command::sh_quote(ssh.name), &args);
    let mut command = Command::new(program);
    command
        .arg("-o")
        .arg(format!("ProxyCommand={proxy}"))
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            proxy_command::escape_percent(&ssh.known_hosts.to_string_lossy())
        ))
        .args(["-o", "StrictHostKeyChecking=yes"])
        .arg("-o")
        .arg(format!("HostKeyAlias={alias}"));
    if let Some(login) = ssh.login {
        command.args(["-l", login]);
    }
    command.arg(&alias);
    command.args(ssh.command);
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_may_name_a_user() {
        assert_eq!(parse_destination("root@web-1"), (Some("root"), "web-1"));
        assert_eq!(parse_destination("web-1"), (None, "web-1"));
    }

    #[test]
    fn ssh_checks_the_host_key_through_the_proxy() {
        let command = ssh_command(
            "ssh",
            &SshInvocation {
                exe: Path::new("/bin/kubectl-hatch"),
                suffix: "dev.hatchway",
                name: "web-1",
                namespace: "team-a",
                login: Some("root"),
                detach_keys: None,
                resume: Some("0123456789abcdef"),
                join: None,
                known_hosts: Path::new("/k/known_hosts"),
                connection: &[
                    "--context".into(),
                    "dev".into(),
                    "--api".into(),
                    "aggregated".into(),
                ],
                command: &["echo hi".into()],
            },
        );
        let args: Vec<_> = command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "-o",
                "ProxyCommand=/bin/kubectl-hatch connect-ssh web-1 -n team-a --login root --resume=0123456789abcdef --context dev --api aggregated",
                "-o",
                "UserKnownHostsFile=/k/known_hosts",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "HostKeyAlias=web-1.team-a.dev.hatchway",
                "-l",
                "root",
                "web-1.team-a.dev.hatchway",
                "echo hi"
            ]
        );
    }
}
