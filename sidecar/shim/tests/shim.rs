//! The shim as PID 1 would run it, as a real process: exit codes, signals,
//! zombies, the log tee, usage samples.

mod support;

use support::{Shim, ppid_and_state, wait_until};

fn sh(script: &str) -> Vec<&str> {
    vec!["sh", "-c", script]
}

#[test]
fn the_shim_exits_with_the_commands_exit_code_and_records_it() {
    for code in [0, 3] {
        let done = Shim::start(&sh(&format!("exit {code}"))).wait();
        assert_eq!(done.code, code);
        assert_eq!(done.log("exit-code"), format!("{code}\n"));
    }
}

#[test]
fn a_command_killed_by_a_signal_gives_128_plus_the_signal() {
    let done = Shim::start(&sh("kill -9 $$")).wait();
    assert_eq!(done.code, 128 + 9);
    assert_eq!(done.log("exit-code"), "137\n");
}

#[test]
fn a_missing_command_exits_127_and_says_why() {
    let done = Shim::start(&["/no/such/program", "arg"]).wait();
    assert_eq!(done.code, 127);
    assert!(
        done.stderr.contains("cannot run /no/such/program"),
        "stderr: {}",
        done.stderr
    );
    assert!(done.log("stderr.txt").contains("cannot run /no/such/program"));
    assert_eq!(done.log("exit-code"), "127\n");
}

#[test]
fn sigterm_is_forwarded_to_the_command() {
    let shim = Shim::start(&sh(
        r#"trap 'echo got TERM; exit 42' TERM; touch "$WORK/ready"; while :; do sleep 0.05; done"#,
    ));
    shim.wait_for_file("ready");
    shim.kill(libc::SIGTERM);
    let done = shim.wait();
    assert_eq!(done.code, 42);
    assert!(done.stdout.contains("got TERM"));
}

#[test]
fn other_signals_are_forwarded_and_the_command_keeps_running() {
    let shim = Shim::start(&sh(
        r#"trap 'echo got USR1' USR1; trap 'echo got HUP' HUP; trap 'echo got INT; exit 0' INT
           touch "$WORK/ready"; while :; do sleep 0.05; done"#,
    ));
    shim.wait_for_file("ready");
    shim.kill(libc::SIGUSR1);
    wait_until("the command reports USR1", || {
        shim.log("stdout.txt").contains("got USR1")
    });
    shim.kill(libc::SIGHUP);
    wait_until("the command reports HUP", || {
        shim.log("stdout.txt").contains("got HUP")
    });
    shim.kill(libc::SIGINT);
    let done = shim.wait();
    assert_eq!(done.code, 0);
    assert_eq!(done.log("stdout.txt"), "got USR1\ngot HUP\ngot INT\n");
}

#[test]
fn orphans_of_the_command_are_adopted_and_reaped() {
    // The orphan writes its pid, waits to be told to go, and exits while the
    // command is still running: only the shim can reap it.
    let shim = Shim::start(&sh(
        r#"(sh -c 'echo $$ > "$WORK/orphan.tmp"; mv "$WORK/orphan.tmp" "$WORK/orphan";
                   while [ ! -e "$WORK/release" ]; do sleep 0.05; done' &)
           while [ ! -e "$WORK/done" ]; do sleep 0.05; done"#,
    ));
    shim.wait_for_file("orphan");
    let orphan: i32 = std::fs::read_to_string(shim.work().join("orphan"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_until("the shim adopts the orphan", || {
        ppid_and_state(orphan).is_some_and(|(ppid, _)| ppid == shim.pid())
    });
    shim.touch("release");
    // A zombie keeps its /proc entry until it is reaped.
    wait_until("the orphan is reaped", || ppid_and_state(orphan).is_none());
    shim.touch("done");
    assert_eq!(shim.wait().code, 0);
}

#[test]
fn output_is_teed_to_the_log_files_and_to_the_shims_own_output() {
    let done = Shim::start(&sh("echo out; echo err >&2; echo more; printf partial")).wait();
    assert_eq!(done.code, 0);
    assert_eq!(
        done.log("stdout.txt"),
        "out\nmore\npartial",
        "the last partial line is kept"
    );
    assert_eq!(done.log("stderr.txt"), "err\n");
    assert_eq!(
        done.stdout, "out\nmore\npartial",
        "kubectl logs still gets stdout"
    );
    assert!(done.stderr.contains("err\n"), "and stderr: {}", done.stderr);
}

#[test]
fn output_held_open_by_a_background_process_does_not_delay_the_exit_forever() {
    // `sleep` inherits stdout and keeps the pipe open after the command
    // exits; the shim flushes what it has and exits after its grace period.
    let done = Shim::start(&sh("echo before; sleep 60 & exit 5")).wait();
    assert_eq!(done.code, 5);
    assert_eq!(done.log("stdout.txt"), "before\n");
}

#[test]
fn logs_rotate_and_past_the_total_cap_lines_are_dropped_with_a_count() {
    let done = Shim::builder()
        .flag("--log-max-bytes", "1000")
        .flag("--log-max-total-bytes", "3000")
        .start(&["seq", "1", "2000"])
        .wait();
    assert_eq!(done.code, 0);

    // What fits under the total cap, line by line.
    let (mut kept, mut total) = (0u64, 0u64);
    for n in 1..=2000u64 {
        let len = n.to_string().len() as u64 + 1;
        if total + len > 3000 {
            break;
        }
        total += len;
        kept = n;
    }
    let dropped_bytes: u64 = (kept + 1..=2000).map(|n| n.to_string().len() as u64 + 1).sum();
    let marker = format!(
        "[hatchway] {} lines ({dropped_bytes} bytes) dropped: this log reached its limit of 3000 bytes\n",
        2000 - kept
    );

    let current = done.log("stdout.txt");
    let older = done.log("stdout.txt.1");
    assert!(
        current.ends_with(&marker),
        "the file ends with the marker: {current:?}"
    );
    assert!(
        current.len() <= 1000 && older.len() <= 1000,
        "files stay under the per-file cap"
    );
    assert!(!done.dir.path().join("log/stdout.txt.2").exists());
    // The two files hold the tail of what was kept, in order, contiguously.
    let lines: Vec<u64> = older
        .lines()
        .chain(current.lines())
        .filter_map(|l| l.parse().ok())
        .collect();
    assert_eq!(lines.last(), Some(&kept));
    assert!(
        lines.windows(2).all(|w| w[1] == w[0] + 1),
        "no line lost or reordered"
    );
    // The shim's own stdout is not capped.
    assert_eq!(done.stdout.lines().count(), 2000);
}

#[test]
fn usage_samples_record_this_machines_cgroup() {
    let shim = Shim::builder()
        .usage_interval(1)
        .start(&sh(r#"while [ ! -e "$WORK/done" ]; do sleep 0.05; done"#));
    wait_until("a usage sample is written", || {
        shim.log("usage.txt").lines().count() >= 1
    });
    shim.touch("done");
    let done = shim.wait();
    let usage = done.log("usage.txt");
    let lines: Vec<&str> = usage.lines().collect();
    assert!(
        lines.len() >= 2,
        "a first sample at start and a last one at exit: {usage}"
    );
    for line in &lines {
        let (timestamp, rest) = line.split_once(' ').unwrap();
        assert!(timestamp.len() == 20 && timestamp.ends_with('Z'), "{line}");
        if rest.starts_with("no cgroup") {
            eprintln!("this machine has no readable cgroup: {line}");
            return;
        }
        let fields: Vec<&str> = rest.split(' ').collect();
        assert_eq!(fields[0], "cpu", "{line}");
        let cpu: f64 = fields[1].parse().unwrap();
        assert!(cpu > 0.0, "{line}");
        assert!(rest.contains(" mem "), "{line}");
    }
}

#[test]
fn the_exit_code_file_is_replaced_atomically() {
    let done = Shim::start(&sh("exit 9")).wait();
    let names: Vec<String> = std::fs::read_dir(done.dir.path().join("log"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&"exit-code".to_string()));
    assert!(
        !names.iter().any(|n| n.contains("tmp")),
        "no temporary file left: {names:?}"
    );
}

#[test]
fn settings_are_read_from_hatchway_variables() {
    let done = Shim::builder()
        .env("HATCHWAY_LOG_MAX_TOTAL_BYTES", "4")
        .start(&sh("echo abc; echo def"))
        .wait();
    assert_eq!(
        done.log("stdout.txt"),
        "abc\n[hatchway] 1 lines (4 bytes) dropped: this log reached its limit of 4 bytes\n"
    );
}

#[test]
fn the_spawn_socket_can_be_disabled() {
    let shim = Shim::builder().env("HATCHWAY_SPAWN_DISABLED", "true").start(&sh(
        r#"touch "$WORK/ready"; while [ ! -e "$WORK/done" ]; do sleep 0.05; done"#,
    ));
    shim.wait_for_file("ready");
    assert!(
        !support::socket_accepts(&shim.socket()),
        "no socket while the command runs"
    );
    shim.touch("done");
    assert_eq!(shim.wait().code, 0);
}
