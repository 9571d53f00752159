//! Listening ports of Containers no tunnel reports for. A sidecar with a
//! tunnel tells its router replica when its ports change; one without
//! (the chart's `router.tunnels: false`) cannot. For those the leader asks
//! each running sidecar's health port (`/readyz`, which lists them) every
//! few seconds and applies `status.listeningPorts` under the same field
//! manager as the tunnel ([`MANAGER_PORTS`]) — only when they changed, so
//! the API server hears nothing while nothing changes.

use std::time::Duration;

use futures::StreamExt;
use hatchway_api::crd::{Container, ContainerStatus, Phase};
use hatchway_api::status::MANAGER_PORTS;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use tokio_util::sync::CancellationToken;

use super::controller::fetch_readyz_at;

/// Sidecars asked at once.
const AT_ONCE: usize = 16;

/// The health port's host of a Container to ask, if it is running, has a
/// direct gateway address and no tunnel reports for it.
pub fn to_ask(container: &Container) -> Option<String> {
    let status = container.status.as_ref()?;
    if status.phase != Some(Phase::Running) {
        return None;
    }
    let gateway = status.gateway.as_ref()?;
    if gateway.tunnel.is_some() {
        return None;
    }
    let address: std::net::SocketAddr = gateway.address.parse().ok()?;
    Some(address.ip().to_string())
}

/// The ports `status` lists, sorted.
fn recorded(container: &Container) -> Vec<u16> {
    let mut ports: Vec<u16> = container
        .status
        .as_ref()
        .map(|s| {
            s.listening_ports
                .iter()
                .filter_map(|p| u16::try_from(p.port).ok())
                .collect()
        })
        .unwrap_or_default();
    ports.sort_unstable();
    ports
}

/// Asks every Container of the served `namespaces` (empty: all) that
/// [`to_ask`] names, every `interval`, until `shutdown`. (Another
/// release's Containers are its operator's: their sidecars' health ports
/// would not even answer this one.)
pub async fn run(
    client: kube::Client,
    store: Store<Container>,
    namespaces: Vec<String>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let served = store
            .state()
            .into_iter()
            .filter(|c| namespaces.is_empty() || c.namespace().is_some_and(|ns| namespaces.contains(&ns)));
        futures::stream::iter(served)
            .for_each_concurrent(AT_ONCE, |container| {
                let client = client.clone();
                async move { refresh(&client, &container).await }
            })
            .await;
    }
}

/// One Container: its sidecar's ports into its status if they changed.
async fn refresh(client: &kube::Client, container: &Container) {
    let Some(host) = to_ask(container) else {
        return;
    };
    // An older sidecar's `/readyz` has no ports: nothing to say.
    let Some(mut ports) = fetch_readyz_at(&host).await.and_then(|r| r.listening_ports) else {
        return;
    };
    ports.sort_unstable();
    ports.dedup();
    if ports == recorded(container) {
        return;
    }
    let namespace = container.namespace().unwrap_or_default();
    let api: Api<Container> = Api::namespaced(client.clone(), &namespace);
    let applied = api
        .patch_status(
            &container.name_any(),
            &PatchParams::apply(MANAGER_PORTS).force(),
            &Patch::Apply(&ContainerStatus::listening(&ports).apply_body()),
        )
        .await;
    match applied {
        Ok(_) => tracing::debug!(container = %container.name_any(), ?ports, "listening ports"),
        Err(error) => tracing::warn!(container = %container.name_any(), %error, "applying listening ports"),
    }
}

#[cfg(test)]
mod tests {
    use hatchway_api::crd::{ContainerSpec, GatewayStatus, ListeningPort};

    use super::*;

    fn container(phase: Phase, address: &str, tunnel: Option<&str>, ports: &[i32]) -> Container {
        let mut c = Container::new("job", ContainerSpec::default());
        c.status = Some(ContainerStatus {
            phase: Some(phase),
            gateway: Some(GatewayStatus {
                address: address.to_owned(),
                tunnel: tunnel.map(str::to_owned),
                ..GatewayStatus::default()
            }),
            listening_ports: ports
                .iter()
                .map(|&port| ListeningPort {
                    port,
                    protocol: "TCP".into(),
                })
                .collect(),
            ..ContainerStatus::default()
        });
        c
    }

    #[test]
    fn only_running_containers_without_a_tunnel_are_asked() {
        assert_eq!(
            to_ask(&container(Phase::Running, "10.0.0.7:7443", None, &[])).as_deref(),
            Some("10.0.0.7")
        );
        assert_eq!(
            to_ask(&container(Phase::Running, "[fd00::7]:7443", None, &[])).as_deref(),
            Some("fd00::7")
        );
        assert_eq!(
            to_ask(&container(
                Phase::Running,
                "10.0.0.7:7443",
                Some("tunnel https://r"),
                &[]
            )),
            None
        );
        assert_eq!(
            to_ask(&container(Phase::Running, "tunnel https://r", None, &[])),
            None
        );
        assert_eq!(
            to_ask(&container(Phase::Complete, "10.0.0.7:7443", None, &[])),
            None
        );
    }

    #[test]
    fn recorded_ports_are_sorted() {
        assert_eq!(
            recorded(&container(Phase::Running, "10.0.0.7:7443", None, &[9000, 80])),
            [80, 9000]
        );
    }
}
