//! The reconciler's decisions, pure: what to do about a Container's pod
//! and about its `ttlSecondsAfterFinished`, from what was read. The loop
//! (`controller.rs`) reads, asks these, and does what they say.

use std::time::Duration;

use hatchway_api::crd::{Container, Phase};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::pod::is_controlled_by;
use super::status::Decision;

/// The longest wait before a finished Container's TTL is looked at again.
const TTL_RECHECK: Duration = Duration::from_secs(3600);

/// What to do about the pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodStep {
    /// A pod of that name exists and is someone else's: never adopt it.
    RefuseForeign,
    /// Create the Secret (and NetworkPolicy) and the pod.
    Create,
    /// Leave things as they are and record what is seen.
    Observe,
}

/// The pod step for `container`, given the pod found under its name and
/// the status [`Decision`] read from it. A pod is created only for a
/// Container that has neither finished nor run before: a run to completion
/// whose pod vanished mid-run is not restarted behind the user's back.
pub fn pod_step(container: &Container, pod: Option<&Pod>, decision: &Decision) -> PodStep {
    match pod {
        Some(pod) if !is_controlled_by(&pod.metadata, container) => PodStep::RefuseForeign,
        Some(_) => PodStep::Observe,
        None => {
            let ran_before = container.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running);
            if decision.phase.is_finished() || ran_before {
                PodStep::Observe
            } else {
                PodStep::Create
            }
        }
    }
}

/// What the TTL of a Container asks now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TtlStep {
    /// Not finished, or no TTL: nothing to do.
    None,
    /// Due: delete the Container.
    Delete,
    /// Look again after this long.
    RecheckIn(Duration),
}

/// The TTL step for `container` at `now`: its own
/// `ttlSecondsAfterFinished`, else `default_ttl`, counted from when the
/// workload finished (the pod's time, else the recorded one, else now).
pub fn ttl_step(
    container: &Container,
    decision: &Decision,
    default_ttl: Option<i64>,
    now: Timestamp,
) -> TtlStep {
    if !decision.phase.is_finished() {
        return TtlStep::None;
    }
    let Some(ttl) = container.spec.ttl_seconds_after_finished.or(default_ttl) else {
        return TtlStep::None;
    };
    let finished = decision
        .finished_at
        .clone()
        .or_else(|| container.status.as_ref().and_then(|s| s.finished_at.clone()))
        .map_or(now, |t| t.0);
    let expires = finished + SignedDuration::from_secs(ttl.max(0));
    if expires <= now {
        TtlStep::Delete
    } else {
        TtlStep::RecheckIn(expires.duration_since(now).unsigned_abs().min(TTL_RECHECK))
    }
}

#[cfg(test)]
mod tests {
    use hatchway_api::crd::ContainerStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
    use serde_json::json;

    use super::*;

    fn container(ttl: Option<i64>, phase: Option<Phase>) -> Container {
        let mut c: Container = serde_json::from_value(json!({
            "apiVersion": "hatchway.dev/v1alpha1",
            "kind": "Container",
            "metadata": {"name": "job", "namespace": "ns", "uid": "uid-1"},
            "spec": {"image": "busybox", "command": ["true"], "ttlSecondsAfterFinished": ttl},
        }))
        .unwrap();
        c.status = phase.map(|phase| ContainerStatus {
            phase: Some(phase),
            ..ContainerStatus::default()
        });
        c
    }

    fn pod(owner_uid: &str) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "hatchway.dev/v1alpha1".into(),
            kind: "Container".into(),
            name: "job".into(),
            uid: owner_uid.into(),
            controller: Some(true),
            ..OwnerReference::default()
        }]);
        pod
    }

    fn decision(phase: Phase, finished_at: Option<i64>) -> Decision {
        Decision {
            phase,
            reason: "Test",
            message: String::new(),
            gateway_address: None,
            started_at: None,
            finished_at: finished_at.map(|s| Time(Timestamp::from_second(s).unwrap())),
            exit_code: None,
        }
    }

    #[test]
    fn a_pod_is_made_once_and_never_someone_elses() {
        let queued = container(None, Some(Phase::Queued));
        let running = decision(Phase::Running, None);
        assert_eq!(
            pod_step(&queued, Some(&pod("other")), &running),
            PodStep::RefuseForeign
        );
        assert_eq!(pod_step(&queued, Some(&pod("uid-1")), &running), PodStep::Observe);
        assert_eq!(
            pod_step(&queued, None, &decision(Phase::Queued, None)),
            PodStep::Create
        );
        assert_eq!(
            pod_step(&container(None, None), None, &decision(Phase::Queued, None)),
            PodStep::Create
        );
        // Ran before and the pod is gone: not recreated.
        let ran = container(None, Some(Phase::Running));
        assert_eq!(
            pod_step(&ran, None, &decision(Phase::Failed, None)),
            PodStep::Observe
        );
        // Finished: never again.
        assert_eq!(
            pod_step(&queued, None, &decision(Phase::Complete, None)),
            PodStep::Observe
        );
    }

    #[test]
    fn the_ttl_counts_from_the_end_and_rechecks_at_most_hourly() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let at = |s: i64| Some(1_800_000_000 + s);
        let done = |finished| decision(Phase::Complete, finished);
        // Not finished, or no TTL anywhere.
        assert_eq!(
            ttl_step(
                &container(Some(0), None),
                &decision(Phase::Running, None),
                None,
                now
            ),
            TtlStep::None
        );
        assert_eq!(
            ttl_step(&container(None, None), &done(at(-10)), None, now),
            TtlStep::None
        );
        // Its own TTL, then the default.
        assert_eq!(
            ttl_step(&container(Some(5), None), &done(at(-10)), None, now),
            TtlStep::Delete
        );
        assert_eq!(
            ttl_step(&container(Some(60), None), &done(at(-10)), None, now),
            TtlStep::RecheckIn(Duration::from_secs(50))
        );
        assert_eq!(
            ttl_step(&container(None, None), &done(at(-10)), Some(5), now),
            TtlStep::Delete
        );
        assert_eq!(
            ttl_step(&container(Some(86_400), None), &done(at(0)), Some(5), now),
            TtlStep::RecheckIn(TTL_RECHECK)
        );
        // Without an end time it counts from now: a TTL of 0 is due at once.
        assert_eq!(
            ttl_step(&container(Some(0), None), &done(None), None, now),
            TtlStep::Delete
        );
        assert_eq!(
            ttl_step(&container(Some(30), None), &done(None), None, now),
            TtlStep::RecheckIn(Duration::from_secs(30))
        );
    }
}
