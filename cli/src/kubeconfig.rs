//! The little of a kubeconfig the CLI needs without a cluster round trip:
//! the current context's namespace and its user's bearer token (or the
//! exec credential plugin that gives one).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::exec_credential::ExecConfig;

/// Why the kubeconfig could not give what was asked.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("cannot read kubeconfig {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("kubeconfig {path} is not valid YAML: {source}")]
    Parse {
        path: PathBuf,
        source: serde_norway::Error,
    },
    #[error("cannot read the token file {path} of the kubeconfig user: {source}")]
    TokenFile { path: PathBuf, source: std::io::Error },
}

/// The parts of a kubeconfig file we read.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Kubeconfig {
    #[serde(default)]
    pub current_context: Option<String>,
    #[serde(default)]
    pub contexts: Vec<NamedContext>,
    #[serde(default)]
    pub users: Vec<NamedUser>,
    /// The directory of the file read (exec plugins' relative commands
    /// resolve against it).
    #[serde(skip)]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
pub struct NamedContext {
    pub name: String,
    #[serde(default)]
    pub context: Context,
}

#[derive(Debug, Default, Deserialize)]
pub struct Context {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct NamedUser {
    pub name: String,
    #[serde(default)]
    pub user: User,
}

#[derive(Debug, Default, Deserialize)]
pub struct User {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default, rename = "tokenFile")]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub exec: Option<ExecConfig>,
    #[serde(default, rename = "auth-provider")]
    pub auth_provider: Option<serde_norway::Value>,
}

/// What the current user's credentials are, as far as we can use them.
#[derive(Debug)]
pub enum Credential {
    Token(String),
    /// An exec credential plugin to run for the token.
    Exec(ExecConfig),
    /// Only an auth provider (deprecated by kubectl): not supported.
    Unsupported(&'static str),
    None,
}

impl Kubeconfig {
    /// The first file of `$KUBECONFIG`, else `~/.kube/config`; an absent
    /// file is an empty kubeconfig.
    pub fn load() -> Result<Self, KubeconfigError> {
        let path = match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
            Some(list) => std::env::split_paths(&list).next(),
            None => std::env::var_os("HOME").map(|home| Path::new(&home).join(".kube/config")),
        };
        match path {
            Some(path) => Self::read(&path),
            None => Ok(Self::default()),
        }
    }

    /// Reads `path`; an absent file is an empty kubeconfig.
    pub fn read(path: &Path) -> Result<Self, KubeconfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let mut config = Self::parse(&text).map_err(|source| KubeconfigError::Parse {
                    path: path.to_owned(),
                    source,
                })?;
                config.dir = path.parent().map(Path::to_owned);
                Ok(config)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(KubeconfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    pub fn parse(text: &str) -> Result<Self, serde_norway::Error> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_norway::from_str(text)
    }

    fn context(&self) -> Option<&Context> {
        let current = self.current_context.as_deref()?;
        self.contexts
            .iter()
            .find(|c| c.name == current)
            .map(|c| &c.context)
    }

    /// The current context's namespace, if it names one.
    pub fn namespace(&self) -> Option<&str> {
        self.context()?.namespace.as_deref().filter(|n| !n.is_empty())
    }

    /// The current context's user's bearer token.
    pub fn credential(&self) -> Result<Credential, KubeconfigError> {
        let Some(name) = self.context().and_then(|c| c.user.as_deref()) else {
            return Ok(Credential::None);
        };
        let Some(user) = self.users.iter().find(|u| u.name == name).map(|u| &u.user) else {
            return Ok(Credential::None);
        };
        if let Some(token) = user.token.as_deref().filter(|t| !t.is_empty()) {
            return Ok(Credential::Token(token.to_owned()));
        }
        if let Some(path) = &user.token_file {
            let token = std::fs::read_to_string(path).map_err(|source| KubeconfigError::TokenFile {
                path: path.clone(),
                source,
            })?;
            return Ok(Credential::Token(token.trim().to_owned()));
        }
        if let Some(exec) = &user.exec {
            return Ok(Credential::Exec(exec.clone()));
        }
        if user.auth_provider.is_some() {
            return Ok(Credential::Unsupported("an auth provider"));
        }
        Ok(Credential::None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
apiVersion: v1
kind: Config
current-context: dev
contexts:
- name: dev
  context: {cluster: c, user: alice, namespace: team-a}
- name: other
  context: {cluster: c, user: bob}
users:
- name: alice
  user: {token: alice-token}
- name: bob
  user:
    exec: {command: get-token, apiVersion: client.authentication.k8s.io/v1}
"#;

    #[test]
    fn reads_the_current_contexts_namespace_and_token() {
        let config = Kubeconfig::parse(CONFIG).unwrap();
        assert_eq!(config.namespace(), Some("team-a"));
        assert!(matches!(config.credential().unwrap(), Credential::Token(t) if t == "alice-token"));
    }

    #[test]
    fn exec_plugins_are_found() {
        let mut config = Kubeconfig::parse(CONFIG).unwrap();
        config.current_context = Some("other".into());
        assert_eq!(config.namespace(), None);
        match config.credential().unwrap() {
            Credential::Exec(exec) => assert_eq!(exec.command, "get-token"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_empty_kubeconfig_has_nothing() {
        let config = Kubeconfig::parse("").unwrap();
        assert_eq!(config.namespace(), None);
        assert!(matches!(config.credential().unwrap(), Credential::None));
    }
}
