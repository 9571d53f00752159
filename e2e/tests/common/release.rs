//! A helm release of the chart and its users, for the e2e tests that
//! install Hatchway as users do (`chart.rs`, `sessions.rs`).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use hatchway_e2e::{TestNamespace, WORKLOAD_IMAGE, kubectl_json, node_ip, run_within, wait_until};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{hatch_binary, user_command, user_kubeconfig};

pub const POLL: Duration = Duration::from_millis(250);
pub const WAIT: Duration = Duration::from_secs(90);
/// Web apps' wildcard domain (every test maps its names to the node).
pub const APPS: &str = "apps.hatchway.test";

pub fn chart_dir() -> PathBuf {
    hatchway_e2e::repo_dir().join("charts/hatchway")
}

pub fn show(out: &Output) -> String {
    format!(
        "{:?}: stdout {:?} stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A free local port (bound and released: the OS picks it).
/// Runs `port_forward` (a `kubectl-hatch port-forward NAME :PORT/udp`,
/// its output kept in `dir`) and sends `datagram` through it until one
/// comes back (UDP may lose one while the flow starts); returns the answer.
pub fn udp_round_trip(mut port_forward: Command, dir: &std::path::Path, datagram: &[u8]) -> Result<Vec<u8>> {
    let out = dir.join("pf-udp.out");
    port_forward
        .stdout(std::fs::File::create(&out)?)
        .stderr(Stdio::null());
    let mut child = port_forward.spawn()?;
    let answer = (|| -> Result<Vec<u8>> {
        let local: std::net::SocketAddr = wait_until("the UDP port-forward to listen", WAIT, POLL, || {
            let text = std::fs::read_to_string(&out)?;
            Ok(text.split_whitespace().nth(2).and_then(|a| a.parse().ok()))
        })?;
        let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
        socket.set_read_timeout(Some(Duration::from_secs(2)))?;
        wait_until("a datagram back through the UDP forward", WAIT, POLL, || {
            socket.send_to(datagram, local)?;
            let mut buf = [0u8; 2048];
            Ok(socket.recv_from(&mut buf).ok().map(|(n, _)| buf[..n].to_vec()))
        })
    })();
    let _ = child.kill();
    let _ = child.wait();
    answer
}

pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One helm release of the chart, uninstalled on drop.
pub struct Release {
    pub name: String,
    pub ns: TestNamespace,
    pub node_ip: String,
    pub node_port: u16,
}

impl Release {
    /// `helm install --wait` into a new namespace, serving `users` only,
    /// with the e2e images, a NodePort, and the node IP in the certificate.
    pub fn install(prefix: &str, users: &TestNamespace, extra: &[&str]) -> Result<Self> {
        let images = [
            "--set",
            "global.imageRegistry=localhost/hatchway,image.repository=operator,image.tag=e2e,image.pullPolicy=Never",
            "--set",
            "sidecar.image.repository=sidecar,sidecar.image.tag=e2e,sidecar.image.pullPolicy=Never",
        ];
        let args: Vec<&str> = images.iter().chain(extra).copied().collect();
        Self::install_chart(prefix, users, &chart_dir().display().to_string(), &args)
    }

    /// The same with `chart` (a directory or a packaged `.tgz`) and only
    /// `values` for the images.
    pub fn install_chart(prefix: &str, users: &TestNamespace, chart: &str, values: &[&str]) -> Result<Self> {
        let ns = TestNamespace::new(prefix)?;
        let name = format!("hw-{}", ns.name.rsplit('-').next().unwrap_or("x"));
        let node_ip = node_ip()?;
        let mut args: Vec<String> = [
            "install",
            &name,
            chart,
            "--namespace",
            &ns.name,
            "--wait",
            "--timeout",
            "4m",
            "--set",
            "service.type=NodePort,resources.requests.cpu=10m",
            "--set",
            &format!("watchNamespaces={{{}}},tls.extraNames={{{node_ip}}}", users.name),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(values.iter().map(|s| s.to_string()));
        // The APIService is cluster-wide: one release at a time may hold
        // it, so only the test of the aggregated API turns it on.
        if !values.iter().any(|v| v.contains("aggregatedApi")) {
            args.extend(["--set".to_owned(), "aggregatedApi.enabled=false".to_owned()]);
        }
        let started = Instant::now();
        let out = run_within(helm(&args), Duration::from_secs(300))?;
        ensure!(
            out.status.success(),
            "helm install: {}\n{}",
            show(&out),
            ns.diagnostics()
        );
        eprintln!("helm install --wait: {:.1} s", started.elapsed().as_secs_f64());
        let mut release = Release {
            name,
            ns,
            node_ip,
            node_port: 0,
        };
        let port = release.ns.kubectl(&[
            "get",
            "service",
            &release.fullname(),
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ])?;
        release.node_port = port.trim().parse().context("the Service's nodePort")?;
        Ok(release)
    }

    /// The chart's object names (`<fullname>`), from the Deployment.
    pub fn fullname(&self) -> String {
        self.ns
            .kubectl(&[
                "get",
                "deployment",
                "-l",
                &format!("app.kubernetes.io/instance={}", self.name),
                "-o",
                "jsonpath={.items[0].metadata.name}",
            ])
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    }

    pub fn server(&self) -> String {
        format!("https://{}:{}", self.node_ip, self.node_port)
    }

    /// `helm upgrade --reuse-values --wait` with `extra`.
    pub fn upgrade(&self, extra: &[&str]) -> Result<()> {
        let mut args: Vec<String> = [
            "upgrade",
            &self.name,
            &chart_dir().display().to_string(),
            "--namespace",
            &self.ns.name,
            "--reuse-values",
            "--wait",
            "--timeout",
            "4m",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let out = run_within(helm(&args), Duration::from_secs(300))?;
        ensure!(
            out.status.success(),
            "helm upgrade: {}\n{}",
            show(&out),
            self.ns.diagnostics()
        );
        // No wait for the NodePort here: `--wait` ends when the new pods
        // are ready and kube-proxy follows a moment later, but an old
        // replica keeps serving for `router.shutdownDelaySeconds` after
        // SIGTERM and `kubectl hatch` retries a refused connect for 1.6 s
        // (`hatchway_api::dial`), as a user's would. (The suite waited for
        // five good answers in a row until both were there.)
        Ok(())
    }

    /// A Secret's data (base64 values) in the install namespace.
    pub fn secret_data(&self, name: &str) -> Result<Value> {
        Ok(kubectl_json(&["-n", &self.ns.name, "get", "secret", name, "-o", "json"])?["data"].clone())
    }

    /// The router CA (PEM) the operator published for clients.
    pub fn ca_pem(&self) -> Result<String> {
        let cm = kubectl_json(&[
            "-n",
            &self.ns.name,
            "get",
            "configmap",
            "hatchway-client",
            "-o",
            "json",
        ])?;
        cm["data"]["ca.crt"]
            .as_str()
            .map(str::to_owned)
            .context("hatchway-client has no ca.crt")
    }

    /// `kubectl rollout restart` of the operator Deployment, waiting for
    /// the new replicas.
    /// `helm test`: the chart's check pod (`hatchway-operator check`);
    /// its output, the pod's log included (`--logs`).
    pub fn helm_test(&self) -> Result<Output> {
        let args: Vec<String> = [
            "test",
            &self.name,
            "--namespace",
            &self.ns.name,
            "--logs",
            "--timeout",
            "2m",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        run_within(helm(&args), Duration::from_secs(150))
    }

    pub fn rollout_restart(&self) -> Result<()> {
        let deployment = format!("deployment/{}", self.fullname());
        self.ns.kubectl(&["rollout", "restart", &deployment])?;
        self.ns
            .kubectl(&["rollout", "status", &deployment, "--timeout=180s"])?;
        Ok(())
    }

    /// Follows the logs of the operator pods running now, through their
    /// termination, into files: the words of replicas that a rolling
    /// restart deletes, for a failure's message.
    pub fn follow_logs(&self) -> Result<PodLogs> {
        let dir = tempfile::tempdir()?;
        let mut children = Vec::new();
        for (pod, _) in self.pods()? {
            let file = std::fs::File::create(dir.path().join(&pod))?;
            let child = hatchway_e2e::kubectl_command()
                .args([
                    "-n",
                    &self.ns.name,
                    "logs",
                    "-f",
                    "--timestamps",
                    "-c",
                    "operator",
                    &pod,
                ])
                .stdin(Stdio::null())
                .stdout(file)
                .stderr(Stdio::null())
                .spawn()
                .context("kubectl logs -f")?;
            children.push(child);
        }
        Ok(PodLogs { dir, children })
    }

    /// A TLS client for the router's NodePort: trusts only its CA, speaks
    /// HTTP/1.1 (web apps, WebSockets).
    pub fn client_tls(&self) -> Result<std::sync::Arc<rustls::ClientConfig>> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(self.ca_pem()?.as_bytes()) {
            roots.add(cert?)?;
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(hatchway_api::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(std::sync::Arc::new(tls))
    }

    /// Ready operator pods: (name, IP).
    pub fn pods(&self) -> Result<Vec<(String, String)>> {
        let pods = kubectl_json(&[
            "-n",
            &self.ns.name,
            "get",
            "pods",
            "-l",
            &format!("app.kubernetes.io/instance={}", self.name),
            "-o",
            "json",
        ])?;
        Ok(pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter(|p| {
                p["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
            .filter_map(|p| {
                Some((
                    p["metadata"]["name"].as_str()?.to_owned(),
                    p["status"]["podIP"].as_str()?.to_owned(),
                ))
            })
            .collect())
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if std::env::var_os("HATCHWAY_E2E_KEEP").is_none() {
            let args = [
                "uninstall",
                &self.name,
                "--namespace",
                &self.ns.name,
                "--wait",
                "--timeout",
                "3m",
            ]
            .map(str::to_owned);
            let _ = run_within(helm(&args), Duration::from_secs(200));
        }
    }
}

pub fn helm(args: &[String]) -> Command {
    let mut command = Command::new("helm");
    command.args(args).stdin(Stdio::null());
    command
}

/// A user of a namespace: a ServiceAccount (bound to `role` unless None),
/// its token, a kubeconfig, and `kubectl hatch` set up for a release.
pub struct User {
    pub token: String,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub server: String,
    pub install_ns: String,
}

impl User {
    pub fn new(users: &TestNamespace, release: &Release, name: &str, role: Option<&str>) -> Result<Self> {
        users.kubectl(&["create", "serviceaccount", name])?;
        if let Some(role) = role {
            users.kubectl(&[
                "create",
                "rolebinding",
                &format!("{name}-{role}"),
                &format!("--clusterrole={role}"),
                &format!("--serviceaccount={}:{name}", users.name),
            ])?;
        }
        let token = users
            .kubectl(&["create", "token", name, "--duration=1h"])?
            .trim()
            .to_owned();
        let dir = tempfile::tempdir()?;
        let kubeconfig = user_kubeconfig(&token, &users.name, dir.path())?;
        Ok(User {
            token,
            dir,
            kubeconfig,
            server: release.server(),
            install_ns: release.ns.name.clone(),
        })
    }

    /// `program` in this user's environment: the kubeconfig, the router
    /// URL given, the CA found through ConfigMap hatchway-client (ssh and
    /// scp run `kubectl-hatch connect-ssh` with it), the token for ssh.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = user_command(program, &self.kubeconfig, self.dir.path(), &self.install_ns);
        command.env("HATCHWAY_SERVER", &self.server);
        command
    }

    /// `program` (ssh, scp, sftp) as this user through the `config-ssh`
    /// block written to `ssh_config`, never prompting.
    pub fn ssh_command(&self, program: &str, ssh_config: &std::path::Path) -> Command {
        let mut command = self.command(program);
        command
            .env("HATCHWAY_TOKEN", &self.token)
            .arg("-F")
            .arg(ssh_config)
            .args(["-o", "BatchMode=yes"]);
        command
    }

    /// `kubectl-hatch ARGS` as this user.
    pub fn hatch(&self, args: &[&str]) -> Result<Command> {
        let mut command = self.command(hatch_binary()?);
        command.args(args);
        Ok(command)
    }

    pub fn run(&self, args: &[&str]) -> Result<Output> {
        run_within(self.hatch(args)?, WAIT)
    }

    /// Waits until the user's rights are in force (RBAC caches catch up).
    pub fn wait_rights(&self, container: &str) -> Result<()> {
        wait_until("the user's rights", WAIT, POLL, || {
            let out = self.run(&["logs", container, "--tail", "1"])?;
            Ok(out.status.success().then_some(()))
        })
    }
}

/// Container `name` of `users` as JSON.
pub fn get_container(users: &TestNamespace, name: &str) -> Result<Value> {
    kubectl_json(&[
        "-n",
        &users.name,
        "get",
        "containers.hatchway.dev",
        name,
        "-o",
        "json",
    ])
}

/// A Container manifest.
pub fn container(name: &str, script: &str, ports: Value) -> String {
    json!({
        "apiVersion": "hatchway.dev/v1alpha1",
        "kind": "Container",
        "metadata": { "name": name },
        "spec": { "image": WORKLOAD_IMAGE, "command": ["sh", "-c", script], "publishedPorts": ports },
    })
    .to_string()
}

pub fn wait_phase(users: &TestNamespace, name: &str, phase: &str) -> Result<Value> {
    wait_until(
        &format!("{name} to be {phase}"),
        Duration::from_secs(150),
        POLL,
        || {
            let c = get_container(users, name)?;
            Ok((c["status"]["phase"] == phase).then_some(c))
        },
    )
    .map_err(|e| anyhow::anyhow!("{e:#}\n{}", users.diagnostics()))
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Logs of pods followed by [`Release::follow_logs`] (the followers are
/// killed on drop).
pub struct PodLogs {
    dir: tempfile::TempDir,
    children: Vec<std::process::Child>,
}

impl PodLogs {
    /// The lines, each prefixed with its pod, that contain any of `needles`
    /// or are warnings and errors.
    pub fn lines_about(&self, needles: &[&str]) -> String {
        let mut out = String::new();
        let Ok(entries) = std::fs::read_dir(self.dir.path()) else {
            return out;
        };
        for entry in entries.flatten() {
            let pod = entry.file_name().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            for line in text.lines() {
                if needles.iter().any(|n| line.contains(n)) || line.contains("WARN") || line.contains("ERROR")
                {
                    out.push_str(&format!("{pod}: {line}\n"));
                }
            }
        }
        out
    }
}

impl Drop for PodLogs {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The PID, on this node, of the process whose name starts with `comm` in
/// pod `namespace/pod` (found by the pod's UID in its cgroup path; not the
/// pause process). Names are cut to 15 bytes: `hatchway-operat`,
/// `hatchway-sideca`.
pub fn pid_in_pod(namespace: &str, pod: &str, comm: &str) -> Result<u32> {
    let uid = hatchway_e2e::kubectl(&[
        "-n",
        namespace,
        "get",
        "pod",
        pod,
        "-o",
        "jsonpath={.metadata.uid}",
    ])?
    .trim()
    .to_owned();
    let forms = [format!("pod{uid}"), format!("pod{}", uid.replace('-', "_"))];
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
        let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if forms.iter().any(|f| cgroup.contains(f.as_str())) && name.starts_with(comm) {
            return Ok(pid);
        }
    }
    anyhow::bail!("no {comm}* process in a cgroup of pod {namespace}/{pod} ({uid}) on this node")
}

/// A `kB` field of /proc/PID/status.
pub fn proc_status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// The `/metrics` text of `namespace/pod`'s `port` through the API
/// server's pod proxy (`https`: the routers' 9443; `http`: the sidecars'
/// 7444).
pub fn pod_metrics(namespace: &str, pod: &str, scheme: &str, port: u16) -> Result<String> {
    hatchway_e2e::kubectl(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/{namespace}/pods/{scheme}:{pod}:{port}/proxy/metrics"),
    ])
}

/// The sum of every sample of `name` in `texts` whose labels contain all of
/// `labels` (`key="value"`).
pub fn metric_sum(texts: &[String], name: &str, labels: &[&str]) -> f64 {
    texts
        .iter()
        .flat_map(|t| t.lines())
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A web app's URL (`https://HOST:PORT/`): the authority `HOST:PORT` (its
/// `Host` header) and the host name alone (its TLS server name).
pub fn web_app_host(url: &str) -> Result<(String, String)> {
    let authority = url
        .strip_prefix("https://")
        .and_then(|rest| rest.split('/').next())
        .context("a web-app URL")?
        .to_owned();
    let name = authority.split(':').next().unwrap_or_default().to_owned();
    Ok((authority, name))
}

/// The URL a Container's `status` (as JSON) gives its published `port`.
pub fn published_url(status: &Value, port: u16) -> Option<String> {
    status["publishedPorts"]
        .as_array()?
        .iter()
        .find(|p| p["port"] == port)
        .and_then(|p| p["url"].as_str())
        .map(str::to_owned)
}
