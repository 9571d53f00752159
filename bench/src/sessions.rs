//! Resumable sessions (docs/sessions.md): what they cost and how fast
//! they come back. Time from a router stopping (its relays cut, as a
//! replica's exit cuts them) to bytes flowing again through a held
//! `kubectl hatch port-forward` connection, and the sidecar's memory per
//! detached session. The framing's cost on bulk transfers is a path of
//! the bulk case (`hatchway direct, not resumable`).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use crate::cases::{Row, progress, row};
use crate::rig::{NS, Path, Rig, TOKEN};
use crate::support::{self, api_path, line_echo_server, upgrade_request};

/// `kills` times: a line echoed through a held port-forward connection,
/// the direct router stopped and started again on its port, and the time
/// until the next line is echoed.
pub fn time_to_resume(rig: &mut Rig, runtime: &tokio::runtime::Runtime, kills: usize) -> Result<Vec<Row>> {
    let echo = runtime.block_on(line_echo_server());
    let local = crate::tools::free_port()?;
    let _forward = rig.port_forward(Path::Direct, local, echo)?;
    let conn = TcpStream::connect(("127.0.0.1", local))?;
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut writer = conn.try_clone()?;
    let mut reader = BufReader::new(conn);
    let mut echo_line = |i: usize| -> Result<()> {
        writeln!(writer, "line {i}")?;
        let mut back = String::new();
        reader.read_line(&mut back)?;
        ensure!(back == format!("line {i}\n"), "echo {i}: {back:?}");
        Ok(())
    };
    let mut samples = Vec::new();
    for i in 0..kills {
        echo_line(2 * i)?;
        let stopped = Instant::now();
        runtime.block_on(rig.direct.restart());
        echo_line(2 * i + 1)?;
        samples.push(stopped.elapsed().as_secs_f64());
    }
    let figure = row(
        "held port-forward connection: router stopped to bytes flowing again, s",
        "hatchway direct",
        samples,
        "s",
        false,
    );
    progress(&format!(
        "time to resume: p50 {:.3} s, max {:.3} s over {kills} router restarts",
        figure.figure.median(),
        figure.figure.max()
    ));
    Ok(vec![figure])
}

/// `count` resumable port-forward sessions opened to the direct sidecar,
/// their connections then dropped: the process's resident memory per
/// detached session (the sidecar runs in this process; the bench's
/// routers hold nothing once the connections are gone).
pub fn memory_per_detached_session(
    rig: &Rig,
    runtime: &tokio::runtime::Runtime,
    count: usize,
) -> Result<Vec<Row>> {
    let metrics = rig.direct_sidecar.running.gateway.metrics.clone();
    let detached = || metrics.resumable_detached.get() as usize;
    let before_detached = detached();
    let echo = runtime.block_on(line_echo_server());
    let path = api_path(NS, Path::Direct.name(), &format!("portforward?port={echo}"));
    let rss_before = support::rss(std::process::id())?;
    runtime.block_on(async {
        let mut held = Vec::new();
        for _ in 0..count {
            let mut client = rig.direct.client().await;
            let mut request = upgrade_request(&path, Some(TOKEN), "tcp");
            request.headers_mut().insert(
                hatchway_api::wire::resumable::REQUEST,
                http::HeaderValue::from_static("1"),
            );
            let response = client.send(request).await;
            ensure!(
                response.headers().contains_key(hatchway_api::wire::resumable::ID),
                "the session is not resumable: {:?}",
                response.headers()
            );
            held.push((client, hyper::upgrade::on(response).await?));
        }
        drop(held);
        anyhow::Ok(())
    })?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while detached() < before_detached + count {
        ensure!(
            Instant::now() < deadline,
            "{} of {count} sessions detached",
            detached() - before_detached
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let rss_after = support::rss(std::process::id()).context("RSS")?;
    let kib = rss_after.saturating_sub(rss_before) as f64 / 1024.0 / count as f64;
    progress(&format!(
        "sidecar memory per detached session: {kib:.1} KiB ({count} sessions)"
    ));
    Ok(vec![row(
        &format!("sidecar memory per detached session ({count} port-forwards), KiB"),
        "hatchway",
        vec![kib],
        "KiB",
        false,
    )])
}
