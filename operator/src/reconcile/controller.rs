//! The reconcile loop: a kube-runtime Controller over Containers that owns
//! their Pods and Secrets. For each Container: a finalizer (so deleting a
//! running one is recorded as Cancelled before its pod goes), the Secret,
//! the Pod, the status (server-side apply under [`MANAGER_RECONCILER`]), an
//! Event per phase change, `ttlSecondsAfterFinished`, and exponential
//! requeues on errors. A Container that cannot become a pod gets a
//! condition, never a crash loop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use futures::StreamExt;
use hatchway_api::crd::{Container, Phase};
use hatchway_api::pod::{HEALTH_PORT, MAX_READYZ_BYTES, Readyz, health_path};
use hatchway_api::status::MANAGER_RECONCILER;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::wait::{await_condition, conditions::is_deleted};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

use super::metrics::ReconcileMetrics;
use super::plan::{self, PodStep, TtlStep};
use super::pod::{self, PodSettings};
use super::status;
use hatchway_api::proof::RootSecret;

/// The finalizer that lets a deleted Container be recorded as Cancelled.
pub const FINALIZER: &str = "hatchway.dev/cancel";
/// The longest wait before retrying a Container whose reconcile failed.
const ERROR_BACKOFF_CEILING: Duration = Duration::from_secs(300);
/// The waits before retrying a Container whose reconcile failed: 1 s
/// doubling to 5 min.
const ERROR_BACKOFF: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_secs(1))
    .with_max_delay(ERROR_BACKOFF_CEILING)
    .without_max_times();
/// How long one cleanup waits for a deleted pod to go (its grace period,
/// 30 s by default, and a margin); after that it is retried.
const POD_GONE_WAIT: Duration = Duration::from_secs(45);

/// How often the sidecars no tunnel reports for are asked for their
/// listening ports (with the sidecar's 2 s scan: a new port is in the
/// status within about 5 s).
const PORTS_EVERY: Duration = Duration::from_secs(3);

/// Aborts its task when dropped (the leader's helpers end with it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the reconciler needs.
#[derive(Clone, Debug)]
pub struct ReconcileSettings {
    /// How pods are built.
    pub pod: PodSettings,
    /// The router's tunnel URL given to sidecars (none: no tunnels).
    pub tunnel_url: Option<String>,
    /// The router CA sidecars pin.
    pub router_ca_pem: String,
    /// Web apps' wildcard domain, for published ports' URLs.
    pub wildcard_domain: Option<String>,
    /// `ttlSecondsAfterFinished` for Containers that do not set one.
    pub default_ttl_seconds: Option<i64>,
    /// Only these namespaces (empty: all).
    pub namespaces: Vec<String>,
}

/// Why one reconcile failed (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// A Kubernetes API call failed.
    #[error("{action}: {source}")]
    Api {
        /// What was being done.
        action: &'static str,
        /// Why it failed.
        source: kube::Error,
    },
    /// Adding or removing the finalizer, or waiting for the pod to go,
    /// did not finish.
    #[error("finalizer: {0}")]
    Finalizer(String),
}

impl ReconcileError {
    /// The `reason` label of `hatchway_reconcile_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            ReconcileError::Api { .. } => "api",
            ReconcileError::Finalizer(_) => "finalizer",
        }
    }
}

fn api_err(action: &'static str) -> impl FnOnce(kube::Error) -> ReconcileError {
    move |source| ReconcileError::Api { action, source }
}

/// Shared by every reconcile.
pub struct Context {
    client: kube::Client,
    settings: ReconcileSettings,
    root: RootSecret,
    recorder: Recorder,
    /// The backoff of each Container whose reconciles fail, until one
    /// succeeds.
    failures: Mutex<HashMap<String, ExponentialBackoff>>,
    metrics: ReconcileMetrics,
}

/// Runs the controller until `shutdown`.
pub async fn run(
    client: kube::Client,
    settings: ReconcileSettings,
    root: RootSecret,
    metrics: ReconcileMetrics,
    shutdown: CancellationToken,
) {
    // Leading from here until this returns (the Lease lost or shutdown).
    let _leading = metrics.leading();
    let reporter = Reporter {
        controller: "hatchway-operator".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let context = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client: client.clone(),
        settings,
        root,
        failures: Mutex::new(HashMap::new()),
        metrics,
    });
    let children = watcher::Config::default().labels("app.kubernetes.io/managed-by=hatchway-operator");
    let controller = Controller::new(Api::<Container>::all(client.clone()), watcher::Config::default())
        // Pods only: watching Secrets would need `list`/`watch` on every
        // Secret in the cluster; a missing key Secret is recreated on the
        // next reconcile of its Container.
        .owns(Api::<Pod>::all(client.clone()), children);
    // Ports no tunnel reports, from the same store (ports.rs).
    let _ports = AbortOnDrop(tokio::spawn(super::ports::run(
        client,
        controller.store(),
        context.settings.namespaces.clone(),
        PORTS_EVERY,
        shutdown.clone(),
    )));
    controller
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(container = %object, "reconciled"),
                Err(error) => tracing::debug!(%error, "reconcile failed"),
            }
        })
        .await;
}

fn key(container: &Container) -> String {
    format!(
        "{}/{}",
        container.namespace().unwrap_or_default(),
        container.name_any()
    )
}

/// [`ERROR_BACKOFF`] per Container, until a reconcile of it succeeds.
fn error_policy(container: Arc<Container>, error: &ReconcileError, context: Arc<Context>) -> Action {
    let mut failures = context.failures.lock().expect("not poisoned");
    let delays = failures
        .entry(key(&container))
        .or_insert_with(|| ERROR_BACKOFF.build());
    let delay = delays.next().unwrap_or(ERROR_BACKOFF_CEILING);
    context.metrics.errors.with_label_values(&[error.reason()]).inc();
    tracing::warn!(container = %key(&container), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn reconcile(container: Arc<Container>, context: Arc<Context>) -> Result<Action, ReconcileError> {
    let namespace = container.namespace().unwrap_or_default();
    let settings = &context.settings;
    if !settings.namespaces.is_empty() && !settings.namespaces.contains(&namespace) {
        return Ok(Action::await_change());
    }
    let _timer = context.metrics.time();
    let failure_key = key(&container);
    let containers: Api<Container> = Api::namespaced(context.client.clone(), &namespace);
    // The finalizer lets a deleted Container be recorded as Cancelled and
    // its pod go first: added before anything is created, removed once
    // `cleanup` has succeeded.
    let action = finalizer(&containers, FINALIZER, container, |event| async {
        match event {
            finalizer::Event::Apply(container) => apply(&container, &context).await,
            finalizer::Event::Cleanup(container) => cleanup(&container, &context).await,
        }
    })
    .await
    .map_err(|error| match error {
        finalizer::Error::ApplyFailed(error) | finalizer::Error::CleanupFailed(error) => error,
        finalizer::Error::AddFinalizer(source) => ReconcileError::Api {
            action: "adding the finalizer",
            source,
        },
        finalizer::Error::RemoveFinalizer(source) => ReconcileError::Api {
            action: "removing the finalizer",
            source,
        },
        other => ReconcileError::Finalizer(other.to_string()),
    })?;
    context
        .failures
        .lock()
        .expect("not poisoned")
        .remove(&failure_key);
    Ok(action)
}

/// The name of a Container's pod (and NetworkPolicy); `None`, logged, for
/// an object that cannot have one (cannot happen for a stored object;
/// never crash-loop on it).
fn child_of(container: &Container) -> Option<String> {
    match pod::child_name(container) {
        Ok(child) => Some(child),
        Err(error) => {
            tracing::error!(container = %key(container), %error, "not reconcilable");
            None
        }
    }
}

/// A deleted Container that had not finished: record it (Cancelled), delete
/// its pod and wait for the pod to go.
async fn cleanup(container: &Container, context: &Context) -> Result<Action, ReconcileError> {
    let Some(child) = child_of(container) else {
        return Ok(Action::await_change());
    };
    let pods: Api<Pod> = Api::namespaced(context.client.clone(), &container.namespace().unwrap_or_default());
    // Someone else's pod of the same name is neither reported nor deleted.
    let pod = pods
        .get_opt(&child)
        .await
        .map_err(api_err("reading the pod"))?
        .filter(|p| pod::is_controlled_by(&p.metadata, container));
    write_status(context, container, pod.as_ref(), None, None).await?;
    let Some(pod) = pod else {
        return Ok(Action::await_change());
    };
    match pods.delete(&child, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(Action::await_change()),
        Err(source) => {
            return Err(ReconcileError::Api {
                action: "deleting the pod",
                source,
            });
        }
    }
    let uid = pod.metadata.uid.unwrap_or_default();
    match tokio::time::timeout(POD_GONE_WAIT, await_condition(pods, &child, is_deleted(&uid))).await {
        Ok(Ok(_)) => Ok(Action::await_change()),
        Ok(Err(error)) => Err(ReconcileError::Finalizer(format!("watching the pod go: {error}"))),
        // Still terminating: the reconcile is retried (with backoff).
        Err(_) => Err(ReconcileError::Finalizer(format!(
            "the pod {child} is still terminating after {POD_GONE_WAIT:?}"
        ))),
    }
}

/// The Secret, the Pod, the status, the TTL of a Container that is not
/// being deleted.
async fn apply(container: &Container, context: &Context) -> Result<Action, ReconcileError> {
    let client = &context.client;
    let namespace = container.namespace().unwrap_or_default();
    let name = container.name_any();
    let containers: Api<Container> = Api::namespaced(client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let Some(child) = child_of(container) else {
        return Ok(Action::await_change());
    };

    let mut pod = pods.get_opt(&child).await.map_err(api_err("reading the pod"))?;
    let decision = status::decide(container, pod.as_ref());
    let step = plan::pod_step(container, pod.as_ref(), &decision);
    if step == PodStep::RefuseForeign {
        return refuse_foreign_pod(context, container, &child).await;
    }
    if step == PodStep::Create {
        let uid = container.uid().unwrap_or_default();
        let ctr_key = context.root.ctr_key(&uid);
        let secret = pod::secret(
            container,
            ctr_key.expose_hex(),
            &context.settings.router_ca_pem,
            context.settings.tunnel_url.as_deref(),
        )
        .expect("a stored Container has a name and UID");
        // A generated name: nothing to collide with, nothing to read back.
        let secret = secrets
            .create(&PostParams::default(), &secret)
            .await
            .map_err(api_err("creating the Secret"))?;
        let secret_name = secret.metadata.name.unwrap_or_default();
        if let Some(policy) = &context.settings.pod.gateway_policy {
            let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &namespace);
            let np = pod::network_policy(container, policy).expect("a stored Container has a name and UID");
            match policies.create(&PostParams::default(), &np).await {
                Ok(_) => {}
                // Made by an earlier reconcile whose status write failed.
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(source) => {
                    return Err(ReconcileError::Api {
                        action: "creating the NetworkPolicy",
                        source,
                    });
                }
            }
        }
        let new_pod = pod::pod(container, &context.settings.pod, &secret_name)
            .expect("a stored Container has a name and UID");
        match create(&pods, &new_pod, "creating the pod").await {
            Ok(created) if !pod::is_controlled_by(&created.metadata, container) => {
                // 409, and the pod there is someone else's.
                return refuse_foreign_pod(context, container, &child).await;
            }
            Ok(created) => pod = Some(created),
            // The cluster will not run this pod as written (a missing
            // ServiceAccount, an admission policy, an invalid override):
            // say so in a condition and retry slowly, never crash-loop.
            Err(ReconcileError::Api {
                source: kube::Error::Api(status),
                ..
            }) if matches!(status.code, 400 | 403 | 404 | 422) => {
                let why = status.message.clone();
                write_status(context, container, None, None, Some(&why)).await?;
                tracing::warn!(container = %key(container), %why, "the pod was refused");
                return Ok(Action::requeue(Duration::from_secs(60)));
            }
            Err(error) => return Err(error),
        }
    }
    let readyz = match (&decision.gateway_address, &pod) {
        // Asked on every reconcile of a running Container, not only while
        // unknown: a sidecar restarted inside the same pod keeps its address
        // but has a new certificate and host key. (An unchanged apply is a
        // no-op for the API server, so this cannot loop.)
        (Some(_), Some(pod)) => fetch_readyz(pod).await,
        _ => None,
    };
    write_status(context, container, pod.as_ref(), readyz.as_ref(), None).await?;

    let now = k8s_openapi::jiff::Timestamp::now();
    match plan::ttl_step(container, &decision, context.settings.default_ttl_seconds, now) {
        TtlStep::Delete => {
            tracing::info!(container = %key(container), "ttlSecondsAfterFinished reached: deleting");
            containers
                .delete(&name, &DeleteParams::background())
                .await
                .map_err(api_err("deleting after its TTL"))?;
            Ok(Action::await_change())
        }
        TtlStep::RecheckIn(wait) => Ok(Action::requeue(wait)),
        TtlStep::None if decision.phase.is_finished() => Ok(Action::await_change()),
        // Running: look again now and then even without a change.
        TtlStep::None => Ok(Action::requeue(Duration::from_secs(300))),
    }
}

/// A pod with the child's name exists and is not this Container's: say so
/// in a condition and retry slowly; never adopt it.
async fn refuse_foreign_pod(
    context: &Context,
    container: &Container,
    child: &str,
) -> Result<Action, ReconcileError> {
    let why = format!(
        "a pod named {child} exists and is not controlled by this Container: Hatchway will not adopt it (delete it, or re-create the Container)"
    );
    write_status(context, container, None, None, Some(&why)).await?;
    tracing::warn!(container = %key(container), %why, "refused to adopt a pod");
    Ok(Action::requeue(Duration::from_secs(60)))
}

async fn create<K>(api: &Api<K>, object: &K, action: &'static str) -> Result<K, ReconcileError>
where
    K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.create(&PostParams::default(), object).await {
        Ok(created) => Ok(created),
        // Created by an earlier reconcile whose status write failed.
        Err(kube::Error::Api(status)) if status.code == 409 => api
            .get(&object.meta().name.clone().unwrap_or_default())
            .await
            .map_err(api_err(action)),
        Err(source) => Err(ReconcileError::Api { action, source }),
    }
}

/// The sidecar's `/readyz` (fingerprints), plain HTTP on the pod's health
/// port; `None` when it does not answer in time.
async fn fetch_readyz(pod: &Pod) -> Option<Readyz> {
    let ip = pod.status.as_ref()?.pod_ip.clone()?;
    fetch_readyz_at(&ip).await
}

/// The `/readyz` of the sidecar at pod IP `ip`.
pub(super) async fn fetch_readyz_at(ip: &str) -> Option<Readyz> {
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_owned()
    };
    let fetch = async {
        let tcp = tokio::net::TcpStream::connect(format!("{host}:{HEALTH_PORT}"))
            .await
            .ok()?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .ok()?;
        tokio::spawn(conn);
        let request = http::Request::get(health_path::READYZ)
            .header(http::header::HOST, host.as_str())
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .ok()?;
        let response = sender.send_request(request).await.ok()?;
        let body = http_body_util::BodyExt::collect(http_body_util::Limited::new(
            response.into_body(),
            MAX_READYZ_BYTES,
        ))
        .await
        .ok()?
        .to_bytes();
        serde_json::from_slice(&body).ok()
    };
    tokio::time::timeout(Duration::from_secs(3), fetch)
        .await
        .ok()
        .flatten()
}

/// Applies the status and publishes an Event when the phase changed.
async fn write_status(
    context: &Context,
    container: &Container,
    pod: Option<&Pod>,
    readyz: Option<&Readyz>,
    refused: Option<&str>,
) -> Result<(), ReconcileError> {
    let observed = status::Observed {
        pod,
        readyz,
        wildcard_domain: context.settings.wildcard_domain.as_deref(),
        refused,
    };
    let patch = status::patch(container, &observed, Time(k8s_openapi::jiff::Timestamp::now()));
    let before = container.status.as_ref().and_then(|s| s.phase);
    let namespace = container.namespace().unwrap_or_default();
    let api: Api<Container> = Api::namespaced(context.client.clone(), &namespace);
    api.patch_status(
        &container.name_any(),
        &PatchParams::apply(MANAGER_RECONCILER).force(),
        &Patch::Apply(&patch.apply_body()),
    )
    .await
    .map_err(api_err("writing status"))?;
    let decision = status::decide(container, pod);
    if before != Some(decision.phase) {
        let event = Event {
            type_: if decision.phase == Phase::Failed {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: format!("{:?}", decision.phase),
            note: Some(decision.message.clone()),
            action: "Reconcile".into(),
            secondary: None,
        };
        let reference = container.object_ref(&());
        if let Err(error) = context.recorder.publish(&event, &reference).await {
            tracing::warn!(%error, "publishing an event");
        }
        tracing::info!(container = %key(container), phase = ?decision.phase, message = %decision.message, "phase changed");
    }
    Ok(())
}
