//! These tests call `waitpid(-1)` in the test process, which would steal
//! the children of any other test running in the same process: they take a
//! lock so they stay correct under `cargo test` too (nextest runs each test
//! in its own process anyway). No other unit test spawns processes.

use std::process::Command;
use std::time::{Duration, Instant};

use super::*;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const DEADLINE: Duration = Duration::from_secs(10);

/// (parent pid, state letter) of `pid`, from /proc/PID/stat.
fn ppid_and_state(pid: i32) -> Option<(i32, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain them.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn status_of(rx: oneshot::Receiver<ExitStatus>) -> ExitStatus {
    tokio::time::timeout(DEADLINE, rx)
        .await
        .expect("the child's status arrives in time")
        .expect("the reaper keeps the waiter")
}

#[tokio::test]
async fn orphans_are_adopted_and_reaped_without_stealing_the_spawned_childs_status() {
    let _serial = SERIAL.lock().await;
    become_subreaper().unwrap();
    let reaper = Reaper::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("orphan.pid");
    let script = format!(
        "(sleep 30 & echo $! > {}.tmp; mv {0}.tmp {0}); exit 5",
        pidfile.display()
    );
    let (_child, rx) = reaper.spawn(Command::new("sh").args(["-c", &script])).unwrap();

    assert_eq!(status_of(rx).await, ExitStatus::exited(5));

    let orphan: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    let me = std::process::id() as i32;
    wait_until("the orphan is adopted by this subreaper", || {
        ppid_and_state(orphan).is_some_and(|(ppid, _)| ppid == me)
    })
    .await;
    sys::kill(orphan, libc::SIGKILL).unwrap();
    // A zombie keeps its /proc entry: it disappears only once reaped.
    wait_until("the killed orphan is reaped", || ppid_and_state(orphan).is_none()).await;
    assert!(reaper.live_pids().is_empty());
}

#[tokio::test]
async fn statuses_of_many_children_ending_together_reach_the_right_waiters() {
    let _serial = SERIAL.lock().await;
    let reaper = Reaper::start().unwrap();
    let mut receivers = Vec::new();
    for code in 0..20 {
        let (_child, rx) = reaper
            .spawn(Command::new("sh").args(["-c", &format!("exit {code}")]))
            .unwrap();
        receivers.push((code, rx));
    }
    for (code, rx) in receivers {
        assert_eq!(status_of(rx).await, ExitStatus::exited(code));
    }
}

#[tokio::test]
async fn a_child_killed_by_a_signal_reports_the_signal() {
    let _serial = SERIAL.lock().await;
    let reaper = Reaper::start().unwrap();
    let (_child, rx) = reaper
        .spawn(Command::new("sh").args(["-c", "kill -9 $$"]))
        .unwrap();
    let status = status_of(rx).await;
    assert_eq!(status, ExitStatus::signaled(9));
    assert_eq!(status.exit_code(), 137);
}

#[tokio::test]
async fn a_real_time_signal_status_is_not_lost() {
    let _serial = SERIAL.lock().await;
    let reaper = Reaper::start().unwrap();
    let (child, rx) = reaper.spawn(Command::new("sleep").arg("30")).unwrap();
    let rt_signal = libc::SIGRTMIN() + 6;
    sys::kill(child.id() as i32, rt_signal).unwrap();
    assert_eq!(status_of(rx).await, ExitStatus::signaled(rt_signal));
}
