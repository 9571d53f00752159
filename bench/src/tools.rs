//! The reference tools, started as people would run them: a socat relay, an
//! stunnel client+server pair, OpenSSH (a private sshd and `ssh -L`),
//! `kubectl port-forward` on the e2e cluster, iperf3, wrk, nginx.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A background process, killed on drop.
pub struct Bg {
    pub child: Child,
}

impl Bg {
    pub fn spawn(what: &str, command: &mut Command) -> Result<Self> {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {what} ({command:?})"))?;
        Ok(Self { child })
    }
}

impl Bg {
    /// The process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// CPU seconds (user + system, every thread) process `pid` has used so
/// far, from `/proc/PID/stat` (in USER_HZ ticks, 100 per second on
/// Linux). `children`: with those of its children that ended and were
/// reaped (socat relays each connection in a child it forks).
pub fn cpu_seconds(pid: u32, children: bool) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    cpu_seconds_of(&stat, children).with_context(|| format!("/proc/{pid}/stat: {stat}"))
}

fn cpu_seconds_of(stat: &str, children: bool) -> Option<f64> {
    // The command name (field 2) is in parentheses and may hold spaces:
    // count fields after its closing one. utime, stime, cutime and cstime
    // are fields 14 to 17, the 12th to 15th after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let ticks: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    let counted = if children { 4 } else { 2 };
    (ticks.len() == 4).then(|| ticks[..counted].iter().sum::<f64>() / 100.0)
}

/// Waits (up to 5 s) until process `pid` has no child left, so that their
/// CPU time has reached its own (`/proc/PID/task/PID/children`).
pub fn wait_childless(pid: u32) {
    let path = format!("/proc/{pid}/task/{pid}/children");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match std::fs::read_to_string(&path) {
            Ok(children) if !children.trim().is_empty() => std::thread::sleep(Duration::from_millis(10)),
            _ => return,
        }
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free local port (the OS picks it).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until something accepts connections on 127.0.0.1:`port`.
pub fn wait_listening(port: u16, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} does not listen on 127.0.0.1:{port}")
}

/// The version `program args` prints (its first line naming a version, for
/// the report), or "missing".
pub fn version(program: &str, args: &[&str]) -> String {
    let Ok(out) = Command::new(program).args(args).output() else {
        return "missing".to_owned();
    };
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    version_line(&text, program)
}

/// The line of a tool's output that names its version: the first with a
/// number like `5.68` in it (stunnel and socat print a banner first), else
/// one that says "version" or starts with the tool's name, else the first.
fn version_line(text: &str, program: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let numbered = |l: &&&str| {
        l.split_whitespace()
            .any(|w| w.starts_with(|c: char| c.is_ascii_digit()) && w.contains('.'))
    };
    lines
        .iter()
        .find(numbered)
        .or_else(|| {
            lines
                .iter()
                .find(|l| l.to_ascii_lowercase().contains("version") || l.starts_with(program))
        })
        .or(lines.first())
        .map_or_else(|| "missing".to_owned(), |l| (*l).to_owned())
}

/// `socat` relaying 127.0.0.1:`listen` to 127.0.0.1:`target`.
pub fn socat_relay(listen: u16, target: u16) -> Result<Bg> {
    let bg = Bg::spawn(
        "socat relay",
        Command::new("socat").args([
            &format!("TCP-LISTEN:{listen},bind=127.0.0.1,fork,reuseaddr"),
            &format!("TCP:127.0.0.1:{target}"),
        ]),
    )?;
    wait_listening(listen, "socat")?;
    Ok(bg)
}

/// `socat` echoing every connection (a TCP echo server).
pub fn socat_echo(listen: u16) -> Result<Bg> {
    let bg = Bg::spawn(
        "socat echo",
        Command::new("socat").args([
            &format!("TCP-LISTEN:{listen},bind=127.0.0.1,fork,reuseaddr"),
            "EXEC:cat",
        ]),
    )?;
    wait_listening(listen, "socat echo")?;
    Ok(bg)
}

/// A self-signed certificate and key (PEM) for `localhost`, in `dir`.
pub fn self_signed(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let (crt, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&crt, cert.cert.pem())?;
    std::fs::write(&key, cert.signing_key.serialize_pem())?;
    Ok((crt, key))
}

/// An stunnel server (TLS on a free port → `target`) and client
/// (`listen` → the server over TLS): the TLS legs a tunnel adds.
pub fn stunnel_pair(dir: &Path, listen: u16, target: u16) -> Result<Vec<Bg>> {
    let (crt, key) = self_signed(dir)?;
    let middle = free_port()?;
    let server = dir.join("stunnel-server.conf");
    std::fs::write(
        &server,
        format!(
            "foreground = yes\npid =\n[relay]\naccept = 127.0.0.1:{middle}\nconnect = 127.0.0.1:{target}\n\
             cert = {}\nkey = {}\n",
            crt.display(),
            key.display()
        ),
    )?;
    let client = dir.join("stunnel-client.conf");
    std::fs::write(
        &client,
        format!(
            "foreground = yes\npid =\n[relay]\nclient = yes\naccept = 127.0.0.1:{listen}\n\
             connect = 127.0.0.1:{middle}\n"
        ),
    )?;
    let a = Bg::spawn("stunnel server", Command::new("stunnel4").arg(&server))?;
    wait_listening(middle, "stunnel server")?;
    let b = Bg::spawn("stunnel client", Command::new("stunnel4").arg(&client))?;
    wait_listening(listen, "stunnel client")?;
    Ok(vec![a, b])
}

/// A private sshd on 127.0.0.1 (its own host key, root by key only) and
/// the client arguments that reach it.
pub struct Sshd {
    _bg: Bg,
    pub args: Vec<String>,
}

impl Sshd {
    pub fn start(dir: &Path) -> Result<Self> {
        let port = free_port()?;
        let keygen = |path: &Path| -> Result<()> {
            let status = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(path)
                .status()?;
            anyhow::ensure!(status.success(), "ssh-keygen failed");
            Ok(())
        };
        let host_key = dir.join("ssh_host_ed25519_key");
        let user_key = dir.join("id_ed25519");
        keygen(&host_key)?;
        keygen(&user_key)?;
        let authorized = dir.join("authorized_keys");
        std::fs::copy(dir.join("id_ed25519.pub"), &authorized)?;
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 UsePAM no\nStrictModes no\nPidFile none\nLogLevel ERROR\n",
                host_key.display(),
                authorized.display()
            ),
        )?;
        std::fs::create_dir_all("/run/sshd")?;
        let bg = Bg::spawn(
            "sshd",
            Command::new("/usr/sbin/sshd")
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config),
        )?;
        wait_listening(port, "sshd")?;
        let args = [
            "-p",
            &port.to_string(),
            "-i",
            &user_key.display().to_string(),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
        ]
        .map(str::to_owned)
        .to_vec();
        Ok(Self { _bg: bg, args })
    }

    /// `ssh -N -L listen:127.0.0.1:target` through this sshd.
    pub fn forward(&self, listen: u16, target: u16) -> Result<Bg> {
        let bg = Bg::spawn(
            "ssh -L",
            Command::new("ssh")
                .args(&self.args)
                .args(["-N", "-L", &format!("127.0.0.1:{listen}:127.0.0.1:{target}")])
                .arg("root@127.0.0.1"),
        )?;
        wait_listening(listen, "ssh -L")?;
        Ok(bg)
    }
}

/// `kubectl port-forward` on the e2e cluster to a byte-counting sink in a
/// pod (the workload image's `sink`): the API server, kubelet and containerd
/// streaming path. `None` when no cluster is reachable (the report says
/// so). (A host-network pod to this host's servers was refused by
/// containerd's port-forward; iperf3 through kubectl port-forward never
/// finishes: it drops the forward when iperf3's server resets.)
pub struct KubectlForward {
    bg: Option<Bg>,
    kubeconfig: std::ffi::OsString,
    namespace: String,
    pod: String,
    listen: u16,
    target: u16,
    /// The namespace was made for this forward (deleted with it).
    owns_namespace: bool,
}

/// `kubectl ARGS` with `kubeconfig`: its standard output.
pub fn kubectl(kubeconfig: &std::ffi::OsStr, args: &[&str]) -> Result<String> {
    let out = Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .output()
        .context("running kubectl")?;
    anyhow::ensure!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl KubectlForward {
    /// A sink pod (e2e/src/bin/sink.rs) in a namespace of its own on the e2e cluster
    /// (`KUBECONFIG`), forwarded to `listen`; `None` without a cluster.
    pub fn start(listen: u16) -> Result<Option<Self>> {
        let Some(kubeconfig) = std::env::var_os("KUBECONFIG") else {
            return Ok(None);
        };
        if kubectl(&kubeconfig, &["get", "nodes"]).is_err() {
            return Ok(None);
        }
        let namespace = format!("hatchway-bench-{}", std::process::id());
        kubectl(&kubeconfig, &["create", "namespace", &namespace])?;
        let manifest = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "sink", "namespace": namespace},
            "spec": {
                "containers": [{
                    "name": "sink", "image": "localhost/hatchway/workload:e2e", "imagePullPolicy": "Never",
                    "command": sink_command(TARGET),
                }],
            },
        })
        .to_string();
        let path = std::env::temp_dir().join(format!("{namespace}.json"));
        std::fs::write(&path, manifest)?;
        kubectl(&kubeconfig, &["apply", "-f", &path.display().to_string()])?;
        kubectl(
            &kubeconfig,
            &[
                "-n",
                &namespace,
                "wait",
                "--for=condition=Ready",
                "pod/sink",
                "--timeout=120s",
            ],
        )?;
        let mut forward = Self::to(&kubeconfig, &namespace, "sink", listen, TARGET)?;
        forward.owns_namespace = true;
        Ok(Some(forward))
    }

    /// `kubectl port-forward` of `pod`'s `target` port to `listen`, as
    /// the user of `kubeconfig`.
    pub fn to(
        kubeconfig: &std::ffi::OsStr,
        namespace: &str,
        pod: &str,
        listen: u16,
        target: u16,
    ) -> Result<Self> {
        let mut forward = Self {
            bg: None,
            kubeconfig: kubeconfig.to_owned(),
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
            listen,
            target,
            owns_namespace: false,
        };
        forward.ensure_running()?;
        Ok(forward)
    }

    /// (Re)starts `kubectl port-forward` when it is not running: it exits
    /// with "lost connection to pod" whenever the pod side resets a
    /// connection, which iperf3's server does at the end of every test.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(bg) = &mut self.bg
            && bg.child.try_wait()?.is_none()
        {
            return Ok(());
        }
        self.bg = None;
        self.bg = Some(Bg::spawn(
            "kubectl port-forward",
            Command::new("kubectl").env("KUBECONFIG", &self.kubeconfig).args([
                "-n",
                &self.namespace,
                "port-forward",
                "--address",
                "127.0.0.1",
                &format!("pod/{}", self.pod),
                &format!("{}:{}", self.listen, self.target),
            ]),
        )?);
        wait_listening(self.listen, "kubectl port-forward")
    }
}

/// The sink protocol of `cases::sink_server` in a pod, listening on
/// `port`: `N\n`, N bytes, answered `N\n` (the workload image's `sink`,
/// e2e/src/bin/sink.rs).
pub fn sink_command(port: u16) -> serde_json::Value {
    serde_json::json!(["sink", port.to_string()])
}

/// The pod port of the sink behind `kubectl port-forward`.
const TARGET: u16 = 5201;

impl Drop for KubectlForward {
    fn drop(&mut self) {
        if self.owns_namespace {
            let _ = kubectl(
                &self.kubeconfig,
                &["delete", "namespace", &self.namespace, "--wait=false"],
            );
        }
    }
}

/// nginx serving a small page on 127.0.0.1:`port`.
pub fn nginx_page(dir: &Path, port: u16) -> Result<Bg> {
    let root = dir.join("www");
    std::fs::create_dir_all(&root)?;
    std::fs::write(
        root.join("index.html"),
        "<html><body>hatchway bench page</body></html>\n",
    )?;
    let conf = format!(
        "server {{ listen 127.0.0.1:{port}; access_log off; location / {{ root {}; }} }}",
        root.display()
    );
    nginx(dir, "page", &conf, port)
}

/// An nginx pair doing the TLS legs a web-app request through the router
/// takes: TLS front on `listen` → TLS back → the page on `page`. With
/// `keepalive`, each nginx keeps its upstream connections open between
/// requests (`upstream { keepalive }`, HTTP/1.1 upstream), as the router
/// keeps its gateway connections; without, each request connects anew
/// (nginx's default).
pub fn nginx_pair(dir: &Path, listen: u16, page: u16, keepalive: bool) -> Result<Vec<Bg>> {
    let (crt, key) = self_signed(dir)?;
    let back = free_port()?;
    let tls = format!(
        "ssl_certificate {}; ssl_certificate_key {};",
        crt.display(),
        key.display()
    );
    // Each nginx names its own upstream: an address, or a block that
    // keeps connections.
    let upstream = |name: &str, port: u16| {
        if keepalive {
            (
                format!("upstream {name} {{ server 127.0.0.1:{port}; keepalive 32; }}"),
                name.to_owned(),
            )
        } else {
            (String::new(), format!("127.0.0.1:{port}"))
        }
    };
    let kept = if keepalive {
        "proxy_http_version 1.1; proxy_set_header Connection \"\";"
    } else {
        ""
    };
    let (page_block, to_page) = upstream("page", page);
    let (back_block, to_back) = upstream("back", back);
    let back_conf = format!(
        "{page_block} server {{ listen 127.0.0.1:{back} ssl; {tls} access_log off; \
         location / {{ {kept} proxy_pass http://{to_page}; }} }}"
    );
    let front_conf = format!(
        "{back_block} server {{ listen 127.0.0.1:{listen} ssl; {tls} access_log off; \
         location / {{ {kept} proxy_pass https://{to_back}; }} }}"
    );
    let name = if keepalive { "keepalive" } else { "pair" };
    Ok(vec![
        nginx(dir, &format!("{name}-back"), &back_conf, back)?,
        nginx(dir, &format!("{name}-front"), &front_conf, listen)?,
    ])
}

fn nginx(dir: &Path, name: &str, server: &str, port: u16) -> Result<Bg> {
    let prefix = dir.join(format!("nginx-{name}"));
    std::fs::create_dir_all(prefix.join("logs"))?;
    let conf = prefix.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off; worker_processes 1; pid {pid}; error_log {errors} error;\n\
             events {{ worker_connections 4096; }}\n\
             http {{ client_body_temp_path {tmp}; proxy_temp_path {tmp}; {server} }}\n",
            pid = prefix.join("nginx.pid").display(),
            errors = prefix.join("error.log").display(),
            tmp = prefix.display(),
        ),
    )?;
    let bg = Bg::spawn(
        &format!("nginx {name}"),
        Command::new("nginx").arg("-p").arg(&prefix).arg("-c").arg(&conf),
    )?;
    wait_listening(port, "nginx").with_context(|| {
        let errors = std::fs::read_to_string(prefix.join("error.log")).unwrap_or_default();
        format!("nginx {name}: {}", errors.trim())
    })?;
    Ok(bg)
}

#[cfg(test)]
mod tests {
    use super::{cpu_seconds, cpu_seconds_of, version_line};

    #[test]
    fn cpu_seconds_are_utime_plus_stime_and_the_childrens() {
        let stat = "4242 (socat (relay)) S 1 4242 4242 0 -1 4194304 120 0 0 0 250 37 100 13 20 0 1 0";
        assert_eq!(cpu_seconds_of(stat, false), Some(2.87));
        assert_eq!(cpu_seconds_of(stat, true), Some(4.0));
        assert_eq!(cpu_seconds_of("4242 (x) S 1", false), None);
        // This process has used some, and it only grows.
        let me = cpu_seconds(std::process::id(), false).unwrap();
        let mut spin = 0u64;
        for i in 0..20_000_000u64 {
            spin = spin.wrapping_add(i * i);
        }
        std::hint::black_box(spin);
        assert!(cpu_seconds(std::process::id(), false).unwrap() >= me);
    }

    #[test]
    fn the_version_line_is_the_one_with_a_version_number() {
        let stunnel = "Initializing inetd mode configuration\nstunnel 5.68 on x86_64-pc-linux-gnu platform\nCompiled with OpenSSL 3.0.9";
        assert_eq!(
            version_line(stunnel, "stunnel4"),
            "stunnel 5.68 on x86_64-pc-linux-gnu platform"
        );
        let socat = "socat by Gerhard Rieger and contributors - see www.dest-unreach.org\nsocat version 1.7.4.4 on 06 Nov 2022";
        assert_eq!(
            version_line(socat, "socat"),
            "socat version 1.7.4.4 on 06 Nov 2022"
        );
        assert_eq!(
            version_line("nginx version: nginx/1.22.1", "nginx"),
            "nginx version: nginx/1.22.1"
        );
        assert_eq!(version_line("", "x"), "missing");
    }
}
