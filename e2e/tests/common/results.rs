//! Reports of the long runs (`make chaos`, `make load`):
//! `e2e/results/DATE-NAME.md`, with the commit and machine they ran on.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Result;

/// Writes `text` to `e2e/results/DATE-NAME.md` and says where.
pub fn write(name: &str, text: &str) -> Result<PathBuf> {
    let dir = hatchway_e2e::repo_dir().join("e2e/results");
    std::fs::create_dir_all(&dir)?;
    let date = String::from_utf8(Command::new("date").arg("+%Y-%m-%d").output()?.stdout)?;
    let path = dir.join(format!("{}-{name}.md", date.trim()));
    std::fs::write(&path, text)?;
    eprintln!("{name}: wrote {}", path.display());
    Ok(path)
}

/// The report's name for a run of only some cases: `NAME` when the
/// environment variable `cases_var` names none (every case ran), else
/// `NAME-a-b` — a partial run never replaces the whole run's report.
pub fn name_for_cases(name: &str, cases_var: &str) -> String {
    let only = std::env::var(cases_var).unwrap_or_default();
    let cases: Vec<&str> = only.split(',').map(str::trim).filter(|c| !c.is_empty()).collect();
    if cases.is_empty() {
        name.to_owned()
    } else {
        format!("{name}-{}", cases.join("-"))
    }
}

/// "commit abc1234, 2 CPUs, 23.4 GiB": where a run was made.
pub fn machine() -> String {
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(hatchway_e2e::repo_dir())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .unwrap_or_default();
    format!(
        "commit {commit}, {cpus} CPUs, {:.1} GiB",
        memory / (1024.0 * 1024.0)
    )
}

/// The `p`th percentile (nearest rank) of `sorted`; 0 when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// "p50 / p99 / max" of `values` (sorted here), with `digits` decimals.
pub fn spread(values: &[f64], digits: usize) -> String {
    if values.is_empty() {
        return "–".to_owned();
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    format!(
        "{:.digits$} / {:.digits$} / {:.digits$}",
        percentile(&sorted, 50.0),
        percentile(&sorted, 99.0),
        sorted[sorted.len() - 1]
    )
}
