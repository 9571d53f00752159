//! Leader election (`reconcile::leader`) against the real API server: one
//! elector leads while another waits; a clean shutdown hands over at once
//! (the Lease is released); a crash hands over only once the Lease expires.
//!
//! Electors run on a runtime the test owns; their work records when it
//! starts and stops, and a shared counter catches two works running at
//! once. The test thread waits on those with `wait_until` deadlines.

mod common;

use common::{client, runtime};

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use hatchway_e2e::{TestNamespace, wait_until};
use hatchway_operator::reconcile::leader::{LeaderConfig, run_when_leader};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const LEASE: &str = "hatchway-operator";
const LEASE_DURATION: Duration = Duration::from_secs(3);
const RENEW_EVERY: Duration = Duration::from_millis(500);
const RETRY_EVERY: Duration = Duration::from_millis(250);
/// Fine enough not to blur the measured takeovers (those come from the
/// works' own timestamps anyway).
const POLL: Duration = Duration::from_millis(20);
/// For polls that ask the API server.
const API_POLL: Duration = Duration::from_millis(100);
const WAIT: Duration = Duration::from_secs(30);

/// Counts works running at once, across all electors of a test.
#[derive(Default)]
struct Works {
    running: AtomicUsize,
    overlapped: AtomicBool,
}

/// One replica: its election task and what its work reports.
struct Elector {
    name: &'static str,
    leading: Arc<AtomicBool>,
    shutdown: CancellationToken,
    /// When its work last started and stopped.
    started: Arc<Mutex<Option<Instant>>>,
    stopped: Arc<Mutex<Option<Instant>>>,
    task: JoinHandle<()>,
}

impl Elector {
    /// Starts replica `name` (its own client, as a real replica has).
    fn start(rt: &Runtime, ns: &TestNamespace, name: &'static str, works: &Arc<Works>) -> Result<Self> {
        let client = client(rt)?;
        let mut config = LeaderConfig::new(&ns.name, LEASE, name);
        config.lease_duration = LEASE_DURATION;
        config.renew_every = RENEW_EVERY;
        config.retry_every = RETRY_EVERY;
        let leading = Arc::new(AtomicBool::new(false));
        let shutdown = CancellationToken::new();
        let started = Arc::new(Mutex::new(None));
        let stopped = Arc::new(Mutex::new(None));
        let work = {
            let (works, started, stopped) = (works.clone(), started.clone(), stopped.clone());
            move |token: CancellationToken| {
                let (works, started, stopped) = (works.clone(), started.clone(), stopped.clone());
                async move {
                    *started.lock().unwrap() = Some(Instant::now());
                    if works.running.fetch_add(1, Ordering::SeqCst) > 0 {
                        works.overlapped.store(true, Ordering::SeqCst);
                    }
                    token.cancelled().await;
                    works.running.fetch_sub(1, Ordering::SeqCst);
                    *stopped.lock().unwrap() = Some(Instant::now());
                }
            }
        };
        let task = rt.spawn(run_when_leader(
            client,
            config,
            leading.clone(),
            shutdown.clone(),
            work,
        ));
        Ok(Elector {
            name,
            leading,
            shutdown,
            started,
            stopped,
            task,
        })
    }

    fn leading(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    fn started(&self) -> Option<Instant> {
        *self.started.lock().unwrap()
    }

    fn stopped(&self) -> Option<Instant> {
        *self.stopped.lock().unwrap()
    }

    /// Waits until this elector leads and its work runs.
    fn wait_leading(&self, timeout: Duration) -> Result<Instant> {
        wait_until(&format!("{} to lead", self.name), timeout, POLL, || {
            Ok(self.started().filter(|_| self.leading()))
        })
    }
}

/// Reads the Lease the electors of a test share.
struct Leases<'a> {
    rt: &'a Runtime,
    api: Api<Lease>,
}

impl<'a> Leases<'a> {
    fn new(rt: &'a Runtime, ns: &TestNamespace) -> Result<Self> {
        Ok(Leases {
            rt,
            api: Api::namespaced(client(rt)?, &ns.name),
        })
    }

    fn get(&self) -> Result<Lease> {
        Ok(self.rt.block_on(self.api.get(LEASE))?)
    }
}

fn holder(lease: &Lease) -> Option<&str> {
    lease.spec.as_ref()?.holder_identity.as_deref()
}

/// Waits while `leader` renews `renewals` more times, checking that
/// `follower` (running all along, retrying every 250 ms) never leads.
fn follower_stays_out(
    leases: &Leases<'_>,
    leader: &Elector,
    follower: &Elector,
    renewals: usize,
) -> Result<()> {
    let mut seen = Vec::new();
    wait_until(
        &format!("{renewals} renewals by {}", leader.name),
        WAIT,
        API_POLL,
        || {
            ensure!(
                !follower.leading() && follower.started().is_none(),
                "{} leads too",
                follower.name
            );
            let lease = leases.get()?;
            ensure!(holder(&lease) == Some(leader.name), "the Lease moved: {lease:?}");
            let renewed = lease.spec.and_then(|s| s.renew_time).context("no renewTime")?;
            if seen.last() != Some(&renewed) {
                seen.push(renewed);
            }
            Ok((seen.len() > renewals).then_some(()))
        },
    )?;
    ensure!(
        !follower.leading() && follower.started().is_none(),
        "{} leads too",
        follower.name
    );
    Ok(())
}

#[test]
fn a_released_lease_is_taken_over_at_once() -> Result<()> {
    let rt = runtime();
    let ns = TestNamespace::new("leader")?;
    let works = Arc::new(Works::default());
    let leases = Leases::new(&rt, &ns)?;

    let a = Elector::start(&rt, &ns, "a", &works)?;
    a.wait_leading(WAIT)?;
    let b = Elector::start(&rt, &ns, "b", &works)?;
    follower_stays_out(&leases, &a, &b, 3)?;
    let first = leases.get()?;
    let first = first.spec.context("no spec")?;
    ensure!(
        first.lease_transitions == Some(0),
        "created with transitions {first:?}"
    );
    ensure!(first.lease_duration_seconds == Some(3), "duration {first:?}");
    ensure!(first.acquire_time.is_some(), "no acquireTime: {first:?}");

    let asked = Instant::now();
    a.shutdown.cancel();
    let b_started = b.wait_leading(WAIT)?;
    let takeover = b_started - asked;
    eprintln!("released lease: b took over {takeover:?} after a's shutdown");
    wait_until("a's election to end", WAIT, POLL, || {
        Ok(a.task.is_finished().then_some(()))
    })?;
    ensure!(!a.leading(), "a still says it leads");
    let a_stopped = a.stopped().context("a's work never stopped")?;
    ensure!(a_stopped <= b_started, "b's work started before a's stopped");
    ensure!(!works.overlapped.load(Ordering::SeqCst), "two works ran at once");
    // Expiry alone could not hand over this fast: a renewed at most 500 ms
    // before the shutdown, so its Lease was valid for 2.5 s more at least.
    ensure!(
        takeover < Duration::from_secs(2),
        "takeover after release took {takeover:?}"
    );

    let second = leases.get()?;
    ensure!(holder(&second) == Some("b"), "holder: {second:?}");
    let second = second.spec.context("no spec")?;
    ensure!(second.lease_transitions == Some(1), "transitions: {second:?}");
    ensure!(
        second.acquire_time > first.acquire_time,
        "acquireTime not reset: {second:?}"
    );

    b.shutdown.cancel();
    wait_until("b's election to end", WAIT, POLL, || {
        Ok(b.task.is_finished().then_some(()))
    })?;
    let released = leases.get()?;
    ensure!(
        holder(&released).is_none_or(str::is_empty),
        "b did not release: {released:?}"
    );
    ns.passed();
    Ok(())
}

#[test]
fn a_crashed_leader_is_replaced_once_its_lease_expires() -> Result<()> {
    let rt = runtime();
    let ns = TestNamespace::new("leader")?;
    let works = Arc::new(Works::default());
    let leases = Leases::new(&rt, &ns)?;

    let c = Elector::start(&rt, &ns, "c", &works)?;
    c.wait_leading(WAIT)?;
    let d = Elector::start(&rt, &ns, "d", &works)?;
    follower_stays_out(&leases, &c, &d, 2)?;

    // A crash: the election task dies without releasing. (Dropping it
    // cancels c's work, as a dead process's work stops too.)
    let crashed = Instant::now();
    c.task.abort();
    wait_until("c's work to stop", WAIT, POLL, || Ok(c.stopped()))?;
    ensure!(!c.leading(), "c still says it leads");
    ensure!(
        holder(&leases.get()?) == Some("c"),
        "c's Lease changed at the crash"
    );

    let d_started = d.wait_leading(WAIT)?;
    let takeover = d_started - crashed;
    eprintln!("crashed leader: d took over {takeover:?} after c's crash (lease {LEASE_DURATION:?})");
    ensure!(!works.overlapped.load(Ordering::SeqCst), "two works ran at once");
    // c renewed at most 500 ms (plus a request) before the crash: d must
    // have waited for that renewal's expiry, and not much longer.
    ensure!(
        takeover >= LEASE_DURATION - RENEW_EVERY - Duration::from_millis(300),
        "d took over before c's Lease expired: {takeover:?}"
    );
    ensure!(
        takeover <= LEASE_DURATION + Duration::from_secs(2),
        "d took over late: {takeover:?}"
    );
    let lease = leases.get()?;
    ensure!(holder(&lease) == Some("d"), "holder: {lease:?}");
    ensure!(
        lease.spec.as_ref().and_then(|s| s.lease_transitions) == Some(1),
        "transitions: {lease:?}"
    );

    d.shutdown.cancel();
    wait_until("d's election to end", WAIT, POLL, || {
        Ok(d.task.is_finished().then_some(()))
    })?;
    ns.passed();
    Ok(())
}
