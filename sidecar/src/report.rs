//! What the sidecar reports: the audit trail in `gateway.txt` and the
//! control messages the tunnel carries to the router.
//!
//! `gateway.txt` lives in the sidecar's own audit directory, which the
//! workload cannot write (the log directory is shared with the workload,
//! which could otherwise rewrite the trail of who entered it). WebDAV
//! serves it beside the workload's logs.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use hatchway_api::control::ControlMessage;
use hatchway_api::pod::log_file;
use tokio::sync::{broadcast, watch};

use crate::metrics::Metrics;

/// Shared by every part of the gateway that has something to report.
pub struct Reporter {
    /// Reports for the tunnel's control stream; lagging receivers lose the
    /// oldest (the tunnel resends the current state on reconnect).
    events: broadcast::Sender<ControlMessage>,
    /// The listening ports now, so a new tunnel can send the current set.
    ports: watch::Sender<Vec<u16>>,
    /// True once any interactive session started, resent on reconnect.
    session_started: watch::Sender<bool>,
    /// The workload's exit code once it ended, resent on reconnect.
    exit_code: watch::Sender<Option<i32>>,
    /// `gateway.txt`, opened for append; `None` if it cannot be written (the
    /// gateway keeps serving and says so in its log once).
    audit: Mutex<Option<File>>,
    /// Session ids, unique within this sidecar's life.
    next_session: AtomicU64,
    /// The counters sessions update.
    pub metrics: Metrics,
}

impl Reporter {
    /// Opens (creating) `gateway.txt` in `audit_dir`.
    pub fn new(audit_dir: &Path, metrics: Metrics) -> Arc<Self> {
        let audit = match OpenOptions::new()
            .create(true)
            .append(true)
            .open(audit_dir.join(log_file::AUDIT))
        {
            Ok(file) => Some(file),
            Err(error) => {
                tracing::error!(%error, dir = %audit_dir.display(), "cannot open the audit trail; sessions will not be recorded in gateway.txt");
                None
            }
        };
        Arc::new(Self {
            events: broadcast::channel(256).0,
            ports: watch::channel(Vec::new()).0,
            session_started: watch::channel(false).0,
            exit_code: watch::channel(None).0,
            audit: Mutex::new(audit),
            next_session: AtomicU64::new(1),
            metrics,
        })
    }

    /// Subscribes to reports (the tunnel's control stream).
    pub fn subscribe(&self) -> broadcast::Receiver<ControlMessage> {
        self.events.subscribe()
    }

    /// The current state, as the messages a fresh tunnel sends first.
    pub fn current_state(&self) -> Vec<ControlMessage> {
        let mut state = vec![ControlMessage::ListeningPorts {
            ports: self.ports.borrow().clone(),
        }];
        if *self.session_started.borrow() {
            // Re-announce that the run is no longer pristine.
            state.push(ControlMessage::SessionStarted {
                session_id: 0,
                kind: "earlier".into(),
                user: String::new(),
                request_id: String::new(),
                command: None,
            });
        }
        if let Some(exit_code) = *self.exit_code.borrow() {
            state.push(ControlMessage::WorkloadExited { exit_code });
        }
        state
    }

    /// Records the workload's exit code, reporting it the first time.
    pub fn set_exit_code(&self, code: i32) {
        if self
            .exit_code
            .send_if_modified(|now| now.replace(code) != Some(code))
        {
            self.audit(&format!("workload exited with code {code}"));
            self.send(ControlMessage::WorkloadExited { exit_code: code });
        }
    }

    /// Watches the listening ports.
    pub fn ports(&self) -> watch::Receiver<Vec<u16>> {
        self.ports.subscribe()
    }

    /// Records a new set of listening ports (sorted), reporting it if it
    /// changed.
    pub fn set_ports(&self, ports: Vec<u16>) {
        self.metrics.listening_ports.set(ports.len() as i64);
        if self.ports.send_if_modified(|now| {
            let changed = *now != ports;
            *now = ports.clone();
            changed
        }) {
            let _ = self.events.send(ControlMessage::ListeningPorts { ports });
        }
    }

    /// Sends a report as is (e.g. the workload's exit code).
    pub fn send(&self, message: ControlMessage) {
        let _ = self.events.send(message);
    }

    /// Writes one line to `gateway.txt`.
    pub fn audit(&self, line: &str) {
        let mut audit = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(file) = audit.as_mut()
            && let Err(error) = writeln!(file, "{} {line}", rfc3339(SystemTime::now()))
        {
            tracing::warn!(%error, "writing gateway.txt");
        }
    }

    /// Starts an interactive session: audits it, counts it, reports it. The
    /// returned guard ends it when dropped.
    pub fn session(self: &Arc<Self>, who: &Who, kind: &str, command: Option<String>) -> Session {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let shown = command
            .as_deref()
            .map(|c| format!(" command={c:?}"))
            .unwrap_or_default();
        self.audit(&format!(
            "session {id} started kind={kind} {}{shown}",
            who.audited()
        ));
        self.metrics.sessions.with_label_values(&[kind]).inc();
        self.metrics.sessions_active.with_label_values(&[kind]).inc();
        self.session_started.send_replace(true);
        self.send(ControlMessage::SessionStarted {
            session_id: id,
            kind: kind.to_owned(),
            user: who.user.clone(),
            request_id: who.request_id.clone(),
            command,
        });
        Session {
            id,
            kind: kind.to_owned(),
            started: Instant::now(),
            bytes_in: Arc::new(AtomicU64::new(0)),
            bytes_out: Arc::new(AtomicU64::new(0)),
            exit: Mutex::new(None),
            reporter: self.clone(),
        }
    }
}

/// Who opened a session, as the router said (informational: the proof
/// shows the router sent it).
#[derive(Clone, Debug, Default)]
pub struct Who {
    /// The authenticated user name.
    pub user: String,
    /// The router's request id.
    pub request_id: String,
    /// The router replica that sent the request (its pod name).
    pub replica: String,
    /// The gateway route asked for: method and path, no query.
    pub route: String,
}

impl Who {
    /// `user=… request=… replica=… route=…` for an audit line.
    pub fn audited(&self) -> String {
        format!(
            "user={:?} request={:?} replica={:?} route={:?}",
            self.user, self.request_id, self.replica, self.route
        )
    }
}

/// An open interactive session; dropping it records its end.
pub struct Session {
    id: u64,
    kind: String,
    started: Instant,
    /// Bytes from the user into the container.
    pub bytes_in: Arc<AtomicU64>,
    /// Bytes from the container to the user.
    pub bytes_out: Arc<AtomicU64>,
    exit: Mutex<Option<String>>,
    reporter: Arc<Reporter>,
}

impl Session {
    /// Its id in `gateway.txt`.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Records how the session's process ended, for the end line.
    pub fn set_exit(&self, how: impl Into<String>) {
        *self.exit.lock().unwrap_or_else(|p| p.into_inner()) = Some(how.into());
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let (bytes_in, bytes_out) = (
            self.bytes_in.load(Ordering::Relaxed),
            self.bytes_out.load(Ordering::Relaxed),
        );
        let duration = self.started.elapsed();
        let exit = self.exit.lock().unwrap_or_else(|p| p.into_inner()).take();
        let exit = exit.map(|e| format!(" exit={e}")).unwrap_or_default();
        self.reporter.audit(&format!(
            "session {} ended kind={} bytes_in={bytes_in} bytes_out={bytes_out} duration={:.3}s{exit}",
            self.id,
            self.kind,
            duration.as_secs_f64()
        ));
        let metrics = &self.reporter.metrics;
        metrics.sessions_active.with_label_values(&[&self.kind]).dec();
        metrics.bytes.with_label_values(&["in"]).inc_by(bytes_in);
        metrics.bytes.with_label_values(&["out"]).inc_by(bytes_out);
        self.reporter.send(ControlMessage::SessionEnded {
            session_id: self.id,
            bytes_in,
            bytes_out,
            duration_ms: duration.as_millis() as u64,
        });
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` in UTC.
pub fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        ))
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_439_229_123);
        assert_eq!(rfc3339(t), "2026-11-23T13:07:09.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn a_session_is_audited_and_reported_from_start_to_end() {
        let dir = tempfile::tempdir().unwrap();
        let reporter = Reporter::new(dir.path(), Metrics::new());
        let mut events = reporter.subscribe();
        let who = Who {
            user: "alice".into(),
            request_id: "r-9".into(),
            replica: "hatchway-7f9c-x2".into(),
            route: "POST /ssh".into(),
        };
        {
            let session = reporter.session(&who, "exec", Some("ls -l".into()));
            session.bytes_in.fetch_add(5, Ordering::Relaxed);
            session.set_exit("0");
        }
        let trail = std::fs::read_to_string(dir.path().join(log_file::AUDIT)).unwrap();
        let lines: Vec<_> = trail.lines().collect();
        assert_eq!(lines.len(), 2, "{trail}");
        assert!(
            lines[0].ends_with(
                r#"session 1 started kind=exec user="alice" request="r-9" replica="hatchway-7f9c-x2" route="POST /ssh" command="ls -l""#
            ),
            "{trail}"
        );
        assert!(
            lines[1].contains("session 1 ended kind=exec bytes_in=5 bytes_out=0"),
            "{trail}"
        );
        assert!(lines[1].ends_with("exit=0"), "{trail}");
        assert!(matches!(
            events.try_recv().unwrap(),
            ControlMessage::SessionStarted { session_id: 1, .. }
        ));
        assert!(matches!(
            events.try_recv().unwrap(),
            ControlMessage::SessionEnded {
                session_id: 1,
                bytes_in: 5,
                ..
            }
        ));
    }

    #[test]
    fn ports_are_reported_only_when_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let reporter = Reporter::new(dir.path(), Metrics::new());
        let mut events = reporter.subscribe();
        reporter.set_ports(vec![80]);
        reporter.set_ports(vec![80]);
        reporter.set_ports(vec![80, 443]);
        assert_eq!(
            events.try_recv().unwrap(),
            ControlMessage::ListeningPorts { ports: vec![80] }
        );
        assert_eq!(
            events.try_recv().unwrap(),
            ControlMessage::ListeningPorts { ports: vec![80, 443] }
        );
        assert!(events.try_recv().is_err());
    }
}
