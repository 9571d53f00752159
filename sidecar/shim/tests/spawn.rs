//! The spawn socket end to end: a real shim process, the crate's client,
//! fds passed over SCM_RIGHTS.

mod support;

use hatchway_shim::{FdStream, PtyRequest, SpawnError, SpawnRequest, Spawned, SpawnedIo, spawn};
use support::{DEADLINE, Shim, is_root, wait_until_async};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// A shim whose command waits for `$WORK/done`, then exits with 4.
fn idle_shim() -> Shim {
    let shim = Shim::start(&[
        "sh",
        "-c",
        r#"while [ ! -e "$WORK/done" ]; do sleep 0.05; done; exit 4"#,
    ]);
    shim.wait_for_socket();
    shim
}

fn argv(args: &[&str]) -> Option<Vec<String>> {
    Some(args.iter().map(|a| a.to_string()).collect())
}

fn pty(cols: u16, rows: u16) -> Option<PtyRequest> {
    Some(PtyRequest {
        term: "xterm-test".into(),
        cols,
        rows,
    })
}

async fn read_all(reader: impl AsyncRead + Unpin) -> String {
    let mut reader = reader;
    let mut out = Vec::new();
    tokio::time::timeout(DEADLINE, reader.read_to_end(&mut out))
        .await
        .expect("the output ends in time")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs a pipes session to the end: (stdout, stderr, exit code).
async fn run_pipes(socket: &str, req: SpawnRequest, stdin: &[u8]) -> (String, String, i32) {
    let Spawned { io, control, .. } = spawn(socket, &req).await.unwrap();
    let SpawnedIo::Pipes {
        stdin: input,
        stdout,
        stderr,
    } = io
    else {
        panic!("asked for pipes")
    };
    let mut input = FdStream::new(input).unwrap();
    // Write while reading: a large input would otherwise fill both pipes.
    let write = async {
        input.write_all(stdin).await.unwrap();
        input.shutdown().await.unwrap();
    };
    let (_, (out, err, code)) = tokio::join!(write, finish(stdout, stderr, &control));
    (out, err, code)
}

/// Reads a pipes session's output to the end and waits for its exit:
/// (stdout, stderr, exit code).
async fn finish(
    stdout: std::os::fd::OwnedFd,
    stderr: std::os::fd::OwnedFd,
    control: &hatchway_shim::SpawnControl,
) -> (String, String, i32) {
    let (out, err) = tokio::join!(
        read_all(FdStream::new(stdout).unwrap()),
        read_all(FdStream::new(stderr).unwrap())
    );
    let status = tokio::time::timeout(DEADLINE, control.wait())
        .await
        .unwrap()
        .unwrap();
    (out, err, status.exit_code())
}

/// Runs a pty session to the end: (output, exit code).
async fn run_pty(socket: &str, req: SpawnRequest) -> (String, i32) {
    let spawned = spawn(socket, &req).await.unwrap();
    let SpawnedIo::Pty { master } = spawned.io else {
        panic!("asked for a pty")
    };
    let out = read_all(FdStream::new(master).unwrap()).await;
    let status = tokio::time::timeout(DEADLINE, spawned.control.wait())
        .await
        .unwrap()
        .unwrap();
    (out, status.exit_code())
}

#[tokio::test]
async fn a_pty_session_has_the_requested_size_and_a_dev_pts_terminal() {
    let shim = idle_shim();
    let req = SpawnRequest {
        argv: argv(&["stty", "size"]),
        pty: pty(101, 33),
        ..Default::default()
    };
    let (out, code) = run_pty(&shim.socket(), req).await;
    assert_eq!((out.trim(), code), ("33 101", 0));

    let req = SpawnRequest {
        argv: argv(&["tty"]),
        pty: pty(80, 24),
        ..Default::default()
    };
    let (out, code) = run_pty(&shim.socket(), req).await;
    assert!(out.starts_with("/dev/pts/"), "tty says {out:?}");
    assert_eq!(code, 0);
}

#[tokio::test]
async fn a_pty_session_gets_the_term_and_environment_asked_for() {
    let shim = idle_shim();
    let req = SpawnRequest {
        command: Some(r#"echo "$GREETING $TERM""#.into()),
        env: vec![("GREETING".into(), "hi".into())],
        pty: pty(80, 24),
        ..Default::default()
    };
    let (out, code) = run_pty(&shim.socket(), req).await;
    assert_eq!((out.trim(), code), ("hi xterm-test", 0));
}

#[tokio::test]
async fn resizing_the_pty_reaches_the_session_as_sigwinch() {
    let shim = idle_shim();
    let req = SpawnRequest {
        argv: argv(&[
            "sh",
            "-c",
            "trap 'stty size; exit 0' WINCH; echo ready; while :; do sleep 0.05; done",
        ]),
        pty: pty(80, 24),
        ..Default::default()
    };
    let spawned = spawn(&shim.socket(), &req).await.unwrap();
    let SpawnedIo::Pty { master } = spawned.io else {
        panic!("asked for a pty")
    };
    let mut master = FdStream::new(master).unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 1024];
    while !seen.contains("ready") {
        let n = tokio::time::timeout(DEADLINE, master.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "the session ended early: {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    spawned.control.resize(132, 50).unwrap();
    let rest = read_all(master).await;
    assert!(
        rest.contains("50 132"),
        "after the resize the session saw {rest:?}"
    );
    assert_eq!(spawned.control.wait().await.unwrap().exit_code(), 0);
}

#[tokio::test]
async fn stdin_round_trips_through_cat_over_pipes() {
    let shim = idle_shim();
    let req = SpawnRequest {
        argv: argv(&["cat"]),
        ..Default::default()
    };
    let data = "hello\n".repeat(50_000); // more than a pipe buffer
    let (out, err, code) = run_pipes(&shim.socket(), req, data.as_bytes()).await;
    assert_eq!(out.len(), data.len());
    assert!(out == data);
    assert_eq!((err.as_str(), code), ("", 0));
}

#[tokio::test]
async fn stderr_is_separate_and_the_exit_code_is_reported() {
    let shim = idle_shim();
    let req = SpawnRequest {
        argv: argv(&["sh", "-c", "echo out; echo err >&2; exit 3"]),
        ..Default::default()
    };
    let (out, err, code) = run_pipes(&shim.socket(), req, b"").await;
    assert_eq!((out.as_str(), err.as_str(), code), ("out\n", "err\n", 3));
}

#[tokio::test]
async fn without_argv_the_users_login_shell_runs() {
    let shim = idle_shim();
    let (out, _, code) = run_pipes(&shim.socket(), SpawnRequest::default(), b"echo \"$0\"; exit 7\n").await;
    assert!(
        out.starts_with('-'),
        "a login shell's $0 starts with '-': {out:?}"
    );
    assert_eq!(code, 7);
}

#[tokio::test]
async fn a_signal_sent_through_the_client_reaches_the_process() {
    let shim = idle_shim();
    let req = SpawnRequest {
        argv: argv(&["sleep", "60"]),
        ..Default::default()
    };
    let spawned = spawn(&shim.socket(), &req).await.unwrap();
    spawned.signal(libc::SIGTERM).await.unwrap();
    let status = tokio::time::timeout(DEADLINE, spawned.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (status.code, status.signal, status.exit_code()),
        (None, Some(libc::SIGTERM), 143)
    );
    // Waiting again gives the same answer.
    assert_eq!(spawned.wait().await.unwrap(), status);
}

#[tokio::test]
async fn a_client_that_disconnects_hangs_the_session_up() {
    let shim = idle_shim();
    let marker = shim.work().join("hup");
    let script = format!(
        "trap 'touch {}; exit 0' HUP; echo started; while :; do sleep 0.05; done",
        marker.display()
    );
    let req = SpawnRequest {
        argv: argv(&["sh", "-c", &script]),
        ..Default::default()
    };
    let Spawned { io, control, .. } = spawn(&shim.socket(), &req).await.unwrap();
    let SpawnedIo::Pipes { stdout, .. } = io else {
        panic!("asked for pipes")
    };
    let mut stdout = FdStream::new(stdout).unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(DEADLINE, stdout.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"started\n");
    drop(control);
    wait_until_async("the session gets SIGHUP", || marker.exists()).await;
}

#[tokio::test]
async fn sessions_are_reaped_without_stealing_the_commands_exit_status() {
    let shim = idle_shim();
    for code in [0, 1, 2] {
        let req = SpawnRequest {
            argv: argv(&["sh", "-c", &format!("exit {code}")]),
            ..Default::default()
        };
        let (_, _, got) = run_pipes(&shim.socket(), req, b"").await;
        assert_eq!(got, code);
    }
    shim.touch("done");
    let done = tokio::task::spawn_blocking(move || shim.wait()).await.unwrap();
    assert_eq!(done.code, 4);
}

#[tokio::test]
async fn an_unknown_user_is_refused_with_a_clear_message() {
    let shim = idle_shim();
    let req = SpawnRequest {
        argv: argv(&["true"]),
        user: Some("no-such-user".into()),
        ..Default::default()
    };
    match spawn(&shim.socket(), &req).await {
        Err(SpawnError::Refused(message)) => {
            assert_eq!(
                message,
                "unknown user no-such-user: not in the workload's /etc/passwd"
            )
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_missing_program_is_refused_with_a_clear_message() {
    let shim = idle_shim();
    let req = SpawnRequest {
        argv: argv(&["/no/such/program"]),
        ..Default::default()
    };
    match spawn(&shim.socket(), &req).await {
        Err(SpawnError::Refused(message)) => {
            assert!(message.starts_with("cannot run /no/such/program: "), "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_missing_working_directory_is_refused() {
    let shim = idle_shim();
    let req = SpawnRequest {
        argv: argv(&["true"]),
        cwd: Some("/no/such/dir".into()),
        ..Default::default()
    };
    let error = spawn(&shim.socket(), &req).await.unwrap_err();
    assert_eq!(error.to_string(), "working directory /no/such/dir does not exist");
}

#[tokio::test]
async fn the_session_runs_in_the_requested_directory() {
    let shim = idle_shim();
    let req = SpawnRequest {
        argv: argv(&["pwd"]),
        cwd: Some("/tmp".into()),
        ..Default::default()
    };
    let (out, _, code) = run_pipes(&shim.socket(), req, b"").await;
    assert_eq!((out.as_str(), code), ("/tmp\n", 0));
}

#[tokio::test]
async fn no_other_process_can_take_the_socket_name_while_the_shim_holds_it() {
    // What a workload process would try, to stand in for the shim: the name
    // is bound before the command starts, and stays taken.
    let shim = idle_shim();
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(shim.socket().as_bytes()).unwrap();
    let error = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
    // And there is no file anywhere to replace.
    assert!(!shim.work().join("run").exists());
}

#[tokio::test]
async fn an_oversized_request_is_refused_without_being_read() {
    let shim = idle_shim();
    let mut stream = hatchway_shim::connect(&shim.socket()).unwrap();
    stream
        .write_all(&(64u32 * 1024 * 1024).to_be_bytes())
        .await
        .unwrap();
    let mut len = [0u8; 4];
    tokio::time::timeout(DEADLINE, stream.read_exact(&mut len))
        .await
        .unwrap()
        .unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).await.unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["type"], "error");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("over the 1048576-byte limit"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_missing_socket_is_a_connect_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let socket = format!("hatchway-test{}/nothing", dir.path().display());
    let error = spawn(&socket, &SpawnRequest::default()).await.unwrap_err();
    assert!(matches!(error, SpawnError::Connect { .. }));
    assert!(error.to_string().contains(&format!("@{socket}")), "{error}");
}

#[tokio::test]
async fn a_root_workload_runs_sessions_as_another_user() {
    if !is_root() {
        eprintln!("not root: switching users cannot be tested here");
        return;
    }
    let shim = idle_shim();
    let req = SpawnRequest {
        argv: argv(&["sh", "-c", r#"echo "$(id -u) $(id -g) $USER $HOME""#]),
        user: Some("nobody".into()),
        ..Default::default()
    };
    let (out, err, code) = run_pipes(&shim.socket(), req, b"").await;
    assert_eq!(
        (out.as_str(), err.as_str(), code),
        ("65534 65534 nobody /nonexistent\n", "", 0)
    );
}

#[tokio::test]
async fn a_non_root_workload_refuses_to_run_as_another_user() {
    // As root, run the shim itself as nobody; otherwise it already is not root.
    let (shim, uid) = if is_root() {
        (Shim::builder().run_as_uid(65534).start(&["sleep", "60"]), 65534)
    } else {
        (Shim::start(&["sleep", "60"]), nix::unistd::geteuid().as_raw())
    };
    shim.wait_for_socket();
    let req = SpawnRequest {
        argv: argv(&["id", "-u"]),
        user: Some("root".into()),
        ..Default::default()
    };
    let error = spawn(&shim.socket(), &req).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("cannot run as user root: the workload runs as uid {uid}, not root")
    );

    // Its own user is fine.
    let req = SpawnRequest {
        argv: argv(&["id", "-u"]),
        ..Default::default()
    };
    let (out, _, code) = run_pipes(&shim.socket(), req, b"").await;
    assert_eq!((out.trim(), code), (uid.to_string().as_str(), 0));
}

#[tokio::test]
async fn many_sessions_can_run_at_once() {
    let shim = idle_shim();
    let socket = shim.socket();
    let runs = (0..20).map(|i| {
        let socket = socket.clone();
        async move {
            let req = SpawnRequest {
                argv: argv(&["sh", "-c", &format!("echo {i}; exit {}", i % 5)]),
                ..Default::default()
            };
            (i, run_pipes(&socket, req, b"").await)
        }
    });
    for (i, (out, _, code)) in futures_join_all(runs).await {
        assert_eq!((out.trim(), code), (i.to_string().as_str(), i % 5));
    }
}

/// Joins futures without pulling in the `futures` crate.
async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

#[tokio::test]
async fn only_root_the_workloads_uid_and_allowed_uids_may_use_the_socket() {
    if !is_root() {
        eprintln!("not root: cannot connect as other uids here");
        return;
    }
    let shim = Shim::builder()
        .flag("--spawn-allowed-uids", "1234")
        .start(&["sleep", "60"]);
    shim.wait_for_socket();
    // An abstract socket has no file mode: the peer credentials decide.
    let socket = shim.socket();
    let (allowed, refused) = tokio::task::spawn_blocking(move || {
        (
            support::probe_as(1234, &socket),
            support::probe_as(65534, &socket),
        )
    })
    .await
    .unwrap();
    assert_eq!(allowed, "exited 0");
    assert_eq!(refused, "error uid 65534 may not use the spawn socket");
}

#[tokio::test]
async fn a_switched_users_terminal_belongs_to_that_user() {
    if !is_root() {
        eprintln!("not root: switching users cannot be tested here");
        return;
    }
    let shim = idle_shim();
    let req = SpawnRequest {
        argv: argv(&["sh", "-c", "stat -c '%U %a' \"$(tty)\"; id -un"]),
        user: Some("nobody".into()),
        pty: pty(80, 24),
        ..Default::default()
    };
    let (out, code) = run_pty(&shim.socket(), req).await;
    assert_eq!(
        (out.replace('\r', "").as_str(), code),
        ("nobody 620\nnobody\n", 0)
    );
}

#[tokio::test]
async fn in_a_pod_only_the_sidecar_outside_the_workloads_pid_namespace_gets_sessions() {
    if !is_root() {
        eprintln!("not root: cannot make PID namespaces here");
        return;
    }
    // As in a pod: the shim is PID 1 of the workload's PID namespace and the
    // sidecar's uid (65532) is allowed; the test stands where the sidecar
    // does, outside that namespace.
    let shim = Shim::builder()
        .in_pod_pid_namespace()
        .flag("--spawn-allowed-uids", "65532")
        .start(&["sleep", "60"]);
    shim.wait_for_socket();
    let socket = shim.socket();
    let req = SpawnRequest {
        argv: argv(&["sh", "-c", "echo $$"]),
        ..Default::default()
    };
    let (out, _, code) = run_pipes(&socket, req, b"").await;
    assert_eq!(code, 0);
    let session_pid: i32 = out.trim().parse().unwrap();
    assert!(
        session_pid > 1,
        "the session runs in the shim's namespace (pid {session_pid})"
    );

    // The attack: a workload process running as the sidecar's uid asks for a
    // session. It is refused, and a probe as the same uid from outside (the
    // sidecar's place) is not: the namespace is what decides.
    let inner = shim.inner_pid();
    let (inside, outside) = tokio::task::spawn_blocking({
        let socket = socket.clone();
        move || {
            (
                support::probe_in_pid_namespace_of(inner, 65532, &socket),
                support::probe_as(65532, &socket),
            )
        }
    })
    .await
    .unwrap();
    assert!(
        inside.starts_with("error the spawn socket serves only the Hatchway gateway: this peer (pid ")
            && inside.ends_with("uid 65532) runs inside the workload container"),
        "{inside}"
    );
    assert_eq!(outside, "exited 0");
    // Root inside the workload is refused the same way.
    let root_inside =
        tokio::task::spawn_blocking(move || support::probe_in_pid_namespace_of(inner, 0, &socket))
            .await
            .unwrap();
    assert!(
        root_inside.contains("runs inside the workload container"),
        "{root_inside}"
    );
}

/// A unix-socket client for sessions: connects to `$SSH_AUTH_SOCK`, sends
/// `ping`, prints what comes back (Debian's python3: a session switched to
/// another user cannot run one under /root).
const AGENT_CLIENT: &str = r#"/usr/bin/python3 -c '
import os, socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(os.environ["SSH_AUTH_SOCK"])
except OSError as e:
    print("refused:", e.strerror); sys.exit(3)
s.sendall(b"ping"); print(s.recv(4).decode())'"#;

/// Accepts one connection on a session's agent listener and answers its
/// `ping` with `pong`, as the gateway's relay to the client's agent would.
async fn answer_one_agent_connection(listener: std::os::fd::OwnedFd) {
    let listener = std::os::unix::net::UnixListener::from(listener);
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::UnixListener::from_std(listener).unwrap();
    let (mut conn, _) = tokio::time::timeout(DEADLINE, listener.accept())
        .await
        .expect("the session connects in time")
        .unwrap();
    let mut ping = [0u8; 4];
    conn.read_exact(&mut ping).await.unwrap();
    assert_eq!(&ping, b"ping");
    conn.write_all(b"pong").await.unwrap();
}

/// Runs `script` with an agent socket; the listener is handed to
/// `serve`. Returns (SSH_AUTH_SOCK as the shim named it, stdout, stderr,
/// exit code).
async fn run_with_agent<F, Fut>(
    socket: &str,
    user: Option<&str>,
    script: &str,
    serve: F,
) -> (String, String, String, i32)
where
    F: FnOnce(std::os::fd::OwnedFd) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let req = SpawnRequest {
        argv: argv(&["sh", "-c", script]),
        user: user.map(str::to_owned),
        agent: true,
        ..Default::default()
    };
    let Spawned {
        io,
        control,
        agent,
        agent_error,
        ..
    } = spawn(socket, &req).await.unwrap();
    assert_eq!(agent_error, None);
    let agent = agent.expect("an agent socket was asked for");
    let served = tokio::spawn(serve(agent.listener));
    let SpawnedIo::Pipes { stdout, stderr, .. } = io else {
        panic!("asked for pipes")
    };
    let (out, err, code) = finish(stdout, stderr, &control).await;
    served.await.unwrap();
    (agent.path, out, err, code)
}

#[tokio::test]
async fn an_agent_socket_is_the_session_users_alone_and_goes_with_the_session() {
    if !is_root() {
        eprintln!("not root: switching users cannot be tested here");
        return;
    }
    let shim = idle_shim();
    let script = format!(
        r#"echo "$SSH_AUTH_SOCK"; stat -c '%U %a %F' "$(dirname "$SSH_AUTH_SOCK")" "$SSH_AUTH_SOCK"; {AGENT_CLIENT}"#
    );
    let (path, out, err, code) = run_with_agent(
        &shim.socket(),
        Some("nobody"),
        &script,
        answer_one_agent_connection,
    )
    .await;
    assert!(
        path.starts_with("/tmp/hatchway-agent-") && path.ends_with("/agent.sock"),
        "{path}"
    );
    let dir_line = "nobody 700 directory";
    assert_eq!(
        (out.lines().collect::<Vec<_>>(), err.as_str(), code),
        (
            vec![path.as_str(), dir_line, out.lines().nth(2).unwrap_or(""), "pong"],
            "",
            0
        )
    );
    assert!(
        out.lines().nth(2).unwrap().starts_with("nobody ")
            && out.lines().nth(2).unwrap().ends_with(" socket"),
        "{out}"
    );
    let dir = std::path::Path::new(&path).parent().unwrap().to_owned();
    wait_until_async("the agent directory is removed after the session", || {
        !dir.exists()
    })
    .await;
}

#[tokio::test]
async fn another_user_in_the_container_cannot_reach_a_sessions_agent() {
    if !is_root() {
        eprintln!("not root: switching users cannot be tested here");
        return;
    }
    let shim = idle_shim();
    // nobody's session holds the agent until `release` appears.
    let release = shim.work().join("release");
    let script = format!(
        r#"echo "$SSH_AUTH_SOCK"; while [ ! -e {} ]; do sleep 0.05; done"#,
        release.display()
    );
    let req = SpawnRequest {
        argv: argv(&["sh", "-c", &script]),
        user: Some("nobody".into()),
        agent: true,
        ..Default::default()
    };
    let Spawned {
        io, control, agent, ..
    } = spawn(&shim.socket(), &req).await.unwrap();
    let agent = agent.unwrap();
    let SpawnedIo::Pipes { stdout, .. } = io else {
        panic!("asked for pipes")
    };
    let mut stdout = FdStream::new(stdout).unwrap();
    let mut line = vec![0u8; 256];
    let n = tokio::time::timeout(DEADLINE, stdout.read(&mut line))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&line[..n]).trim(), agent.path);

    // The attack: daemon, another user in the same container, points its
    // SSH_AUTH_SOCK at nobody's socket.
    let req = SpawnRequest {
        argv: argv(&["sh", "-c", AGENT_CLIENT]),
        user: Some("daemon".into()),
        env: vec![("SSH_AUTH_SOCK".into(), agent.path.clone())],
        ..Default::default()
    };
    let (out, err, code) = run_pipes(&shim.socket(), req, b"").await;
    assert_eq!(
        (out.as_str(), err.as_str(), code),
        ("refused: Permission denied\n", "", 3)
    );
    std::fs::write(&release, b"").unwrap();
    tokio::time::timeout(DEADLINE, control.wait())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_session_that_swaps_its_agent_directory_for_a_symlink_removes_nothing_else() {
    if !is_root() {
        eprintln!("not root: switching users cannot be tested here");
        return;
    }
    let shim = idle_shim();
    // A root-owned file named like the socket, where the session's user
    // cannot write: a cleanup that walked paths as root would delete it.
    let victim = tempfile::tempdir().unwrap();
    std::fs::write(victim.path().join("agent.sock"), b"keep me").unwrap();
    let script = format!(
        r#"d=$(dirname "$SSH_AUTH_SOCK"); mv "$d" "$d.moved" && ln -s {} "$d" && echo swapped"#,
        victim.path().display()
    );
    let (path, out, err, code) =
        run_with_agent(&shim.socket(), Some("nobody"), &script, |_listener| async {}).await;
    assert_eq!((out.as_str(), err.as_str(), code), ("swapped\n", "", 0));
    let dir = std::path::Path::new(&path).parent().unwrap().to_owned();
    let moved = dir.with_extension("moved");
    // The socket goes (unlinked through the directory's own handle, where
    // the session moved it); the symlink stays, as does its target's file.
    wait_until_async("the moved directory's socket is removed", || {
        !moved.join("agent.sock").exists()
    })
    .await;
    assert_eq!(
        std::fs::read(victim.path().join("agent.sock")).unwrap(),
        b"keep me"
    );
    assert!(dir.symlink_metadata().unwrap().file_type().is_symlink());
    std::fs::remove_file(&dir).unwrap();
    std::fs::remove_dir(&moved).unwrap();
}

#[tokio::test]
async fn without_asking_a_session_has_no_agent_socket() {
    let shim = idle_shim();
    let req = SpawnRequest {
        argv: argv(&["sh", "-c", r#"echo "[${SSH_AUTH_SOCK-unset}]""#]),
        ..Default::default()
    };
    let (out, _, code) = run_pipes(&shim.socket(), req, b"").await;
    assert_eq!((out.as_str(), code), ("[unset]\n", 0));
}
