use clap::{CommandFactory, Parser};

use super::*;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    shim: ShimArgs,
}

fn parse(args: &[&str]) -> Result<ShimArgs, clap::Error> {
    Cli::try_parse_from(std::iter::once("shim").chain(args.iter().copied())).map(|cli| cli.shim)
}

#[test]
fn the_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn defaults_match_the_documented_paths_and_limits() {
    let args = parse(&["--", "sleep", "1"]).unwrap();
    assert_eq!(args.log_dir, PathBuf::from("/hatchway/log"));
    assert_eq!(args.spawn_socket, "hatchway/spawn");
    assert!(args.spawn_peer_outside_pid_namespace);
    assert_eq!(args.log_max_bytes, 64 * 1024 * 1024);
    assert_eq!(args.log_max_total_bytes, 1024 * 1024 * 1024);
    assert_eq!(args.usage_interval, 10);
    assert!(args.spawn_allowed_uids.is_empty() && !args.spawn_disabled);
    assert_eq!(args.command, ["sleep", "1"]);
}

#[test]
fn the_commands_own_flags_are_not_taken_for_the_shims() {
    let args = parse(&["--usage-interval", "0", "--", "ls", "-la", "--log-dir", "x"]).unwrap();
    assert_eq!(args.usage_interval, 0);
    assert_eq!(args.command, ["ls", "-la", "--log-dir", "x"]);
    assert_eq!(args.log_dir, PathBuf::from("/hatchway/log"));
}

#[test]
fn a_command_is_required() {
    assert!(parse(&[]).is_err());
    assert!(parse(&["--"]).is_err());
}

#[test]
fn allowed_uids_are_a_comma_separated_list() {
    let args = parse(&["--spawn-allowed-uids", "1000,2000", "--", "true"]).unwrap();
    assert_eq!(args.spawn_allowed_uids, [1000, 2000]);
}

#[test]
fn every_flag_can_be_set_from_a_hatchway_variable() {
    for arg in Cli::command().get_arguments() {
        if arg.is_positional() || ["help"].contains(&arg.get_id().as_str()) {
            continue;
        }
        let env = arg
            .get_env()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_default();
        assert!(
            env.starts_with("HATCHWAY_"),
            "--{} has no HATCHWAY_* variable",
            arg.get_id()
        );
    }
}
