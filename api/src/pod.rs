//! The router needs them too (e.g. to read a finished workload's saved logs).

/// The container that runs the user's command under the shim.
pub const WORKLOAD_CONTAINER: &str = "workload";
/// The native sidecar (init container with `restartPolicy: Always`).
pub const SIDECAR_CONTAINER: &str = "hatchway-sidecar";

/// Where the pod's volumes are mounted (docs/security.md, "The pod"). The
/// workload is untrusted: only `BIN_DIR` and `LOG_DIR` are shared with it,
/// each in the one direction it needs; the Secret and the audit trail have
/// no path the workload can reach.
///
/// The sidecar's static binary, copied here at its start; the workload
/// mounts it read-only and runs it as its shim.
pub const BIN_DIR: &str = "/hatchway/bin";
/// The shim, in `BIN_DIR`.
pub const SHIM_PATH: &str = "/hatchway/bin/hatchway-sidecar";
/// The log directory: the workload's shim writes it; the sidecar mounts it
/// read-only and resolves nothing in it through a symlink.
pub const LOG_DIR: &str = "/hatchway/log";
/// The per-Container Secret, in the sidecar only.
pub const SECRET_DIR: &str = "/run/hatchway/secret";
/// `ctr_key` in `SECRET_DIR`.
pub const SECRET_DIR_KEY_FILE: &str = "/run/hatchway/secret/ctr_key";
/// `router_ca.crt` in `SECRET_DIR`.
pub const SECRET_DIR_ROUTER_CA_FILE: &str = "/run/hatchway/secret/router_ca.crt";
/// `tunnel_url` in `SECRET_DIR`.
pub const SECRET_DIR_TUNNEL_URL_FILE: &str = "/run/hatchway/secret/tunnel_url";
/// The sidecar's audit trail (`gateway.txt`), in the sidecar only.
pub const AUDIT_DIR: &str = "/run/hatchway/audit";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_are_in_the_secret_dir_and_nothing_private_is_under_a_shared_one() {
        for file in [
            SECRET_DIR_KEY_FILE,
            SECRET_DIR_ROUTER_CA_FILE,
            SECRET_DIR_TUNNEL_URL_FILE,
        ] {
            assert!(file.starts_with(&format!("{SECRET_DIR}/")), "{file}");
        }
        assert!(SHIM_PATH.starts_with(&format!("{BIN_DIR}/")));
        for private in [SECRET_DIR, AUDIT_DIR] {
            for shared in [BIN_DIR, LOG_DIR, "/hatchway"] {
                assert!(!private.starts_with(shared), "{private} is under {shared}");
            }
        }
    }
}
