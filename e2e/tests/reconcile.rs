//! The reconciler end to end on the real cluster, beside the router, both
//! in this process: a `Container` applied with kubectl becomes a pod with
//! the real sidecar image; its status, events, live and saved logs, a shell
//! with the real OpenSSH client, cancellation by deletion, and a gateway
//! reached only through the sidecar's tunnel.
//!
//! Each test owns a [`Rig`]: a namespace, a ServiceAccount token with the
//! Container subresource rights, the router (`KubeCluster`, `CachedAuth`
//! over `KubeAuth`, served on `0.0.0.0:0` so pods reach it at the node IP)
//! and the reconciler, both scoped to that namespace. Tests are plain
//! `#[test]`s that own a tokio runtime: the router and reconciler run on its
//! workers while the test thread runs kubectl, curl and ssh and polls with
//! `wait_until` (deadlines, never bare sleeps).

mod common;

use common::{client, ensure_crd, grant, hatch_binary, runtime, user_command, user_kubeconfig};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use futures::StreamExt;
use hatchway_api::crd::{Container, Phase};
use hatchway_api::proof::RootSecret;
use hatchway_e2e::{TestNamespace, WORKLOAD_IMAGE, kubectl_json, node_ip, run_within, wait_until};
use hatchway_operator::reconcile::controller::{self, ReconcileSettings};
use hatchway_operator::reconcile::metrics::ReconcileMetrics;
use hatchway_operator::reconcile::pod::PodSettings;
use hatchway_operator::router::auth::cache::CachedAuth;
use hatchway_operator::router::auth::kube::KubeAuth;
use hatchway_operator::router::cluster::kube::{KubeCluster, KubeClusterConfig};
use hatchway_operator::router::select::Policy;
use hatchway_operator::router::tls::{RouterCa, RouterTls};
use hatchway_operator::router::{Router, Settings, server};
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

const POLL: Duration = Duration::from_millis(200);
const WAIT: Duration = Duration::from_secs(60);
/// Scheduling, the sidecar's startup probe, then the workload.
const START: Duration = Duration::from_secs(120);
const SIDECAR_IMAGE: &str = "localhost/hatchway/sidecar:e2e";
/// The web apps' wildcard domain (curl maps every name to this host).
const APPS_DOMAIN: &str = "apps.hatchway.test";

/// One test's world: its namespace and user, and the router and the
/// reconciler serving only that namespace.
struct Rig {
    ns: TestNamespace,
    /// The router's port on every address of this host.
    port: u16,
    /// A ServiceAccount token that may `create containers/shell`, `get
    /// containers/log` and `create containers/portforward`.
    token: String,
    tls: RouterTls,
    ca_file: PathBuf,
    router: Arc<Router>,
    client: kube::Client,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
    /// Last: dropped after everything that runs on it.
    rt: Runtime,
}

impl Rig {
    /// Starts the router (with `policy`) and the reconciler for a new
    /// namespace `e2e-<prefix>-…`; with `tunnels`, Secrets carry the
    /// router's URL and sidecars dial it (the router then also writes the
    /// fingerprints the sidecar reports; without, only the reconciler's
    /// `/readyz` read does).
    fn start(prefix: &str, policy: Policy, tunnels: bool) -> Result<Self> {
        ensure_crd()?;
        let rt = runtime();
        let client = client(&rt)?;
        let ns = TestNamespace::new(prefix)?;
        ns.kubectl(&["create", "serviceaccount", "user"])?;
        grant(
            &ns,
            "user",
            "container-user",
            &[
                ("create", &["containers/shell", "containers/portforward"]),
                ("get", &["containers/log"]),
            ],
        )?;
        let token = ns
            .kubectl(&["create", "token", "user", "--duration=30m"])?
            .trim()
            .to_owned();

        let node_ip = node_ip()?;
        let ca = RouterCa::generate()?;
        let tls = RouterTls::issue(
            &ca,
            &[
                "localhost".to_owned(),
                node_ip.clone(),
                format!("*.{APPS_DOMAIN}"),
            ],
        )?;
        let dir = tempfile::tempdir()?;
        let ca_file = dir.path().join("ca.crt");
        std::fs::write(&ca_file, &tls.ca_pem)?;
        let root = RootSecret::new(rand::random::<[u8; 32]>().to_vec());
        let shutdown = CancellationToken::new();

        let (router, port) = rt.block_on(async {
            let listener = TcpListener::bind("0.0.0.0:0").await?;
            let port = listener.local_addr()?.port();
            let url = format!("https://{node_ip}:{port}");
            let cluster = KubeCluster::start(
                client.clone(),
                KubeClusterConfig {
                    namespaces: Some(vec![ns.name.clone()]),
                    replica_service: None,
                    split_log_streams: true,
                },
            );
            cluster.wait_until_ready().await;
            // Web apps at https://{uid}-{port}.apps.hatchway.test:{port}/.
            let apps = format!("{APPS_DOMAIN}:{port}");
            let mut settings = Settings::new(url.clone());
            settings.policy = policy;
            settings.wildcard_domain = Some(apps.clone());
            let auth = CachedAuth::new(
                KubeAuth::new(client.clone(), Vec::new()),
                Duration::from_secs(10),
                100,
            );
            let router = Router::new(
                settings,
                cluster,
                Arc::new(auth),
                root.clone(),
                tls.peer_client_config()?,
            );
            tokio::spawn(server::serve(
                router.clone(),
                listener,
                tls.server_config()?,
                shutdown.clone(),
            ));
            let settings = ReconcileSettings {
                pod: PodSettings {
                    sidecar_image: SIDECAR_IMAGE.to_owned(),
                    sidecar_pull_policy: "Never".to_owned(),
                    sidecar_resources: None,
                    priority_class: None,
                    log_format: "text".to_owned(),
                    shell_enabled: true,
                    resume_grace_seconds: 600,
                    record_shells: true,
                    port_forward_default: hatchway_api::ports::ForwardDefault::Any,
                    // The router runs on the host here, not in a pod a
                    // policy could name (the chart's e2e checks the policy).
                    gateway_policy: None,
                },
                tunnel_url: tunnels.then_some(url),
                router_ca_pem: tls.ca_pem.clone(),
                wildcard_domain: Some(apps),
                default_ttl_seconds: None,
                namespaces: vec![ns.name.clone()],
            };
            let metrics = ReconcileMetrics::new(&router.metrics.operator);
            tokio::spawn(controller::run(
                client.clone(),
                settings,
                root,
                metrics,
                shutdown.clone(),
            ));
            anyhow::Ok((router, port))
        })?;
        let rig = Rig {
            ns,
            port,
            token,
            tls,
            ca_file,
            router,
            client,
            shutdown,
            _dir: dir,
            rt,
        };
        // The RBAC authorizer sees the new binding a moment later: wait
        // until the user gets past authorization (404: no such Container).
        wait_until("the user's rights to apply", WAIT, POLL, || {
            let (code, body) = rig.curl("GET", &rig.api("nobody-here", "log/"))?;
            match code {
                404 => Ok(Some(())),
                403 => Ok(None),
                _ => bail!("unexpected {code}: {body}"),
            }
        })?;
        Ok(rig)
    }

    /// The user-API path of `action` on Container `name`.
    fn api(&self, name: &str, action: &str) -> String {
        format!("/v1/namespaces/{}/containers/{name}/{action}", self.ns.name)
    }

    /// `curl -X method` to the router as the rig's user: (status, body).
    fn curl(&self, method: &str, path: &str) -> Result<(u16, String)> {
        let mut curl = Command::new("curl");
        curl.args(["-sS", "--max-time", "20", "-X", method, "--cacert"])
            .arg(&self.ca_file)
            .args(["--resolve", &format!("localhost:{}:127.0.0.1", self.port)])
            .args(["-H", &format!("Authorization: Bearer {}", self.token)])
            .args(["-w", "\n%{http_code}"])
            .arg(format!("https://localhost:{}{path}", self.port));
        let out = run_within(curl, Duration::from_secs(30))?;
        ensure!(
            out.status.success(),
            "curl {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout)?;
        let (body, code) = text.rsplit_once('\n').context("no status line")?;
        Ok((code.parse()?, body.to_owned()))
    }

    /// Applies a Container running `command` (polling: right after the CRD
    /// is established, discovery may lag).
    fn create(&self, name: &str, command: &[&str]) -> Result<Instant> {
        let manifest = json!({
            "apiVersion": "hatchway.dev/v1alpha1",
            "kind": "Container",
            "metadata": { "name": name },
            "spec": { "image": WORKLOAD_IMAGE, "command": command },
        })
        .to_string();
        wait_until("the Container kind to be served", WAIT, POLL, || {
            Ok(Some(self.ns.apply(&manifest)?))
        })?;
        Ok(Instant::now())
    }

    /// The Container as JSON.
    fn get(&self, name: &str) -> Result<Value> {
        kubectl_json(&[
            "-n",
            &self.ns.name,
            "get",
            "containers.hatchway.dev",
            name,
            "-o",
            "json",
        ])
    }

    /// What the namespace, the Container's pod and its sidecar say: for
    /// failure messages.
    fn diagnostics(&self, name: &str) -> String {
        let selector = format!("hatchway.dev/container={name}");
        let mut out = self.ns.diagnostics();
        for args in [
            &["get", "containers.hatchway.dev", name, "-o", "yaml"][..],
            &["describe", "pods", "-l", &selector][..],
            &["logs", "-l", &selector, "-c", "hatchway-sidecar", "--tail=40"][..],
        ] {
            out.push_str(&format!("--- kubectl {}:\n", args.join(" ")));
            match self.ns.kubectl(args) {
                Ok(text) => out.push_str(&text),
                Err(err) => out.push_str(&format!("{err:#}\n")),
            }
        }
        out
    }

    /// Waits until `check` accepts the Container's status (it may bail to
    /// fail at once); the error carries the diagnostics.
    fn wait_status(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Value) -> Result<bool>,
    ) -> Result<Value> {
        let mut fatal = None;
        let result = wait_until(what, timeout, POLL, || {
            let status = self.get(name)?["status"].clone();
            match check(&status) {
                Ok(true) => Ok(Some(status)),
                Ok(false) => bail!("status: {status}"),
                Err(err) => {
                    fatal = Some(format!("{err:#}"));
                    Ok(Some(status))
                }
            }
        });
        match (result, fatal) {
            (Ok(status), None) => Ok(status),
            (Ok(_), Some(err)) => bail!("{err}\n{}", self.diagnostics(name)),
            (Err(err), _) => bail!("{err:#}\n{}", self.diagnostics(name)),
        }
    }

    /// Waits for phase Running with the gateway address and the
    /// fingerprints from the sidecar's `/readyz`.
    fn wait_running(&self, name: &str) -> Result<Value> {
        self.wait_status(name, "phase Running with a gateway", START, |s| {
            match s["phase"].as_str() {
                Some("Complete" | "Failed" | "Cancelled") => bail!("ended before it ran: {s}"),
                Some("Running") => {}
                _ => return Ok(false),
            }
            let g = &s["gateway"];
            Ok(["address", "certificateSha256", "hostKey"]
                .iter()
                .all(|k| g[k].as_str().is_some_and(|v| !v.is_empty())))
        })
    }

    /// Waits for the pod's own phase (the sidecar has stopped too once it
    /// is Succeeded or Failed).
    fn wait_pod_phase(&self, name: &str, pod: &str, phase: &str) -> Result<()> {
        wait_until(&format!("pod {pod} to be {phase}"), WAIT, POLL, || {
            let got = self
                .ns
                .kubectl(&["get", "pod", pod, "-o", "jsonpath={.status.phase}"])?;
            Ok((got == phase).then_some(()))
        })
        .map_err(|e| anyhow::anyhow!("{e:#}\n{}", self.diagnostics(name)))
    }

    /// Event reasons (and types) recorded for Container `name`.
    fn events(&self, name: &str) -> Result<Vec<(String, String)>> {
        let events = kubectl_json(&[
            "-n",
            &self.ns.name,
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.kind=Container,involvedObject.name={name}"),
            "-o",
            "json",
        ])?;
        Ok(events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["reason"].as_str().unwrap_or_default().to_owned(),
                    e["type"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect())
    }

    /// Waits until events with each of `reasons` are recorded for `name`.
    fn wait_events(&self, name: &str, reasons: &[&str]) -> Result<Vec<(String, String)>> {
        wait_until(&format!("events {reasons:?} for {name}"), WAIT, POLL, || {
            let events = self.events(name)?;
            if reasons
                .iter()
                .all(|r| events.iter().any(|(reason, _)| reason == r))
            {
                Ok(Some(events))
            } else {
                bail!("events so far: {events:?}")
            }
        })
    }

    /// A TLS client configuration that trusts only the router CA.
    fn client_tls(&self) -> Result<Arc<rustls::ClientConfig>> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(self.tls.ca_pem.as_bytes()) {
            roots.add(cert?)?;
        }
        let mut config = rustls::ClientConfig::builder_with_provider(hatchway_api::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![hatchway_api::tls::ALPN_HTTP1.to_vec()];
        Ok(Arc::new(config))
    }

    /// A local port that relays each connection through
    /// `POST …/NAME/ssh` (`Upgrade: ssh`) on the router: what `kubectl
    /// hatch connect-ssh` does as OpenSSH's ProxyCommand. The relay's
    /// failures are collected for the test's messages.
    fn ssh_relay(&self, name: &str) -> Result<(u16, Arc<Mutex<Vec<String>>>)> {
        let path = self.api(name, "ssh");
        let token = self.token.clone();
        let router = SocketAddr::from(([127, 0, 0, 1], self.port));
        let tls = self.client_tls()?;
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        let port = self.rt.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let port = listener.local_addr()?.port();
            tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let (path, token, tls, sink) = (path.clone(), token.clone(), tls.clone(), sink.clone());
                    tokio::spawn(async move {
                        if let Err(err) = relay(tcp, router, tls, &path, &token).await {
                            sink.lock().unwrap().push(format!("{err:#}"));
                        }
                    });
                }
            });
            anyhow::Ok(port)
        })?;
        Ok((port, errors))
    }

    /// Runs the real OpenSSH `program` (`ssh` or `sftp`) through a relay
    /// to Container `name`, checking the host key from its status; `args`
    /// follow the options and precede the destination.
    fn openssh(
        &self,
        program: &str,
        name: &str,
        host_key: &str,
        args: &[&str],
        tail: &[&str],
    ) -> Result<Output> {
        let (port, errors) = self.ssh_relay(name)?;
        let known_hosts = self._dir.path().join(format!("known_hosts-{port}"));
        hatchway_testkit::write_known_hosts(&known_hosts, port, host_key)?;
        let mut ssh = hatchway_testkit::openssh(program, port, &known_hosts);
        ssh.args(args).arg("tester@127.0.0.1").args(tail);
        let out = run_within(ssh, Duration::from_secs(60))?;
        let relay_errors = errors.lock().unwrap().clone();
        ensure!(
            relay_errors.is_empty(),
            "the relay failed: {relay_errors:?}; {program} said: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(out)
    }

    /// Runs `command` with the real OpenSSH client through a relay to
    /// Container `name`, checking the host key from its status.
    fn ssh(&self, name: &str, host_key: &str, command: &str) -> Result<Output> {
        self.openssh("ssh", name, host_key, &[], &[command])
    }
}

/// What a watch on one Container delivered, in order.
#[derive(Clone, Debug)]
enum Seen {
    Version(Box<Container>),
    Deleted,
    Error(String),
}

/// Every version of one Container the API server shows, from a watch
/// (polling could miss short-lived states); stopped on drop.
struct Watch {
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Watch {
    fn start(rig: &Rig, name: &str) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let api: Api<Container> = Api::namespaced(rig.client.clone(), &rig.ns.name);
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let task = rig.rt.spawn(async move {
            let mut events = std::pin::pin!(watcher(api, config).default_backoff());
            while let Some(event) = events.next().await {
                let seen = match event {
                    Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) => Seen::Version(Box::new(c)),
                    Ok(watcher::Event::Delete(_)) => Seen::Deleted,
                    Ok(_) => continue,
                    Err(err) => Seen::Error(err.to_string()),
                };
                sink.lock().unwrap().push(seen);
            }
        });
        Watch { seen, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Each version as `phase finalizer=bool`, `deleted` or `watch error`.
    fn phases(&self) -> Vec<String> {
        self.seen()
            .iter()
            .map(|s| match s {
                Seen::Version(c) => {
                    let phase = c.status.as_ref().and_then(|s| s.phase);
                    let finalizer = c
                        .metadata
                        .finalizers
                        .iter()
                        .flatten()
                        .any(|f| f == controller::FINALIZER);
                    format!("{phase:?} finalizer={finalizer}")
                }
                Seen::Deleted => "deleted".to_owned(),
                Seen::Error(err) => format!("watch error: {err}"),
            })
            .collect()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        // The finalizer needs a reconciler: delete the Containers while this
        // one still runs, else the namespace would never go.
        if std::env::var_os("HATCHWAY_E2E_KEEP").is_none()
            && self
                .ns
                .kubectl(&["delete", "containers.hatchway.dev", "--all", "--timeout=25s"])
                .is_err()
        {
            let names = self
                .ns
                .kubectl(&["get", "containers.hatchway.dev", "-o", "name"])
                .unwrap_or_default();
            for name in names.lines() {
                let _ = self.ns.kubectl(&[
                    "patch",
                    name,
                    "--type=merge",
                    "-p",
                    r#"{"metadata":{"finalizers":null}}"#,
                ]);
            }
        }
        self.shutdown.cancel();
    }
}

/// One relayed connection: TLS to the router, the upgrade, then raw bytes
/// both ways.
async fn relay(
    mut tcp: TcpStream,
    router: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    path: &str,
    token: &str,
) -> Result<()> {
    tcp.set_nodelay(true)?;
    let upstream = TcpStream::connect(router).await?;
    upstream.set_nodelay(true)?;
    let upstream = TlsConnector::from(tls)
        .connect(ServerName::try_from("localhost")?, upstream)
        .await
        .context("TLS to the router")?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let request = Request::post(path)
        .header(header::HOST, "localhost")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "ssh")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        let body = response.into_body().collect().await?.to_bytes();
        bail!("the router answered {status}: {}", String::from_utf8_lossy(&body));
    }
    let mut upgraded = TokioIo::new(hyper::upgrade::on(response).await?);
    tokio::io::copy_bidirectional(&mut tcp, &mut upgraded).await?;
    Ok(())
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// A Container runs under the sidecar; its live log and a real OpenSSH
/// shell go through the router; the shell makes the command finish; then
/// status says Complete (and that a session was opened), the same log path
/// serves the saved logs, and events record the transitions. No tunnel:
/// the fingerprints in status are the reconciler's own `/readyz` read, and
/// must stay put while the command runs.
#[test]
fn a_container_runs_serves_logs_and_a_shell_then_completes() -> Result<()> {
    let rig = Rig::start("rcrun", Policy::prefer(false), false)?;
    let name = "job";
    let applied = rig.create(
        name,
        &[
            "sh",
            "-c",
            "echo hello-from-workload; until [ -e /tmp/stop ]; do sleep 1; done; echo bye",
        ],
    )?;
    let watch = Watch::start(&rig, name);
    let status = rig.wait_running(name)?;
    let to_running = applied.elapsed();
    let pod_name = status["podName"].as_str().context("no podName")?.to_owned();
    let host_key = status["gateway"]["hostKey"]
        .as_str()
        .context("hostKey")?
        .to_owned();
    ensure!(
        status["gateway"]["certificateSha256"]
            .as_str()
            .is_some_and(|c| c.len() == 64 && c.bytes().all(|b| b.is_ascii_hexdigit())),
        "certificateSha256: {status}"
    );
    ensure!(status["startedAt"].is_string(), "startedAt: {status}");

    // The pod: the sidecar a native sidecar, the Secret only in it.
    let pods = rig.ns.container_pods(name)?;
    let items = pods["items"].as_array().context("items")?;
    ensure!(items.len() == 1, "{} pods for {name}", items.len());
    let pod = &items[0];
    ensure!(
        pod["metadata"]["name"] == pod_name.as_str(),
        "{}",
        pod["metadata"]
    );
    let spec = &pod["spec"];
    let find = |list: &str, container: &str| -> Result<Value> {
        spec[list]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == container)
            .cloned()
            .with_context(|| format!("no {container} in {list}: {spec}"))
    };
    let sidecar = find("initContainers", "hatchway-sidecar")?;
    ensure!(sidecar["restartPolicy"] == "Always", "{sidecar}");
    ensure!(sidecar["image"] == SIDECAR_IMAGE, "{sidecar}");
    let workload = find("containers", "workload")?;
    let secret_volumes: Vec<&str> = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["secret"].is_object())
        .filter_map(|v| v["name"].as_str())
        .collect();
    ensure!(!secret_volumes.is_empty(), "no Secret volume: {spec}");
    let mounts = |c: &Value| -> Vec<String> {
        c["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["name"].as_str().map(str::to_owned))
            .collect()
    };
    ensure!(
        mounts(&sidecar)
            .iter()
            .any(|m| secret_volumes.contains(&m.as_str())),
        "the sidecar does not mount the Secret: {sidecar}"
    );
    ensure!(
        !mounts(&workload)
            .iter()
            .any(|m| secret_volumes.contains(&m.as_str())),
        "the workload mounts the Secret: {workload}"
    );
    ensure!(spec["automountServiceAccountToken"] == false, "{spec}");
    let pod_ip = pod["status"]["podIP"].as_str().context("podIP")?;
    ensure!(
        status["gateway"]["address"] == format!("{pod_ip}:7443").as_str(),
        "address {} for pod IP {pod_ip}",
        status["gateway"]["address"]
    );

    // The live log, from the gateway through the router.
    let log = rig.api(name, "log/stdout.txt");
    wait_until("the live log through the router", WAIT, POLL, || {
        let (code, body) = rig.curl("GET", &log)?;
        ensure!(code == 200, "{code}: {body}");
        Ok(body.contains("hello-from-workload").then_some(()))
    })?;

    // A shell with the real OpenSSH client, the host key pinned.
    let out = rig.ssh(name, &host_key, "touch /tmp/stop; echo shell-ok")?;
    let (stdout, stderr) = text(&out);
    ensure!(
        out.status.code() == Some(0) && stdout.trim() == "shell-ok",
        "ssh exited {:?}: stdout {stdout:?}, stderr {stderr:?}",
        out.status.code()
    );

    let status = rig.wait_status(name, "phase Complete", WAIT, |s| {
        match s["phase"].as_str() {
            Some("Failed" | "Cancelled") => bail!("did not complete: {s}"),
            Some("Complete") => {}
            _ => return Ok(false),
        }
        Ok(s["interactiveSessionStarted"] == true)
    })?;
    let to_complete = applied.elapsed();
    ensure!(status["exitCode"] == 0, "exitCode: {status}");
    ensure!(status["finishedAt"].is_string(), "finishedAt: {status}");
    ensure!(status["podName"] == pod_name.as_str(), "podName: {status}");

    // Once the fingerprints were in status they stayed, unchanged, while
    // the command ran (the gateway did not restart).
    let gateways: Vec<_> = watch
        .seen()
        .into_iter()
        .filter_map(|s| match s {
            Seen::Version(c) => c.status.filter(|s| s.phase == Some(Phase::Running)),
            _ => None,
        })
        .map(|s| s.gateway.unwrap_or_default())
        .collect();
    let first = gateways
        .iter()
        .position(|g| g.certificate_sha256.is_some())
        .context("no Running version with fingerprints")?;
    ensure!(
        gateways[first..]
            .iter()
            .all(|g| g.certificate_sha256 == gateways[first].certificate_sha256
                && g.host_key == gateways[first].host_key),
        "the gateway in status changed while running ({} versions; the first: {:#?})",
        gateways.len(),
        &gateways[first..gateways.len().min(first + 4)]
    );

    // Saved logs: once the pod is done the sidecar is gone, so only the
    // Kubernetes API can answer the same path.
    rig.wait_pod_phase(name, &pod_name, "Succeeded")?;
    let (code, body) = rig.curl("GET", &log)?;
    ensure!(
        code == 200 && body.contains("hello-from-workload") && body.contains("bye"),
        "saved log: {code} {body:?}"
    );

    let events = rig.wait_events(name, &["Running", "Complete"])?;
    ensure!(
        events.iter().all(|(_, kind)| kind == "Normal"),
        "events: {events:?}"
    );
    eprintln!(
        "timings: apply -> Running (gateway, fingerprints) {}, apply -> Complete {}",
        secs(to_running),
        secs(to_complete)
    );
    rig.ns.passed();
    Ok(())
}

/// A command that exits 3 ends Failed with that code, a Warning event,
/// and its stderr in the saved logs.
#[test]
fn a_failing_command_ends_failed_with_its_code() -> Result<()> {
    let rig = Rig::start("rcfail", Policy::prefer(false), false)?;
    let name = "oops";
    let applied = rig.create(name, &["sh", "-c", "echo oops >&2; exit 3"])?;
    let status = rig.wait_status(name, "phase Failed", START, |s| match s["phase"].as_str() {
        Some("Complete" | "Cancelled") => bail!("did not fail: {s}"),
        Some("Failed") => Ok(true),
        _ => Ok(false),
    })?;
    let to_failed = applied.elapsed();
    ensure!(status["exitCode"] == 3, "exitCode: {status}");
    ensure!(status["finishedAt"].is_string(), "finishedAt: {status}");
    let events = rig.wait_events(name, &["Failed"])?;
    ensure!(
        events
            .iter()
            .any(|(reason, kind)| reason == "Failed" && kind == "Warning"),
        "events: {events:?}"
    );

    let pod_name = status["podName"].as_str().context("no podName")?;
    rig.wait_pod_phase(name, pod_name, "Failed")?;
    let (code, body) = rig.curl("GET", &rig.api(name, "log/stderr.txt"))?;
    ensure!(
        code == 200 && body.contains("oops"),
        "saved stderr: {code} {body:?}"
    );
    eprintln!("timings: apply -> Failed {}", secs(to_failed));
    rig.ns.passed();
    Ok(())
}

/// Deleting a running Container records Cancelled (the finalizer holds it
/// while its pod goes), then the Container and its pod are gone.
#[test]
fn deleting_a_running_container_cancels_it() -> Result<()> {
    let rig = Rig::start("rccancel", Policy::prefer(false), true)?;
    let name = "sleeper";
    rig.create(name, &["sh", "-c", "echo up; while true; do sleep 1; done"])?;
    rig.wait_running(name)?;

    // Every phase the API server shows (the Cancelled window is as short
    // as the pod's termination).
    let watch = Watch::start(&rig, name);
    wait_until("the watch to see the Container", WAIT, POLL, || {
        Ok(watch
            .phases()
            .iter()
            .any(|p| p.starts_with("Some(Running)"))
            .then_some(()))
    })?;

    let deleted = Instant::now();
    rig.ns
        .kubectl(&["delete", "containers.hatchway.dev", name, "--wait=false"])?;
    wait_until("phase Cancelled", WAIT, POLL, || {
        let seen = watch.phases();
        if seen.iter().any(|p| p == "Some(Cancelled) finalizer=true") {
            Ok(Some(()))
        } else {
            bail!("phases seen: {seen:?}")
        }
    })
    .map_err(|e| anyhow::anyhow!("{e:#}\n{}", rig.diagnostics(name)))?;
    let to_cancelled = deleted.elapsed();
    wait_until("the Container to go", WAIT, POLL, || {
        let seen = watch.phases();
        if seen.last().is_some_and(|p| p == "deleted") {
            Ok(Some(()))
        } else {
            bail!("phases seen: {seen:?}")
        }
    })
    .map_err(|e| anyhow::anyhow!("{e:#}\n{}", rig.diagnostics(name)))?;
    let to_gone = deleted.elapsed();
    let seen = watch.phases();
    // Cancelled is final: nothing else after it.
    let first = seen
        .iter()
        .position(|p| p.starts_with("Some(Cancelled)"))
        .context("Cancelled")?;
    ensure!(
        seen[first..]
            .iter()
            .all(|p| p.starts_with("Some(Cancelled)") || p == "deleted"),
        "phases seen: {seen:?}"
    );
    let selector = format!("hatchway.dev/container={name}");
    let pods = rig.ns.kubectl(&["get", "pods", "-l", &selector, "-o", "name"])?;
    ensure!(pods.trim().is_empty(), "pods left: {pods}");
    let gone = rig.ns.kubectl(&[
        "get",
        "containers.hatchway.dev",
        name,
        "--ignore-not-found",
        "-o",
        "name",
    ])?;
    ensure!(gone.trim().is_empty(), "still there: {gone}");
    let events = rig.wait_events(name, &["Running", "Cancelled"])?;
    eprintln!(
        "timings: delete -> Cancelled {}, delete -> Container gone {}; phases {seen:?}; events {events:?}",
        secs(to_cancelled),
        secs(to_gone)
    );
    rig.ns.passed();
    Ok(())
}

/// A router that may not dial pods: the sidecar's tunnel (to the URL and
/// CA in its Secret) is the only way in, and a shell works through it.
#[test]
fn shell_through_the_tunnel_only() -> Result<()> {
    let rig = Rig::start(
        "rctunnel",
        Policy {
            prefer_tunnel: false,
            direct_access: false,
        },
        true,
    )?;
    let name = "tunneled";
    let applied = rig.create(
        name,
        &[
            "sh",
            "-c",
            "echo via-tunnel; until [ -e /tmp/stop ]; do sleep 1; done",
        ],
    )?;
    rig.wait_running(name)?;
    let status = rig.wait_status(name, "gateway.tunnel", WAIT, |s| {
        Ok(s["gateway"]["tunnel"].as_str().is_some_and(|t| !t.is_empty()))
    })?;
    let to_tunnel = applied.elapsed();
    let expected = format!("tunnel {}", rig.router.settings.self_url);
    ensure!(
        status["gateway"]["tunnel"] == expected.as_str(),
        "tunnel {} (expected {expected})",
        status["gateway"]["tunnel"]
    );
    let host_key = status["gateway"]["hostKey"].as_str().context("hostKey")?;

    let (code, body) = rig.curl("GET", &rig.api(name, "log/stdout.txt"))?;
    ensure!(code == 200 && body.contains("via-tunnel"), "log: {code} {body:?}");
    let out = rig.ssh(name, host_key, "echo tunnel-ok; touch /tmp/stop")?;
    let (stdout, stderr) = text(&out);
    ensure!(
        out.status.code() == Some(0) && stdout.trim() == "tunnel-ok",
        "ssh exited {:?}: stdout {stdout:?}, stderr {stderr:?}",
        out.status.code()
    );
    // Every gateway connection went through the tunnel, none direct: the
    // log read and the shell at least.
    let metrics = &rig.router.metrics;
    let choices = |outcome: &str| metrics.gateway_choices.with_label_values(&[outcome]).get();
    let (tunnel, direct) = (choices("local_tunnel"), choices("direct"));
    ensure!(
        tunnel >= 2 && direct == 0,
        "gateway choices: {tunnel} local_tunnel, {direct} direct"
    );
    ensure!(
        metrics.tunnels_connected.get() == 1,
        "tunnels held: {}",
        metrics.tunnels_connected.get()
    );
    rig.wait_status(name, "phase Complete", WAIT, |s| match s["phase"].as_str() {
        Some("Failed" | "Cancelled") => bail!("did not complete: {s}"),
        Some("Complete") => Ok(s["interactiveSessionStarted"] == true),
        _ => Ok(false),
    })?;
    eprintln!("timings: apply -> tunnel in status {}", secs(to_tunnel));
    rig.ns.passed();
    Ok(())
}

/// `ttlSecondsAfterFinished`: a finished Container is deleted (with its pod
/// and Secret) once its time is up, not before it finishes.
#[test]
fn a_finished_container_is_deleted_after_its_ttl() -> Result<()> {
    let rig = Rig::start("rcttl", Policy::prefer(false), false)?;
    let name = "brief";
    let manifest = json!({
        "apiVersion": "hatchway.dev/v1alpha1",
        "kind": "Container",
        "metadata": { "name": name },
        "spec": {
            "image": WORKLOAD_IMAGE,
            "command": ["sh", "-c", "echo done"],
            "ttlSecondsAfterFinished": 3,
        },
    })
    .to_string();
    wait_until("the Container kind to be served", WAIT, POLL, || {
        Ok(Some(rig.ns.apply(&manifest)?))
    })?;
    let status = rig.wait_status(name, "phase Complete", START, |s| match s["phase"].as_str() {
        Some("Failed" | "Cancelled") => bail!("did not complete: {s}"),
        Some("Complete") => Ok(true),
        _ => Ok(false),
    })?;
    let finished = Instant::now();
    let pod = status["podName"].as_str().context("no podName")?.to_owned();
    wait_until("the Container to be deleted after its TTL", WAIT, POLL, || {
        let left = rig
            .ns
            .kubectl(&["get", "containers.hatchway.dev", "-o", "name"])?;
        Ok((!left.contains(name)).then_some(()))
    })?;
    let after = finished.elapsed();
    // Not deleted before it finished plus (about) its TTL.
    ensure!(
        after >= Duration::from_secs(1),
        "deleted {after:?} after Complete"
    );
    wait_until("its pod to go too", WAIT, POLL, || {
        let pods = rig.ns.kubectl(&["get", "pods", "-o", "name"])?;
        Ok((!pods.contains(&pod)).then_some(()))
    })?;
    eprintln!("timings: Complete -> deleted {}", secs(after));
    rig.ns.passed();
    Ok(())
}

/// `kubectl hatch` as a user runs it, with only a kubeconfig: the router's
/// URL and CA found in the `hatchway-client` ConfigMap (as the operator
/// publishes it), `get`, a command through `shell` (the real ssh), and
/// `open` of a private web app: the login link through the token→cookie
/// step, with curl as the browser, serves the page.
#[test]
fn the_cli_finds_the_router_lists_shells_and_opens_a_web_app() -> Result<()> {
    let rig = Rig::start("cli", Policy::prefer(false), false)?;
    grant(
        &rig.ns,
        "user",
        "container-reader",
        &[
            ("get", &["containers", "containers/proxy"]),
            ("list", &["containers"]),
        ],
    )?;
    rig.ns.apply(&format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{ name: hatchway-client-reader }}
rules:
- {{ apiGroups: [""], resources: [configmaps], resourceNames: [hatchway-client], verbs: [get] }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{ name: user-hatchway-client-reader }}
roleRef: {{ apiGroup: rbac.authorization.k8s.io, kind: Role, name: hatchway-client-reader }}
subjects:
- {{ kind: ServiceAccount, name: user, namespace: {ns} }}
"#,
        ns = rig.ns.name
    ))?;
    rig.rt
        .block_on(hatchway_operator::bootstrap::publish_client_config(
            rig.client.clone(),
            &rig.ns.name,
            &format!("https://localhost:{}", rig.port),
            &rig.tls.ca_pem,
        ))?;
    let manifest = json!({
        "apiVersion": "hatchway.dev/v1alpha1",
        "kind": "Container",
        "metadata": { "name": "web" },
        "spec": {
            "image": WORKLOAD_IMAGE,
            "command": ["/bin/httpd", "-f", "-v", "-p", "8080", "-h", "/www"],
            "publishedPorts": [{ "port": 8080 }],
        },
    })
    .to_string();
    wait_until("the Container kind to be served", WAIT, POLL, || {
        Ok(Some(rig.ns.apply(&manifest)?))
    })?;
    rig.wait_running("web")?;
    let status = rig.wait_status("web", "the web app's URL", WAIT, |s| {
        Ok(s["publishedPorts"][0]["url"]
            .as_str()
            .is_some_and(|u| !u.is_empty()))
    })?;
    let url = status["publishedPorts"][0]["url"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let dir = tempfile::tempdir()?;
    let kubeconfig = user_kubeconfig(&rig.token, &rig.ns.name, dir.path())?;
    let bin = hatch_binary()?;
    let hatch = |args: &[&str]| {
        let mut command = user_command(&bin, &kubeconfig, dir.path(), &rig.ns.name);
        command.args(args);
        command
    };
    let show = |out: &Output| {
        format!(
            "{:?}: stdout {} stderr {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };

    let out = run_within(hatch(&["get"]), WAIT)?;
    ensure!(out.status.success(), "get: {}", show(&out));
    let table = String::from_utf8(out.stdout.clone())?;
    ensure!(
        table
            .lines()
            .any(|l| l.starts_with("web ") && l.contains("Running") && l.contains("8080")),
        "get: {}",
        show(&out)
    );

    let out = run_within(
        hatch(&["shell", "web", "--", "cat /www/index.html; exit 4"]),
        WAIT,
    )?;
    ensure!(out.status.code() == Some(4), "shell: {}", show(&out));
    ensure!(
        String::from_utf8_lossy(&out.stdout).contains("hatchway e2e workload"),
        "shell: {}",
        show(&out)
    );

    // `open` prints the plain URL; the browser gets the login link.
    let page = dir.path().join("page.html");
    let browser = dir.path().join("browser");
    std::fs::write(
        &browser,
        format!(
            "#!/bin/sh
exec curl -sS -f -L --max-time 20 --cacert {ca} --connect-to ::127.0.0.1:{port} \
               -c {jar} -b {jar} -o {page} -w '%{{num_redirects}}' \"$1\"
",
            ca = rig.ca_file.display(),
            port = rig.port,
            jar = dir.path().join("cookies").display(),
            page = page.display(),
        ),
    )?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&browser, std::fs::Permissions::from_mode(0o755))?;
    let mut open = hatch(&["open", "web", "8080", "--browser"]);
    open.env("BROWSER", &browser);
    let out = run_within(open, WAIT)?;
    ensure!(out.status.success(), "open: {}", show(&out));
    let stdout = String::from_utf8(out.stdout.clone())?;
    ensure!(
        stdout.trim_end().starts_with(&url),
        "open printed {stdout:?}, not {url}"
    );
    ensure!(!stdout.contains(&rig.token), "open printed the token");
    ensure!(
        stdout.trim_end().ends_with('1'),
        "one redirect (the cookie step): {}",
        show(&out)
    );
    let served = std::fs::read_to_string(&page)?;
    ensure!(served.contains("hatchway e2e workload"), "the page: {served}");
    // The plain URL alone is refused (the cookie step is what lets in).
    let out = run_within(
        {
            let mut curl = Command::new("curl");
            curl.args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "20",
                "--cacert",
            ])
            .arg(&rig.ca_file)
            .args(["--connect-to", &format!("::127.0.0.1:{}", rig.port), &url]);
            curl
        },
        WAIT,
    )?;
    ensure!(
        String::from_utf8_lossy(&out.stdout) == "401",
        "without the cookie: {}",
        show(&out)
    );

    // `logs --since`: the kubelet's timestamps pick the lines.
    let ticker = json!({
        "apiVersion": "hatchway.dev/v1alpha1",
        "kind": "Container",
        "metadata": { "name": "ticker" },
        "spec": {
            "image": WORKLOAD_IMAGE,
            "command": ["sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done"],
        },
    })
    .to_string();
    rig.ns.apply(&ticker)?;
    rig.wait_running("ticker")?;
    let ticks = |out: &Output| -> Vec<u32> {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("tick ")?.parse().ok())
            .collect()
    };
    wait_until("eight ticks", WAIT, POLL, || {
        let out = run_within(hatch(&["logs", "ticker"]), WAIT)?;
        ensure!(out.status.success(), "logs: {}", show(&out));
        Ok(ticks(&out).last().is_some_and(|t| *t >= 7).then_some(()))
    })?;
    let out = run_within(hatch(&["logs", "ticker", "--since", "3s"]), WAIT)?;
    ensure!(out.status.success(), "logs --since: {}", show(&out));
    let recent = ticks(&out);
    let all = ticks(&run_within(hatch(&["logs", "ticker"]), WAIT)?);
    let last = *all.last().context("no ticks")?;
    ensure!(
        !recent.is_empty() && recent.iter().all(|t| *t + 6 >= last) && !recent.contains(&0),
        "--since 3s gave {recent:?}; all: {all:?}"
    );
    rig.ns.passed();
    Ok(())
}

/// The workload is the attacker (docs/security.md): as root in its own
/// container it plants symlinks to the sidecar's Secret and audit trail, a
/// FIFO, a directory and a forged `gateway.txt` in the log directory, tries
/// to rename the log directory and to overwrite the shim's binary (which the
/// SFTP helper used to be run from), to take the spawn socket's name, and to
/// get a root session from the shim as the sidecar's uid (65532) and as
/// root. Every attack fails, the log routes serve only the real files, the
/// key appears in no answer, and shells and SFTP still work.
#[test]
fn a_hostile_workload_cannot_reach_what_the_sidecar_trusts() -> Result<()> {
    let rig = Rig::start("rcsec", Policy::prefer(false), false)?;
    let name = "hostile";
    let script = r#"
cd /hatchway/log || exit 9
ln -s /run/hatchway/secret/ctr_key key.txt
ln -s /run/hatchway/secret secret
ln -s /run/hatchway/audit/gateway.txt audit.txt
ln -s / root
mkfifo fifo.txt
mkdir sub && echo inner > sub/inner.txt
echo FORGED-AUDIT > gateway.txt
mv /hatchway/log /hatchway/log-moved 2>/dev/null && echo 'rename-log: MOVED' || echo 'rename-log: refused'
echo evil > /hatchway/bin/hatchway-sidecar 2>/dev/null && echo 'overwrite-shim: WRITTEN' || echo 'overwrite-shim: refused'
ls /run/hatchway/secret/ctr_key 2>/dev/null && echo 'secret-visible: YES' || echo 'secret-visible: no'
/bin/attack bind-spawn
/bin/attack spawn-as 65532
/bin/attack spawn-as 0
echo attacks-done
until [ -e /tmp/stop ]; do sleep 1; done
"#;
    rig.create(name, &["sh", "-c", script])?;
    let status = rig.wait_running(name)?;
    let host_key = status["gateway"]["hostKey"]
        .as_str()
        .context("hostKey")?
        .to_owned();
    let stdout = rig.api(name, "log/stdout.txt");
    let log = wait_until("the attacks to finish", WAIT, POLL, || {
        let (code, body) = rig.curl("GET", &stdout)?;
        ensure!(code == 200, "{code}: {body}");
        Ok(body.contains("attacks-done").then_some(body))
    })
    .with_context(|| rig.diagnostics(name))?;
    for expected in [
        "rename-log: refused",
        "overwrite-shim: refused",
        "secret-visible: no",
        "bind-spawn: refused: the name is taken",
        "spawn-as 65532: refused: the spawn socket serves only the Hatchway gateway: this peer (pid ",
        "spawn-as 0: refused: the spawn socket serves only the Hatchway gateway: this peer (pid ",
    ] {
        ensure!(
            log.contains(expected),
            "missing {expected:?} in the workload's log:\n{log}"
        );
    }

    // The log routes: every planted name is 404, quickly (a FIFO never
    // blocks), and the key is in no answer.
    // The key Secret has a generated name: the one the pod mounts.
    let pod = status["podName"].as_str().context("podName")?;
    let volumes =
        kubectl_json(&["-n", &rig.ns.name, "get", "pod", pod, "-o", "json"])?["spec"]["volumes"].clone();
    let secret = volumes
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|v| v["secret"]["secretName"].as_str())
        .context("the pod mounts no Secret")?
        .to_owned();
    let key = kubectl_json(&["-n", &rig.ns.name, "get", "secret", &secret, "-o", "json"])?["data"]["ctr_key"]
        .as_str()
        .context("ctr_key in the Container's Secret")?
        .to_owned();
    let mut decode = Command::new("sh");
    decode.args(["-c", &format!("printf %s '{key}' | base64 -d")]);
    let key = String::from_utf8(run_within(decode, Duration::from_secs(10))?.stdout)?;
    ensure!(key.trim().len() == 64, "ctr_key: {key:?}");
    let mut answers = Vec::new();
    for file in [
        "key.txt",
        "audit.txt",
        "fifo.txt",
        "secret",
        "secret/ctr_key",
        "root/run/hatchway/secret/ctr_key",
        "sub/inner.txt",
        "..%2F..%2Frun%2Fhatchway%2Fsecret%2Fctr_key",
    ] {
        let (code, body) = rig.curl("GET", &rig.api(name, &format!("log/{file}")))?;
        ensure!(code == 404, "GET log/{file}: {code} {body:?}");
        answers.push(body);
    }
    let (code, audit) = rig.curl("GET", &rig.api(name, "log/gateway.txt"))?;
    ensure!(
        code == 200 && !audit.contains("FORGED"),
        "gateway.txt: {code} {audit:?}"
    );
    let (code, listing) = rig.curl("PROPFIND", &rig.api(name, "log/"))?;
    ensure!(code == 207, "PROPFIND: {code} {listing}");
    for planted in ["key.txt", "audit.txt", "fifo.txt", "secret", "root", "sub/"] {
        ensure!(
            !listing.contains(&format!("/log/{planted}<")) && !listing.contains(&format!("/log/{planted}/<")),
            "PROPFIND lists {planted}: {listing}"
        );
    }
    answers.extend([audit, listing, log]);
    ensure!(
        answers.iter().all(|a| !a.contains(key.trim())),
        "the container key appeared in an answer"
    );

    // What the user asked for still works: a shell, and SFTP (the helper
    // runs from the shim's own binary, not from /hatchway/bin).
    let out = rig.ssh(name, &host_key, "id -u; echo shell-ok")?;
    let (out_text, err_text) = text(&out);
    ensure!(
        out.status.code() == Some(0) && out_text == "0\nshell-ok\n",
        "ssh: {:?} {out_text:?} {err_text:?}",
        out.status.code()
    );
    let batch = rig._dir.path().join("sftp-batch");
    std::fs::write(&batch, "put /etc/hostname /tmp/uploaded\nls -l /tmp/uploaded\n")?;
    let out = rig.openssh(
        "sftp",
        name,
        &host_key,
        &["-b", &batch.display().to_string()],
        &[],
    )?;
    let (out_text, err_text) = text(&out);
    ensure!(
        out.status.code() == Some(0) && out_text.contains("/tmp/uploaded"),
        "sftp: {:?} {out_text:?} {err_text:?}",
        out.status.code()
    );
    rig.ssh(name, &host_key, "touch /tmp/stop")?;
    rig.ns.passed();
    Ok(())
}
