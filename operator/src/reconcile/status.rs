//! The status a Container should have, from its pod (DESIGN.md, "Custom
//! resource"). Pure: the reconciler applies the result with server-side
//! apply under its own field manager, so the router's fields (tunnel,
//! listening ports, session flag) are never touched.

use hatchway_api::crd::{
    Container, ContainerStatus, GatewayStatus, Phase, PublishedPortStatus, RestartPolicy,
};
use hatchway_api::pod::{GATEWAY_PORT, Readyz, SIDECAR_CONTAINER, WORKLOAD_CONTAINER};
use hatchway_api::webapp;
use k8s_openapi::api::core::v1::{ContainerStatus as K8sContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// What the reconciler saw: the Container's pod (if any), and what the
/// sidecar's `/readyz` reported (fingerprints), if it was asked.
#[derive(Clone, Debug, Default)]
pub struct Observed<'a> {
    /// The pod, when it exists.
    pub pod: Option<&'a Pod>,
    /// `/readyz` of the sidecar (its fingerprints).
    pub readyz: Option<&'a Readyz>,
    /// The wildcard domain of web apps, for published ports' URLs.
    pub wildcard_domain: Option<&'a str>,
    /// Why the API refused to create the pod (an invalid override, a
    /// missing ServiceAccount, an admission policy), if it did.
    pub refused: Option<&'a str>,
}

/// The phase, the workload's state and the gateway address, read from a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The phase.
    pub phase: Phase,
    /// A reason for the phase (for conditions and events).
    pub reason: &'static str,
    /// A sentence for people.
    pub message: String,
    /// `podIP:7443` when the sidecar is ready and the workload runs.
    pub gateway_address: Option<String>,
    /// When the workload started.
    pub started_at: Option<Time>,
    /// When the workload ended.
    pub finished_at: Option<Time>,
    /// Its exit code.
    pub exit_code: Option<i32>,
}

fn container_status<'a>(pod: &'a Pod, name: &str, init: bool) -> Option<&'a K8sContainerStatus> {
    let status = pod.status.as_ref()?;
    let list = if init {
        status.init_container_statuses.as_ref()
    } else {
        status.container_statuses.as_ref()
    };
    list?.iter().find(|s| s.name == name)
}

/// Decides the phase. A finished phase never changes; a Container being
/// deleted before it finished is Cancelled.
pub fn decide(container: &Container, pod: Option<&Pod>) -> Decision {
    let current = container.status.as_ref().and_then(|s| s.phase);
    let mut decision = Decision {
        phase: Phase::Queued,
        reason: "PodNotCreated",
        message: "waiting for the pod to be created".into(),
        gateway_address: None,
        started_at: None,
        finished_at: None,
        exit_code: None,
    };
    let workload = pod.and_then(|p| container_status(p, WORKLOAD_CONTAINER, false));
    if let Some(state) = workload.and_then(|s| s.state.as_ref()) {
        if let Some(running) = &state.running {
            decision.started_at = running.started_at.clone();
        }
        if let Some(done) = &state.terminated {
            decision.started_at = done.started_at.clone();
            decision.finished_at = done.finished_at.clone();
            decision.exit_code = Some(done.exit_code);
        }
    }
    if let Some(phase) = current
        && phase.is_finished()
    {
        decision.phase = phase;
        decision.reason = "Finished";
        decision.message = format!("the container has finished ({phase:?})");
        let old = container.status.as_ref();
        decision.exit_code = decision.exit_code.or(old.and_then(|s| s.exit_code));
        decision.started_at = decision.started_at.or(old.and_then(|s| s.started_at.clone()));
        decision.finished_at = decision.finished_at.or(old.and_then(|s| s.finished_at.clone()));
        return decision;
    }
    if container.metadata.deletion_timestamp.is_some() {
        decision.phase = Phase::Cancelled;
        decision.reason = "Deleted";
        decision.message = "the Container was deleted before it finished".into();
        return decision;
    }
    let Some(pod) = pod else {
        if current == Some(Phase::Running) {
            // Its pod vanished mid-run (deleted, evicted, node lost): a run
            // to completion is not restarted behind the user's back.
            decision.phase = Phase::Failed;
            decision.reason = "PodLost";
            decision.message = "the pod disappeared while the command was running".into();
        }
        return decision;
    };
    let pod_phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending");
    let terminated = workload
        .and_then(|s| s.state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    let restarts = container.spec.restart_policy == RestartPolicy::OnFailure;
    match (pod_phase, terminated) {
        ("Succeeded", _) => {
            decision.phase = Phase::Complete;
            decision.reason = "Completed";
            decision.message = "the command exited with code 0".into();
            decision.exit_code = decision.exit_code.or(Some(0));
        }
        ("Failed", _) => {
            decision.phase = Phase::Failed;
            let why = pod
                .status
                .as_ref()
                .and_then(|s| s.message.clone().or(s.reason.clone()))
                .unwrap_or_default();
            decision.reason = "Failed";
            decision.message = match decision.exit_code {
                Some(code) => format!("the command exited with code {code}"),
                None => format!("the pod failed: {why}"),
            };
        }
        // The workload ended but the pod still winds the sidecar down: the
        // exit code is final unless the pod restarts it.
        (_, Some(done)) if done.exit_code == 0 => {
            decision.phase = Phase::Complete;
            decision.reason = "Completed";
            decision.message = "the command exited with code 0".into();
        }
        (_, Some(done)) if !restarts => {
            decision.phase = Phase::Failed;
            decision.reason = "Failed";
            decision.message = format!("the command exited with code {}", done.exit_code);
        }
        _ => {
            let running = workload
                .and_then(|s| s.state.as_ref())
                .is_some_and(|s| s.running.is_some());
            let sidecar_ready = container_status(pod, SIDECAR_CONTAINER, true).is_some_and(|s| s.ready);
            let pod_ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
            if running {
                decision.phase = Phase::Running;
                decision.reason = "Running";
                decision.message = "the command is running".into();
                if sidecar_ready && let Some(ip) = pod_ip {
                    decision.gateway_address = Some(if ip.contains(':') {
                        format!("[{ip}]:{GATEWAY_PORT}")
                    } else {
                        format!("{ip}:{GATEWAY_PORT}")
                    });
                }
            } else {
                let waiting = workload
                    .and_then(|s| s.state.as_ref())
                    .and_then(|s| s.waiting.as_ref())
                    .map(|w| {
                        format!(
                            "{}: {}",
                            w.reason.clone().unwrap_or_default(),
                            w.message.clone().unwrap_or_default()
                        )
                    });
                decision.reason = "PodPending";
                decision.message = match waiting {
                    Some(w) => format!("the pod is starting ({})", w.trim_end_matches(": ")),
                    None if !sidecar_ready => "the pod is starting (the sidecar is not ready yet)".into(),
                    None => "the pod is starting".into(),
                };
            }
        }
    }
    decision
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Time,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: generation,
        last_transition_time: now,
    }
}

/// The reconciler's status for `container`: its whole concern, applied
/// under [`MANAGER_RECONCILER`](hatchway_api::status::MANAGER_RECONCILER).
/// `now` stamps conditions whose status changed; unchanged ones keep their
/// transition time.
pub fn patch(container: &Container, observed: &Observed<'_>, now: Time) -> ContainerStatus {
    let decision = decide(container, observed.pod);
    let generation = container.metadata.generation;
    let old = container.status.as_ref();
    let keep_time = |type_: &str, ok: bool| -> Time {
        old.into_iter()
            .flat_map(|s| &s.conditions)
            .find(|c| c.type_ == type_ && (c.status == "True") == ok)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.clone())
    };
    let gateway_ready = decision.gateway_address.is_some();
    let gateway_reason = if gateway_ready {
        "SidecarReady"
    } else {
        decision.reason
    };
    let gateway_message = match &decision.gateway_address {
        Some(address) => format!("the gateway answers at {address}"),
        None => decision.message.clone(),
    };
    // `Ready` sums the others up for tools that wait on it (`kubectl wait
    // --for=condition=Ready`, kstatus): the workload runs, its gateway
    // answers, and nothing is refused.
    let (ready, ready_reason, ready_message) = match observed.refused {
        Some(why) => (false, "PodRefused", format!("the cluster refused the pod: {why}")),
        None => (gateway_ready, gateway_reason, gateway_message.clone()),
    };
    let conditions = vec![
        condition(
            "GatewayReady",
            gateway_ready,
            gateway_reason,
            &gateway_message,
            generation,
            keep_time("GatewayReady", gateway_ready),
        ),
        match observed.refused {
            None => condition(
                "Valid",
                true,
                "Accepted",
                "the spec can be run",
                generation,
                keep_time("Valid", true),
            ),
            Some(why) => condition(
                "Valid",
                false,
                "PodRefused",
                &format!("the cluster refused the pod: {why}"),
                generation,
                keep_time("Valid", false),
            ),
        },
        condition(
            "Ready",
            ready,
            ready_reason,
            &ready_message,
            generation,
            keep_time("Ready", ready),
        ),
    ];
    // Keep the pod's name after it is gone: saved logs are looked up by it.
    let pod_name = observed
        .pod
        .and_then(|p| p.metadata.name.clone())
        .or_else(|| old.and_then(|s| s.pod_name.clone()));
    let gateway = decision.gateway_address.as_ref().map(|address| {
        let mut gateway = GatewayStatus {
            address: address.clone(),
            ..GatewayStatus::default()
        };
        // Fresh from `/readyz`, else the ones already recorded for this
        // address: an apply that leaves out fields this manager owns
        // deletes them.
        if let Some(readyz) = observed.readyz {
            gateway.certificate_sha256 = Some(readyz.certificate_sha256.clone());
            gateway.host_key = Some(readyz.host_key.clone());
            gateway.host_key_fingerprint = Some(readyz.host_key_fingerprint.clone());
        } else if let Some(recorded) = old
            .and_then(|s| s.gateway.as_ref())
            .filter(|g| g.address == *address)
        {
            gateway.certificate_sha256 = recorded.certificate_sha256.clone();
            gateway.host_key = recorded.host_key.clone();
            gateway.host_key_fingerprint = recorded.host_key_fingerprint.clone();
        }
        gateway
    });
    let published_ports = match (observed.wildcard_domain, container.metadata.uid.as_deref()) {
        (Some(domain), Some(uid)) => container
            .spec
            .published_ports
            .iter()
            .map(|p| PublishedPortStatus {
                port: p.port,
                access: p.access,
                label: p.label.clone(),
                url: webapp::url(
                    domain,
                    uid,
                    p.port as u16,
                    p.initial_path.as_deref().unwrap_or("/"),
                ),
            })
            .collect(),
        _ => Vec::new(),
    };
    ContainerStatus {
        phase: Some(decision.phase),
        pod_name,
        gateway,
        published_ports,
        started_at: decision.started_at,
        finished_at: decision.finished_at,
        exit_code: decision.exit_code,
        conditions,
        observed_generation: generation,
        ..ContainerStatus::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hatchway_api::crd::ContainerSpec;
    use serde_json::{Value, json};

    /// The reconciler's status as it goes on the wire.
    fn applied(container: &Container, observed: &Observed<'_>, now: Time) -> Value {
        serde_json::to_value(patch(container, observed, now)).unwrap()
    }

    fn container() -> Container {
        let spec: ContainerSpec = serde_json::from_value(json!({
            "image": "busybox",
            "command": ["true"],
            "publishedPorts": [{"port": 8080, "access": "private", "label": "Site", "initialPath": "/lab"}],
        }))
        .unwrap();
        let mut c = Container::new("job", spec);
        c.metadata.uid = Some("uid-1".into());
        c.metadata.generation = Some(1);
        c
    }

    fn pod(phase: &str, sidecar_ready: bool, workload_state: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "job-uid1"},
            "status": {
                "phase": phase,
                "podIP": "10.244.0.9",
                "initContainerStatuses": [{
                    "name": "hatchway-sidecar", "ready": sidecar_ready, "restartCount": 0,
                    "image": "s", "imageID": "", "started": true,
                }],
                "containerStatuses": [{
                    "name": "workload", "ready": false, "restartCount": 0,
                    "image": "w", "imageID": "", "state": workload_state,
                }],
            }
        }))
        .unwrap()
    }

    fn running() -> Value {
        json!({"running": {"startedAt": "2026-11-23T10:00:00Z"}})
    }

    fn exited(code: i32) -> Value {
        json!({"terminated": {"exitCode": code, "startedAt": "2026-11-23T10:00:00Z", "finishedAt": "2026-11-23T10:01:00Z"}})
    }

    #[test]
    fn without_a_running_workload_a_container_is_queued_and_says_why() {
        let c = container();
        assert_eq!(decide(&c, None).phase, Phase::Queued);
        let waiting = pod(
            "Pending",
            true,
            json!({"waiting": {"reason": "ErrImagePull", "message": "no such image"}}),
        );
        let d = decide(&c, Some(&waiting));
        assert_eq!(d.phase, Phase::Queued);
        assert_eq!(d.message, "the pod is starting (ErrImagePull: no such image)");
        let starting = pod("Pending", false, json!({}));
        assert_eq!(
            decide(&c, Some(&starting)).message,
            "the pod is starting (the sidecar is not ready yet)"
        );
    }

    #[test]
    fn a_running_workload_gets_the_gateway_address_once_the_sidecar_is_ready() {
        let c = container();
        let d = decide(&c, Some(&pod("Running", true, running())));
        assert_eq!(d.phase, Phase::Running);
        assert_eq!(d.gateway_address.as_deref(), Some("10.244.0.9:7443"));
        assert!(d.started_at.is_some());
        let d = decide(&c, Some(&pod("Running", false, running())));
        assert_eq!((d.phase, d.gateway_address), (Phase::Running, None));
    }

    #[test]
    fn the_exit_code_decides_complete_or_failed_even_while_the_sidecar_winds_down() {
        let c = container();
        let d = decide(&c, Some(&pod("Succeeded", false, exited(0))));
        assert_eq!((d.phase, d.exit_code), (Phase::Complete, Some(0)));
        let d = decide(&c, Some(&pod("Running", true, exited(3))));
        assert_eq!((d.phase, d.exit_code), (Phase::Failed, Some(3)));
        assert_eq!(d.message, "the command exited with code 3");
        assert_eq!(d.gateway_address, None);
        let mut retried = container();
        retried.spec.restart_policy = RestartPolicy::OnFailure;
        assert_eq!(
            decide(&retried, Some(&pod("Running", true, exited(3)))).phase,
            Phase::Queued
        );
        let d = decide(&retried, Some(&pod("Failed", false, exited(3))));
        assert_eq!(d.phase, Phase::Failed);
    }

    #[test]
    fn deleting_cancels_a_running_container_but_never_changes_a_finished_one() {
        let mut c = container();
        c.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(
            decide(&c, Some(&pod("Running", true, running()))).phase,
            Phase::Cancelled
        );
        c.status = Some(hatchway_api::crd::ContainerStatus {
            phase: Some(Phase::Complete),
            exit_code: Some(0),
            ..Default::default()
        });
        let d = decide(&c, None);
        assert_eq!((d.phase, d.exit_code), (Phase::Complete, Some(0)));
    }

    #[test]
    fn the_patch_carries_address_fingerprints_ports_and_stable_conditions() {
        let c = container();
        let p = pod("Running", true, running());
        let readyz = Readyz {
            status: "ready".into(),
            container_uid: "uid-1".into(),
            certificate_sha256: "ab".into(),
            host_key: "ssh-ed25519 AAA".into(),
            host_key_fingerprint: "SHA256:x".into(),
            listening_ports: None,
        };
        let now = Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap());
        let observed = Observed {
            pod: Some(&p),
            readyz: Some(&readyz),
            wildcard_domain: Some("apps.example"),
            refused: None,
        };
        let patch = applied(&c, &observed, now.clone());
        assert_eq!(patch["phase"], "Running");
        assert_eq!(patch["podName"], "job-uid1");
        assert_eq!(patch["gateway"]["address"], "10.244.0.9:7443");
        assert_eq!(patch["gateway"]["hostKeyFingerprint"], "SHA256:x");
        assert_eq!(
            patch["publishedPorts"][0]["url"],
            "https://uid-1-8080.apps.example/lab"
        );
        assert_eq!(patch["conditions"][0]["type"], "GatewayReady");
        assert_eq!(patch["conditions"][0]["status"], "True");
        assert_eq!(patch["conditions"][2]["type"], "Ready");
        assert_eq!(patch["conditions"][2]["status"], "True");

        // Applied, then seen again later: the transition time stays.
        let mut again = c.clone();
        again.status = Some(serde_json::from_value(patch.clone()).unwrap());
        let later = Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_100).unwrap());
        let second = applied(&again, &observed, later);
        assert_eq!(
            second["conditions"][0]["lastTransitionTime"],
            patch["conditions"][0]["lastTransitionTime"]
        );
        // Seen again without asking `/readyz`: the recorded fingerprints
        // stay in the apply (leaving them out would delete them) ...
        let without_readyz = Observed {
            readyz: None,
            ..observed.clone()
        };
        let third = applied(&again, &without_readyz, now.clone());
        assert_eq!(third["gateway"], patch["gateway"]);
        // ... but only for the same address: another pod IP is another
        // gateway, whose fingerprints are not known yet.
        let mut moved = again.clone();
        moved.status.as_mut().unwrap().gateway.as_mut().unwrap().address = "10.244.0.1:7443".into();
        let fourth = applied(&moved, &without_readyz, now.clone());
        assert_eq!(fourth["gateway"], json!({"address": "10.244.0.9:7443"}));
        // The pod gone mid-run: Failed, and the name stays for saved logs.
        let refused = Observed {
            refused: Some("serviceaccount \"runner\" not found"),
            ..Observed::default()
        };
        let invalid = applied(&c, &refused, now.clone());
        assert_eq!(invalid["phase"], "Queued");
        assert_eq!(invalid["conditions"][1]["status"], "False");
        assert_eq!(invalid["conditions"][2]["status"], "False");
        assert_eq!(invalid["conditions"][2]["reason"], "PodRefused");
        assert_eq!(
            invalid["conditions"][1]["message"],
            "the cluster refused the pod: serviceaccount \"runner\" not found"
        );
        let gone = applied(&again, &Observed::default(), now);
        assert_eq!(gone["podName"], "job-uid1");
        assert_eq!(gone["phase"], "Failed");
        assert!(gone.get("gateway").is_none());
    }
}
