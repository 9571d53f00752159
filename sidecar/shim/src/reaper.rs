//! The one place that waits for children.
//!
//! As PID 1 (or a child subreaper) the shim inherits every orphan in the
//! container and must reap them, which means `waitpid(-1)`: that would
//! steal the status of any child someone else is waiting for. So every
//! child the shim starts is spawned *through* the reaper, which records its
//! pid with a waiter before the reaper can possibly reap it (the same lock
//! covers both), and delivers each status to its waiter. Orphans are reaped
//! and forgotten.
//!
//! Nothing else in the shim process may wait for children (no
//! `tokio::process`, no `Child::wait`).

use std::collections::HashMap;
use std::io;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::protocol::ExitStatus;
use crate::sys::{self, Ended};

/// Reaps children and routes their statuses to whoever spawned them.
#[derive(Debug, Default)]
pub(crate) struct Reaper {
    /// pid -> the waiter for that child's status. Held while spawning, so a
    /// child cannot be reaped before its waiter is registered.
    waiters: Mutex<HashMap<i32, oneshot::Sender<ExitStatus>>>,
}

impl Reaper {
    /// A reaper with a task that reaps on every SIGCHLD. Call it inside a
    /// tokio runtime before spawning anything, so no SIGCHLD is missed.
    pub fn start() -> io::Result<Arc<Self>> {
        let mut sigchld = signal(SignalKind::child())?;
        let reaper = Arc::new(Self::default());
        let task_reaper = Arc::clone(&reaper);
        tokio::spawn(async move {
            loop {
                // Reap first: zombies may predate the handler, and one
                // SIGCHLD can stand for many exits.
                task_reaper.reap();
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(reaper)
    }

    /// Spawns `cmd` and returns the child with a receiver for its status.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<(Child, oneshot::Receiver<ExitStatus>)> {
        let mut waiters = self.lock();
        // While `waiters` is held, `reap` cannot run, so even a child that
        // exits at once stays a zombie until its waiter is in the map. (If
        // exec fails, std reaps the child itself, also under this lock.)
        let child = cmd.spawn()?;
        let (tx, rx) = oneshot::channel();
        waiters.insert(child.id() as i32, tx);
        Ok((child, rx))
    }

    /// Reaps every child that has ended; returns how many.
    pub fn reap(&self) -> usize {
        let mut waiters = self.lock();
        let mut reaped = 0;
        loop {
            match sys::reap_one() {
                Ok(Some((pid, ended))) => {
                    reaped += 1;
                    let status = match ended {
                        Ended::Exited(code) => ExitStatus::exited(code),
                        Ended::Signaled(signal) => ExitStatus::signaled(signal),
                    };
                    match waiters.remove(&pid) {
                        // The receiver may be gone (a session whose client
                        // left): the status simply has nobody to go to.
                        Some(waiter) => drop(waiter.send(status)),
                        None => debug!(pid, ?status, "reaped an orphan"),
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    warn!(%error, "waitpid failed");
                    break;
                }
            }
        }
        reaped
    }

    /// The pids of spawned children not reaped yet.
    pub fn live_pids(&self) -> Vec<i32> {
        self.lock().keys().copied().collect()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i32, oneshot::Sender<ExitStatus>>> {
        // A panic while holding the lock leaves the map consistent (inserts
        // and removes are single calls), so poisoning is ignored.
        self.waiters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Makes this process adopt orphaned descendants, as PID 1 does. Harmless
/// when the shim *is* PID 1, and what makes the shim testable when it isn't.
pub(crate) fn become_subreaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)?;
    Ok(())
}

#[cfg(test)]
mod tests;
