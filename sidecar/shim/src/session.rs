//! Turns a [`SpawnRequest`] into a ready-to-spawn `Command` plus the
//! parent's ends of its pty or pipes: who to run as, what to run, where,
//! with which environment.
//!
//! Everything the child needs between fork and exec is computed here,
//! before the fork (see `sys::ChildSetup`).

use std::ffi::CString;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::fcntl::{OFlag, open};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::stat::Mode;

use crate::agent::AgentSocket;
use crate::passwd::UserDb;
use crate::protocol::{IoKind, PtyRequest, SpawnRequest};
use crate::sys::{self, ChildSetup};

/// The shell when the user has none (or it is missing from the image).
const FALLBACK_SHELL: &str = "/bin/sh";
/// PATH for sessions when the workload's environment has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why a spawn request was refused; the message goes back to the client.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("cannot run as user {user}: the workload runs as uid {uid}, not root")]
    NotRoot { user: String, uid: u32 },
    #[error("unknown user {0}: not in the workload's /etc/passwd")]
    UnknownUser(String),
    #[error("working directory {0} does not exist")]
    NoSuchDirectory(String),
    #[error("bad spawn request: {0}")]
    BadRequest(String),
    #[error("cannot allocate a pty: {0}")]
    Pty(#[source] io::Error),
    #[error("cannot create pipes: {0}")]
    Pipes(#[source] io::Error),
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
}

/// What the shim knows about the workload, captured at start.
#[derive(Debug, Clone)]
pub(crate) struct Workload {
    /// The shim's (and so the workload's) effective uid and gid.
    pub uid: u32,
    pub gid: u32,
    /// The workload's working directory: the fallback session directory.
    pub cwd: PathBuf,
    /// Where `etc/passwd` and `etc/group` are read from, and agent sockets
    /// made (in `tmp`): `/` in production.
    pub root: PathBuf,
}

impl Workload {
    pub fn current() -> Self {
        Self {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
            root: PathBuf::from("/"),
        }
    }
}

/// The user a session runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
    /// Supplementary groups to switch to, when switching at all.
    pub switch: Option<Vec<u32>>,
}

/// Resolves the requested user (name or numeric uid; none: the workload's
/// own) and decides whether the child must switch to it.
pub(crate) fn resolve_identity(
    db: &UserDb,
    requested: Option<&str>,
    workload: &Workload,
) -> Result<Identity, Refusal> {
    let entry = match requested {
        None => db.by_uid(workload.uid).cloned(),
        Some(spec) => match db.by_name(spec) {
            Some(user) => Some(user.clone()),
            None => match spec.parse::<u32>() {
                Ok(uid) => db.by_uid(uid).cloned().or_else(|| {
                    // A uid without an entry, as `docker run --user 1234`
                    // allows: group 0, no home.
                    Some(crate::passwd::User {
                        name: spec.to_string(),
                        uid,
                        gid: 0,
                        home: "/".into(),
                        shell: String::new(),
                    })
                }),
                Err(_) => return Err(Refusal::UnknownUser(spec.to_string())),
            },
        },
    };
    let user = entry.unwrap_or_else(|| crate::passwd::User {
        name: workload.uid.to_string(),
        uid: workload.uid,
        gid: workload.gid,
        home: "/".into(),
        shell: String::new(),
    });
    let switch = if user.uid == workload.uid {
        None
    } else if workload.uid == 0 {
        Some(db.groups_of(&user.name, user.gid))
    } else {
        return Err(Refusal::NotRoot {
            user: requested.unwrap_or_default().to_string(),
            uid: workload.uid,
        });
    };
    Ok(Identity {
        name: user.name,
        uid: user.uid,
        gid: user.gid,
        home: user.home,
        shell: user.shell,
        switch,
    })
}

/// The user's shell if it exists in the image, else `/bin/sh`.
pub(crate) fn shell_of(identity: &Identity) -> String {
    if !identity.shell.is_empty() && Path::new(&identity.shell).exists() {
        identity.shell.clone()
    } else {
        FALLBACK_SHELL.to_string()
    }
}

/// (program, arguments, argv[0] override) for the request.
pub(crate) fn resolve_argv(
    req: &SpawnRequest,
    shell: &str,
) -> Result<(String, Vec<String>, Option<String>), Refusal> {
    if let Some(helper) = req.helper {
        if req.argv.is_some() || req.command.is_some() {
            return Err(Refusal::BadRequest(
                "helper, argv and command are exclusive".into(),
            ));
        }
        return Ok((
            crate::protocol::OWN_EXECUTABLE.to_string(),
            vec![helper.subcommand().to_string()],
            Some(format!("hatchway-{}", helper.subcommand())),
        ));
    }
    match (&req.argv, &req.command) {
        (Some(_), Some(_)) => Err(Refusal::BadRequest("argv and command are exclusive".into())),
        (Some(argv), None) => match argv.split_first() {
            Some((program, args)) => Ok((program.clone(), args.to_vec(), None)),
            None => Err(Refusal::BadRequest("argv is empty".into())),
        },
        (None, Some(command)) => Ok((shell.to_string(), vec!["-c".into(), command.clone()], None)),
        (None, None) => {
            // A login shell: argv[0] starts with '-', as login(1) does.
            let base = Path::new(shell)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            Ok((
                shell.to_string(),
                vec![],
                Some(format!("-{}", base.unwrap_or_else(|| "sh".into()))),
            ))
        }
    }
}

/// The variables set over the shim's own environment, in order (later
/// wins): sensible defaults, then the request's.
pub(crate) fn session_env(
    req: &SpawnRequest,
    identity: &Identity,
    shell: &str,
    inherited_path: bool,
) -> Result<Vec<(String, String)>, Refusal> {
    let mut env = vec![
        ("HOME".to_string(), identity.home.clone()),
        ("USER".to_string(), identity.name.clone()),
        ("LOGNAME".to_string(), identity.name.clone()),
        ("SHELL".to_string(), shell.to_string()),
    ];
    if !inherited_path {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    if let Some(pty) = &req.pty
        && !pty.term.is_empty()
    {
        env.push(("TERM".into(), pty.term.clone()));
    }
    for (key, value) in &req.env {
        if key.is_empty() || key.contains('=') || key.contains('\0') || value.contains('\0') {
            return Err(Refusal::BadRequest(format!(
                "invalid environment variable {key:?}"
            )));
        }
        env.push((key.clone(), value.clone()));
    }
    Ok(env)
}

/// The session directory: the requested one (which must exist), else the
/// user's home if it exists, else the workload's working directory.
pub(crate) fn session_cwd(
    req: &SpawnRequest,
    identity: &Identity,
    workload: &Workload,
) -> Result<PathBuf, Refusal> {
    match &req.cwd {
        Some(cwd) if Path::new(cwd).is_dir() => Ok(PathBuf::from(cwd)),
        Some(cwd) => Err(Refusal::NoSuchDirectory(cwd.clone())),
        None if !identity.home.is_empty() && Path::new(&identity.home).is_dir() => {
            Ok(PathBuf::from(&identity.home))
        }
        None => Ok(workload.cwd.clone()),
    }
}

/// The parent's ends of a session's I/O, to be passed to the client.
#[derive(Debug)]
pub(crate) enum ParentIo {
    Pty {
        master: OwnedFd,
    },
    Pipes {
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
}

impl ParentIo {
    pub fn kind(&self) -> IoKind {
        match self {
            ParentIo::Pty { .. } => IoKind::Pty,
            ParentIo::Pipes { .. } => IoKind::Pipes,
        }
    }

    /// The fds in protocol order.
    pub fn fds(&self) -> Vec<&OwnedFd> {
        match self {
            ParentIo::Pty { master } => vec![master],
            ParentIo::Pipes {
                stdin,
                stdout,
                stderr,
            } => vec![stdin, stdout, stderr],
        }
    }
}

/// A session ready to spawn. Drop `command` right after spawning: it holds
/// the child's ends, and the client sees EOF only once they are closed.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub command: Command,
    pub io: ParentIo,
    pub program: String,
    /// The agent socket, when asked for and made.
    pub agent: Option<AgentSocket>,
    /// Why the agent socket asked for was not made.
    pub agent_error: Option<String>,
}

/// Prepares everything for `req`.
pub(crate) fn prepare(req: &SpawnRequest, workload: &Workload) -> Result<Prepared, Refusal> {
    let db = UserDb::load(&workload.root);
    let identity = resolve_identity(&db, req.user.as_deref(), workload)?;
    let shell = shell_of(&identity);
    let (program, args, arg0) = resolve_argv(req, &shell)?;
    let mut env = session_env(req, &identity, &shell, std::env::var_os("PATH").is_some())?;
    let cwd = session_cwd(req, &identity, workload)?;
    // An agent socket that cannot be made is not worth refusing the
    // session for (sshd goes on without one too): the gateway reports it.
    let (agent, agent_error) = match req.agent {
        false => (None, None),
        true => {
            let owner = identity.switch.as_ref().map(|_| (identity.uid, identity.gid));
            match AgentSocket::create(&workload.root.join("tmp"), owner) {
                Ok(socket) => {
                    // Last: a client's `env` request cannot point it elsewhere.
                    env.push(("SSH_AUTH_SOCK".into(), socket.path.clone()));
                    (Some(socket), None)
                }
                Err(error) => (None, Some(format!("no agent socket: {error}"))),
            }
        }
    };

    let mut command = Command::new(&program);
    command.args(&args).envs(env);
    if let Some(arg0) = arg0 {
        command.arg0(arg0);
    }
    let cwd = CString::new(cwd.as_os_str().as_bytes())
        .map_err(|_| Refusal::BadRequest("the working directory contains a NUL byte".into()))?;
    let mut setup = ChildSetup {
        // Every session leads its own process group, so a hangup reaches
        // the whole job and not the shim's group.
        new_session: true,
        controlling_tty: req.pty.is_some(),
        identity: identity
            .switch
            .clone()
            .map(|groups| (identity.uid, identity.gid, groups)),
        cwd: Some(cwd),
    };

    let io = match &req.pty {
        Some(pty) => {
            let (master, slave) = open_pty(pty).map_err(Refusal::Pty)?;
            if identity.switch.is_some() {
                // As sshd does: the terminal belongs to the session's user,
                // so programs that reopen it by name (ttyname) can.
                let tty_group = db.group_by_name("tty").map(|g| nix::unistd::Gid::from_raw(g.gid));
                nix::unistd::fchown(&slave, Some(nix::unistd::Uid::from_raw(identity.uid)), tty_group)
                    .and_then(|()| nix::sys::stat::fchmod(&slave, Mode::from_bits_truncate(0o620)))
                    .map_err(|e| Refusal::Pty(e.into()))?;
            }
            let (out, err) = (
                slave.try_clone().map_err(Refusal::Pty)?,
                slave.try_clone().map_err(Refusal::Pty)?,
            );
            command
                .stdin(Stdio::from(slave))
                .stdout(Stdio::from(out))
                .stderr(Stdio::from(err));
            ParentIo::Pty { master }
        }
        None => {
            setup.controlling_tty = false;
            let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Refusal::Pipes(e.into()));
            let (stdin_r, stdin_w) = pipe()?;
            let (stdout_r, stdout_w) = pipe()?;
            let (stderr_r, stderr_w) = pipe()?;
            command
                .stdin(Stdio::from(stdin_r))
                .stdout(Stdio::from(stdout_w))
                .stderr(Stdio::from(stderr_w));
            ParentIo::Pipes {
                stdin: stdin_w,
                stdout: stdout_r,
                stderr: stderr_r,
            }
        }
    };
    sys::install_child_setup(&mut command, setup);
    Ok(Prepared {
        command,
        io,
        program,
        agent,
        agent_error,
    })
}

/// Opens a pty pair, both ends close-on-exec from the start (another
/// thread may fork at any moment; a leaked master would keep the session's
/// terminal alive after the client closes it).
fn open_pty(req: &PtyRequest) -> io::Result<(OwnedFd, OwnedFd)> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let slave_path = ptsname_r(&master)?;
    let slave = open(
        slave_path.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let master = OwnedFd::from(master);
    sys::set_window_size(std::os::fd::AsFd::as_fd(&master), req.cols, req.rows)?;
    Ok((master, slave))
}

#[cfg(test)]
mod tests;
