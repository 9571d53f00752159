//! The report: every figure with its range, each Hatchway path as a ratio
//! to each reference of its workload (≥ 1 means Hatchway is as good or
//! better, whichever way the unit points), the goals, the machine.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde_json::json;

use crate::cases::Row;
use crate::tools::version;

fn is_ours(path: &str) -> bool {
    path.starts_with("hatchway") || path.starts_with("kubectl hatch")
}

/// How `ours` compares to `reference`: > 1 is better.
fn ratio(ours: &Row, reference: &Row) -> f64 {
    let (a, b) = (ours.figure.median(), reference.figure.median());
    // Equal is 1× (0 lost beside 0 lost too, which would be 0/0).
    if a == b {
        1.0
    } else if ours.higher_is_better {
        a / b
    } else {
        b / a
    }
}

fn find<'a>(rows: &'a [Row], workload: &str, path: &str) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.workload.starts_with(workload) && r.path == path)
}

/// The operator's memory limit in the chart (`resources.limits.memory`
/// in charts/hatchway/values.yaml; a test keeps them equal).
const CHART_MEMORY_LIMIT_MIB: u32 = 256;

/// The goals from the benchmark issue, with where we stand.
fn goals(rows: &[Row]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let median = |w: &str, p: &str| find(rows, w, p).map(|r| r.figure.median());
    for streams in ["1 stream", "8 stream"] {
        let sink = format!("bulk TCP (256 MiB to a sink), {}", &streams[..1]);
        let cluster = format!("on the cluster: 256 MiB to a sink in a pod, {}", &streams[..1]);
        // (goal, workload, ours, reference): ours / the reference's figure.
        let times = [
            (
                "port-forward ≥ 3× kubectl port-forward",
                &sink,
                "hatchway direct",
                "kubectl port-forward",
            ),
            (
                "on the cluster: port-forward ≥ 3× kubectl port-forward",
                &cluster,
                "hatchway on the cluster",
                "kubectl port-forward",
            ),
            (
                "on the cluster, through the API server: port-forward ≥ 3× kubectl port-forward",
                &cluster,
                "hatchway on the cluster, through the API server",
                "kubectl port-forward",
            ),
            (
                "on the cluster: port-forward beside the pod IP itself",
                &cluster,
                "hatchway on the cluster",
                "pod IP directly",
            ),
        ];
        for (goal, workload, ours, reference) in times {
            if let (Some(h), Some(r)) = (median(workload, ours), median(workload, reference)) {
                out.push((format!("{goal} ({streams}s)"), format!("{:.2}×", h / r)));
            }
        }
        let w = format!("bulk TCP (iperf3), {}", &streams[..1]);
        for (workload, what, path) in [
            (&w, "iperf3", "hatchway direct"),
            (&sink, "256 MiB", "hatchway direct"),
            (&cluster, "on the cluster", "hatchway on the cluster"),
        ] {
            if let (Some(r), Some(p)) = (
                median(workload, path),
                median(workload, &format!("{path}, not resumable")),
            ) {
                out.push((
                    format!("resumable framing costs ≤ 5% on bulk port-forward ({what}, {streams}s)"),
                    format!("{:.1}%", 100.0 * (1.0 - r / p)),
                ));
            }
        }
        let direct = median(&w, "hatchway direct");
        let tunnel = median(&w, "hatchway tunnel");
        if let (Some(d), Some(s)) = (direct, median(&w, "OpenSSH -L")) {
            out.push((
                format!("port-forward ≥ 1× OpenSSH -L ({streams}s)"),
                format!("{:.2}×", d / s),
            ));
        }
        if let (Some(d), Some(s)) = (direct, median(&w, "socat relay")) {
            out.push((
                format!("port-forward ≥ 1× a plaintext socat relay ({streams}s)"),
                format!("{:.2}×", d / s),
            ));
        }
        let end_to_end = format!("CPU per GiB end to end, bulk TCP (iperf3), {}", &streams[..1]);
        if let (Some(r), Some(p)) = (
            median(&end_to_end, "hatchway direct"),
            median(&end_to_end, "hatchway direct, not resumable"),
        ) {
            out.push((
                format!("resumable framing costs ≤ 5% CPU per GiB, CLI + router + sidecar ({streams}s)"),
                format!("{:+.1}%", 100.0 * (r / p - 1.0)),
            ));
        }
        let cpu = format!("CPU per GiB relayed, bulk TCP (iperf3), {}", &streams[..1]);
        for path in ["hatchway direct", "hatchway tunnel"] {
            if let (Some(h), Some(s)) = (median(&cpu, path), median(&cpu, "socat relay")) {
                out.push((
                    format!("CPU per GiB, {path} ≤ 1.5× socat's ({streams}s)"),
                    format!("{:.2}×", h / s),
                ));
            }
        }
        let from_pod = format!("bulk TCP (iperf3 -R, from the pod), {}", &streams[..1]);
        for (direct, tunnel, way) in [
            (direct, tunnel, ""),
            (
                median(&from_pod, "hatchway direct"),
                median(&from_pod, "hatchway tunnel"),
                ", from the pod",
            ),
        ] {
            if let (Some(d), Some(t)) = (direct, tunnel) {
                out.push((
                    format!("tunnel ≥ 90% of direct{way} ({streams}s)"),
                    format!("{:.0}%", 100.0 * t / d),
                ));
            }
        }
    }
    if let (Some(h), Some(n)) = (
        median("HTTP small page, requests/s", "hatchway direct"),
        median("HTTP small page, requests/s", "nginx TLS pair"),
    ) {
        out.push((
            "web-app requests/s ≥ the nginx pair".into(),
            format!("{:.2}×", h / n),
        ));
    }
    if let (Some(h), Some(n)) = (
        median("HTTP small page, requests/s", "hatchway direct"),
        median(
            "HTTP small page, requests/s",
            "nginx TLS pair, upstream keepalive",
        ),
    ) {
        out.push((
            "web-app requests/s ≥ the nginx pair with upstream keepalive".into(),
            format!("{:.2}×", h / n),
        ));
    }
    if let (Some(h), Some(d)) = (
        median("HTTP small page, p99", "hatchway direct"),
        median("HTTP small page, p99", "page directly"),
    ) {
        out.push(("web-app added p99 ≤ 1 ms".into(), format!("{:.2} ms", h - d)));
    }
    for path in ["hatchway direct", "hatchway tunnel"] {
        if let (Some(h), Some(s)) = (
            median("connect to first byte (1000), p50", path),
            median("connect to first byte (1000), p50", "OpenSSH -L"),
        ) {
            out.push((
                format!("connect to first byte p50 ≤ 2× OpenSSH -L, {path}"),
                format!("{:.2}×", h / s),
            ));
        }
    }
    if let (Some(h), Some(s)) = (
        median("1-byte echo (1000), p50", "kubectl hatch shell"),
        median("1-byte echo (1000), p50", "OpenSSH to sshd"),
    ) {
        out.push(("shell echo p50 ≤ 2× OpenSSH".into(), format!("{:.2}×", h / s)));
    }
    if let Some(p99) = median("1-byte echo (1000), p99", "kubectl hatch shell") {
        out.push(("shell echo p99 < 1 ms".into(), format!("{p99:.3} ms")));
    }
    if let Some(kib) = median("router memory per idle tunnel", "hatchway") {
        out.push((
            "≤ 16 KiB router memory per idle tunnel".into(),
            format!("{kib:.1} KiB"),
        ));
    }
    if let Some(kib) = median("router memory per open stream", "hatchway") {
        out.push((
            "≤ 16 KiB router memory per open stream".into(),
            format!("{kib:.1} KiB"),
        ));
    }
    if let Some(row) = rows.iter().find(|r| {
        r.workload
            .starts_with("held port-forward connection: router stopped")
    }) {
        out.push((
            "a held connection flows again ≤ 1 s (p50) after its router stops".into(),
            format!(
                "p50 {:.3} s, p99 {:.3} s",
                row.figure.median(),
                crate::stats::percentile(&row.figure.samples, 99.0)
            ),
        ));
    }
    if let Some(kib) = median("sidecar memory per detached session", "hatchway") {
        out.push((
            "sidecar memory per detached session".into(),
            format!("{kib:.1} KiB"),
        ));
    }
    if let Some(mib) = median("sidecar RSS, idle", "hatchway") {
        let anon = median("sidecar anonymous memory, idle", "hatchway")
            .map(|a| format!(" (anonymous {a:.1} MiB; the rest is the binary's shared pages)"))
            .unwrap_or_default();
        out.push(("sidecar RSS ≤ 8 MiB idle".into(), format!("{mib:.1} MiB{anon}")));
    }
    if let Some(mib) = median("sidecar RSS, 1 GiB flowing", "hatchway") {
        out.push((
            "sidecar RSS ≤ 24 MiB while 1 GiB flows".into(),
            format!("{mib:.1} MiB"),
        ));
    }
    if let Some(r) = rows
        .iter()
        .find(|r| r.workload.starts_with("router RSS with") && r.path == "hatchway")
    {
        out.push((
            format!(
                "{} within the chart's memory limit ({CHART_MEMORY_LIMIT_MIB} MiB)",
                r.workload
            ),
            format!("{:.0} MiB", r.figure.median()),
        ));
    }
    if let Some(s) = rows
        .iter()
        .find(|r| r.workload.starts_with("reconnect storm") && r.path == "hatchway")
    {
        // Round 1 asked 1000 tunnels back within 5 s; round 2, 10,000
        // within 10 s.
        let within = if s.workload.contains("10000") { 10 } else { 5 };
        out.push((
            format!("{}: all back within {within} s", s.workload),
            format!("{:.2} s", s.figure.median()),
        ));
    }
    out
}

fn machine() -> Vec<(String, String)> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = version("uname", &["-r"]);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_default();
    // The commit measured; "+changes" when the tree differs from it.
    let commit = version("git", &["rev-parse", "--short", "HEAD"]);
    let dirty = std::process::Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .is_ok_and(|o| !o.stdout.is_empty());
    vec![
        ("cores".into(), cores.to_string()),
        ("cpu".into(), cpu),
        ("kernel".into(), kernel),
        ("hatchway".into(), env!("CARGO_PKG_VERSION").into()),
        (
            "commit".into(),
            if dirty {
                format!("{commit}+changes")
            } else {
                commit
            },
        ),
        ("iperf3".into(), version("iperf3", &["--version"])),
        ("wrk".into(), version("wrk", &["--version"])),
        ("socat".into(), version("socat", &["-V"])),
        ("stunnel".into(), version("stunnel4", &["-version"])),
        ("OpenSSH".into(), version("ssh", &["-V"])),
        ("nginx".into(), version("nginx", &["-v"])),
        ("kubectl".into(), version("kubectl", &["version", "--client"])),
    ]
}

/// The Markdown report.
pub fn markdown(rows: &[Row], date: &str) -> String {
    let mut md = format!("# Hatchway benchmarks, {date}\n\n");
    md.push_str(
        "Medians over repeats (min–max). **ratio** compares each Hatchway path with each reference \
         measured in the same run: ≥ 1 means Hatchway is as good or better (for times and memory the \
         reference is divided by ours).\n\n",
    );
    let mut by_workload: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    let mut order = Vec::new();
    for r in rows {
        if !by_workload.contains_key(r.workload.as_str()) {
            order.push(r.workload.as_str());
        }
        by_workload.entry(&r.workload).or_default().push(r);
    }
    md.push_str("| workload | path | median | min–max | ratio to references |\n|---|---|---|---|---|\n");
    for workload in order {
        let group = &by_workload[workload];
        let references: Vec<&&Row> = group.iter().filter(|r| !is_ours(&r.path)).collect();
        for r in group {
            let ratios = if is_ours(&r.path) {
                references
                    .iter()
                    .map(|reference| format!("{:.2}× {}", ratio(r, reference), reference.path))
                    .collect::<Vec<_>>()
                    .join(", ")
            } else {
                String::new()
            };
            let _ = writeln!(
                md,
                "| {} | {} | {:.3} {} | {:.3}–{:.3} | {} |",
                r.workload,
                r.path,
                r.figure.median(),
                r.unit,
                r.figure.min(),
                r.figure.max(),
                ratios
            );
        }
    }
    md.push_str("\n## Goals\n\n| goal | where we stand |\n|---|---|\n");
    for (goal, now) in goals(rows) {
        let _ = writeln!(md, "| {goal} | {now} |");
    }
    md.push_str("\n## Machine\n\n| | |\n|---|---|\n");
    for (k, v) in machine() {
        let _ = writeln!(md, "| {k} | {v} |");
    }
    md
}

/// Writes `<out>/<date>.md` and `<out>/<date>.json`; returns the Markdown
/// file's path.
pub fn write(out: &Path, rows: &[Row]) -> Result<PathBuf> {
    std::fs::create_dir_all(out)?;
    let date = std::process::Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|_| "today".into());
    let md = out.join(format!("{date}.md"));
    std::fs::write(&md, markdown(rows, &date))?;
    let json: Vec<_> = rows
        .iter()
        .map(|r| {
            json!({
                "workload": r.workload, "path": r.path, "unit": r.unit,
                "median": r.figure.median(), "min": r.figure.min(), "max": r.figure.max(),
                "higher_is_better": r.higher_is_better, "ours": is_ours(&r.path),
            })
        })
        .collect();
    std::fs::write(
        out.join(format!("{date}.json")),
        serde_json::to_string_pretty(&json)?,
    )?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Figure;

    fn r(workload: &str, path: &str, v: f64, higher: bool) -> Row {
        Row {
            workload: workload.into(),
            path: path.into(),
            figure: Figure::new(vec![v]),
            unit: "x",
            higher_is_better: higher,
        }
    }

    #[test]
    fn ratios_point_the_same_way_for_rates_and_times() {
        assert_eq!(
            ratio(&r("w", "hatchway direct", 4.0, true), &r("w", "socat", 2.0, true)),
            2.0
        );
        assert_eq!(
            ratio(
                &r("w", "hatchway direct", 4.0, false),
                &r("w", "socat", 2.0, false)
            ),
            0.5
        );
    }

    #[test]
    fn the_memory_goal_names_the_charts_limit() {
        let values = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../charts/hatchway/values.yaml"
        ))
        .unwrap();
        // The operator's resources: the top-level `resources:` block.
        let block = values.split("\nresources:\n").nth(1).unwrap();
        let limits = block.split("  limits:\n").nth(1).unwrap();
        let memory = limits.lines().next().unwrap().trim();
        assert_eq!(memory, format!("memory: {CHART_MEMORY_LIMIT_MIB}Mi"));
    }

    const CLUSTER: &str = "on the cluster: 256 MiB to a sink in a pod, 1 stream(s)";

    #[test]
    fn the_report_has_ratios_goals_and_the_machine() {
        let rows = vec![
            r("bulk TCP (iperf3), 1 stream(s)", "OpenSSH -L", 2.0, true),
            r("bulk TCP (iperf3), 1 stream(s)", "hatchway direct", 3.0, true),
            r("bulk TCP (iperf3), 1 stream(s)", "hatchway tunnel", 2.7, true),
            r("HTTP small page, requests/s", "nginx TLS pair", 1000.0, true),
            r(
                "HTTP small page, requests/s",
                "nginx TLS pair, upstream keepalive",
                4000.0,
                true,
            ),
            r("HTTP small page, requests/s", "hatchway direct", 3000.0, true),
            r(
                "CPU per GiB end to end, bulk TCP (iperf3), 1 stream(s)",
                "hatchway direct",
                2.2,
                false,
            ),
            r(
                "CPU per GiB end to end, bulk TCP (iperf3), 1 stream(s)",
                "hatchway direct, not resumable",
                2.0,
                false,
            ),
            r(
                "CPU per GiB relayed, bulk TCP (iperf3), 1 stream(s)",
                "socat relay",
                1.0,
                false,
            ),
            r(
                "CPU per GiB relayed, bulk TCP (iperf3), 1 stream(s)",
                "hatchway tunnel",
                1.6,
                false,
            ),
            r("connect to first byte (1000), p50", "OpenSSH -L", 0.5, false),
            r(
                "connect to first byte (1000), p50",
                "hatchway direct",
                1.25,
                false,
            ),
            r(CLUSTER, "pod IP directly", 8.0, true),
            r(CLUSTER, "kubectl port-forward", 1.0, true),
            r(CLUSTER, "hatchway on the cluster", 4.0, true),
            r(CLUSTER, "hatchway on the cluster, not resumable", 5.0, true),
        ];
        let md = markdown(&rows, "2026-01-01");
        assert!(
            md.contains(
                "| bulk TCP (iperf3), 1 stream(s) | hatchway direct | 3.000 x | 3.000–3.000 | 1.50× OpenSSH -L |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| port-forward ≥ 1× OpenSSH -L (1 streams) | 1.50× |"),
            "{md}"
        );
        assert!(
            md.contains("| tunnel ≥ 90% of direct (1 streams) | 90% |"),
            "{md}"
        );
        // Each nginx reference is its own goal, never the other's figure.
        assert!(
            md.contains("| web-app requests/s ≥ the nginx pair | 3.00× |"),
            "{md}"
        );
        assert!(
            md.contains("| web-app requests/s ≥ the nginx pair with upstream keepalive | 0.75× |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| resumable framing costs ≤ 5% CPU per GiB, CLI + router + sidecar (1 streams) | +10.0% |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| CPU per GiB, hatchway tunnel ≤ 1.5× socat's (1 streams) | 1.60× |"),
            "{md}"
        );
        assert!(
            md.contains("| connect to first byte p50 ≤ 2× OpenSSH -L, hatchway direct | 2.50× |"),
            "{md}"
        );
        // The on-cluster case: its own references and its own framing row.
        assert!(
            md.contains("| on the cluster: port-forward ≥ 3× kubectl port-forward (1 streams) | 4.00× |"),
            "{md}"
        );
        assert!(
            md.contains("| on the cluster: port-forward beside the pod IP itself (1 streams) | 0.50× |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| resumable framing costs ≤ 5% on bulk port-forward (on the cluster, 1 streams) | 20.0% |"
            ),
            "{md}"
        );
        assert!(md.contains("| cores |"), "{md}");
        assert!(md.contains("| commit |"), "{md}");
    }

    #[test]
    fn nothing_beside_nothing_is_one_to_one() {
        assert_eq!(
            ratio(
                &r("loss", "hatchway direct", 0.0, false),
                &r("loss", "raw", 0.0, false)
            ),
            1.0
        );
    }
}
