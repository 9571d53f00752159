//! Runs the shim as a real process (the `hatchway-shim-test` binary) in its
//! own temporary directory, so tests run in parallel without sharing
//! anything.
//!
//! Layout of a test's directory (also exported to the command as `$WORK`):
//! `log/` (the log directory) and whatever marker files a test's command
//! creates. The spawn socket is abstract, named after the directory.

#![allow(dead_code)] // each test file uses a different part

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long any awaited condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `condition` until it holds; fails the test after [`DEADLINE`].
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The async twin of [`wait_until`].
pub async fn wait_until_async(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// (parent pid, state letter) of a process, from /proc/PID/stat.
pub fn ppid_and_state(pid: i32) -> Option<(i32, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

/// How to start a shim.
pub struct ShimBuilder {
    flags: Vec<String>,
    env: Vec<(String, String)>,
    uid: Option<u32>,
    usage_interval: u64,
    pod_pid_namespace: bool,
}

impl ShimBuilder {
    pub fn flag(mut self, flag: &str, value: &str) -> Self {
        self.flags.push(flag.to_string());
        self.flags.push(value.to_string());
        self
    }

    /// Sets a variable in the shim's environment (e.g. a `HATCHWAY_*` one).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn usage_interval(mut self, secs: u64) -> Self {
        self.usage_interval = secs;
        self
    }

    /// Runs the shim as in a pod: PID 1 of a PID namespace of its own
    /// (`unshare --pid --fork`; the test must be root), serving only peers
    /// outside it. [`Shim::pid`] is then `unshare`'s pid, and
    /// [`Shim::inner_pid`] the shim's.
    pub fn in_pod_pid_namespace(mut self) -> Self {
        self.pod_pid_namespace = true;
        self
    }

    /// Runs the shim as another user (the test must be root).
    pub fn run_as_uid(mut self, uid: u32) -> Self {
        self.uid = Some(uid);
        self
    }

    pub fn start(self, command: &[&str]) -> Shim {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().to_path_buf();
        let mut binary = PathBuf::from(env!("CARGO_BIN_EXE_hatchway-shim-test"));
        if let Some(uid) = self.uid {
            // Another user must reach the binary and write the directory;
            // the target dir may be under a private home, so copy it.
            let copy = work.join("hatchway-shim-test");
            std::fs::copy(&binary, &copy).unwrap();
            binary = copy;
            std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::create_dir(work.join("log")).unwrap();
            nix::unistd::chown(&work.join("log"), Some(nix::unistd::Uid::from_raw(uid)), None).unwrap();
        }
        let mut cmd = if self.pod_pid_namespace {
            let mut cmd = Command::new("unshare");
            cmd.args(["--pid", "--fork", "--kill-child"])
                .arg(&binary)
                .env("HATCHWAY_SHIM_TEST_PIDNS_CHECK", "1");
            cmd
        } else {
            Command::new(&binary)
        };
        cmd.arg("--log-dir")
            .arg(work.join("log"))
            .arg("--spawn-socket")
            .arg(socket_name(&work))
            .arg("--usage-interval")
            .arg(self.usage_interval.to_string())
            .args(&self.flags)
            .arg("--")
            .args(command)
            .env("WORK", &work)
            .env_remove("HATCHWAY_SPAWN_DISABLED")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            // A directory every user may enter: sessions fall back to it.
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(uid) = self.uid {
            cmd.uid(uid).gid(uid);
        }
        let mut child = cmd.spawn().expect("the test shim starts");
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        Shim {
            child: Some(child),
            dir,
            stdout,
            stderr,
        }
    }
}

fn collect(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut data = Vec::new();
        let _ = pipe.read_to_end(&mut data);
        let _ = tx.send(data);
    });
    rx
}

/// A running shim; killed (SIGKILL) if the test ends without waiting.
pub struct Shim {
    child: Option<Child>,
    pub dir: TempDir,
    stdout: mpsc::Receiver<Vec<u8>>,
    stderr: mpsc::Receiver<Vec<u8>>,
}

/// What a finished shim left behind.
pub struct Finished {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub dir: TempDir,
}

impl Finished {
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("log").join(name)).unwrap_or_default()
    }
}

impl Shim {
    pub fn builder() -> ShimBuilder {
        ShimBuilder {
            flags: vec![],
            env: vec![],
            uid: None,
            usage_interval: 0,
            pod_pid_namespace: false,
        }
    }

    pub fn start(command: &[&str]) -> Shim {
        Self::builder().start(command)
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn work(&self) -> &Path {
        self.dir.path()
    }

    /// The spawn socket's abstract name.
    pub fn socket(&self) -> String {
        socket_name(self.dir.path())
    }

    /// The shim's own pid (in this test's namespace) when it runs in a PID
    /// namespace of its own: `unshare`'s only child.
    pub fn inner_pid(&self) -> i32 {
        let pid = self.pid();
        let mut inner = None;
        wait_until("unshare has started the shim", || {
            inner = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .ok()
                .and_then(|c| c.split_whitespace().next().and_then(|p| p.parse().ok()));
            inner.is_some()
        });
        inner.unwrap()
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("log").join(name)).unwrap_or_default()
    }

    /// Creates `$WORK/name`, the usual "go on" signal to a test command.
    pub fn touch(&self, name: &str) {
        std::fs::write(self.dir.path().join(name), "").unwrap();
    }

    pub fn wait_for_file(&self, name: &str) {
        let path = self.dir.path().join(name);
        wait_until(&format!("{name} exists"), || path.exists());
    }

    /// Waits until the spawn socket accepts connections (a bare connection
    /// that sends nothing is harmless).
    pub fn wait_for_socket(&self) {
        let socket = self.socket();
        wait_until("the spawn socket accepts connections", || socket_accepts(&socket));
    }

    pub fn kill(&self, sig: i32) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::try_from(sig).unwrap(),
        )
        .unwrap();
    }

    /// Waits for the shim to exit on its own.
    pub fn wait(mut self) -> Finished {
        let mut child = self.child.take().unwrap();
        let mut status = None;
        wait_until("the shim exits", || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        let status = status.unwrap();
        let code = status
            .code()
            .unwrap_or_else(|| panic!("the shim itself was killed: {status:?}"));
        let output = |rx: &mpsc::Receiver<Vec<u8>>| {
            String::from_utf8_lossy(&rx.recv_timeout(DEADLINE).expect("the shim's output ends")).into_owned()
        };
        let (stdout, stderr) = (output(&self.stdout), output(&self.stderr));
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        Finished {
            code,
            stdout,
            stderr,
            dir,
        }
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM first: the shim forwards it, so its command ends too.
            // A bare SIGKILL would orphan the command (the shim is not PID 1
            // here), and a command polling a file in the deleted temp dir
            // would then loop forever.
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The abstract spawn socket name of a test directory.
pub fn socket_name(work: &Path) -> String {
    format!("hatchway-test{}", work.display())
}

/// Whether something listens on the abstract socket `name`.
pub fn socket_accepts(name: &str) -> bool {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    std::os::unix::net::UnixStream::connect_addr(&addr).is_ok()
}

/// Connects to `socket` as `uid` (the test must be root) through the test
/// binary's probe mode; returns its one-line report (`exited N` or
/// `error MESSAGE`).
pub fn probe_as(uid: u32, socket: &str) -> String {
    let (_dir, binary) = probe_binary();
    probe(Command::new(&binary).uid(uid).gid(uid), socket)
}

/// Like [`probe_as`], from inside the PID namespace of process `pid` (as a
/// workload process in a pod would be), as `uid`.
pub fn probe_in_pid_namespace_of(pid: i32, uid: u32, socket: &str) -> String {
    let (_dir, binary) = probe_binary();
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--target={pid}"))
        .arg("--pid")
        .arg(format!("--setuid={uid}"))
        .arg(format!("--setgid={uid}"))
        .arg("--")
        .arg(&binary);
    probe(&mut cmd, socket)
}

/// A copy of the test binary any user may run (the target dir may be under
/// a private home).
fn probe_binary() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = dir.path().join("probe");
    std::fs::copy(env!("CARGO_BIN_EXE_hatchway-shim-test"), &binary).unwrap();
    (dir, binary)
}

fn probe(cmd: &mut Command, socket: &str) -> String {
    let mut child = cmd
        .env("HATCHWAY_SHIM_TEST_PROBE", socket)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let output = collect(child.stdout.take().unwrap());
    let mut status = None;
    wait_until("the probe exits", || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    String::from_utf8_lossy(&output.recv_timeout(DEADLINE).unwrap())
        .trim()
        .to_string()
}
