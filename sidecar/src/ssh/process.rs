//! A process started for an SSH channel, inside the workload container,
//! through the shim's spawn socket; and a channel attached to a process
//! (the one it started, or a pty it took over with `--resume`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hatchway_shim::{ExitStatus, FdStream, PtyRequest, SpawnRequest, Spawned, SpawnedIo};
use russh::server::Msg;
use russh::{Channel, ChannelMsg};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::SessionParams;
use super::recording::{Header, Recordings};
use super::session::{Control, Detach, Launch, PtySize, ssh_signal};
use super::terminal::{Attachment, Events, Identity, Output, Reader, Terminal, Writer};
use crate::report::Reporter;

/// Everything needed to start and run one channel's process.
pub struct Job {
    pub launch: Launch,
    pub pty: Option<PtySize>,
    pub env: Vec<(String, String)>,
    /// Forward the client's agent (`ssh -A`, allowed for this Container).
    pub agent: bool,
    pub params: SessionParams,
    pub spawn_socket: String,
    pub sftp_command: Vec<String>,
    pub reporter: Arc<Reporter>,
    pub handle: russh::server::Handle,
    /// Where the resumable connection's terminals are found by a resume.
    pub terminals: Arc<super::terminal::Terminals>,
    /// Where ptys are recorded, if they are.
    pub recordings: Recordings,
}

/// How long output may keep flowing after the process exits (a daemon it
/// started may hold the pipes open forever).
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// Starts a job's process and runs it on `channel`.
pub async fn run(job: Job, channel: Channel<Msg>, control: mpsc::Receiver<Control>) {
    let (kind, request, shown) = request_for(&job);
    let session = job.reporter.session(&job.params.who, kind, shown.clone());
    let spawned = match hatchway_shim::spawn(&job.spawn_socket, &request).await {
        Ok(spawned) => spawned,
        Err(error) => {
            let message = format!("hatchway: cannot start {kind}: {error}\r\n");
            let _ = channel.extended_data(1, message.as_bytes()).await;
            let _ = channel.exit_status(127).await;
            let _ = channel.eof().await;
            let _ = channel.close().await;
            session.set_exit(format!("not started: {error}"));
            return;
        }
    };
    let Spawned {
        io,
        control: spawn_control,
        agent,
        agent_error,
        ..
    } = spawned;
    // Connections to the agent socket reach this connection's client while
    // the channel is attached; the shim removes the socket when the process
    // ends.
    let _agent_relay = super::agent::start(agent, agent_error, &job, &channel).await;
    let (stdin, stdout, stderr) = match split_io(io) {
        Ok(parts) => parts,
        Err(error) => {
            tracing::warn!(%error, "spawned process fds");
            let _ = spawn_control.signal(libc::SIGKILL).await;
            let _ = channel.close().await;
            return;
        }
    };
    let what = match shown {
        Some(command) => format!("{kind}: {command}"),
        None => kind.to_owned(),
    };
    let id = terminal_id();
    let recorder = match (&job.pty, &job.recordings) {
        (Some(pty), recordings) => recordings.start(&Header {
            id: &id,
            user: &job.params.who.user,
            what: &what,
            term: &pty.term,
            cols: pty.cols,
            rows: pty.rows,
        }),
        (None, _) => Ok(None),
    };
    let recorder = match recorder {
        Ok(recorder) => recorder,
        Err(error) => {
            // Recording is this Container's rule: no unrecorded terminal.
            tracing::error!(%error, "cannot record a terminal; refusing it");
            let message = format!("hatchway: this container records terminals, and cannot now: {error}\r\n");
            let _ = channel.extended_data(1, message.as_bytes()).await;
            let _ = spawn_control.signal(libc::SIGKILL).await;
            let _ = channel.exit_status(126).await;
            let _ = channel.close().await;
            session.set_exit("not recorded");
            return;
        }
    };
    if recorder.is_some() {
        job.reporter
            .audit(&format!("session {} terminal {id} recorded", session.id()));
    }
    let terminal = Terminal::start(
        Identity {
            id,
            what,
            user: job.params.who.user.clone(),
            recorder,
        },
        spawn_control,
        stdin,
        stdout,
        stderr,
        session,
    );
    if let Some(id) = &job.params.resumable_id {
        job.terminals.add(id, &terminal);
    }
    if terminal.is_pty {
        job.terminals.add_live(&terminal);
    }
    let attachment = terminal.attach();
    attach(
        terminal,
        attachment,
        channel,
        control,
        &job.params.detach_keys,
        job.handle,
    )
    .await;
}

/// Shows `terminal` on `channel` and feeds it the channel's input until the
/// process ends, the channel closes, or another attachment takes over.
pub async fn attach(
    terminal: Arc<Terminal>,
    attachment: Attachment,
    channel: Channel<Msg>,
    mut control: mpsc::Receiver<Control>,
    detach_keys: &[u8],
    handle: russh::server::Handle,
) {
    let id = channel.id();
    let (mut input, output) = channel.split();
    let Attachment {
        screen,
        output: output_rx,
        events: Events {
            generation,
            mut taken,
            mut exit,
        },
    } = attachment;
    let forwarder = crate::spawn(forward(
        screen,
        output_rx,
        Box::new(output.make_writer()),
        Box::new(output.make_writer_ext(Some(1))),
    ));

    // Detach keys belong to terminals (as in Docker): in a pipe session
    // (exec, sftp, scp) the same bytes are just data, and binary uploads
    // contain them.
    let mut detach = Detach::new(if terminal.is_pty { detach_keys } else { &[] });
    let mut input_open = true;
    let status: Option<ExitStatus> = loop {
        tokio::select! {
            // A take-over first: it ends the earlier connection, whose
            // input then ends too, which must not hang the process up.
            biased;
            _ = async { taken.wait_for(|g| *g != generation).await.is_ok() } => {
                // Resumed from another connection: this one lets go
                // without hanging the process up.
                let message = b"\r\nhatchway: this session was resumed from another connection\r\n";
                let _ = tokio::time::timeout(OUTPUT_GRACE, output.extended_data(1, &message[..])).await;
                let _ = output.close().await;
                return;
            }
            status = async { exit.wait_for(Option::is_some).await.ok().and_then(|s| s.flatten()) } => break status,
            message = input.wait(), if input_open => match message {
                Some(ChannelMsg::Data { data }) => {
                    terminal.session.bytes_in.fetch_add(data.len() as u64, Ordering::Relaxed);
                    let (pass, detached) = detach.feed(&data);
                    terminal.write(&pass).await;
                    if detached {
                        terminal.session.set_exit("detached");
                        terminal.signal(libc::SIGHUP).await;
                        let _ = output.close().await;
                        return;
                    }
                }
                Some(ChannelMsg::Eof) => {
                    if terminal.is_pty {
                        // End of input on a terminal is ^D.
                        terminal.write(&[4]).await;
                    } else {
                        terminal.close_input().await;
                    }
                }
                Some(_) => {}
                None => {
                    // The client went away: hang up, as a terminal would.
                    input_open = false;
                    terminal.signal(libc::SIGHUP).await;
                }
            },
            Some(request) = control.recv() => match request {
                Control::Resize { cols, rows } => terminal.resize(cols, rows),
                Control::Signal(number) => terminal.signal(number).await,
            },
        }
    };
    terminal.close_input().await;

    // Let the output drain, but not forever.
    let _ = tokio::time::timeout(OUTPUT_GRACE, forwarder).await;

    let session = &terminal.session;
    match status {
        Some(ExitStatus {
            signal: Some(signal), ..
        }) => {
            session.set_exit(format!("signal {signal}"));
            let _ = handle
                .exit_signal_request(id, ssh_signal(signal), false, String::new(), String::new())
                .await;
        }
        Some(status) => {
            session.set_exit(status.exit_code().to_string());
            let _ = output.exit_status(status.exit_code() as u32).await;
        }
        None => session.set_exit("unknown"),
    }
    let _ = output.eof().await;
    let _ = output.close().await;
}

/// Shows a running pty on `channel` read-only (`shell --join ID`): the
/// screen so far, then its output, until the process ends, the watcher
/// types the detach keys or goes, or it falls too far behind. What the
/// watcher types never reaches the pty.
pub async fn watch(
    terminal: Arc<Terminal>,
    channel: Channel<Msg>,
    detach_keys: &[u8],
    who: &crate::report::Who,
    reporter: &Arc<Reporter>,
) {
    let (mut input, output) = channel.split();
    let session = reporter.session(who, "watch", Some(format!("terminal {}", terminal.id)));
    let mut stdout = output.make_writer();
    let mut stderr = output.make_writer_ext(Some(1));
    let Some((screen, mut chunks)) = terminal.watch() else {
        let _ = stderr
            .write_all(format!("hatchway: terminal {} has ended\r\n", terminal.id).as_bytes())
            .await;
        session.set_exit("ended");
        let _ = output.exit_status(1).await;
        let _ = output.close().await;
        return;
    };
    let notice = format!(
        "hatchway: watching terminal {} ({}: {}), read-only; {} to stop\r\n",
        terminal.id,
        terminal.user,
        terminal.what,
        if detach_keys.is_empty() {
            "close the connection"
        } else {
            "the detach keys"
        },
    );
    let _ = stderr.write_all(notice.as_bytes()).await;
    let _ = stdout.write_all(&screen).await;
    let _ = stdout.flush().await;
    let mut detach = Detach::new(detach_keys);
    let how = loop {
        tokio::select! {
            chunk = chunks.recv() => match chunk {
                Some(chunk) => {
                    session.bytes_out.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    if stdout.write_all(&chunk).await.is_err() || stdout.flush().await.is_err() {
                        break "gone";
                    }
                }
                None if terminal.running() => {
                    let _ = stderr
                        .write_all(b"\r\nhatchway: this watcher fell too far behind the session; join again\r\n")
                        .await;
                    break "fell behind";
                }
                None => {
                    let _ = stderr.write_all(b"\r\nhatchway: the session ended\r\n").await;
                    break "session ended";
                }
            },
            message = input.wait() => match message {
                Some(ChannelMsg::Data { data }) => {
                    // Dropped: a watcher's keys never reach the pty.
                    session.bytes_in.fetch_add(data.len() as u64, Ordering::Relaxed);
                    if detach.feed(&data).1 {
                        break "detached";
                    }
                }
                Some(_) => {}
                None => break "gone",
            },
        }
    };
    session.set_exit(how);
    let _ = stdout.flush().await;
    let _ = stderr.flush().await;
    let _ = output.exit_status(0).await;
    let _ = output.eof().await;
    let _ = output.close().await;
}

/// Writes an attachment's screen, then its output, to the channel.
async fn forward(
    screen: Vec<u8>,
    mut output: mpsc::Receiver<Output>,
    mut stdout: Writer,
    mut stderr: Writer,
) {
    if !screen.is_empty() && stdout.write_all(&screen).await.is_err() {
        return;
    }
    while let Some(chunk) = output.recv().await {
        let written = match chunk {
            Output::Stdout(data) => stdout.write_all(&data).await,
            Output::Stderr(data) => stderr.write_all(&data).await,
        };
        if written.is_err() {
            break;
        }
    }
    let _ = stdout.flush().await;
    let _ = stderr.flush().await;
}

/// A terminal's id: random, so a restarted sidecar never reuses one
/// (recordings outlive it in the audit directory).
fn terminal_id() -> String {
    let bytes: [u8; 8] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn split_io(io: SpawnedIo) -> std::io::Result<(Writer, Reader, Option<Reader>)> {
    Ok(match io {
        SpawnedIo::Pty { master } => {
            let (reader, writer) = tokio::io::split(FdStream::new(master)?);
            (Box::new(writer), Box::new(reader), None)
        }
        SpawnedIo::Pipes {
            stdin,
            stdout,
            stderr,
        } => (
            Box::new(FdStream::new(stdin)?),
            Box::new(FdStream::new(stdout)?),
            Some(Box::new(FdStream::new(stderr)?) as Reader),
        ),
    })
}
fn request_for(job: &Job) -> (&'static str, SpawnRequest, Option<String>) {
    let mut request = SpawnRequest {
        env: job.env.clone(),
        user: job.params.login_username.clone(),
        agent: job.agent,
        ..Default::default()
    };
    let pty = job.pty.as_ref().map(|p| PtyRequest {
        term: p.term.clone(),
        cols: p.cols,
        rows: p.rows,
    });
    match &job.launch {
        Launch::Shell => {
            request.pty = pty;
            ("shell", request, None)
        }
        Launch::Exec(command) => {
            request.pty = pty;
            request.command = Some(command.clone());
            ("exec", request, Some(command.clone()))
        }
        Launch::Sftp => {
            if job.sftp_command.is_empty() {
                request.helper = Some(hatchway_shim::Helper::SftpServer);
            } else {
                request.argv = Some(job.sftp_command.clone());
            }
            ("sftp", request, None)
        }
    }
}
