//! `udp-echo PORT`: a UDP echo server for the e2e workload image (its
//! busybox `nc` has no UDP). Each datagram goes back to its sender as is.
//! Built static by `make static` and copied into the image by
//! e2e/images/workload/prepare. Test tooling, not product code.

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(5353);
    let socket = std::net::UdpSocket::bind(("0.0.0.0", port))?;
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, from) = socket.recv_from(&mut buf)?;
        socket.send_to(&buf[..n], from)?;
    }
}
