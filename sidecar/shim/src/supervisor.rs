//! PID 1's job: start the command, forward signals to it, reap everything,
//! and when the command ends, finish the logs and record its exit code.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use hatchway_api::pod::log_file;
use tokio::signal::unix::{SignalKind, signal};
use tracing::warn;

use crate::args::ShimArgs;
use crate::protocol::ExitStatus;
use crate::reaper::{self, Reaper};
use crate::server::{self, Policy};
use crate::session::Workload;
use crate::sys;
use crate::tee::{LogLimits, Stream, Tee};
use crate::usage::{Sampler, Sources};

/// Signals passed on to the command (SIGKILL and SIGSTOP cannot be caught;
/// SIGCHLD is the reaper's).
pub(crate) const FORWARDED: [i32; 7] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

/// After the command exits, how long to wait for its output pipes to reach
/// EOF (a background process may hold them) and then for the log files.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Exit code when the command cannot be found (as shells do).
const EXIT_NOT_FOUND: i32 = 127;
/// Exit code when the command exists but cannot be run (as shells do).
const EXIT_CANNOT_RUN: i32 = 126;

pub(crate) async fn supervise(args: ShimArgs) -> i32 {
    let ShimArgs {
        log_dir,
        log_max_bytes,
        log_max_total_bytes,
        usage_interval,
        spawn_socket,
        spawn_allowed_uids,
        spawn_peer_outside_pid_namespace,
        spawn_disabled,
        command,
    } = args;

    if let Err(error) = reaper::become_subreaper() {
        warn!(%error, "cannot become a child subreaper: orphans outside PID 1 will not be reaped");
    }
    if let Err(error) = std::fs::create_dir_all(&log_dir) {
        warn!(%error, dir = %log_dir.display(), "cannot create the log directory");
    }

    // Everything that listens for signals is set up before the command
    // starts, so none is missed.
    let reaper = match Reaper::start() {
        Ok(reaper) => reaper,
        Err(error) => return fail(&log_dir, &format!("cannot handle SIGCHLD: {error}"), 1),
    };
    let listener = if spawn_disabled {
        None
    } else {
        bind_spawn_socket(&spawn_socket)
    };
    let mut forwarders = Vec::new();
    for sig in FORWARDED {
        match signal(SignalKind::from_raw(sig)) {
            Ok(stream) => forwarders.push((sig, stream)),
            Err(error) => warn!(%error, sig, "cannot catch a signal to forward it"),
        }
    }

    let Some((program, rest)) = command.split_first() else {
        return fail(&log_dir, "no command given", EXIT_NOT_FOUND);
    };
    let mut cmd = Command::new(program);
    cmd.args(rest).stdout(Stdio::piped()).stderr(Stdio::piped());
    let (mut child, main_status) = match reaper.spawn(&mut cmd) {
        Ok(spawned) => spawned,
        Err(error) => {
            let code = if error.kind() == io::ErrorKind::NotFound {
                EXIT_NOT_FOUND
            } else {
                EXIT_CANNOT_RUN
            };
            return fail(&log_dir, &format!("cannot run {program}: {error}"), code);
        }
    };
    drop(cmd);
    let main_pid = child.id();

    let mut streams = Vec::new();
    if let Some(pipe) = child.stdout.take() {
        let own = own_fd(io::stdout().as_fd());
        streams.push(Stream {
            pipe: Box::new(pipe),
            own,
            name: log_file::STDOUT,
        });
    }
    if let Some(pipe) = child.stderr.take() {
        let own = own_fd(io::stderr().as_fd());
        streams.push(Stream {
            pipe: Box::new(pipe),
            own,
            name: log_file::STDERR,
        });
    }
    let limits = LogLimits {
        max_file_bytes: log_max_bytes,
        max_total_bytes: log_max_total_bytes,
    };
    let tee = Tee::start(&log_dir, limits, streams)
        .map_err(|error| warn!(%error, "cannot start the log tee: output is not being logged"))
        .ok();

    let sampler = match usage_interval {
        0 => None,
        secs => Sampler::start(
            log_dir.join(log_file::USAGE),
            Sources::for_self(),
            Duration::from_secs(secs),
        ),
    };

    let server = listener.map(|listener| {
        let policy = Policy {
            workload: Workload::current(),
            allowed_uids: spawn_allowed_uids,
            peer_outside_pid_namespace: spawn_peer_outside_pid_namespace,
        };
        tokio::spawn(server::serve(listener, Arc::clone(&reaper), Arc::new(policy)))
    });

    let forwarding: Vec<_> = forwarders
        .into_iter()
        .map(|(sig, mut stream)| {
            tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    if let Err(error) = sys::kill(main_pid as i32, sig) {
                        warn!(%error, sig, "cannot forward a signal to the command");
                    }
                }
            })
        })
        .collect();

    let status = main_status.await.unwrap_or(ExitStatus {
        code: None,
        signal: None,
    });
    let code = status.exit_code();

    for task in forwarding {
        task.abort();
    }
    if let Some(server) = server {
        server.abort();
    }
    // Sessions end with the workload: hang them up as a closing terminal
    // would (as PID 1's exit would kill them anyway).
    for pid in reaper.live_pids() {
        server::hang_up(pid as u32);
    }
    if let Some(tee) = tee {
        let _ = tokio::task::spawn_blocking(move || tee.finish(DRAIN_GRACE)).await;
    }
    if let Some(sampler) = sampler {
        sampler.stop().await;
    }
    write_exit_code(&log_dir, code);
    code
}

/// A duplicate of the shim's own stdout/stderr for the tee to write to.
fn own_fd(fd: std::os::fd::BorrowedFd<'_>) -> Option<File> {
    fd.try_clone_to_owned().ok().map(File::from)
}

/// Binds the spawn socket's name, before the command starts: once the
/// workload runs, the name is taken and no workload process can stand in
/// for the shim.
fn bind_spawn_socket(socket: &str) -> Option<tokio::net::UnixListener> {
    match server::bind(socket) {
        Ok(listener) => Some(listener),
        Err(error) => {
            // The workload must run even if sessions cannot.
            warn!(%error, socket, "cannot serve spawn requests: no shell sessions");
            None
        }
    }
}

/// The shim could not run the command at all: say so where the user will
/// look (stderr and the log file), record the code, and return it.
fn fail(log_dir: &Path, message: &str, code: i32) -> i32 {
    let line = format!("hatchway-shim: {message}\n");
    eprint!("{line}");
    let _ = std::fs::write(log_dir.join(log_file::STDERR), &line);
    write_exit_code(log_dir, code);
    code
}

/// Writes `exit-code` atomically (the gateway may read it at any moment).
pub(crate) fn write_exit_code(log_dir: &Path, code: i32) {
    let tmp = log_dir.join(".exit-code.tmp");
    let result = std::fs::write(&tmp, format!("{code}\n"))
        .and_then(|()| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)))
        .and_then(|()| std::fs::rename(&tmp, log_dir.join(log_file::EXIT_CODE)));
    if let Err(error) = result {
        warn!(%error, dir = %log_dir.display(), "cannot record the exit code");
    }
}
