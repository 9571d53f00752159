//! [`KubeAuth`]: the real [`Auth`], asking the Kubernetes API — a
//! TokenReview (`authentication.k8s.io/v1`) for who owns a token, a
//! SubjectAccessReview (`authorization.k8s.io/v1`) for what they may do to a
//! Container's subresources. Wrap it in [`super::cache::CachedAuth`]: every
//! call here is a round trip to the API server.

use std::fmt;

use futures::future::BoxFuture;
use hatchway_api::crd::{Container, GROUP};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::api::{Api, PostParams};
use kube::core::Request;
use serde::Deserialize;

use super::{Auth, AuthError, Permission, User};

/// Authenticates with TokenReview and authorizes with SubjectAccessReview.
/// Needs RBAC: `create` on `tokenreviews.authentication.k8s.io` and
/// `subjectaccessreviews.authorization.k8s.io` (cluster-wide).
#[derive(Clone)]
pub struct KubeAuth {
    client: kube::Client,
    audiences: Vec<String>,
}

impl KubeAuth {
    /// Asks the API server `client` talks to. A token must be meant for one
    /// of `audiences`; empty means the API server's own audiences (any
    /// token `kubectl` would accept).
    pub fn new(client: kube::Client, audiences: Vec<String>) -> Self {
        Self { client, audiences }
    }
}

impl fmt::Debug for KubeAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeAuth")
            .field("audiences", &self.audiences)
            .finish_non_exhaustive()
    }
}

/// What we read of a TokenReview answer. The answer echoes the request,
/// token included: deserializing only `status` means the token is never
/// held in a typed value someone could `Debug`-print.
#[derive(Deserialize)]
struct Reviewed {
    status: Option<TokenReviewStatus>,
}

impl Auth for KubeAuth {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<User, AuthError>> {
        Box::pin(async move {
            if token.is_empty() {
                return Err(AuthError::Unauthenticated("the token is empty".into()));
            }
            let review = TokenReview {
                spec: TokenReviewSpec {
                    token: Some(token.to_owned()),
                    audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
                },
                ..TokenReview::default()
            };
            let status = self.review_token(&review).await?;
            user_of(status, &self.audiences, token)
        })
    }

    fn authorize<'a>(
        &'a self,
        user: &'a User,
        namespace: &'a str,
        name: &'a str,
        permission: Permission,
    ) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(async move {
            let review = access_review(user, namespace, name, permission);
            let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
            let done = api.create(&PostParams::default(), &review).await.map_err(|e| {
                tracing::warn!(error = %e, "SubjectAccessReview failed");
                AuthError::Unavailable(format!("SubjectAccessReview failed: {e}"))
            })?;
            let status = done.status.unwrap_or_default();
            if !status.allowed {
                // An authorizer that failed to evaluate denies; say why in
                // the operator's log (the user only sees 403).
                if let Some(err) = status.evaluation_error.filter(|e| !e.is_empty()) {
                    tracing::warn!(user = %user.username, %namespace, %name, %permission, error = %err,
                        "SubjectAccessReview evaluation error");
                }
            }
            Ok(status.allowed)
        })
    }
}

impl KubeAuth {
    /// Creates the TokenReview through a raw request, so that neither the
    /// request nor the answer (both carry the token) reaches a log line:
    /// kube's typed `create` logs a response body it cannot parse.
    async fn review_token(&self, review: &TokenReview) -> Result<TokenReviewStatus, AuthError> {
        let unavailable = |what: String| {
            tracing::warn!(error = %what, "TokenReview failed");
            AuthError::Unavailable(format!("TokenReview failed: {what}"))
        };
        let body = serde_json::to_vec(review).map_err(|e| unavailable(e.to_string()))?;
        let url = <TokenReview as kube::Resource>::url_path(&(), None);
        let request = Request::new(url)
            .create(&PostParams::default(), body)
            .map_err(|e| unavailable(e.to_string()))?;
        let text = self
            .client
            .request_text(request)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let reviewed: Reviewed =
            serde_json::from_str(&text).map_err(|e| unavailable(format!("cannot read the answer: {e}")))?;
        Ok(reviewed.status.unwrap_or_default())
    }
}

/// The user a TokenReview status names, or why the token is refused.
fn user_of(status: TokenReviewStatus, audiences: &[String], token: &str) -> Result<User, AuthError> {
    let rejected = |why: &str| AuthError::Unauthenticated(format!("token rejected by the cluster: {why}"));
    if status.authenticated != Some(true) {
        // Authenticators word their own errors; make sure none echoes the
        // token back into a response or a log.
        let why = status
            .error
            .filter(|e| !e.is_empty())
            .map(|e| e.replace(token, "<token>"));
        return Err(rejected(why.as_deref().unwrap_or("the token is not valid")));
    }
    // With spec.audiences set, the API server answers with the audiences
    // the token is valid for; an authenticator that does not know about
    // audiences answers none, which means "the API server's own". Such a
    // token was not issued for us: refuse it (as the TokenReview API docs
    // ask of callers that set audiences).
    if !audiences.is_empty() {
        let granted = status.audiences.unwrap_or_default();
        if !granted.iter().any(|a| audiences.contains(a)) {
            return Err(rejected(&format!(
                "the token is not meant for this service (audiences {})",
                audiences.join(", ")
            )));
        }
    }
    let info = status.user.unwrap_or_default();
    let username = info.username.unwrap_or_default();
    if username.is_empty() {
        return Err(rejected("the cluster named no user for it"));
    }
    Ok(User {
        username,
        uid: info.uid.unwrap_or_default(),
        groups: info.groups.unwrap_or_default(),
        extra: info.extra.unwrap_or_default(),
    })
}

/// The SubjectAccessReview asking whether `user` holds `permission` on the
/// Container `namespace/name` (RBAC: `verb` on
/// `containers/<subresource>` in group `hatchway.dev`).
fn access_review(user: &User, namespace: &str, name: &str, permission: Permission) -> SubjectAccessReview {
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.username.clone()),
            uid: non_empty(&user.uid),
            groups: (!user.groups.is_empty()).then(|| user.groups.clone()),
            extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
            resource_attributes: Some(ResourceAttributes {
                group: Some(GROUP.to_owned()),
                resource: Some(<Container as kube::Resource>::plural(&()).into_owned()),
                subresource: non_empty(permission.subresource),
                verb: Some(permission.verb.to_owned()),
                namespace: Some(namespace.to_owned()),
                name: non_empty(name),
                ..ResourceAttributes::default()
            }),
            non_resource_attributes: None,
        },
        ..SubjectAccessReview::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::UserInfo;

    fn authenticated(username: &str, audiences: Option<Vec<&str>>) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(true),
            audiences: audiences.map(|a| a.into_iter().map(String::from).collect()),
            user: Some(UserInfo {
                username: Some(username.into()),
                uid: Some("u-1".into()),
                groups: Some(vec!["system:authenticated".into()]),
                extra: Some([("k".to_owned(), vec!["v".to_owned()])].into()),
            }),
            error: None,
        }
    }

    #[test]
    fn an_authenticated_status_gives_the_user() {
        let user = user_of(authenticated("alice", None), &[], "tok").unwrap();
        assert_eq!(user.username, "alice");
        assert_eq!(user.uid, "u-1");
        assert_eq!(user.groups, ["system:authenticated"]);
        assert_eq!(user.extra["k"], ["v"]);
    }

    #[test]
    fn a_rejection_says_why_without_the_token() {
        let status = TokenReviewStatus {
            authenticated: Some(false),
            error: Some("invalid bearer token sekrit, expired".into()),
            ..TokenReviewStatus::default()
        };
        let err = user_of(status, &[], "sekrit").unwrap_err();
        let AuthError::Unauthenticated(msg) = err else {
            panic!("{err:?}")
        };
        assert_eq!(
            msg,
            "token rejected by the cluster: invalid bearer token <token>, expired"
        );

        let err = user_of(TokenReviewStatus::default(), &[], "t").unwrap_err();
        assert_eq!(
            err.to_string(),
            "token rejected by the cluster: the token is not valid"
        );
    }

    #[test]
    fn audiences_must_match_when_asked_for() {
        let want = ["hatchway".to_owned()];
        user_of(authenticated("a", Some(vec!["other", "hatchway"])), &want, "t").unwrap();
        for granted in [None, Some(vec![]), Some(vec!["other"])] {
            let err = user_of(authenticated("a", granted.clone()), &want, "t").unwrap_err();
            assert!(
                err.to_string().contains("not meant for this service"),
                "{granted:?}: {err}"
            );
        }
        // No audiences asked: whatever the API server accepts.
        user_of(authenticated("a", None), &[], "t").unwrap();
    }

    #[test]
    fn an_authenticated_token_without_a_user_name_is_refused() {
        let err = user_of(authenticated("", None), &[], "t").unwrap_err();
        assert!(matches!(err, AuthError::Unauthenticated(_)));
    }

    #[test]
    fn the_access_review_asks_about_the_containers_subresource() {
        let user = User {
            username: "alice".into(),
            uid: String::new(),
            groups: vec!["g".into()],
            extra: Default::default(),
        };
        let review = access_review(&user, "ns", "web-1", Permission::SHELL);
        let json = serde_json::to_value(&review).unwrap();
        assert_eq!(
            json["spec"],
            serde_json::json!({
                "user": "alice",
                "groups": ["g"],
                "resourceAttributes": {
                    "group": "hatchway.dev",
                    "resource": "containers",
                    "subresource": "shell",
                    "verb": "create",
                    "namespace": "ns",
                    "name": "web-1",
                },
            })
        );
        assert_eq!(json["apiVersion"], "authorization.k8s.io/v1");
        assert_eq!(json["kind"], "SubjectAccessReview");
    }
}
