//! End-to-end test helpers: drive `kubectl` against the real cluster that
//! `e2e/cluster up` starts (see docs/e2e.md).
//!
//! The cluster is found through `KUBECONFIG` (`eval "$(e2e/cluster env)"`,
//! which `make e2e` does). Without it every test fails at once with a message
//! that says how to start one: e2e tests never skip silently.
//!
//! Each test works in its own namespace ([`TestNamespace`]), so tests run in
//! parallel; every wait polls a condition until a deadline.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

/// The image with a shell and an HTTP server (busybox httpd on :8080 serving
/// [`WORKLOAD_PAGE`]), built from e2e/images/workload.
pub const WORKLOAD_IMAGE: &str = "localhost/hatchway/workload:e2e";
/// Text in the page the workload image serves.
pub const WORKLOAD_PAGE: &str = "hatchway e2e workload";

/// The repository's top directory, from `CARGO_MANIFEST_DIR` read when the
/// test runs (cargo and nextest set it): a test binary built from another
/// clone that shares the target dir still reads this clone's files.
pub fn repo_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), PathBuf::from)
        .join("..")
}

/// The kubeconfig of the e2e cluster, or a clear failure.
pub fn kubeconfig() -> PathBuf {
    match std::env::var_os("KUBECONFIG") {
        Some(path) if !path.is_empty() => {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "KUBECONFIG={} does not exist: is the e2e cluster up? Run `e2e/cluster up` \
                 (or `make e2e`)",
                path.display()
            );
            path
        }
        _ => panic!(
            "no e2e cluster: KUBECONFIG is not set. Start one with `e2e/cluster up` and \
             `eval \"$(e2e/cluster env)\"`, or run `make e2e`"
        ),
    }
}

/// The kubectl to use: `HATCHWAY_KUBECTL`, else `kubectl` from `PATH`
/// (`e2e/cluster env` puts the cluster's own kubectl first on `PATH`).
pub fn kubectl_bin() -> String {
    std::env::var("HATCHWAY_KUBECTL").unwrap_or_else(|_| "kubectl".to_string())
}

/// A `kubectl` command for the e2e cluster (no request timeout: fit for
/// long-lived streams such as port-forward).
pub fn kubectl_command() -> Command {
    let mut cmd = Command::new(kubectl_bin());
    cmd.env("KUBECONFIG", kubeconfig());
    cmd
}

/// Runs kubectl; returns stdout, or an error carrying stderr.
pub fn kubectl(args: &[&str]) -> Result<String> {
    kubectl_stdin(args, None)
}

/// Runs kubectl with `input` on stdin; returns stdout, or an error carrying
/// stderr.
pub fn kubectl_stdin(args: &[&str], input: Option<&str>) -> Result<String> {
    let (ok, stdout, stderr) = run_kubectl(args, input)?;
    if !ok {
        bail!("kubectl {} failed: {}", args.join(" "), stderr.trim());
    }
    Ok(stdout)
}

/// Runs kubectl that is expected to fail; returns its stderr, or an error if
/// it succeeded.
pub fn kubectl_fails(args: &[&str], input: Option<&str>) -> Result<String> {
    let (ok, stdout, stderr) = run_kubectl(args, input)?;
    if ok {
        bail!(
            "kubectl {} succeeded but should have failed; it printed: {}",
            args.join(" "),
            stdout.trim()
        );
    }
    Ok(stderr)
}

/// Runs kubectl and parses its JSON output.
pub fn kubectl_json(args: &[&str]) -> Result<Value> {
    let out = kubectl(args)?;
    serde_json::from_str(&out).with_context(|| format!("kubectl {}: not JSON: {out}", args.join(" ")))
}

fn run_kubectl(args: &[&str], input: Option<&str>) -> Result<(bool, String, String)> {
    let mut cmd = kubectl_command();
    // One request may not hang a test: a 30 s client timeout, except for
    // commands that watch or stream and carry their own `--timeout`.
    let streams = ["rollout", "wait", "exec", "logs", "port-forward"];
    if !args.iter().any(|a| streams.contains(a)) {
        cmd.arg("--request-timeout=30s");
    }
    cmd.args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| {
        format!(
            "cannot run {} (is the e2e cluster's kubectl on PATH?)",
            kubectl_bin()
        )
    })?;
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

pub use hatchway_testkit::wait_until;

/// A namespace of its own for one test. Dropped after [`passed`](Self::passed),
/// it is deleted (without waiting) unless `HATCHWAY_E2E_KEEP` is set;
/// dropped without it (the test returned an error or panicked), it is kept
/// for a look and what is in it goes to the test's output.
pub struct TestNamespace {
    pub name: String,
    passed: std::sync::atomic::AtomicBool,
}

impl TestNamespace {
    /// Creates `e2e-<prefix>-<unique>` and waits for its default
    /// ServiceAccount (pods cannot be created before it exists).
    pub fn new(prefix: &str) -> Result<Self> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.subsec_nanos();
        let unique = format!(
            "{:x}{:x}{}",
            std::process::id(),
            nanos % 0xfff,
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let name = format!("e2e-{prefix}-{unique}");
        kubectl(&["create", "namespace", &name])?;
        let ns = TestNamespace {
            name,
            passed: false.into(),
        };
        wait_until(
            "the default ServiceAccount",
            Duration::from_secs(60),
            Duration::from_millis(200),
            || Ok(kubectl(&["-n", &ns.name, "get", "serviceaccount", "default", "-o", "name"]).ok()),
        )?;
        Ok(ns)
    }

    /// Says the test got to its end: the namespace may go.
    pub fn passed(&self) {
        self.passed.store(true, Ordering::Relaxed);
    }

    /// `kubectl -n NS <args>`.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        kubectl(&all)
    }

    /// `kubectl -n NS apply -f -` with `manifest`.
    pub fn apply(&self, manifest: &str) -> Result<String> {
        kubectl_stdin(&["-n", &self.name, "apply", "-f", "-"], Some(manifest))
    }

    /// The pods of Container `name` here, as `kubectl get pods -o json`
    /// lists them (by the operator's `hatchway.dev/container` label).
    pub fn container_pods(&self, name: &str) -> Result<Value> {
        let selector = format!("hatchway.dev/container={name}");
        kubectl_json(&["-n", &self.name, "get", "pods", "-l", &selector, "-o", "json"])
    }

    /// `kubectl -n NS exec TARGET -- command...`, returning stdout.
    pub fn exec(&self, target: &str, command: &[&str]) -> Result<String> {
        let mut all = vec!["-n", self.name.as_str(), "exec", target, "--"];
        all.extend_from_slice(command);
        kubectl(&all)
    }

    /// Waits for a Deployment to finish rolling out; on timeout the error
    /// includes what the namespace looks like.
    pub fn wait_rollout(&self, deployment: &str, timeout: Duration) -> Result<()> {
        let t = format!("--timeout={}s", timeout.as_secs());
        self.kubectl(&["rollout", "status", &format!("deployment/{deployment}"), &t])
            .map_err(|e| anyhow!("{e:#}\n{}", self.diagnostics()))?;
        Ok(())
    }

    /// Waits for a pod to be Ready.
    pub fn wait_pod_ready(&self, pod: &str, timeout: Duration) -> Result<()> {
        let t = format!("--timeout={}s", timeout.as_secs());
        self.kubectl(&["wait", "--for=condition=Ready", &format!("pod/{pod}"), &t])
            .map_err(|e| anyhow!("{e:#}\n{}", self.diagnostics()))?;
        Ok(())
    }

    /// What the namespace holds, and its events: for failure messages.
    pub fn diagnostics(&self) -> String {
        let mut out = format!("--- namespace {}:\n", self.name);
        for args in [
            &["get", "all", "-o", "wide"][..],
            &["get", "events", "--sort-by=.lastTimestamp"][..],
        ] {
            match self.kubectl(args) {
                Ok(text) => out.push_str(&text),
                Err(err) => out.push_str(&format!("{err:#}\n")),
            }
        }
        out
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if !self.passed.load(Ordering::Relaxed) || std::thread::panicking() {
            eprintln!(
                "the test did not pass: keeping namespace {0} (kubectl delete namespace {0})\n{1}",
                self.name,
                self.diagnostics()
            );
        } else if std::env::var_os("HATCHWAY_E2E_KEEP").is_none() {
            let _ = kubectl(&["delete", "namespace", &self.name, "--wait=false"]);
        }
    }
}

/// A running `kubectl port-forward`, killed on drop.
pub struct PortForward {
    child: Child,
    /// The local port it listens on (127.0.0.1).
    pub local_port: u16,
}

impl PortForward {
    /// Starts `kubectl port-forward -n NS TARGET :REMOTE` on 127.0.0.1 with
    /// a free local port chosen by kubectl, and waits until it listens.
    pub fn start(namespace: &str, target: &str, remote_port: u16) -> Result<Self> {
        let mut child = kubectl_command()
            .args([
                "-n",
                namespace,
                "port-forward",
                "--address",
                "127.0.0.1",
                target,
                &format!(":{remote_port}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start kubectl port-forward")?;
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        // Drain stderr too (kept for the error message).
        let errors = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&errors);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut sink = sink.lock().unwrap_or_else(|e| e.into_inner());
                sink.push_str(&line);
                sink.push('\n');
            }
        });
        // kubectl prints "Forwarding from 127.0.0.1:PORT -> REMOTE" once it
        // listens; read it on a thread so the wait has a deadline.
        let (tx, rx) = mpsc::channel();
        // The thread keeps draining stdout after that: kubectl prints a line
        // per connection, and fails the connection if the pipe is closed.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(port) = parse_forwarding_line(&line) {
                        return Ok(PortForward {
                            child,
                            local_port: port,
                        });
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let err = errors.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    bail!(
                        "kubectl port-forward {target} did not start listening: {}",
                        err.trim()
                    );
                }
            }
        }
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The local port in kubectl's "Forwarding from 127.0.0.1:PORT -> N" line.
pub fn parse_forwarding_line(line: &str) -> Option<u16> {
    let rest = line.strip_prefix("Forwarding from 127.0.0.1:")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// A plain HTTP/1.0 GET to 127.0.0.1:`port`; returns (status code, body).
///
/// The body must be complete (as long as `Content-Length` says). A reset
/// after the whole response arrived is accepted: `kubectl port-forward`
/// may end a forwarded connection with RST once the remote side closed.
pub fn http_get(port: u16, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    // One write: busybox httpd answers a request split across segments
    // with an error and a reset.
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let reset = loop {
        match stream.read(&mut buf) {
            Ok(0) => break None,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break Some(e),
            Err(e) => return Err(e.into()),
        }
    };
    let response = String::from_utf8_lossy(&raw);
    let Some((head, body)) = response.split_once("\r\n\r\n") else {
        match reset {
            Some(e) => bail!("connection reset before a response: {e}"),
            None => bail!("not an HTTP response: {response:?}"),
        }
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no status in {head:?}"))?;
    let length = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    match (length, reset) {
        (Some(len), _) if body.len() < len => {
            bail!("short body: {} of {len} bytes", body.len())
        }
        (None, Some(e)) => bail!("connection reset, and no Content-Length to tell the body is whole: {e}"),
        _ => {}
    }
    Ok((status, body.to_string()))
}

/// A Deployment (and optionally a ClusterIP Service on port 80) of the
/// workload image, serving its page on :8080.
pub fn web_manifest(name: &str, with_service: bool) -> String {
    let mut manifest = format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: 1
  selector:
    matchLabels: {{ app: {name} }}
  template:
    metadata:
      labels: {{ app: {name} }}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: {WORKLOAD_IMAGE}
        imagePullPolicy: Never
        ports:
        - {{ containerPort: 8080, name: http }}
        readinessProbe:
          httpGet: {{ path: /, port: 8080 }}
          periodSeconds: 1
"#
    );
    if with_service {
        manifest.push_str(&format!(
            r#"---
apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  type: ClusterIP
  selector: {{ app: {name} }}
  ports:
  - {{ port: 80, targetPort: http }}
"#
        ));
    }
    manifest
}

/// A bare pod of the workload image that only sleeps (a client to run
/// commands in).
pub fn client_pod_manifest(name: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: client
    image: {WORKLOAD_IMAGE}
    imagePullPolicy: Never
    command: [sleep, "3600"]
"#
    )
}

/// Runs `command` (stdin empty) and kills it if it has not finished after
/// `timeout` (with the processes it started: it runs in a process group of
/// its own); the error then carries what it printed. Its output is read
/// while it runs, so a chatty command cannot stall on a full pipe.
pub fn run_within(mut command: Command, timeout: Duration) -> Result<std::process::Output> {
    use std::os::unix::process::CommandExt as _;
    let child = command
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {command:?}"))?;
    let group = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    match finished.recv_timeout(timeout) {
        Ok(out) => Ok(out?),
        Err(_) => {
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            let out = finished.recv()??;
            bail!(
                "{command:?} did not finish in {timeout:?}: stdout {} stderr {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// The flags every headless Chromium of the suite runs with (Debian's
/// build; no sandbox as root, nothing fetched in the background).
pub const CHROMIUM_FLAGS: [&str; 6] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
];

/// Runs `command` like [`run_within`], in a network namespace of its own
/// whose only interface is loopback, where `127.0.0.1:port` relays to `to`
/// on this host's network.
///
/// Why: Chromium aborts a page load with `ERR_NETWORK_CHANGED` whenever an
/// address or link changes on the host, and the cluster adds and removes a
/// veth for every pod that starts or ends, which parallel tests do at any
/// moment. In a namespace of its own it sees no such change. (Retrying
/// instead lost three times in a row on a busy run.)
pub fn run_isolated_from_host_network(
    command: Command,
    port: u16,
    to: std::net::SocketAddr,
    timeout: Duration,
) -> Result<std::process::Output> {
    isolated_from_host_network(port, to, move || run_within(command, timeout))
}

/// Runs `inside` on a thread in a network namespace of its own whose only
/// interface is loopback, where `127.0.0.1:port` relays to `to` on this
/// host's network (for as long as this process lives): what it starts
/// (a browser) stays in that namespace. Its result.
pub fn isolated_from_host_network<T: Send + 'static>(
    port: u16,
    to: std::net::SocketAddr,
    inside: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let (listening, listener) = mpsc::channel();
    // Network namespaces are per thread: this one moves into a new one,
    // binds there and spawns the command (children inherit it); the relay
    // threads stay on the host's network, and a socket works from any
    // thread in the namespace it was made in.
    let isolated = std::thread::spawn(move || -> Result<T> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .context("a network namespace of its own (needs root)")?;
        let mut up = Command::new("ip");
        up.args(["link", "set", "lo", "up"]);
        let out = run_within(up, Duration::from_secs(10))?;
        anyhow::ensure!(out.status.success(), "ip link set lo up: {out:?}");
        let bound = std::net::TcpListener::bind(("127.0.0.1", port))
            .with_context(|| format!("binding 127.0.0.1:{port} in the new namespace"));
        let bound_ok = bound.is_ok();
        let _ = listening.send(bound);
        anyhow::ensure!(bound_ok, "no listener in the new namespace");
        inside()
    });
    let listener = match listener.recv() {
        Ok(bound) => bound?,
        Err(_) => {
            return isolated
                .join()
                .map_err(|_| anyhow!("the isolated thread panicked"))?;
        }
    };
    std::thread::spawn(move || {
        for inside in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let Ok(outside) = TcpStream::connect_timeout(&to, Duration::from_secs(10)) else {
                    return;
                };
                splice_until_closed(inside, outside);
            });
        }
    });
    isolated
        .join()
        .map_err(|_| anyhow!("the isolated thread panicked"))?
}

/// Copies bytes both ways between two connections until either side ends.
fn splice_until_closed(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let forward = std::thread::spawn(move || {
        let (mut from, mut to) = (a, b);
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
    let (mut from, mut to) = (b2, a2);
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(std::net::Shutdown::Write);
    let _ = forward.join();
}

/// The node's InternalIP: pods reach this host there, and NodePorts and
/// pod IPs are reachable from here.
pub fn node_ip() -> Result<String> {
    let ip = kubectl(&[
        "get",
        "node",
        "-o",
        "jsonpath={.items[0].status.addresses[?(@.type==\"InternalIP\")].address}",
    ])?;
    let ip = ip.trim().to_owned();
    if ip.is_empty() {
        bail!("the node has no InternalIP");
    }
    Ok(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_port_forward_line() {
        assert_eq!(
            parse_forwarding_line("Forwarding from 127.0.0.1:40123 -> 8080"),
            Some(40123)
        );
        assert_eq!(parse_forwarding_line("Forwarding from [::1]:40123 -> 8080"), None);
        assert_eq!(parse_forwarding_line("Handling connection for 40123"), None);
    }

    #[test]
    fn an_isolated_command_sees_only_loopback_and_reaches_the_host_through_the_relay() {
        // A server on this host's loopback, which the isolated namespace's
        // own loopback cannot reach except through the relay.
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let host = server.local_addr().unwrap();
        std::thread::spawn(move || {
            for mut conn in server.incoming().flatten() {
                let mut request = [0u8; 1024];
                let _ = conn.read(&mut request);
                let _ =
                    conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello");
            }
        });
        let port = 31_000;
        let mut links = Command::new("ip");
        links.args(["-o", "link"]);
        let out = run_isolated_from_host_network(links, port, host, Duration::from_secs(10)).unwrap();
        let links = String::from_utf8_lossy(&out.stdout);
        assert_eq!(links.lines().count(), 1, "only loopback: {links}");
        assert!(links.contains("lo:") && links.contains("UP"), "{links}");

        let mut curl = Command::new("curl");
        curl.args(["-sS", "--max-time", "10", &format!("http://127.0.0.1:{port}/")]);
        let out = run_isolated_from_host_network(curl, port, host, Duration::from_secs(20)).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "hello",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
