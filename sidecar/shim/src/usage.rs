//! Samples the workload container's own cgroup into `usage.txt`, like
//! Arvados' crunchstat. Only the shim sees this cgroup (the sidecar is a
//! different container with its own), which is why it is done here.
//!
//! One line per sample, cumulative counters since the cgroup was created:
//!
//! ```text
//! 2026-11-23T13:00:00Z cpu 1.2345 user 1.0000 sys 0.2345 mem usage 20000000 rss 12345678 cache 4567 io read 123 write 456
//! ```
//!
//! `cpu`/`user`/`sys` are CPU seconds; `mem` values and `io` values are
//! bytes. A group whose files cannot be read is left out of the line (a
//! single key may be missing too), so parsers should read `key value`
//! pairs, not positions. Both cgroup v1 (cpuacct, memory, blkio) and v2
//! (cpu.stat, memory.current/memory.stat, io.stat) are read; on a hybrid
//! host the v1 controllers win, since the v2 tree has no controllers there.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::warn;

/// cgroup v1's cpuacct.stat counts in USER_HZ, which Linux fixes at 100
/// for user space whatever the kernel's HZ.
const USER_HZ: f64 = 100.0;

/// Where each kind of statistic is read from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Cgroups {
    /// v1 controller name -> candidate directories, best first.
    pub v1: HashMap<String, Vec<PathBuf>>,
    /// v2 candidate directories, best first.
    pub v2: Vec<PathBuf>,
}

/// Finds the cgroup directories of the process described by `proc_cgroup`
/// (the text of /proc/self/cgroup) given `mountinfo` (/proc/self/mountinfo).
///
/// A cgroup path is relative to the hierarchy's root, but a container
/// usually sees its own cgroup mounted *as* the root (mountinfo's `root`
/// field says which part of the hierarchy a mount shows), so the directory
/// is the mount point plus the path below that root. The mount point itself
/// is the fallback candidate.
pub(crate) fn discover(proc_cgroup: &str, mountinfo: &str) -> Cgroups {
    let mounts = parse_mountinfo(mountinfo);
    let mut cgroups = Cgroups::default();
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if controllers.is_empty() {
            if let Some(mount) = mounts.iter().find(|m| m.fstype == "cgroup2") {
                cgroups.v2 = candidates(mount, path);
            }
            continue;
        }
        for controller in controllers.split(',') {
            let mount = mounts
                .iter()
                .find(|m| m.fstype == "cgroup" && m.super_options.split(',').any(|o| o == controller));
            if let Some(mount) = mount {
                cgroups.v1.insert(controller.to_string(), candidates(mount, path));
            }
        }
    }
    cgroups
}

#[derive(Debug)]
struct Mount {
    root: String,
    mount_point: PathBuf,
    fstype: String,
    super_options: String,
}

fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            if left.len() < 5 || right.len() < 3 {
                return None;
            }
            Some(Mount {
                root: unescape(left[3]),
                mount_point: PathBuf::from(unescape(left[4])),
                fstype: right[0].to_string(),
                super_options: right[2].to_string(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        if bytes[i] == b'\\'
            && let Some(digits) = octal
        {
            let code = digits.iter().fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
            out.push(code as u8);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn candidates(mount: &Mount, path: &str) -> Vec<PathBuf> {
    let below = if mount.root == "/" {
        Some(path)
    } else {
        path.strip_prefix(mount.root.as_str())
            .filter(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    let mut dirs = Vec::new();
    if let Some(below) = below {
        let below = below.trim_start_matches('/');
        if !below.is_empty() {
            dirs.push(mount.mount_point.join(below));
        }
    }
    dirs.push(mount.mount_point.clone());
    dirs
}

/// Cumulative CPU time, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Cpu {
    pub total: f64,
    pub user: Option<f64>,
    pub sys: Option<f64>,
}

/// Memory in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Memory {
    pub usage: Option<u64>,
    pub rss: Option<u64>,
    pub cache: Option<u64>,
}

/// Bytes read and written on block devices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Io {
    pub read: u64,
    pub write: u64,
}

/// One sample; a `None` group could not be read.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Sample {
    pub cpu: Option<Cpu>,
    pub mem: Option<Memory>,
    pub io: Option<Io>,
}

/// `key value` lines (cpu.stat, memory.stat, cpuacct.stat) as a map.
pub(crate) fn parse_flat_keyed(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let key = parts.next()?;
            let value = parts.next()?.parse().ok()?;
            Some((key, value))
        })
        .collect()
}

/// cgroup v1 CPU: `cpuacct.usage` (ns) and `cpuacct.stat` (USER_HZ ticks).
pub(crate) fn parse_cpu_v1(usage: Option<&str>, stat: Option<&str>) -> Option<Cpu> {
    let stat = stat.map(parse_flat_keyed).unwrap_or_default();
    let user = stat.get("user").map(|&t| t as f64 / USER_HZ);
    let sys = stat.get("system").map(|&t| t as f64 / USER_HZ);
    let total = match usage.and_then(|u| u.trim().parse::<u64>().ok()) {
        Some(ns) => ns as f64 / 1e9,
        None => user? + sys?,
    };
    Some(Cpu { total, user, sys })
}

/// cgroup v2 CPU: `cpu.stat` (microseconds).
pub(crate) fn parse_cpu_v2(stat: &str) -> Option<Cpu> {
    let stat = parse_flat_keyed(stat);
    let secs = |key| stat.get(key).map(|&us| us as f64 / 1e6);
    Some(Cpu {
        total: secs("usage_usec")?,
        user: secs("user_usec"),
        sys: secs("system_usec"),
    })
}

/// cgroup v1 memory: `memory.usage_in_bytes` and `memory.stat`, whose
/// `total_*` keys include child cgroups and are preferred.
pub(crate) fn parse_memory_v1(usage: Option<&str>, stat: Option<&str>) -> Option<Memory> {
    let stat = stat.map(parse_flat_keyed).unwrap_or_default();
    let get = |total: &str, own: &str| stat.get(total).or_else(|| stat.get(own)).copied();
    let memory = Memory {
        usage: usage.and_then(|u| u.trim().parse().ok()),
        rss: get("total_rss", "rss"),
        cache: get("total_cache", "cache"),
    };
    (memory != Memory::default()).then_some(memory)
}

/// cgroup v2 memory: `memory.current` and `memory.stat` (`anon` is the
/// v1 `rss`, `file` the v1 `cache`).
pub(crate) fn parse_memory_v2(current: Option<&str>, stat: Option<&str>) -> Option<Memory> {
    let stat = stat.map(parse_flat_keyed).unwrap_or_default();
    let memory = Memory {
        usage: current.and_then(|u| u.trim().parse().ok()),
        rss: stat.get("anon").copied(),
        cache: stat.get("file").copied(),
    };
    (memory != Memory::default()).then_some(memory)
}

/// cgroup v1 `blkio.throttle.io_service_bytes`: `MAJ:MIN Read N` lines
/// (and a `Total N` line), summed over devices.
pub(crate) fn parse_io_v1(text: &str) -> Io {
    let mut io = Io::default();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [_device, op, value] = fields[..] {
            let value: u64 = value.parse().unwrap_or(0);
            match op {
                "Read" => io.read += value,
                "Write" => io.write += value,
                _ => {}
            }
        }
    }
    io
}

/// cgroup v2 `io.stat`: `MAJ:MIN rbytes=N wbytes=N ...` lines, summed.
pub(crate) fn parse_io_v2(text: &str) -> Io {
    let mut io = Io::default();
    for field in text.split_whitespace() {
        if let Some((key, value)) = field.split_once('=') {
            let value: u64 = value.parse().unwrap_or(0);
            match key {
                "rbytes" => io.read += value,
                "wbytes" => io.write += value,
                _ => {}
            }
        }
    }
    io
}

/// The directories actually used for sampling, chosen once at start.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sources {
    cpuacct: Option<PathBuf>,
    memory: Option<PathBuf>,
    blkio: Option<PathBuf>,
    v2: Option<PathBuf>,
}

impl Sources {
    /// Picks, for each controller, the first candidate directory that holds
    /// its files.
    pub fn resolve(cgroups: &Cgroups) -> Self {
        let pick = |dirs: Option<&Vec<PathBuf>>, file: &str| {
            dirs.and_then(|dirs| dirs.iter().find(|d| d.join(file).exists()).cloned())
        };
        Self {
            cpuacct: pick(cgroups.v1.get("cpuacct"), "cpuacct.usage"),
            memory: pick(cgroups.v1.get("memory"), "memory.usage_in_bytes"),
            blkio: pick(cgroups.v1.get("blkio"), "blkio.throttle.io_service_bytes"),
            v2: pick(Some(&cgroups.v2), "cgroup.controllers"),
        }
    }

    /// Sources for this process, from /proc/self.
    pub fn for_self() -> Self {
        let read = |p| std::fs::read_to_string(p).unwrap_or_default();
        Self::resolve(&discover(
            &read("/proc/self/cgroup"),
            &read("/proc/self/mountinfo"),
        ))
    }

    pub fn is_empty(&self) -> bool {
        self.cpuacct.is_none() && self.memory.is_none() && self.blkio.is_none() && self.v2.is_none()
    }

    /// Reads the files now.
    pub fn sample(&self) -> Sample {
        let read = |dir: &Option<PathBuf>, file: &str| {
            dir.as_ref()
                .and_then(|d| std::fs::read_to_string(d.join(file)).ok())
        };
        let cpu = match &self.cpuacct {
            Some(_) => parse_cpu_v1(
                read(&self.cpuacct, "cpuacct.usage").as_deref(),
                read(&self.cpuacct, "cpuacct.stat").as_deref(),
            ),
            None => read(&self.v2, "cpu.stat").as_deref().and_then(parse_cpu_v2),
        };
        let mem = match &self.memory {
            Some(_) => parse_memory_v1(
                read(&self.memory, "memory.usage_in_bytes").as_deref(),
                read(&self.memory, "memory.stat").as_deref(),
            ),
            None => parse_memory_v2(
                read(&self.v2, "memory.current").as_deref(),
                read(&self.v2, "memory.stat").as_deref(),
            ),
        };
        let io = match &self.blkio {
            Some(_) => read(&self.blkio, "blkio.throttle.io_service_bytes").map(|t| parse_io_v1(&t)),
            None => read(&self.v2, "io.stat").map(|t| parse_io_v2(&t)),
        };
        Sample { cpu, mem, io }
    }
}

/// One `usage.txt` line (with its newline).
pub(crate) fn format_line(at: SystemTime, sample: &Sample) -> String {
    let mut line = format_utc(at);
    if let Some(cpu) = sample.cpu {
        let _ = write!(line, " cpu {:.4}", cpu.total);
        if let Some(user) = cpu.user {
            let _ = write!(line, " user {user:.4}");
        }
        if let Some(sys) = cpu.sys {
            let _ = write!(line, " sys {sys:.4}");
        }
    }
    if let Some(mem) = sample.mem {
        line.push_str(" mem");
        for (key, value) in [("usage", mem.usage), ("rss", mem.rss), ("cache", mem.cache)] {
            if let Some(value) = value {
                let _ = write!(line, " {key} {value}");
            }
        }
    }
    if let Some(io) = sample.io {
        let _ = write!(line, " io read {} write {}", io.read, io.write);
    }
    line.push('\n');
    line
}

/// `YYYY-MM-DDTHH:MM:SSZ` in UTC.
pub(crate) fn format_utc(at: SystemTime) -> String {
    let at = time::OffsetDateTime::from(at);
    at.format(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
    ))
    .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// The running sampler.
#[derive(Debug)]
pub(crate) struct Sampler {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Sampler {
    /// Samples now, then every `interval`, appending to `path`. Returns
    /// `None` (after one explanatory line) when there is no cgroup to read.
    pub fn start(path: PathBuf, sources: Sources, interval: Duration) -> Option<Self> {
        if sources.is_empty() {
            let line = format!(
                "{} no cgroup statistics: no readable cgroup found\n",
                format_utc(SystemTime::now())
            );
            append(&path, &line);
            return None;
        }
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = &mut stopped => break,
                }
                write_sample(&path, &sources).await;
            }
            // A last sample, so the totals at exit are on record.
            write_sample(&path, &sources).await;
        });
        Some(Self { stop, task })
    }

    /// Takes the final sample and stops.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn write_sample(path: &Path, sources: &Sources) {
    let (path, sources) = (path.to_path_buf(), sources.clone());
    // File reads and the append are blocking calls: keep them off the
    // runtime's workers.
    let _ = tokio::task::spawn_blocking(move || {
        let line = format_line(SystemTime::now(), &sources.sample());
        append(&path, &line);
    })
    .await;
}

fn append(path: &Path, line: &str) {
    let result = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(error) = result {
        warn!(path = %path.display(), %error, "cannot write a usage sample");
    }
}

#[cfg(test)]
mod tests;
