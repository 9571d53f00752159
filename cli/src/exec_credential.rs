//! Runs a kubeconfig user's exec credential plugin (`users[].user.exec`,
//! as kubectl does: client.authentication.k8s.io v1 or v1beta1) and takes
//! the bearer token from the `ExecCredential` it prints. Client-certificate
//! credentials cannot authenticate to the router and are refused clearly.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::Deserialize;

/// `users[].user.exec` of a kubeconfig.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecConfig {
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<EnvVar>,
    #[serde(default = "default_api_version")]
    pub api_version: String,
    #[serde(default)]
    pub interactive_mode: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

fn default_api_version() -> String {
    "client.authentication.k8s.io/v1".to_owned()
}

/// Why the plugin gave no token.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot run the kubeconfig's credential plugin {command:?}: {source}")]
    Spawn { command: String, source: std::io::Error },
    #[error("the kubeconfig's credential plugin {command:?} failed ({status})")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
    },
    #[error("the kubeconfig's credential plugin {command:?} printed no valid ExecCredential: {reason}")]
    Output { command: String, reason: String },
    #[error(
        "the kubeconfig's credential plugin {command:?} gives a client certificate, not a token: \
         pass --token or set HATCHWAY_TOKEN (e.g. from `kubectl create token`)"
    )]
    NoToken { command: String },
}

#[derive(Deserialize)]
struct ExecCredential {
    #[serde(default)]
    status: Option<Status>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    client_certificate_data: Option<String>,
}

/// The program to run: a relative path with a slash is relative to the
/// kubeconfig's directory (as kubectl resolves it); a bare name is looked up
/// on PATH.
fn program(command: &str, kubeconfig_dir: Option<&Path>) -> PathBuf {
    let path = Path::new(command);
    match kubeconfig_dir {
        Some(dir) if path.is_relative() && command.contains('/') => dir.join(path),
        _ => path.to_owned(),
    }
}

/// Runs the plugin and returns its token.
pub async fn token(exec: &ExecConfig, kubeconfig_dir: Option<&Path>) -> Result<String, ExecError> {
    use std::io::IsTerminal as _;
    let interactive = exec.interactive_mode.as_deref() != Some("Never") && std::io::stdin().is_terminal();
    let info = serde_json::json!({
        "apiVersion": exec.api_version,
        "kind": "ExecCredential",
        "spec": {"interactive": interactive},
    });
    let mut command = tokio::process::Command::new(program(&exec.command, kubeconfig_dir));
    command
        .args(&exec.args)
        .env("KUBERNETES_EXEC_INFO", info.to_string())
        .stdin(if interactive {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    for var in &exec.env {
        command.env(&var.name, &var.value);
    }
    let output = command.output().await.map_err(|source| ExecError::Spawn {
        command: exec.command.clone(),
        source,
    })?;
    if !output.status.success() {
        return Err(ExecError::Failed {
            command: exec.command.clone(),
            status: output.status,
        });
    }
    let credential: ExecCredential =
        serde_json::from_slice(&output.stdout).map_err(|e| ExecError::Output {
            command: exec.command.clone(),
            reason: e.to_string(),
        })?;
    let status = credential.status.ok_or_else(|| ExecError::Output {
        command: exec.command.clone(),
        reason: "no status".into(),
    })?;
    match status.token.filter(|t| !t.trim().is_empty()) {
        Some(token) => Ok(token.trim().to_owned()),
        None if status.client_certificate_data.is_some() => Err(ExecError::NoToken {
            command: exec.command.clone(),
        }),
        None => Err(ExecError::Output {
            command: exec.command.clone(),
            reason: "no status.token".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(dir: &Path, body: &str) -> ExecConfig {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("plugin.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        ExecConfig {
            command: "./plugin.sh".into(),
            args: vec!["get-token".into()],
            env: vec![EnvVar {
                name: "PLUGIN_USER".into(),
                value: "alice".into(),
            }],
            api_version: default_api_version(),
            interactive_mode: Some("Never".into()),
        }
    }

    #[tokio::test]
    async fn the_plugin_gets_its_args_env_and_exec_info_and_gives_a_token() {
        let dir = tempfile::tempdir().unwrap();
        // The token is built from what the plugin was given, so each input
        // is checked.
        let exec = plugin(
            dir.path(),
            r#"kind=$(printf %s "$KUBERNETES_EXEC_INFO" | grep -o '"kind":"ExecCredential"')
printf '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"%s-%s-%s"}}' "$1" "$PLUGIN_USER" "${kind:+info}""#,
        );
        assert_eq!(
            token(&exec, Some(dir.path())).await.unwrap(),
            "get-token-alice-info"
        );
    }

    #[tokio::test]
    async fn failures_and_certificates_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let failing = plugin(dir.path(), "echo no >&2; exit 3");
        let e = token(&failing, Some(dir.path())).await.unwrap_err();
        assert!(matches!(e, ExecError::Failed { .. }), "{e}");
        let cert = plugin(
            dir.path(),
            r#"echo '{"kind":"ExecCredential","status":{"clientCertificateData":"x","clientKeyData":"y"}}'"#,
        );
        let e = token(&cert, Some(dir.path())).await.unwrap_err();
        assert!(e.to_string().contains("--token"), "{e}");
        let garbage = plugin(dir.path(), "echo not json");
        let e = token(&garbage, Some(dir.path())).await.unwrap_err();
        assert!(matches!(e, ExecError::Output { .. }), "{e}");
        let missing = ExecConfig {
            command: "./nowhere".into(),
            ..failing
        };
        assert!(matches!(
            token(&missing, Some(dir.path())).await.unwrap_err(),
            ExecError::Spawn { .. }
        ));
    }
}
