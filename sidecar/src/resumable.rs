//! Resumable sessions, the gateway's end (docs/sessions.md).
//!
//! A shell or port-forward upgrade carrying `Hatchway-Resumable: 1` gets a
//! session id and a resume secret in its `101`; from then on its bytes
//! travel in [`hatchway_api::resume`] frames, and the session outlives the
//! connection: while none carries it (detached), the SSH connection with
//! its channels and ptys, or the forwarded TCP connection, stays open here
//! for the grace time, what the workload writes going into the replay
//! buffer (bounded per session and in total: a full buffer
//! back-pressures the workload). A resume — the same route with the id,
//! the secret and the offset the client received — is accepted only with
//! the right secret (compared in constant time) **and** from the user the
//! router authenticated when the session was opened: a session is never
//! handed to another user. Every open, resume, refusal and end is in the
//! audit trail; the secret never is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hatchway_api::proof::constant_time_eq;
use hatchway_api::resume::{Budget, Pumped, ResumeError, Session};
use hatchway_api::wire::ListedSession;
use hatchway_api::wire::resumable as header;
use http::{HeaderMap, HeaderValue, StatusCode};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};

use crate::report::{Reporter, Who, rfc3339};

/// The connection a session's frames travel on.
pub type Transport = TokioIo<Upgraded>;

/// Bounds and times of resumable sessions.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long a detached session waits for its client.
    pub grace: Duration,
    /// Replay buffer of each session (the gateway's direction).
    pub replay_bytes: usize,
    /// All sessions' replay buffers together.
    pub memory_bytes: usize,
    /// Sessions at once; beyond, new ones are opened without resumption.
    pub max_sessions: usize,
    /// A connection silent this long while bytes wait on it is broken.
    pub liveness: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(600),
            replay_bytes: hatchway_api::resume::DEFAULT_REPLAY_BYTES,
            memory_bytes: 64 << 20,
            max_sessions: 256,
            liveness: hatchway_api::resume::DEFAULT_LIVENESS,
        }
    }
}

/// How long a resume waits for the session's driver and for its upgrade.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(10);

/// What kind of route a session was opened on: a resume must come on the
/// same kind (the router authorized it for that kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Shell,
    Portforward,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Shell => "shell",
            Kind::Portforward => "portforward",
        }
    }
}

/// One session's record in the registry.
struct Entry {
    id: String,
    secret: String,
    user: String,
    kind: Kind,
    what: String,
    started: SystemTime,
    detached_since: Mutex<Option<SystemTime>>,
    attach: mpsc::Sender<Attach>,
    /// Ends the session before its time (its pty was taken over).
    end: tokio_util::sync::CancellationToken,
}

impl Entry {
    /// When its last connection broke, while none carries it.
    fn detached(&self) -> Option<SystemTime> {
        *self.detached_since.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_detached(&self, since: Option<SystemTime>) {
        *self.detached_since.lock().unwrap_or_else(|p| p.into_inner()) = since;
    }
}

/// A resume handed to a session's driver.
struct Attach {
    peer_received: u64,
    /// The driver's answer: the bytes it received, or why it cannot resume.
    reply: oneshot::Sender<Result<u64, ResumeError>>,
    /// The upgraded connection, once the `101` went out.
    transport: oneshot::Receiver<Transport>,
}

/// Every resumable session of this gateway.
pub struct Registry {
    settings: Settings,
    budget: Arc<Budget>,
    sessions: Mutex<HashMap<String, Arc<Entry>>>,
    reporter: Arc<Reporter>,
}

/// A session just opened: the headers for its `101`, and where its first
/// connection goes once upgraded.
pub struct Opened {
    pub id: String,
    secret: String,
    grace: Duration,
    first: oneshot::Sender<Transport>,
}

impl Opened {
    /// Adds the id and the secret to the `101`.
    pub fn add_headers(&self, headers: &mut HeaderMap) {
        headers.insert(header::ID, HeaderValue::from_str(&self.id).expect("hex"));
        headers.insert(header::SECRET, HeaderValue::from_str(&self.secret).expect("hex"));
        headers.insert(header::GRACE, HeaderValue::from(self.grace.as_secs()));
    }

    /// Hands the session its first connection.
    pub fn attach(self, transport: Transport) {
        let _ = self.first.send(transport);
    }
}

/// Whether a request asks for a resumable session.
pub fn wanted(headers: &HeaderMap) -> bool {
    headers.get(header::REQUEST).is_some_and(|v| v.as_bytes() == b"1")
}

/// Whether a request resumes a session.
pub fn is_resume(headers: &HeaderMap) -> bool {
    headers.contains_key(header::ID)
}

/// A refused resume: status and sentence.
pub type Refusal = (StatusCode, String);

impl Registry {
    pub fn new(settings: Settings, reporter: Arc<Reporter>) -> Arc<Self> {
        Arc::new(Self {
            budget: Budget::new(settings.memory_bytes),
            settings,
            sessions: Mutex::new(HashMap::new()),
            reporter,
        })
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a session carrying `local` (the SSH server's end, the
    /// forwarded connection) for `who`. Gives `local` back at the session
    /// limit, without an authenticated user or with no grace time: the
    /// caller serves the connection without resumption.
    /// With `audited`, the stream is also an audit-trail session of its
    /// own (a port-forward's; an SSH connection's channels have theirs).
    pub fn open<L>(
        self: &Arc<Self>,
        kind: Kind,
        who: &Who,
        what: String,
        local: L,
        audited: bool,
    ) -> Result<Opened, L>
    where
        L: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // No grace time: nothing to resume within.
        if who.user.is_empty() || self.settings.grace.is_zero() {
            return Err(local);
        }
        let mut sessions = self.sessions();
        if sessions.len() >= self.settings.max_sessions {
            self.reporter
                .metrics
                .resumable
                .with_label_values(&["refused_full"])
                .inc();
            tracing::warn!(
                limit = self.settings.max_sessions,
                "resumable session limit reached: opening one without resumption"
            );
            return Err(local);
        }
        let id = random_hex::<8>();
        let secret = random_hex::<32>();
        let (attach, attaches) = mpsc::channel(1);
        let entry = Arc::new(Entry {
            id: id.clone(),
            secret: secret.clone(),
            user: who.user.clone(),
            kind,
            what,
            started: SystemTime::now(),
            detached_since: Mutex::new(None),
            attach,
            end: Default::default(),
        });
        sessions.insert(id.clone(), entry.clone());
        drop(sessions);
        self.reporter.audit(&format!(
            "resumable {id} opened kind={} {} what={:?}",
            kind.as_str(),
            who.audited(),
            entry.what
        ));
        self.reporter
            .metrics
            .resumable
            .with_label_values(&["opened"])
            .inc();
        let audit = audited.then(|| {
            self.reporter
                .session(who, kind.as_str(), Some(entry.what.clone()))
        });
        let (first, first_rx) = oneshot::channel();
        let session = Session::with_budget(self.settings.replay_bytes, self.budget.clone());
        crate::spawn(
            self.clone()
                .drive(entry, local, session, attaches, first_rx, audit),
        );
        Ok(Opened {
            id,
            secret,
            grace: self.settings.grace,
            first,
        })
    }

    /// Resumes the session a request names, for `who` on a route of
    /// `kind`: checks it, has its driver stop using the old connection and
    /// say what it received, and hands it the upgraded connection after
    /// the `101`. Returns the `101`'s offset header value.
    pub async fn resume(
        &self,
        kind: Kind,
        who: &Who,
        headers: &HeaderMap,
        on_upgrade: OnUpgrade,
    ) -> Result<HeaderValue, Refusal> {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
        let (id, secret) = (text(header::ID), text(header::SECRET));
        let peer_received: u64 = text(header::OFFSET).parse().map_err(|_| {
            (
                StatusCode::BAD_REQUEST,
                format!("a resume needs {}: the bytes the client received", header::OFFSET),
            )
        })?;
        let entry = self.sessions().get(id).cloned().ok_or_else(|| {
            self.count("unknown");
            (
                StatusCode::GONE,
                format!(
                    "session {id} is not known to this container's gateway: it ended, its grace time \
                     passed, or the pod restarted"
                ),
            )
        })?;
        let refuse = |outcome: &'static str, message: String| {
            self.count(outcome);
            self.reporter.audit(&format!(
                "resumable {} resume refused ({outcome}) {}",
                entry.id,
                who.audited()
            ));
            tracing::warn!(session = %entry.id, user = %who.user, outcome, "resume refused");
            (StatusCode::FORBIDDEN, message)
        };
        if !constant_time_eq(&entry.secret, secret) {
            return Err(refuse(
                "wrong_secret",
                format!("the resume secret is not session {id}'s"),
            ));
        }
        if who.user.is_empty() || who.user != entry.user {
            return Err(refuse(
                "other_user",
                format!("session {id} belongs to another user; it is never handed to anyone else"),
            ));
        }
        if kind != entry.kind {
            return Err(refuse(
                "other_kind",
                format!(
                    "session {id} is a {} session, not a {}",
                    entry.kind.as_str(),
                    kind.as_str()
                ),
            ));
        }
        let gone = || (StatusCode::GONE, format!("session {id} ended while resuming"));
        let (reply, answer) = oneshot::channel();
        let (transport, transport_rx) = oneshot::channel();
        let attach = Attach {
            peer_received,
            reply,
            transport: transport_rx,
        };
        tokio::time::timeout(HANDOVER_TIMEOUT, entry.attach.send(attach))
            .await
            .map_err(|_| gone())?
            .map_err(|_| gone())?;
        let received = match tokio::time::timeout(HANDOVER_TIMEOUT, answer).await {
            Ok(Ok(Ok(received))) => received,
            Ok(Ok(Err(error))) => {
                self.count("unrecoverable");
                return Err((StatusCode::CONFLICT, format!("session {id}: {error}")));
            }
            _ => return Err(gone()),
        };
        crate::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await {
                let _ = transport.send(TokioIo::new(upgraded));
            }
        });
        Ok(HeaderValue::from(received))
    }

    /// The sessions `user` may see (all with `None`).
    pub fn list(&self, user: Option<&str>) -> Vec<ListedSession> {
        let mut listed: Vec<ListedSession> = self
            .sessions()
            .values()
            .filter(|e| user.is_none_or(|u| u == e.user))
            .map(|e| ListedSession {
                id: e.id.clone(),
                user: e.user.clone(),
                kind: e.kind.as_str().to_owned(),
                what: e.what.clone(),
                started: rfc3339(e.started),
                detached_since: e.detached().map(rfc3339),
            })
            .collect();
        listed.sort_by(|a, b| a.started.cmp(&b.started));
        listed
    }

    /// Whether sessions can be resumed at all (a grace time is set).
    pub fn enabled(&self) -> bool {
        !self.settings.grace.is_zero()
    }

    /// The owner and kind of session `id`, if it is known.
    pub fn owner(&self, id: &str) -> Option<(String, Kind)> {
        self.sessions().get(id).map(|e| (e.user.clone(), e.kind))
    }

    /// The ids of `user`'s sessions of `kind`, the most recently detached
    /// first, then the attached ones, the newest first.
    pub fn ids_of(&self, user: &str, kind: Kind) -> Vec<String> {
        let mut found: Vec<(Option<SystemTime>, SystemTime, String)> = self
            .sessions()
            .values()
            .filter(|e| e.user == user && e.kind == kind)
            .map(|e| (e.detached(), e.started, e.id.clone()))
            .collect();
        // `Some` sorts after `None`: reversed, detached ones come first.
        found.sort();
        found.into_iter().rev().map(|(.., id)| id).collect()
    }

    /// Ends session `id` now (what it carried was taken over by `by`).
    pub fn end(&self, id: &str, by: &str) {
        if let Some(entry) = self.sessions().get(id) {
            tracing::debug!(session = id, by, "resumable session taken over");
            entry.end.cancel();
        }
    }

    fn count(&self, outcome: &str) {
        self.reporter
            .metrics
            .resumable
            .with_label_values(&[outcome])
            .inc();
    }

    /// Carries one session from connection to connection until it is done,
    /// fails, or stays detached past the grace time.
    async fn drive<L>(
        self: Arc<Self>,
        entry: Arc<Entry>,
        mut local: L,
        mut session: Session,
        mut attaches: mpsc::Receiver<Attach>,
        first: oneshot::Receiver<Transport>,
        audit: Option<crate::report::Session>,
    ) where
        L: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let detached = self.reporter.metrics.resumable_detached.clone();
        let mut transport = tokio::time::timeout(HANDOVER_TIMEOUT, first)
            .await
            .ok()
            .and_then(Result::ok);
        let mut breaks = 0u32;
        let ended: String = loop {
            let current = match transport.take() {
                Some(current) => current,
                None => {
                    let since = SystemTime::now();
                    entry.set_detached(Some(since));
                    detached.inc();
                    let waited = tokio::select! {
                        waited = tokio::time::timeout(self.settings.grace, attaches.recv()) => waited,
                        () = entry.end.cancelled() => {
                            detached.dec();
                            break "taken over".into();
                        }
                    };
                    detached.dec();
                    match waited {
                        Err(_) => {
                            break format!(
                                "detached for the grace time ({} s)",
                                self.settings.grace.as_secs()
                            );
                        }
                        Ok(None) => break "closed".into(),
                        Ok(Some(attach)) => match self.handover(&entry, &mut session, attach).await {
                            Some(current) => {
                                let away = since.elapsed().unwrap_or_default();
                                self.audit_resumed(&entry, away);
                                current
                            }
                            None => continue,
                        },
                    }
                }
            };
            entry.set_detached(None);
            tokio::select! {
                pumped = session.pump_with(&mut local, current, self.settings.liveness) => match pumped {
                    Ok(Pumped::Done) => break "done".into(),
                    Ok(Pumped::Broken) => {
                        breaks += 1;
                        tracing::debug!(session = %entry.id, "resumable session's connection broke");
                    }
                    Err(error) => break format!("failed: {error}"),
                },
                () = entry.end.cancelled() => break "taken over".into(),
                // A resume while the old connection still looks alive (the
                // client saw it break first): the new one wins.
                Some(attach) = attaches.recv() => {
                    transport = self.handover(&entry, &mut session, attach).await;
                    if transport.is_some() {
                        self.audit_resumed(&entry, Duration::ZERO);
                    }
                }
            }
        };
        self.sessions().remove(&entry.id);
        self.count("ended");
        if let Some(audit) = audit {
            use std::sync::atomic::Ordering::Relaxed;
            audit.bytes_in.store(session.received(), Relaxed);
            audit.bytes_out.store(session.sent(), Relaxed);
            audit.set_exit(ended.clone());
        }
        self.reporter.audit(&format!(
            "resumable {} ended kind={} user={:?} how={ended:?} breaks={breaks} bytes_in={} bytes_out={} \
             duration={:.3}s",
            entry.id,
            entry.kind.as_str(),
            entry.user,
            session.received(),
            session.sent(),
            entry.started.elapsed().unwrap_or_default().as_secs_f64()
        ));
        // Dropping `local` ends the SSH connection (its processes get
        // SIGHUP) or closes the forwarded one.
    }

    /// Answers a resume: resends from the peer's offset and returns the
    /// new connection, or `None` (the resume failed; still detached).
    async fn handover(&self, entry: &Entry, session: &mut Session, attach: Attach) -> Option<Transport> {
        let resumed = session.resume(attach.peer_received).map(|()| session.received());
        let ok = resumed.is_ok();
        let _ = attach.reply.send(resumed);
        if !ok {
            return None;
        }
        match tokio::time::timeout(HANDOVER_TIMEOUT, attach.transport).await {
            Ok(Ok(transport)) => Some(transport),
            _ => {
                tracing::debug!(session = %entry.id, "a resume's upgrade did not complete");
                None
            }
        }
    }

    fn audit_resumed(&self, entry: &Entry, away: Duration) {
        self.count("resumed");
        self.reporter.audit(&format!(
            "resumable {} resumed user={:?} away={:.3}s",
            entry.id,
            entry.user,
            away.as_secs_f64()
        ));
    }
}

fn random_hex<const N: usize>() -> String {
    hex::encode(rand::random::<[u8; N]>())
}
