//! A process started for an SSH channel, inside the workload container,
//! through the shim's spawn socket; its I/O pumped to and from the channel.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hatchway_shim::{ExitStatus, FdStream, PtyRequest, SpawnRequest, Spawned, SpawnedIo};
use russh::server::Msg;
use russh::{Channel, ChannelMsg};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::SessionParams;
use super::session::{Control, Detach, Launch, PtySize, ssh_signal};
use crate::report::Reporter;

/// Everything needed to start and run one channel's process.
pub struct Job {
    pub launch: Launch,
    pub pty: Option<PtySize>,
    pub env: Vec<(String, String)>,
    pub params: SessionParams,
    pub spawn_socket: String,
    pub sftp_command: Vec<String>,
    pub reporter: Arc<Reporter>,
    pub handle: russh::server::Handle,
}

/// How long output may keep flowing after the process exits (a daemon it
/// started may hold the pipes open forever).
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// Runs a job on a channel until the process ends or the channel closes.
pub async fn run(job: Job, channel: Channel<Msg>, mut control: mpsc::Receiver<Control>) {
    let id = channel.id();
    let (kind, request, shown) = request_for(&job);
    let session = job.reporter.session(&job.params.who, kind, shown);
    let (mut input, output) = channel.split();
    let stdout_sink = output.make_writer();
    let stderr_sink = output.make_writer_ext(Some(1));

    let spawned = match hatchway_shim::spawn(&job.spawn_socket, &request).await {
        Ok(spawned) => spawned,
        Err(error) => {
            let message = format!("hatchway: cannot start {kind}: {error}\r\n");
            let _ = output.extended_data(1, message.as_bytes()).await;
            let _ = output.exit_status(127).await;
            let _ = output.eof().await;
            let _ = output.close().await;
            session.set_exit(format!("not started: {error}"));
            return;
        }
    };

    let Spawned {
        io, control: spawned, ..
    } = spawned;
    let is_pty = matches!(io, SpawnedIo::Pty { .. });
    let (stdin, stdout, stderr) = match split_io(io) {
        Ok(parts) => parts,
        Err(error) => {
            tracing::warn!(%error, "spawned process fds");
            let _ = spawned.signal(libc::SIGKILL).await;
            let _ = output.close().await;
            return;
        }
    };

    let bytes_out = session.bytes_out.clone();
    let out_task = tokio::spawn(pump(stdout, stdout_sink, bytes_out.clone()));
    let err_task = stderr.map(|stderr| tokio::spawn(pump(stderr, stderr_sink, bytes_out)));

    let mut stdin = Some(stdin);
    // Detach keys belong to terminals (as in Docker): in a pipe session
    // (exec, sftp, scp) the same bytes are just data, and binary uploads
    // contain them.
    let mut detach = Detach::new(if is_pty { &job.params.detach_keys } else { &[] });
    let mut input_open = true;
    // One wait for the whole session: re-creating it on every input packet
    // re-polled the spawn socket each time and cut upload speed to a quarter.
    let wait = spawned.wait();
    tokio::pin!(wait);
    let status: Option<ExitStatus> = loop {
        tokio::select! {
            status = &mut wait => break status.ok(),
            message = input.wait(), if input_open => match message {
                Some(ChannelMsg::Data { data }) => {
                    session.bytes_in.fetch_add(data.len() as u64, Ordering::Relaxed);
                    let (pass, detached) = detach.feed(&data);
                    if let Some(w) = stdin.as_mut() && w.write_all(&pass).await.is_err() {
                        stdin = None;
                    }
                    if detached {
                        session.set_exit("detached");
                        let _ = spawned.signal(libc::SIGHUP).await;
                        let _ = output.close().await;
                        return;
                    }
                }
                Some(ChannelMsg::Eof) => {
                    if is_pty {
                        // End of input on a terminal is ^D.
                        if let Some(w) = stdin.as_mut() { let _ = w.write_all(&[4]).await; }
                    } else {
                        stdin = None;
                    }
                }
                Some(_) => {}
                None => {
                    // The client went away: hang up, as a terminal would.
                    input_open = false;
                    let _ = spawned.signal(libc::SIGHUP).await;
                }
            },
            Some(request) = control.recv() => match request {
                Control::Resize { cols, rows } => { let _ = spawned.resize(cols, rows); }
                Control::Signal(number) => { let _ = spawned.signal(number).await; }
            },
        }
    };
    drop(stdin);

    // Let the output drain, but not forever.
    let _ = tokio::time::timeout(OUTPUT_GRACE, async {
        let _ = out_task.await;
        if let Some(err_task) = err_task {
            let _ = err_task.await;
        }
    })
    .await;

    match status {
        Some(ExitStatus {
            signal: Some(signal), ..
        }) => {
            session.set_exit(format!("signal {signal}"));
            let _ = job
                .handle
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

type Reader = Box<dyn AsyncRead + Unpin + Send>;
type Writer = Box<dyn AsyncWrite + Unpin + Send>;

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

async fn pump(mut from: Reader, mut to: impl AsyncWrite + Unpin, counter: Arc<AtomicU64>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                counter.fetch_add(n as u64, Ordering::Relaxed);
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.flush().await;
}

fn request_for(job: &Job) -> (&'static str, SpawnRequest, Option<String>) {
    let mut request = SpawnRequest {
        env: job.env.clone(),
        user: job.params.login_username.clone(),
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
