//! What a hostile workload process tries against the sidecar's trust
//! boundary (docs/security.md), built static and shipped in the e2e
//! workload image as `/bin/attack`. Each subcommand prints one line,
//! `NAME: OUTCOME`, for the e2e test to read from the workload's log:
//!
//! - `spawn-as UID [SOCKET]`: become UID (the workload runs as root), then
//!   ask the shim's abstract spawn socket for a root session;
//! - `bind-spawn [SOCKET]`: try to take the spawn socket's name, to stand
//!   in for the shim;
//! - `agent-list [UID]`: (as UID, if given) ask the agent at
//!   `$SSH_AUTH_SOCK` for its keys (`ssh -A`; the image has no `ssh-add`).
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
        Some("agent-list") => {
            let uid: Option<u32> = args.get(1).and_then(|u| u.parse().ok());
            println!("agent-list: {}", agent_list(uid));
        }
        _ => {
            eprintln!("usage: attack spawn-as UID [SOCKET] | bind-spawn [SOCKET] | agent-list [UID]");
            std::process::exit(64);
        }
    }
}

/// The comments of the keys the agent at `$SSH_AUTH_SOCK` holds
/// (SSH2_AGENTC_REQUEST_IDENTITIES, draft-miller-ssh-agent §4.4).
fn agent_list(uid: Option<u32>) -> String {
    if let Some(uid) = uid {
        let become_uid = nix::unistd::setgid(nix::unistd::Gid::from_raw(uid))
            .and_then(|()| nix::unistd::setuid(nix::unistd::Uid::from_raw(uid)));
        if let Err(errno) = become_uid {
            return format!("cannot become uid {uid}: {errno}");
        }
    }
    let Some(path) = std::env::var_os("SSH_AUTH_SOCK") else {
        return "no SSH_AUTH_SOCK".to_owned();
    };
    let mut agent = match UnixStream::connect(&path) {
        Ok(agent) => agent,
        Err(error) => return format!("cannot connect: {error}"),
    };
    let _ = agent.set_read_timeout(Some(Duration::from_secs(10)));
    let answer = (|| -> std::io::Result<Vec<u8>> {
        agent.write_all(&[0, 0, 0, 1, 11])?;
        let mut len = [0u8; 4];
        agent.read_exact(&mut len)?;
        let mut body = vec![0u8; u32::from_be_bytes(len).min(1 << 20) as usize];
        agent.read_exact(&mut body)?;
        Ok(body)
    })();
    let body = match answer {
        Ok(body) => body,
        Err(error) => return format!("no answer: {error}"),
    };
    let mut rest = body.as_slice();
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, tail) = (rest.get(..n)?, rest.get(n..)?);
        rest = tail;
        Some(head)
    };
    let parsed = (|| -> Option<Vec<String>> {
        if take(1)? != [12] {
            return None;
        }
        let count = u32::from_be_bytes(take(4)?.try_into().ok()?);
        let mut comments = Vec::new();
        for _ in 0..count.min(64) {
            let blob = u32::from_be_bytes(take(4)?.try_into().ok()?) as usize;
            take(blob)?;
            let comment = u32::from_be_bytes(take(4)?.try_into().ok()?) as usize;
            comments.push(String::from_utf8_lossy(take(comment)?).into_owned());
        }
        Some(comments)
    })();
    match parsed {
        Some(comments) => format!("{} key(s): {}", comments.len(), comments.join(",")),
        None => "a malformed answer".to_owned(),
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
