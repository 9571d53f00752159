//! The built-in SSH client `shell` falls back to when no `ssh` program is
//! installed (or with `--builtin-ssh`): russh over the upgraded connection,
//! the host key checked against the one the router reported (strictly; no
//! known_hosts prompt), a terminal in raw mode with window resizes passed
//! on when stdin is one and no command is given (as `ssh` decides), and the
//! remote command's exit code as ours.

use std::io::Write;
use std::sync::Arc;

use tokio::io::AsyncReadExt;

use crate::router::Upgrade;

/// Why the session failed.
#[derive(Debug, thiserror::Error)]
pub enum BuiltinSshError {
    #[error("the router's host key {0:?} is not an SSH public key")]
    BadHostKey(String),
    #[error("SSH: {0}")]
    Ssh(#[from] russh::Error),
    #[error("the gateway refused the SSH login")]
    Refused,
    #[error("the terminal: {0}")]
    Terminal(std::io::Error),
}

/// Accepts only the expected host key.
struct Checker {
    expected: russh::keys::PublicKey,
}

impl russh::client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(matches!(key, russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } if *key == self.expected))
    }
}

/// Restores the terminal's settings when dropped.
struct RawMode {
    saved: rustix::termios::Termios,
}

impl RawMode {
    fn enter() -> std::io::Result<Self> {
        let stdin = std::io::stdin();
        let saved = rustix::termios::tcgetattr(&stdin)?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw)?;
        Ok(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}

/// (columns, rows) of the terminal on stdin.
fn window_size() -> (u32, u32) {
    rustix::termios::tcgetwinsize(std::io::stdin())
        .map(|w| (u32::from(w.ws_col), u32::from(w.ws_row)))
        .unwrap_or((80, 24))
}

/// Whether `program` can be run: a path that exists, or a name on PATH.
pub fn program_exists(program: &str) -> bool {
    if program.contains('/') {
        return std::path::Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Runs a shell (or `command`) over `upgraded`; returns the remote exit
/// code (255 when the session ended without one, as ssh does).
pub async fn run(upgraded: Upgrade, host_key: &str, command: &[String]) -> Result<i32, BuiltinSshError> {
    let expected = russh::keys::PublicKey::from_openssh(host_key)
        .map_err(|_| BuiltinSshError::BadHostKey(host_key.to_owned()))?;
    let config = Arc::new(russh::client::Config::default());
    let mut handle = russh::client::connect_stream(config, upgraded.io, Checker { expected }).await?;
    // The router authenticated the user; the gateway asks for nothing more.
    if !handle.authenticate_none("hatchway").await?.success() {
        return Err(BuiltinSshError::Refused);
    }
    let mut channel = handle.channel_open_session().await?;
    let terminal = command.is_empty() && rustix::termios::isatty(std::io::stdin());
    let _raw = if terminal {
        let (cols, rows) = window_size();
        let term = std::env::var("TERM").unwrap_or_else(|_| "xterm".to_owned());
        channel.request_pty(true, &term, cols, rows, 0, 0, &[]).await?;
        channel.request_shell(true).await?;
        Some(RawMode::enter().map_err(BuiltinSshError::Terminal)?)
    } else {
        if command.is_empty() {
            channel.request_shell(true).await?;
        } else {
            channel.exec(true, command.join(" ")).await?;
        }
        None
    };
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        .map_err(BuiltinSshError::Terminal)?;
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; 32 * 1024];
    let mut stdin_open = true;
    let mut code = None;
    loop {
        tokio::select! {
            msg = channel.wait() => match msg {
                Some(russh::ChannelMsg::Data { data }) => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&data).and_then(|_| out.flush()).map_err(BuiltinSshError::Terminal)?;
                }
                Some(russh::ChannelMsg::ExtendedData { data, .. }) => {
                    let mut err = std::io::stderr().lock();
                    err.write_all(&data).and_then(|_| err.flush()).map_err(BuiltinSshError::Terminal)?;
                }
                Some(russh::ChannelMsg::ExitStatus { exit_status }) => code = Some(exit_status as i32),
                Some(_) => {}
                None => break,
            },
            read = stdin.read(&mut buf), if stdin_open => match read {
                Ok(0) | Err(_) => {
                    stdin_open = false;
                    channel.eof().await?;
                }
                Ok(n) => channel.data(&buf[..n]).await?,
            },
            _ = winch.recv(), if terminal => {
                let (cols, rows) = window_size();
                channel.window_change(cols, rows, 0, 0).await?;
            }
        }
    }
    Ok(code.unwrap_or(255))
}
