//! `get`'s output: a table like kubectl's (NAME, PHASE, GATEWAY, PORTS,
//! SESSION, AGE; NAMESPACE first with `-A`; EXIT and POD with `-o wide`),
//! or the objects as JSON or YAML, or `container.hatchway.dev/NAME`.
//! PORTS lists the published ports with their access (`8080/private`),
//! then the other ports the sidecar saw listening.

use hatchway_api::crd::{Container, ContainerStatus};

/// `-o`: how `get` prints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// The table.
    #[default]
    Table,
    /// The table with more columns.
    Wide,
    /// The objects (a `List` for more than one name).
    Json,
    /// The same in YAML.
    Yaml,
    /// `container.hatchway.dev/NAME`, one per line.
    Name,
}

/// Which columns the table has.
#[derive(Debug, Clone, Copy, Default)]
pub struct Columns {
    /// NAMESPACE first (`-A`).
    pub namespace: bool,
    /// EXIT and POD too (`-o wide`).
    pub wide: bool,
}

/// The header of a table with `columns`.
pub fn header(columns: Columns) -> Vec<String> {
    let mut header = Vec::new();
    if columns.namespace {
        header.push("NAMESPACE");
    }
    header.extend(["NAME", "PHASE", "GATEWAY", "PORTS", "SESSION", "AGE"]);
    if columns.wide {
        header.extend(["EXIT", "POD"]);
    }
    header.into_iter().map(str::to_owned).collect()
}

/// One row's cells for `container`, its age as of `now`.
pub fn row(container: &Container, columns: Columns, now: jiff::Timestamp) -> Vec<String> {
    let status = container.status.as_ref();
    let mut row = Vec::new();
    if columns.namespace {
        row.push(container.metadata.namespace.clone().unwrap_or_default());
    }
    row.extend(cells(
        container.metadata.name.as_deref().unwrap_or_default(),
        status,
    ));
    row.push(
        container
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or_else(|| "<unknown>".to_owned(), |t| age(now.duration_since(t.0))),
    );
    if columns.wide {
        let none = || "<none>".to_owned();
        row.push(
            status
                .and_then(|s| s.exit_code)
                .map_or_else(none, |c| c.to_string()),
        );
        row.push(status.and_then(|s| s.pod_name.clone()).unwrap_or_else(none));
    }
    row
}

/// NAME, PHASE, GATEWAY, PORTS, SESSION of a Container named `name`.
fn cells(name: &str, status: Option<&ContainerStatus>) -> [String; 5] {
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

/// An age as kubectl prints it: `45s`, `5m12s`, `42m`, `5h3m`, `30h`,
/// `3d4h`, `40d`, `2y`.
pub fn age(elapsed: jiff::SignedDuration) -> String {
    let seconds = elapsed.as_secs();
    if seconds < 0 {
        return "0s".to_owned();
    }
    let (minutes, hours, days) = (seconds / 60, seconds / 3600, seconds / 86_400);
    match () {
        _ if seconds < 120 => format!("{seconds}s"),
        _ if minutes < 10 && seconds % 60 != 0 => format!("{minutes}m{}s", seconds % 60),
        _ if minutes < 180 => format!("{minutes}m"),
        _ if hours < 8 && minutes % 60 != 0 => format!("{hours}h{}m", minutes % 60),
        _ if hours < 48 => format!("{hours}h"),
        _ if hours < 192 && hours % 24 != 0 => format!("{days}d{}h", hours % 24),
        _ if days < 365 * 2 => format!("{days}d"),
        _ => format!("{}y", days / 365),
    }
}

/// `rows` under `header`, columns padded to their widest cell.
pub fn format(header: &[String], rows: &[Vec<String>]) -> String {
    let all: Vec<&[String]> = std::iter::once(header)
        .chain(rows.iter().map(Vec::as_slice))
        .collect();
    format_lines(&all, &widths(&all))
}

/// Column widths of `rows`.
pub fn widths(rows: &[&[String]]) -> Vec<usize> {
    let mut widths = vec![0; rows.iter().map(|r| r.len()).max().unwrap_or(0)];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    widths
}

/// `rows` padded to `widths` (a watch keeps the first widths).
pub fn format_lines(rows: &[&[String]], widths: &[usize]) -> String {
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 < row.len() {
                let width = widths.get(i).copied().unwrap_or(0);
                line.push_str(&format!("{cell:<width$}   "));
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
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn container(name: &str, status: Option<ContainerStatus>, created: jiff::Timestamp) -> Container {
        let mut c = Container::new(name, Default::default());
        c.metadata.namespace = Some("team-a".into());
        c.metadata.creation_timestamp = Some(Time(created));
        c.status = status;
        c
    }

    #[test]
    fn rows_show_phase_gateway_ports_session_and_age() {
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
            pod_name: Some("web-1-hatchway".into()),
            ..ContainerStatus::default()
        };
        let tunnelled = ContainerStatus {
            phase: Some(Phase::Complete),
            exit_code: Some(0),
            gateway: Some(GatewayStatus {
                tunnel: Some("tunnel https://10.0.0.2:8443".into()),
                ..GatewayStatus::default()
            }),
            ..ContainerStatus::default()
        };
        let now: jiff::Timestamp = "2026-12-03T12:00:00Z".parse().unwrap();
        let ago = |s: i64| now - jiff::SignedDuration::from_secs(s);
        let containers = [
            container("web-1", Some(running), ago(90)),
            container("job", Some(tunnelled), ago(3 * 86_400 + 4 * 3600)),
            container("new", None, ago(0)),
        ];
        let columns = Columns::default();
        let rows: Vec<_> = containers.iter().map(|c| row(c, columns, now)).collect();
        assert_eq!(
            format(&header(columns), &rows),
            "NAME    PHASE      GATEWAY                        PORTS            SESSION   AGE\n\
             web-1   Running    10.244.0.7:7443                8080/public,22   started   90s\n\
             job     Complete   tunnel https://10.0.0.2:8443   <none>           none      3d4h\n\
             new     Pending    <none>                         <none>           none      0s\n"
        );
        let columns = Columns {
            namespace: true,
            wide: true,
        };
        let rows: Vec<_> = containers.iter().map(|c| row(c, columns, now)).collect();
        let table = format(&header(columns), &rows);
        let first: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(
            first,
            [
                "NAMESPACE",
                "NAME",
                "PHASE",
                "GATEWAY",
                "PORTS",
                "SESSION",
                "AGE",
                "EXIT",
                "POD"
            ]
        );
        assert!(
            table.lines().nth(1).unwrap().starts_with("team-a      web-1"),
            "{table}"
        );
        assert!(
            table.lines().nth(1).unwrap().ends_with("<none>   web-1-hatchway"),
            "{table}"
        );
        assert!(table.lines().nth(2).unwrap().contains("3d4h   0"), "{table}");
    }

    #[test]
    fn ages_read_like_kubectls() {
        let age_of = |s: i64| age(jiff::SignedDuration::from_secs(s));
        for (seconds, expected) in [
            (-5, "0s"),
            (0, "0s"),
            (119, "119s"),
            (312, "5m12s"),
            (600, "10m"),
            (42 * 60, "42m"),
            (5 * 3600 + 180, "5h3m"),
            (30 * 3600, "30h"),
            (3 * 86_400 + 4 * 3600, "3d4h"),
            (40 * 86_400, "40d"),
            (800 * 86_400, "2y"),
        ] {
            assert_eq!(age_of(seconds), expected, "{seconds} s");
        }
    }
}
