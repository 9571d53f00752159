//! kubectl hatch: shells, logs, ports and web apps of Hatchway Containers.
//!
//! Implemented: `version`, `connect-ssh` (ssh's ProxyCommand), `shell`,
//! `config-ssh` and `get`. Exit codes: 0 success; 1 a local problem
//! (settings, network, TLS); 2 the router refused the request (4xx: no
//! credentials, forbidden, no such Container, ended); 3 the router could
//! not serve it (5xx: not running yet, gateway unreachable); `shell` exits
//! with ssh's code (the remote command's, 255 for ssh's own errors).

#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

pub mod connect_ssh;
pub mod connection;
pub mod containers;
pub mod known_hosts;
pub mod kubeconfig;
pub mod proxy_command;
pub mod shell;
pub mod ssh_config;
pub mod table;
pub mod upgrade;

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::connect_ssh::{SshTarget, host_alias, parse_host};
use crate::connection::ConnectionArgs;

/// kubectl hatch: shells, logs, ports and web apps of Hatchway Containers.
#[derive(Debug, Parser)]
#[command(name = "kubectl-hatch", version)]
pub struct Args {
    #[command(flatten)]
    pub connection: ConnectionArgs,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print this binary's version and the protocol versions it speaks.
    Version,

    /// ssh's ProxyCommand: relay stdin/stdout to the Container's SSH server
    /// through the router.
    ConnectSsh {
        /// The Container: `NAME`, or `NAME.NS.hatchway` (as ssh's `%n`).
        name: String,
        /// The user the shell runs as inside the container.
        #[arg(long)]
        login: Option<String>,
        /// Keys that detach from the session, e.g. `ctrl-p,ctrl-q`.
        #[arg(long)]
        detach_keys: Option<String>,
    },

    /// Open a shell (or run a command) in a Container with the system ssh.
    Shell {
        /// The Container, optionally with the user to log in as.
        #[arg(value_name = "[USER@]NAME")]
        destination: String,
        /// Keys that detach from the session, e.g. `ctrl-p,ctrl-q`.
        #[arg(long)]
        detach_keys: Option<String>,
        /// The gateway's SSH host key (`TYPE BASE64`); default: read from
        /// the Container's status through the Kubernetes API.
        #[arg(long)]
        host_key: Option<String>,
        /// The known_hosts file kubectl-hatch keeps (default:
        /// `$HATCHWAY_KNOWN_HOSTS` or `~/.cache/hatchway/known_hosts`).
        #[arg(long)]
        known_hosts: Option<PathBuf>,
        /// The ssh program.
        #[arg(long, env = "HATCHWAY_SSH", default_value = "ssh")]
        ssh: String,
        /// The command to run instead of a login shell.
        #[arg(last = true)]
        command: Vec<String>,
    },

    /// Add (or remove) a `Host *.hatchway` block in ~/.ssh/config, so ssh,
    /// scp, sftp and rsync reach `NAME.NS.hatchway`.
    ConfigSsh {
        /// Print the block instead of writing it.
        #[arg(long)]
        dry_run: bool,
        /// Remove the block.
        #[arg(long)]
        remove: bool,
        /// The ssh configuration file (default: ~/.ssh/config).
        #[arg(long)]
        ssh_config: Option<PathBuf>,
        /// The known_hosts file the block points at (default: as `shell`).
        #[arg(long)]
        known_hosts: Option<PathBuf>,
    },

    /// List Containers (or one) with their phase, gateway, ports and
    /// whether anyone opened a session.
    Get {
        /// One Container.
        name: Option<String>,
    },
}

/// Runs the command the arguments name; returns the process exit code.
pub fn run(args: Args, out: &mut dyn Write) -> anyhow::Result<i32> {
    let Args { connection, command } = args;
    match command {
        Command::Version => {
            writeln!(
                out,
                "kubectl-hatch {} (control protocol v{})",
                env!("CARGO_PKG_VERSION"),
                hatchway_api::control::PROTOCOL_VERSION
            )?;
            Ok(0)
        }
        Command::ConfigSsh {
            dry_run,
            remove,
            ssh_config,
            known_hosts,
        } => config_ssh(&connection, dry_run, remove, ssh_config, known_hosts, out),
        command => runtime()?.block_on(run_async(connection, command, out)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

async fn run_async(connection: ConnectionArgs, command: Command, out: &mut dyn Write) -> anyhow::Result<i32> {
    match command {
        Command::ConnectSsh {
            name,
            login,
            detach_keys,
        } => {
            let (name, namespace) = match parse_host(&name) {
                Some((name, ns)) => (name.to_owned(), ns.to_owned()),
                None => (name.clone(), connection.namespace()?),
            };
            let target = connection.target()?;
            let ssh = SshTarget {
                namespace: &namespace,
                name: &name,
                login: login.as_deref(),
                detach_keys: detach_keys.as_deref(),
            };
            Ok(report(connect_ssh::relay(&target, &ssh).await))
        }
        Command::Shell {
            destination,
            detach_keys,
            host_key,
            known_hosts,
            ssh,
            command,
        } => {
            let (login, name) = shell::parse_destination(&destination);
            let namespace = connection.namespace()?;
            let target = connection.target()?;
            let probe = SshTarget {
                namespace: &namespace,
                name,
                login,
                detach_keys: detach_keys.as_deref(),
            };
            // A refusal now gives the router's message, not ssh's noise.
            match connect_ssh::open(&target, &probe).await {
                Ok(stream) => drop(stream),
                Err(e) => return Ok(report::<()>(Err(e))),
            }
            let host_key = match host_key {
                Some(key) => key,
                None => containers::host_key(&namespace, name).await?,
            };
            let known_hosts = known_hosts.unwrap_or_else(known_hosts::default_path);
            known_hosts::record(&known_hosts, &host_alias(name, &namespace), &host_key)
                .with_context(|| format!("cannot write {}", known_hosts.display()))?;
            let exe = std::env::current_exe().context("cannot find this program")?;
            let mut ssh = shell::ssh_command(
                &ssh,
                &shell::SshInvocation {
                    exe: &exe,
                    name,
                    namespace: &namespace,
                    login,
                    detach_keys: detach_keys.as_deref(),
                    known_hosts: &known_hosts,
                    command: &command,
                },
            );
            ssh.env("HATCHWAY_SERVER", &target.server.url)
                .env("HATCHWAY_CA_FILE", connection.ca_file()?)
                .env("HATCHWAY_TOKEN", &target.token);
            let status = ssh
                .status()
                .with_context(|| format!("cannot run {:?}", ssh.get_program()))?;
            use std::os::unix::process::ExitStatusExt;
            Ok(status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
        }
        Command::Get { name } => {
            let namespace = connection.namespace()?;
            let items = containers::list(&namespace, name.as_deref()).await?;
            let rows: Vec<_> = items
                .iter()
                .map(|c| table::row(c.metadata.name.as_deref().unwrap_or(""), c.status.as_ref()))
                .collect();
            if rows.is_empty() {
                writeln!(out, "No Containers in {namespace}.")?;
            } else {
                out.write_all(table::format(&rows).as_bytes())?;
            }
            Ok(0)
        }
        Command::Version | Command::ConfigSsh { .. } => unreachable!("run handles these"),
    }
}

/// Prints a refusal (the router's own words) and maps it to an exit code.
fn report<T>(result: Result<T, upgrade::UpgradeError>) -> i32 {
    match result {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("kubectl-hatch: {e}");
            e.exit_code()
        }
    }
}

fn config_ssh(
    connection: &ConnectionArgs,
    dry_run: bool,
    remove: bool,
    ssh_config: Option<PathBuf>,
    known_hosts: Option<PathBuf>,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let path = match ssh_config {
        Some(path) => path,
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?)
            .join(".ssh")
            .join("config"),
    };
    let known_hosts = known_hosts.unwrap_or_else(known_hosts::default_path);
    let known_hosts = std::path::absolute(&known_hosts).unwrap_or(known_hosts);
    // The router and CA go into the block when given now; the token never
    // does (it comes from HATCHWAY_TOKEN or the kubeconfig at each use).
    let mut args = Vec::new();
    if let Some(server) = connection.server.as_deref().filter(|s| !s.is_empty()) {
        connection.server()?;
        args.extend(["--server".to_owned(), server.to_owned()]);
    }
    if connection.ca_file.is_some() {
        args.extend([
            "--ca-file".to_owned(),
            connection.ca_file()?.display().to_string(),
        ]);
    }
    let exe = std::env::current_exe().context("cannot find this program")?;
    let block = ssh_config::block(&exe, &args, &known_hosts);
    if dry_run {
        if remove {
            writeln!(out, "would remove the hatchway block from {}", path.display())?;
        } else {
            out.write_all(block.as_bytes())?;
        }
        return Ok(0);
    }
    let changed = if remove {
        ssh_config::update(&path, ssh_config::without_block)
    } else {
        ssh_config::update(&path, |config| ssh_config::with_block(config, &block))
    }
    .with_context(|| format!("cannot update {}", path.display()))?;
    let what = match (remove, changed) {
        (false, true) => "updated",
        (false, false) => "already up to date",
        (true, true) => "hatchway block removed",
        (true, false) => "no hatchway block",
    };
    writeln!(out, "{}: {what}", path.display())?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_names_the_binary_and_protocol() {
        let mut out = Vec::new();
        run(
            Args::try_parse_from(["kubectl-hatch", "version"]).unwrap(),
            &mut out,
        )
        .unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("kubectl-hatch 0."), "{out}");
        assert!(out.contains("control protocol v1"), "{out}");
    }

    #[test]
    fn shell_takes_a_remote_command_after_the_dashes() {
        let args = Args::try_parse_from([
            "kubectl-hatch",
            "shell",
            "root@web-1",
            "-n",
            "team-a",
            "--",
            "echo hi; exit 7",
        ])
        .unwrap();
        assert_eq!(args.connection.namespace.as_deref(), Some("team-a"));
        let Command::Shell {
            destination, command, ..
        } = args.command
        else {
            panic!("not shell");
        };
        assert_eq!(destination, "root@web-1");
        assert_eq!(command, ["echo hi; exit 7"]);
    }
}
