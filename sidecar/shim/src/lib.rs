//! The workload shim: PID 1 of the workload container.
//!
//! The operator rewrites the workload's command to
//! `hatchway-sidecar shim -- <command...>`; that subcommand calls [`run`].
//! The shim runs the command, tees its output to the log directory and to
//! its own stdout/stderr, forwards signals, reaps every zombie, records the
//! exit code, samples the container's cgroup into `usage.txt`, and serves
//! the gateway's spawn requests on a unix socket: it starts shells and
//! commands *inside the workload container* and passes their pty or pipes
//! back with SCM_RIGHTS. The gateway's side of that socket is [`spawn`].
//!
//! docs/shim.md has the module map, the file formats and the protocol.

#![deny(rust_2018_idioms)]

/// The agent socket of `ssh -A` sessions: a 0700 directory in `/tmp`.
mod agent;
/// The shim's settings (`ShimArgs`), flags and `HATCHWAY_*` variables.
mod args;
/// The gateway's client for the spawn socket.
mod client;
/// Async streams over passed fds (pty master, pipe ends).
mod fdio;
/// `/etc/passwd` and `/etc/group`, parsed without NSS (the shim's sessions
/// and the SFTP server's names).
pub mod passwd;
/// The spawn protocol: messages, framing, limits.
mod protocol;
/// The one waiter for children: reaps orphans, routes statuses by pid.
mod reaper;
/// The spawn socket server.
mod server;
/// Spawn request -> ready-to-spawn command (user, argv, env, cwd, pty).
mod session;
/// Start the command, forward signals, finish logs, record the exit code.
mod supervisor;
/// The only `unsafe` code: raw syscalls, fd passing, pre-exec setup.
mod sys;
/// Output tee with rotation, caps and non-blocking hand-off to the disk.
mod tee;
/// cgroup v1/v2 sampling into `usage.txt`.
mod usage;

pub use args::ShimArgs;

/// Fixes glibc's mmap threshold at `bytes` (the gateway's large buffers
/// then go back to the system when freed). Call before other threads start.
pub fn fix_mmap_threshold(bytes: i32) {
    sys::fix_mmap_threshold(bytes);
}

/// Default spawn socket (`--spawn-socket`, `HATCHWAY_SPAWN_SOCKET`): the
/// name of an abstract unix socket.
pub const DEFAULT_SPAWN_SOCKET: &str = "hatchway/spawn";
pub use client::{
    AgentListener, RESPONSE_TIMEOUT, SpawnControl, SpawnError, Spawned, SpawnedIo, connect, spawn,
};
pub use fdio::FdStream;
pub use protocol::{ExitStatus, Helper, MAX_REQUEST_BYTES, PtyRequest, SpawnRequest};

/// Runs the shim until the command exits; returns the exit code for the
/// process to exit with (the command's, or 128 + the signal that killed
/// it; 127/126 when it could not be started).
///
/// It runs its own tokio runtime on a dedicated thread, so it may be called
/// from anywhere, including inside another runtime. Install a tracing
/// subscriber first to see the shim's own warnings (they go wherever the
/// subscriber writes: for PID 1, stderr is the container log).
pub fn run(args: ShimArgs) -> i32 {
    let thread = std::thread::Builder::new()
        .name("hatchway-shim".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("hatchway-shim-worker")
                .enable_all()
                .build();
            match runtime {
                Ok(runtime) => {
                    let code = runtime.block_on(supervisor::supervise(args));
                    // Session tasks and blocked readers must not delay the exit.
                    runtime.shutdown_background();
                    code
                }
                Err(error) => {
                    eprintln!("hatchway-shim: cannot start the async runtime: {error}");
                    1
                }
            }
        });
    match thread.map(|t| t.join()) {
        Ok(Ok(code)) => code,
        Ok(Err(_panic)) => {
            eprintln!("hatchway-shim: internal error (panic)");
            1
        }
        Err(error) => {
            eprintln!("hatchway-shim: cannot start: {error}");
            1
        }
    }
}
