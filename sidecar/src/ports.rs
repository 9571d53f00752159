//! Listening TCP ports: asked of the kernel ([`crate::sock_diag`]), or
//! where that is refused, scanned from `/proc/net/tcp` and
//! `/proc/net/tcp6`. The pod shares one network namespace, so the sidecar
//! sees the workload's listeners.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::report::Reporter;

/// The socket state `LISTEN` in `/proc/net/tcp`.
const TCP_LISTEN: &str = "0A";

/// Parses one `/proc/net/tcp{,6}` table into the ports in `LISTEN` state.
pub fn parse_listening(table: &str) -> BTreeSet<u16> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            let state = fields.nth(1)?;
            if state != TCP_LISTEN {
                return None;
            }
            let port = local.rsplit_once(':')?.1;
            u16::from_str_radix(port, 16).ok()
        })
        .collect()
}

/// Where the tables are (a test points this at fixtures).
#[derive(Clone, Debug)]
pub struct Scanner {
    /// `/proc/net/tcp` and `/proc/net/tcp6` in production.
    pub tables: Vec<PathBuf>,
    /// Ports never reported: the sidecar's own listeners.
    pub exclude: BTreeSet<u16>,
    /// Ask the kernel first (the tables only when it refuses).
    pub ask_kernel: bool,
}

impl Scanner {
    /// Scans the real tables.
    pub fn proc(exclude: impl IntoIterator<Item = u16>) -> Self {
        Self {
            tables: vec![
                Path::new("/proc/net/tcp").into(),
                Path::new("/proc/net/tcp6").into(),
            ],
            exclude: exclude.into_iter().collect(),
            ask_kernel: true,
        }
    }

    /// The listening ports now, sorted. A missing table (no IPv6) is empty.
    pub fn scan(&self) -> Vec<u16> {
        let asked = self.ask_kernel.then(crate::sock_diag::listening);
        let mut ports = match asked {
            Some(Ok(ports)) => ports,
            refused => {
                if let Some(Err(error)) = refused {
                    tracing::debug!(%error, "reading the listening ports from /proc instead");
                }
                self.read_tables()
            }
        };
        ports.retain(|p| !self.exclude.contains(p));
        ports.into_iter().collect()
    }

    fn read_tables(&self) -> BTreeSet<u16> {
        let mut ports = BTreeSet::new();
        for table in &self.tables {
            if let Ok(text) = std::fs::read_to_string(table) {
                ports.extend(parse_listening(&text));
            }
        }
        ports
    }

    /// Scans every `interval` forever, reporting changes.
    pub async fn run(self, reporter: Arc<Reporter>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let scanner = self.clone();
            if let Ok(ports) = tokio::task::spawn_blocking(move || scanner.scan()).await {
                reporter.set_ports(ports);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str =
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0100007F:A1B2 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:22B8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0
";

    #[test]
    fn only_listening_sockets_count() {
        assert_eq!(
            parse_listening(TCP).into_iter().collect::<Vec<_>>(),
            vec![3306, 8080]
        );
        assert_eq!(parse_listening(TCP6).into_iter().collect::<Vec<_>>(), vec![8888]);
        assert!(parse_listening("header only\n").is_empty());
    }

    #[test]
    fn tables_merge_and_own_ports_are_excluded() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tcp"), TCP).unwrap();
        std::fs::write(dir.path().join("tcp6"), TCP6).unwrap();
        let scanner = Scanner {
            tables: vec![
                dir.path().join("tcp"),
                dir.path().join("tcp6"),
                dir.path().join("missing"),
            ],
            exclude: [3306].into(),
            ask_kernel: false,
        };
        assert_eq!(scanner.scan(), vec![8080, 8888]);
    }

    #[test]
    fn a_real_listener_is_seen() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(Scanner::proc([]).scan().contains(&port));
        let tables_only = Scanner {
            ask_kernel: false,
            ..Scanner::proc([])
        };
        assert!(tables_only.scan().contains(&port));
        assert!(!Scanner::proc([port]).scan().contains(&port));
        drop(listener);
    }
}
