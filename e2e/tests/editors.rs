//! What editors' remote-SSH extensions (VS Code Remote-SSH, JetBrains
//! Gateway) do, through the `kubectl hatch config-ssh` block and the real
//! OpenSSH on the real cluster: ControlMaster multiplexing, a script on
//! stdin of `ssh -T host sh`, `RemoteCommand`, keepalives through a quiet
//! command, `-L` and `-D` (SOCKS) to ports in the pod — and `-D` refused
//! anywhere but the pod's own localhost; `ssh -A` only into a Container
//! that allows it, and out of reach of the container's other users.
//! docs/editors.md.

mod common;

use std::process::{Command, Output, Stdio};

use anyhow::{Result, ensure};
use common::release::*;
use hatchway_e2e::{TestNamespace, run_within, wait_until};
use serde_json::json;

const SCRIPT: &str = "exec httpd -f -p 8080 -h /www";

#[test]
fn editors_remote_ssh_works_through_the_config_ssh_block() -> Result<()> {
    let users = TestNamespace::new("editors")?;
    let release = Release::install("editors", &users, &[])?;
    let alice = User::new(&users, &release, "alice", Some("edit"))?;
    users.apply(&container("web", SCRIPT, json!([])))?;
    let mut agent_allowed: serde_json::Value =
        serde_json::from_str(&container("agent", "exec sleep 3600", json!([])))?;
    agent_allowed["spec"]["portForward"] = json!({ "agent": true });
    users.apply(&agent_allowed.to_string())?;
    wait_phase(&users, "web", "Running")?;
    alice.wait_rights("web")?;

    let ssh_config = alice.dir.path().join("ssh_config");
    let out = alice.run(&["config-ssh", "--ssh-config", &ssh_config.display().to_string()])?;
    ensure!(out.status.success(), "config-ssh: {}", show(&out));
    let host = format!("web.{}.e2e.hatchway", users.name);
    let ssh = |args: &[&str]| {
        let mut command = alice.ssh_command("ssh", &ssh_config);
        command.args(args);
        command
    };
    let run = |args: &[&str]| -> Result<Output> { run_within(ssh(args), WAIT) };

    // ControlMaster: the first connection is the master, the next
    // commands ride it (VS Code's "remote.SSH.useLocalServer" does this).
    let control = alice.dir.path().join("cm-%C");
    let control = control.display().to_string();
    let mux = [
        "-o",
        "ControlMaster=auto",
        "-o",
        &format!("ControlPath={control}"),
        "-o",
        "ControlPersist=60",
    ];
    let out = run(&[&mux[..], &[host.as_str(), "echo first"]].concat())?;
    ensure!(stdout(&out) == "first\n", "the master's command: {}", show(&out));
    let out = run(&[&mux[..], &["-O", "check", host.as_str()]].concat())?;
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("Master running"),
        "ssh -O check: {}",
        show(&out)
    );
    let out = run(&[&mux[..], &[host.as_str(), "echo second-$((1+1))"]].concat())?;
    ensure!(stdout(&out) == "second-2\n", "through the master: {}", show(&out));
    let _ = run(&[&mux[..], &["-O", "exit", host.as_str()]].concat());

    // A script on stdin of `ssh -T host sh` (how Remote-SSH installs and
    // starts its server).
    let mut child = ssh(&["-T", &host, "sh"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    std::io::Write::write_all(
        child.stdin.as_mut().expect("stdin"),
        b"set -e\nx=$((6*7))\necho \"answer $x\"\ncd /tmp && pwd\nexit 0\n",
    )?;
    drop(child.stdin.take());
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success() && stdout(&out) == "answer 42\n/tmp\n",
        "a script on stdin: {}",
        show(&out)
    );

    // RemoteCommand (JetBrains Gateway and custom setups set it).
    let out = run(&[
        "-o",
        "RemoteCommand=echo remote-$((20+1))",
        "-o",
        "RequestTTY=no",
        &host,
    ])?;
    ensure!(stdout(&out) == "remote-21\n", "RemoteCommand: {}", show(&out));

    // Keepalives through a command that says nothing for 4 s: every one
    // answered, or ssh would give up after the second.
    let out = run(&[
        "-o",
        "ServerAliveInterval=1",
        "-o",
        "ServerAliveCountMax=2",
        &host,
        "sleep 4; echo still-here",
    ])?;
    ensure!(stdout(&out) == "still-here\n", "keepalives: {}", show(&out));

    // -D: a SOCKS proxy that reaches the pod's own ports by name…
    let local = free_port()?;
    let mut socks = ssh(&[
        "-o",
        "ExitOnForwardFailure=yes",
        "-N",
        "-D",
        &format!("127.0.0.1:{local}"),
        &host,
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()?;
    let curl = |url: &str| -> Result<Output> {
        let mut curl = Command::new("curl");
        curl.args([
            "-sS",
            "--max-time",
            "10",
            "--socks5-hostname",
            &format!("127.0.0.1:{local}"),
            url,
        ]);
        run_within(curl, WAIT)
    };
    let page = wait_until("the page through ssh -D", WAIT, POLL, || {
        let out = curl("http://localhost:8080/")?;
        Ok(out.status.success().then(|| stdout(&out)))
    });
    // …and nothing else: the pod's network is not a jump host.
    let elsewhere = curl(&format!("http://{}:{}/", release.node_ip, release.node_port));
    let _ = socks.kill();
    let _ = socks.wait();
    ensure!(page?.contains("hatchway e2e workload"), "ssh -D page");
    let elsewhere = elsewhere?;
    ensure!(
        !elsewhere.status.success(),
        "ssh -D reached another host: {}",
        show(&elsewhere)
    );
    // ssh -A: the client's agent reaches a session only where the
    // Container allows it, and only the session's user (root here) can use
    // it: another uid in the container is refused by the directory's mode.
    let agent = PrivateAgent::start(alice.dir.path())?;
    wait_phase(&users, "agent", "Running")?;
    alice.wait_rights("agent")?;
    let with_agent = |host: &str, remote: &str| -> Result<String> {
        let mut command = ssh(&["-A", host, remote]);
        command.env("SSH_AUTH_SOCK", &agent.socket);
        Ok(stdout(&run_within(command, WAIT)?))
    };
    let off = with_agent(&host, "attack agent-list")?;
    ensure!(
        off == "agent-list: no SSH_AUTH_SOCK\n",
        "ssh -A where it is off: {off:?}"
    );
    let agent_host = format!("agent.{}.e2e.hatchway", users.name);
    let on = with_agent(&agent_host, "attack agent-list; attack agent-list 1000")?;
    ensure!(
        on == "agent-list: 1 key(s): hatchway-e2e-agent\nagent-list: cannot connect: Permission denied (os error 13)\n",
        "ssh -A where it is allowed: {on:?}"
    );
    eprintln!(
        "editors: ControlMaster, ssh -T sh with a script, RemoteCommand, keepalives, -D to localhost (and not elsewhere), -A where allowed work"
    );
    users.passed();
    release.ns.passed();
    Ok(())
}

/// A private `ssh-agent` holding one fresh key, its socket in `dir`;
/// killed when dropped.
struct PrivateAgent {
    socket: std::path::PathBuf,
    process: std::process::Child,
}

impl PrivateAgent {
    fn start(dir: &std::path::Path) -> Result<Self> {
        let socket = dir.join("agent.sock");
        let key = dir.join("agent_ed25519");
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "hatchway-e2e-agent", "-f"])
            .arg(&key)
            .status()?;
        ensure!(made.success(), "ssh-keygen failed");
        let process = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(Stdio::null())
            .spawn()?;
        let agent = PrivateAgent { socket, process };
        wait_until("the ssh-agent listens", WAIT, POLL, || {
            Ok(agent.socket.exists().then_some(()))
        })?;
        let added = Command::new("ssh-add")
            .arg(&key)
            .env("SSH_AUTH_SOCK", &agent.socket)
            .stderr(Stdio::null())
            .status()?;
        ensure!(added.success(), "ssh-add failed");
        Ok(agent)
    }
}

impl Drop for PrivateAgent {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
