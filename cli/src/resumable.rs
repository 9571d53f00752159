//! The client's end of resumable sessions (docs/sessions.md): a shell's
//! or a port-forward connection's bytes travel in
//! [`hatchway_api::resume`] frames, so when the connection through the
//! router breaks (a replica restarted, the network dropped, the laptop
//! slept) this side opens a new one — through any replica — naming the
//! session, its secret and the bytes received, and both sides resend
//! what the other lacks. The application (ssh on stdin/stdout, a local
//! TCP connection) never notices; stderr says so once per outage.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use hatchway_api::frames::Framed;
use hatchway_api::resume::{Pumped, Session};
use hatchway_api::wire::resumable as header;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::router::{Endpoint, RouterError, Upgrade};

/// How long to keep trying when the gateway did not say its grace time.
const DEFAULT_GRACE: Duration = Duration::from_secs(600);
/// The longest wait between attempts to resume.
const RETRY_CEILING: Duration = Duration::from_secs(2);
/// The waits between attempts to resume: 50 ms doubling to 2 s.
const RETRY: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(50))
    .with_max_delay(RETRY_CEILING)
    .without_max_times();

/// Where one stream goes: the route, its upgrade protocol, and whether
/// the connection carries it in [`Framed`] frames (through the API
/// server, whose proxy cannot pass a half-close).
#[derive(Clone)]
pub struct Route<'a> {
    pub endpoint: &'a Endpoint,
    pub path: String,
    pub protocol: &'static str,
    pub framed: bool,
}

/// What identifies a session to resume it.
pub struct Ticket {
    id: String,
    secret: String,
    grace: Duration,
}

impl Ticket {
    /// The ticket the gateway's `101` carries, if it opened a session.
    pub fn from_upgrade(upgrade: &Upgrade) -> Option<Self> {
        let text = |name: &str| upgrade.headers.get(name).and_then(|v| v.to_str().ok());
        Some(Self {
            id: text(header::ID)?.to_owned(),
            secret: text(header::SECRET)?.to_owned(),
            grace: text(header::GRACE)
                .and_then(|g| g.parse().ok())
                .map_or(DEFAULT_GRACE, Duration::from_secs),
        })
    }
}

/// The header that asks the gateway for a resumable session.
pub fn request_header() -> (&'static str, String) {
    (header::REQUEST, "1".to_owned())
}

/// Says "connection lost" and "resumed" once per outage, however many
/// streams (a port-forward's connections) are resuming at once.
#[derive(Default)]
pub struct Outage {
    state: Mutex<(usize, Option<Instant>)>,
}

impl Outage {
    fn lost(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.0 == 0 {
            eprintln!("hatchway: connection lost, resuming…");
            state.1 = Some(Instant::now());
        }
        state.0 += 1;
    }

    fn over(&self, resumed: bool) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.0 = state.0.saturating_sub(1);
        if state.0 == 0
            && let Some(since) = state.1.take()
            && resumed
        {
            eprintln!("hatchway: resumed after {:.1} s", since.elapsed().as_secs_f64());
        }
    }
}

/// The CLI's replay buffer (what it sends: uploads, keystrokes). Larger
/// than the sidecar's [`hatchway_api::resume::DEFAULT_REPLAY_BYTES`]
/// because the buffer is also the sender's window: bytes count as
/// unacknowledged until the sidecar has read them, and on a pod network
/// the socket buffers of the hops in between (CLI to router, router to
/// pod) hold more than 4 MiB, so a 4 MiB buffer kept the CLI waiting for
/// acks (on the bench's cluster: 15% of both cores idle during an
/// upload, 8% with 16 MiB or `--no-resume`). One user's process, one
/// buffer per connection in flight: the sidecar, which holds many,
/// keeps 4 MiB under its total budget.
pub const REPLAY_BYTES: usize = 16 << 20;

/// Carries `local` over `upgrade` (the `101` that opened the stream)
/// until both directions are done: resuming through new connections when
/// the gateway opened a resumable session, plainly copying when it did not.
pub async fn carry<L>(
    route: &Route<'_>,
    upgrade: Upgrade,
    local: &mut L,
    outage: &Outage,
) -> Result<(), RouterError>
where
    L: AsyncRead + AsyncWrite + Unpin,
{
    let Some(ticket) = Ticket::from_upgrade(&upgrade) else {
        return copy(route, upgrade, local).await;
    };
    let mut session = Session::new(REPLAY_BYTES);
    let mut transport = upgrade;
    loop {
        let pumped = if route.framed {
            session.pump(local, Framed::new(transport.io)).await
        } else {
            session.pump(local, transport.io).await
        };
        match pumped.map_err(|e| RouterError::Relay(std::io::Error::other(e)))? {
            Pumped::Done => return Ok(()),
            Pumped::Broken => {
                outage.lost();
                let resumed = resume(route, &ticket, &mut session).await;
                outage.over(resumed.is_ok());
                transport = resumed?;
            }
        }
    }
}

/// Opens new connections until one resumes the session (or the gateway
/// says it cannot, or the grace time passed).
async fn resume(route: &Route<'_>, ticket: &Ticket, session: &mut Session) -> Result<Upgrade, RouterError> {
    let deadline = Instant::now() + ticket.grace;
    let mut delays = RETRY.build();
    loop {
        let headers = [
            (header::ID, ticket.id.clone()),
            (header::SECRET, ticket.secret.clone()),
            (header::OFFSET, session.received().to_string()),
        ];
        let delay = delays.next().unwrap_or(RETRY_CEILING);
        match route
            .endpoint
            .upgrade(&route.path, route.protocol, &headers)
            .await
        {
            Ok(upgrade) => {
                let offset = upgrade
                    .headers
                    .get(header::OFFSET)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| RouterError::Refused {
                        status: http::StatusCode::BAD_GATEWAY,
                        message: format!("the gateway resumed session {} without its offset", ticket.id),
                    })?;
                session
                    .resume(offset)
                    .map_err(|e| RouterError::Relay(std::io::Error::other(e)))?;
                return Ok(upgrade);
            }
            Err(error) if error.is_transient() && Instant::now() + delay < deadline => {
                tokio::time::sleep(delay).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// A stream the gateway did not make resumable: copied until both sides
/// are done.
async fn copy<L>(route: &Route<'_>, upgrade: Upgrade, local: &mut L) -> Result<(), RouterError>
where
    L: AsyncRead + AsyncWrite + Unpin,
{
    const BUFFER: usize = 256 * 1024;
    let copied = if route.framed {
        let mut io = Framed::new(upgrade.io);
        tokio::io::copy_bidirectional_with_sizes(local, &mut io, BUFFER, BUFFER).await
    } else {
        let mut io = upgrade.io;
        tokio::io::copy_bidirectional_with_sizes(local, &mut io, BUFFER, BUFFER).await
    };
    match copied {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(()),
        Err(e) => Err(RouterError::Relay(e)),
    }
}
