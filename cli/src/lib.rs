//! kubectl hatch: shells, logs, ports and web apps of Hatchway Containers.
//!
//! Commands: `shell`, `connect-ssh` (ssh's ProxyCommand), `config-ssh`,
//! `port-forward`, `logs`, `open`, `get`, `version`, `completion`. Exit
//! codes: 0 success; 1 a local problem (settings, network, TLS); 2 the
//! server refused the request (4xx: no credentials, forbidden, no such
//! Container, ended); 3 it could not serve it (5xx: not running yet,
//! gateway unreachable); 64 a usage error (unknown flag, missing
//! argument); `shell` exits with ssh's code (the remote command's, 255 for
//! ssh's own errors).

#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

/// The SSH client used when OpenSSH is missing.
pub mod builtin_ssh;
/// `connect-ssh`: the ProxyCommand, and opening a shell's upgrade.
pub mod connect_ssh;
/// Which way to the Hatchway API (the aggregated API or the router's
/// URL), and as whom (the kubeconfig, as kubectl reads it).
pub mod connection;
/// Listing Containers through the Kubernetes API.
pub mod containers;
/// known_hosts entries for Containers' host keys.
pub mod known_hosts;
/// `logs`: live, saved, `--since`, `-f`.
pub mod logs;
/// `open`: web apps and their login links.
pub mod open;
/// `port-forward`.
pub mod port_forward;
/// Quoting a ProxyCommand for ssh_config.
pub mod proxy_command;
/// `sessions --replay`: playing a terminal's recording.
pub mod replay;
/// The client's end of resumable sessions.
pub mod resumable;
/// Talking to the router: requests, upgrades, refusals.
pub mod router;
/// `sessions`: resumable sessions and terminals.
pub mod sessions;
/// `shell`: OpenSSH through the ProxyCommand.
pub mod shell;
/// `config-ssh`: the block in ~/.ssh/config.
pub mod ssh_config;
/// The table `get` prints.
pub mod table;
/// `port-forward NAME PORT/udp`: datagram flows per local client.
pub mod udp_forward;
/// A connection to the router made ahead of need (port-forwards).
pub mod warm;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::connect_ssh::{SshTarget, host_alias, parse_host};
use crate::connection::ConnectionArgs;

/// The exit code of a usage error (sysexits' `EX_USAGE`): never one a
/// refusal uses.
pub const EXIT_USAGE: i32 = 64;

/// kubectl hatch: shells, logs, ports and web apps of Hatchway Containers.
#[derive(Debug, Parser)]
#[command(name = "kubectl-hatch", bin_name = "kubectl hatch", version)]
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
    /// Print this binary's version and the server's (the router's, either
    /// way in), with the control protocol versions; warn when they differ.
    Version {
        /// Only this binary's version (no server asked).
        #[arg(long)]
        client: bool,
    },

    /// Print a shell completion script (`source <(kubectl-hatch completion
    /// bash)`).
    Completion {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },

    /// ssh's ProxyCommand: relay stdin/stdout to the Container's SSH server
    /// through the router.
    ConnectSsh {
        /// The Container: `NAME`, or `NAME.NS.SUFFIX` (as ssh's `%n`).
        name: String,
        /// The host-name suffix of `NAME.NS.SUFFIX` (config-ssh writes it:
        /// `CONTEXT.hatchway`, or `hatchway` without a context).
        #[arg(long, default_value = connect_ssh::HOST_SUFFIX)]
        host_suffix: String,
        /// The user the shell runs as inside the container.
        #[arg(long)]
        login: Option<String>,
        /// Keys that detach from the session, e.g. `ctrl-p,ctrl-q`.
        #[arg(long)]
        detach_keys: Option<String>,
        /// Record the gateway's host key (as the router reports it) in this
        /// known_hosts file before ssh checks it.
        #[arg(long)]
        known_hosts: Option<PathBuf>,
        /// Take over a shell of yours that lost its client (a laptop that
        /// slept, a killed terminal): the session ID (`kubectl hatch
        /// sessions NAME`), or without one your most recently detached.
        #[arg(long, value_name = "ID", num_args = 0..=1, default_missing_value = hatchway_api::wire::resumable::ATTACH_LATEST)]
        resume: Option<String>,
        /// Watch a running terminal read-only (its id, as `kubectl hatch
        /// sessions NAME` lists it).
        #[arg(long, value_name = "ID", conflicts_with = "resume")]
        join: Option<String>,
    },

    /// Open a shell (or run a command) in a Container with the system ssh.
    Shell {
        /// The Container, optionally with the user to log in as.
        #[arg(value_name = "[USER@]NAME")]
        destination: String,
        /// Keys that detach from the session, e.g. `ctrl-p,ctrl-q`.
        #[arg(long)]
        detach_keys: Option<String>,
        /// Wait (showing progress) until the Container runs and its
        /// gateway answers, instead of failing at once.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, in seconds.
        #[arg(long, default_value_t = 600, value_name = "SECONDS")]
        wait_timeout: u64,
        /// The known_hosts file kubectl-hatch keeps (default:
        /// `$HATCHWAY_KNOWN_HOSTS` or `~/.cache/hatchway/known_hosts`).
        #[arg(long)]
        known_hosts: Option<PathBuf>,
        /// The ssh program (when it is not installed, the built-in client
        /// is used).
        #[arg(long, env = "HATCHWAY_SSH", default_value = "ssh")]
        ssh: String,
        /// Use the built-in SSH client even when ssh is installed.
        #[arg(long)]
        builtin_ssh: bool,
        /// Take over a shell of yours that lost its client (a laptop that
        /// slept, a killed terminal): the session ID (`kubectl hatch
        /// sessions NAME`), or without one your most recently detached.
        #[arg(long, value_name = "ID", num_args = 0..=1, default_missing_value = hatchway_api::wire::resumable::ATTACH_LATEST)]
        resume: Option<String>,
        /// Watch a running terminal read-only: see what its user sees,
        /// type nothing into it (the detach keys end the watch). Its id as
        /// `kubectl hatch sessions NAME` lists it.
        #[arg(long, value_name = "ID", conflicts_with_all = ["resume", "command"])]
        join: Option<String>,
        /// The command to run instead of a login shell.
        #[arg(last = true)]
        command: Vec<String>,
    },

    /// Add (or remove) a `Host *.CONTEXT.hatchway` block in ~/.ssh/config,
    /// so ssh, scp, sftp and rsync reach `NAME.NS.CONTEXT.hatchway` (one
    /// block per kubeconfig context; `NAME.NS.hatchway` without one).
    ConfigSsh {
        /// The host-name suffix (default: `CONTEXT.hatchway`).
        #[arg(long)]
        host_suffix: Option<String>,
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

    /// Forward local ports to ports in a Container; new connections keep
    /// working across router restarts (they reconnect).
    PortForward {
        /// The Container (`NAME` or `container/NAME`).
        name: String,
        /// `[LOCAL:]REMOTE` (LOCAL empty or 0: any free port), or ranges
        /// `8000-8010` and `9000-9010:8000-8010`. None: the ports the
        /// Container listens on are listed, to pick from.
        #[arg(value_name = "[LOCAL:]REMOTE")]
        ports: Vec<port_forward::Mappings>,
        /// Local addresses to listen on (comma-separated IPs, or
        /// `localhost`: 127.0.0.1 and ::1, as kubectl).
        #[arg(long, value_delimiter = ',', default_value = "localhost")]
        address: Vec<String>,
        /// Plain connections: one that breaks (a router restarted, the
        /// network dropped) ends instead of resuming (a little faster for
        /// bulk copies; docs/sessions.md).
        #[arg(long)]
        no_resume: bool,
    },

    /// Print a Container's logs: live while it runs, saved after.
    Logs {
        /// The Container.
        name: String,
        /// One log file (default: stdout.txt to stdout and stderr.txt to
        /// stderr).
        file: Option<String>,
        /// Keep printing new output until the Container has ended.
        #[arg(short, long, conflicts_with_all = ["timestamps", "previous"])]
        follow: bool,
        /// Only the last N lines of what is there now.
        #[arg(long, value_name = "N")]
        tail: Option<usize>,
        /// Only lines written in the last D (30s, 10m, 2h, 1d, 1h30m).
        #[arg(long, value_name = "D", value_parser = logs::parse_duration)]
        since: Option<Duration>,
        /// Only lines written since this time (RFC 3339, e.g.
        /// 2026-12-03T14:00:00Z).
        #[arg(long, value_name = "TIME", conflicts_with = "since")]
        since_time: Option<String>,
        /// At most N bytes of each file.
        #[arg(long, value_name = "N")]
        limit_bytes: Option<u64>,
        /// Each line with the time it was written (RFC 3339), as the
        /// kubelet recorded it.
        #[arg(long)]
        timestamps: bool,
        /// The previous run's logs (a workload restarted by `OnFailure`).
        #[arg(short, long)]
        previous: bool,
    },

    /// List your resumable sessions in a Container (a shell whose client
    /// went away can be taken over with `shell NAME --resume ID`) and its
    /// terminals, running (`shell NAME --join ID` watches one) or
    /// recorded (`--replay ID` plays one).
    Sessions {
        /// The Container.
        name: String,
        /// Play this terminal's recording here.
        #[arg(long, value_name = "ID")]
        replay: Option<String>,
        /// Replay this many times faster.
        #[arg(long, default_value_t = 1.0, requires = "replay")]
        speed: f64,
        /// Replay pauses longer than this many seconds as this long.
        #[arg(long, default_value_t = 2.0, value_name = "SECONDS", requires = "replay")]
        idle_limit: f64,
    },

    /// Print (or open) a one-time link that logs the Hatchway web page in
    /// (the Containers you may see, terminals, logs). Needs the router's
    /// own URL and a token (`--direct`).
    Web {
        /// Open it in the browser ($BROWSER, else xdg-open).
        #[arg(long)]
        browser: bool,
    },

    /// Print (or open) the URL of a web app on a published port.
    Open {
        /// The Container.
        name: String,
        /// The published port.
        port: u16,
        /// Open it in the browser ($BROWSER, else xdg-open), logging in
        /// with the token for a private port.
        #[arg(long)]
        browser: bool,
        /// Print the one-time login link (it carries your token: anyone
        /// with it acts as you) instead of the plain URL.
        #[arg(long)]
        login_url: bool,
    },

    /// List Containers (or one) with their phase, gateway, ports, whether
    /// anyone opened a session, and age.
    Get {
        /// One Container.
        name: Option<String>,
        /// table, wide, json, yaml or name.
        #[arg(short, long, value_enum, default_value_t)]
        output: table::Output,
        /// Every namespace.
        #[arg(short = 'A', long, conflicts_with = "name")]
        all_namespaces: bool,
        /// Only Containers with these labels (`app=web,tier!=db`).
        #[arg(short = 'l', long)]
        selector: Option<String>,
        /// After the list, print each change as it happens.
        #[arg(short, long)]
        watch: bool,
    },
}

/// Runs the command the arguments name; returns the process exit code.
pub fn run(args: Args, out: &mut dyn Write) -> anyhow::Result<i32> {
    let Args { connection, command } = args;
    match command {
        Command::Version { client } => {
            writeln!(
                out,
                "kubectl-hatch {} (control protocol v{})",
                env!("CARGO_PKG_VERSION"),
                hatchway_api::control::PROTOCOL_VERSION
            )?;
            if client {
                return Ok(0);
            }
            let runtime = runtime()?;
            let server = runtime.block_on(async {
                let mut connection = connection;
                let endpoint = connection.endpoint().await?;
                let version = endpoint.server_version().await?;
                anyhow::Ok((endpoint.describe(), version))
            });
            runtime.shutdown_background();
            let (via, server) = server.context("the server's version")?;
            writeln!(
                out,
                "server: hatchway-operator {} (control protocol v{}) via {via}",
                server.version, server.protocol
            )?;
            if let Some(warning) = version_skew(env!("CARGO_PKG_VERSION"), &server) {
                eprintln!("kubectl-hatch: warning: {warning}");
            }
            Ok(0)
        }
        Command::Completion { shell } => {
            use clap::CommandFactory as _;
            clap_complete::generate(shell, &mut Args::command(), "kubectl-hatch", out);
            Ok(0)
        }
        Command::ConfigSsh {
            host_suffix,
            dry_run,
            remove,
            ssh_config,
            known_hosts,
        } => config_ssh(
            &connection,
            host_suffix,
            dry_run,
            remove,
            ssh_config,
            known_hosts,
            out,
        ),
        command => {
            let runtime = runtime()?;
            let result = runtime.block_on(run_async(connection, command, out));
            // A read of stdin may still be parked on a blocking thread (a
            // terminal nobody types into): do not wait for it.
            runtime.shutdown_background();
            result
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

async fn run_async(
    mut connection: ConnectionArgs,
    command: Command,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    match command {
        Command::ConnectSsh {
            name,
            host_suffix,
            login,
            detach_keys,
            known_hosts,
            resume,
            join,
        } => {
            let resume = resume.as_deref().map(connect_ssh::resume_target).transpose()?;
            let join = join.as_deref().map(sessions::terminal_id).transpose()?;
            let (name, namespace) = match parse_host(&name, &host_suffix) {
                Some((name, ns)) => (name.to_owned(), ns.to_owned()),
                None => (name.clone(), connection.namespace()?),
            };
            let endpoint = connection.endpoint().await?;
            let ssh = SshTarget {
                suffix: &host_suffix,
                namespace: &namespace,
                name: &name,
                login: login.as_deref(),
                detach_keys: detach_keys.as_deref(),
            };
            Ok(report(
                connect_ssh::relay(&endpoint, &ssh, known_hosts.as_deref(), resume, join).await,
            ))
        }
        Command::Shell {
            destination,
            detach_keys,
            wait,
            wait_timeout,
            known_hosts,
            ssh,
            builtin_ssh,
            resume,
            join,
            command,
        } => {
            let resume = resume.as_deref().map(connect_ssh::resume_target).transpose()?;
            let join = join.as_deref().map(sessions::terminal_id).transpose()?;
            let (login, name) = shell::parse_destination(&destination);
            let namespace = connection.namespace()?;
            let endpoint = connection.endpoint().await?;
            let suffix = connect_ssh::host_suffix(connection.context_name()?.as_deref());
            let probe = SshTarget {
                suffix: &suffix,
                namespace: &namespace,
                name,
                login,
                detach_keys: detach_keys.as_deref(),
            };
            // A refusal now gives the router's message, not ssh's noise;
            // the answer carries the host key to record.
            let opened = if wait {
                connect_ssh::open_when_ready(&endpoint, &probe, Duration::from_secs(wait_timeout)).await
            } else {
                connect_ssh::open(&endpoint, &probe).await
            };
            let upgraded = match opened {
                Ok(upgraded) => upgraded,
                Err(e) => return Ok(report::<()>(Err(e))),
            };
            let host_key = connect_ssh::host_key(&upgraded)
                .map(str::to_owned)
                .with_context(|| {
                    format!(
                        "the router did not report the SSH host key of {namespace}/{name} \
                         (its status has none yet)"
                    )
                })?;
            if let Some(wanted) = resume {
                // The refusal in words now, not after ssh's own noise.
                let listed = match sessions::list(&endpoint, &namespace, name).await {
                    Ok(listed) => listed,
                    Err(e) => return Ok(report::<()>(Err(e))),
                };
                sessions::check_resumable(&listed, wanted, name)?;
            }
            if let Some(wanted) = join {
                let listed = match sessions::list(&endpoint, &namespace, name).await {
                    Ok(listed) => listed,
                    Err(e) => return Ok(report::<()>(Err(e))),
                };
                sessions::check_joinable(&listed, wanted, name)?;
            }
            if builtin_ssh || !builtin_ssh::program_exists(&ssh) {
                if resume.is_some() {
                    anyhow::bail!("--resume needs ssh: the built-in client's sessions are not resumable");
                }
                if join.is_some() {
                    anyhow::bail!("--join needs ssh");
                }
                // This very connection carries the session.
                return Ok(builtin_ssh::run(upgraded, &host_key, &command).await?);
            }
            drop(upgraded);
            let known_hosts = known_hosts.unwrap_or_else(known_hosts::default_path);
            known_hosts::record(&known_hosts, &host_alias(name, &namespace, &suffix), &host_key)
                .with_context(|| format!("cannot write {}", known_hosts.display()))?;
            let exe = std::env::current_exe().context("cannot find this program")?;
            let pinned = connection.pinned(&endpoint)?;
            let mut ssh = shell::ssh_command(
                &ssh,
                &shell::SshInvocation {
                    exe: &exe,
                    suffix: &suffix,
                    name,
                    namespace: &namespace,
                    login,
                    detach_keys: detach_keys.as_deref(),
                    resume,
                    join,
                    known_hosts: &known_hosts,
                    connection: &pinned,
                    command: &command,
                },
            );
            // The token stays out of the process list.
            if let router::Endpoint::Direct(target) = &endpoint {
                ssh.env("HATCHWAY_TOKEN", &target.token);
            }
            let status = ssh
                .status()
                .with_context(|| format!("cannot run {:?}", ssh.get_program()))?;
            use std::os::unix::process::ExitStatusExt;
            Ok(status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
        }
        Command::PortForward { name, ports, .. } if ports.is_empty() => {
            let namespace = connection.namespace()?;
            let container = containers::get(&connection, &namespace, container_name(&name)).await?;
            eprint!("{}", port_forward::offer(&container));
            Ok(EXIT_USAGE)
        }
        Command::PortForward {
            name,
            ports,
            address,
            no_resume,
        } => {
            let namespace = connection.namespace()?;
            let endpoint = connection.endpoint().await?.kept_warm();
            let forward = port_forward::Forward {
                namespace,
                name: container_name(&name).to_owned(),
                addresses: port_forward::addresses(&address)?,
                mappings: ports.into_iter().flatten().collect(),
                resumable: !no_resume,
            };
            let ended = port_forward::run(endpoint, forward).await?;
            Ok(report::<()>(Err(ended)))
        }
        Command::Logs {
            name,
            file,
            follow,
            tail,
            since,
            since_time,
            limit_bytes,
            timestamps,
            previous,
        } => {
            let since = match since_time {
                Some(time) => {
                    Some(logs::since_time(&time, jiff::Timestamp::now()).map_err(|e| anyhow::anyhow!(e))?)
                }
                None => since,
            };
            let namespace = connection.namespace()?;
            let endpoint = connection.endpoint().await?;
            let request = logs::LogsRequest {
                namespace,
                name: container_name(&name).to_owned(),
                file,
                follow,
                tail,
                since,
                limit_bytes,
                timestamps,
                previous,
            };
            Ok(report(logs::run(&endpoint, &request).await))
        }
        Command::Sessions {
            name,
            replay,
            speed,
            idle_limit,
        } => {
            let namespace = connection.namespace()?;
            let endpoint = connection.endpoint().await?;
            let name = container_name(&name).to_owned();
            if let Some(id) = replay {
                let id = sessions::terminal_id(&id)?;
                anyhow::ensure!(
                    speed.is_finite() && speed > 0.0 && idle_limit.is_finite() && idle_limit >= 0.0,
                    "--speed must be above 0 and --idle-limit at least 0"
                );
                let cast = match replay::fetch(&endpoint, &namespace, &name, id).await {
                    Ok(cast) => cast,
                    Err(error) => return Ok(report::<()>(Err(error))),
                };
                let steps = replay::steps(&cast, speed, Duration::from_secs_f64(idle_limit))
                    .with_context(|| format!("recording {id} of {name}"))?;
                replay::play(&steps, out).await?;
                return Ok(0);
            }
            match sessions::list(&endpoint, &namespace, &name).await {
                Ok(list) => {
                    out.write_all(sessions::format(&list, &name, jiff::Timestamp::now()).as_bytes())?;
                    Ok(0)
                }
                Err(error) => Ok(report::<()>(Err(error))),
            }
        }
        Command::Web { browser } => {
            let endpoint = router::Endpoint::Direct(connection.target().await?);
            let link = match open::page_login_link(&endpoint).await {
                Ok(link) => link.url,
                Err(error) => return Ok(report::<()>(Err(error))),
            };
            writeln!(out, "{link}")?;
            if browser {
                let status = open::browse(&link).context("cannot start the browser")?;
                if !status.success() {
                    anyhow::bail!("the browser command failed ({status})");
                }
            }
            Ok(0)
        }
        Command::Open {
            name,
            port,
            browser,
            login_url,
        } => {
            let namespace = connection.namespace()?;
            let container = containers::get(&connection, &namespace, &name).await?;
            let app = open::web_app(&container, port)?;
            let login = if app.private {
                let endpoint = connection.endpoint().await?;
                match open::login_link(&endpoint, &namespace, &name, port).await {
                    Ok(link) => link.url,
                    Err(error) => return Ok(report::<()>(Err(error))),
                }
            } else {
                app.url.clone()
            };
            if login_url {
                writeln!(out, "{login}")?;
            } else {
                writeln!(out, "{}", app.url)?;
            }
            if browser {
                let status = open::browse(&login).context("cannot start the browser")?;
                if !status.success() {
                    anyhow::bail!("the browser command failed ({status})");
                }
            }
            Ok(0)
        }
        Command::Get {
            name,
            output,
            all_namespaces,
            selector,
            watch,
        } => {
            let selection = containers::Selection {
                namespace: (!all_namespaces).then(|| connection.namespace()).transpose()?,
                name,
                labels: selector,
            };
            get(&connection, &selection, output, watch, out).await
        }
        Command::Version { .. } | Command::Completion { .. } | Command::ConfigSsh { .. } => {
            unreachable!("run handles these")
        }
    }
}

/// A warning when this client and `server` may not work together: another
/// control protocol, or another major.minor version.
pub fn version_skew(client: &str, server: &hatchway_api::wire::ServerVersion) -> Option<String> {
    let minor = |v: &str| v.split('.').take(2).collect::<Vec<_>>().join(".");
    if server.protocol != hatchway_api::control::PROTOCOL_VERSION {
        return Some(format!(
            "this client speaks control protocol v{} and the server v{}: update kubectl-hatch to the server's \
             version ({})",
            hatchway_api::control::PROTOCOL_VERSION,
            server.protocol,
            server.version
        ));
    }
    (minor(client) != minor(&server.version)).then(|| {
        format!(
            "kubectl-hatch {client} and the server's {} differ in minor version: newer features may be missing \
             on one side",
            server.version
        )
    })
}

/// `NAME` from `NAME`, `container/NAME` or `containers.hatchway.dev/NAME`
/// (kubectl's `TYPE/NAME` forms).
pub fn container_name(arg: &str) -> &str {
    match arg.split_once('/') {
        Some((kind, name))
            if [
                "container",
                "containers",
                "container.hatchway.dev",
                "containers.hatchway.dev",
                "hctr",
            ]
            .contains(&kind) =>
        {
            name
        }
        _ => arg,
    }
}

/// `get`: the list (or one), then with `watch` every change.
async fn get(
    connection: &ConnectionArgs,
    selection: &containers::Selection,
    output: table::Output,
    watch: bool,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    use table::Output;
    let items = containers::list(connection, selection).await?;
    let columns = table::Columns {
        namespace: selection.namespace.is_none(),
        wide: output == Output::Wide,
    };
    let now = jiff::Timestamp::now();
    let header = table::header(columns);
    let rows: Vec<Vec<String>> = items.iter().map(|c| table::row(c, columns, now)).collect();
    let mut widths = {
        let all: Vec<&[String]> = std::iter::once(header.as_slice())
            .chain(rows.iter().map(Vec::as_slice))
            .collect();
        table::widths(&all)
    };
    match output {
        Output::Table | Output::Wide if rows.is_empty() && !watch => match &selection.namespace {
            Some(namespace) => writeln!(out, "No Containers in {namespace}.")?,
            None => writeln!(out, "No Containers.")?,
        },
        Output::Table | Output::Wide => {
            out.write_all(table::format(&header, &rows).as_bytes())?;
        }
        Output::Name => {
            for c in &items {
                writeln!(out, "{}", object_name(c))?;
            }
        }
        Output::Json | Output::Yaml => {
            let value = if selection.name.is_some() && selection.labels.is_none() && items.len() == 1 {
                serde_json::to_value(&items[0])?
            } else {
                serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {}})
            };
            if output == Output::Json {
                writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
            } else {
                out.write_all(serde_norway::to_string(&value)?.as_bytes())?;
            }
        }
    }
    out.flush()?;
    if !watch {
        return Ok(0);
    }
    containers::watch(connection, selection, |c, _deleted| {
        match output {
            Output::Table | Output::Wide => {
                let row = table::row(c, columns, jiff::Timestamp::now());
                for (w, cell) in widths.iter_mut().zip(&row) {
                    *w = (*w).max(cell.chars().count());
                }
                out.write_all(table::format_lines(&[row.as_slice()], &widths).as_bytes())?;
            }
            Output::Name => writeln!(out, "{}", object_name(c))?,
            Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(c)?)?,
            Output::Yaml => {
                writeln!(out, "---")?;
                out.write_all(
                    serde_norway::to_string(c)
                        .map_err(std::io::Error::other)?
                        .as_bytes(),
                )?;
            }
        }
        out.flush()
    })
    .await?;
    Ok(0)
}

/// `container.hatchway.dev/NAME`, as `kubectl get -o name` prints it.
fn object_name(c: &hatchway_api::crd::Container) -> String {
    format!(
        "container.hatchway.dev/{}",
        c.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Prints a refusal (the router's own words) and maps it to an exit code.
fn report<T>(result: Result<T, router::RouterError>) -> i32 {
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
    host_suffix: Option<String>,
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
    // The context (and kubeconfig) the block is for, the router and CA when
    // given now; the token never (it comes from HATCHWAY_TOKEN or the
    // kubeconfig at each use).
    let context = connection.context_name()?;
    let suffix = host_suffix.unwrap_or_else(|| connect_ssh::host_suffix(context.as_deref()));
    let mut args = connection.pinned_kubeconfig(context.as_deref());
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
    let block = ssh_config::block(&exe, &suffix, &args, &known_hosts).map_err(anyhow::Error::msg)?;
    if dry_run {
        if remove {
            writeln!(out, "would remove the hatchway block from {}", path.display())?;
        } else {
            out.write_all(block.as_bytes())?;
        }
        return Ok(0);
    }
    let changed = if remove {
        ssh_config::update(&path, |config| ssh_config::without_block(config, &suffix))
    } else {
        ssh_config::update(&path, |config| ssh_config::with_block(config, &suffix, &block))
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
            Args::try_parse_from(["kubectl-hatch", "version", "--client"]).unwrap(),
            &mut out,
        )
        .unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("kubectl-hatch 0."), "{out}");
        assert!(out.contains("control protocol v1"), "{out}");
    }

    #[test]
    fn version_skew_is_a_warning_for_another_protocol_or_minor() {
        use hatchway_api::wire::ServerVersion;
        let server = |version: &str, protocol| ServerVersion {
            version: version.into(),
            protocol,
        };
        let current = hatchway_api::control::PROTOCOL_VERSION;
        assert_eq!(version_skew("0.1.0", &server("0.1.7", current)), None);
        let minor = version_skew("0.1.0", &server("0.2.0", current)).unwrap();
        assert!(minor.contains("minor"), "{minor}");
        let protocol = version_skew("0.1.0", &server("0.1.0", current + 1)).unwrap();
        assert!(protocol.contains("control protocol"), "{protocol}");
    }

    #[test]
    fn kubectl_type_name_forms_name_the_container() {
        assert_eq!(container_name("web"), "web");
        assert_eq!(container_name("container/web"), "web");
        assert_eq!(container_name("containers.hatchway.dev/web"), "web");
        assert_eq!(container_name("pod/web"), "pod/web");
    }

    #[test]
    fn completion_scripts_name_the_commands() {
        let mut out = Vec::new();
        let args = Args::try_parse_from(["kubectl-hatch", "completion", "bash"]).unwrap();
        assert_eq!(run(args, &mut out).unwrap(), 0);
        let script = String::from_utf8(out).unwrap();
        assert!(
            script.contains("port-forward") && script.contains("config-ssh"),
            "{script}"
        );
        assert!(Args::try_parse_from(["kubectl-hatch", "completion", "tcsh"]).is_err());
    }

    #[test]
    fn usage_speaks_of_kubectl_hatch() {
        use clap::CommandFactory as _;
        let help = Args::command().render_usage().to_string();
        assert!(help.contains("kubectl hatch"), "{help}");
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
