//! Resumable sessions (docs/sessions.md): how fast they come back — the
//! time from a router stopping (its relays cut, as a replica's exit cuts
//! them) to bytes flowing again through a held `kubectl hatch
//! port-forward` connection. The framing's cost on bulk transfers is a
//! path of the bulk case (`hatchway direct, not resumable`); the
//! sidecar's memory per detached session is measured with the tunnels
//! (its own process).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};

use crate::cases::{Row, progress, row};
use crate::rig::{Path, Rig};
use crate::support::line_echo_server;

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
