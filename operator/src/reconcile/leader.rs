//! Leader election on a `coordination.k8s.io/v1` Lease: every operator
//! replica serves the router, but only one reconciles, so two replicas never
//! fight over the same pods and status.
//!
//! The protocol is the usual one (client-go's `leaderelection`): the Lease
//! names its holder and when it last renewed; a holder renews well within
//! `leaseDurationSeconds`; anyone may take the Lease over once
//! `renewTime + leaseDurationSeconds` has passed. Every write is a `replace`
//! carrying the `resourceVersion` that was read, so of two replicas racing
//! for the same Lease exactly one wins and the other gets a 409 Conflict.
//!
//! Expiry compares the holder's `renewTime` with the local clock, so it
//! assumes the replicas' clocks roughly agree (NTP); the holder stops its
//! work one renew period before its own Lease would expire to leave room for
//! skew and for the work to wind down.
//!
//! Entry point: [`run_when_leader`].

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::PostParams;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

/// Where the Lease lives, who we are and how eagerly we hold it.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    /// Namespace of the Lease (the operator's own).
    pub namespace: String,
    /// Name of the Lease; every replica of one operator uses the same.
    pub lease_name: String,
    /// This replica's identity, unique among the replicas (the pod name).
    pub identity: String,
    /// How long a Lease stays valid after its last renewal: the longest
    /// the cluster goes without a reconciler after a leader crashes.
    pub lease_duration: Duration,
    /// How often the leader renews. Must be well below `lease_duration`:
    /// the leader gives up once less than one renew period is left.
    pub renew_every: Duration,
    /// How often a follower checks whether the Lease became free.
    pub retry_every: Duration,
}

impl LeaderConfig {
    /// A config with the defaults: a 15 s Lease renewed every 2 s, checked
    /// every 2 s by followers (client-go's defaults, roughly).
    pub fn new(
        namespace: impl Into<String>,
        lease_name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        LeaderConfig {
            namespace: namespace.into(),
            lease_name: lease_name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(2),
            retry_every: Duration::from_secs(2),
        }
    }

    /// `leaseDurationSeconds` as written to the Lease: whole seconds,
    /// rounded up so others never consider us expired before we do.
    fn lease_duration_seconds(&self) -> i32 {
        let secs = self.lease_duration.as_secs() + u64::from(self.lease_duration.subsec_nanos() > 0);
        i32::try_from(secs.max(1)).unwrap_or(i32::MAX)
    }

    /// How long after a successful renewal we still count as leader: one
    /// renew period short of the Lease's expiry, so the work has stopped
    /// before anyone else may start it.
    fn renew_deadline(&self) -> Duration {
        self.lease_duration.saturating_sub(self.renew_every)
    }
}

/// Runs `work` on this replica only while it holds the Lease, until
/// `shutdown` is cancelled.
///
/// Each time leadership is won, `work` is called with a fresh token and its
/// future spawned; the token is cancelled when leadership is lost (a
/// conflicting write, the Lease deleted, or no successful renewal for
/// `lease_duration - renew_every`), on `shutdown`, or if this future is
/// dropped. The work is awaited before leadership is given up or sought
/// again, so it must return soon after its token is cancelled. If the work
/// returns on its own, the Lease is released and sought again after
/// `retry_every`.
///
/// On `shutdown` while leading, the Lease is released (holder cleared) once
/// the work has returned, so another replica takes over at its next retry
/// instead of after the Lease expires.
///
/// `leading` is true exactly while this replica leads (for the
/// `hatchway_operator_leader` metric and readiness): the caller keeps a
/// clone of the `Arc` and reads it.
pub async fn run_when_leader<F, Fut>(
    client: kube::Client,
    config: LeaderConfig,
    leading: Arc<AtomicBool>,
    shutdown: CancellationToken,
    mut work: F,
) where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let elector = Elector { api, config, leading };
    while !shutdown.is_cancelled() {
        match elector.try_acquire().await {
            Ok(Some((lease, sent))) => {
                let end = elector.lead(lease, sent, &shutdown, &mut work).await;
                if end == End::Shutdown {
                    break;
                }
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(lease = %elector.config.lease_name, %error, "cannot acquire the Lease")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = sleep(elector.config.retry_every) => {}
        }
    }
}

/// What [`decide`] says to do about the Lease.
#[derive(Clone, Debug, PartialEq)]
enum Decision {
    /// There is no Lease: create it, holding it.
    Create,
    /// The Lease already names us (we restarted, or lost it only by a
    /// renewal deadline): renew it, with no transition.
    Keep,
    /// The Lease is free (released) or expired: take it over, counting a
    /// transition.
    TakeOver,
    /// Another replica holds a valid Lease until `expires`.
    Wait { holder: String, expires: Timestamp },
}

/// May `me` take `lease` at `now`? `default_duration` stands in for a
/// missing `leaseDurationSeconds`. A holder with neither `renewTime` nor
/// `acquireTime` proves no liveness, so its Lease counts as expired.
fn decide(lease: Option<&Lease>, me: &str, now: Timestamp, default_duration: Duration) -> Decision {
    let Some(lease) = lease else {
        return Decision::Create;
    };
    let spec = lease.spec.as_ref();
    let holder = spec
        .and_then(|s| s.holder_identity.as_deref())
        .unwrap_or_default();
    if holder.is_empty() {
        return Decision::TakeOver;
    }
    if holder == me {
        return Decision::Keep;
    }
    // The holder's own duration wins: that is the promise it renews by.
    let duration = spec
        .and_then(|s| s.lease_duration_seconds)
        .map(|secs| SignedDuration::from_secs(secs.into()))
        .unwrap_or_else(|| SignedDuration::try_from(default_duration).unwrap_or(SignedDuration::MAX));
    let last = spec.and_then(|s| s.renew_time.as_ref().or(s.acquire_time.as_ref()));
    let Some(MicroTime(last)) = last else {
        return Decision::TakeOver;
    };
    let expires = last.saturating_add(duration).unwrap_or(Timestamp::MAX);
    if expires <= now {
        Decision::TakeOver
    } else {
        Decision::Wait {
            holder: holder.to_owned(),
            expires,
        }
    }
}

/// The Lease as written to hold it after `decision` (not `Wait`): our
/// identity and duration, renewed `now`; acquired `now` and one more
/// transition when taken from someone else or from nobody.
fn claim(lease: Option<&Lease>, decision: &Decision, config: &LeaderConfig, now: Timestamp) -> Lease {
    let mut lease = lease.cloned().unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(config.lease_name.clone()),
            namespace: Some(config.namespace.clone()),
            ..ObjectMeta::default()
        },
        spec: None,
    });
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    match decision {
        Decision::Create => {
            spec.lease_transitions = Some(0);
            spec.acquire_time = Some(MicroTime(now));
        }
        Decision::TakeOver => {
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
            spec.acquire_time = Some(MicroTime(now));
        }
        Decision::Keep | Decision::Wait { .. } => {
            spec.acquire_time.get_or_insert(MicroTime(now));
        }
    }
    spec.holder_identity = Some(config.identity.clone());
    spec.lease_duration_seconds = Some(config.lease_duration_seconds());
    spec.renew_time = Some(MicroTime(now));
    lease
}

/// How a term of leadership ended.
#[derive(Debug, PartialEq)]
enum End {
    /// `shutdown` was cancelled; the Lease was released.
    Shutdown,
    /// Lost (conflict, deleted, renew deadline passed) or the work
    /// returned by itself; seek it again.
    Lost,
}

/// Sets the shared flag while leading and clears it however leading ends,
/// including when the future is dropped mid-term.
struct LeadingFlag(Arc<AtomicBool>);

impl LeadingFlag {
    fn raise(flag: &Arc<AtomicBool>) -> Self {
        flag.store(true, Ordering::SeqCst);
        LeadingFlag(flag.clone())
    }
}

impl Drop for LeadingFlag {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

struct Elector {
    api: Api<Lease>,
    config: LeaderConfig,
    leading: Arc<AtomicBool>,
}

impl Elector {
    /// One attempt: the Lease we now hold and when the write that won it
    /// was sent, or `None` if someone else holds it or won the race for it.
    async fn try_acquire(&self) -> anyhow::Result<Option<(Lease, Instant)>> {
        let config = &self.config;
        // Bounded: a request that hangs longer than a Lease lives is moot.
        let current = timeout(config.lease_duration, self.api.get_opt(&config.lease_name)).await??;
        // The instant that goes with the renewTime we write: our deadline
        // runs from it, as others' expiry runs from the renewTime.
        let (now, sent) = (Timestamp::now(), Instant::now());
        let decision = decide(current.as_ref(), &config.identity, now, config.lease_duration);
        if let Decision::Wait { holder, expires } = &decision {
            tracing::debug!(lease = %config.lease_name, %holder, %expires, "another replica leads");
            return Ok(None);
        }
        let wanted = claim(current.as_ref(), &decision, config, now);
        let written = match decision {
            Decision::Create => {
                timeout(
                    config.lease_duration,
                    self.api.create(&PostParams::default(), &wanted),
                )
                .await?
            }
            _ => {
                timeout(
                    config.lease_duration,
                    self.api
                        .replace(&config.lease_name, &PostParams::default(), &wanted),
                )
                .await?
            }
        };
        match written {
            Ok(lease) => Ok(Some((lease, sent))),
            // Another replica wrote first (created it, or took it over from
            // the version we read): it leads.
            Err(kube::Error::Api(status)) if status.is_conflict() || status.is_already_exists() => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// One term: runs the work and renews until leadership ends.
    async fn lead<F, Fut>(
        &self,
        mut lease: Lease,
        sent: Instant,
        shutdown: &CancellationToken,
        work: &mut F,
    ) -> End
    where
        F: FnMut(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let config = &self.config;
        let flag = LeadingFlag::raise(&self.leading);
        let transitions = lease.spec.as_ref().and_then(|s| s.lease_transitions).unwrap_or(0);
        tracing::info!(lease = %config.lease_name, identity = %config.identity, transitions, "became leader");

        let token = shutdown.child_token();
        // If this future is dropped mid-term the work must stop too: a
        // replica that no longer renews must not keep reconciling.
        let _stop_on_drop = token.clone().drop_guard();
        let mut handle = tokio::spawn(work(token.clone()));

        // The write that won the Lease counts as the first renewal.
        let mut valid_until = sent + config.renew_deadline();
        let end = loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break End::Shutdown,
                result = &mut handle => {
                    tracing::warn!(lease = %config.lease_name, "the work returned while leading; releasing the Lease");
                    log_work_end(result);
                    token.cancel();
                    drop(flag);
                    self.release().await;
                    return End::Lost;
                }
                _ = sleep_until(valid_until.min(Instant::now() + config.renew_every)) => {}
            }
            let sent = Instant::now();
            if sent >= valid_until {
                break self.lost("no renewal before the deadline");
            }
            let renewed = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break End::Shutdown,
                renewed = timeout(valid_until - sent, self.renew(&lease)) => renewed,
            };
            match renewed {
                Ok(Ok(next)) => {
                    lease = next;
                    valid_until = sent + config.renew_deadline();
                }
                // Someone else wrote the Lease (took it over) or deleted it.
                Ok(Err(kube::Error::Api(status))) if status.is_conflict() || status.is_not_found() => {
                    break self.lost(&format!("renewal refused: {}", status.message));
                }
                Ok(Err(error)) => {
                    tracing::warn!(lease = %config.lease_name, %error, "cannot renew the Lease; retrying");
                }
                Err(_) => break self.lost("renewal timed out at the deadline"),
            }
        };

        drop(flag);
        token.cancel();
        log_work_end(handle.await);
        if end == End::Shutdown {
            self.release().await;
        }
        end
    }

    fn lost(&self, reason: &str) -> End {
        self.leading.store(false, Ordering::SeqCst);
        tracing::info!(lease = %self.config.lease_name, identity = %self.config.identity, reason, "lost leadership");
        End::Lost
    }

    /// Writes a fresh `renewTime` over exactly the version we hold.
    async fn renew(&self, lease: &Lease) -> kube::Result<Lease> {
        let mut next = lease.clone();
        let spec = next.spec.get_or_insert_with(LeaseSpec::default);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.api
            .replace(&self.config.lease_name, &PostParams::default(), &next)
            .await
    }

    /// Clears the holder so the next replica need not wait for expiry.
    /// Reads first: a renewal abandoned at shutdown may have moved the
    /// version, and if the Lease no longer names us there is nothing to
    /// give up. Best effort: on failure the Lease simply expires.
    async fn release(&self) {
        let config = &self.config;
        let attempt = async {
            // A conflict here means the Lease moved between read and
            // write: read again (a few times, then let it expire).
            for _ in 0..3 {
                let Some(mut lease) = self.api.get_opt(&config.lease_name).await? else {
                    return Ok(false);
                };
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
                    return Ok(false);
                }
                spec.holder_identity = None;
                spec.renew_time = Some(MicroTime(Timestamp::now()));
                // As client-go does: any elector that ignores an empty
                // holder still sees the Lease expire at once.
                spec.lease_duration_seconds = Some(1);
                match self
                    .api
                    .replace(&config.lease_name, &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => return Ok(true),
                    Err(kube::Error::Api(status)) if status.is_conflict() => continue,
                    Err(error) => return Err(error),
                }
            }
            Ok(false)
        };
        // Past the Lease's duration releasing gains nothing: it expired.
        match timeout(config.lease_duration, attempt).await {
            Ok(Ok(true)) => {
                tracing::info!(lease = %config.lease_name, identity = %config.identity, "released")
            }
            Ok(Ok(false)) => tracing::info!(lease = %config.lease_name, "not released: no longer ours"),
            Ok(Err(error)) => tracing::warn!(lease = %config.lease_name, %error, "cannot release the Lease"),
            Err(_) => tracing::warn!(lease = %config.lease_name, "releasing the Lease timed out"),
        }
    }
}

/// Logs a work task that did not return normally.
fn log_work_end(result: Result<(), tokio::task::JoinError>) {
    match result {
        Ok(()) => {}
        Err(error) if error.is_panic() => tracing::error!(%error, "the work panicked"),
        Err(error) => tracing::warn!(%error, "the work was cancelled"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "me";
    const DURATION: Duration = Duration::from_secs(15);

    fn now() -> Timestamp {
        "2025-06-01T12:00:00Z".parse().unwrap()
    }

    fn ago(secs: i64) -> Option<MicroTime> {
        Some(MicroTime(now() - SignedDuration::from_secs(secs)))
    }

    fn lease(holder: Option<&str>, renewed: Option<MicroTime>, secs: Option<i32>) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                renew_time: renewed,
                lease_duration_seconds: secs,
                lease_transitions: Some(4),
                acquire_time: ago(100),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn a_missing_lease_is_created() {
        assert_eq!(decide(None, ME, now(), DURATION), Decision::Create);
    }

    #[test]
    fn a_released_lease_is_free() {
        let empty = lease(Some(""), ago(0), Some(15));
        assert_eq!(decide(Some(&empty), ME, now(), DURATION), Decision::TakeOver);
        let none = lease(None, ago(0), Some(15));
        assert_eq!(decide(Some(&none), ME, now(), DURATION), Decision::TakeOver);
        let no_spec = Lease::default();
        assert_eq!(decide(Some(&no_spec), ME, now(), DURATION), Decision::TakeOver);
    }

    #[test]
    fn an_expired_lease_is_taken_over() {
        let expired = lease(Some("other"), ago(15), Some(15));
        assert_eq!(decide(Some(&expired), ME, now(), DURATION), Decision::TakeOver);
    }

    #[test]
    fn a_valid_lease_of_another_is_waited_for() {
        let held = lease(Some("other"), ago(14), Some(15));
        assert_eq!(
            decide(Some(&held), ME, now(), DURATION),
            Decision::Wait {
                holder: "other".into(),
                expires: now() + SignedDuration::from_secs(1)
            }
        );
    }

    #[test]
    fn the_holders_duration_wins_over_ours() {
        // 20 s ago with the holder's 30 s: still valid though ours is 15 s.
        let held = lease(Some("other"), ago(20), Some(30));
        assert!(matches!(
            decide(Some(&held), ME, now(), DURATION),
            Decision::Wait { .. }
        ));
        // Without one, ours applies.
        let held = lease(Some("other"), ago(20), None);
        assert_eq!(decide(Some(&held), ME, now(), DURATION), Decision::TakeOver);
        let held = lease(Some("other"), ago(10), None);
        assert!(matches!(
            decide(Some(&held), ME, now(), DURATION),
            Decision::Wait { .. }
        ));
    }

    #[test]
    fn our_own_lease_is_kept_even_when_expired() {
        let mine = lease(Some(ME), ago(1), Some(15));
        assert_eq!(decide(Some(&mine), ME, now(), DURATION), Decision::Keep);
        let stale = lease(Some(ME), ago(1000), Some(15));
        assert_eq!(decide(Some(&stale), ME, now(), DURATION), Decision::Keep);
    }

    #[test]
    fn missing_times_fall_back_to_acquire_time_then_count_as_expired() {
        // No renewTime: acquireTime (100 s ago) is the last sign of life.
        let held = lease(Some("other"), None, Some(15));
        assert_eq!(decide(Some(&held), ME, now(), DURATION), Decision::TakeOver);
        let mut recent = lease(Some("other"), None, Some(15));
        recent.spec.as_mut().unwrap().acquire_time = ago(5);
        assert!(matches!(
            decide(Some(&recent), ME, now(), DURATION),
            Decision::Wait { .. }
        ));
        // Neither: nothing proves the holder alive.
        let mut bare = lease(Some("other"), None, Some(15));
        bare.spec.as_mut().unwrap().acquire_time = None;
        assert_eq!(decide(Some(&bare), ME, now(), DURATION), Decision::TakeOver);
    }

    #[test]
    fn claiming_sets_holder_times_and_transitions() {
        let mut config = LeaderConfig::new("ns", "lease", ME);
        config.lease_duration = Duration::from_millis(2500);

        let created = claim(None, &Decision::Create, &config, now());
        assert_eq!(created.metadata.name.as_deref(), Some("lease"));
        assert_eq!(created.metadata.namespace.as_deref(), Some("ns"));
        let spec = created.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some(ME));
        assert_eq!(spec.lease_transitions, Some(0));
        assert_eq!(spec.acquire_time, Some(MicroTime(now())));
        assert_eq!(spec.renew_time, Some(MicroTime(now())));
        // Rounded up: others must not expire us before we give up.
        assert_eq!(spec.lease_duration_seconds, Some(3));

        let theirs = lease(Some("other"), ago(30), Some(15));
        let spec = claim(Some(&theirs), &Decision::TakeOver, &config, now())
            .spec
            .unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some(ME));
        assert_eq!(spec.lease_transitions, Some(5));
        assert_eq!(spec.acquire_time, Some(MicroTime(now())));

        let mine = lease(Some(ME), ago(30), Some(15));
        let spec = claim(Some(&mine), &Decision::Keep, &config, now()).spec.unwrap();
        assert_eq!(spec.lease_transitions, Some(4));
        assert_eq!(spec.acquire_time, ago(100));
        assert_eq!(spec.renew_time, Some(MicroTime(now())));
    }

    #[test]
    fn defaults_and_deadline() {
        let config = LeaderConfig::new("ns", "lease", ME);
        assert_eq!(config.lease_duration, Duration::from_secs(15));
        assert_eq!(config.renew_every, Duration::from_secs(2));
        assert_eq!(config.retry_every, Duration::from_secs(2));
        assert_eq!(config.lease_duration_seconds(), 15);
        assert_eq!(config.renew_deadline(), Duration::from_secs(13));
    }
}
