//! Memory and scale of the router with many tunnels: the router runs in a
//! process of its own (this binary's `router` command) so its resident
//! memory is its own; a load generator here speaks the sidecar's tunnel
//! protocol (TLS, the tunnel proof, yamux, a hello) for each of N
//! Containers in one process; a real sidecar carries the streams.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hatchway_api::proof::RootSecret;
use hatchway_operator::router::auth::Permission;
use hatchway_operator::router::select::Policy;

use crate::cases::{Row, progress};
use crate::rig::TOKEN;
use crate::stats::Figure;
use crate::support::{self, FakeSidecar, MemoryCluster, StaticAuth, TestRouter, container, fake_hello};
use crate::tools::{Bg, free_port, wait_listening};

const NS: &str = "bench-tunnels";
/// The Container whose real sidecar carries the streams.
const STREAMS_UID: &str = "00000000-0000-4000-8000-ffffffffffff";

fn idle_uid(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

/// The `router` command: a tunnels-only router on 127.0.0.1:`port` (0: any)
/// knowing `tunnels` idle Containers and the streams one; prints `ROUTER
/// <addr> <CA with | for newlines>` and serves until stdin closes.
pub async fn serve_router(tunnels: usize, port: u16, pki: Option<std::path::PathBuf>) -> Result<()> {
    if let Some(dir) = pki {
        let read = |name: &str| std::fs::read_to_string(dir.join(name));
        support::use_pki(hatchway_operator::router::tls::RouterTls {
            cert_chain_pem: read("tls.crt")?,
            key_pem: read("tls.key")?,
            ca_pem: read("ca.crt")?,
        });
    }
    let cluster = MemoryCluster::new();
    let auth = StaticAuth::new();
    auth.user(TOKEN, "bench");
    auth.grant("bench", NS, Permission::PORTFORWARD);
    for i in 0..tunnels {
        let mut c = container(NS, &format!("idle-{i}"));
        c.metadata.uid = Some(idle_uid(i));
        cluster.insert(c);
    }
    let mut c = container(NS, "streams");
    c.metadata.uid = Some(STREAMS_UID.to_owned());
    cluster.insert(c);
    let mut status = support::running_at("127.0.0.1:9".parse()?);
    status.gateway.as_mut().context("a gateway")?.address = String::new();
    cluster.set_status(NS, "streams", status);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let router = TestRouter::start_on(listener, cluster, auth, |s| {
        s.policy = Policy {
            prefer_tunnel: true,
            direct_access: false,
        };
        s.max_tunnels = tunnels + 10;
    })
    .await;
    println!(
        "ROUTER {} {}",
        router.addr,
        support::pki().ca_pem.replace('\n', "|")
    );
    let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut tokio::io::sink()).await;
    Ok(())
}

/// The `hold` command: accepts TCP connections on 127.0.0.1 and keeps
/// them (a tokio task each, reading, as the router's are); prints `HOLD
/// <addr>`; serves until stdin closes.
pub async fn hold() -> Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("HOLD {}", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok(n) = tokio::io::AsyncReadExt::read(&mut conn, &mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut tokio::io::sink()).await;
    Ok(())
}

/// Memory per held plain TCP connection in a process of its own (the
/// reference for the router's per-tunnel figure), slope over `count`.
fn plain_tcp_memory(count: usize) -> Result<f64> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("hold")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let line = lines.next().context("the hold process printed nothing")??;
    let addr: SocketAddr = line.strip_prefix("HOLD ").context("not a HOLD line")?.parse()?;
    let mut held = Vec::new();
    let open = |held: &mut Vec<TcpStream>, k: usize| -> Result<()> {
        for _ in 0..k {
            held.push(TcpStream::connect(addr)?);
        }
        Ok(())
    };
    open(&mut held, 20)?;
    std::thread::sleep(Duration::from_millis(500));
    let before = support::anon_rss(child.id())?;
    open(&mut held, count)?;
    std::thread::sleep(Duration::from_millis(500));
    let after = support::anon_rss(child.id())?;
    let _ = child.kill();
    let _ = child.wait();
    Ok(after.saturating_sub(before) as f64 / count as f64)
}

/// The router child process.
struct RouterProcess {
    child: Child,
    addr: SocketAddr,
    ca_pem: String,
}

impl RouterProcess {
    /// With `profiled`, `BENCH_ROUTER_WRAPPER` (e.g. `heaptrack -o
    /// /tmp/router`) runs the router under a profiler; its memory figures
    /// are then the wrapper's.
    fn start(tunnels: usize, port: u16, pki: &std::path::Path, profiled: bool) -> Result<Self> {
        let wrapper = match profiled {
            true => std::env::var("BENCH_ROUTER_WRAPPER").unwrap_or_default(),
            false => String::new(),
        };
        let mut words = wrapper.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut command = Command::new(program);
                command.args(words).arg(std::env::current_exe()?);
                command
            }
            None => Command::new(std::env::current_exe()?),
        };
        let mut child = command
            .args([
                "router",
                "--tunnels",
                &tunnels.to_string(),
                "--port",
                &port.to_string(),
            ])
            .arg("--pki")
            .arg(pki)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        // A wrapper may print lines of its own first.
        let line = lines
            .find(|line| line.as_ref().map_or(true, |l| l.starts_with("ROUTER ")))
            .context("the router process printed no ROUTER line")??;
        let rest = line.strip_prefix("ROUTER ").context("not a ROUTER line")?;
        let (addr, ca) = rest.split_once(' ').context("an address and a CA")?;
        Ok(Self {
            child,
            addr: addr.parse()?,
            ca_pem: ca.replace('|', "\n"),
        })
    }

    fn rss(&self) -> Result<u64> {
        Ok(support::rss(self.child.id())?)
    }

    /// Anonymous resident memory: what slopes are taken from.
    fn anon(&self) -> Result<u64> {
        Ok(support::anon_rss(self.child.id())?)
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn key(uid: &str) -> hatchway_api::proof::CtrKey {
    RootSecret::new(support::ROOT.to_vec()).ctr_key(uid)
}

/// A load-generated sidecar that reconnects as the real one does (its
/// backoff schedule) and counts its connections.
async fn keep_tunnel(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    uid: String,
    connected: tokio::sync::mpsc::UnboundedSender<(usize, Instant)>,
    index: usize,
) {
    use backon::BackoffBuilder;
    let mut delays = hatchway_sidecar::tunnel::BACKOFF.build();
    loop {
        if let Ok(mut fake) = FakeSidecar::try_connect_with(addr, tls.clone(), &uid, &key(&uid)).await {
            fake.send(&fake_hello(&uid)).await;
            delays = hatchway_sidecar::tunnel::BACKOFF.build();
            let _ = connected.send((index, Instant::now()));
            let _ = fake.session.await;
        }
        let delay = delays.next().unwrap_or(hatchway_sidecar::tunnel::BACKOFF_CEILING);
        tokio::time::sleep(delay).await;
    }
}

/// Memory per idle tunnel and per open stream (slopes), and a reconnect
/// storm of `count` tunnels after the router restarts.
pub async fn memory_and_scale(count: usize, streams: usize) -> Result<Vec<Row>> {
    let port = free_port()?;
    // One CA and certificate for both router processes, as replicas share
    // theirs: the sidecars' pinned trust survives the restart.
    let pki_dir = tempfile::tempdir()?;
    let pki = hatchway_operator::router::tls::RouterTls::generate(&["localhost".into(), "127.0.0.1".into()])?;
    std::fs::write(pki_dir.path().join("tls.crt"), &pki.cert_chain_pem)?;
    std::fs::write(pki_dir.path().join("tls.key"), &pki.key_pem)?;
    std::fs::write(pki_dir.path().join("ca.crt"), &pki.ca_pem)?;
    let router = RouterProcess::start(count, port, pki_dir.path(), true)?;
    let tls = support::trusting(&router.ca_pem, &[b"http/1.1"]);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let warm = 20.min(count / 2);
    let mut tasks = Vec::new();
    let mut up = std::collections::HashSet::new();
    let started = Instant::now();
    let mut base = 0;
    let mut full_rss = 0.0;
    for (from, to) in [(0, warm), (warm, count)] {
        for i in from..to {
            tasks.push(tokio::spawn(keep_tunnel(
                router.addr,
                tls.clone(),
                idle_uid(i),
                tx.clone(),
                i,
            )));
        }
        while up.len() < to {
            let (index, _) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
                .await
                .context("tunnels connecting")?
                .context("tunnels")?;
            up.insert(index);
        }
        // Let the router finish the hellos' status writes.
        tokio::time::sleep(Duration::from_millis(500)).await;
        full_rss = router.rss()? as f64 / 1048576.0;
        progress(&format!("{to} tunnels: router RSS {full_rss:.1} MiB"));
        if to == warm {
            base = router.anon()?;
        }
    }
    let all_up = started.elapsed().as_secs_f64();
    let after = router.anon()?;
    // Slope from the warm point: the first tunnels pay one-time costs.
    let per_tunnel = (after.saturating_sub(base)) as f64 / (count - warm) as f64;
    progress(&format!(
        "router memory: {:.1} KiB per idle tunnel ({count} tunnels up in {all_up:.2} s)",
        per_tunnel / 1024.0
    ));

    // Streams: a real sidecar tunnelled to this router, `streams` port
    // forwards held open through it.
    let stream_rows = streams_memory(&router, streams).await?;

    // The storm: kill the router, start it again on the same port, time
    // until every tunnel is back.
    router.kill();
    let killed = Instant::now();
    while rx.try_recv().is_ok() {}
    let router = RouterProcess::start(count, port, pki_dir.path(), false)?;
    let restarted = killed.elapsed().as_secs_f64();
    let mut back = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = Instant::now();
    while back.len() < count && Instant::now() < deadline {
        if let Ok(Some((index, at))) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            back.insert(index);
            last = at;
        }
    }
    let storm = last.duration_since(killed).as_secs_f64();
    progress(&format!(
        "reconnect storm: {}/{count} tunnels back {storm:.2} s after the kill (router up after {restarted:.2} s)",
        back.len()
    ));
    for task in tasks {
        task.abort();
    }
    drop(router);

    // Reference: the same number of plain TCP connections to a fresh
    // listener, all at once.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let acceptor = std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().take(count) {
            held.push(conn);
        }
        held.len()
    });
    let started = Instant::now();
    let mut conns = Vec::new();
    for _ in 0..count {
        conns.push(tokio::net::TcpStream::connect(addr));
    }
    let conns = futures::future::join_all(conns).await;
    let plain = started.elapsed().as_secs_f64();
    let _ = acceptor.join();
    drop(conns);
    progress(&format!("{count} plain TCP connections: {plain:.3} s"));

    let held_tcp = plain_tcp_memory(count)?;
    progress(&format!(
        "a held plain TCP connection: {:.1} KiB",
        held_tcp / 1024.0
    ));
    let mut rows = vec![
        row(
            "router memory per idle tunnel",
            "hatchway",
            per_tunnel / 1024.0,
            "KiB",
            false,
        ),
        row(
            "router memory per idle tunnel",
            "held plain TCP connection",
            held_tcp / 1024.0,
            "KiB",
            false,
        ),
        row(
            &format!("{count} tunnels connected (one replica)"),
            "hatchway",
            all_up,
            "s",
            false,
        ),
        // Everything the router holds then, its cache of the Containers
        // included: what the chart's memory limit must fit.
        row(
            &format!("router RSS with {count} tunnels"),
            "hatchway",
            full_rss,
            "MiB",
            false,
        ),
        row(
            &format!("reconnect storm, {count} tunnels"),
            "hatchway",
            storm,
            "s",
            false,
        ),
        row(
            &format!("reconnect storm, {count} tunnels"),
            "plain TCP connects",
            plain,
            "s",
            false,
        ),
    ];
    rows.extend(stream_rows);
    Ok(rows)
}

fn row(workload: &str, path: &str, value: f64, unit: &'static str, higher: bool) -> Row {
    Row {
        workload: workload.to_owned(),
        path: path.to_owned(),
        figure: Figure::new(vec![value]),
        unit,
        higher_is_better: higher,
    }
}

/// Router memory per open stream: `n` port-forwards held open through one
/// tunnel (the client is `kubectl hatch`, in its own process); the
/// sidecar's resident memory idle and with them open.
async fn streams_memory(router: &RouterProcess, n: usize) -> Result<Vec<Row>> {
    let dir = tempfile::tempdir()?;
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &router.ca_pem)?;
    // The sidecar as it runs in a pod: its own process, tunnelled to the
    // router, so its resident memory can be read too.
    let key_file = dir.path().join("ctr_key");
    std::fs::write(&key_file, format!("{}\n", key(STREAMS_UID).expose_hex()))?;
    for sub in ["log", "audit"] {
        std::fs::create_dir_all(dir.path().join(sub))?;
    }
    let sidecar_bin = std::env::current_exe()?
        .parent()
        .context("no directory")?
        .join("hatchway-sidecar");
    let mut command = Command::new(&sidecar_bin);
    command
        .arg("gateway")
        .env("HATCHWAY_CONTAINER_UID", STREAMS_UID)
        .env("HATCHWAY_KEY_FILE", &key_file)
        .env("HATCHWAY_GATEWAY_ADDR", format!("127.0.0.1:{}", free_port()?))
        .env("HATCHWAY_HEALTH_ADDR", format!("127.0.0.1:{}", free_port()?))
        .env("HATCHWAY_LOG_DIR", dir.path().join("log"))
        .env("HATCHWAY_AUDIT_DIR", dir.path().join("audit"))
        .env("HATCHWAY_SPAWN_SOCKET", dir.path().join("no-shim.sock"))
        .env("HATCHWAY_TUNNEL_URL", format!("https://{}", router.addr))
        .env("HATCHWAY_ROUTER_CA_FILE", &ca_file);
    let sidecar = Bg::spawn("hatchway-sidecar gateway", &mut command)?;
    let sidecar_rss = || support::rss(sidecar.child.id());
    // A server in the "pod" that reads and discards what each connection
    // sends, and never answers.
    let idle = std::net::TcpListener::bind("127.0.0.1:0")?;
    let idle_port = idle.local_addr()?.port();
    std::thread::spawn(move || {
        for conn in idle.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut &conn, &mut std::io::sink());
            });
        }
    });
    let local = free_port()?;
    let mut forward = Command::new(crate::rig::hatch_binary()?);
    forward
        .env("KUBECONFIG", dir.path().join("none"))
        .env("HATCHWAY_SERVER", format!("https://{}", router.addr))
        .env("HATCHWAY_CA_FILE", &ca_file)
        .env("HATCHWAY_TOKEN", TOKEN)
        .args([
            "-n",
            NS,
            "port-forward",
            "streams",
            &format!("{local}:{idle_port}"),
        ])
        .stdout(Stdio::null());
    let forward = Bg::spawn("kubectl hatch port-forward", &mut forward)?;
    wait_listening(local, "port-forward")?;
    let mut held = Vec::new();
    // The first stream waits for the sidecar's tunnel: the idle server never
    // answers, so a read timeout means the stream is up and an immediate
    // end means the port-forward was refused (not yet).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut c = TcpStream::connect(("127.0.0.1", local))?;
        c.set_read_timeout(Some(Duration::from_millis(500)))?;
        c.write_all(b"x")?;
        let mut probe = [0u8; 1];
        match c.read(&mut probe) {
            Err(_) => {
                held.push(c);
                break;
            }
            Ok(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Ok(_) => anyhow::bail!("no stream through the sidecar's tunnel"),
        }
    }
    let open = |held: &mut Vec<TcpStream>, k: usize| -> Result<()> {
        for _ in 0..k {
            let mut c = TcpStream::connect(("127.0.0.1", local))?;
            c.write_all(b"x")?;
            held.push(c);
        }
        Ok(())
    };
    let settle = || std::thread::sleep(Duration::from_millis(1500));
    settle();
    let sidecar_idle = sidecar_rss()?;
    let sidecar_idle_anon = support::anon_rss(sidecar.child.id())?;
    open(&mut held, 9)?;
    settle();
    let before = router.anon()?;
    open(&mut held, n)?;
    settle();
    let after = router.anon()?;
    let per_stream = after.saturating_sub(before) as f64 / n as f64;
    let sidecar_loaded = sidecar_rss()?;
    // Under load: 1 GiB through one more stream, the sidecar's RSS sampled
    // while it flows (the peak), and the sidecar process's CPU for it.
    let sidecar_cpu = crate::tools::cpu_seconds(sidecar.child.id(), false)?;
    let started = Instant::now();
    let sender = std::thread::spawn(move || -> Result<()> {
        let mut c = TcpStream::connect(("127.0.0.1", local))?;
        let chunk = vec![0u8; 256 * 1024];
        for _ in 0..4096 {
            c.write_all(&chunk)?;
        }
        Ok(())
    });
    let mut sidecar_busy = 0;
    while !sender.is_finished() {
        sidecar_busy = sidecar_busy.max(sidecar_rss()?);
        std::thread::sleep(Duration::from_millis(50));
    }
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("the sender panicked"))??;
    // Sent, not yet all received: the tail in socket buffers (a few MiB)
    // is inside this figure's noise.
    let gbps = 8.0 * 1024.0 * 1024.0 * 1024.0 / started.elapsed().as_secs_f64() / 1e9;
    let sidecar_cpu = crate::tools::cpu_seconds(sidecar.child.id(), false)? - sidecar_cpu;
    progress(&format!(
        "1 GiB through the sidecar process: {gbps:.2} Gbit/s, its CPU {sidecar_cpu:.2} s"
    ));
    progress(&format!(
        "router memory: {:.1} KiB per open stream ({n} streams); sidecar RSS {:.1} MiB idle, {:.1} MiB with them open",
        per_stream / 1024.0,
        sidecar_idle as f64 / 1048576.0,
        sidecar_loaded as f64 / 1048576.0
    ));
    progress(&format!(
        "sidecar RSS during a 1 GiB transfer: {:.1} MiB",
        sidecar_busy as f64 / 1048576.0
    ));
    // The CLI goes (as a laptop's would): every stream's resumable session
    // is detached in the sidecar, waiting for its client.
    drop(forward);
    settle();
    let sidecar_detached = sidecar_rss()?;
    let streams = held.len() as f64;
    let per_detached =
        support::anon_rss(sidecar.child.id())?.saturating_sub(sidecar_idle_anon) as f64 / streams;
    progress(&format!(
        "sidecar RSS {:.1} MiB with {streams} sessions detached: {:.1} KiB each over idle",
        sidecar_detached as f64 / 1048576.0,
        per_detached / 1024.0
    ));
    drop(held);
    drop(sidecar);
    Ok(vec![
        row(
            "sidecar memory per detached session",
            "hatchway",
            per_detached / 1024.0,
            "KiB",
            false,
        ),
        row(
            "router memory per open stream",
            "hatchway",
            per_stream / 1024.0,
            "KiB",
            false,
        ),
        row(
            "sidecar RSS, idle (tunnel up)",
            "hatchway",
            sidecar_idle as f64 / 1048576.0,
            "MiB",
            false,
        ),
        // The rest of its RSS is its binary's pages: clean, reclaimable,
        // and shared by every sidecar of the same image on a node.
        row(
            "sidecar anonymous memory, idle (tunnel up)",
            "hatchway",
            sidecar_idle_anon as f64 / 1048576.0,
            "MiB",
            false,
        ),
        row(
            &format!("sidecar RSS, {n} streams open"),
            "hatchway",
            sidecar_loaded as f64 / 1048576.0,
            "MiB",
            false,
        ),
        row(
            "sidecar RSS, 1 GiB flowing (peak)",
            "hatchway",
            sidecar_busy as f64 / 1048576.0,
            "MiB",
            false,
        ),
        // The sidecar as its image runs it (its own process, its build),
        // for comparing builds of it: the bulk cases run the gateway
        // inside the harness.
        row(
            "1 GiB through a tunnel to a sidecar process",
            "hatchway",
            gbps,
            "Gbit/s",
            true,
        ),
        row(
            "sidecar process CPU per GiB (tunnel)",
            "hatchway",
            sidecar_cpu,
            "CPU s/GiB",
            false,
        ),
    ])
}
