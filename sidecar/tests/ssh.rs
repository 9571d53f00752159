//! SSH through the gateway with real peers: the OpenSSH client (exec,
//! exit codes, env, `-W` over direct-tcpip, scp/sftp of 10 MiB, sftp file
//! management against our own `sftp-server`, and Debian's sftp-server for
//! comparison), rsync, a russh client (pty size, signals), and a real shim
//! process spawning commands.

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use hatchway_api::wire;
use http::StatusCode;
use sha2::{Digest, Sha256};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::process::Command;

/// Where Debian's OpenSSH keeps its SFTP server: run inside the "workload"
/// (here: this machine) through the shim, to compare ours with.
const DEBIAN_SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";

/// Our own SFTP server, as the gateway starts it in production (there from
/// the shared volume): the default for these tests.
fn our_sftp_server() -> Vec<String> {
    vec![
        env!("CARGO_BIN_EXE_hatchway-sidecar").into(),
        "sftp-server".into(),
    ]
}

fn debian_sftp_server() -> Vec<String> {
    assert!(
        std::path::Path::new(DEBIAN_SFTP_SERVER).exists(),
        "{DEBIAN_SFTP_SERVER} is missing: install Debian's openssh-server (.ci/run does)"
    );
    vec![DEBIAN_SFTP_SERVER.into()]
}

/// A gateway, a real shim process serving its spawn socket, and a local
/// TCP port that performs the router's handshake (TLS, proof, `POST /ssh`)
/// and then relays raw SSH bytes: the OpenSSH client connects there.
struct Rig {
    gw: TestSidecar,
    port: u16,
    known_hosts: PathBuf,
}

impl Rig {
    /// A rig whose `sftp` subsystem runs our own SFTP server.
    async fn start(query: &'static str) -> Self {
        Self::start_with_sftp(query, our_sftp_server()).await
    }

    /// A rig whose `sftp` subsystem runs `sftp_command`.
    async fn start_with_sftp(query: &'static str, sftp_command: Vec<String>) -> Self {
        Self::start_with(query, |a| a.sftp_command = sftp_command).await
    }

    /// A rig whose gateway's settings `tweak` changes (our SFTP server
    /// unless it says otherwise).
    async fn start_with(
        query: &'static str,
        tweak: impl FnOnce(&mut hatchway_sidecar::args::GatewayArgs),
    ) -> Self {
        let gw = TestSidecar::start_with(UID, |a| {
            a.sftp_command = our_sftp_server();
            tweak(a);
        })
        .await
        .with_shim_running("sleep 3600")
        .await;

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let addr = gw.addr();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    // Like the router: no Nagle delay on either hop, or
                    // small SFTP replies wait for ACKs and uploads crawl.
                    let _ = tcp.set_nodelay(true);
                    let upstream = tokio::net::TcpStream::connect(addr).await.unwrap();
                    upstream.set_nodelay(true).unwrap();
                    let mut conn = GatewayConn::over(upstream).await;
                    let req = conn
                        .request("POST", &format!("/ssh?{query}"), ProofMode::Valid)
                        .header("connection", "upgrade")
                        .header("upgrade", "ssh")
                        .header(wire::REQUEST_USER, "tester")
                        .body(empty())
                        .unwrap();
                    let response = conn.send_checked(req).await;
                    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
                    let mut upgraded =
                        hyper_util::rt::TokioIo::new(hyper::upgrade::on(response).await.unwrap());
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut upgraded).await;
                });
            }
        });

        // Verify the host key for real: a known_hosts line from what the
        // gateway reports, and StrictHostKeyChecking=yes.
        let known_hosts = gw.dir.path().join("known_hosts");
        let host_key = gw.running.gateway.ssh.host_key_openssh();
        hatchway_testkit::write_known_hosts(&known_hosts, port, &host_key).unwrap();
        Rig {
            gw,
            port,
            known_hosts,
        }
    }

    fn ssh_args(&self) -> Vec<String> {
        hatchway_testkit::openssh_options(self.port, &self.known_hosts)
    }

    async fn ssh(&self, extra: &[&str], remote: &str) -> std::process::Output {
        let mut cmd = Command::new("ssh");
        cmd.args(self.ssh_args())
            .args(extra)
            .arg("tester@127.0.0.1")
            .arg(remote);
        cmd.stdin(Stdio::null());
        tokio::time::timeout(std::time::Duration::from_secs(60), cmd.output())
            .await
            .expect("ssh finishes in time")
            .expect("ssh runs")
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn openssh_runs_a_command_and_returns_its_output_and_exit_code() {
    let rig = Rig::start("").await;
    let out = rig.ssh(&[], "echo out; echo err >&2; exit 3").await;
    assert_eq!(text(&out.stdout), "out\n");
    assert!(text(&out.stderr).contains("err"), "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(3));
    let out = rig.ssh(&[], "true").await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let trail = std::fs::read_to_string(rig.gw.audit_dir().join("gateway.txt")).unwrap();
    assert!(
        trail.contains(r#"kind=exec user="tester""#) && trail.contains("exit 3"),
        "{trail}"
    );
}

#[tokio::test]
async fn openssh_passes_environment_variables() {
    let rig = Rig::start("").await;
    let out = rig
        .ssh(
            &["-o", "SetEnv=HATCHWAY_TEST_VAR=from-client"],
            "echo $HATCHWAY_TEST_VAR",
        )
        .await;
    assert_eq!(text(&out.stdout), "from-client\n", "{}", text(&out.stderr));
}

#[tokio::test]
async fn openssh_forwards_to_ports_inside_the_pod_that_the_rule_allows() {
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = echo.local_addr().unwrap().port();
    // Listening too: refused by the rule, not for being closed.
    let other = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = other.local_addr().unwrap().port();
    let rig = Rig::start_with("", |a| {
        a.forward_ports = port.to_string().parse().unwrap();
        a.forward_rule = format!("spec.portForward.ports allows {port}");
    })
    .await;
    let out = Command::new("ssh")
        .args(rig.ssh_args())
        .args(["-W", &format!("127.0.0.1:{refused}"), "tester@127.0.0.1"])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    // (Quiet, ssh says only this; with -v, "administratively prohibited".)
    assert!(
        text(&out.stderr).contains("stdio forwarding failed"),
        "{}",
        text(&out.stderr)
    );
    let trail = std::fs::read_to_string(rig.gw.audit_dir().join("gateway.txt")).unwrap();
    assert!(
        trail.contains(&format!(
            "forward refused (port {refused} is not forwardable: spec.portForward.ports allows {port}) user=\"tester\""
        )),
        "{trail}"
    );
    tokio::spawn(async move {
        let (mut s, _) = echo.accept().await.unwrap();
        let mut buf = vec![0u8; 64];
        let n = s.read(&mut buf).await.unwrap();
        s.write_all(&buf[..n]).await.unwrap();
    });
    // `-W` asks for a direct-tcpip channel, exactly what `-L` uses per
    // connection, without a local listening port.
    let mut cmd = Command::new("ssh");
    cmd.args(rig.ssh_args())
        .args(["-W", &format!("127.0.0.1:{port}"), "tester@127.0.0.1"]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"through the tunnel\n")
        .await
        .unwrap();
    let mut back = vec![0u8; 19];
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        child.stdout.as_mut().unwrap().read_exact(&mut back),
    )
    .await
    .expect("echo in time")
    .unwrap();
    assert_eq!(back, b"through the tunnel\n");
    let _ = child.kill().await;
}

/// A port nothing listens on now (bound, then let go).
async fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// `ssh -N -R LISTEN:127.0.0.1:TARGET` through `rig`, failing if the
/// forward is refused.
fn reverse_forward(rig: &Rig, listen: &str, target: u16) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.args(rig.ssh_args())
        .args(["-N", "-o", "ExitOnForwardFailure=yes", "-R"])
        .arg(format!("{listen}:127.0.0.1:{target}"))
        .arg("tester@127.0.0.1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn openssh_reverse_forwards_only_where_the_container_allows_it() {
    // Something on the client's side to reach from the pod.
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = echo.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });

    // Off (the default): ssh -R is refused, the refusal audited.
    let off = Rig::start("").await;
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        reverse_forward(&off, &free_port().await.to_string(), target).output(),
    )
    .await
    .expect("ssh gives up in time")
    .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("remote port forwarding failed"),
        "{}",
        text(&out.stderr)
    );
    let trail = std::fs::read_to_string(off.gw.audit_dir().join("gateway.txt")).unwrap();
    assert!(
        trail.contains("reverse forward refused (reverse forwarding (ssh -R) is off for this Container"),
        "{trail}"
    );

    // Allowed: a listener in the pod reaches the client's echo; a
    // privileged port is still refused.
    let on = Rig::start_with("", |a| a.reverse_forward = true).await;
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        reverse_forward(&on, "80", target).output(),
    )
    .await
    .expect("ssh gives up in time")
    .unwrap();
    assert!(!out.status.success(), "port 80 was forwarded");
    let listen = free_port().await;
    let _forward = reverse_forward(&on, &format!("localhost:{listen}"), target)
        .spawn()
        .unwrap();
    let mut conn = eventually_connect(listen).await;
    conn.write_all(b"from the pod\n").await.unwrap();
    let mut back = [0u8; 13];
    tokio::time::timeout(std::time::Duration::from_secs(30), conn.read_exact(&mut back))
        .await
        .expect("the echo in time")
        .unwrap();
    assert_eq!(&back, b"from the pod\n");
    let trail = std::fs::read_to_string(on.gw.audit_dir().join("gateway.txt")).unwrap();
    assert!(
        trail.contains(&format!(
            "reverse forward listening on 127.0.0.1 port {listen} user=\"tester\""
        )),
        "{trail}"
    );
    assert!(
        trail.contains("refused (ssh -R port 80: only ports 1024-65535"),
        "{trail}"
    );
}

/// A private `ssh-agent` holding one fresh key; killed when dropped.
struct Agent {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    fingerprint: String,
    process: std::process::Child,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Agent {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let key = dir.path().join("id_ed25519");
        let made = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "hatchway-agent-test", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(made.success());
        let fingerprint = std::process::Command::new("ssh-keygen")
            .arg("-lf")
            .arg(&key)
            .output()
            .unwrap();
        let fingerprint = text(&fingerprint.stdout).split(' ').nth(1).unwrap().to_owned();
        let process = std::process::Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        hatchway_testkit::wait_until(
            "the ssh-agent listens",
            std::time::Duration::from_secs(20),
            std::time::Duration::from_millis(10),
            || Ok(socket.exists().then_some(())),
        )
        .unwrap();
        let added = std::process::Command::new("ssh-add")
            .arg(&key)
            .env("SSH_AUTH_SOCK", &socket)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(added.success());
        Agent {
            _dir: dir,
            socket,
            fingerprint,
            process,
        }
    }
}

/// `ssh -A` with `agent`'s socket; the remote command's output.
async fn ssh_with_agent(rig: &Rig, agent: &Agent, remote: &str) -> std::process::Output {
    let mut cmd = Command::new("ssh");
    cmd.args(rig.ssh_args())
        .arg("-A")
        .arg("tester@127.0.0.1")
        .arg(remote)
        .env("SSH_AUTH_SOCK", &agent.socket)
        .stdin(Stdio::null());
    tokio::time::timeout(std::time::Duration::from_secs(60), cmd.output())
        .await
        .expect("ssh finishes in time")
        .expect("ssh runs")
}

#[tokio::test]
async fn openssh_forwards_the_agent_only_where_the_container_allows_it() {
    let agent = Agent::start();
    let list = r#"echo "sock=${SSH_AUTH_SOCK:-none}"; ssh-add -l; echo "rc=$?""#;

    // Off (the default): the session has no agent, the refusal is audited.
    let off = Rig::start("").await;
    let out = ssh_with_agent(&off, &agent, list).await;
    let stdout = text(&out.stdout);
    assert!(stdout.contains("rc=2"), "{stdout} {}", text(&out.stderr));
    assert!(!stdout.contains(&agent.fingerprint), "{stdout}");
    assert!(!stdout.contains("sock=/tmp/hatchway-agent-"), "{stdout}");
    let trail = std::fs::read_to_string(off.gw.audit_dir().join("gateway.txt")).unwrap();
    assert!(
        trail.contains("agent forwarding refused (agent forwarding (ssh -A) is off for this Container"),
        "{trail}"
    );

    // Allowed: the session lists the client's key through its socket, and
    // the socket is gone with the session.
    let on = Rig::start_with("", |a| a.agent_forward = true).await;
    let out = ssh_with_agent(&on, &agent, list).await;
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&agent.fingerprint)
            && stdout.contains("hatchway-agent-test")
            && stdout.contains("rc=0"),
        "{stdout} {}",
        text(&out.stderr)
    );
    let socket = stdout
        .lines()
        .find_map(|l| l.strip_prefix("sock="))
        .unwrap()
        .to_owned();
    assert!(socket.starts_with("/tmp/hatchway-agent-"), "{socket}");
    let dir = std::path::Path::new(&socket).parent().unwrap().to_owned();
    hatchway_testkit::eventually("the agent socket goes with its session", || {
        let gone = !dir.exists();
        async move { gone }
    })
    .await;
    let trail = std::fs::read_to_string(on.gw.audit_dir().join("gateway.txt")).unwrap();
    assert!(
        trail.contains(&format!("agent forwarding at {socket} user=\"tester\"")),
        "{trail}"
    );
    assert!(trail.contains("started kind=agent user=\"tester\""), "{trail}");

    // Without -A nothing is made even where it is allowed.
    let out = on.ssh(&[], list).await;
    assert!(text(&out.stdout).contains("rc=2"), "{}", text(&out.stdout));
}

/// A connection to 127.0.0.1:`port` once something listens there.
async fn eventually_connect(port: u16) -> tokio::net::TcpStream {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Ok(conn) => return conn,
            Err(error) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "nothing listens on {port}: {error}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

impl Rig {
    fn scp(&self, from: String, to: String) -> Command {
        let mut cmd = Command::new("scp");
        cmd.args(self.ssh_args())
            .arg("-q")
            .arg(from)
            .arg(to)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `sftp -b` with these commands; its output.
    async fn sftp_batch(&self, commands: &str) -> std::process::Output {
        let dir = tempfile::tempdir().unwrap();
        let batch = dir.path().join("batch");
        std::fs::write(&batch, commands).unwrap();
        let run = Command::new("sftp")
            .args(self.ssh_args())
            .arg("-b")
            .arg(&batch)
            .arg("tester@127.0.0.1")
            .stdin(Stdio::null())
            .output();
        tokio::time::timeout(std::time::Duration::from_secs(120), run)
            .await
            .expect("sftp finishes in time")
            .expect("sftp runs")
    }
}

/// How long 10 MiB took each way.
struct CopyTimes {
    up: std::time::Duration,
    down: std::time::Duration,
}

impl CopyTimes {
    fn mib_per_second(took: std::time::Duration) -> f64 {
        10.0 / took.as_secs_f64()
    }
}

/// Copies 10 MiB up and back with scp (which speaks SFTP), then up again
/// with `sftp -b`, checking every copy's SHA-256.
async fn copy_10_mib_both_ways(rig: &Rig) -> CopyTimes {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("data.bin");
    let data: Vec<u8> = (0..10 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&src, &data).unwrap();
    let remote = work.path().join("remote.bin");
    let back = work.path().join("back.bin");

    let started = std::time::Instant::now();
    let up = rig
        .scp(
            src.display().to_string(),
            format!("tester@127.0.0.1:{}", remote.display()),
        )
        .output()
        .await
        .unwrap();
    let up_took = started.elapsed();
    assert!(up.status.success(), "scp up: {}", text(&up.stderr));
    let started = std::time::Instant::now();
    let down = rig
        .scp(
            format!("tester@127.0.0.1:{}", remote.display()),
            back.display().to_string(),
        )
        .output()
        .await
        .unwrap();
    let down_took = started.elapsed();
    assert!(down.status.success(), "scp down: {}", text(&down.stderr));
    assert_eq!(
        Sha256::digest(std::fs::read(&back).unwrap()),
        Sha256::digest(&data)
    );

    // sftp in batch mode: another upload, checked on this side.
    let via_sftp = work.path().join("sftp.bin");
    let out = rig
        .sftp_batch(&format!("put {} {}\n", src.display(), via_sftp.display()))
        .await;
    assert!(out.status.success(), "sftp: {}", text(&out.stderr));
    assert_eq!(
        Sha256::digest(std::fs::read(&via_sftp).unwrap()),
        Sha256::digest(&data)
    );
    CopyTimes {
        up: up_took,
        down: down_took,
    }
}

#[tokio::test]
async fn scp_and_sftp_copy_10_mib_both_ways() {
    let rig = Rig::start("").await;
    copy_10_mib_both_ways(&rig).await;
}

/// Debian's sftp-server behind the same gateway still works, and the same
/// copies through both servers, in one run, give comparable numbers
/// (printed, not asserted: this is a test, not a benchmark).
#[tokio::test]
async fn scp_copies_through_debians_sftp_server_and_ours_alike() {
    let debian = Rig::start_with_sftp("", debian_sftp_server()).await;
    let ours = Rig::start("").await;
    let theirs = copy_10_mib_both_ways(&debian).await;
    let mine = copy_10_mib_both_ways(&ours).await;
    for (name, times) in [("debian sftp-server", &theirs), ("hatchway sftp-server", &mine)] {
        eprintln!(
            "scp 10 MiB through {name}: up {:.0} MiB/s ({:?}), down {:.0} MiB/s ({:?})",
            CopyTimes::mib_per_second(times.up),
            times.up,
            CopyTimes::mib_per_second(times.down),
            times.down,
        );
    }
}

#[tokio::test]
async fn sftp_manages_files_directories_modes_and_links_on_our_server() {
    let rig = Rig::start("").await;
    let work = tempfile::tempdir().unwrap();
    let w = std::fs::canonicalize(work.path()).unwrap();
    let w = w.display();
    let local = tempfile::tempdir().unwrap();
    let note = local.path().join("note.txt");
    std::fs::write(&note, b"a note\n").unwrap();
    let note = note.display();
    let commands = format!(
        "mkdir {w}/dir\n\
         mkdir {w}/gone\n\
         put {note} {w}/dir/a.txt\n\
         put {note} {w}/dir/doomed.txt\n\
         rename {w}/dir/a.txt {w}/dir/b.txt\n\
         chmod 640 {w}/dir/b.txt\n\
         symlink b.txt {w}/dir/link\n\
         ln {w}/dir/b.txt {w}/dir/hard\n\
         rm {w}/dir/doomed.txt\n\
         rmdir {w}/gone\n\
         cd {w}/dir\n\
         pwd\n\
         ls -l\n\
         get link {w}/fetched.txt\n"
    );
    let out = rig.sftp_batch(&commands).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "sftp: {}\n{stdout}", text(&out.stderr));

    let w = work.path();
    assert!(w.join("dir").is_dir());
    assert!(!w.join("gone").exists(), "rmdir");
    assert!(!w.join("dir/a.txt").exists(), "rename");
    assert!(!w.join("dir/doomed.txt").exists(), "rm");
    assert_eq!(std::fs::read(w.join("dir/b.txt")).unwrap(), b"a note\n");
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let b = std::fs::metadata(w.join("dir/b.txt")).unwrap();
    assert_eq!(b.permissions().mode() & 0o7777, 0o640, "chmod");
    assert_eq!(
        std::fs::read_link(w.join("dir/link")).unwrap(),
        std::path::Path::new("b.txt"),
        "symlink keeps a relative target as given"
    );
    assert_eq!(
        std::fs::metadata(w.join("dir/hard")).unwrap().ino(),
        b.ino(),
        "ln"
    );
    assert_eq!(std::fs::read(w.join("fetched.txt")).unwrap(), b"a note\n");

    // `pwd` after `cd` is the server's realpath; `ls -l` shows its long names.
    assert!(
        stdout.contains(&format!(
            "Remote working directory: {}/dir",
            std::fs::canonicalize(w).unwrap().display()
        )),
        "{stdout}"
    );
    let line = stdout
        .lines()
        .find(|l| l.ends_with(" b.txt"))
        .unwrap_or_else(|| panic!("no b.txt in the listing: {stdout}"));
    assert!(line.starts_with("-rw-r-----   2 "), "{line}");
    assert!(
        stdout.lines().any(|l| l.starts_with('l') && l.ends_with(" link")),
        "{stdout}"
    );
    // (The echoed batch commands name it; the listing must not.)
    assert!(
        !stdout
            .lines()
            .any(|l| !l.starts_with("sftp>") && l.contains("doomed")),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_missing_file_is_reported_as_no_such_file() {
    let rig = Rig::start("").await;
    let work = tempfile::tempdir().unwrap();
    let missing = work.path().join("missing.txt");
    let out = rig.sftp_batch(&format!("rm {}\n", missing.display())).await;
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("No such file"),
        "{}",
        text(&out.stderr)
    );
    let out = rig
        .scp(
            format!("tester@127.0.0.1:{}", missing.display()),
            work.path().join("copy").display().to_string(),
        )
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(!work.path().join("copy").exists());
}

/// rsync does not use SFTP (it runs `rsync --server` over an exec
/// channel), but it is what many users will point at a container: it must
/// work through the gateway too (`hack/deps test` installs it).
#[tokio::test]
async fn rsync_copies_a_tree_through_the_gateway() {
    assert!(
        std::process::Command::new("rsync")
            .arg("--version")
            .output()
            .is_ok(),
        "rsync is not installed: run hack/deps test"
    );
    let rig = Rig::start("").await;
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), b"alpha").unwrap();
    std::fs::write(src.join("sub/b.bin"), vec![7u8; 300_000]).unwrap();
    let dst = work.path().join("dst");
    let ssh = std::iter::once("ssh".to_string())
        .chain(rig.ssh_args())
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new("rsync")
        .args(["-a", "-e", &ssh])
        .arg(format!("{}/", src.display()))
        .arg(format!("tester@127.0.0.1:{}/", dst.display()))
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "rsync: {}", text(&out.stderr));
    assert_eq!(std::fs::read(dst.join("a.txt")).unwrap(), b"alpha");
    assert_eq!(std::fs::read(dst.join("sub/b.bin")).unwrap(), vec![7u8; 300_000]);
}

#[tokio::test]
async fn a_wrong_host_key_is_refused_by_openssh() {
    let rig = Rig::start("").await;
    let other = russh::keys::PrivateKey::random(&mut rand::rng(), russh::keys::Algorithm::Ed25519).unwrap();
    hatchway_testkit::write_known_hosts(
        &rig.known_hosts,
        rig.port,
        &other.public_key().to_openssh().unwrap(),
    )
    .unwrap();
    let out = rig.ssh(&[], "true").await;
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("HOST IDENTIFICATION HAS CHANGED"),
        "{}",
        text(&out.stderr)
    );
}

/// A russh client that checks the host key against the one it expects.
struct Client {
    expected: russh::keys::PublicKey,
}

impl russh::client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(matches!(key, russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } if *key == self.expected))
    }
}

async fn russh_session(rig: &Rig) -> russh::client::Handle<Client> {
    let expected =
        russh::keys::PublicKey::from_openssh(&rig.gw.running.gateway.ssh.host_key_openssh()).unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", rig.port))
        .await
        .unwrap();
    let config = Arc::new(russh::client::Config::default());
    let mut handle = russh::client::connect_stream(config, tcp, Client { expected })
        .await
        .unwrap();
    assert!(handle.authenticate_none("tester").await.unwrap().success());
    handle
}

async fn collect(
    channel: &mut russh::Channel<russh::client::Msg>,
) -> (String, Option<u32>, Option<russh::Sig>) {
    let (mut out, mut code, mut signal) = (Vec::new(), None, None);
    while let Some(msg) = tokio::time::timeout(std::time::Duration::from_secs(30), channel.wait())
        .await
        .expect("output in time")
    {
        match msg {
            russh::ChannelMsg::Data { data } => out.extend_from_slice(&data),
            russh::ChannelMsg::ExitStatus { exit_status } => code = Some(exit_status),
            russh::ChannelMsg::ExitSignal { signal_name, .. } => signal = Some(signal_name),
            _ => {}
        }
    }
    (text(&out), code, signal)
}

#[tokio::test]
async fn a_pty_has_the_size_the_client_asked_for_and_follows_resizes() {
    let rig = Rig::start("").await;
    let handle = russh_session(&rig).await;
    let mut channel = handle.channel_open_session().await.unwrap();
    channel
        .request_pty(true, "xterm", 101, 33, 0, 0, &[])
        .await
        .unwrap();
    channel
        .exec(true, "stty size; tty; sleep 1; stty size")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    channel.window_change(120, 40, 0, 0).await.unwrap();
    let (out, code, _) = collect(&mut channel).await;
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(lines.first(), Some(&"33 101"), "{out:?}");
    assert!(
        lines.get(1).is_some_and(|l| l.starts_with("/dev/pts/")),
        "{out:?}"
    );
    assert_eq!(lines.get(2), Some(&"40 120"), "{out:?}");
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn a_signal_from_the_client_reaches_the_process() {
    let rig = Rig::start("").await;
    let handle = russh_session(&rig).await;
    let mut channel = handle.channel_open_session().await.unwrap();
    channel.exec(true, "echo started; exec sleep 60").await.unwrap();
    // Wait until the command runs, then signal it.
    loop {
        match channel.wait().await {
            Some(russh::ChannelMsg::Data { data }) if text(&data).contains("started") => break,
            Some(_) => continue,
            None => panic!("the channel closed before the command started"),
        }
    }
    channel.signal(russh::Sig::TERM).await.unwrap();
    let (_, code, signal) = collect(&mut channel).await;
    assert_eq!(code, None);
    assert!(matches!(signal, Some(russh::Sig::TERM)), "{signal:?}");
}

#[tokio::test]
async fn detach_keys_end_an_interactive_session() {
    let rig = Rig::start("detach_keys=ctrl-p%2Cctrl-q").await;
    let handle = russh_session(&rig).await;
    let mut channel = handle.channel_open_session().await.unwrap();
    channel
        .request_pty(true, "xterm", 80, 24, 0, 0, &[])
        .await
        .unwrap();
    channel.exec(true, "cat").await.unwrap();
    channel.data(&b"hello\r"[..]).await.unwrap();
    // The terminal echoes what cat reads; once it is back, detach.
    let mut seen = String::new();
    while !seen.contains("hello") {
        match channel.wait().await {
            Some(russh::ChannelMsg::Data { data }) => seen.push_str(&text(&data)),
            Some(_) => {}
            None => panic!("the channel closed before the echo: {seen:?}"),
        }
    }
    channel.data(&[0x10u8, 0x11][..]).await.unwrap();
    let (out, code, _) = collect(&mut channel).await;
    assert!(!out.contains('\u{10}'), "detach keys are not passed on: {out:?}");
    assert_eq!(code, None, "a detached session reports no exit status");
    let trail = rig.gw.audit_dir().join("gateway.txt");
    eventually("the detach in gateway.txt", || {
        let trail = trail.clone();
        async move {
            std::fs::read_to_string(trail)
                .unwrap_or_default()
                .contains("exit=detached")
        }
    })
    .await;
}

#[tokio::test]
async fn login_username_runs_the_session_as_that_user_when_the_workload_is_root() {
    // The shim here runs as this test's user: the switch works only as root.
    if !nix::unistd::Uid::effective().is_root() {
        let rig = Rig::start("login_username=nobody").await;
        let out = rig.ssh(&[], "id -u").await;
        assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("not root"), "{}", text(&out.stderr));
        return;
    }
    // Like sshd, an exec runs through the user's login shell: nobody's is
    // nologin here, and its refusal shows the session really became nobody
    // (root's shell would have run the command). The shim's own tests check
    // `id -u` as nobody with a direct argv.
    let rig = Rig::start("login_username=nobody").await;
    let shell = std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("nobody:")
                .map(|rest| rest.rsplit(':').next().unwrap().to_owned())
        })
        .expect("this machine has a nobody user");
    let out = rig.ssh(&[], "id -u").await;
    if shell.ends_with("nologin") {
        assert!(
            text(&out.stdout).contains("not available"),
            "{:?} {}",
            out,
            text(&out.stderr)
        );
        assert_ne!(out.status.code(), Some(0));
    } else {
        assert_eq!(text(&out.stdout), "65534\n", "{}", text(&out.stderr));
    }
    let trail = std::fs::read_to_string(rig.gw.audit_dir().join("gateway.txt")).unwrap();
    assert!(trail.contains(r#"kind=exec user="tester""#), "{trail}");
}

#[tokio::test]
async fn an_unknown_login_username_is_a_clear_error() {
    let rig = Rig::start("login_username=no-such-user").await;
    let out = rig.ssh(&[], "id -u").await;
    assert_eq!(out.status.code(), Some(127));
    let err = text(&out.stderr);
    assert!(
        err.contains("hatchway: cannot start exec") && err.contains("no-such-user"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn a_malformed_login_username_is_refused_before_the_upgrade() {
    let gw = TestSidecar::start(UID).await;
    let mut conn = GatewayConn::connect(gw.addr()).await;
    let req = conn
        .request("POST", "/ssh?login_username=a%3Brm", ProofMode::Valid)
        .header("connection", "upgrade")
        .header("upgrade", "ssh")
        .body(empty())
        .unwrap();
    let response = conn.send_checked(req).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(body_text(response).await.contains("is not a user name"));
}
