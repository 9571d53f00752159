//! Sessions that survive (docs/sessions.md), on the real cluster: a shell
//! through the config-ssh block prints a numbered line every 50 ms while
//! the operator Deployment is restarted twice; a 100 MiB `scp` goes up
//! during a `kubectl rollout restart`; a held `kubectl hatch
//! port-forward` connection (numbered lines both ways) outlives every
//! replica being killed and a 5 s network cut (iptables) between the CLI
//! and the router; a shell whose ssh and ProxyCommand were killed is
//! listed by `sessions` and taken over with `shell --resume`. Direct
//! access and tunnels only.

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use common::release::*;
use hatchway_e2e::{TestNamespace, run_within, wait_until};
use serde_json::json;

#[test]
fn shells_scp_and_port_forwards_survive_operator_restarts() -> Result<()> {
    sessions_survive("resume", &[])
}

#[test]
fn with_tunnels_only_sessions_survive_too() -> Result<()> {
    sessions_survive("resume-tun", &["--set", "router.directAccess=false"])
}

/// The workload: the web server, and a line echo server on 9000.
const SCRIPT: &str = "nc -ll -p 9000 -e cat & exec httpd -f -p 8080 -h /www";

fn sessions_survive(prefix: &str, values: &[&str]) -> Result<()> {
    let users = TestNamespace::new(&format!("{prefix}-users"))?;
    let release = Release::install(prefix, &users, values)?;
    let alice = User::new(&users, &release, "alice", Some("edit"))?;
    users.apply(&container("web", SCRIPT, json!([])))?;
    wait_phase(&users, "web", "Running")?;
    alice.wait_rights("web")?;
    if let Err(error) = survive(prefix, &users, &release, &alice) {
        // The sidecar's side of the story: its audit trail.
        let audit = alice.run(&["logs", "web", "gateway.txt"]).map(|out| show(&out));
        return Err(error.context(format!("the sidecar's audit trail: {audit:?}")));
    }
    users.passed();
    release.ns.passed();
    Ok(())
}

fn survive(prefix: &str, users: &TestNamespace, release: &Release, alice: &User) -> Result<()> {
    let ssh_config = alice.dir.path().join("ssh_config");
    let out = alice.run(&["config-ssh", "--ssh-config", &ssh_config.display().to_string()])?;
    ensure!(out.status.success(), "config-ssh: {}", show(&out));
    let host = format!("web.{}.e2e.hatchway", users.name);
    let ssh_tool = |program: &str| alice.ssh_command(program, &ssh_config);

    // 1. Numbered lines through ssh while the Deployment restarts twice.
    let out_file = alice.dir.path().join("lines.out");
    let err_file = alice.dir.path().join("lines.err");
    let mut lines = ssh_tool("ssh")
        .arg(&host)
        .arg("i=1; while [ $i -le 600 ]; do echo line $i; i=$((i+1)); sleep 0.05; done; exit 3")
        .stdout(std::fs::File::create(&out_file)?)
        .stderr(std::fs::File::create(&err_file)?)
        .spawn()?;
    for after in ["line 20\n", "line 200\n"] {
        wait_until(&format!("{after:?} through ssh"), WAIT, POLL, || {
            Ok(std::fs::read_to_string(&out_file)?.contains(after).then_some(()))
        })?;
        release.rollout_restart()?;
    }
    let status = wait_until("the ssh command to end", Duration::from_secs(300), POLL, || {
        Ok(lines.try_wait()?)
    })?;
    let out = std::fs::read_to_string(&out_file)?;
    let err = std::fs::read_to_string(&err_file)?;
    let expected: String = (1..=600).map(|i| format!("line {i}\n")).collect();
    ensure!(
        out == expected,
        "lines through two restarts (stderr: {err}): {out}"
    );
    ensure!(status.code() == Some(3), "exit code {status:?}; stderr: {err}");
    ensure!(
        err.contains("hatchway: connection lost, resuming…"),
        "stderr: {err}"
    );
    ensure!(err.contains("hatchway: resumed after "), "stderr: {err}");
    eprintln!("{prefix}: ssh through two rollout restarts: {}", err.trim());

    // 2. 100 MiB up with scp during a rollout restart.
    let data: Vec<u8> = (0..100 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let up = alice.dir.path().join("up.bin");
    std::fs::write(&up, &data)?;
    let scp_err = alice.dir.path().join("scp.err");
    let mut scp = ssh_tool("scp")
        .arg(&up)
        .arg(format!("{host}:/tmp/up.bin"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&scp_err)?)
        .spawn()?;
    release.rollout_restart()?;
    let status = wait_until("scp to end", Duration::from_secs(300), POLL, || {
        Ok(scp.try_wait()?)
    })?;
    let err = std::fs::read_to_string(&scp_err)?;
    ensure!(status.success(), "scp during a rollout restart: {err}");
    let mut sum = ssh_tool("ssh");
    sum.arg(&host).arg("sha256sum /tmp/up.bin");
    let out = run_within(sum, WAIT)?;
    ensure!(
        stdout(&out).starts_with(&sha256_hex(&data)),
        "the file scp'd through a restart: {} (scp said {err})",
        show(&out)
    );
    eprintln!("{prefix}: 100 MiB scp through a rollout restart: checksum equal");

    // 3. A held port-forward connection: every replica killed, then a 5 s
    // network cut between the CLI and the router.
    let mut forward = alice.hatch(&["port-forward", "web", ":9000"])?;
    let pf_err = alice.dir.path().join("pf.err");
    let mut forward = forward
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&pf_err)?)
        .spawn()?;
    let mut printed = String::new();
    // Kept open to the end: the forward prints a line per listener.
    let mut printed_by = BufReader::new(forward.stdout.take().context("stdout")?);
    printed_by.read_line(&mut printed)?;
    let local: std::net::SocketAddr = printed
        .split_whitespace()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("no address in {printed:?}"))?;
    let conn = std::net::TcpStream::connect(local)?;
    conn.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut writer = conn.try_clone()?;
    let mut reader = BufReader::new(conn);
    let mut echo = |i: u32| echo_line(&mut writer, &mut reader, &format!("line {i}"), &pf_err);
    for i in 0..50 {
        echo(i)?;
    }
    let killed = Instant::now();
    for (pod, _) in release.pods()? {
        release.ns.kubectl(&[
            "delete",
            "pod",
            &pod,
            "--grace-period=0",
            "--force",
            "--wait=false",
        ])?;
    }
    for i in 50..100 {
        echo(i)?;
    }
    eprintln!(
        "{prefix}: a held port-forward connection echoed again {:.2} s after every replica was killed",
        killed.elapsed().as_secs_f64()
    );
    {
        // A line sent while the network is cut comes back after it.
        let cut = Cut::router(release.node_port)?;
        let sent = std::thread::scope(|scope| {
            let echoed = scope.spawn(|| echo(100));
            wait_until("5 s of the cut", Duration::from_secs(10), POLL, || {
                Ok((cut.since.elapsed() >= Duration::from_secs(5)).then_some(()))
            })?;
            drop(cut);
            echoed.join().expect("the echo thread")
        });
        sent?;
    }
    for i in 101..150 {
        echo(i)?;
    }
    let _ = forward.kill();
    let _ = forward.wait();
    drop(printed_by);

    // 4. Bob, who may open port-forwards himself, presents alice's
    // session id and secret: 403, and the audit trail names him.
    let bob = User::new(users, release, "bob", Some("edit"))?;
    let ca = alice.dir.path().join("router-ca.crt");
    std::fs::write(&ca, release.ca_pem()?)?;
    let path = format!(
        "{}/v1/namespaces/{}/containers/web/portforward?port=9000",
        release.server(),
        users.name
    );
    // `POST path` asking to upgrade to a port-forward, as `token`'s user,
    // through the router's own URL (real TLS, its CA).
    let upgrade = |token: &str, headers: &[String], max_time: &str| {
        let mut curl = Command::new("curl");
        curl.args(["-sS", "--http1.1", "--max-time", max_time, "-X", "POST"])
            .arg("--cacert")
            .arg(&ca)
            .args(["-H", "Connection: Upgrade", "-H", "Upgrade: tcp"])
            .args(["-H", &format!("Authorization: Bearer {token}")]);
        for header in headers {
            curl.args(["-H", header]);
        }
        curl.arg(&path);
        curl
    };
    let answer = alice.dir.path().join("answer.txt");
    let mut open = upgrade(&alice.token, &["Hatchway-Resumable: 1".into()], "5");
    open.args(["-o", "/dev/null", "-D"]).arg(&answer);
    // A 101 leaves curl holding the connection until --max-time.
    let _ = run_within(open, WAIT)?;
    let opened = std::fs::read_to_string(&answer)?;
    let header = |name: &str| {
        opened
            .lines()
            .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)))
            .map(|(_, v)| v.trim().to_owned())
            .with_context(|| format!("no {name} in alice's 101: {opened}"))
    };
    let (id, secret) = (header("hatchway-session-id")?, header("hatchway-session-secret")?);
    let mut stolen = upgrade(
        &bob.token,
        &[
            format!("Hatchway-Session-Id: {id}"),
            format!("Hatchway-Session-Secret: {secret}"),
            "Hatchway-Session-Offset: 0".into(),
        ],
        "20",
    );
    stolen.args(["-w", "\n%{http_code}"]);
    let out = run_within(stolen, WAIT)?;
    let said = stdout(&out);
    ensure!(
        said.ends_with("\n403") && said.contains("belongs to another user"),
        "bob resuming alice's session: {}",
        show(&out)
    );
    let audit = stdout(&alice.run(&["logs", "web", "gateway.txt"])?);
    ensure!(
        audit.contains(&format!("resumable {id} resume refused (other_user)")) && !audit.contains(&secret),
        "the audit trail: {audit}"
    );
    eprintln!("{prefix}: bob with alice's session id and secret: 403");

    // 5. The CLI killed (a laptop's lid closed): `shell --resume` takes
    // the pty over with what it wrote meanwhile.
    take_over_a_killed_shell(prefix, &ssh_tool, &host, alice, &bob)
}

/// Ticks go on in a pty shell whose ssh and ProxyCommand are killed;
/// `sessions` lists it detached (to alice, not bob); `shell --resume`
/// shows every tick once, in order, and the shell still takes input.
fn take_over_a_killed_shell(
    prefix: &str,
    ssh_tool: &dyn Fn(&str) -> Command,
    host: &str,
    alice: &User,
    bob: &User,
) -> Result<()> {
    use std::os::unix::process::CommandExt as _;
    let first_out = alice.dir.path().join("first.out");
    let mut first = ssh_tool("ssh");
    first
        .args(["-tt", host])
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&first_out)?)
        .stderr(Stdio::null())
        .process_group(0);
    let mut first = first.spawn()?;
    first
        .stdin
        .as_mut()
        .context("stdin")?
        .write_all(b"echo rea''dy; i=1; while [ $i -le 100 ]; do echo tick-$i; i=$((i+1)); sleep 0.05; done; echo do''ne\n")?;
    wait_until("the ticks to start", WAIT, POLL, || {
        Ok(std::fs::read_to_string(&first_out)?
            .contains("ready\r\n")
            .then_some(()))
    })?;
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(first.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    first.wait()?;
    let seen = std::fs::read_to_string(&first_out)?;
    ensure!(
        !seen.contains("done\r\n"),
        "killed before the ticks ended: {seen}"
    );

    // The only shell left: the ssh sessions of the steps before ended
    // when ssh did (it hangs its ProxyCommand up as it exits).
    let listed = wait_until("the shell listed as detached", WAIT, POLL, || {
        let out = alice.run(&["sessions", "web"])?;
        let listed = stdout(&out);
        let shells: Vec<Vec<&str>> = listed
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|row| row.get(1) == Some(&"shell"))
            .collect();
        let detached = matches!(&shells[..], [row] if row.len() == 5 && row[3] != "-" && row[4] == "shell");
        Ok(detached.then_some(listed))
    })?;
    // Bob has no resumable session of his own; alice's terminal is in
    // the terminals' table (anyone who may open a shell may watch it),
    // her resumable session is not his to see.
    let out = bob.run(&["sessions", "web"])?;
    let bobs = stdout(&out);
    ensure!(
        bobs.starts_with("No resumable sessions of yours in web.\n\nTERMINAL")
            && bobs.lines().any(|l| l.contains(" live ") && l.ends_with("shell")),
        "bob sees alice's sessions, or not her terminal: {}",
        show(&out)
    );

    let wrapper = alice.dir.path().join("ssh-tt");
    std::fs::write(&wrapper, "#!/bin/sh\nexec ssh -tt \"$@\"\n")?;
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let second_out = alice.dir.path().join("second.out");
    let second_err = alice.dir.path().join("second.err");
    let mut second = alice.hatch(&[
        "shell",
        "web",
        "--resume",
        "--ssh",
        &wrapper.display().to_string(),
    ])?;
    let asked = Instant::now();
    let mut second = second
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&second_out)?)
        .stderr(std::fs::File::create(&second_err)?)
        .spawn()?;
    wait_until("the screen through --resume", WAIT, POLL, || {
        Ok(std::fs::read_to_string(&second_out)?
            .contains("tick-")
            .then_some(()))
    })?;
    let back = asked.elapsed();
    let screen = wait_until("the ticks through --resume", WAIT, POLL, || {
        let text = std::fs::read_to_string(&second_out)?;
        Ok(text.contains("done\r\n").then_some(text))
    })?;
    let ticks: Vec<u32> = screen
        .split("\r\n")
        .filter_map(|line| line.strip_prefix("tick-")?.parse().ok())
        .collect();
    ensure!(
        ticks == (1..=100).collect::<Vec<_>>(),
        "every tick once, in order, after --resume (stderr: {}): {screen}",
        std::fs::read_to_string(&second_err).unwrap_or_default()
    );
    second.stdin.as_mut().context("stdin")?.write_all(b"exit 7\n")?;
    let status = wait_until("the resumed shell to end", WAIT, POLL, || Ok(second.try_wait()?))?;
    ensure!(
        status.code() == Some(7),
        "the resumed shell's exit code {status:?}; stderr: {}",
        std::fs::read_to_string(&second_err).unwrap_or_default()
    );
    eprintln!(
        "{prefix}: a killed shell taken over with --resume, screen back {:.2} s after `shell --resume` started, every tick once; listed as {:?}",
        back.as_secs_f64(),
        listed.lines().find(|l| l.contains(" shell ")).unwrap_or_default()
    );
    Ok(())
}

/// Drops the packets from this host to the router's NodePort while it
/// lives (iptables): a network cut, not a closed connection.
struct Cut {
    port: u16,
    since: Instant,
}

impl Cut {
    fn router(port: u16) -> Result<Self> {
        iptables("-I", port)?;
        Ok(Self {
            port,
            since: Instant::now(),
        })
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        if let Err(error) = iptables("-D", self.port) {
            eprintln!("removing the iptables rule: {error}");
        }
    }
}

/// In the raw table, before NAT: the NodePort is still the destination.
fn iptables(action: &str, port: u16) -> Result<()> {
    let port = port.to_string();
    let out = std::process::Command::new("iptables")
        .args([
            "-t", "raw", action, "OUTPUT", "-p", "tcp", "--dport", &port, "-j", "DROP",
        ])
        .output()?;
    ensure!(out.status.success(), "iptables {action}: {}", show(&out));
    Ok(())
}

/// Writes `line` and reads it back from the echo server.
fn echo_line(
    writer: &mut std::net::TcpStream,
    reader: &mut BufReader<std::net::TcpStream>,
    line: &str,
    log: &std::path::Path,
) -> Result<()> {
    let said = || std::fs::read_to_string(log).unwrap_or_default();
    writeln!(writer, "{line}")
        .with_context(|| format!("sending {line:?} (port-forward said: {})", said()))?;
    let mut back = String::new();
    reader
        .read_line(&mut back)
        .with_context(|| format!("reading {line:?} back (port-forward said: {})", said()))?;
    ensure!(
        back == format!("{line}\n"),
        "echo of {line:?}: {back:?} (port-forward said: {})",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    Ok(())
}
