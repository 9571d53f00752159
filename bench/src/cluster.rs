//! The on-cluster case: Hatchway as `make demo` installs it (the chart,
//! the release images, the router in its pod on a NodePort, the sidecar
//! in a real pod on the pod network) beside `kubectl port-forward` to the
//! same pod and the pod's own address, in the same run. What it adds to
//! the loopback cases: the pod network (veth, bridge, the node's
//! iptables), the router and sidecar in their containers with the chart's
//! settings, and the CLI finding the router from a kubeconfig as a user
//! does. Every path carries 256 MiB into the same sink process in the
//! pod (e2e/src/bin/sink.rs), as the demo's user (`edit` in its
//! namespace).

use std::ffi::{OsStr, OsString};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{Context, Result};

use crate::cases::{Row, progress, sink_bulk, throughput};
use crate::tools::{Bg, KubectlForward, free_port, kubectl, sink_command, wait_listening};

/// The Container the case creates (and deletes) in the demo's namespace.
const NAME: &str = "bench-sink";
const SINK_PORT: u16 = 5201;
const TOTAL: usize = 256 << 20;
/// The reference path that is no forward at all.
const POD_IP: &str = "pod IP directly";

/// What `make demo` (e2e/demo) left: the user's kubeconfig and the
/// namespaces.
struct Demo {
    kubeconfig: OsString,
    /// Where the chart is installed (the CLI finds the router there).
    install_namespace: String,
    /// The user's namespace (the sample Container's).
    namespace: String,
}

impl Demo {
    /// The demo install, when there is one and its cluster answers.
    fn find() -> Option<Self> {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
        let kubeconfig = cache.join("hatchway/demo/kubeconfig");
        let demo = Self {
            kubeconfig: kubeconfig.into_os_string(),
            install_namespace: std::env::var("HATCHWAY_DEMO_NAMESPACE")
                .unwrap_or_else(|_| "hatchway-system".into()),
            namespace: "demo".into(),
        };
        demo.kubectl(&["get", "containers.hatchway.dev"])
            .ok()
            .map(|_| demo)
    }

    fn kubectl(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", &self.namespace];
        all.extend(args);
        kubectl(&self.kubeconfig, &all)
    }

    /// `kubectl hatch port-forward` as the demo's user, to the sink.
    fn port_forward(&self, listen: u16, flags: &[&str]) -> Result<Bg> {
        let mut command = crate::rig::hatch_command()?;
        let mapping = format!("{listen}:{SINK_PORT}");
        command
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HATCHWAY_NAMESPACE", &self.install_namespace)
            .args(["-n", &self.namespace, "port-forward", NAME, &mapping])
            .args(flags)
            .stdout(Stdio::null());
        let bg = Bg::spawn("kubectl hatch port-forward (on the cluster)", &mut command)?;
        wait_listening(listen, "kubectl hatch port-forward (on the cluster)")?;
        Ok(bg)
    }
}

/// The sink Container, deleted on drop.
struct Sink<'a> {
    demo: &'a Demo,
    pod: String,
    address: SocketAddr,
}

impl<'a> Sink<'a> {
    fn create(demo: &'a Demo) -> Result<Self> {
        let manifest = serde_json::json!({
            "apiVersion": "hatchway.dev/v1alpha1", "kind": "Container",
            "metadata": {"name": NAME, "namespace": demo.namespace},
            "spec": {
                "image": "localhost/hatchway/workload:e2e",
                "command": sink_command(SINK_PORT),
            },
        })
        .to_string();
        let file = tempfile::NamedTempFile::new()?;
        std::fs::write(file.path(), manifest)?;
        demo.kubectl(&["apply", "-f", &file.path().display().to_string()])?;
        // Deleted from here on, whatever fails.
        let mut sink = Self {
            demo,
            pod: String::new(),
            address: SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        demo.kubectl(&[
            "wait",
            "--for=jsonpath={.status.phase}=Running",
            &format!("containers.hatchway.dev/{NAME}"),
            "--timeout=180s",
        ])?;
        sink.pod = demo.kubectl(&[
            "get",
            &format!("containers.hatchway.dev/{NAME}"),
            "-o",
            "jsonpath={.status.podName}",
        ])?;
        let ip = demo.kubectl(&["get", "pod", &sink.pod, "-o", "jsonpath={.status.podIP}"])?;
        let ip: std::net::IpAddr = ip
            .trim()
            .parse()
            .with_context(|| format!("the pod's IP {ip:?}"))?;
        sink.address = SocketAddr::new(ip, SINK_PORT);
        Ok(sink)
    }
}

impl Drop for Sink<'_> {
    fn drop(&mut self) {
        let _ = self.demo.kubectl(&[
            "delete",
            &format!("containers.hatchway.dev/{NAME}"),
            "--wait=false",
        ]);
    }
}

/// 256 MiB into a sink in a pod, 1 and 8 streams: through `kubectl
/// hatch port-forward` to the router's URL (resumable and not) and
/// through the API server (the aggregated API, the CLI's default where
/// the cluster serves it), `kubectl port-forward`, and to the pod's IP.
/// Nothing when `make demo` has not installed Hatchway.
pub fn on_cluster(repeats: usize) -> Result<Vec<Row>> {
    let Some(demo) = Demo::find() else {
        progress("no demo install (make demo): the on-cluster case is not measured");
        return Ok(Vec::new());
    };
    let sink = Sink::create(&demo)?;
    progress(&format!(
        "on the cluster: sink pod {} at {}",
        sink.pod, sink.address
    ));
    let hatchway = free_port()?;
    let plain = free_port()?;
    let aggregated = free_port()?;
    let kubectl_port = free_port()?;
    let paths = vec![
        (POD_IP.to_owned(), 0, Vec::new()),
        ("kubectl port-forward".to_owned(), kubectl_port, Vec::new()),
        (
            "hatchway on the cluster".to_owned(),
            hatchway,
            vec![demo.port_forward(hatchway, &["--api", "direct"])?],
        ),
        (
            "hatchway on the cluster, not resumable".to_owned(),
            plain,
            vec![demo.port_forward(plain, &["--api", "direct", "--no-resume"])?],
        ),
        (
            "hatchway on the cluster, through the API server".to_owned(),
            aggregated,
            vec![demo.port_forward(aggregated, &["--api", "aggregated"])?],
        ),
    ];
    let mut kubectl = KubectlForward::to(
        OsStr::new(&demo.kubeconfig),
        &demo.namespace,
        &sink.pod,
        kubectl_port,
        SINK_PORT,
    )?;
    throughput(
        &paths,
        "on the cluster: 256 MiB to a sink in a pod",
        repeats,
        None,
        |name, port, streams| {
            let address = if name == POD_IP {
                sink.address
            } else {
                if name == "kubectl port-forward" {
                    kubectl.ensure_running()?;
                }
                SocketAddr::from(([127, 0, 0, 1], port))
            };
            sink_bulk(address, TOTAL, streams as usize)
        },
    )
}
