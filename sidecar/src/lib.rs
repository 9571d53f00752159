//! Hatchway's per-pod sidecar: one binary, two roles.
//!
//! - `gateway` (the sidecar container): a TLS server with a fresh
//!   self-signed certificate that serves the router — SSH, log WebDAV,
//!   web-app proxy, port-forward, listening ports — directly and through a
//!   tunnel it dials to the router.
//! - `shim` (PID 1 of the workload container): see the `hatchway-shim`
//!   crate.

#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

/// The command line: roles and the gateway's flags and settings.
pub mod args;
/// Response bodies and small helpers.
pub mod body;
/// The TLS gateway: proof checks and routing.
pub mod gateway;
/// `/healthz`, `/readyz`, `/metrics` on a plain port.
pub mod health;
/// Connecting to a port inside the pod.
pub mod local;
/// The shared log directory, held open and read beneath its handle.
pub mod logdir;
/// Prometheus metrics.
pub mod metrics;
/// Raw TCP port-forward.
pub mod portforward;
/// Listening-port scanner.
pub mod ports;
/// Web-app HTTP proxy.
pub mod proxy;
/// Counted two-way byte relay.
pub mod relay;
/// Audit trail and reports to the router.
pub mod report;
/// Resumable sessions: shells and port-forwards that outlive their
/// connection.
pub mod resumable;
/// The SFTP server the `sftp` subsystem runs inside the workload container.
pub mod sftp;
/// Listening TCP ports asked of the kernel (netlink sock_diag).
pub mod sock_diag;
/// The SSH server.
pub mod ssh;
/// Starting the gateway from its settings; waiting for a signal.
pub mod start;
/// The gateway's self-signed certificate.
pub mod tls;
/// The tunnel dialer.
pub mod tunnel;
/// UDP port-forwards: datagrams over the upgraded stream.
pub mod udp;
/// Read-only WebDAV of the logs.
pub mod webdav;
/// Reports the workload's exit code.
pub mod workload;

pub use args::{Args, Command};

/// `tokio::spawn` in the current tracing span: a task started while a
/// request is served (a relay, an SSH channel, a forwarded connection)
/// logs with that request's id, as the request's own lines do.
pub fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(tracing::Instrument::in_current_span(future))
}
