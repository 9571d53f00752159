//! The measured cases. Each returns rows: (workload, path, figure, unit,
//! whether bigger is better); the report turns them into ratios against
//! the references measured in the same run.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::rig::{APPS, Path, Rig};
use crate::stats::{Figure, percentile};
use crate::tools::{self, Bg, KubectlForward, Sshd, free_port};

/// One measured line of the report.
#[derive(Debug, Clone)]
pub struct Row {
    pub workload: String,
    pub path: String,
    pub figure: Figure,
    pub unit: &'static str,
    pub higher_is_better: bool,
}

pub fn row(workload: &str, path: &str, samples: Vec<f64>, unit: &'static str, higher: bool) -> Row {
    Row {
        workload: workload.to_owned(),
        path: path.to_owned(),
        figure: Figure::new(samples),
        unit,
        higher_is_better: higher,
    }
}

pub fn progress(message: &str) {
    eprintln!("bench: {message}");
}

/// Forwards on every path to `target` (a local port): (name, local port,
/// what keeps it up).
fn forwards(rig: &Rig, sshd: &Sshd, target: u16, with_stunnel: bool) -> Result<Vec<(String, u16, Vec<Bg>)>> {
    let mut paths: Vec<(String, u16, Vec<Bg>)> = vec![("raw loopback".into(), target, Vec::new())];
    let p = free_port()?;
    paths.push(("socat relay".into(), p, vec![tools::socat_relay(p, target)?]));
    if with_stunnel {
        let p = free_port()?;
        let dir = tempfile::tempdir_in(rig.dir.path())?;
        paths.push((
            "stunnel pair".into(),
            p,
            tools::stunnel_pair(&dir.keep(), p, target)?,
        ));
    }
    let p = free_port()?;
    paths.push(("OpenSSH -L".into(), p, vec![sshd.forward(p, target)?]));
    for path in [Path::Direct, Path::Tunnel] {
        let p = free_port()?;
        paths.push((
            format!("hatchway {}", path.name()),
            p,
            vec![rig.port_forward(path, p, target)?],
        ));
    }
    Ok(paths)
}

/// What the resumable framing costs: the direct path, plain.
fn not_resumable(rig: &Rig, target: u16) -> Result<(String, u16, Vec<Bg>)> {
    let p = free_port()?;
    Ok((
        "hatchway direct, not resumable".into(),
        p,
        vec![rig.port_forward_with(Path::Direct, p, target, &["--no-resume"])?],
    ))
}

/// Bulk TCP: iperf3 (1 and 8 streams) through every path where iperf3
/// can run, then 256 MiB into a byte-counting sink through every path,
/// `kubectl port-forward` and the aggregated API (through the cluster's
/// API server) included (iperf3 cannot finish through it: it
/// drops the whole forward when iperf3's server resets a connection).
pub fn bulk(
    rig: &Rig,
    sshd: &Sshd,
    aggregated: Option<&crate::aggregated::Aggregated>,
    repeats: usize,
    seconds: u32,
    only_paths: &[String],
) -> Result<Vec<Row>> {
    let wanted = |paths: &mut Vec<(String, u16, Vec<Bg>)>| {
        if !only_paths.is_empty() {
            paths.retain(|(name, _, _)| only_paths.iter().any(|o| name.contains(o.as_str())));
        }
    };
    let server = free_port()?;
    let _iperf = Bg::spawn(
        "iperf3 server",
        Command::new("iperf3").args(["-s", "-p", &server.to_string()]),
    )?;
    tools::wait_listening(server, "iperf3")?;
    let mut paths = forwards(rig, sshd, server, true)?;
    paths.push(not_resumable(rig, server)?);
    wanted(&mut paths);
    let mut rows = throughput(
        &paths,
        "bulk TCP (iperf3)",
        repeats,
        Some(seconds),
        |_, port, streams| iperf3(port, streams, seconds, false),
    )?;
    // The other way: the pod sends (downloads, `scp` from the pod, logs).
    rows.extend(throughput(
        &paths,
        "bulk TCP (iperf3 -R, from the pod)",
        repeats,
        Some(seconds),
        |_, port, streams| iperf3(port, streams, seconds, true),
    )?);
    drop(paths);

    let sink = sink_server()?;
    let mut paths = forwards(rig, sshd, sink, true)?;
    paths.push(not_resumable(rig, sink)?);
    let p = free_port()?;
    let mut kubectl = KubectlForward::start(p)?;
    if kubectl.is_some() {
        paths.push(("kubectl port-forward".into(), p, Vec::new()));
    } else {
        progress("no e2e cluster (KUBECONFIG): kubectl port-forward is not measured");
    }
    // Through the cluster's API server (the aggregated API), beside the
    // router's own URL and kubectl port-forward.
    if let Some(aggregated) = aggregated {
        let p = free_port()?;
        paths.push((
            "hatchway aggregated".into(),
            p,
            vec![aggregated.port_forward(rig, p, sink)?],
        ));
    } else {
        progress("no aggregated API to register: the path through the API server is not measured");
    }
    wanted(&mut paths);
    const TOTAL: usize = 256 << 20;
    rows.extend(throughput(
        &paths,
        "bulk TCP (256 MiB to a sink)",
        repeats,
        None,
        |name, port, streams| {
            if name == "kubectl port-forward"
                && let Some(k) = &mut kubectl
            {
                k.ensure_running()?;
            }
            sink_bulk(SocketAddr::from(([127, 0, 0, 1], port)), TOTAL, streams as usize)
        },
    )?);
    Ok(rows)
}

/// Which CPU time counts on a path, for the CPU per GiB rows: (row
/// name, processes, with their reaped children). "relayed": the relay
/// alone, socat's process and the children it forks per connection, or
/// for Hatchway this harness, where the routers and gateways run (the
/// goal counts router and sidecar). "end to end": the CLI too, where half
/// of the resumable framing runs (the other half is in the gateway); the
/// difference of the two rows is the CLI's.
fn counted_cpu(name: &str, bgs: &[Bg]) -> Vec<(&'static str, Vec<u32>, bool)> {
    let harness = std::process::id();
    let cli = bgs.iter().map(Bg::pid);
    match name {
        "socat relay" => vec![("CPU per GiB relayed", bgs.iter().map(Bg::pid).collect(), true)],
        "hatchway direct" | "hatchway tunnel" | "hatchway direct, not resumable" => vec![
            ("CPU per GiB relayed", vec![harness], false),
            ("CPU per GiB end to end", cli.chain([harness]).collect(), false),
        ],
        _ => Vec::new(),
    }
}

fn cpu_of(pids: &[u32], children: bool) -> Result<f64> {
    pids.iter()
        .map(|pid| {
            if children {
                tools::wait_childless(*pid);
            }
            tools::cpu_seconds(*pid, children)
        })
        .sum()
}

/// `measure(path name, port, streams)` in bits per second, `repeats` times
/// for 1 and 8 streams on every path, as rows in Gbit/s. With
/// `cpu_seconds` (the length of each measurement), also CPU seconds per
/// GiB moved on the paths [`counted_cpu`] knows.
pub fn throughput(
    paths: &[(String, u16, Vec<Bg>)],
    workload: &str,
    repeats: usize,
    cpu_seconds: Option<u32>,
    mut measure: impl FnMut(&str, u16, u32) -> Result<f64>,
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for streams in [1, 8] {
        // Paths take turns, round by round: a drift of the machine (another
        // process, the CPU's clock) falls on every path alike, not on the
        // one measured while it lasted.
        let mut samples = vec![Vec::new(); paths.len()];
        // (row name, path) → CPU seconds per GiB, in the order first seen.
        let mut cpu: Vec<((&'static str, &str), Vec<f64>)> = Vec::new();
        for _ in 0..repeats {
            for ((name, port, bgs), samples) in paths.iter().zip(&mut samples) {
                let counted = if cpu_seconds.is_some() {
                    counted_cpu(name, bgs)
                } else {
                    Vec::new()
                };
                let before = counted
                    .iter()
                    .map(|(_, pids, children)| cpu_of(pids, *children))
                    .collect::<Result<Vec<_>>>()?;
                let bps = measure(name, *port, streams)?;
                samples.push(bps / 1e9);
                let gib = bps * f64::from(cpu_seconds.unwrap_or(0)) / 8.0 / f64::from(1u32 << 30);
                for ((what, pids, children), before) in counted.iter().zip(before) {
                    let used = (cpu_of(pids, *children)? - before) / gib;
                    match cpu.iter_mut().find(|(key, _)| *key == (*what, name.as_str())) {
                        Some((_, values)) => values.push(used),
                        None => cpu.push(((*what, name.as_str()), vec![used])),
                    }
                }
            }
        }
        for ((what, name), values) in cpu {
            rows.push(row(
                &format!("{what}, {workload}, {streams} stream(s)"),
                name,
                values,
                "CPU s/GiB",
                false,
            ));
        }
        for ((name, _, _), samples) in paths.iter().zip(samples) {
            let r = row(
                &format!("{workload}, {streams} stream(s)"),
                name,
                samples,
                "Gbit/s",
                true,
            );
            progress(&format!(
                "{} via {}: {:.2} Gbit/s",
                r.workload,
                r.path,
                r.figure.median()
            ));
            rows.push(r);
        }
    }
    Ok(rows)
}

/// A sink on a free port: each connection sends `N\n` and N bytes; the
/// sink answers `N\n` once it has them all (as the pods' sink,
/// e2e/src/bin/sink.rs, does; no half-close, which kubectl port-forward
/// does not pass on). It notes when each connection's first
/// data byte and last byte arrived ([`SINK_PHASES`]), so a run can say
/// where its time went: before the first byte (setup), moving the bytes,
/// or getting the answer back.
fn sink_server() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || -> std::io::Result<()> {
                let mut reader = std::io::BufReader::new(conn.try_clone()?);
                let mut line = String::new();
                std::io::BufRead::read_line(&mut reader, &mut line)?;
                let want: u64 = line.trim().parse().unwrap_or(0);
                let mut body = (&mut reader).take(want);
                let mut first = [0u8; 1];
                let got = body.read(&mut first)? as u64;
                let first_byte = Instant::now();
                let got = got + std::io::copy(&mut body, &mut std::io::sink())?;
                SINK_PHASES
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((first_byte, Instant::now()));
                let mut conn = conn;
                writeln!(conn, "{got}")
            });
        }
    });
    Ok(port)
}

/// When each sink connection's first data byte and last byte arrived.
static SINK_PHASES: std::sync::Mutex<Vec<(Instant, Instant)>> = std::sync::Mutex::new(Vec::new());

/// `total` bytes over `streams` connections to a sink at `addr`; bits per
/// second from the first byte to the last count received (end to end).
pub fn sink_bulk(addr: SocketAddr, total: usize, streams: usize) -> Result<f64> {
    let each = total / streams;
    SINK_PHASES.lock().unwrap_or_else(|p| p.into_inner()).clear();
    let started = Instant::now();
    let workers: Vec<_> = (0..streams)
        .map(|_| {
            std::thread::spawn(move || -> Result<u64> {
                let mut conn = TcpStream::connect(addr)?;
                conn.set_read_timeout(Some(std::time::Duration::from_secs(120)))?;
                writeln!(conn, "{each}")?;
                let chunk = vec![0x5au8; 256 * 1024];
                let mut left = each;
                while left > 0 {
                    let n = left.min(chunk.len());
                    conn.write_all(&chunk[..n])?;
                    left -= n;
                }
                let mut answer = String::new();
                std::io::BufRead::read_line(&mut std::io::BufReader::new(&conn), &mut answer)?;
                answer
                    .trim()
                    .parse::<u64>()
                    .with_context(|| format!("sink answered {answer:?}"))
            })
        })
        .collect();
    let mut received = 0;
    for worker in workers {
        received += worker
            .join()
            .map_err(|_| anyhow::anyhow!("a sender panicked"))??;
    }
    let ended = Instant::now();
    anyhow::ensure!(
        received == (each * streams) as u64,
        "the sink counted {received} bytes"
    );
    // Phases across the streams: the first stream's first byte, the last
    // stream's last byte (a sink outside this process, kubectl's, has none).
    let phases = SINK_PHASES.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let (Some(first), Some(last)) = (phases.iter().map(|p| p.0).min(), phases.iter().map(|p| p.1).max()) {
        let ms = |from: Instant, to: Instant| to.saturating_duration_since(from).as_secs_f64() * 1e3;
        progress(&format!(
            "  phases: first byte at the sink after {:.1} ms, all bytes {:.1} ms later, the answer {:.1} ms after that",
            ms(started, first),
            ms(first, last),
            ms(last, ended)
        ));
    }
    Ok(received as f64 * 8.0 / ended.duration_since(started).as_secs_f64())
}

/// One iperf3 run: received bits per second. Tried twice: the server
/// refuses a test while it is still tidying up the previous one (or the
/// readiness probe's connection).
/// `reverse`: the server sends (iperf3 -R).
fn iperf3(port: u16, streams: u32, seconds: u32, reverse: bool) -> Result<f64> {
    iperf3_once(port, streams, seconds, reverse).or_else(|_| {
        std::thread::sleep(std::time::Duration::from_millis(500));
        iperf3_once(port, streams, seconds, reverse)
    })
}

fn iperf3_once(port: u16, streams: u32, seconds: u32, reverse: bool) -> Result<f64> {
    let mut command = Command::new("iperf3");
    command
        .args([
            "-c",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-J",
            "--connect-timeout",
            "5000",
        ])
        .args(["-t", &seconds.to_string(), "-P", &streams.to_string()]);
    if reverse {
        command.arg("-R");
    }
    // iperf3 waits forever for a server that stopped answering (kubectl
    // port-forward dying mid-test): give up well after the run's length.
    let out = hatchway_e2e::run_within(command, std::time::Duration::from_secs(u64::from(seconds) + 20))?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).context("iperf3 JSON")?;
    json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .with_context(|| format!("iperf3 on port {port}: {}", json["error"]))
}

/// An echo server thread on a free port (one thread per connection).
fn echo_server() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = conn.set_nodelay(true);
                let mut conn = conn;
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(port)
}

/// New connection to first byte: `count` connections one after another
/// (connect, send a byte, read the echo, close), `repeats` rounds.
pub fn connect(rig: &Rig, sshd: &Sshd, count: usize, repeats: usize) -> Result<Vec<Row>> {
    let echo = echo_server()?;
    let mut paths: Vec<(String, u16, Vec<Bg>)> = vec![("raw loopback".into(), echo, Vec::new())];
    let p = free_port()?;
    paths.push(("socat relay".into(), p, vec![tools::socat_relay(p, echo)?]));
    let p = free_port()?;
    paths.push(("OpenSSH -L".into(), p, vec![sshd.forward(p, echo)?]));
    for path in [Path::Direct, Path::Tunnel] {
        let p = free_port()?;
        paths.push((
            format!("hatchway {}", path.name()),
            p,
            vec![rig.port_forward(path, p, echo)?],
        ));
    }
    // What a resumable session's setup costs per connection.
    paths.push(not_resumable(rig, echo)?);
    latency_rounds(
        &mut paths,
        &format!("connect to first byte ({count})"),
        repeats,
        |(name, _, _)| name,
        |(_, port, _)| {
            let mut times = Vec::with_capacity(count);
            for _ in 0..count {
                let started = Instant::now();
                let mut conn = TcpStream::connect(("127.0.0.1", *port))?;
                conn.set_nodelay(true)?;
                conn.write_all(b"x")?;
                let mut byte = [0u8; 1];
                conn.read_exact(&mut byte)?;
                times.push(started.elapsed().as_secs_f64() * 1e3);
            }
            Ok(times)
        },
    )
}

/// Runs `measure` (one round's times, in ms) on every path, `repeats`
/// rounds that interleave the paths, so a slow moment of the machine falls
/// on all of them; each round's p50 and p99 are one sample of its rows.
fn latency_rounds<P>(
    paths: &mut [P],
    workload: &str,
    repeats: usize,
    name: impl Fn(&P) -> &str,
    mut measure: impl FnMut(&mut P) -> Result<Vec<f64>>,
) -> Result<Vec<Row>> {
    let mut percentiles: Vec<(Vec<f64>, Vec<f64>)> = vec![Default::default(); paths.len()];
    for _ in 0..repeats {
        for (path, (p50s, p99s)) in paths.iter_mut().zip(&mut percentiles) {
            let times = measure(path)?;
            let (p50, p99) = (percentile(&times, 50.0), percentile(&times, 99.0));
            progress(&format!(
                "{workload} via {}: p50 {p50:.3} ms, p99 {p99:.3} ms",
                name(path)
            ));
            p50s.push(p50);
            p99s.push(p99);
        }
    }
    let mut rows = Vec::new();
    for (path, (p50s, p99s)) in paths.iter().zip(percentiles) {
        rows.push(row(&format!("{workload}, p50"), name(path), p50s, "ms", false));
        rows.push(row(&format!("{workload}, p99"), name(path), p99s, "ms", false));
    }
    Ok(rows)
}

/// A path's name, where to write the byte and where it comes back.
type EchoEnds = (&'static str, Box<dyn Write>, Box<dyn Read>);

/// Interactive latency: 1-byte round trips through `cat` at the far end,
/// `count` per round, `repeats` rounds that interleave the paths.
pub fn shell_echo(rig: &Rig, sshd: &Sshd, count: usize, repeats: usize) -> Result<Vec<Row>> {
    let socat_port = free_port()?;
    let _socat = tools::socat_echo(socat_port)?;
    let mut hatch = rig.hatch(Path::Direct, &["shell", Path::Direct.name(), "--", "cat"])?;
    let mut openssh = Command::new("ssh");
    openssh.args(&sshd.args).args(["root@127.0.0.1", "cat"]);
    let mut children = Vec::new();
    let mut ends: Vec<EchoEnds> = Vec::new();
    for (name, command) in [
        ("kubectl hatch shell", &mut hatch),
        ("OpenSSH to sshd", &mut openssh),
    ] {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = child.stdout.take().context("stdout")?;
        ends.push((name, Box::new(stdin), Box::new(stdout)));
        children.push(child);
    }
    let conn = TcpStream::connect(("127.0.0.1", socat_port))?;
    conn.set_nodelay(true)?;
    let reader = conn.try_clone()?;
    ends.push(("socat TCP echo", Box::new(conn), Box::new(reader)));

    let rows = latency_rounds(
        &mut ends,
        &format!("1-byte echo ({count})"),
        repeats,
        |(name, _, _)| name,
        |(_, out, input)| round_trips(out, input, count),
    )?;
    drop(ends);
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    Ok(rows)
}

/// Warms up (the first byte may wait for the session), then times `count`
/// single-byte round trips, in milliseconds.
fn round_trips(out: &mut impl Write, input: &mut impl Read, count: usize) -> Result<Vec<f64>> {
    let mut byte = [0u8; 1];
    for _ in 0..10 {
        out.write_all(b"x")?;
        out.flush()?;
        input.read_exact(&mut byte)?;
    }
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        out.write_all(b"x")?;
        out.flush()?;
        input.read_exact(&mut byte)?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok(times)
}

/// HTTP requests/s and latency with wrk: the page directly, the web app
/// through each router path, and an nginx pair with the same TLS legs.
pub fn http(rig: &Rig, repeats: usize, seconds: u32) -> Result<Vec<Row>> {
    let page = free_port()?;
    rig.publish(page);
    let _nginx = tools::nginx_page(rig.dir.path(), page)?;
    let front = free_port()?;
    let _pair = tools::nginx_pair(rig.dir.path(), front, page, false)?;
    let kept = free_port()?;
    let _kept = tools::nginx_pair(rig.dir.path(), kept, page, true)?;
    let mut targets: Vec<(String, String, Vec<String>)> = vec![
        (
            "page directly".into(),
            format!("http://127.0.0.1:{page}/"),
            Vec::new(),
        ),
        (
            "nginx TLS pair".into(),
            format!("https://127.0.0.1:{front}/"),
            Vec::new(),
        ),
        (
            "nginx TLS pair, upstream keepalive".into(),
            format!("https://127.0.0.1:{kept}/"),
            Vec::new(),
        ),
    ];
    for path in [Path::Direct, Path::Tunnel] {
        let host = format!("{}-{page}.{APPS}", rig.uid(path));
        // The router's own session for the bench user, as a login link
        // would set it.
        let user = hatchway_operator::router::auth::User {
            username: "bench".into(),
            ..Default::default()
        };
        let session = rig.router(path).router.sessions.mint_session(&user, &host);
        targets.push((
            format!("hatchway {}", path.name()),
            format!("{}/", rig.router(path).url),
            vec![
                format!("Host: {host}"),
                format!("Cookie: {}={session}", hatchway_api::wire::SESSION_COOKIE),
            ],
        ));
    }
    let mut rows = Vec::new();
    for (name, url, headers) in &targets {
        let (mut rps, mut p50, mut p99) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..repeats {
            let (r, a, b) = wrk(url, headers, seconds)?;
            rps.push(r);
            p50.push(a);
            p99.push(b);
        }
        let r = row("HTTP small page, requests/s", name, rps, "req/s", true);
        progress(&format!("HTTP via {name}: {:.0} req/s", r.figure.median()));
        rows.push(r);
        rows.push(row("HTTP small page, p50", name, p50, "ms", false));
        rows.push(row("HTTP small page, p99", name, p99, "ms", false));
    }
    Ok(rows)
}

/// One wrk run: (requests/s, p50 ms, p99 ms).
fn wrk(url: &str, headers: &[String], seconds: u32) -> Result<(f64, f64, f64)> {
    let mut command = Command::new("wrk");
    command.args(["-t", "2", "-c", "16", "-d", &format!("{seconds}s"), "--latency"]);
    for header in headers {
        command.args(["-H", header]);
    }
    let out = command.arg(url).output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(!text.contains("Non-2xx"), "wrk {url}: errors: {text}");
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("wrk {url}: {text}"))?;
    let pct = |p: &str| -> Result<f64> {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(p))
            .with_context(|| format!("no {p} in {text}"))?;
        parse_wrk_time(line.split_whitespace().nth(1).unwrap_or(""))
    };
    Ok((rps, pct("50%")?, pct("99%")?))
}

/// wrk's `812.00us`, `1.23ms`, `2.00s` → milliseconds.
pub fn parse_wrk_time(text: &str) -> Result<f64> {
    let (number, scale) = if let Some(v) = text.strip_suffix("us") {
        (v, 1e-3)
    } else if let Some(v) = text.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = text.strip_suffix('s') {
        (v, 1e3)
    } else {
        anyhow::bail!("not a wrk time: {text:?}")
    };
    Ok(number.parse::<f64>()? * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_times_are_read_in_milliseconds() {
        assert_eq!(parse_wrk_time("812.00us").unwrap(), 0.812);
        assert_eq!(parse_wrk_time("1.50ms").unwrap(), 1.5);
        assert_eq!(parse_wrk_time("2.00s").unwrap(), 2000.0);
        assert!(parse_wrk_time("fast").is_err());
    }
}
