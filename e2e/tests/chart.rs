//! Hatchway as users install and use it: `helm install` of charts/hatchway
//! (the operator and sidecar images built from their Dockerfiles), then
//! everything a user does, with the real `kubectl hatch`, OpenSSH, curl,
//! Chromium and Prometheus, on the real cluster.
//!
//! Each test installs its own release (its own install namespace, serving
//! only its own users' namespace, so releases and tests run side by side)
//! and uninstalls it at the end. A [`Release`] is dropped before the
//! namespaces (declared after them), so the uninstall hook releases the
//! Containers before their namespace goes.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::release::*;
use common::{hatch_binary, user_command};
use hatchway_e2e::{
    TestNamespace, WORKLOAD_IMAGE, kubectl, kubectl_json, node_ip, run_isolated_from_host_network,
    run_within, wait_until,
};
use serde_json::{Value, json};

/// A user whose kubeconfig has a client certificate the cluster CA signed
/// (through a CertificateSigningRequest for
/// `kubernetes.io/kube-apiserver-client`), like kind's, k3d's, minikube's
/// and kubeadm's admin.conf: no token anywhere, so only the aggregated API
/// can serve them.
struct CertUser {
    /// The user name (the certificate's common name).
    name: String,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    install_ns: String,
}

impl CertUser {
    fn new(users: &TestNamespace, release: &Release, name: &str, role: Option<&str>) -> Result<Self> {
        use base64::Engine as _;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        let cn = format!("{name}-{}", users.name);
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(rcgen::DnType::CommonName, &cn);
        let csr = params.serialize_request(&key)?.pem()?;
        let request = json!({
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"name": cn},
            "spec": {
                "request": b64(csr.as_bytes()),
                "signerName": "kubernetes.io/kube-apiserver-client",
                "expirationSeconds": 3600,
                "usages": ["client auth"],
            },
        });
        hatchway_e2e::kubectl_stdin(&["apply", "-f", "-"], Some(&request.to_string()))?;
        kubectl(&["certificate", "approve", &cn])?;
        let certificate = wait_until("the cluster CA to sign the certificate", WAIT, POLL, || {
            let out = kubectl(&["get", "csr", &cn, "-o", "jsonpath={.status.certificate}"])?;
            Ok((!out.trim().is_empty()).then(|| out.trim().to_owned()))
        })?;
        let _ = kubectl(&["delete", "csr", &cn, "--wait=false"]);
        if let Some(role) = role {
            users.kubectl(&[
                "create",
                "rolebinding",
                &format!("{name}-{role}"),
                &format!("--clusterrole={role}"),
                &format!("--user={cn}"),
            ])?;
        }
        let admin = kubectl_json(&["config", "view", "--raw", "--minify", "--flatten", "-o", "json"])?;
        let cluster = admin["clusters"][0]["cluster"].clone();
        let dir = tempfile::tempdir()?;
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "e2e", "cluster": cluster}],
            "users": [{"name": cn, "user": {
                "client-certificate-data": certificate,
                "client-key-data": b64(key.serialize_pem().as_bytes()),
            }}],
            "contexts": [{"name": "e2e-certs", "context": {"cluster": "e2e", "user": cn, "namespace": users.name}}],
            "current-context": "e2e-certs",
        });
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, config.to_string())?;
        Ok(CertUser {
            name: cn,
            dir,
            kubeconfig,
            install_ns: release.ns.name.clone(),
        })
    }

    /// `program` with only this user's kubeconfig: no router URL, no
    /// token, no CA.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        user_command(program, &self.kubeconfig, self.dir.path(), &self.install_ns)
    }

    fn hatch(&self, args: &[&str]) -> Result<Command> {
        let mut command = self.command(hatch_binary()?);
        command.args(args);
        Ok(command)
    }

    fn run(&self, args: &[&str]) -> Result<Output> {
        run_within(self.hatch(args)?, WAIT)
    }
}

/// A user with a client certificate (no token the router could review)
/// shells, copies, forwards and reads logs through the aggregated API;
/// one without rights is refused by the API server's RBAC; a caller
/// forging the front proxy's headers is refused; `kubectl api-resources`
/// and `kubectl wait --for=condition=Ready` see Hatchway.
#[test]
fn the_aggregated_api_serves_a_client_certificate_user() -> Result<()> {
    let users = TestNamespace::new("agg-users")?;
    let release = Release::install("agg", &users, &["--set", "aggregatedApi.enabled=true"])?;
    let apiservice = hatchway_api::wire::access_api::APISERVICE;
    wait_until("the APIService to be Available", WAIT, POLL, || {
        let service = kubectl_json(&["get", "apiservice", apiservice, "-o", "json"])?;
        let available = service["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Available" && c["status"] == "True");
        Ok(available.then_some(()))
    })
    .with_context(|| kubectl(&["get", "apiservice", apiservice, "-o", "yaml"]).unwrap_or_default())?;
    // `helm test`: the router's /readyz and the aggregated discovery.
    let out = release.helm_test()?;
    ensure!(
        out.status.success()
            && stdout(&out).contains("ok: https://")
            && stdout(&out).contains("/readyz answered 200 OK")
            && stdout(&out).contains("ok: the API server serves access.hatchway.dev/v1alpha1 (containers"),
        "helm test with the aggregated API: {}",
        show(&out)
    );
    let resources = kubectl(&["api-resources", "--api-group=access.hatchway.dev"])?;
    ensure!(
        resources
            .lines()
            .any(|l| l.starts_with("containers ") && l.contains("access.hatchway.dev/v1alpha1")),
        "kubectl api-resources: {resources}"
    );
    // `containers` still means the CRD's.
    let table = users.kubectl(&["get", "containers"])?;
    ensure!(
        table.is_empty() || table.starts_with("NAME"),
        "kubectl get containers: {table}"
    );

    let carol = CertUser::new(&users, &release, "carol", Some("edit"))?;
    let dave = CertUser::new(&users, &release, "dave", None)?;
    users.apply(&container("web", WEB_SCRIPT, json!([{"port": 8080}])))?;
    wait_phase(&users, "web", "Running")?;
    users.kubectl(&["wait", "--for=condition=Ready", "container/web", "--timeout=90s"])?;
    wait_until("carol's rights", WAIT, POLL, || {
        let out = carol.run(&["logs", "web", "--tail", "1"])?;
        Ok(out.status.success().then_some(()))
    })?;

    // The server's version through the API server.
    let out = carol.run(&["version"])?;
    ensure!(
        out.status.success()
            && stdout(&out).contains("server: hatchway-operator")
            && stdout(&out).contains("via the Kubernetes API server"),
        "version: {}",
        show(&out)
    );

    // A command through the shell: output and exit code.
    let out = carol.run(&["shell", "web", "--", "echo via the API server; exit 5"])?;
    ensure!(out.status.code() == Some(5), "shell: {}", show(&out));
    ensure!(
        stdout(&out).contains("via the API server"),
        "shell: {}",
        show(&out)
    );

    // config-ssh writes a block for this context; scp up and back.
    let ssh_config = carol.dir.path().join("ssh_config");
    let out = carol.run(&["config-ssh", "--ssh-config", &ssh_config.display().to_string()])?;
    ensure!(out.status.success(), "config-ssh: {}", show(&out));
    let block = std::fs::read_to_string(&ssh_config)?;
    ensure!(
        block.contains("Host *.e2e-certs.hatchway") && block.contains("--context e2e-certs"),
        "config-ssh block: {block}"
    );
    let host = format!("web.{}.e2e-certs.hatchway", users.name);
    let data: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let up = carol.dir.path().join("up.bin");
    std::fs::write(&up, &data)?;
    let back = carol.dir.path().join("back.bin");
    for (from, to) in [
        (up.display().to_string(), format!("{host}:/tmp/up.bin")),
        (format!("{host}:/tmp/up.bin"), back.display().to_string()),
    ] {
        let mut scp = carol.command("scp");
        scp.arg("-F")
            .arg(&ssh_config)
            .args(["-o", "BatchMode=yes", "-q", &from, &to]);
        let out = run_within(scp, WAIT)?;
        ensure!(out.status.success(), "scp {from} {to}: {}", show(&out));
    }
    ensure!(
        sha256_hex(&std::fs::read(&back)?) == sha256_hex(&data),
        "scp round trip changed the file"
    );

    // Port-forward: 50 MiB to the SHA-256 server, checksum compared.
    let seconds = forward_50_mib(carol.hatch(&["port-forward", "web", ":9000"])?, carol.dir.path())?;
    eprintln!("port-forward through the API server: 50 MiB in {seconds:.2} s");
    // UDP through the API server's aggregation proxy too (its upgrade is
    // `hatchway-udp`, not a protocol the proxy knows).
    let echoed = udp_round_trip(
        carol.hatch(&["port-forward", "web", ":7073/udp"])?,
        carol.dir.path(),
        b"dig via the API server",
    )?;
    ensure!(
        echoed == b"dig via the API server",
        "UDP through the API server: {echoed:?}"
    );

    // logs -f of a Container that writes five lines and ends.
    users.apply(&container(
        "job",
        "for i in 1 2 3 4 5; do echo line $i; sleep 1; done",
        json!([]),
    ))?;
    wait_phase(&users, "job", "Running")?;
    let out = run_within(carol.hatch(&["logs", "job", "-f"])?, Duration::from_secs(120))?;
    let returned = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    ensure!(
        out.status.success() && stdout(&out) == "line 1\nline 2\nline 3\nline 4\nline 5\n",
        "logs -f: {}",
        show(&out)
    );
    // `logs -f` returns when the gateway says the workload ended (the
    // shim writes its exit code after the logs' last byte), without
    // waiting for the status (seen 7.7 s behind on a loaded node); it
    // never says "retrying", and returns within 3 s of the Container's end
    // (status's finishedAt is in whole seconds).
    ensure!(
        !String::from_utf8_lossy(&out.stderr).contains("retrying"),
        "logs -f had to wait for the saved logs: {}",
        show(&out)
    );
    // The status may say so a moment later than `logs -f` knew.
    let finished = wait_until("the Container's finishedAt", WAIT, POLL, || {
        Ok(get_container(&users, "job")?["status"]["finishedAt"]
            .as_str()
            .map(str::to_owned))
    })?;
    let finished = Command::new("date")
        .args(["-u", "-d", &finished, "+%s"])
        .output()?;
    let finished: u64 = String::from_utf8_lossy(&finished.stdout).trim().parse()?;
    let lag = returned.as_secs_f64() - finished as f64;
    eprintln!("logs -f returned {lag:.2} s after the Container's end (finishedAt, whole seconds)");
    ensure!(lag < 3.0, "logs -f returned {lag:.2} s after the Container ended");

    // No rights: the API server's RBAC refuses, in its words.
    let out = dave.run(&["shell", "web", "--", "true"])?;
    ensure!(
        out.status.code() == Some(2)
            && String::from_utf8_lossy(&out.stderr).contains(&format!(
                "User \"{}\" cannot create resource \"containers/exec\" in API group \"access.hatchway.dev\"",
                dave.name
            )),
        "shell as dave: {}",
        show(&out)
    );

    // Forged front-proxy headers: refused on the aggregated port (no
    // certificate) and ignored on the router's own port (no token).
    let (_, pod_ip) = release.pods()?.into_iter().next().context("no ready replica")?;
    let path = format!(
        "/apis/access.hatchway.dev/v1alpha1/namespaces/{}/containers/web/exec",
        users.name
    );
    for (url, status, words) in [
        (
            format!("https://{pod_ip}:8444{path}"),
            "401",
            "this port serves only the Kubernetes API server",
        ),
        (
            format!(
                "{}/v1/namespaces/{}/containers/web/ssh",
                release.server(),
                users.name
            ),
            "401",
            "authentication required",
        ),
    ] {
        let mut curl = Command::new("curl");
        curl.args([
            "-sk",
            "--http1.1",
            "--max-time",
            "20",
            "-X",
            "POST",
            "-w",
            "\n%{http_code}",
        ])
        .args([
            "-H",
            "X-Remote-User: system:admin",
            "-H",
            "X-Remote-Group: system:masters",
        ])
        .args(["-H", "Connection: upgrade", "-H", "Upgrade: ssh"])
        .arg(&url);
        let out = run_within(curl, WAIT)?;
        let text = stdout(&out);
        ensure!(
            text.ends_with(&format!("\n{status}")) && text.contains(words),
            "forged X-Remote-User at {url}: {}",
            show(&out)
        );
    }
    users.passed();
    release.ns.passed();
    Ok(())
}

/// Runs `port_forward` (`kubectl-hatch port-forward web :9000`, its
/// output kept in `dir`), sends 50 MiB through it to the SHA-256 server
/// and checks the digest; returns the seconds it took.
fn forward_50_mib(mut port_forward: Command, dir: &Path) -> Result<f64> {
    let pf_out = dir.join("pf.out");
    port_forward
        .stdout(std::fs::File::create(&pf_out)?)
        .stderr(Stdio::null());
    let mut pf = port_forward.spawn()?;
    let local: std::net::SocketAddr = wait_until("port-forward to listen", WAIT, POLL, || {
        let text = std::fs::read_to_string(&pf_out)?;
        Ok(text.split_whitespace().nth(2).and_then(|a| a.parse().ok()))
    })?;
    let data: Vec<u8> = (0..50 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let started = Instant::now();
    let digest = (|| -> Result<String> {
        use std::io::Read as _;
        let mut conn = std::net::TcpStream::connect(local)?;
        conn.set_read_timeout(Some(WAIT))?;
        conn.write_all(&data)?;
        conn.shutdown(std::net::Shutdown::Write)?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer)?;
        Ok(answer)
    })();
    let seconds = started.elapsed().as_secs_f64();
    let _ = pf.kill();
    let _ = pf.wait();
    let digest = digest?;
    ensure!(
        digest.starts_with(&sha256_hex(&data)),
        "port-forward digest {digest:?}"
    );
    Ok(seconds)
}

/// The web Container: pages on 8080 (private) and 8081 (public), a
/// WebSocket echo server on 8082 (private), a SHA-256 server on 9000, and a
/// log line a second.
const WEB_SCRIPT: &str = "mkdir -p /tmp/pub && echo public page > /tmp/pub/index.html && \
     httpd -p 8080 -h /www && httpd -p 8081 -h /tmp/pub && \
     (nc -ll -p 9000 -e sha256sum &) && (ws-echo 8082 &) && (udp-echo 7073 &) && \
     i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done";

#[test]
fn the_chart_installs_upgrades_and_serves_everything_a_user_does() -> Result<()> {
    everything_a_user_does("chart", &[])
}

/// The same with direct pod access off: every path goes through the
/// sidecars' tunnels (and forwarding between the two replicas).
#[test]
fn with_tunnels_only_everything_a_user_does_still_works() -> Result<()> {
    everything_a_user_does("tunneled", &["--set", "router.directAccess=false"])
}

fn everything_a_user_does(prefix: &str, values: &[&str]) -> Result<()> {
    let users = TestNamespace::new(&format!("{prefix}-users"))?;
    let release = Release::install(prefix, &users, values)?;
    let fullname = release.fullname();

    // Installed: two ready replicas, the root secret and CA bootstrapped.
    let ready = wait_until("two ready replicas", WAIT, POLL, || {
        let pods = release.pods()?;
        Ok((pods.len() == 2).then_some(pods))
    })?;
    eprintln!("replicas: {ready:?}");
    let root = release.secret_data(&format!("{fullname}-root"))?;
    ensure!(root["root-secret"].is_string(), "root secret: {root}");

    let alice = User::new(&users, &release, "alice", Some("edit"))?;
    let nobody = User::new(&users, &release, "nobody", None)?;
    users.apply(&container(
        "web",
        WEB_SCRIPT,
        json!([{"port": 8080}, {"port": 8081, "access": "public"}, {"port": 8082}]),
    ))?;
    wait_phase(&users, "web", "Running")?;
    // `kubectl get containers` columns.
    let table = users.kubectl(&["get", "containers.hatchway.dev"])?;
    let header: Vec<&str> = table.lines().next().unwrap_or("").split_whitespace().collect();
    ensure!(
        header == ["NAME", "PHASE", "GATEWAY", "AGE"],
        "kubectl get: {table}"
    );
    ensure!(
        table
            .lines()
            .any(|l| l.starts_with("web ") && l.contains("Running") && l.contains(":7443")),
        "kubectl get: {table}"
    );
    alice.wait_rights("web")?;

    // helm upgrade: the root secret stays, the Container stays reachable.
    release.upgrade(&[
        "--set",
        &format!("webApps.wildcardDomain={APPS}:{}", release.node_port),
    ])?;
    ensure!(
        release.secret_data(&format!("{fullname}-root"))? == root,
        "the root secret changed in the upgrade"
    );
    let status = wait_until("the web app URLs after the upgrade", WAIT, POLL, || {
        let c = get_container(&users, "web")?;
        let urls: Vec<String> = c["status"]["publishedPorts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["url"].as_str().map(str::to_owned))
            .collect();
        Ok((urls.len() == 3 && urls.iter().all(|u| u.contains(APPS))).then_some(c["status"].clone()))
    })?;

    // A command through the shell: output and exit code.
    let out = alice.run(&["shell", "web", "--", "cat /www/index.html; exit 3"])?;
    ensure!(out.status.code() == Some(3), "shell: {}", show(&out));
    ensure!(
        stdout(&out).contains("hatchway e2e workload"),
        "shell: {}",
        show(&out)
    );
    ensure!(
        get_container(&users, "web")?["status"]["interactiveSessionStarted"] == true,
        "interactiveSessionStarted is not set after a shell"
    );

    // A terminal: script(1) gives kubectl-hatch (and so ssh) a tty.
    let line = format!("{} shell web", hatch_binary()?.display());
    let mut script = alice.command("script");
    script
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .stdin(Stdio::piped());
    let mut child = script.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    child
        .stdin
        .as_mut()
        .context("stdin")?
        .write_all(b"tty; exit 4\r")?;
    let deadline = Instant::now() + WAIT;
    while child.try_wait()?.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if child.try_wait()?.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output()?;
    ensure!(stdout(&out).contains("/dev/pts/"), "pty: {}", show(&out));
    ensure!(out.status.code() == Some(4), "pty: {}", show(&out));

    // config-ssh, then scp up and down, and ssh -L to the web server.
    let ssh_config = alice.dir.path().join("ssh_config");
    let out = alice.run(&["config-ssh", "--ssh-config", &ssh_config.display().to_string()])?;
    ensure!(out.status.success(), "config-ssh: {}", show(&out));
    // Per kubeconfig context: the user's is "e2e".
    let host = format!("web.{}.e2e.hatchway", users.name);
    let data: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let up = alice.dir.path().join("up.bin");
    std::fs::write(&up, &data)?;
    let back = alice.dir.path().join("back.bin");
    let ssh_tool = |program: &str, args: &[String]| -> Result<Output> {
        let mut command = alice.ssh_command(program, &ssh_config);
        command.args(args);
        run_within(command, WAIT)
    };
    let out = ssh_tool(
        "scp",
        &[
            "-q".into(),
            up.display().to_string(),
            format!("{host}:/tmp/up.bin"),
        ],
    )?;
    ensure!(out.status.success(), "scp up: {}", show(&out));
    let out = ssh_tool(
        "scp",
        &[
            "-q".into(),
            format!("{host}:/tmp/up.bin"),
            back.display().to_string(),
        ],
    )?;
    ensure!(out.status.success(), "scp down: {}", show(&out));
    ensure!(
        sha256_hex(&std::fs::read(&back)?) == sha256_hex(&data),
        "scp round trip changed the file"
    );
    let out = ssh_tool("ssh", &[host.clone(), "sha256sum /tmp/up.bin".into()])?;
    ensure!(
        stdout(&out).starts_with(&sha256_hex(&data)),
        "remote checksum: {}",
        show(&out)
    );

    let local = free_port()?;
    let mut forward = alice
        .command("ssh")
        .env("HATCHWAY_TOKEN", &alice.token)
        .arg("-F")
        .arg(&ssh_config)
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "ExitOnForwardFailure=yes",
            "-N",
            "-L",
        ])
        .arg(format!("127.0.0.1:{local}:127.0.0.1:8080"))
        .arg(&host)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let page = wait_until("the page through ssh -L", WAIT, POLL, || {
        let mut curl = Command::new("curl");
        curl.args(["-sS", "--max-time", "5", &format!("http://127.0.0.1:{local}/")]);
        let out = run_within(curl, WAIT)?;
        Ok(out.status.success().then(|| stdout(&out)))
    });
    let _ = forward.kill();
    let _ = forward.wait();
    ensure!(page?.contains("hatchway e2e workload"), "ssh -L page");

    // Logs: a Container that writes five lines and ends; `logs -f` prints
    // them as they come and stops at the end; afterwards the same bytes
    // are the saved logs; curl PROPFIND lists them.
    users.apply(&container(
        "job",
        "for i in 1 2 3 4 5; do echo line $i; sleep 1; done; echo oops >&2",
        json!([]),
    ))?;
    wait_phase(&users, "job", "Running")?;
    let out = run_within(alice.hatch(&["logs", "job", "-f"])?, Duration::from_secs(120))?;
    ensure!(out.status.success(), "logs -f: {}", show(&out));
    let followed = stdout(&out);
    ensure!(
        followed == "line 1\nline 2\nline 3\nline 4\nline 5\n",
        "logs -f: {}",
        show(&out)
    );
    ensure!(
        String::from_utf8_lossy(&out.stderr) == "oops\n",
        "logs -f stderr: {}",
        show(&out)
    );
    wait_phase(&users, "job", "Complete")?;
    let out = alice.run(&["logs", "job", "stdout.txt"])?;
    ensure!(stdout(&out) == followed, "saved logs: {}", show(&out));
    // A WebDAV client nobody here wrote: curl, with the token as the basic
    // auth password, lists the directory and reads a file.
    let webdav = |method: &str, path: &str| -> Result<Output> {
        let mut curl = Command::new("curl");
        curl.args(["-sS", "--max-time", "20", "-X", method, "-H", "Depth: 1", "-u"])
            .arg(format!("any:{}", alice.token))
            .arg("--cacert")
            .arg(ca_file(&release, alice.dir.path())?)
            .arg(format!(
                "{}/v1/namespaces/{}/containers/{path}",
                release.server(),
                users.name
            ));
        run_within(curl, WAIT)
    };
    let out = webdav("PROPFIND", "job/log/")?;
    ensure!(
        stdout(&out).contains("stdout.txt") && stdout(&out).contains("stderr.txt"),
        "PROPFIND: {}",
        show(&out)
    );
    let out = webdav("GET", "job/log/stdout.txt")?;
    ensure!(stdout(&out) == followed, "GET stdout.txt: {}", show(&out));
    // The audit trail names the reader as the router authenticated them
    // and the replica (its pod name) that sent the request; this read is
    // in what it reads.
    let out = webdav("GET", "web/log/gateway.txt")?;
    let reader = format!("log read user=\"system:serviceaccount:{}:alice\"", users.name);
    ensure!(
        stdout(&out)
            .lines()
            .any(|l| l.contains(&reader) && l.contains(" replica=\"") && !l.contains(" replica=\"https://")),
        "gateway.txt: {}",
        show(&out)
    );

    // Web apps: the private one through the token→cookie step (curl, then
    // headless Chromium), the public one without a token, no rights → 403.
    let url = |port: u16| -> Result<String> { published_url(&status, port).context("no URL") };
    let connect_to = format!("::{}:{}", release.node_ip, release.node_port);
    let ca = ca_file(&release, alice.dir.path())?;
    let curl = |args: &[&str]| -> Result<Output> {
        let mut curl = Command::new("curl");
        curl.args(["-sS", "--max-time", "20", "--connect-to", &connect_to, "--cacert"])
            .arg(&ca)
            .args(args);
        run_within(curl, WAIT)
    };
    let private = url(8080)?;
    let jar = alice.dir.path().join("cookies");
    let jar = jar.display().to_string();
    // A one-time login link from the CLI (never the token in a URL).
    let login_link = |user: &User, port: &str| -> Result<String> {
        let out = user.run(&["open", "web", port, "--login-url"])?;
        ensure!(out.status.success(), "open --login-url: {}", show(&out));
        let link = stdout(&out).trim().to_owned();
        ensure!(
            link.contains("?hatchway_code=") && !link.contains(&user.token),
            "login link {link}"
        );
        Ok(link)
    };
    let login = login_link(&alice, "8080")?;
    let out = curl(&[
        "-L",
        "-c",
        &jar,
        "-b",
        &jar,
        "-w",
        "\n%{num_redirects} %{url_effective}",
        &login,
    ])?;
    let text = stdout(&out);
    ensure!(
        text.contains("hatchway e2e workload"),
        "private app: {}",
        show(&out)
    );
    ensure!(
        text.ends_with(&format!("1 {private}")),
        "one redirect to the plain URL: {text}"
    );
    let out = curl(&["-o", "/dev/null", "-w", "%{http_code}", &private])?;
    ensure!(
        stdout(&out) == "401",
        "private app without the cookie: {}",
        show(&out)
    );
    let out = curl(&["-w", "\n%{http_code}", &url(8081)?])?;
    ensure!(
        stdout(&out).contains("public page") && stdout(&out).ends_with("\n200"),
        "public app: {}",
        show(&out)
    );
    // The code was used: the same link again is refused.
    let out = curl(&["-o", "/dev/null", "-w", "%{http_code}", &login])?;
    ensure!(stdout(&out) == "401", "a login link used twice: {}", show(&out));
    // The login is in the audit trail with the user the router
    // authenticated and its replica.
    let login_line = "web app port 8080 login session=";
    let alice_name = format!("user=\"system:serviceaccount:{}:alice\"", users.name);
    let out = webdav("GET", "web/log/gateway.txt")?;
    ensure!(
        stdout(&out)
            .lines()
            .any(|l| l.contains(login_line) && l.contains(&alice_name) && l.contains(" replica=\"")),
        "no web-app login in gateway.txt: {}",
        show(&out)
    );
    // A login link for a user without `get containers/proxy`: refused.
    let weblogin = format!(
        "{}/v1/namespaces/{}/containers/web/weblogin?port=8080",
        release.server(),
        users.name
    );
    let out = curl(&[
        "-X",
        "POST",
        "-H",
        &format!("Authorization: Bearer {}", nobody.token),
        "-w",
        "\n%{http_code}",
        &weblogin,
    ])?;
    ensure!(
        stdout(&out).ends_with("\n403") && stdout(&out).contains("may not get containers/proxy"),
        "a login link for nobody: {}",
        show(&out)
    );

    // A WebSocket with a session of its own vhost.
    let out = curl(&["-o", "/dev/null", "-D", "-", &login_link(&alice, "8082")?])?;
    let session = stdout(&out)
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("set-cookie")
                .then(|| value.trim().split(';').next().unwrap_or_default().to_owned())
        })
        .with_context(|| format!("no session cookie: {}", show(&out)))?;
    websocket_echo(&release, &url(8082)?, &session)?;

    // The app learns who is calling: the router's signed assertion (never
    // a client's), which PyJWT verifies with the router's published keys.
    let app = url(8082)?;
    let out = curl(&[
        "-H",
        &format!("Cookie: {session}"),
        "-H",
        "Hatchway-Jwt-Assertion: forged",
        &format!("{}/headers", app.trim_end_matches('/')),
    ])?;
    let head = stdout(&out);
    let assertions: Vec<&str> = head
        .lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case(hatchway_api::wire::JWT_ASSERTION)
                .then_some(value.trim())
        })
        .collect();
    ensure!(
        assertions.len() == 1 && assertions[0] != "forged",
        "the app's request head: {}",
        show(&out)
    );
    let jwks = stdout(&curl(&[&format!("{}/.well-known/jwks.json", release.server())])?);
    let host = app
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap_or_default();
    let origin = format!("https://{}", host.rsplit_once(':').map_or(host, |(h, _)| h));
    let claims = hatchway_testkit::pyjwt_verify(&jwks, assertions[0], &origin)
        .map_err(|e| anyhow::anyhow!("PyJWT refused the assertion: {e}\nkeys: {jwks}"))?;
    ensure!(
        claims["sub"] == format!("system:serviceaccount:{}:alice", users.name).as_str()
            && claims["container"] == "web"
            && claims["namespace"] == users.name.as_str(),
        "claims {claims}"
    );

    // Chromium, in a network namespace of its own (the cluster's veths
    // come and go as other tests' pods start, and Chromium aborts a page
    // load on any such change): the apps domain resolves to its loopback,
    // which relays to the router's NodePort.
    let mut c = Command::new("chromium");
    c.args(hatchway_e2e::CHROMIUM_FLAGS).args([
        // The router's CA is not in Chromium's store; the pages and the
        // cookie step are what is under test here.
        "--ignore-certificate-errors",
        &format!("--host-resolver-rules=MAP *.{APPS} 127.0.0.1"),
        &format!("--user-data-dir={}", alice.dir.path().join("chromium").display()),
        "--dump-dom",
        &login_link(&alice, "8080")?,
    ]);
    let router = std::net::SocketAddr::new(release.node_ip.parse()?, release.node_port);
    let chromium = run_isolated_from_host_network(c, release.node_port, router, Duration::from_secs(120))?;
    ensure!(
        stdout(&chromium).contains("hatchway e2e workload"),
        "chromium: {}",
        show(&chromium)
    );

    // Port-forward: 50 MiB to the SHA-256 server, checksum compared.
    let seconds = forward_50_mib(alice.hatch(&["port-forward", "web", ":9000"])?, alice.dir.path())?;
    eprintln!("port-forward: 50 MiB in {seconds:.2} s");

    // Security: no rights → 403 for shell, logs and port-forward; a bad
    // token → 401; the workload cannot find its key.
    for args in [&["shell", "web", "--", "true"][..], &["logs", "web"][..]] {
        let out = nobody.run(args)?;
        ensure!(out.status.code() == Some(2), "{args:?} as nobody: {}", show(&out));
        ensure!(
            String::from_utf8_lossy(&out.stderr).contains("403"),
            "{args:?}: {}",
            show(&out)
        );
    }
    let mut pf = nobody.hatch(&["port-forward", "web", ":9000"])?;
    let pf_out = nobody.dir.path().join("pf.out");
    pf.stdout(std::fs::File::create(&pf_out)?).stderr(Stdio::piped());
    let pf = pf.spawn()?;
    let local: std::net::SocketAddr = wait_until("port-forward to listen", WAIT, POLL, || {
        let text = std::fs::read_to_string(&pf_out)?;
        Ok(text.split_whitespace().nth(2).and_then(|a| a.parse().ok()))
    })?;
    let _ = std::net::TcpStream::connect(local)?;
    let out = pf.wait_with_output()?;
    ensure!(
        out.status.code() == Some(2)
            && String::from_utf8_lossy(&out.stderr).contains("may not create containers/portforward"),
        "port-forward as nobody: {}",
        show(&out)
    );
    let mut bad = alice.hatch(&["logs", "web"])?;
    bad.env("HATCHWAY_TOKEN", "not-a-token");
    let out = run_within(bad, WAIT)?;
    ensure!(
        out.status.code() == Some(2) && String::from_utf8_lossy(&out.stderr).contains("401"),
        "a bad token: {}",
        show(&out)
    );
    let out = alice.run(&[
        "shell",
        "web",
        "--",
        "find / -xdev \\( -name ctr_key -o -name 'tls.key' -o -name ca.key \\) 2>/dev/null; \
         ls /var/run/secrets 2>&1; echo done",
    ])?;
    ensure!(
        stdout(&out).trim_end().ends_with("done")
            && !stdout(&out).contains("ctr_key")
            && !stdout(&out).contains(".key"),
        "the workload sees key material: {}",
        show(&out)
    );

    prometheus_scrapes(&release, &users)?;
    admission_policy_guards_references(&release, &users)?;
    container_network_policy(&users)?;
    users.passed();
    release.ns.passed();
    Ok(())
}

/// The NetworkPolicy the operator gave Container `web`'s pod, as the API
/// server stored it: the gateway port for the operator's pods only. (The
/// e2e cluster's bridge CNI does not enforce policies.)
fn container_network_policy(users: &TestNamespace) -> Result<()> {
    let list = kubectl_json(&[
        "-n",
        &users.name,
        "get",
        "networkpolicies",
        "-l",
        "hatchway.dev/container=web",
        "-o",
        "json",
    ])?;
    let items = list["items"].as_array().context("items")?;
    ensure!(items.len() == 1, "NetworkPolicies of web: {list}");
    let rules = &items[0]["spec"]["ingress"];
    ensure!(
        rules[0]["ports"][0]["port"] == 7443
            && rules[0]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
            && rules[2]["from"].is_null()
            && rules[2]["ports"][0]["endPort"] == 7442,
        "the policy: {rules}"
    );
    Ok(())
}

/// The chart's ValidatingAdmissionPolicy: a user who may create Containers
/// but not read a Secret cannot have one read into a Container's env, nor
/// run it as a ServiceAccount without `create pods`; with `get` on the
/// Secret, the same Container is admitted.
fn admission_policy_guards_references(release: &Release, users: &TestNamespace) -> Result<()> {
    users.kubectl(&[
        "create",
        "secret",
        "generic",
        "db",
        "--from-literal=password=s3cret",
    ])?;
    users.kubectl(&[
        "create",
        "role",
        "container-creator",
        "--verb=create,get,list",
        "--resource=containers.hatchway.dev",
    ])?;
    let creator = User::new(users, release, "creator", None)?;
    users.kubectl(&[
        "create",
        "rolebinding",
        "creator-containers",
        "--role=container-creator",
        &format!("--serviceaccount={}:creator", users.name),
    ])?;
    let create = |name: &str, extra: Value| -> Result<Output> {
        let mut spec = json!({ "image": WORKLOAD_IMAGE, "command": ["true"] });
        for (k, v) in extra.as_object().context("an object")? {
            spec[k] = v.clone();
        }
        let manifest = json!({
            "apiVersion": "hatchway.dev/v1alpha1",
            "kind": "Container",
            "metadata": { "name": name },
            "spec": spec,
        });
        let file = creator.dir.path().join(format!("{name}.json"));
        std::fs::write(&file, manifest.to_string())?;
        let mut kubectl = creator.command("kubectl");
        kubectl.args(["-n", &users.name, "create", "-f"]).arg(&file);
        run_within(kubectl, WAIT)
    };
    let steal = json!({ "env": [{ "name": "P", "valueFrom": { "secretKeyRef": { "name": "db", "key": "password" } } }] });
    // The Role may take a moment to apply: wait until plain Containers are
    // admitted, then the attack must be refused.
    wait_until("the creator may create Containers", WAIT, POLL, || {
        Ok(create("plain", json!({}))?.status.success().then_some(()))
    })?;
    let out = create("steal", steal.clone())?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success()
            && err.contains("spec.env refers to Secret(s) db, and system:serviceaccount:")
            && err.contains(":creator may not get every one of them"),
        "a Container reading a Secret its creator may not: {}",
        show(&out)
    );
    let out = create("as-sa", json!({ "pod": { "serviceAccountName": "default" } }))?;
    ensure!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("that needs create pods"),
        "a Container run as a ServiceAccount without create pods: {}",
        show(&out)
    );
    for (name, raise) in [
        ("privileged", json!({ "securityContext": { "privileged": true } })),
        (
            "caps",
            json!({ "securityContext": { "capabilities": { "add": ["SYS_ADMIN"] } } }),
        ),
        (
            "unconfined",
            json!({ "pod": { "securityContext": { "seccompProfile": { "type": "Unconfined" } } } }),
        ),
    ] {
        let out = create(name, raise)?;
        ensure!(
            !out.status.success()
                && String::from_utf8_lossy(&out.stderr).contains("gives the workload more than a")
                && String::from_utf8_lossy(&out.stderr).contains("that needs create pods"),
            "a Container raising its privileges ({name}) without create pods: {}",
            show(&out)
        );
    }
    // Confining it more is anyone's right.
    let out = create(
        "confined",
        json!({ "securityContext": { "capabilities": { "drop": ["ALL"] }, "readOnlyRootFilesystem": true } }),
    )?;
    ensure!(out.status.success(), "a more confined Container: {}", show(&out));
    // With the right to read the Secret, the same Container is admitted.
    users.kubectl(&[
        "create",
        "role",
        "read-db",
        "--verb=get",
        "--resource=secrets",
        "--resource-name=db",
    ])?;
    users.kubectl(&[
        "create",
        "rolebinding",
        "creator-read-db",
        "--role=read-db",
        &format!("--serviceaccount={}:creator", users.name),
    ])?;
    wait_until(
        "the Container with the Secret's reader's rights",
        WAIT,
        POLL,
        || Ok(create("steal", steal.clone())?.status.success().then_some(())),
    )?;
    Ok(())
}

/// A WebSocket through the web-app proxy to the workload's echo server:
/// TLS to the router (trusting its CA), the web-app session cookie
/// (`name=value`) and the app's own Origin, messages back.
fn websocket_echo(release: &Release, url: &str, session: &str) -> Result<()> {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (host, name) = web_app_host(url)?;
    let tls = release.client_tls()?;
    let addr = (release.node_ip.clone(), release.node_port);
    common::runtime().block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let tls = tokio_rustls::TlsConnector::from(tls)
            .connect(rustls::pki_types::ServerName::try_from(name)?, tcp)
            .await?;
        let request = http::Request::builder()
            .uri(format!("wss://{host}/"))
            .header("host", &host)
            .header("cookie", session)
            .header("origin", format!("https://{host}"))
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header(
                "sec-websocket-key",
                tokio_tungstenite::tungstenite::handshake::client::generate_key(),
            )
            .body(())?;
        let (mut ws, _) = tokio_tungstenite::client_async(request, tls)
            .await
            .context("the WebSocket handshake through the router")?;
        for i in 0..3 {
            let text = format!("cell {i}");
            ws.send(Message::text(text.clone())).await?;
            let echoed = tokio::time::timeout(WAIT, ws.next())
                .await
                .context("an echo in time")?
                .context("the socket closed")??;
            ensure!(echoed.to_text()? == text, "echoed {echoed:?}");
        }
        anyhow::Ok(())
    })
}

/// The router CA in a file in `dir`.
fn ca_file(release: &Release, dir: &Path) -> Result<PathBuf> {
    let path = dir.join("router-ca.crt");
    if !path.exists() {
        std::fs::write(&path, release.ca_pem()?)?;
    }
    Ok(path)
}

/// Debian's Prometheus server, started here, scrapes both operator
/// replicas (HTTPS, the router CA) and the web Container's sidecar; the
/// expected series have values.
fn prometheus_scrapes(release: &Release, users: &TestNamespace) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ca = ca_file(release, dir.path())?;
    let operators: Vec<String> = release
        .pods()?
        .into_iter()
        // The metrics port, not the user-facing one.
        .map(|(_, ip)| format!("{ip}:9443"))
        .collect();
    let sidecar_ip = kubectl(&[
        "-n",
        &users.name,
        "get",
        "pods",
        "-l",
        "hatchway.dev/container=web",
        "-o",
        "jsonpath={.items[0].status.podIP}",
    ])?;
    // The chart's alerts, loaded as the PrometheusRule carries them.
    let rules = chart_dir().join("rules/hatchway.rules.yaml");
    let config = json!({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [rules],
        "scrape_configs": [
            {
                "job_name": "hatchway-operator",
                "scheme": "https",
                "tls_config": {"ca_file": ca, "server_name": "hatchway-router"},
                "static_configs": [{"targets": operators}],
            },
            {
                "job_name": "hatchway-sidecar",
                "static_configs": [{"targets": [format!("{}:7444", sidecar_ip.trim())]}],
            },
        ],
    });
    let config_file = dir.path().join("prometheus.yml");
    std::fs::write(&config_file, config.to_string())?;
    let port = free_port()?;
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config_file.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting prometheus (Debian's prometheus package)")?;
    let query = |q: &str| -> Result<Vec<Value>> {
        let mut curl = Command::new("curl");
        curl.args(["-sS", "--max-time", "5", "--data-urlencode"])
            .arg(format!("query={q}"))
            .arg(format!("http://127.0.0.1:{port}/api/v1/query"));
        let out = run_within(curl, WAIT)?;
        let v: Value = serde_json::from_slice(&out.stdout)?;
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    };
    let result = wait_until(
        "Prometheus to scrape the operator and the sidecar",
        WAIT,
        POLL,
        || {
            let up = query("up == 1")?;
            let router = query("hatchway_router_sessions_total")?;
            let sidecar = query("hatchway_sidecar_connections_total")?;
            let jobs: Vec<&str> = up.iter().filter_map(|r| r["metric"]["job"].as_str()).collect();
            let operators_up = jobs.iter().filter(|j| **j == "hatchway-operator").count();
            // One value of a query that sums to one series.
            let value = |q: &str| -> Result<f64> {
                let result = query(q)?;
                let v = result.first().map(|r| r["value"][1].as_str().unwrap_or_default());
                Ok(v.unwrap_or("NaN").parse().unwrap_or(f64::NAN))
            };
            // The reconciler ran (this release's Containers) and took time;
            // exactly one replica leads; every replica says its version and
            // its process figures.
            let reconciles = value("sum(hatchway_reconcile_duration_seconds_count)")?;
            let reconcile_seconds = value("sum(hatchway_reconcile_duration_seconds_sum)")?;
            let leaders = value("sum(hatchway_leader)")?;
            let builds = value("count(hatchway_build_info == 1)")?;
            let memory = value("min(process_resident_memory_bytes{job=\"hatchway-operator\"})")?;
            let ok = operators_up == 2
                && jobs.contains(&"hatchway-sidecar")
                && !router.is_empty()
                && !sidecar.is_empty()
                && reconciles >= 1.0
                && reconcile_seconds > 0.0
                && leaders == 1.0
                && builds == 2.0
                && memory > 0.0;
            if ok {
                Ok(Some(()))
            } else {
                bail!(
                    "up: {jobs:?}; router series {}; sidecar series {}; reconciles {reconciles} \
                     taking {reconcile_seconds} s; leaders {leaders}; build infos {builds}; \
                     resident memory {memory}",
                    router.len(),
                    sidecar.len()
                )
            }
        },
    );
    let result = result.and_then(|()| dashboard_and_alerts_evaluate(&query, port));
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    result
}

/// Every panel query of the chart's Grafana dashboard returns a series
/// from the scraped replicas and sidecar, and every alert of its rule file
/// is loaded and evaluates without an error (firing or not).
fn dashboard_and_alerts_evaluate(query: &dyn Fn(&str) -> Result<Vec<Value>>, port: u16) -> Result<()> {
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(
        chart_dir().join("dashboards/hatchway.json"),
    )?)?;
    let exprs: Vec<(String, String)> = dashboard["panels"]
        .as_array()
        .context("panels")?
        .iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or_default().to_owned();
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(move |t| t["expr"].as_str().map(|e| (title.clone(), e.to_owned())))
        })
        .collect();
    ensure!(exprs.len() >= 15, "{} panel queries", exprs.len());
    // Grafana's interval, as the dashboard would get it at a 1 s scrape.
    // (wait_until names the last error: the panels still without a series.)
    wait_until(
        "every dashboard panel's query to return a series",
        WAIT,
        POLL,
        || {
            let mut empty = Vec::new();
            for (title, expr) in &exprs {
                if query(&expr.replace("$__rate_interval", "1m"))?.is_empty() {
                    empty.push(format!("{title}: {expr}"));
                }
            }
            if empty.is_empty() {
                Ok(Some(()))
            } else {
                bail!("no series for: {empty:#?}")
            }
        },
    )?;
    // The alerts: loaded, each evaluated at least once without an error.
    let rules_url = format!("http://127.0.0.1:{port}/api/v1/rules");
    wait_until("every alert evaluated without an error", WAIT, POLL, || {
        let mut curl = Command::new("curl");
        curl.args(["-sS", "--max-time", "5"]).arg(&rules_url);
        let out = run_within(curl, WAIT)?;
        let v: Value = serde_json::from_slice(&out.stdout)?;
        let rules: Vec<Value> = v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let bad: Vec<String> = rules
            .iter()
            .filter(|r| r["health"] != "ok")
            .map(|r| format!("{} {} {}", r["name"], r["health"], r["lastError"]))
            .collect();
        if rules.len() >= 8 && bad.is_empty() {
            Ok(Some(()))
        } else {
            bail!("{} rules loaded; not ok: {bad:?}", rules.len())
        }
    })?;
    Ok(())
}

/// Tunnels only (direct pod access off): shells go through the sidecar's
/// tunnel; a request that lands on the replica without the tunnel is
/// forwarded; killing the replica that holds the tunnel moves it to the
/// other within seconds (measured).
#[test]
fn tunnels_only_forwarding_between_replicas_and_failover() -> Result<()> {
    let users = TestNamespace::new("tunnel-users")?;
    // Requests received and answered are logged (debug): a shell that
    // meets silence can be followed in the replicas' logs by its id.
    let release = Release::install(
        "tunnel",
        &users,
        &[
            "--set",
            "router.directAccess=false",
            "--set",
            "logLevel=info\\,hatchway_operator::router::routes=debug",
        ],
    )?;
    let alice = User::new(&users, &release, "alice", Some("edit"))?;
    users.apply(&container("web", WEB_SCRIPT, json!([])))?;
    wait_phase(&users, "web", "Running")?;
    let tunnel = wait_until("the tunnel in status", WAIT, POLL, || {
        let c = get_container(&users, "web")?;
        Ok(c["status"]["gateway"]["tunnel"].as_str().map(str::to_owned))
    })?;
    alice.wait_rights("web")?;
    // Each replica directly (pod IPs are in their certificates): the one
    // with the tunnel and the one that forwards to it.
    let pods = release.pods()?;
    ensure!(pods.len() == 2, "replicas: {pods:?}");
    for (pod, ip) in &pods {
        let mut cmd = alice.hatch(&["shell", "web", "--", "echo via $0"])?;
        cmd.env("HATCHWAY_SERVER", format!("https://{ip}:8443"));
        let out = run_within(cmd, WAIT)?;
        ensure!(
            out.status.success() && stdout(&out).contains("via"),
            "shell via {pod}: {}",
            show(&out)
        );
    }
    // Kill the replica holding the tunnel; time until a shell works again.
    let (holder, _) = pods
        .iter()
        .find(|(_, ip)| tunnel.contains(ip.as_str()))
        .with_context(|| format!("no replica holds {tunnel}: {pods:?}"))?;
    let killed = Instant::now();
    release.ns.kubectl(&[
        "delete",
        "pod",
        holder,
        "--grace-period=0",
        "--force",
        "--wait=false",
    ])?;
    wait_until(
        "a shell after the tunnel's replica died",
        Duration::from_secs(60),
        POLL,
        || {
            let out = alice.run(&["shell", "web", "--", "true"])?;
            Ok(out.status.success().then_some(()))
        },
    )?;
    let failover = killed.elapsed();
    eprintln!(
        "tunnel failover: a shell works again {:.2} s after the replica holding the tunnel was killed",
        failover.as_secs_f64()
    );
    // The bound: the sidecar redials within 0.4 s and moves in under a
    // second (below), the router waits out the rest within its 2 s grace.
    ensure!(
        failover < Duration::from_secs(3),
        "a shell took {failover:?} to work again after the tunnel's replica was killed"
    );

    // A rolling restart under requests: every shell works throughout (the
    // replica that gets a request for a moving tunnel waits for it, up to
    // its 2 s grace), and each move of the tunnel, read from the sidecar's
    // log, takes under a second.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let replica_logs = release.follow_logs()?;
    let (tries, failures) = std::thread::scope(|scope| -> Result<_> {
        let prober = scope.spawn(|| {
            let mut tries = 0;
            let mut failures = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tries += 1;
                match alice.run(&["shell", "web", "--", "true"]) {
                    Ok(out) if out.status.success() => {}
                    Ok(out) => failures.push(show(&out)),
                    Err(error) => failures.push(format!("{error:#}")),
                }
            }
            (tries, failures)
        });
        let restarted = release.rollout_restart();
        // The tunnel on one of the new replicas, and a shell through it.
        let settled = restarted.and_then(|()| {
            let ips: Vec<String> = release.pods()?.into_iter().map(|(_, ip)| ip).collect();
            wait_until("the tunnel on a new replica", WAIT, POLL, || {
                let c = get_container(&users, "web")?;
                let tunnel = c["status"]["gateway"]["tunnel"].as_str().unwrap_or_default();
                Ok(ips.iter().any(|ip| tunnel.contains(ip.as_str())).then_some(()))
            })
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let probed = prober
            .join()
            .map_err(|_| anyhow::anyhow!("the prober panicked"))?;
        settled?;
        Ok(probed)
    })?;
    if !failures.is_empty() {
        // The request ids the CLI named, found in the old replicas' logs.
        let ids: Vec<&str> = failures
            .iter()
            .filter_map(|f| f.split("(request ").nth(1)?.split(')').next())
            .collect();
        anyhow::bail!(
            "{} of {tries} shells failed during a rolling restart: {failures:#?}\nthe old replicas said:\n{}",
            failures.len(),
            replica_logs.lines_about(&ids)
        );
    }
    let log = users.kubectl(&[
        "logs",
        "-l",
        "hatchway.dev/container=web",
        "-c",
        "hatchway-sidecar",
        "--tail=-1",
    ])?;
    let gaps = tunnel_gaps(&log);
    eprintln!("rolling restart: {tries} shells, all worked; the tunnel's moves (s): {gaps:.2?}");
    // The kill and the restart's two replicas: at least two moves.
    ensure!(
        gaps.len() >= 2,
        "fewer tunnel moves than replicas replaced: {gaps:?}\n{log}"
    );
    ensure!(
        gaps.iter().all(|gap| *gap < 1.0),
        "a tunnel move took a second or more: {gaps:?}\n{log}"
    );
    users.passed();
    release.ns.passed();
    Ok(())
}

/// How long each move of a sidecar's tunnel took, in seconds, from its
/// log: from a "tunnel down" or "tunnel closed" line to the next "tunnel
/// connected". The lines start with the time of day (the sidecar's tracing
/// format, UTC); colours are ignored.
fn tunnel_gaps(log: &str) -> Vec<f64> {
    let seconds = |line: &str| -> Option<f64> {
        let time = line.split_once('T')?.1.split_once('Z')?.0;
        let mut parts = time.split(':');
        let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
        Some(h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
    };
    let mut gaps = Vec::new();
    let mut down = None;
    for line in log.lines() {
        let plain: String = strip_ansi(line);
        if plain.contains("tunnel down; reconnecting") || plain.contains("tunnel closed by the router") {
            down = down.or(seconds(&plain));
        } else if plain.contains("tunnel connected")
            && let (Some(from), Some(to)) = (down.take(), seconds(&plain))
        {
            gaps.push((to - from).rem_euclid(86_400.0));
        }
    }
    gaps
}

/// `line` without its terminal colour sequences (ESC [ ... m).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn tunnel_gaps_are_read_from_the_sidecars_log() {
    let log = "\u{1b}[2m2026-12-05T06:14:31.000000Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m hatchway_sidecar::tunnel: tunnel connected router=r:8443
2026-12-05T06:14:40.250000Z  WARN hatchway_sidecar::tunnel: tunnel down; reconnecting error=reset
2026-12-05T06:14:40.300000Z  WARN hatchway_sidecar::tunnel: tunnel down; reconnecting error=refused
2026-12-05T06:14:40.900000Z  INFO hatchway_sidecar::tunnel: tunnel connected router=r:8443
2026-12-05T23:59:59.500000Z  INFO hatchway_sidecar::tunnel: tunnel closed by the router; reconnecting
2026-12-06T00:00:00.250000Z  INFO hatchway_sidecar::tunnel: tunnel connected router=r:8443";
    let gaps = tunnel_gaps(log);
    assert_eq!(gaps.len(), 2, "{gaps:?}");
    assert!((gaps[0] - 0.65).abs() < 1e-6, "{gaps:?}");
    assert!((gaps[1] - 0.75).abs() < 1e-6, "{gaps:?}");
}

/// Saved logs are streamed: 20 `view` users' parallel reads of a 60 MiB
/// saved log (every byte checked) grow the replica's resident memory by
/// less than 64 MiB (its peak, `VmHWM` reset first, read from the node's
/// /proc), while the tunnel of a running Container stays connected and
/// serves its logs throughout. Prints the figures.
#[test]
fn twenty_readers_of_a_sixty_mebibyte_saved_log_leave_the_replica_small() -> Result<()> {
    const LINES: usize = 62_915; // × 1000 bytes: just over 60 MiB
    const READERS: usize = 20;
    let users = TestNamespace::new("biglog-users")?;
    let release = Release::install(
        "biglog",
        &users,
        &[
            "--set",
            "replicaCount=1,router.directAccess=false",
            "--set",
            &format!("router.maxSavedLogReads={READERS}"),
        ],
    )?;
    let viewer = User::new(&users, &release, "viewer", Some("view"))?;
    users.apply(&container(
        "alive",
        "i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done",
        json!([]),
    ))?;
    users.apply(&container(
        "big",
        &format!("line=$(printf '%0999d' 0); yes \"$line\" | head -n {LINES}"),
        json!([]),
    ))?;
    wait_phase(&users, "alive", "Running")?;
    let tunnel = wait_until("alive's tunnel in status", WAIT, POLL, || {
        let c = get_container(&users, "alive")?;
        Ok(c["status"]["gateway"]["tunnel"].as_str().map(str::to_owned))
    })?;
    wait_phase(&users, "big", "Complete")?;
    viewer.wait_rights("alive")?;
    let size = LINES * 1000;
    let line = format!("{}\n", format_args!("{:0999}", 0));

    let pods = release.pods()?;
    ensure!(pods.len() == 1, "replicas: {pods:?}");
    let (pod, ip) = &pods[0];
    let pid = pid_in_pod(&release.ns.name, pod, "hatchway-operat")?;
    let metric = |name: &str| -> Result<f64> {
        let mut curl = Command::new("curl");
        curl.args(["-sS", "--max-time", "5", "--cacert"])
            .arg(ca_file(&release, viewer.dir.path())?)
            .args(["--resolve", &format!("hatchway-router:9443:{ip}")])
            .arg("https://hatchway-router:9443/metrics");
        let out = run_within(curl, WAIT)?;
        let text = stdout(&out);
        Ok(text
            .lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    };
    let attempts = metric("hatchway_router_tunnel_attempts_total")?;
    ensure!(
        metric("hatchway_router_tunnels_connected")? >= 1.0,
        "no tunnel held"
    );

    // The size is counted once before the first byte is sent; warm that
    // up so the measurement is the readers alone.
    let url = format!(
        "{}/v1/namespaces/{}/containers/big/log/stdout.txt",
        release.server(),
        users.name
    );
    // Each reader writes to a file (a pipe nobody reads while waiting
    // would stop it).
    let out_dir = tempfile::tempdir()?;
    let reader = |i: usize| -> Result<(std::process::Child, PathBuf)> {
        let file = out_dir.path().join(format!("reader-{i}"));
        let child = Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "300", "-H"])
            .arg(format!("Authorization: Bearer {}", viewer.token))
            .arg("--cacert")
            .arg(ca_file(&release, viewer.dir.path())?)
            .arg("-o")
            .arg(&file)
            .arg(&url)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        Ok((child, file))
    };
    let check = |(child, file): (std::process::Child, PathBuf)| -> Result<()> {
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "a reader failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = std::fs::read(&file)?;
        ensure!(
            got.len() == size && got.chunks(1000).all(|c| c == line.as_bytes()),
            "a reader got {} bytes, not {size} lines of zeros",
            got.len()
        );
        std::fs::remove_file(&file)?;
        Ok(())
    };
    check(reader(READERS)?)?;

    let baseline = proc_status_kib(pid, "VmRSS")?;
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").context("resetting the router's peak RSS")?;
    let started = Instant::now();
    let readers: Vec<_> = (0..READERS).map(reader).collect::<Result<_>>()?;
    // The running Container's logs through its tunnel, meanwhile.
    let mut served = 0;
    let mut waiting = readers;
    let mut done = Vec::new();
    while !waiting.is_empty() {
        let out = viewer.run(&["logs", "alive", "--tail", "1"])?;
        ensure!(
            out.status.success() && stdout(&out).starts_with("tick"),
            "the tunnel's logs during the reads: {}",
            show(&out)
        );
        served += 1;
        let (finished, running): (Vec<_>, Vec<_>) = waiting
            .into_iter()
            .map(|mut c| (c.0.try_wait().map(|s| s.is_some()).unwrap_or(true), c))
            .partition(|(f, _)| *f);
        done.extend(finished.into_iter().map(|(_, c)| c));
        waiting = running.into_iter().map(|(_, c)| c).collect();
        ensure!(
            started.elapsed() < Duration::from_secs(300),
            "the reads take over 5 minutes"
        );
    }
    let elapsed = started.elapsed().as_secs_f64();
    let peak = proc_status_kib(pid, "VmHWM")?;
    for child in done {
        check(child)?;
    }
    let growth_mib = peak.saturating_sub(baseline) as f64 / 1024.0;
    eprintln!(
        "saved logs: {READERS} parallel reads of {:.1} MiB in {elapsed:.1} s ({:.0} MiB/s); \
         router RSS {:.1} MiB before, peak {:.1} MiB: +{growth_mib:.1} MiB; \
         {served} tunnel log reads meanwhile",
        size as f64 / 1048576.0,
        (READERS * size) as f64 / 1048576.0 / elapsed,
        baseline as f64 / 1024.0,
        peak as f64 / 1024.0,
    );
    ensure!(growth_mib < 64.0, "the replica's RSS grew by {growth_mib:.1} MiB");
    // The tunnel never dropped: the same replica, no new attempt.
    ensure!(
        get_container(&users, "alive")?["status"]["gateway"]["tunnel"].as_str() == Some(tunnel.as_str()),
        "the tunnel moved"
    );
    ensure!(
        metric("hatchway_router_tunnel_attempts_total")? == attempts,
        "the sidecar dialled again during the reads"
    );
    users.passed();
    release.ns.passed();
    Ok(())
}

/// The release path a platform team takes, end to end: `hack/release`
/// writes dist/ (image archives, the packaged chart, the plugin archive, its
/// krew manifest, SHA256SUMS), `hack/push` copies the images to a real OCI
/// registry (Debian's docker-registry, the CNCF distribution registry) on
/// the node, the cluster's containerd pulls them from there (no import),
/// and `helm install` of the packaged chart with only `--set` values
/// serves a shell, logs and a web app.
#[test]
fn a_release_pushed_to_a_registry_installs_with_set_values_only() -> Result<()> {
    let users = TestNamespace::new("registry-users")?;
    let repo = hatchway_e2e::repo_dir().canonicalize()?;
    let version = stdout(&run_within(
        {
            let mut c = Command::new(repo.join("hack/version"));
            c.stdin(Stdio::null());
            c
        },
        WAIT,
    )?)
    .trim()
    .to_owned();

    // dist/ from the builds this suite runs with (the release profile
    // changes nothing in the path).
    let dist = tempfile::tempdir()?;
    let mut release_cmd = Command::new(repo.join("hack/release"));
    release_cmd
        .env("HATCHWAY_DIST", dist.path())
        .env(
            "HATCHWAY_PROFILE_DIR",
            std::env::var("HATCHWAY_PROFILE_DIR").unwrap_or_else(|_| "release".into()),
        )
        .env("HELM", which("helm")?)
        .stdin(Stdio::null());
    let out = run_within(release_cmd, Duration::from_secs(300))?;
    ensure!(out.status.success(), "hack/release: {}", show(&out));
    let chart = dist.path().join(format!("hatchway-{version}.tgz"));
    for file in [
        chart.clone(),
        dist.path().join(format!("hatchway-operator-{version}.oci.tar")),
        dist.path().join(format!("hatchway-sidecar-{version}.oci.tar")),
        dist.path()
            .join(format!("kubectl-hatch-{version}-linux-amd64.tar.gz")),
    ] {
        ensure!(file.is_file(), "{} is not in dist/", file.display());
    }
    // Every file's checksum is right, and the krew manifest names the
    // plugin archive's.
    let mut sums = Command::new("sha256sum");
    sums.arg("--check").arg("SHA256SUMS").current_dir(dist.path());
    let out = run_within(sums, WAIT)?;
    ensure!(out.status.success(), "sha256sum --check: {}", show(&out));
    let listed = std::fs::read_to_string(dist.path().join("SHA256SUMS"))?;
    let plugin_sum = listed
        .lines()
        .find(|l| l.ends_with("-linux-amd64.tar.gz"))
        .and_then(|l| l.split_whitespace().next())
        .context("no plugin archive in SHA256SUMS")?;
    let manifest = std::fs::read_to_string(dist.path().join("plugins/hatch.yaml"))?;
    ensure!(
        manifest.contains(&format!("sha256: {plugin_sum}"))
            && manifest.contains(&format!("version: v{version}")),
        "krew manifest: {manifest}"
    );

    // A registry on the node, over plain HTTP; containerd told so.
    let registry = Registry::start()?;
    let prefix = format!("{}/{}", registry.address, users.name);
    let mut push = Command::new(repo.join("hack/push"));
    push.env("REGISTRY", &prefix)
        .env("PUSH_TLS_VERIFY", "false")
        .env("HATCHWAY_DIST", dist.path())
        .stdin(Stdio::null());
    let out = run_within(push, Duration::from_secs(300))?;
    ensure!(out.status.success(), "hack/push: {}", show(&out));

    let global = format!("global.imageRegistry={prefix}");
    let release = Release::install_chart(
        "registry",
        &users,
        &chart.display().to_string(),
        &["--set", &global],
    )?;
    let image = release.ns.kubectl(&[
        "get",
        "deployment",
        &release.fullname(),
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ])?;
    ensure!(
        image.trim() == format!("{prefix}/hatchway-operator:{version}"),
        "operator image {image}"
    );
    release.upgrade(&[
        "--set",
        &format!("webApps.wildcardDomain={APPS}:{}", release.node_port),
    ])?;

    let alice = User::new(&users, &release, "alice", Some("edit"))?;
    users.apply(&container(
        "web",
        WEB_SCRIPT,
        json!([{"port": 8081, "access": "public"}]),
    ))?;
    let status = wait_phase(&users, "web", "Running")?;
    let sidecar_image = users.kubectl(&[
        "get",
        "pods",
        "-l",
        "hatchway.dev/container=web",
        "-o",
        "jsonpath={.items[0].spec.initContainers[?(@.name==\"hatchway-sidecar\")].image}",
    ])?;
    ensure!(
        sidecar_image.trim() == format!("{prefix}/hatchway-sidecar:{version}"),
        "sidecar image {sidecar_image}"
    );
    alice.wait_rights("web")?;
    let out = alice.run(&["shell", "web", "--", "echo from $0"])?;
    ensure!(
        out.status.success() && stdout(&out).starts_with("from"),
        "shell: {}",
        show(&out)
    );
    let out = alice.run(&["logs", "web", "--tail", "1"])?;
    ensure!(
        out.status.success() && stdout(&out).starts_with("tick"),
        "logs: {}",
        show(&out)
    );
    let url = wait_until("the web app's URL", WAIT, POLL, || {
        let c = get_container(&users, "web")?;
        Ok(c["status"]["publishedPorts"][0]["url"]
            .as_str()
            .map(str::to_owned))
    })
    .or_else(|_| {
        status["status"]["publishedPorts"][0]["url"]
            .as_str()
            .map(str::to_owned)
            .context("no URL")
    })?;
    let mut curl = Command::new("curl");
    curl.args(["-sS", "--max-time", "20", "--connect-to"])
        .arg(format!("::{}:{}", release.node_ip, release.node_port))
        .arg("--cacert")
        .arg(ca_file(&release, alice.dir.path())?)
        .arg(&url);
    let out = run_within(curl, WAIT)?;
    ensure!(
        stdout(&out).contains("public page"),
        "web app {url}: {}",
        show(&out)
    );
    // Pulled, not imported: the registry served both images.
    let catalog = registry.get("/v2/_catalog")?;
    for name in ["hatchway-operator", "hatchway-sidecar"] {
        ensure!(
            catalog.contains(&format!("{}/{name}", users.name)),
            "{name} not in the registry: {catalog}"
        );
    }
    users.passed();
    release.ns.passed();
    Ok(())
}

/// The path of `program` on PATH.
fn which(program: &str) -> Result<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .with_context(|| format!("{program} is not on PATH"))
}

/// Debian's docker-registry (the CNCF distribution registry) on the node
/// IP over plain HTTP, with containerd configured to pull from it (a
/// hosts.toml under `$HATCHWAY_REGISTRY_HOSTS_DIR`); stopped and
/// unconfigured on drop.
struct Registry {
    address: String,
    child: std::process::Child,
    hosts: PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let address = format!("{}:{}", node_ip()?, free_port()?);
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {address}\n",
                dir.path().join("data").display()
            ),
        )?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log"))?)
            .spawn()
            .context("starting docker-registry (Debian's docker-registry package)")?;
        let hosts_root = std::env::var_os("HATCHWAY_REGISTRY_HOSTS_DIR")
            .map(PathBuf::from)
            .context("HATCHWAY_REGISTRY_HOSTS_DIR is unset: eval \"$(e2e/cluster env)\"")?;
        let hosts = hosts_root.join(&address);
        std::fs::create_dir_all(&hosts)?;
        std::fs::write(
            hosts.join("hosts.toml"),
            format!(
                "server = \"http://{address}\"\n\n[host.\"http://{address}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
            ),
        )?;
        let registry = Registry {
            address,
            child,
            hosts,
            _dir: dir,
        };
        wait_until("the registry to answer", WAIT, POLL, || {
            Ok(registry.get("/v2/").is_ok().then_some(()))
        })?;
        Ok(registry)
    }

    /// GET `path` of the registry's API: the body of a 200.
    fn get(&self, path: &str) -> Result<String> {
        let mut curl = Command::new("curl");
        curl.args(["-sS", "--fail", "--max-time", "5"])
            .arg(format!("http://{}{path}", self.address));
        let out = run_within(curl, WAIT)?;
        ensure!(out.status.success(), "GET {path}: {}", show(&out));
        Ok(stdout(&out))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.hosts);
    }
}

/// `helm uninstall` leaves nothing but the CRDs: the hook stops the
/// operator, releases the Containers (no finalizer: they can be deleted)
/// and removes what the operator created.
#[test]
fn uninstall_leaves_nothing_but_the_crds() -> Result<()> {
    let users = TestNamespace::new("gone-users")?;
    let mut release = Release::install("gone", &users, &["--set", "replicaCount=1"])?;
    let fullname = release.fullname();
    users.apply(&container("web", "sleep 3600", json!([])))?;
    let c = wait_phase(&users, "web", "Running")?;
    ensure!(
        c["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty()),
        "no finalizer while running: {c}"
    );
    // `helm test` leaves its pod for its logs; the uninstall takes it too.
    let out = release.helm_test()?;
    ensure!(out.status.success(), "helm test: {}", show(&out));
    release
        .ns
        .kubectl(&["get", "pod", &format!("{fullname}-check"), "-o", "name"])?;
    let args = [
        "uninstall",
        &release.name,
        "--namespace",
        &release.ns.name,
        "--wait",
        "--timeout",
        "3m",
    ]
    .map(str::to_owned);
    let out = run_within(helm(&args), Duration::from_secs(200))?;
    ensure!(out.status.success(), "helm uninstall: {}", show(&out));
    // Nothing of it in its namespace…
    let left = release.ns.kubectl(&[
        "get",
        "deployments,replicasets,pods,services,endpointslices,serviceaccounts,secrets,configmaps,roles,rolebindings,leases,jobs,poddisruptionbudgets",
        "-o",
        "name",
    ])?;
    let left: Vec<&str> = left
        .lines()
        .filter(|l| {
            // Kubernetes' own in every namespace.
            !matches!(*l, "serviceaccount/default" | "configmap/kube-root-ca.crt")
        })
        .collect();
    ensure!(left.is_empty(), "left in {}: {left:?}", release.ns.name);
    // …nor cluster-wide…
    let cluster = kubectl(&["get", "clusterroles,clusterrolebindings", "-o", "name"])?;
    let stale: Vec<&str> = cluster.lines().filter(|l| l.contains(&fullname)).collect();
    ensure!(stale.is_empty(), "cluster-wide leftovers: {stale:?}");
    // …the CRD stays, and the Container is released (it still runs).
    kubectl(&["get", "crd", "containers.hatchway.dev", "-o", "name"])?;
    let c = get_container(&users, "web")?;
    ensure!(
        c["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|f| f.is_empty()),
        "the Container keeps a finalizer: {c}"
    );
    // Already uninstalled: nothing for Drop to do.
    release.name = format!("{}-done", release.name);
    users.passed();
    release.ns.passed();
    Ok(())
}
