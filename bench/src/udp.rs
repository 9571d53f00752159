//! UDP port-forwards (`kubectl hatch port-forward NAME PORT/udp`) beside
//! the direct path to the same echo server: datagrams per second with a
//! fixed number in flight, and the share lost. A closed loop: each answer
//! (or a timeout, counted lost) lets one more datagram go, so a slow path
//! shows as fewer datagrams per second, a lossy one as loss.

use std::net::{SocketAddr, UdpSocket};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::cases::{Row, progress, row};
use crate::rig::{Path, Rig};
use crate::tools::Bg;

/// Datagrams in flight.
const WINDOW: usize = 32;
/// Payload bytes per datagram.
const SIZE: usize = 64;
/// An answer later than this counts as lost.
const LOST_AFTER: Duration = Duration::from_millis(200);

/// A UDP echo server on 127.0.0.1 (a thread; it lives as long as the
/// bench): its port.
fn echo_server() -> Result<u16> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    let port = socket.local_addr()?.port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], from);
        }
    });
    Ok(port)
}

/// `port-forward PATH LISTEN:REMOTE/udp`, answered once (a datagram comes
/// back) before it is measured.
fn forward(rig: &Rig, path: Path, remote: u16) -> Result<(Bg, u16)> {
    let listen = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
    let mapping = format!("{listen}:{remote}/udp");
    let mut command = rig.hatch(path, &["port-forward", path.name(), &mapping])?;
    let bg = Bg::spawn("kubectl hatch port-forward …/udp", command.stdout(Stdio::null()))?;
    let probe = UdpSocket::bind("127.0.0.1:0")?;
    probe.set_read_timeout(Some(Duration::from_millis(200)))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 16];
    loop {
        let _ = probe.send_to(b"ready?", ("127.0.0.1", listen));
        if probe.recv_from(&mut buf).is_ok() {
            return Ok((bg, listen));
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the UDP forward on {listen} never answered"
        );
    }
}

/// Runs the closed loop against `to` for `seconds`: (answered per second,
/// lost share).
fn measure(to: SocketAddr, seconds: u32) -> Result<(f64, f64)> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.connect(to)?;
    socket.set_read_timeout(Some(LOST_AFTER))?;
    let payload = [7u8; SIZE];
    let mut buf = [0u8; 2048];
    let (mut sent, mut answered, mut lost) = (0u64, 0u64, 0u64);
    for _ in 0..WINDOW {
        socket.send(&payload)?;
        sent += 1;
    }
    let started = Instant::now();
    let length = Duration::from_secs(u64::from(seconds));
    while started.elapsed() < length {
        match socket.recv(&mut buf) {
            Ok(_) => answered += 1,
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                lost += 1;
            }
            Err(error) => return Err(error).context("receiving an answer"),
        }
        socket.send(&payload)?;
        sent += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rate = answered as f64 / elapsed;
    let loss = lost as f64 / sent.max(1) as f64;
    Ok((rate, loss))
}

/// The UDP rows: raw loopback, then Hatchway direct and through a tunnel.
pub fn udp(rig: &Rig, repeats: usize, seconds: u32) -> Result<Vec<Row>> {
    let echo = echo_server()?;
    let mut forwards = Vec::new();
    let mut paths = vec![("raw loopback".to_owned(), echo)];
    for path in [Path::Direct, Path::Tunnel] {
        let (bg, port) = forward(rig, path, echo)?;
        forwards.push(bg);
        paths.push((format!("hatchway {}", path.name()), port));
    }
    let workload = format!("UDP echo, {SIZE} B datagrams, {WINDOW} in flight");
    let mut rows = Vec::new();
    for (name, port) in paths {
        let (mut rates, mut losses) = (Vec::new(), Vec::new());
        for _ in 0..repeats {
            let (rate, loss) = measure(SocketAddr::from(([127, 0, 0, 1], port)), seconds)?;
            rates.push(rate);
            losses.push(loss * 100.0);
        }
        progress(&format!(
            "{workload} via {name}: {:.0} datagrams/s, {:.2}% lost",
            rates.iter().sum::<f64>() / rates.len() as f64,
            losses.iter().sum::<f64>() / losses.len() as f64
        ));
        rows.push(row(
            &format!("{workload}, rate"),
            &name,
            rates,
            "datagrams/s",
            true,
        ));
        rows.push(row(&format!("{workload}, loss"), &name, losses, "%", false));
    }
    Ok(rows)
}
