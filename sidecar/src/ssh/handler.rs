//! One SSH connection: its channels and what runs on them.

use std::collections::HashMap;
use std::sync::Arc;

use russh::server::{Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId, ChannelOpenFailure, Pty, Sig};
use tokio::sync::mpsc;

use super::process;
use super::session::{self, Control, Launch, PtySize};
use super::terminal::Terminal;
use super::{SessionParams, SshServer, TakeOver};

/// Per-connection state.
pub struct Connection {
    server: Arc<SshServer>,
    params: SessionParams,
    channels: HashMap<ChannelId, ChannelState>,
    /// A pty the first shell request takes over instead of starting one.
    take_over: Option<TakeOver>,
    /// A pty this connection watches read-only (`--join`): its shell
    /// request shows it; nothing else may run on the connection.
    watch: Option<Arc<Terminal>>,
    /// `ssh -R` listeners, closed with the connection.
    reverse: super::reverse::Listeners,
}

#[derive(Default)]
struct ChannelState {
    /// The channel, until a process takes it over.
    channel: Option<Channel<Msg>>,
    /// Asked for with `pty-req`.
    pty: Option<PtySize>,
    /// Asked for with `env`.
    env: Vec<(String, String)>,
    /// Asked for with `auth-agent-req@openssh.com` (`ssh -A`), and allowed.
    agent: bool,
    /// Resize and signal requests for the running process.
    control: Option<mpsc::Sender<Control>>,
}

impl Connection {
    pub fn new(
        server: Arc<SshServer>,
        params: SessionParams,
        take_over: Option<TakeOver>,
        watch: Option<Arc<Terminal>>,
    ) -> Self {
        Self {
            server,
            params,
            channels: HashMap::new(),
            take_over,
            watch,
            reverse: Default::default(),
        }
    }

    /// Starts `launch` on `id` if the channel is still free.
    fn start(&mut self, id: ChannelId, launch: Launch, session: &mut Session) -> Result<(), russh::Error> {
        let Some(state) = self.channels.get_mut(&id) else {
            return session.channel_failure(id);
        };
        if self.watch.is_some() && !matches!(launch, Launch::Shell) {
            // A watcher's connection runs nothing: it only shows the pty.
            return session.channel_failure(id);
        }
        let Some(channel) = state.channel.take() else {
            return session.channel_failure(id);
        };
        if let Some(terminal) = self.watch.clone() {
            session.channel_success(id)?;
            let reporter = self.server.reporter.clone();
            let who = self.params.who.clone();
            let detach_keys = self.params.detach_keys.clone();
            crate::spawn(async move {
                process::watch(terminal, channel, &detach_keys, &who, &reporter).await;
            });
            return Ok(());
        }
        let (tx, rx) = mpsc::channel(16);
        state.control = Some(tx);
        session.channel_success(id)?;
        if matches!(launch, Launch::Shell)
            && let Some(take_over) = self.take_over.take()
        {
            let pty = state.pty.clone();
            self.resume_pty(take_over, channel, pty, rx, session);
            return Ok(());
        }
        let job = process::Job {
            launch,
            pty: state.pty.clone(),
            env: std::mem::take(&mut state.env),
            agent: state.agent,
            params: self.params.clone(),
            spawn_socket: self.server.spawn_socket.clone(),
            sftp_command: self.server.sftp_command.clone(),
            reporter: self.server.reporter.clone(),
            handle: session.handle(),
            terminals: self.server.terminals.clone(),
            recordings: self.server.recordings.clone(),
        };
        crate::spawn(process::run(job, channel, rx));
        Ok(())
    }

    /// Attaches `channel` to a pty taken over from an earlier session
    /// (`--resume`): the earlier attachment lets go, the earlier session
    /// ends, the pty takes this terminal's size (full-screen programs
    /// redraw on the SIGWINCH) and the screen kept meanwhile comes first.
    fn resume_pty(
        &self,
        take_over: TakeOver,
        channel: Channel<Msg>,
        pty: Option<PtySize>,
        control: mpsc::Receiver<Control>,
        session: &mut Session,
    ) {
        let TakeOver {
            old,
            terminal,
            sessions,
        } = take_over;
        let new = self.params.resumable_id.clone().unwrap_or_default();
        self.server.reporter.audit(&format!(
            "resumable {new} took over the terminal of resumable {old} {}",
            self.params.who.audited()
        ));
        self.server.terminals.moved(&terminal, &new);
        if let Some(size) = pty {
            terminal.resize(size.cols, size.rows);
        }
        // Current before the earlier session ends, so that its
        // connection's end cannot hang the process up first.
        let attachment = terminal.attach();
        sessions.end(&old, &new);
        let detach_keys = self.params.detach_keys.clone();
        let handle = session.handle();
        crate::spawn(async move {
            process::attach(terminal, attachment, channel, control, &detach_keys, handle).await;
        });
    }

    fn control(&self, id: ChannelId, message: Control) {
        if let Some(tx) = self.channels.get(&id).and_then(|s| s.control.as_ref()) {
            let _ = tx.try_send(message);
        }
    }
}

/// Hosts `direct-tcpip` may reach: only the pod itself.
fn is_local(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "::1" | "[::1]" | "0.0.0.0")
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn auth_password(&mut self, _user: &str, _password: &str) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn auth_publickey(
        &mut self,
        _user: &str,
        _key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.insert(
            channel.id(),
            ChannelState {
                channel: Some(channel),
                ..Default::default()
            },
        );
        reply.accept().await;
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let origin = super::reverse::Origin {
            handle: session.handle(),
            who: self.params.who.clone(),
            reporter: self.server.reporter.clone(),
        };
        // A watcher's connection runs nothing.
        let allowed = self.server.reverse_forward && self.watch.is_none();
        match self.reverse.open(allowed, address, port, origin).await {
            Ok(()) => Ok(true),
            Err(refusal) => {
                self.server.reporter.audit(&format!(
                    "reverse forward refused ({refusal}) {}",
                    self.params.who.audited()
                ));
                Ok(false)
            }
        }
    }

    async fn cancel_tcpip_forward(
        &mut self,
        _address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(self.reverse.cancel(port))
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        _originator: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let port = match u16::try_from(port) {
            Ok(port) if port > 0 && is_local(host) && self.watch.is_none() => port,
            _ => {
                reply.reject(ChannelOpenFailure::AdministrativelyProhibited).await;
                return Ok(());
            }
        };
        // The Container's forwarding rule (api/src/ports.rs). SSH has no
        // room for the reason (the client says "administratively
        // prohibited"): the audit trail has it.
        if crate::portforward::refused(
            &self.server.forward,
            port,
            &self.server.reporter,
            &self.params.who,
        )
        .is_some()
        {
            reply.reject(ChannelOpenFailure::AdministrativelyProhibited).await;
            return Ok(());
        }
        let upstream = match crate::local::connect(port).await {
            Ok(stream) => stream,
            Err(message) => {
                tracing::debug!(%message, "direct-tcpip refused");
                reply.reject(ChannelOpenFailure::ConnectFailed).await;
                return Ok(());
            }
        };
        reply.accept().await;
        let session =
            self.server
                .reporter
                .session(&self.params.who, "direct-tcpip", Some(format!("port {port}")));
        crate::spawn(async move {
            let stream = channel.into_stream();
            crate::relay::relay(
                stream,
                upstream,
                session.bytes_in.clone(),
                session.bytes_out.clone(),
            )
            .await;
        });
        Ok(())
    }

    async fn pty_request(
        &mut self,
        id: ChannelId,
        term: &str,
        cols: u32,
        rows: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match self.channels.get_mut(&id) {
            Some(state) if state.channel.is_some() => {
                state.pty = Some(PtySize {
                    term: term.to_owned(),
                    cols: clamp(cols),
                    rows: clamp(rows),
                });
                session.channel_success(id)
            }
            _ => session.channel_failure(id),
        }
    }

    async fn env_request(
        &mut self,
        id: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match self.channels.get_mut(&id) {
            Some(state) if state.env.len() < 256 && !name.is_empty() && !name.contains(['=', '\0']) => {
                state.env.push((name.to_owned(), value.to_owned()));
                session.channel_success(id)
            }
            _ => session.channel_failure(id),
        }
    }

    async fn agent_request(&mut self, id: ChannelId, _session: &mut Session) -> Result<bool, Self::Error> {
        // Only before the channel's process starts: its environment names
        // the socket. A watcher's connection runs nothing.
        let Some(state) = self.channels.get_mut(&id).filter(|s| s.channel.is_some()) else {
            return Ok(false);
        };
        if !self.server.agent_forward || self.watch.is_some() {
            self.server.reporter.audit(&format!(
                "agent forwarding refused (agent forwarding (ssh -A) is off for this Container: spec.portForward.agent is not true) {}",
                self.params.who.audited()
            ));
            return Ok(false);
        }
        state.agent = true;
        Ok(true)
    }

    async fn shell_request(&mut self, id: ChannelId, session: &mut Session) -> Result<(), Self::Error> {
        self.start(id, Launch::Shell, session)
    }

    async fn exec_request(
        &mut self,
        id: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let command = String::from_utf8_lossy(data).into_owned();
        self.start(id, Launch::Exec(command), session)
    }

    async fn subsystem_request(
        &mut self,
        id: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match name {
            "sftp" => self.start(id, Launch::Sftp, session),
            _ => session.channel_failure(id),
        }
    }

    async fn window_change_request(
        &mut self,
        id: ChannelId,
        cols: u32,
        rows: u32,
        _pix_width: u32,
        _pix_height: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.control(
            id,
            Control::Resize {
                cols: clamp(cols),
                rows: clamp(rows),
            },
        );
        Ok(())
    }

    async fn signal(
        &mut self,
        id: ChannelId,
        signal: Sig,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(number) = session::signal_number(&signal) {
            self.control(id, Control::Signal(number));
        }
        Ok(())
    }

    async fn channel_close(&mut self, id: ChannelId, _session: &mut Session) -> Result<(), Self::Error> {
        self.channels.remove(&id);
        Ok(())
    }
}

fn clamp(n: u32) -> u16 {
    n.clamp(1, u16::MAX as u32) as u16
}
