//! `make chaos`: faults injected into the real cluster while users' traffic
//! flows, each fault its own case (docs/chaos.md). Not part of `make e2e`
//! (the test is ignored there; `make chaos` runs it alone: its faults are
//! cluster-wide).
//!
//! Two installs side by side, one with direct pod access and one with
//! tunnels only, each with a Container serving an echo server, a web page,
//! a WebSocket echo and a line of log every 100 ms. Throughout every case,
//! for each install: shells running a command (its output checked), new
//! port-forward connections echoing 64 KiB of random bytes (compared),
//! web-app requests (body checked), WebSocket messages (echo checked) and
//! one `logs -f` (every line in order, none twice). Each case: traffic
//! alone, the fault, traffic until every kind has worked again, traffic a
//! while longer; then the processes' file descriptors, threads and memory
//! against what they were before. The report: `e2e/results/DATE-chaos.md`.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::release::*;
use common::results;
use hatchway_e2e::{TestNamespace, kubectl, kubectl_json, run_within, wait_until};
use serde_json::json;

/// The workload: an echo server (port-forwards), a page and a WebSocket
/// echo (web apps, public), and a numbered line of log every 100 ms.
const SCRIPT: &str = "mkdir -p /tmp/pub && echo public page > /tmp/pub/index.html && \
     httpd -p 8081 -h /tmp/pub && (nc -ll -p 9000 -e cat &) && (ws-echo 8082 &) && \
     i=0; while true; do echo tick $i; i=$((i+1)); usleep 100000; done";

/// Traffic alone before each fault, and after every kind has recovered.
const QUIET: Duration = Duration::from_secs(10);
/// How long every kind of traffic has to work again after a fault ends.
const RECOVERY: Duration = Duration::from_secs(120);
/// Bytes each port-forward connection echoes.
const ECHO_BYTES: usize = 64 * 1024;
/// A `logs -f` silent for longer than this is an outage (lines come every
/// 100 ms).
const LOG_SILENCE: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    Shell,
    Forward,
    Web,
    WebSocket,
    Logs,
}

impl Kind {
    const ALL: [Kind; 5] = [Kind::Shell, Kind::Forward, Kind::Web, Kind::WebSocket, Kind::Logs];

    fn name(self) -> &'static str {
        match self {
            Kind::Shell => "shell",
            Kind::Forward => "port-forward 64 KiB echo",
            Kind::Web => "web-app request",
            Kind::WebSocket => "WebSocket message",
            Kind::Logs => "logs -f line",
        }
    }
}

/// One attempt of one kind of traffic on one install.
#[derive(Clone, Debug)]
struct Event {
    rig: usize,
    kind: Kind,
    start: Instant,
    end: Instant,
    ok: bool,
    /// Bytes (or log lines) that came back wrong: must stay 0.
    corrupted: u64,
    error: String,
}

/// What the traffic did, shared by its threads.
#[derive(Default)]
struct Record {
    events: Mutex<Vec<Event>>,
}

impl Record {
    fn push(&self, event: Event) {
        self.events.lock().expect("not poisoned").push(event);
    }

    fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock().expect("not poisoned"))
    }

    /// Whether every kind on every rig has worked since `since`.
    fn all_worked_since(&self, since: Instant, rigs: usize) -> bool {
        let events = self.events.lock().expect("not poisoned");
        (0..rigs).all(|rig| {
            Kind::ALL.iter().all(|kind| {
                events
                    .iter()
                    .any(|e| e.rig == rig && e.kind == *kind && e.ok && e.start >= since)
            })
        })
    }
}

/// One install with its users' Container and the long-lived clients.
struct Rig {
    mode: &'static str,
    users: TestNamespace,
    release: Release,
    alice: User,
    ca: std::path::PathBuf,
    web_url: String,
    ws_url: String,
    forward: Mutex<(Child, SocketAddr)>,
}

impl Rig {
    fn new(mode: &'static str, values: &[&str]) -> Result<Self> {
        let users = TestNamespace::new(&format!("chaos-{mode}-users"))?;
        let release = Release::install(&format!("chaos-{mode}"), &users, values)?;
        release.upgrade(&[
            "--set",
            &format!("webApps.wildcardDomain={APPS}:{}", release.node_port),
        ])?;
        let alice = User::new(&users, &release, "alice", Some("edit"))?;
        users.apply(&container(
            "web",
            SCRIPT,
            json!([{"port": 8081, "access": "public"}, {"port": 8082, "access": "public"}]),
        ))?;
        wait_phase(&users, "web", "Running")?;
        let urls = wait_until("the web apps' URLs", WAIT, POLL, || {
            let c = get_container(&users, "web")?;
            let url = |port| published_url(&c["status"], port).filter(|u| u.contains(APPS));
            Ok(url(8081).zip(url(8082)))
        })?;
        alice.wait_rights("web")?;
        let ca = alice.dir.path().join("router-ca.crt");
        std::fs::write(&ca, release.ca_pem()?)?;
        let forward = start_forward(&alice)?;
        Ok(Rig {
            mode,
            users,
            release,
            alice,
            ca,
            web_url: urls.0,
            ws_url: urls.1,
            forward: Mutex::new(forward),
        })
    }

    /// The web pod of the Container.
    fn web_pod(&self) -> Result<String> {
        let pod = self.users.kubectl(&[
            "get",
            "pods",
            "-l",
            "hatchway.dev/container=web",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ])?;
        ensure!(!pod.trim().is_empty(), "no pod for Container web");
        Ok(pod.trim().to_owned())
    }

    /// The Hatchway processes of this install on the node: each replica's
    /// router and the Container's sidecar.
    fn processes(&self) -> Result<Vec<(String, u32)>> {
        let mut out = Vec::new();
        for (pod, _) in self.release.pods()? {
            out.push((
                pod.clone(),
                pid_in_pod(&self.release.ns.name, &pod, "hatchway-operat")?,
            ));
        }
        let pod = self.web_pod()?;
        out.push((
            pod.clone(),
            pid_in_pod(&self.users.name, &pod, "hatchway-sideca")?,
        ));
        Ok(out)
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let (child, _) = &mut *self.forward.lock().expect("not poisoned");
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// `kubectl hatch port-forward web :9000`, and the address it listens on.
fn start_forward(alice: &User) -> Result<(Child, SocketAddr)> {
    let mut child = alice
        .hatch(&["port-forward", "web", ":9000"])?
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let addr = line
        .split_whitespace()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("no address in {line:?}"))?;
    Ok((child, addr))
}

// ------------------------------------------------------------------- traffic

fn shells(rig: &Rig, index: usize, record: &Record, stop: &AtomicBool) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let start = Instant::now();
        let expected = format!("shell-{n}");
        let (ok, corrupted, error) = match rig
            .alice
            .run(&["shell", "web", "--", &format!("echo {expected}")])
        {
            Ok(out) if out.status.success() && stdout(&out).trim() == expected => (true, 0, String::new()),
            Ok(out) if out.status.success() => (false, 1, format!("wrong output: {}", show(&out))),
            Ok(out) => (false, 0, last_line(&String::from_utf8_lossy(&out.stderr))),
            Err(error) => (false, 0, format!("{error:#}")),
        };
        record.push(Event {
            rig: index,
            kind: Kind::Shell,
            start,
            end: Instant::now(),
            ok,
            corrupted,
            error,
        });
    }
}

/// New connections through the held `port-forward`, each echoing random
/// bytes. A port-forward process that died is started again (counted).
fn forwards(rig: &Rig, index: usize, record: &Record, stop: &AtomicBool) {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ index as u64;
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        let data: Vec<u8> = (0..ECHO_BYTES)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let addr = {
            let mut forward = rig.forward.lock().expect("not poisoned");
            if let Ok(Some(status)) = forward.0.try_wait() {
                record.push(Event {
                    rig: index,
                    kind: Kind::Forward,
                    start,
                    end: Instant::now(),
                    ok: false,
                    corrupted: 0,
                    error: format!("kubectl hatch port-forward ended ({status}); started again"),
                });
                match start_forward(&rig.alice) {
                    Ok(new) => *forward = new,
                    Err(error) => {
                        drop(forward);
                        record.push(failure(index, Kind::Forward, start, format!("{error:#}")));
                        std::thread::sleep(Duration::from_millis(500));
                        continue;
                    }
                }
            }
            forward.1
        };
        let result = echo(addr, &data);
        let (ok, corrupted, error) = match result {
            Ok(back) if back == data => (true, 0, String::new()),
            Ok(back) => {
                let wrong = back.iter().zip(&data).filter(|(a, b)| a != b).count() as u64;
                let missing = data.len().abs_diff(back.len()) as u64;
                (
                    false,
                    wrong + missing,
                    format!("{} bytes back, {wrong} differ", back.len()),
                )
            }
            Err(error) => (false, 0, format!("{error:#}")),
        };
        record.push(Event {
            rig: index,
            kind: Kind::Forward,
            start,
            end: Instant::now(),
            ok,
            corrupted,
            error,
        });
    }
}

/// Sends `data` on a new connection to `addr` and reads as many bytes back
/// (the echo server), within 30 s.
fn echo(addr: SocketAddr, data: &[u8]) -> Result<Vec<u8>> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    conn.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = conn.try_clone()?;
    std::thread::scope(|scope| {
        let sent = scope.spawn(|| conn.write_all(data));
        let mut back = vec![0u8; data.len()];
        let mut filled = 0;
        while filled < back.len() {
            match reader.read(&mut back[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(error) => {
                    let _ = reader.shutdown(std::net::Shutdown::Both);
                    return Err(anyhow::Error::new(error).context(format!("after {filled} bytes back")));
                }
            }
        }
        back.truncate(filled);
        sent.join().expect("the writer").context("sending")?;
        if filled < data.len() {
            bail!("the connection ended after {filled} of {} bytes", data.len());
        }
        Ok(back)
    })
}

fn webs(rig: &Rig, index: usize, record: &Record, stop: &AtomicBool) {
    let connect_to = format!("::{}:{}", rig.release.node_ip, rig.release.node_port);
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        let mut curl = Command::new("curl");
        curl.args(["-sS", "--max-time", "10", "--connect-to", &connect_to, "--cacert"])
            .arg(&rig.ca)
            .args(["-w", "\n%{http_code}", &rig.web_url]);
        let (ok, error) = match run_within(curl, WAIT) {
            Ok(out) if stdout(&out) == "public page\n\n200" => (true, String::new()),
            Ok(out) => (false, show(&out)),
            Err(error) => (false, format!("{error:#}")),
        };
        record.push(Event {
            rig: index,
            kind: Kind::Web,
            start,
            end: Instant::now(),
            ok,
            corrupted: 0,
            error,
        });
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// WebSocket messages, 100 ms apart, 50 on each connection, then a new one.
fn websockets(rig: &Rig, index: usize, record: &Record, stop: &AtomicBool) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (host, name) = web_app_host(&rig.ws_url).expect("a web-app URL");
    let tls = rig.release.client_tls().expect("the router CA");
    let addr = (rig.release.node_ip.clone(), rig.release.node_port);
    let runtime = common::runtime();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        let connected = runtime.block_on(async {
            let connect = async {
                let tcp = tokio::net::TcpStream::connect(addr.clone()).await?;
                let tls = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(rustls::pki_types::ServerName::try_from(name.clone())?, tcp)
                    .await?;
                let request = http::Request::builder()
                    .uri(format!("wss://{host}/"))
                    .header("host", &host)
                    .header("origin", format!("https://{host}"))
                    .header("connection", "Upgrade")
                    .header("upgrade", "websocket")
                    .header("sec-websocket-version", "13")
                    .header(
                        "sec-websocket-key",
                        tokio_tungstenite::tungstenite::handshake::client::generate_key(),
                    )
                    .body(())?;
                let (ws, _) = tokio_tungstenite::client_async(request, tls).await?;
                anyhow::Ok(ws)
            };
            tokio::time::timeout(Duration::from_secs(10), connect)
                .await
                .map_err(|_| anyhow::anyhow!("no WebSocket within 10 s"))?
        });
        let mut ws = match connected {
            Ok(ws) => ws,
            Err(error) => {
                record.push(failure(
                    index,
                    Kind::WebSocket,
                    start,
                    format!("connecting: {error:#}"),
                ));
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        for _ in 0..50 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            n += 1;
            let start = Instant::now();
            let text = format!("message {n}");
            let result = runtime.block_on(async {
                ws.send(Message::text(text.clone())).await?;
                let echoed = tokio::time::timeout(Duration::from_secs(10), ws.next())
                    .await
                    .map_err(|_| anyhow::anyhow!("no echo within 10 s"))?
                    .context("the socket closed")??;
                anyhow::Ok(echoed.into_text()?.to_string())
            });
            let (ok, corrupted, error) = match result {
                Ok(back) if back == text => (true, 0, String::new()),
                Ok(back) => (false, back.len() as u64, format!("echoed {back:?} for {text:?}")),
                Err(error) => (false, 0, format!("{error:#}")),
            };
            record.push(Event {
                rig: index,
                kind: Kind::WebSocket,
                start,
                end: Instant::now(),
                ok,
                corrupted,
                error,
            });
            if !ok {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = runtime.block_on(ws.close(None));
    }
}

/// One `kubectl hatch logs -f web`: every line is an attempt; a silence
/// longer than [`LOG_SILENCE`] is a failure lasting as long; a line out of
/// order or seen twice is corrupted. A `logs -f` that ended is started
/// again (counted), skipping the lines it repeats.
fn logs(rig: &Rig, index: usize, record: &Record, stop: &AtomicBool) {
    let mut last: Option<u64> = None;
    // When the last line came: silence is counted from the first line on.
    let mut previous: Option<Instant> = None;
    let said_file = rig
        .alice
        .dir
        .path()
        .join(format!("logs-{}.err", std::process::id()));
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        let spawned = rig.alice.hatch(&["logs", "-f", "web"]).and_then(|mut c| {
            Ok(c.stdout(Stdio::piped())
                .stderr(std::fs::File::create(&said_file)?)
                .spawn()?)
        });
        let mut child = match spawned {
            Ok(child) => child,
            Err(error) => {
                record.push(failure(index, Kind::Logs, start, format!("{error:#}")));
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
        };
        let (lines, received) = std::sync::mpsc::channel();
        let out = child.stdout.take().expect("piped");
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if lines.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        let mut caught_up = last.is_none();
        loop {
            if stop.load(Ordering::Relaxed) {
                let _ = child.kill();
                break;
            }
            match received.recv_timeout(Duration::from_millis(200)) {
                Ok((at, line)) => {
                    let Some(n) = line
                        .strip_prefix("tick ")
                        .and_then(|n| n.trim().parse::<u64>().ok())
                    else {
                        continue;
                    };
                    // Started again: the lines already seen come first.
                    if !caught_up {
                        if Some(n) <= last {
                            continue;
                        }
                        caught_up = true;
                    }
                    if let Some(previous) = previous.filter(|p| at.duration_since(*p) > LOG_SILENCE) {
                        record.push(Event {
                            rig: index,
                            kind: Kind::Logs,
                            start: previous,
                            end: at,
                            ok: false,
                            corrupted: 0,
                            error: format!("silent for {:.1} s", at.duration_since(previous).as_secs_f64()),
                        });
                    }
                    let (ok, corrupted, error) = match last {
                        Some(l) if n <= l => (false, 1, format!("line {n} after line {l}")),
                        Some(l) if n > l + 1 => {
                            (false, n - l - 1, format!("lines {} to {} missing", l + 1, n - 1))
                        }
                        _ => (true, 0, String::new()),
                    };
                    record.push(Event {
                        rig: index,
                        kind: Kind::Logs,
                        start: previous.unwrap_or(at).max(at - Duration::from_millis(100)),
                        end: at,
                        ok,
                        corrupted,
                        error,
                    });
                    last = Some(last.map_or(n, |l| l.max(n)));
                    previous = Some(at);
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                    let said = std::fs::read_to_string(&said_file).unwrap_or_default();
                    record.push(failure(
                        index,
                        Kind::Logs,
                        previous.unwrap_or(start),
                        format!("logs -f ended ({status}): {}", last_line(&said)),
                    ));
                    break;
                }
            }
        }
        let _ = child.wait();
        let _ = reader.join();
    }
}

fn failure(rig: usize, kind: Kind, start: Instant, error: String) -> Event {
    Event {
        rig,
        kind,
        start,
        end: Instant::now(),
        ok: false,
        corrupted: 0,
        error,
    }
}

fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .to_owned()
}

// -------------------------------------------------------------------- faults

/// A cluster component's process (e2e/cluster's pid files).
fn component_pid(name: &str) -> Result<i32> {
    let cache = std::env::var_os("HATCHWAY_CACHE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/hatchway")
        });
    let file = cache.join("cluster/pids").join(format!("{name}.pid"));
    let text = std::fs::read_to_string(&file).with_context(|| format!("{}", file.display()))?;
    text.split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("no pid in {}", file.display()))
}

fn signal(pid: i32, signal: nix::sys::signal::Signal) -> Result<()> {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
        .with_context(|| format!("{signal} to {pid}"))
}

/// Raw-table rules (before conntrack and NAT; bridged pod traffic passes
/// them through br_netfilter) removed on drop.
struct Rules(Vec<Vec<String>>);

impl Rules {
    fn insert(rules: Vec<Vec<String>>) -> Result<Self> {
        let mut inserted = Rules(Vec::new());
        for rule in rules {
            iptables("-I", &rule)?;
            inserted.0.push(rule);
        }
        Ok(inserted)
    }
}

impl Drop for Rules {
    fn drop(&mut self) {
        for rule in &self.0 {
            if let Err(error) = iptables("-D", rule) {
                eprintln!("removing an iptables rule: {error:#}");
            }
        }
    }
}

fn iptables(action: &str, rule: &[String]) -> Result<()> {
    let out = Command::new("iptables")
        .args(["-t", "raw", action, "PREROUTING"])
        .args(rule)
        .output()?;
    ensure!(out.status.success(), "iptables {action} {rule:?}: {}", show(&out));
    Ok(())
}

fn pod_ip(namespace: &str, pod: &str) -> Result<String> {
    Ok(kubectl(&[
        "-n",
        namespace,
        "get",
        "pod",
        pod,
        "-o",
        "jsonpath={.status.podIP}",
    ])?
    .trim()
    .to_owned())
}

/// The replica holding an install's leader Lease, and the Lease's name.
fn leader(rig: &Rig) -> Result<(String, String)> {
    let leases = kubectl_json(&["-n", &rig.release.ns.name, "get", "leases", "-o", "json"])?;
    leases["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|l| {
            Some((
                l["metadata"]["name"].as_str()?.to_owned(),
                l["spec"]["holderIdentity"]
                    .as_str()
                    .filter(|h| !h.is_empty())?
                    .to_owned(),
            ))
        })
        .map(|(lease, holder)| (holder, lease))
        .context("no leader Lease")
}

/// What the reconciler made for a Container: its pod's UID (a second
/// leader acting on stale state would replace or duplicate it).
fn reconciled(rig: &Rig) -> Result<Vec<String>> {
    let pods = kubectl_json(&[
        "-n",
        &rig.users.name,
        "get",
        "pods",
        "-l",
        "hatchway.dev/container=web",
        "-o",
        "json",
    ])?;
    Ok(pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["metadata"]["uid"].as_str().map(str::to_owned))
        .collect())
}

/// A fault: injected while the traffic flows; returns when it is over
/// (the system left to recover), with what it observed.
struct Case {
    name: &'static str,
    what: &'static str,
    inject: fn(&[Rig]) -> Result<String>,
}

const CASES: [Case; 7] = [
    Case {
        name: "replicas-killed",
        what: "an operator replica killed (SIGKILL) every 10 s for 2 minutes, then a `helm upgrade`",
        inject: replicas_killed,
    },
    Case {
        name: "apiserver-stopped",
        what: "the API server stopped (SIGSTOP) for 30 s",
        inject: |_| freeze("kube-apiserver"),
    },
    Case {
        name: "etcd-stopped",
        what: "etcd stopped (SIGSTOP) for 30 s",
        inject: |_| freeze("etcd"),
    },
    Case {
        name: "sidecar-killed",
        what: "the sidecar process killed (SIGKILL); the kubelet restarts it",
        inject: sidecar_killed,
    },
    Case {
        name: "network-cut",
        what: "the Container's pod cut from the network for 5 s (iptables on the node)",
        inject: network_cut,
    },
    Case {
        name: "dns-down",
        what: "CoreDNS scaled to 0 for 30 s",
        inject: dns_down,
    },
    Case {
        name: "leader-partitioned",
        what: "the leader replica cut from the API server until another takes the Lease, and 10 s more",
        inject: leader_partitioned,
    },
];

fn replicas_killed(rigs: &[Rig]) -> Result<String> {
    let started = Instant::now();
    let (mut killed, mut spared) = (0, 0);
    let mut round = 0usize;
    while started.elapsed() < Duration::from_secs(120) {
        let next = started + Duration::from_secs(10 * (round as u64 + 1));
        let rig = &rigs[round % rigs.len()];
        let pods = rig.release.pods()?;
        // A replica, never the last ready one: the case is a replica
        // dying, not the whole service (the kubelet's restart back-off
        // keeps a replica killed twice down for 20 s and more).
        let pid = (pods.len() >= 2)
            .then(|| {
                pid_in_pod(
                    &rig.release.ns.name,
                    &pods[(round / rigs.len()) % pods.len()].0,
                    "hatchway-operat",
                )
            })
            .and_then(Result::ok);
        match pid {
            Some(pid) => {
                signal(pid as i32, nix::sys::signal::Signal::SIGKILL)?;
                killed += 1;
            }
            // Ready, but its process not found: restarting as we looked.
            None => spared += 1,
        }
        round += 1;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    for rig in rigs {
        rig.release
            .upgrade(&["--set-string", &format!("podAnnotations.chaos={}", rand_suffix())])?;
    }
    Ok(format!(
        "{killed} replicas killed ({spared} times the install had one ready replica, or one restarting, and none was); \
         both installs then upgraded (new pods)"
    ))
}

/// A value the pod template has not had: `helm upgrade` rolls the pods.
fn rand_suffix() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{:x}", now.as_nanos())
}

fn freeze(component: &str) -> Result<String> {
    let pid = component_pid(component)?;
    signal(pid, nix::sys::signal::Signal::SIGSTOP)?;
    std::thread::sleep(Duration::from_secs(30));
    signal(pid, nix::sys::signal::Signal::SIGCONT)?;
    Ok(format!("{component} (pid {pid}) stopped 30 s"))
}

fn sidecar_killed(rigs: &[Rig]) -> Result<String> {
    let mut restarts = Vec::new();
    for rig in rigs {
        let pod = rig.web_pod()?;
        let pid = pid_in_pod(&rig.users.name, &pod, "hatchway-sideca")?;
        signal(pid as i32, nix::sys::signal::Signal::SIGKILL)?;
        restarts.push((rig, pod, pid));
    }
    let mut said = Vec::new();
    for (rig, pod, old) in restarts {
        let new = wait_until("the sidecar restarted", Duration::from_secs(60), POLL, || {
            Ok(pid_in_pod(&rig.users.name, &pod, "hatchway-sideca")
                .ok()
                .filter(|p| *p != old))
        })?;
        said.push(format!("{}: sidecar pid {old} -> {new}", rig.mode));
    }
    Ok(said.join("; "))
}

fn network_cut(rigs: &[Rig]) -> Result<String> {
    let mut rules = Vec::new();
    for rig in rigs {
        let ip = pod_ip(&rig.users.name, &rig.web_pod()?)?;
        rules.push(vec!["-s".to_owned(), ip.clone(), "-j".into(), "DROP".into()]);
        rules.push(vec!["-d".to_owned(), ip, "-j".into(), "DROP".into()]);
    }
    let cut = Rules::insert(rules)?;
    std::thread::sleep(Duration::from_secs(5));
    drop(cut);
    Ok("both Containers' pods cut for 5 s".into())
}

fn dns_down(_: &[Rig]) -> Result<String> {
    let replicas = kubectl(&[
        "-n",
        "kube-system",
        "get",
        "deployment",
        "coredns",
        "-o",
        "jsonpath={.spec.replicas}",
    ])?;
    let replicas = replicas.trim().to_owned();
    kubectl(&[
        "-n",
        "kube-system",
        "scale",
        "deployment",
        "coredns",
        "--replicas=0",
    ])?;
    std::thread::sleep(Duration::from_secs(30));
    kubectl(&[
        "-n",
        "kube-system",
        "scale",
        "deployment",
        "coredns",
        &format!("--replicas={replicas}"),
    ])?;
    kubectl(&[
        "-n",
        "kube-system",
        "rollout",
        "status",
        "deployment/coredns",
        "--timeout=120s",
    ])?;
    Ok(format!("CoreDNS at 0 replicas for 30 s, then {replicas} again"))
}

fn leader_partitioned(rigs: &[Rig]) -> Result<String> {
    let api = kubectl(&[
        "get",
        "service",
        "kubernetes",
        "-n",
        "default",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])?;
    let api = api.trim().to_owned();
    let node = hatchway_e2e::node_ip()?;
    let mut said = Vec::new();
    for rig in rigs {
        let before = reconciled(rig)?;
        let (holder, lease) = leader(rig)?;
        let ip = pod_ip(&rig.release.ns.name, &holder)?;
        let cut = Rules::insert(vec![
            ["-s", &ip, "-d", &api, "-j", "DROP"].map(str::to_owned).to_vec(),
            ["-s", &ip, "-d", &node, "-j", "DROP"].map(str::to_owned).to_vec(),
        ])?;
        let cut_at = Instant::now();
        let taken = wait_until(
            "another replica takes the Lease",
            Duration::from_secs(90),
            POLL,
            || {
                let (now, _) = leader(rig)?;
                Ok((now != holder).then_some(now))
            },
        );
        std::thread::sleep(Duration::from_secs(10));
        drop(cut);
        let taken = taken?;
        let after = reconciled(rig)?;
        ensure!(
            before == after,
            "{}: the Container's pod changed while the leader was partitioned: {before:?} -> {after:?}",
            rig.mode
        );
        said.push(format!(
            "{}: Lease {lease} {holder} -> {taken} in {:.1} s; the Container's pod unchanged",
            rig.mode,
            cut_at.elapsed().as_secs_f64() - 10.0
        ));
    }
    Ok(said.join("; "))
}

// --------------------------------------------------------------------- cases

/// File descriptors, threads and resident memory of processes.
#[derive(Clone, Copy, Debug, Default)]
struct Usage {
    fds: u64,
    threads: u64,
    rss_kib: u64,
    /// Tasks alive in the processes' async runtimes (their metrics).
    tasks: u64,
}

fn usage(rigs: &[Rig]) -> Result<Usage> {
    let mut total = Usage::default();
    for rig in rigs {
        for (_, pid) in rig.processes()? {
            total.fds += std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64;
            total.threads += std::fs::read_dir(format!("/proc/{pid}/task"))?.count() as u64;
            total.rss_kib += proc_status_kib(pid, "VmRSS")?;
        }
        let mut texts = Vec::new();
        for (pod, _) in rig.release.pods()? {
            texts.push(pod_metrics(&rig.release.ns.name, &pod, "https", 9443)?);
        }
        texts.push(pod_metrics(&rig.users.name, &rig.web_pod()?, "http", 7444)?);
        total.tasks += (metric_sum(&texts, "hatchway_tokio_tasks", &[])
            + metric_sum(&texts, "hatchway_sidecar_tokio_tasks", &[])) as u64;
    }
    Ok(total)
}

struct Outcome {
    case: &'static Case,
    said: String,
    events: Vec<Event>,
    recovered_after: Option<Duration>,
    before: Usage,
    after: Usage,
}

fn run_case(case: &'static Case, rigs: &[Rig]) -> Result<Outcome> {
    eprintln!("chaos: {} — {}", case.name, case.what);
    let before = usage(rigs)?;
    let record = Record::default();
    let stop = AtomicBool::new(false);
    let (said, recovered_after) = std::thread::scope(|scope| -> Result<_> {
        for (index, rig) in rigs.iter().enumerate() {
            let (record, stop) = (&record, &stop);
            scope.spawn(move || shells(rig, index, record, stop));
            scope.spawn(move || forwards(rig, index, record, stop));
            scope.spawn(move || webs(rig, index, record, stop));
            scope.spawn(move || websockets(rig, index, record, stop));
            scope.spawn(move || logs(rig, index, record, stop));
        }
        let result = (|| {
            std::thread::sleep(QUIET);
            let said = (case.inject)(rigs)?;
            let ended = Instant::now();
            let recovered = wait_until("every kind of traffic working again", RECOVERY, POLL, || {
                Ok(record
                    .all_worked_since(ended, rigs.len())
                    .then(|| ended.elapsed()))
            })
            .ok();
            std::thread::sleep(QUIET);
            anyhow::Ok((said, recovered))
        })();
        stop.store(true, Ordering::Relaxed);
        result
    })?;
    // The processes settle (connections closed, buffers returned).
    std::thread::sleep(QUIET);
    let after = wait_until("every replica and sidecar ready to measure", WAIT, POLL, || {
        Ok(usage(rigs).ok())
    })?;
    Ok(Outcome {
        case,
        said,
        events: record.take(),
        recovered_after,
        before,
        after,
    })
}

/// Per rig and kind: attempts, failures, outages (runs of consecutive
/// failures: from the first failure's start to the next success's end),
/// corrupted.
struct Tally {
    attempts: usize,
    failed: usize,
    outages: Vec<f64>,
    corrupted: u64,
    errors: BTreeMap<String, usize>,
}

fn tally(events: &[Event], rig: usize, kind: Kind) -> Tally {
    let mut mine: Vec<&Event> = events.iter().filter(|e| e.rig == rig && e.kind == kind).collect();
    mine.sort_by_key(|e| e.end);
    let mut outages = Vec::new();
    let mut down_since: Option<Instant> = None;
    let mut errors = BTreeMap::new();
    for e in &mine {
        if e.ok {
            if let Some(since) = down_since.take() {
                outages.push(e.end.duration_since(since).as_secs_f64());
            }
        } else {
            down_since.get_or_insert(e.start);
            *errors.entry(shorten(&e.error)).or_insert(0) += 1;
        }
    }
    if let Some(since) = down_since {
        // Still failing at the end: as long as was seen.
        outages.push(
            mine.last()
                .map_or(0.0, |e| e.end.duration_since(since).as_secs_f64()),
        );
    }
    Tally {
        attempts: mine.len(),
        failed: mine.iter().filter(|e| !e.ok).count(),
        outages,
        corrupted: mine.iter().map(|e| e.corrupted).sum(),
        errors,
    }
}

/// An error's gist: numbers and ids out, so alike errors count together.
fn shorten(error: &str) -> String {
    let gist: String = error
        .chars()
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .collect();
    let gist = gist.replace('\n', " ");
    gist.chars().take(160).collect()
}

fn report(outcomes: &[Outcome], rigs: &[Rig]) -> String {
    let mut out = format!(
        "# Chaos: faults under traffic\n\n`make chaos` at {}, on the e2e cluster \
         (one node). Two installs side by side: **direct** (routers reach pods) and **tunnel** \
         (tunnels only). Traffic on each throughout: shells running a command, new port-forward \
         connections echoing 64 KiB, web-app requests, WebSocket messages, one `logs -f` \
         (a line every 100 ms; silent > 1 s counts as a failure). An outage is a run of \
         failures of one kind, from the first failure's start to the next success. Corrupted: \
         bytes or lines that came back wrong (must be 0). Usage: the routers' and sidecars' \
         file descriptors, threads, async tasks (`hatchway_tokio_tasks`) and RSS, before the case and 10 s after its traffic.\n\n",
        results::machine()
    );
    for o in outcomes {
        out.push_str(&format!("## {}\n\n{}. {}.\n\n", o.case.name, o.case.what, o.said));
        out.push_str(&match o.recovered_after {
            Some(after) => format!(
                "Every kind of traffic worked again {:.1} s after the fault ended.\n\n",
                after.as_secs_f64()
            ),
            None => format!(
                "**Not every kind of traffic worked again within {} s of the fault's end.**\n\n",
                RECOVERY.as_secs()
            ),
        });
        out.push_str(
            "| install | traffic | attempts | failed | outages | outage p50 / p99 / max (s) | corrupted |\n",
        );
        out.push_str("|---|---|---:|---:|---:|---|---:|\n");
        let mut errors = Vec::new();
        for (index, rig) in rigs.iter().enumerate() {
            for kind in Kind::ALL {
                let t = tally(&o.events, index, kind);
                let spread = results::spread(&t.outages, 2);
                out.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} | {} |\n",
                    rig.mode,
                    kind.name(),
                    t.attempts,
                    t.failed,
                    t.outages.len(),
                    spread,
                    t.corrupted
                ));
                for (error, count) in t.errors {
                    errors.push(format!(
                        "- {} {}: {count}× `{}`",
                        rig.mode,
                        kind.name(),
                        error.replace('`', "'")
                    ));
                }
            }
        }
        out.push_str(&format!(
            "\nUsage before → after: {} → {} fds, {} → {} threads, {} → {} tasks, {:.1} → {:.1} MiB RSS.\n",
            o.before.fds,
            o.after.fds,
            o.before.threads,
            o.after.threads,
            o.before.tasks,
            o.after.tasks,
            o.before.rss_kib as f64 / 1024.0,
            o.after.rss_kib as f64 / 1024.0
        ));
        if !errors.is_empty() {
            out.push_str("\nWhat the failures said:\n\n");
            out.push_str(&errors.join("\n"));
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

#[test]
#[ignore = "make chaos: faults for the whole cluster; run alone"]
fn chaos() -> Result<()> {
    let only = std::env::var("HATCHWAY_CHAOS_CASES").unwrap_or_default();
    let cases: Vec<&'static Case> = CASES
        .iter()
        .filter(|c| only.is_empty() || only.split(',').any(|o| o.trim() == c.name))
        .collect();
    ensure!(!cases.is_empty(), "HATCHWAY_CHAOS_CASES={only:?} names no case");
    let rigs = [
        Rig::new("direct", &[])?,
        Rig::new("tunnel", &["--set", "router.directAccess=false"])?,
    ];
    let mut outcomes = Vec::new();
    for case in cases {
        outcomes.push(run_case(case, &rigs)?);
        // Written after every case: a long run that fails late keeps the rest.
        results::write(
            &results::name_for_cases("chaos", "HATCHWAY_CHAOS_CASES"),
            &report(&outcomes, &rigs),
        )?;
    }
    // The bars every case must clear.
    let mut problems = Vec::new();
    for o in &outcomes {
        if o.recovered_after.is_none() {
            problems.push(format!("{}: traffic did not recover", o.case.name));
        }
        let corrupted: u64 = o.events.iter().map(|e| e.corrupted).sum();
        if corrupted > 0 {
            problems.push(format!("{}: {corrupted} corrupted", o.case.name));
        }
        if o.after.tasks > o.before.tasks + 64 {
            problems.push(format!(
                "{}: tasks {} -> {}",
                o.case.name, o.before.tasks, o.after.tasks
            ));
        }
        if o.after.fds > o.before.fds + 64 {
            problems.push(format!(
                "{}: file descriptors {} -> {}",
                o.case.name, o.before.fds, o.after.fds
            ));
        }
    }
    for rig in &rigs {
        rig.users.passed();
        rig.release.ns.passed();
    }
    if !problems.is_empty() {
        bail!("chaos: {}", problems.join("; "));
    }
    Ok(())
}
