//! Serving a session: over any stream, or on standard input and output.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{MAX_CLIENT_PACKET_LEN, MAX_PACKET_LEN, SftpServer};

/// The protocol stream, watched: the protocol library keeps reading after
/// most errors, so a read error, or a write error (the client is gone),
/// ends the stream here; and dropping the stream, which the library does
/// when its loop ends, tells [`serve`] the session is over.
struct Watched<S> {
    inner: S,
    broken: bool,
    _ended: tokio::sync::oneshot::Sender<()>,
}

fn ended() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "the SFTP stream ended")
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.broken {
            return Poll::Ready(Err(ended()));
        }
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Err(error)) => {
                tracing::debug!(%error, "reading SFTP requests");
                self.broken = true;
                Poll::Ready(Err(ended()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Err(error)) = &result {
            tracing::debug!(%error, "writing SFTP replies");
            self.broken = true;
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        if let Poll::Ready(Err(_)) = &result {
            self.broken = true;
        }
        result
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves one SFTP session on `stream` until the client closes it.
pub async fn serve<S>(stream: S, server: SftpServer)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel();
    let stream = Watched {
        inner: stream,
        broken: false,
        _ended: ended_tx,
    };
    let config = russh_sftp::server::Config {
        max_client_packet_len: MAX_CLIENT_PACKET_LEN,
    };
    russh_sftp::server::run_with_config(stream, server, config).await;
    // Resolves (with an error) when the library drops the stream.
    let _ = ended_rx.await;
    tracing::debug!("SFTP session ended");
}

/// Standard input or output used directly, without tokio's helper thread
/// per read and write, when it is a pipe or a socket (under the shim it is
/// a pipe only this process uses, so making it non-blocking is harmless).
/// None for anything else, such as a terminal shared with a shell, which
/// must stay blocking.
fn direct(fd: BorrowedFd<'_>) -> Option<hatchway_shim::FdStream> {
    let kind = nix::sys::stat::fstat(fd).ok()?.st_mode & libc::S_IFMT;
    if kind != libc::S_IFIFO && kind != libc::S_IFSOCK {
        return None;
    }
    hatchway_shim::FdStream::new(fd.try_clone_to_owned().ok()?).ok()
}

/// Runs `hatchway-sidecar sftp-server`: one SFTP session on standard input
/// and output, in this process's working directory. Returns the exit code.
pub fn run_stdio() -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "starting the runtime");
            return 1;
        }
    };
    runtime.block_on(async {
        let input: Box<dyn AsyncRead + Unpin + Send> = match direct(std::io::stdin().as_fd()) {
            Some(stream) => Box::new(stream),
            None => Box::new(tokio::io::stdin()),
        };
        let output: Box<dyn AsyncWrite + Unpin + Send> = match direct(std::io::stdout().as_fd()) {
            Some(stream) => Box::new(stream),
            None => Box::new(tokio::io::stdout()),
        };
        // Buffered, so a packet's 4-byte length and its body come in one
        // read rather than two.
        let input = tokio::io::BufReader::with_capacity(MAX_PACKET_LEN as usize, input);
        serve(tokio::io::join(input, output), SftpServer::for_this_process()).await;
    });
    // Nothing should be left running; don't wait on a stuck filesystem call.
    runtime.shutdown_timeout(Duration::from_secs(1));
    0
}
