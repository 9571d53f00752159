//! `port-forward NAME PORT/udp`: a local UDP socket whose datagrams go to
//! the Container's port. Each local client address is one flow: its own
//! `POST …/portforward?port=PORT` with `Upgrade: hatchway-udp`, datagrams
//! length-prefixed both ways ([`hatchway_api::datagrams`]), answers sent
//! back to that client. A flow quiet for [`IDLE`] ends; the client's next
//! datagram opens another. Flows are not resumable: a datagram in flight
//! when the router restarts is lost, as UDP may lose it anyway.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hatchway_api::{datagrams, wire};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::router::{Endpoint, RouterError};

/// A flow with no datagram either way this long ends.
pub const IDLE: Duration = Duration::from_secs(60);
/// Datagrams queued for one flow while it connects; more are dropped (one
/// slow flow never holds up the others).
const QUEUE: usize = 256;

type Flows = Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>>;

/// Serves the local `socket` until the process ends; a refusal that cannot
/// change goes to `fatal` (the forward ends with exit 2).
pub async fn serve(
    endpoint: Endpoint,
    path: String,
    socket: UdpSocket,
    remote: u16,
    fatal: mpsc::Sender<RouterError>,
) {
    let socket = Arc::new(socket);
    let table: Flows = Arc::default();
    let mut buf = vec![0u8; datagrams::MAX_DATAGRAM];
    loop {
        let (n, client) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            // ICMP errors of earlier sends and the like: go on.
            Err(_) => continue,
        };
        let sender = {
            let mut flows = table.lock().expect("the flow table is never poisoned");
            match flows.get(&client) {
                Some(sender) if !sender.is_closed() => sender.clone(),
                _ => {
                    let (sender, datagrams) = mpsc::channel(QUEUE);
                    flows.insert(client, sender.clone());
                    let one = Flow {
                        endpoint: endpoint.clone(),
                        path: path.clone(),
                        socket: socket.clone(),
                        client,
                        remote,
                        flows: table.clone(),
                        fatal: fatal.clone(),
                    };
                    tokio::spawn(flow(one, datagrams));
                    sender
                }
            }
        };
        let _ = sender.try_send(buf[..n].to_vec());
    }
}

/// One client address's flow.
struct Flow {
    endpoint: Endpoint,
    path: String,
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    remote: u16,
    flows: Flows,
    fatal: mpsc::Sender<RouterError>,
}

async fn flow(flow: Flow, mut datagrams_in: mpsc::Receiver<Vec<u8>>) {
    let upgraded = match flow.endpoint.upgrade(&flow.path, wire::UPGRADE_UDP, &[]).await {
        Ok(upgraded) => Some(upgraded),
        Err(error) if error.exit_code() == 2 => {
            // Will not change by retrying: end the whole forward.
            let _ = flow.fatal.try_send(error);
            None
        }
        Err(error) => {
            eprintln!("kubectl-hatch: port {}/udp: {error}", flow.remote);
            None
        }
    };
    if let Some(upgraded) = upgraded {
        relay(&flow, upgraded.io, &mut datagrams_in).await;
    }
    // Ours until now: a new flow for this client is made only once this
    // one's queue is closed, which is when this returns.
    flow.flows
        .lock()
        .expect("the flow table is never poisoned")
        .remove(&flow.client);
}

/// Datagrams both ways until either side ends or [`IDLE`] passes quietly.
/// The client's datagrams that are waiting go to the pod in one write;
/// the pod's that arrived together go back one after another.
async fn relay<S>(flow: &Flow, stream: S, datagrams_in: &mut mpsc::Receiver<Vec<u8>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    use tokio::io::AsyncWriteExt;
    let (from_pod, mut to_pod) = tokio::io::split(stream);
    let mut from_pod = datagrams::Reader::new(from_pod);
    let mut batch = Vec::with_capacity(datagrams::BATCH + 2 + datagrams::MAX_DATAGRAM);
    let mut quiet = datagrams::Quiet::new(IDLE);
    loop {
        tokio::select! {
            datagram = datagrams_in.recv() => {
                let Some(mut datagram) = datagram else { return };
                loop {
                    if datagrams::encode(&mut batch, &datagram).is_err() {
                        return;
                    }
                    if batch.len() >= datagrams::BATCH {
                        break;
                    }
                    match datagrams_in.try_recv() {
                        Ok(waiting) => datagram = waiting,
                        Err(_) => break,
                    }
                }
                if to_pod.write_all(&batch).await.is_err() || to_pod.flush().await.is_err() {
                    return;
                }
                batch.clear();
                quiet.heard();
            }
            answer = from_pod.next() => {
                let mut next = match answer {
                    Ok(Some(answer)) => Some(answer),
                    Ok(None) | Err(_) => return,
                };
                while let Some(answer) = next {
                    let _ = flow.socket.send_to(&answer, flow.client).await;
                    next = match from_pod.buffered() {
                        Ok(next) => next,
                        Err(_) => return,
                    };
                }
                quiet.heard();
            }
            () = quiet.expired() => return,
        }
    }
}
