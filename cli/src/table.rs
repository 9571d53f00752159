//! `get`'s table: NAME, PHASE, GATEWAY, PORTS, SESSION. PORTS lists the
//! published ports with their access (`8080/private`), then the other
//! ports the sidecar saw listening.

use hatchway_api::crd::ContainerStatus;

/// One row's cells for a Container named `name` with `status`.
pub fn row(name: &str, status: Option<&ContainerStatus>) -> [String; 5] {
    let none = || "<none>".to_owned();
    let phase = status
        .and_then(|s| s.phase)
        .map(|p| format!("{p:?}"))
        .unwrap_or_else(|| "Pending".to_owned());
    let gateway = status
        .and_then(|s| s.gateway.as_ref())
        .and_then(|g| {
            if !g.address.is_empty() {
                Some(g.address.clone())
            } else {
                g.tunnel.clone()
            }
        })
        .unwrap_or_else(none);
    let ports = status
        .map(|s| {
            let published = s.published_ports.iter().map(|p| {
                let access = serde_json::to_value(p.access).ok();
                format!(
                    "{}/{}",
                    p.port,
                    access.as_ref().and_then(|a| a.as_str()).unwrap_or("?")
                )
            });
            let listening = s
                .listening_ports
                .iter()
                .filter(|l| !s.published_ports.iter().any(|p| p.port == l.port))
                .map(|l| l.port.to_string());
            published.chain(listening).collect::<Vec<_>>().join(",")
        })
        .filter(|p| !p.is_empty())
        .unwrap_or_else(none);
    let session = if status.is_some_and(|s| s.interactive_session_started) {
        "started"
    } else {
        "none"
    };
    [name.to_owned(), phase, gateway, ports, session.to_owned()]
}

/// The rows under a header, columns padded to their widest cell.
pub fn format(rows: &[[String; 5]]) -> String {
    let header = ["NAME", "PHASE", "GATEWAY", "PORTS", "SESSION"].map(str::to_owned);
    let all: Vec<&[String; 5]> = std::iter::once(&header).chain(rows).collect();
    let mut widths = [0; 5];
    for row in &all {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in all {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 < row.len() {
                line.push_str(&format!("{cell:<width$}   ", width = widths[i]));
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hatchway_api::crd::{GatewayStatus, ListeningPort, Phase, PortAccess, PublishedPortStatus};

    #[test]
    fn rows_show_phase_gateway_ports_and_session() {
        let running = ContainerStatus {
            phase: Some(Phase::Running),
            gateway: Some(GatewayStatus {
                address: "10.244.0.7:7443".into(),
                ..GatewayStatus::default()
            }),
            listening_ports: vec![
                ListeningPort {
                    port: 8080,
                    protocol: "TCP".into(),
                },
                ListeningPort {
                    port: 22,
                    protocol: "TCP".into(),
                },
            ],
            published_ports: vec![PublishedPortStatus {
                port: 8080,
                access: PortAccess::Public,
                label: None,
                url: "https://u-8080.apps.example/".into(),
            }],
            interactive_session_started: true,
            ..ContainerStatus::default()
        };
        let tunnelled = ContainerStatus {
            phase: Some(Phase::Running),
            gateway: Some(GatewayStatus {
                tunnel: Some("tunnel https://10.0.0.2:8443".into()),
                ..GatewayStatus::default()
            }),
            ..ContainerStatus::default()
        };
        let table = format(&[
            row("web-1", Some(&running)),
            row("job", Some(&tunnelled)),
            row("new", None),
        ]);
        assert_eq!(
            table,
            "NAME    PHASE     GATEWAY                        PORTS            SESSION\n\
             web-1   Running   10.244.0.7:7443                8080/public,22   started\n\
             job     Running   tunnel https://10.0.0.2:8443   <none>           none\n\
             new     Pending   <none>                         <none>           none\n"
        );
    }
}
