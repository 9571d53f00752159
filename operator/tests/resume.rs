//! Resumable sessions through a real router to a real gateway: who may
//! resume (only the user who opened it, with its secret, on its route),
//! what happens past the grace time and at the session limit, and that
//! the secret never reaches the audit trail.

use hatchway_testkit as support;

use std::time::Duration;

use hatchway_api::resume::{Pumped, Session};
use hatchway_api::wire::resumable as header;
use http::StatusCode;
use hyper::body::Incoming;
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

const NS: &str = "team-a";

/// A router where "alice" and "bob" may do everything in NS, a running
/// Container "job" whose gateway has `tweak`ed settings, and a line echo
/// server "inside" it.
struct Rig {
    router: TestRouter,
    sidecar: TestSidecar,
    echo: u16,
}

async fn rig(tweak: impl FnOnce(&mut hatchway_sidecar::args::GatewayArgs)) -> Rig {
    let cluster = MemoryCluster::new();
    let auth = StaticAuth::new();
    for user in ["alice", "bob"] {
        auth.user(&format!("{user}-token"), user);
        auth.grant_all(user, NS);
    }
    // carol may do nothing in NS.
    auth.user("carol-token", "carol");
    let router = TestRouter::start(cluster.clone(), auth).await;
    let c = container(NS, "job");
    let sidecar = TestSidecar::start_with(c.metadata.uid.as_deref().unwrap(), tweak).await;
    cluster.insert(c);
    cluster.set_status(NS, "job", running_at(sidecar.addr()));
    let echo = line_echo_server().await;
    Rig {
        router,
        sidecar,
        echo,
    }
}

impl Rig {
    fn forward_path(&self) -> String {
        api_path(NS, "job", &format!("portforward?port={}", self.echo))
    }

    /// An upgrade of `path` as `token`'s user with `headers`.
    async fn upgrade(
        &self,
        path: &str,
        token: &str,
        protocol: &str,
        headers: &[(&str, &str)],
    ) -> (Client, http::Response<Incoming>) {
        let mut request = upgrade_request(path, Some(token), protocol);
        for (name, value) in headers {
            request.headers_mut().insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        let mut client = self.router.client().await;
        let response = client.send(request).await;
        (client, response)
    }

    /// Resumes port-forward session `id` as alice.
    async fn resume(&self, id: &str, secret: &str, offset: &str) -> (Client, http::Response<Incoming>) {
        let headers = [
            (header::ID, id),
            (header::SECRET, secret),
            (header::OFFSET, offset),
        ];
        self.upgrade(&self.forward_path(), "alice-token", "tcp", &headers)
            .await
    }

    /// Asks for a resumable port-forward as alice.
    async fn ask_resumable(&self) -> (Client, http::Response<Incoming>) {
        self.upgrade(
            &self.forward_path(),
            "alice-token",
            "tcp",
            &[(header::REQUEST, "1")],
        )
        .await
    }

    /// Opens a resumable port-forward as alice: its id and secret, and
    /// the connection.
    async fn open(&self) -> (String, String, hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>) {
        let (_client, response) = self.ask_resumable().await;
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        let get = |name| response.headers()[name].to_str().unwrap().to_owned();
        let (id, secret) = (get(header::ID), get(header::SECRET));
        assert_eq!(get(header::GRACE), "600", "the default grace time is announced");
        let io = hyper_util::rt::TokioIo::new(hyper::upgrade::on(response).await.unwrap());
        (id, secret, io)
    }

    fn audit(&self) -> String {
        std::fs::read_to_string(self.sidecar.audit_dir().join("gateway.txt")).unwrap_or_default()
    }
}

#[tokio::test]
async fn a_session_resumes_only_for_its_user_with_its_secret_on_its_route() {
    let rig = rig(|_| {}).await;
    let (id, secret, _held) = rig.open().await;
    assert_eq!(id.len(), 16);
    assert_eq!(secret.len(), 64);
    let pf = rig.forward_path();
    let shell = api_path(NS, "job", "ssh");
    struct Case<'a> {
        what: &'a str,
        path: &'a str,
        protocol: &'a str,
        token: &'a str,
        id: &'a str,
        secret: Option<&'a str>,
        offset: Option<&'a str>,
        status: StatusCode,
        message: &'a str,
    }
    let alice = |what, id, secret, offset, status, message| Case {
        what,
        path: &pf,
        protocol: "tcp",
        token: "alice-token",
        id,
        secret,
        offset,
        status,
        message,
    };
    let cases = [
        Case {
            token: "bob-token",
            ..alice(
                "bob, with alice's stolen id and secret",
                &id,
                Some(&secret),
                Some("0"),
                StatusCode::FORBIDDEN,
                "belongs to another user",
            )
        },
        alice(
            "alice, with a wrong secret",
            &id,
            Some("00"),
            Some("0"),
            StatusCode::FORBIDDEN,
            "the resume secret is not session",
        ),
        Case {
            path: &shell,
            protocol: "ssh",
            ..alice(
                "alice, on the shell route",
                &id,
                Some(&secret),
                Some("0"),
                StatusCode::FORBIDDEN,
                "is a portforward session, not a shell",
            )
        },
        alice(
            "alice, naming a session that never was",
            "0123456789abcdef",
            Some(&secret),
            Some("0"),
            StatusCode::GONE,
            "is not known to this container's gateway",
        ),
        alice(
            "alice, without the offset",
            &id,
            Some(&secret),
            None,
            StatusCode::BAD_REQUEST,
            "a resume needs hatchway-session-offset",
        ),
        alice(
            "alice, asking for bytes never sent",
            &id,
            Some(&secret),
            Some("99"),
            StatusCode::CONFLICT,
            "beyond the 0 bytes sent",
        ),
    ];
    for case in cases {
        let mut headers = vec![(header::ID, case.id)];
        headers.extend(case.secret.map(|s| (header::SECRET, s)));
        headers.extend(case.offset.map(|o| (header::OFFSET, o)));
        let (_client, response) = rig.upgrade(case.path, case.token, case.protocol, &headers).await;
        let got = response.status();
        let body = body_text(response).await;
        assert_eq!(got, case.status, "{}: {body}", case.what);
        assert!(
            body.contains(case.message),
            "{}: {body:?} should say {:?}",
            case.what,
            case.message
        );
    }
    let audit = rig.audit();
    assert!(
        audit.contains(&format!(
            "resumable {id} resume refused (other_user) user=\"bob\""
        )),
        "{audit}"
    );
    assert!(audit.contains("(wrong_secret)"), "{audit}");
    assert!(
        !audit.contains(&secret),
        "the secret is in the audit trail: {audit}"
    );
    let metrics = rig.sidecar.running.gateway.metrics.encode();
    assert!(
        metrics.contains("hatchway_sidecar_resumable_sessions_total{outcome=\"other_user\"} 1"),
        "{metrics}"
    );
}

/// Lines `from..to` through `local` (the application's end of a session),
/// each read back from the echo server.
async fn echo_lines(
    local: &mut (impl tokio::io::AsyncBufRead + tokio::io::AsyncWrite + Unpin),
    from: u32,
    to: u32,
) {
    for i in from..to {
        local.write_all(format!("line {i}\n").as_bytes()).await.unwrap();
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(20), local.read_line(&mut line))
            .await
            .expect("the echo in time")
            .unwrap();
        assert_eq!(line, format!("line {i}\n"));
    }
}

#[tokio::test]
async fn the_owner_resumes_where_the_bytes_stopped_after_the_connection_broke() {
    let rig = rig(|_| {}).await;
    let (id, secret, io) = rig.open().await;
    let (app, mut local) = tokio::io::duplex(64 * 1024);
    let mut app = tokio::io::BufReader::new(app);
    let mut session = Session::new(1 << 20);
    // The first connection carries 20 lines, then breaks under the session.
    let pump = async {
        let (transport, cut) = cuttable(io);
        let pumping = session.pump(&mut local, transport);
        tokio::pin!(pumping);
        tokio::select! {
            pumped = &mut pumping => panic!("the pump ended first: {pumped:?}"),
            () = async {
                echo_lines(&mut app, 0, 20).await;
                app.write_all(b"in flight while it breaks\n").await.unwrap();
                cut.cancel();
            } => {}
        }
        assert_eq!(pumping.await.unwrap(), Pumped::Broken);
    };
    pump.await;
    // The resume: the offset each side received, then the rest.
    let received = session.received().to_string();
    let (_client, response) = rig.resume(&id, &secret, &received).await;
    assert_eq!(
        response.status(),
        StatusCode::SWITCHING_PROTOCOLS,
        "{}",
        body_text(response).await
    );
    let theirs: u64 = response.headers()[header::OFFSET]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    session.resume(theirs).unwrap();
    let io = hyper_util::rt::TokioIo::new(hyper::upgrade::on(response).await.unwrap());
    let pumping = session.pump(&mut local, io);
    tokio::pin!(pumping);
    tokio::select! {
        pumped = &mut pumping => panic!("the pump ended first: {pumped:?}"),
        () = async {
            let mut line = String::new();
            app.read_line(&mut line).await.unwrap();
            assert_eq!(line, "in flight while it breaks\n", "the line in flight arrives once");
            echo_lines(&mut app, 20, 40).await;
        } => {}
    }
    let audit = rig.audit();
    assert!(
        audit.contains(&format!("resumable {id} resumed user=\"alice\"")),
        "{audit}"
    );
}

/// `io` and a token that, cancelled, makes it fail both ways (a
/// connection that broke).
fn cuttable<T>(io: T) -> (Cuttable<T>, tokio_util::sync::CancellationToken)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let cut = tokio_util::sync::CancellationToken::new();
    (
        Cuttable {
            inner: io,
            cut: Box::pin(cut.clone().cancelled_owned()),
        },
        cut,
    )
}

struct Cuttable<T> {
    inner: T,
    cut: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
}

impl<T> Cuttable<T> {
    fn is_cut(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        self.cut.as_mut().poll(cx).is_ready()
    }
}

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Cuttable<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.is_cut(cx) {
            return Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Cuttable<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.is_cut(cx) {
            return Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into()));
        }
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn a_detached_session_ends_after_its_grace_time_and_the_audit_says_so() {
    let rig = rig(|args| args.resume_grace_seconds = 1).await;
    let (_client, response) = rig.ask_resumable().await;
    assert_eq!(response.headers()[header::GRACE], "1");
    let id = response.headers()[header::ID].to_str().unwrap().to_owned();
    let secret = response.headers()[header::SECRET].to_str().unwrap().to_owned();
    drop(hyper::upgrade::on(response).await.unwrap());
    drop(_client);
    let ended = format!(
        "resumable {id} ended kind=portforward user=\"alice\" how=\"detached for the grace time (1 s)\""
    );
    eventually("the detached session to end", || {
        let hit = rig.audit().contains(&ended);
        async move { hit }
    })
    .await;
    let (_client, response) = rig.resume(&id, &secret, "0").await;
    assert_eq!(response.status(), StatusCode::GONE);
}

#[tokio::test]
async fn beyond_the_session_limit_sessions_open_without_resumption() {
    let rig = rig(|args| args.resume_max_sessions = 1).await;
    let (_first, _secret, _held) = rig.open().await;
    let (_client, response) = rig.ask_resumable().await;
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert!(
        response.headers().get(header::ID).is_none(),
        "a second session was resumable"
    );
    // It still works, plainly.
    let mut io = tokio::io::BufReader::new(hyper_util::rt::TokioIo::new(
        hyper::upgrade::on(response).await.unwrap(),
    ));
    echo_lines(&mut io, 0, 3).await;
    let metrics = rig.sidecar.running.gateway.metrics.encode();
    assert!(
        metrics.contains("hatchway_sidecar_resumable_sessions_total{outcome=\"refused_full\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn sessions_lists_only_the_callers_own_and_refuses_what_it_does_not_serve() {
    let rig = rig(|_| {}).await;
    let (id, _secret, _held) = rig.open().await;
    let path = api_path(NS, "job", "sessions");
    let get = |token: &'static str, method: &'static str| {
        let path = path.clone();
        let rig = &rig;
        async move {
            let mut client = rig.router.client().await;
            let response = client
                .send(request(method, &path, Some(token)).body(empty()).unwrap())
                .await;
            (response.status(), body_text(response).await)
        }
    };
    let (status, body) = get("alice-token", "GET").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let list: hatchway_api::wire::SessionList = serde_json::from_str(&body).unwrap();
    assert_eq!(list.sessions.len(), 1, "{body}");
    let listed = &list.sessions[0];
    assert_eq!((listed.id.as_str(), listed.user.as_str()), (id.as_str(), "alice"));
    assert_eq!(listed.kind, "portforward");
    assert_eq!(listed.what, format!("port {}", rig.echo));
    assert_eq!(listed.detached_since, None, "a connection carries it");
    assert!(!body.contains("secret"), "the secret is never listed: {body}");

    let (status, body) = get("bob-token", "GET").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, r#"{"sessions":[]}"#));
    let (status, body) = get("carol-token", "GET").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = get("alice-token", "POST").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    assert!(body.contains("sessions are listed with GET"), "{body}");
}
