use super::*;
use crate::passwd::{parse_group, parse_passwd};

fn db() -> UserDb {
    UserDb {
        users: parse_passwd(
            "root:x:0:0:root:/root:/bin/bash\n\
             app:x:1000:1000::/home/app:/bin/zsh\n\
             nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        ),
        groups: parse_group("wheel:x:10:app\napp:x:1000:\n"),
    }
}

fn workload(uid: u32) -> Workload {
    Workload {
        uid,
        gid: uid,
        cwd: PathBuf::from("/workdir"),
        root: PathBuf::from("/"),
    }
}

#[test]
fn no_user_means_the_workloads_own_user_without_switching() {
    let id = resolve_identity(&db(), None, &workload(1000)).unwrap();
    assert_eq!(
        (id.name.as_str(), id.uid, id.home.as_str()),
        ("app", 1000, "/home/app")
    );
    assert_eq!(id.switch, None);
}

#[test]
fn a_uid_missing_from_passwd_still_gets_an_identity() {
    let id = resolve_identity(&db(), None, &workload(4242)).unwrap();
    assert_eq!(
        (id.name.as_str(), id.uid, id.gid, id.home.as_str()),
        ("4242", 4242, 4242, "/")
    );
}

#[test]
fn root_switches_to_another_user_with_its_groups() {
    let id = resolve_identity(&db(), Some("app"), &workload(0)).unwrap();
    assert_eq!((id.uid, id.gid), (1000, 1000));
    assert_eq!(id.switch, Some(vec![1000, 10]));
}

#[test]
fn a_numeric_uid_is_accepted_with_or_without_an_entry() {
    let id = resolve_identity(&db(), Some("65534"), &workload(0)).unwrap();
    assert_eq!(id.name, "nobody");
    let id = resolve_identity(&db(), Some("31337"), &workload(0)).unwrap();
    assert_eq!((id.uid, id.gid, id.switch.is_some()), (31337, 0, true));
}

#[test]
fn a_non_root_workload_refuses_other_users_clearly() {
    let error = resolve_identity(&db(), Some("root"), &workload(1000)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "cannot run as user root: the workload runs as uid 1000, not root"
    );
    let same = resolve_identity(&db(), Some("app"), &workload(1000)).unwrap();
    assert_eq!(same.switch, None, "asking for the workload's own user is fine");
}

#[test]
fn an_unknown_user_is_refused_clearly() {
    let error = resolve_identity(&db(), Some("ghost"), &workload(0)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "unknown user ghost: not in the workload's /etc/passwd"
    );
}

#[test]
fn no_argv_runs_a_login_shell_and_command_runs_shell_dash_c() {
    let login = resolve_argv(&SpawnRequest::default(), "/bin/bash").unwrap();
    assert_eq!(login, ("/bin/bash".into(), vec![], Some("-bash".into())));
    let req = SpawnRequest {
        command: Some("ls -l | wc".into()),
        ..SpawnRequest::default()
    };
    let exec = resolve_argv(&req, "/bin/sh").unwrap();
    assert_eq!(
        exec,
        ("/bin/sh".into(), vec!["-c".into(), "ls -l | wc".into()], None)
    );
    let req = SpawnRequest {
        argv: Some(vec!["id".into(), "-u".into()]),
        ..SpawnRequest::default()
    };
    assert_eq!(
        resolve_argv(&req, "/bin/sh").unwrap(),
        ("id".into(), vec!["-u".into()], None)
    );
}

#[test]
fn a_helper_runs_the_shims_own_binary_never_a_path_the_workload_writes() {
    let req = SpawnRequest {
        helper: Some(crate::protocol::Helper::SftpServer),
        ..SpawnRequest::default()
    };
    assert_eq!(
        resolve_argv(&req, "/bin/sh").unwrap(),
        (
            "/proc/self/exe".into(),
            vec!["sftp-server".into()],
            Some("hatchway-sftp-server".into())
        )
    );
    let mixed = SpawnRequest {
        argv: Some(vec!["/hatchway/bin/hatchway-sidecar".into()]),
        ..req
    };
    assert!(matches!(
        resolve_argv(&mixed, "/bin/sh"),
        Err(Refusal::BadRequest(_))
    ));
}

#[test]
fn malformed_argv_requests_are_refused() {
    let empty = SpawnRequest {
        argv: Some(vec![]),
        ..SpawnRequest::default()
    };
    assert!(matches!(
        resolve_argv(&empty, "/bin/sh"),
        Err(Refusal::BadRequest(_))
    ));
    let both = SpawnRequest {
        argv: Some(vec!["x".into()]),
        command: Some("y".into()),
        ..SpawnRequest::default()
    };
    assert!(matches!(
        resolve_argv(&both, "/bin/sh"),
        Err(Refusal::BadRequest(_))
    ));
}

#[test]
fn a_missing_shell_falls_back_to_bin_sh() {
    let mut id = resolve_identity(&db(), Some("app"), &workload(0)).unwrap();
    id.shell = "/no/such/shell".into();
    assert_eq!(shell_of(&id), "/bin/sh");
    id.shell = String::new();
    assert_eq!(shell_of(&id), "/bin/sh");
}

#[test]
fn the_environment_has_sensible_defaults_that_the_request_overrides() {
    let id = resolve_identity(&db(), Some("app"), &workload(0)).unwrap();
    let req = SpawnRequest {
        env: vec![
            ("LANG".into(), "C.UTF-8".into()),
            ("HOME".into(), "/elsewhere".into()),
        ],
        pty: Some(PtyRequest {
            term: "xterm-256color".into(),
            cols: 80,
            rows: 24,
        }),
        ..SpawnRequest::default()
    };
    let env = session_env(&req, &id, "/bin/zsh", false).unwrap();
    let last = |key: &str| env.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    assert_eq!(last("USER"), Some("app"));
    assert_eq!(last("LOGNAME"), Some("app"));
    assert_eq!(last("SHELL"), Some("/bin/zsh"));
    assert_eq!(last("TERM"), Some("xterm-256color"));
    assert_eq!(last("LANG"), Some("C.UTF-8"));
    assert_eq!(last("HOME"), Some("/elsewhere"), "the request has the last word");
    assert_eq!(
        last("PATH"),
        Some(DEFAULT_PATH),
        "a workload without PATH gets a default one"
    );
    let bad = SpawnRequest {
        env: vec![("A=B".into(), "x".into())],
        ..SpawnRequest::default()
    };
    assert!(session_env(&bad, &id, "/bin/sh", true).is_err());
}

#[test]
fn the_directory_is_the_requested_one_else_home_else_the_workloads() {
    let home = tempfile::tempdir().unwrap();
    let mut id = resolve_identity(&db(), Some("app"), &workload(0)).unwrap();
    let wl = workload(0);
    id.home = home.path().display().to_string();
    assert_eq!(
        session_cwd(&SpawnRequest::default(), &id, &wl).unwrap(),
        home.path()
    );
    id.home = "/nonexistent".into();
    assert_eq!(
        session_cwd(&SpawnRequest::default(), &id, &wl).unwrap(),
        PathBuf::from("/workdir")
    );
    let req = SpawnRequest {
        cwd: Some("/tmp".into()),
        ..SpawnRequest::default()
    };
    assert_eq!(session_cwd(&req, &id, &wl).unwrap(), PathBuf::from("/tmp"));
    let req = SpawnRequest {
        cwd: Some("/no/such/dir".into()),
        ..SpawnRequest::default()
    };
    assert_eq!(
        session_cwd(&req, &id, &wl).unwrap_err().to_string(),
        "working directory /no/such/dir does not exist"
    );
}

#[test]
fn an_agent_socket_that_cannot_be_made_leaves_the_session_without_one() {
    // No `tmp` under the workload's root.
    let root = tempfile::tempdir().unwrap();
    let mut workload = workload(nix::unistd::geteuid().as_raw());
    workload.root = root.path().to_owned();
    workload.cwd = root.path().to_owned();
    let req = SpawnRequest {
        argv: Some(vec!["true".into()]),
        agent: true,
        ..Default::default()
    };
    let prepared = prepare(&req, &workload).unwrap();
    assert!(prepared.agent.is_none());
    let error = prepared.agent_error.unwrap();
    assert!(
        error.starts_with(&format!(
            "no agent socket: opening {}/tmp: ",
            root.path().display()
        )),
        "{error}"
    );
    assert!(!prepared.command.get_envs().any(|(key, _)| key == "SSH_AUTH_SOCK"));
}

#[test]
fn an_agent_socket_lives_in_a_private_directory_under_tmp_and_goes_with_it() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("tmp")).unwrap();
    let mut workload = workload(nix::unistd::geteuid().as_raw());
    workload.root = root.path().to_owned();
    workload.cwd = root.path().to_owned();
    let req = SpawnRequest {
        argv: Some(vec!["true".into()]),
        env: vec![("SSH_AUTH_SOCK".into(), "/elsewhere".into())],
        agent: true,
        ..Default::default()
    };
    let prepared = prepare(&req, &workload).unwrap();
    let agent = prepared.agent.as_ref().unwrap();
    let path = std::path::Path::new(&agent.path);
    let dir = path.parent().unwrap().to_owned();
    assert_eq!(dir.parent().unwrap(), root.path().join("tmp"));
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777,
        0o700
    );
    assert!(std::fs::metadata(path).unwrap().file_type().is_socket());
    // The client's `env` request cannot point it elsewhere.
    let sock = prepared
        .command
        .get_envs()
        .filter(|(key, _)| *key == "SSH_AUTH_SOCK")
        .last()
        .and_then(|(_, value)| value)
        .unwrap()
        .to_owned();
    assert_eq!(sock, std::ffi::OsString::from(&agent.path));
    drop(prepared);
    assert!(!dir.exists(), "removed with the session");
}
