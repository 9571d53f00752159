//! `open NAME PORT`: the web-app URL of a published port, from the
//! Container's status. A private port needs a login: the router mints a
//! one-time link (`POST …/weblogin?port=N`, a code good for 60 s, never the
//! user's token), takes the code once, sets its own session cookie and
//! redirects to the plain URL, so `--browser` opens that login link and
//! `--login-url` prints it.

use hatchway_api::crd::{Container, PortAccess};
use hatchway_api::wire;
use http::StatusCode;

use crate::router::{Endpoint, RouterError, read_all, refusal};

/// Why there is no URL.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("container {name} does not publish port {port} (published: {published})")]
    NotPublished {
        name: String,
        port: u16,
        published: String,
    },
    #[error("container {name} publishes port {port}, but it has no URL yet (is it running?)")]
    NoUrl { name: String, port: u16 },
}

/// A published port's URL and whether it needs the user's token.
#[derive(Debug, PartialEq, Eq)]
pub struct WebApp {
    pub url: String,
    pub private: bool,
}

/// The URL of `port` from the Container's status (the spec says which
/// ports are published; the status carries their URLs once running).
pub fn web_app(container: &Container, port: u16) -> Result<WebApp, OpenError> {
    let name = container.metadata.name.clone().unwrap_or_default();
    let published: Vec<_> = container.spec.published_ports.iter().map(|p| p.port).collect();
    let Some(spec) = container
        .spec
        .published_ports
        .iter()
        .find(|p| p.port == i32::from(port))
    else {
        let published = if published.is_empty() {
            "none".to_owned()
        } else {
            published
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(OpenError::NotPublished {
            name,
            port,
            published,
        });
    };
    let url = container
        .status
        .as_ref()
        .and_then(|s| s.published_ports.iter().find(|p| p.port == spec.port))
        .map(|p| p.url.clone())
        .filter(|u| !u.is_empty())
        .ok_or(OpenError::NoUrl { name, port })?;
    Ok(WebApp {
        url,
        private: spec.access != PortAccess::Public,
    })
}

/// Asks the router for a one-time login link to published port `port`.
pub async fn login_link(
    endpoint: &Endpoint,
    namespace: &str,
    name: &str,
    port: u16,
) -> Result<wire::WebLogin, RouterError> {
    let port = port.to_string();
    let path = endpoint.path(
        namespace,
        name,
        wire::ACTION_WEBLOGIN,
        &[(wire::PARAM_PORT, Some(&port))],
    );
    mint(endpoint, &path).await
}

/// `POST path`: the login link the router answers with.
async fn mint(endpoint: &Endpoint, path: &str) -> Result<wire::WebLogin, RouterError> {
    let response = endpoint.session().send(http::Method::POST, path, &[]).await?;
    if response.status() != StatusCode::OK {
        return Err(refusal(response).await);
    }
    serde_json::from_slice(&read_all(response.into_body()).await?).map_err(|e| RouterError::Refused {
        status: StatusCode::BAD_GATEWAY,
        message: format!("the router's login link is not JSON: {e}"),
    })
}

/// A one-time link that logs the web page in (`POST /ui/login-link` on
/// the router's own URL, with the token): valid for 60 s, once.
pub async fn page_login_link(endpoint: &Endpoint) -> Result<wire::WebLogin, RouterError> {
    let Endpoint::Direct(target) = endpoint else {
        return Err(RouterError::Refused {
            status: StatusCode::BAD_REQUEST,
            message: "the web page's login link comes from the router's own URL (--direct)".into(),
        });
    };
    mint(
        endpoint,
        &format!("{}{}", target.server.prefix, wire::PAGE_LOGIN_LINK_PATH),
    )
    .await
}

/// Opens `url` with `$BROWSER`, else `xdg-open`.
pub fn browse(url: &str) -> std::io::Result<std::process::ExitStatus> {
    let browser = std::env::var("BROWSER")
        .ok()
        .filter(|b| !b.trim().is_empty())
        .unwrap_or_else(|| "xdg-open".to_owned());
    std::process::Command::new(browser)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .status()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hatchway_api::crd::{ContainerSpec, ContainerStatus, PublishedPort, PublishedPortStatus};

    fn container() -> Container {
        let mut c = Container::new(
            "web",
            ContainerSpec {
                published_ports: vec![
                    PublishedPort {
                        port: 8888,
                        access: PortAccess::Private,
                        label: None,
                        initial_path: None,
                    },
                    PublishedPort {
                        port: 80,
                        access: PortAccess::Public,
                        label: None,
                        initial_path: None,
                    },
                ],
                ..ContainerSpec::default()
            },
        );
        c.status = Some(ContainerStatus {
            published_ports: vec![PublishedPortStatus {
                port: 8888,
                access: PortAccess::Private,
                label: None,
                url: "https://u-8888.apps.example/lab".into(),
            }],
            ..ContainerStatus::default()
        });
        c
    }

    #[test]
    fn published_ports_have_urls_and_others_a_clear_error() {
        let c = container();
        assert_eq!(
            web_app(&c, 8888).unwrap(),
            WebApp {
                url: "https://u-8888.apps.example/lab".into(),
                private: true
            }
        );
        assert!(matches!(web_app(&c, 80), Err(OpenError::NoUrl { .. })));
        let e = web_app(&c, 9).unwrap_err().to_string();
        assert!(e.contains("published: 8888, 80"), "{e}");
    }
}
