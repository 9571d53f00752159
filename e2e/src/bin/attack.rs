//! What a hostile workload process tries against the sidecar's trust
//! boundary (docs/security.md), built static and shipped in the e2e
//! workload image as `/bin/attack`. Each subcommand prints one line,
//! `NAME: OUTCOME`, for the e2e test to read from the workload's log:
//!
//! - `spawn-as UID [SOCKET]`: become UID (the workload runs as root), then
//!   ask the shim's abstract spawn socket for a root session;
//! - `bind-spawn [SOCKET]`: try to take the spawn socket's name, to stand
//!   in for the shim.
//!
//! The file-system attacks (symlinks, FIFOs, renames, overwriting the
//! shim's binary) are plain shell commands in the test's workload script.

use std::io::{Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::time::Duration;

const DEFAULT_SOCKET: &str = "hatchway/spawn";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let socket = |i: usize| args.get(i).map_or(DEFAULT_SOCKET, String::as_str).to_owned();
    match args.first().map(String::as_str) {
        Some("spawn-as") => {
            let uid: u32 = args.get(1).and_then(|u| u.parse().ok()).unwrap_or(65532);
            println!("spawn-as {uid}: {}", spawn_as(uid, &socket(2)));
        }
        Some("bind-spawn") => println!("bind-spawn: {}", bind(&socket(1))),
        _ => {
            eprintln!("usage: attack spawn-as UID [SOCKET] | bind-spawn [SOCKET]");
            std::process::exit(64);
        }
    }
}

fn spawn_as(uid: u32, socket: &str) -> String {
    if uid != 0 {
        let become_uid = nix::unistd::setgid(nix::unistd::Gid::from_raw(uid))
            .and_then(|()| nix::unistd::setuid(nix::unistd::Uid::from_raw(uid)));
        if let Err(errno) = become_uid {
            return format!("cannot become uid {uid}: {errno}");
        }
    }
    match ask_for_root_shell(socket) {
        Ok(answer) => answer,
        Err(error) => format!("failed: {error}"),
    }
}

/// One spawn request for a root `id -u`, as the gateway would send it;
/// the shim's first answer, summarized.
fn ask_for_root_shell(socket: &str) -> std::io::Result<String> {
    let addr = SocketAddr::from_abstract_name(socket.as_bytes())?;
    let mut stream = UnixStream::connect_addr(&addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let request = br#"{"type":"spawn","argv":["id","-u"],"user":"root"}"#;
    // The shim may refuse before reading: a failed write is not the answer.
    let _ = stream
        .write_all(&(request.len() as u32).to_be_bytes())
        .and_then(|()| stream.write_all(request));
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let mut body = vec![0u8; (u32::from_be_bytes(len) as usize).min(64 * 1024)];
    stream.read_exact(&mut body)?;
    let answer: serde_json::Value = serde_json::from_slice(&body).map_err(std::io::Error::other)?;
    Ok(match answer["type"].as_str() {
        Some("error") => format!("refused: {}", answer["message"].as_str().unwrap_or_default()),
        Some(kind) => format!("ACCEPTED ({kind})"),
        None => format!("unexpected answer {answer}"),
    })
}

fn bind(socket: &str) -> String {
    let listener =
        SocketAddr::from_abstract_name(socket.as_bytes()).and_then(|a| UnixListener::bind_addr(&a));
    match listener {
        Ok(_) => "BOUND (the name was free)".to_owned(),
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {
            "refused: the name is taken".to_owned()
        }
        Err(error) => format!("failed: {error}"),
    }
}
