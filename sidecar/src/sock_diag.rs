//! The listening TCP ports of this network namespace, asked of the kernel
//! over `NETLINK_SOCK_DIAG` (what `ss -ltn` does).
//!
//! Why not `/proc/net/tcp`: reading it walks the kernel's whole
//! established-connection table (one table for every namespace on the
//! node) and formats every socket of ours as text, so its cost grows with
//! the node's connections: 46,783 sockets in `TIME_WAIT` made one read
//! take 59 ms of system time, every scan interval, in every sidecar. A
//! dump that asks only for `LISTEN` walks the listening table alone.
//!
//! The messages are the kernel's fixed layouts (`linux/netlink.h`,
//! `linux/inet_diag.h`), written and read field by field; no `unsafe`.

use std::collections::BTreeSet;
use std::io::Read;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

const AF_NETLINK: i32 = 16;
const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IPPROTO_TCP: u8 = 6;
const TCP_LISTEN: u32 = 10;
/// `struct nlmsghdr`.
const HEADER_LEN: usize = 16;
/// `struct inet_diag_req_v2` (family, protocol, ext, pad, states, and a
/// 48-byte `inet_diag_sockid` left zero: no filter on addresses).
const REQUEST_LEN: usize = 56;
/// Where `inet_diag_msg` keeps the source port (big-endian): after
/// family, state, timer and retrans.
const SPORT_AT: usize = 4;
/// A dump that does not answer within this is an error (the caller falls
/// back to `/proc`), not a scanner stuck for good.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the kernel could not be asked (the caller reads `/proc` instead).
#[derive(Debug, thiserror::Error)]
pub enum DiagError {
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("the kernel refused the dump: errno {0}")]
    Refused(i32),
    #[error("a malformed netlink message ({0})")]
    Malformed(&'static str),
}

/// The ports of TCP sockets in `LISTEN`, IPv4 and IPv6.
pub fn listening() -> Result<BTreeSet<u16>, DiagError> {
    let socket = Socket::new(
        Domain::from(AF_NETLINK),
        Type::DGRAM,
        Some(Protocol::from(NETLINK_SOCK_DIAG)),
    )?;
    socket.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut ports = BTreeSet::new();
    for (seq, family) in [(1, AF_INET), (2, AF_INET6)] {
        // No address given: a netlink message goes to the kernel.
        socket.send(&request(family, seq))?;
        read_dump(&socket, seq, &mut ports)?;
    }
    Ok(ports)
}

/// A dump request for one address family's listening TCP sockets.
fn request(family: u8, seq: u32) -> Vec<u8> {
    let mut message = Vec::with_capacity(HEADER_LEN + REQUEST_LEN);
    message.extend_from_slice(&((HEADER_LEN + REQUEST_LEN) as u32).to_ne_bytes());
    message.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    message.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    message.extend_from_slice(&seq.to_ne_bytes());
    message.extend_from_slice(&0u32.to_ne_bytes());
    message.extend_from_slice(&[family, IPPROTO_TCP, 0, 0]);
    message.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    message.resize(HEADER_LEN + REQUEST_LEN, 0);
    message
}

/// Reads datagrams until the dump's `NLMSG_DONE`.
fn read_dump(mut socket: &Socket, seq: u32, ports: &mut BTreeSet<u16>) -> Result<(), DiagError> {
    let mut buffer = vec![0u8; 32 * 1024];
    loop {
        let n = socket.read(&mut buffer)?;
        if parse(&buffer[..n], seq, ports)? {
            return Ok(());
        }
    }
}

/// Takes the ports out of one datagram of the dump; true once it ends.
fn parse(mut datagram: &[u8], seq: u32, ports: &mut BTreeSet<u16>) -> Result<bool, DiagError> {
    while datagram.len() >= HEADER_LEN {
        let field = |at: usize| u32::from_ne_bytes(datagram[at..at + 4].try_into().expect("4 bytes"));
        let len = field(0) as usize;
        let kind = u16::from_ne_bytes([datagram[4], datagram[5]]);
        if len < HEADER_LEN || len > datagram.len() {
            return Err(DiagError::Malformed("length"));
        }
        let payload = &datagram[HEADER_LEN..len];
        if field(8) == seq {
            match kind {
                NLMSG_DONE => return Ok(true),
                NLMSG_ERROR => {
                    let errno = payload
                        .get(..4)
                        .map(|b| i32::from_ne_bytes(b.try_into().expect("4 bytes")))
                        .ok_or(DiagError::Malformed("error"))?;
                    return Err(DiagError::Refused(-errno));
                }
                SOCK_DIAG_BY_FAMILY => {
                    let port = payload
                        .get(SPORT_AT..SPORT_AT + 2)
                        .ok_or(DiagError::Malformed("inet_diag_msg"))?;
                    ports.insert(u16::from_be_bytes([port[0], port[1]]));
                }
                _ => {}
            }
        }
        // Messages are aligned to 4 bytes.
        datagram = datagram.get(len.next_multiple_of(4)..).unwrap_or_default();
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_are_found_and_connections_are_not() {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let v4_port = v4.local_addr().unwrap().port();
        // A connected socket's own port is not a listener.
        let client = std::net::TcpStream::connect(v4.local_addr().unwrap()).unwrap();
        let client_port = client.local_addr().unwrap().port();
        let ports = listening().unwrap();
        assert!(ports.contains(&v4_port), "{v4_port} not in {ports:?}");
        assert!(!ports.contains(&client_port));
        if let Ok(v6) = std::net::TcpListener::bind("[::1]:0") {
            let v6_port = v6.local_addr().unwrap().port();
            assert!(listening().unwrap().contains(&v6_port));
        }
        drop(v4);
        assert!(!listening().unwrap().contains(&v4_port));
    }

    /// Two answers in one datagram, the second padded; then the end.
    #[test]
    fn a_dump_parses_to_its_ports() {
        let message = |kind: u16, seq: u32, payload: &[u8]| {
            let mut m = Vec::new();
            m.extend_from_slice(&((HEADER_LEN + payload.len()) as u32).to_ne_bytes());
            m.extend_from_slice(&kind.to_ne_bytes());
            m.extend_from_slice(&[0, 0]);
            m.extend_from_slice(&seq.to_ne_bytes());
            m.extend_from_slice(&0u32.to_ne_bytes());
            m.extend_from_slice(payload);
            m.resize(m.len().next_multiple_of(4), 0);
            m
        };
        let socket = |port: u16| {
            let mut p = vec![AF_INET, TCP_LISTEN as u8, 0, 0];
            p.extend_from_slice(&port.to_be_bytes());
            p.resize(70, 0);
            p
        };
        let mut datagram = message(SOCK_DIAG_BY_FAMILY, 7, &socket(8080));
        datagram.extend(message(SOCK_DIAG_BY_FAMILY, 7, &socket(22)));
        // Another dump's answer is not ours.
        datagram.extend(message(SOCK_DIAG_BY_FAMILY, 8, &socket(9999)));
        let mut ports = BTreeSet::new();
        assert!(!parse(&datagram, 7, &mut ports).unwrap());
        assert_eq!(ports.into_iter().collect::<Vec<_>>(), vec![22, 8080]);

        let mut ports = BTreeSet::new();
        assert!(parse(&message(NLMSG_DONE, 7, &[0; 4]), 7, &mut ports).unwrap());
        let refused = parse(&message(NLMSG_ERROR, 7, &(-13i32).to_ne_bytes()), 7, &mut ports);
        assert!(matches!(refused, Err(DiagError::Refused(13))));
        let mut short = message(SOCK_DIAG_BY_FAMILY, 7, &socket(1));
        short[0] = 200;
        assert!(matches!(
            parse(&short, 7, &mut ports),
            Err(DiagError::Malformed("length"))
        ));
    }
}
