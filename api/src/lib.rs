//! The contract between Hatchway's parts.
//!
//! Everything that two parts must agree on byte for byte lives here, with as
//! few dependencies as possible (no Kubernetes client, no async runtime):
//! the operator, the router, the sidecar and the CLI all build on it.

#![deny(rust_2018_idioms)]
#![forbid(unsafe_code)]

/// Yamux frames written in one piece (a header joined to its body).
pub mod coalesce;
/// The tunnel's control messages (sidecar -> router reports), versioned and
/// size-limited.
pub mod control;
/// Copying both ways with buffers that grow on demand (relays).
pub mod copy;
/// The `Container` custom resource: spec, status and the generated CRD.
pub mod crd;
/// UDP datagrams over a port-forward's stream, length-prefixed.
pub mod datagrams;
/// TCP connections to a router behind a Service: refused or unanswered
/// attempts give way to new ones.
pub mod dial;
/// Length-prefixed frames: a half-close through proxies that drop one.
pub mod frames;
/// What a hop does to HTTP headers: hop-by-hop and `X-Hatchway-*`
/// stripped, upgrades recognised.
pub mod headers;
/// Idle connections kept between requests (router to gateways, sidecar to
/// web apps).
pub mod kept;
/// The pod contract: names, ports, paths, environment, Secret keys, the
/// sidecar's command lines, log file names, the `/readyz` answer.
pub mod pod;
/// Which ports of a Container may be forwarded, and why: the rule the
/// operator decides and the gateway enforces.
pub mod ports;
/// Router <-> gateway proofs: `ctr_key`, `request_auth`, `respond_auth`.
pub mod proof;
/// Reading a socket in large gulps for TLS (rustls reads 4 KiB at a time).
pub mod readahead;
/// Resumable streams: frames with offsets and acks, replay buffers.
pub mod resume;
/// Who writes which part of a Container's status (field managers), the
/// partial statuses they apply, tunnel addresses.
pub mod status;
/// TLS helpers both ends share: the crypto provider and the router's
/// verifier for self-signed gateway certificates.
pub mod tls;
/// Sidecar -> router tunnel proof bound to the TLS session (RFC 5705).
pub mod tunnel;
/// Web apps' URLs and host names (`{uid}-{port}.{domain}`).
pub mod webapp;
/// Read-only WebDAV of a flat log tree: paths, ranges, PROPFIND answers.
pub mod webdav;
/// Header names, upgrade protocols, query parameters and URL paths.
pub mod wire;

pub use crd::{Container, ContainerSpec, ContainerStatus};
