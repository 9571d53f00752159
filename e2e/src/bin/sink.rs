//! `sink PORT`: the bench's byte-counting sink for the e2e workload image
//! (busybox `head` reads in small pieces and would be the bottleneck of
//! the on-cluster bench case). Each connection sends `N\n` and N bytes;
//! the sink answers `N\n` once it has them all (bench/src/cases.rs,
//! `sink_server`, is the same on the bench's host). Built static by `make
//! static` and copied into the image by e2e/images/workload/prepare. Test
//! tooling, not product code.

use std::io::{BufRead, BufReader, Read, Write};

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(5201);
    let listener = std::net::TcpListener::bind(("0.0.0.0", port))?;
    for conn in listener.incoming().flatten() {
        std::thread::spawn(move || -> std::io::Result<()> {
            let mut reader = BufReader::with_capacity(256 * 1024, conn.try_clone()?);
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let want: u64 = line.trim().parse().unwrap_or(0);
            let got = std::io::copy(&mut reader.take(want), &mut std::io::sink())?;
            let mut conn = conn;
            writeln!(conn, "{got}")
        });
    }
    Ok(())
}
