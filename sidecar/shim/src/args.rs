//! The shim's settings: flags of `hatchway-sidecar shim`, each also set by
//! a `HATCHWAY_*` environment variable (the operator sets those on the
//! workload container).

use std::path::PathBuf;

/// Run COMMAND as the workload: tee its output to the log directory, reap
/// zombies, forward signals, record the exit code, sample cgroup usage and
/// serve the gateway's spawn requests.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ShimArgs {
    /// Directory for stdout.txt, stderr.txt, usage.txt and exit-code
    /// (created if missing).
    #[arg(long, env = "HATCHWAY_LOG_DIR", default_value = hatchway_api::pod::LOG_DIR)]
    pub log_dir: PathBuf,

    /// Rotate stdout.txt and stderr.txt to NAME.1 (one older file is kept)
    /// before they grow past this many bytes; 0: never rotate.
    #[arg(long, env = "HATCHWAY_LOG_MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub log_max_bytes: u64,

    /// After this many bytes of output per stream, drop further lines from
    /// the log file (one marker line says how many); 0: no limit. The
    /// shim's own stdout/stderr (`kubectl logs`) still get everything.
    #[arg(long, env = "HATCHWAY_LOG_MAX_TOTAL_BYTES", default_value_t = 1024 * 1024 * 1024)]
    pub log_max_total_bytes: u64,

    /// Seconds between cgroup usage samples appended to usage.txt; 0: no
    /// sampling.
    #[arg(long, env = "HATCHWAY_USAGE_INTERVAL", default_value_t = 10)]
    pub usage_interval: u64,

    /// Name of the abstract unix socket (in the pod's network namespace,
    /// so nothing in a shared volume can stand in for it) on which the
    /// gateway asks for shells and commands. Bound before the command
    /// starts: no workload process can take the name first.
    #[arg(
        long,
        env = "HATCHWAY_SPAWN_SOCKET",
        default_value = crate::DEFAULT_SPAWN_SOCKET
    )]
    pub spawn_socket: String,

    /// Uids allowed to use the spawn socket besides root and the workload's
    /// own uid (a sidecar running as a third uid), comma-separated.
    #[arg(long, env = "HATCHWAY_SPAWN_ALLOWED_UIDS", value_delimiter = ',')]
    pub spawn_allowed_uids: Vec<u32>,

    /// Serve only peers outside the shim's PID namespace (SO_PEERCRED pid
    /// 0): the sidecar, never a workload process, whatever its uid. Not a
    /// flag: always on for the shipped binary; only the tests' stand-alone
    /// shim, which shares its PID namespace with the test, turns it off.
    #[arg(skip = true)]
    pub spawn_peer_outside_pid_namespace: bool,

    /// Serve no spawn socket at all (shell access forbidden).
    #[arg(long, env = "HATCHWAY_SPAWN_DISABLED")]
    pub spawn_disabled: bool,

    /// The command to run, with its arguments (after `--`).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

#[cfg(test)]
mod tests;
