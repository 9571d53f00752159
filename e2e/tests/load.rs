//! `make load`: Hatchway under load on the real cluster (docs/chaos.md).
//! Not part of `make e2e` (ignored there; it fills the node).
//!
//! One install, two replicas, direct access:
//! 1. 200 shells at once, each running a command for 5 s;
//! 2. 500 port-forward connections open at once through one
//!    `kubectl hatch port-forward`, each echoing a line before and after
//!    all are open;
//! 3. 1000 web-app connections open at once (TLS to the NodePort, so
//!    spread over both replicas), a request on each before and after all
//!    are open;
//! 4. 1000 Containers that cannot be scheduled (an impossible CPU request:
//!    their pods stay Pending) beside real running ones: the time to
//!    reconcile them, the API server requests the operator made (counted by
//!    a FlowSchema of its own), the routers' memory, and the time to
//!    delete them.
//!
//! Errors must be 0; the figures go to `e2e/results/DATE-load.md`
//! (`DATE-load-web-forwards.md` for a run of `HATCHWAY_LOAD_CASES=web,forwards`).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use common::release::*;
use common::results;
use hatchway_e2e::{TestNamespace, kubectl, kubectl_json, kubectl_stdin, wait_until};
use serde_json::{Value, json};

/// The workload: a page on 8081 and a TCP echo on 9000 — the test tools
/// `page` and `tcp-echo`, not busybox's httpd and nc: those fork per
/// connection behind a listen backlog of 9 and 1, and 1000 connections at
/// once measured their SYN retries instead of Hatchway (docs/chaos.md).
const SCRIPT: &str = "(page 8081 'public page' &) && (tcp-echo 9000 &) && exec sleep 1000000";

const SHELLS: usize = 200;
const FORWARDS: usize = 500;
const WEB_CONNECTIONS: usize = 1000;
const PENDING: usize = 1000;
/// Running Containers beside the pending ones (the node holds these).
const RUNNING: usize = 8;

#[test]
#[ignore = "make load: fills the node; run alone"]
fn load() -> Result<()> {
    let users = TestNamespace::new("load-users")?;
    let release = Release::install("load", &users, &[])?;
    release.upgrade(&[
        "--set",
        &format!("webApps.wildcardDomain={APPS}:{}", release.node_port),
    ])?;
    let alice = User::new(&users, &release, "alice", Some("edit"))?;
    users.apply(&container(
        "web",
        SCRIPT,
        json!([{"port": 8081, "access": "public"}]),
    ))?;
    wait_phase(&users, "web", "Running")?;
    let url = wait_until("the web app's URL", WAIT, POLL, || {
        let c = get_container(&users, "web")?;
        Ok(published_url(&c["status"], 8081).filter(|u| u.contains(APPS)))
    })?;
    alice.wait_rights("web")?;

    let mut report = format!(
        "# Load\n\n`make load` at {}, on the e2e cluster (one node): one install, two replicas, \
         direct access; the clients on the node. Latencies in milliseconds, p50 / p99 / max.\n\n",
        results::machine()
    );
    let lookups_before = auth_lookups(&release)?;
    let mut problems = Vec::new();

    if case("shells") {
        let shells = concurrent_shells(&alice)?;
        report.push_str(&shells.row("shells at once (a 5 s command each): time to the command's first line"));
        problems.extend(shells.problem("shells"));
    }
    if case("forwards") {
        let forwards = concurrent_forwards(&alice)?;
        if !forwards.failures.is_empty() {
            show_warnings(&release, &users);
        }
        report.push_str(&forwards.row("port-forward connections open at once: an echoed line"));
        problems.extend(forwards.problem("port-forward connections"));
    }
    if case("web") {
        let (webs, phases) = concurrent_web(&release, &url)?;
        report.push_str(&webs.row("web-app connections open at once: a request"));
        report.push_str(&phases);
        problems.extend(webs.problem("web-app connections"));
    }

    let lookups_after = auth_lookups(&release)?;
    report.push_str(&lookups_table(&lookups_before, &lookups_after));

    if case("containers") {
        report.push_str(&reconcile_many(&release, &users)?);
    }
    results::write(&results::name_for_cases("load", "HATCHWAY_LOAD_CASES"), &report)?;
    users.passed();
    release.ns.passed();
    ensure!(problems.is_empty(), "load: {}", problems.join("; "));
    Ok(())
}

/// Whether `HATCHWAY_LOAD_CASES` (comma-separated: shells, forwards, web,
/// containers; unset: all) names `name`.
fn case(name: &str) -> bool {
    let only = std::env::var("HATCHWAY_LOAD_CASES").unwrap_or_default();
    only.is_empty() || only.split(',').any(|o| o.trim() == name)
}

/// Outcomes of many clients at once.
struct Crowd {
    clients: usize,
    failures: Vec<String>,
    latencies_ms: Vec<f64>,
    took: Duration,
}

impl Crowd {
    fn row(&self, what: &str) -> String {
        let mut out = format!(
            "## {} {what}\n\n{} of {} failed; latency {} ms; all done in {:.1} s.\n\n",
            self.clients,
            self.failures.len(),
            self.clients,
            results::spread(&self.latencies_ms, 1),
            self.took.as_secs_f64()
        );
        for (failure, count) in tally(self.failures.iter().map(String::as_str), 200) {
            out.push_str(&format!("- {count}× `{}`\n", failure.replace('`', "'")));
        }
        if !self.failures.is_empty() {
            out.push('\n');
        }
        out
    }

    fn problem(&self, what: &str) -> Option<String> {
        (!self.failures.is_empty())
            .then(|| format!("{} of {} {what} failed", self.failures.len(), self.clients))
    }
}

/// `SHELLS` `kubectl hatch shell` processes started together, each
/// printing a line, sleeping 5 s (so all are open at once) and printing
/// another.
fn concurrent_shells(alice: &User) -> Result<Crowd> {
    eprintln!("load: {SHELLS} shells at once");
    let started = Instant::now();
    let results: Vec<Result<f64, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..SHELLS)
            .map(|i| {
                scope.spawn(move || -> Result<f64, String> {
                    let begun = Instant::now();
                    let command = format!("echo up-{i}; sleep 5; echo down-{i}");
                    let mut child = alice
                        .hatch(&["shell", "web", "--", &command])
                        .and_then(|mut c| Ok(c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?))
                        .map_err(|e| format!("{e:#}"))?;
                    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
                    let first = lines.next().transpose().map_err(|e| e.to_string())?;
                    let up = begun.elapsed().as_secs_f64() * 1000.0;
                    let second = lines.next().transpose().map_err(|e| e.to_string())?;
                    let out = child.wait_with_output().map_err(|e| e.to_string())?;
                    if !out.status.success() {
                        return Err(format!(
                            "{}: {}",
                            out.status,
                            String::from_utf8_lossy(&out.stderr).trim()
                        ));
                    }
                    if first.as_deref() != Some(&format!("up-{i}"))
                        || second.as_deref() != Some(&format!("down-{i}"))
                    {
                        return Err(format!("output {first:?} {second:?}"));
                    }
                    Ok(up)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("the thread panicked".into())))
            .collect()
    });
    Ok(crowd(results, started))
}

fn crowd(results: Vec<Result<f64, String>>, started: Instant) -> Crowd {
    let clients = results.len();
    let (ok, failed): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    Crowd {
        clients,
        failures: failed.into_iter().filter_map(Result::err).collect(),
        latencies_ms: ok.into_iter().filter_map(Result::ok).collect(),
        took: started.elapsed(),
    }
}

/// `FORWARDS` connections through one `kubectl hatch port-forward`: each
/// echoes a line, waits until all are open, and echoes another.
fn concurrent_forwards(alice: &User) -> Result<Crowd> {
    eprintln!("load: {FORWARDS} port-forward connections at once");
    // Its stderr (what it says about failed connections) is shown when
    // any failed.
    let stderr = tempfile::NamedTempFile::new()?;
    let mut forward = alice
        .hatch(&["port-forward", "web", ":9000"])?
        .stdout(Stdio::piped())
        .stderr(stderr.reopen()?)
        .spawn()?;
    let mut line = String::new();
    BufReader::new(forward.stdout.take().context("stdout")?).read_line(&mut line)?;
    let addr: std::net::SocketAddr = line
        .split_whitespace()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("no address in {line:?}"))?;
    let started = Instant::now();
    let barrier = Arc::new(tokio::sync::Barrier::new(FORWARDS));
    let results = common::runtime().block_on(async {
        let tasks: Vec<_> = (0..FORWARDS)
            .map(|i| {
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    let begun = Instant::now();
                    let first = tokio::time::timeout(Duration::from_secs(120), async {
                        let (read, mut write) = tokio::net::TcpStream::connect(addr).await?.into_split();
                        let mut read = tokio::io::BufReader::new(read);
                        echo_line(&mut read, &mut write, &format!("hello {i}")).await?;
                        anyhow::Ok((read, write))
                    })
                    .await
                    .map_err(|_| anyhow::anyhow!("no echo within 120 s"))
                    .and_then(|r| r);
                    let up = begun.elapsed().as_secs_f64() * 1000.0;
                    // Everyone open (or failed); then the second line.
                    barrier.wait().await;
                    let (mut read, mut write) = first.map_err(|e| format!("{e:#}"))?;
                    tokio::time::timeout(
                        Duration::from_secs(60),
                        echo_line(&mut read, &mut write, &format!("bye {i}")),
                    )
                    .await
                    .map_err(|_| "no second echo within 60 s".to_owned())?
                    .map_err(|e| format!("after all were open: {e:#}"))?;
                    Ok(up)
                })
            })
            .collect();
        joined(tasks).await
    });
    let _ = forward.kill();
    let _ = forward.wait();
    let crowd = crowd(results, started);
    if !crowd.failures.is_empty() {
        let said = std::fs::read_to_string(stderr.path()).unwrap_or_default();
        show_tally(
            &format!(
                "kubectl hatch port-forward said, by line ({} lines)",
                said.lines().count()
            ),
            tally(said.lines(), 160),
        );
    }
    Ok(crowd)
}

/// Writes `text` and a newline, and reads the same line back.
async fn echo_line(
    read: &mut tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>,
    write: &mut tokio::net::tcp::OwnedWriteHalf,
    text: &str,
) -> Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    write.write_all(format!("{text}\n").as_bytes()).await?;
    let mut back = String::new();
    read.read_line(&mut back).await?;
    ensure!(back == format!("{text}\n"), "echoed {back:?} for {text:?}");
    Ok(())
}

/// `GET /` on `sender` for `host`: the public page, or an error.
async fn get_page(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    host: &str,
) -> Result<()> {
    use http_body_util::{BodyExt, Empty};
    let request = http::Request::get("/").header("host", host).body(Empty::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    ensure!(
        status == http::StatusCode::OK && &body[..] == b"public page\n",
        "{status}: {:?}",
        String::from_utf8_lossy(&body)
    );
    Ok(())
}

/// `WEB_CONNECTIONS` TLS connections to the router's NodePort for the web
/// app at `url`: a request on each, then (all open) another. Also the
/// first request's phases (TCP connected, TLS done, answered), so a slow
/// run says where the time went.
fn concurrent_web(release: &Release, url: &str) -> Result<(Crowd, String)> {
    eprintln!("load: {WEB_CONNECTIONS} web-app connections at once");
    let (host, name) = web_app_host(url)?;
    let connector = tokio_rustls::TlsConnector::from(release.client_tls()?);
    let addr = format!("{}:{}", release.node_ip, release.node_port);
    let started = Instant::now();
    let barrier = Arc::new(tokio::sync::Barrier::new(WEB_CONNECTIONS));
    let phases = Arc::new(std::sync::Mutex::new(Vec::new()));
    let results = common::runtime().block_on(async {
        let tasks: Vec<_> = (0..WEB_CONNECTIONS)
            .map(|_| {
                let (barrier, connector, addr, host, name, phases) = (
                    barrier.clone(),
                    connector.clone(),
                    addr.clone(),
                    host.clone(),
                    name.clone(),
                    phases.clone(),
                );
                tokio::spawn(async move {
                    let begun = Instant::now();
                    let ms = |since: Instant| since.elapsed().as_secs_f64() * 1000.0;
                    let first = tokio::time::timeout(Duration::from_secs(120), async {
                        let tcp = tokio::net::TcpStream::connect(&addr).await?;
                        let connected = ms(begun);
                        let tls = connector
                            .connect(rustls::pki_types::ServerName::try_from(name)?, tcp)
                            .await?;
                        let handshaken = ms(begun);
                        let (mut sender, connection) =
                            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
                        tokio::spawn(connection);
                        get_page(&mut sender, &host).await?;
                        phases.lock().unwrap().push([connected, handshaken, ms(begun)]);
                        anyhow::Ok(sender)
                    })
                    .await
                    .map_err(|_| anyhow::anyhow!("no answer within 120 s"))
                    .and_then(|r| r);
                    let up = ms(begun);
                    barrier.wait().await;
                    let mut sender = first.map_err(|e| format!("{e:#}"))?;
                    tokio::time::timeout(Duration::from_secs(60), get_page(&mut sender, &host))
                        .await
                        .map_err(|_| "no second answer within 60 s".to_owned())?
                        .map_err(|e| format!("after all were open: {e:#}"))?;
                    Ok(up)
                })
            })
            .collect();
        joined(tasks).await
    });
    let phases = phases.lock().unwrap();
    let column = |i: usize| results::spread(&phases.iter().map(|p| p[i]).collect::<Vec<_>>(), 1);
    let table = format!(
        "| first request, from the start (ms) | p50 / p99 / max |\n|---|---|\n\
         | TCP connected | {} |\n| TLS handshake done | {} |\n| answered | {} |\n\n",
        column(0),
        column(1),
        column(2)
    );
    Ok((crowd(results, started), table))
}

/// Each client task's outcome, in order (a task that panicked: its error).
async fn joined(tasks: Vec<tokio::task::JoinHandle<Result<f64, String>>>) -> Vec<Result<f64, String>> {
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap_or_else(|e| Err(e.to_string())));
    }
    results
}

/// The warnings the replicas and the web Container's sidecar logged, by
/// message (counted): what a failed case looked like from inside.
fn show_warnings(release: &Release, users: &TestNamespace) {
    let mut sources = vec![(
        release.ns.name.clone(),
        "app.kubernetes.io/component=operator".to_owned(),
        None,
    )];
    sources.push((
        users.name.clone(),
        "hatchway.dev/container=web".to_owned(),
        Some("hatchway-sidecar"),
    ));
    for (namespace, selector, container) in sources {
        let mut args = vec![
            "-n",
            &namespace,
            "logs",
            "-l",
            &selector,
            "--since=10m",
            "--tail=-1",
        ];
        args.extend(container.map(|c| ["-c", c]).into_iter().flatten());
        let Ok(text) = kubectl(&args) else { continue };
        // Past the timestamp and level: the message and its fields.
        let messages = text.lines().filter_map(|line| {
            line.split_once("WARN")
                .or_else(|| line.split_once("ERROR"))
                .map(|(_, message)| message)
        });
        show_tally(
            &format!("warnings in {namespace} ({selector})"),
            tally(messages, 200),
        );
    }
}

/// How often each text occurs, texts cut to their first `width`
/// characters.
fn tally<'a>(texts: impl IntoIterator<Item = &'a str>, width: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for text in texts {
        *counts.entry(text.chars().take(width).collect()).or_default() += 1;
    }
    counts
}

/// Prints `counts` under `title`, one line per text.
fn show_tally(title: &str, counts: BTreeMap<String, usize>) {
    eprintln!("load: {title}:");
    for (text, count) in counts {
        eprintln!("  {count}× {text}");
    }
}

/// The replicas' `/metrics`.
fn replica_metrics(release: &Release) -> Result<Vec<String>> {
    release
        .pods()?
        .into_iter()
        .map(|(pod, _)| pod_metrics(&release.ns.name, &pod, "https", 9443))
        .collect()
}

/// (review, result) -> count, summed over replicas.
fn auth_lookups(release: &Release) -> Result<BTreeMap<(String, String), f64>> {
    let texts = replica_metrics(release)?;
    let mut out = BTreeMap::new();
    for review in ["token", "access"] {
        for result in ["hit", "miss"] {
            out.insert(
                (review.to_owned(), result.to_owned()),
                metric_sum(
                    &texts,
                    "hatchway_router_auth_cache_lookups_total",
                    &[&format!("review=\"{review}\""), &format!("result=\"{result}\"")],
                ),
            );
        }
    }
    Ok(out)
}

fn lookups_table(
    before: &BTreeMap<(String, String), f64>,
    after: &BTreeMap<(String, String), f64>,
) -> String {
    let delta = |review: &str, result: &str| {
        let key = (review.to_owned(), result.to_owned());
        after.get(&key).copied().unwrap_or_default() - before.get(&key).copied().unwrap_or_default()
    };
    let mut out = "## The authentication cache under that load\n\n| review | hits | misses (the API server asked) | hit ratio |\n|---|---:|---:|---:|\n".to_owned();
    for (review, what) in [("token", "TokenReview"), ("access", "SubjectAccessReview")] {
        let (hits, misses) = (delta(review, "hit"), delta(review, "miss"));
        out.push_str(&format!(
            "| {what} | {hits} | {misses} | {:.3} |\n",
            if hits + misses > 0.0 {
                hits / (hits + misses)
            } else {
                0.0
            }
        ));
    }
    out.push('\n');
    out
}

/// 1000 unschedulable Containers and a few running ones: the operator's
/// reconcile time, API server requests and memory; then their deletion.
fn reconcile_many(release: &Release, users: &TestNamespace) -> Result<String> {
    eprintln!("load: {PENDING} pending Containers and {RUNNING} running ones");
    let account = release
        .ns
        .kubectl(&[
            "get",
            "deployment",
            &release.fullname(),
            "-o",
            "jsonpath={.spec.template.spec.serviceAccountName}",
        ])?
        .trim()
        .to_owned();
    let schema = format!("{}-operator", release.ns.name);
    // The operator's own FlowSchema: the API server then counts exactly
    // its requests (apiserver_flowcontrol_dispatched_requests_total).
    kubectl_stdin(
        &["apply", "-f", "-"],
        Some(
            &json!({
                "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
                "kind": "FlowSchema",
                "metadata": {"name": schema},
                "spec": {
                    "matchingPrecedence": 500,
                    "priorityLevelConfiguration": {"name": "workload-low"},
                    "distinguisherMethod": {"type": "ByUser"},
                    "rules": [{
                        "subjects": [{"kind": "ServiceAccount", "serviceAccount": {"name": account, "namespace": release.ns.name}}],
                        "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"], "clusterScope": true, "namespaces": ["*"]}],
                        "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                    }],
                },
            })
            .to_string(),
        ),
    )?;
    let _schema = Deleted(vec!["flowschema".into(), schema.clone()]);
    let requests = || -> Result<f64> {
        let text = kubectl(&["get", "--raw", "/metrics"])?;
        Ok(metric_sum(
            &[text],
            "apiserver_flowcontrol_dispatched_requests_total",
            &[&format!("flow_schema=\"{schema}\"")],
        ))
    };
    let rss = || -> Result<f64> {
        let mut total = 0;
        for (pod, _) in release.pods()? {
            total += proc_status_kib(pid_in_pod(&release.ns.name, &pod, "hatchway-operat")?, "VmRSS")?;
        }
        Ok(total as f64 / 1024.0)
    };
    let reconciles = || -> Result<(f64, f64)> {
        let texts = replica_metrics(release)?;
        Ok((
            metric_sum(&texts, "hatchway_reconcile_duration_seconds_count", &[]),
            metric_sum(&texts, "hatchway_reconcile_duration_seconds_sum", &[]),
        ))
    };
    // A quiet minute first: what the operator asks with nothing to do.
    let (idle_start, idle_requests) = (Instant::now(), requests()?);
    std::thread::sleep(Duration::from_secs(60));
    let idle_rps = (requests()? - idle_requests) / idle_start.elapsed().as_secs_f64();
    let rss_before = rss()?;
    let (count_before, sum_before) = reconciles()?;

    let mut items: Vec<Value> = (0..PENDING)
        .map(|i| {
            json!({
                "apiVersion": "hatchway.dev/v1alpha1",
                "kind": "Container",
                "metadata": {"name": format!("pending-{i:04}")},
                "spec": {
                    "image": hatchway_e2e::WORKLOAD_IMAGE,
                    "command": ["sleep", "1000000"],
                    "resources": {"requests": {"cpu": "1000"}},
                },
            })
        })
        .collect();
    items.extend((0..RUNNING).map(|i| {
        json!({
            "apiVersion": "hatchway.dev/v1alpha1",
            "kind": "Container",
            "metadata": {"name": format!("running-{i}")},
            "spec": {"image": hatchway_e2e::WORKLOAD_IMAGE, "command": ["sleep", "1000000"]},
        })
    }));
    let total = items.len();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string();
    let (requests_before, started) = (requests()?, Instant::now());
    kubectl_stdin(&["-n", &users.name, "apply", "-f", "-"], Some(&list))?;
    let applied = started.elapsed();
    let reconciled = wait_until(
        "every Container reconciled (a pod, a phase)",
        Duration::from_secs(900),
        Duration::from_secs(2),
        || {
            let pods = kubectl_json(&["-n", &users.name, "get", "pods", "-o", "json"])?;
            let pods = pods["items"].as_array().map_or(0, Vec::len);
            let containers =
                kubectl_json(&["-n", &users.name, "get", "containers.hatchway.dev", "-o", "json"])?;
            let phased = containers["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["status"]["phase"].is_string())
                .count();
            let running = containers["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["status"]["phase"] == "Running")
                .count();
            // The load Containers plus web: a pod and a phase each.
            Ok((pods > total && phased > total && running > RUNNING).then(|| started.elapsed()))
        },
    )?;
    let create_requests = requests()? - requests_before;
    let rss_loaded = rss()?;
    let (count_after, sum_after) = reconciles()?;
    // Steady state: every Container reconciled, nothing changing.
    let (steady_start, steady_requests) = (Instant::now(), requests()?);
    std::thread::sleep(Duration::from_secs(60));
    let steady_rps = (requests()? - steady_requests) / steady_start.elapsed().as_secs_f64();

    let (requests_before_delete, deleting) = (requests()?, Instant::now());
    let names: Vec<String> = (0..PENDING)
        .map(|i| format!("pending-{i:04}"))
        .chain((0..RUNNING).map(|i| format!("running-{i}")))
        .collect();
    for chunk in names.chunks(200) {
        let mut args = vec![
            "-n",
            users.name.as_str(),
            "delete",
            "containers.hatchway.dev",
            "--wait=false",
        ];
        args.extend(chunk.iter().map(String::as_str));
        kubectl(&args)?;
    }
    let deleted = wait_until(
        "every load Container and its pod gone",
        Duration::from_secs(900),
        Duration::from_secs(2),
        || {
            let containers =
                kubectl_json(&["-n", &users.name, "get", "containers.hatchway.dev", "-o", "json"])?;
            let left = containers["items"].as_array().map_or(0, Vec::len);
            let pods = kubectl_json(&["-n", &users.name, "get", "pods", "-o", "json"])?;
            let pods_left = pods["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| {
                    p["metadata"]["name"]
                        .as_str()
                        .is_some_and(|n| !n.starts_with("web"))
                })
                .count();
            Ok((left <= 1 && pods_left == 0).then(|| deleting.elapsed()))
        },
    )?;
    let delete_requests = requests()? - requests_before_delete;
    let rss_after = rss()?;

    let reconciles = count_after - count_before;
    Ok(format!(
        "## {PENDING} Containers that cannot be scheduled, and {RUNNING} running\n\n\
         `kubectl apply` of the {total} took {:.1} s; every one had its pod and a phase \
         {:.1} s after the apply began ({:.1} ms per Container). The reconciler ran {reconciles} \
         times, {:.2} ms each on average.\n\n\
         | API server requests by the operator (its own FlowSchema) | |\n|---|---:|\n\
         | idle, before: per second | {idle_rps:.2} |\n\
         | creating the {total}: total | {create_requests} ({:.1} per Container) |\n\
         | steady, all reconciled: per second | {steady_rps:.2} |\n\
         | deleting the {total}: total | {delete_requests} |\n\n\
         Deleting them took {:.1} s (Containers and pods gone). The two replicas' RSS: \
         {rss_before:.1} MiB before, {rss_loaded:.1} MiB with the {total}, {rss_after:.1} MiB after \
         they were deleted.\n\n",
        applied.as_secs_f64(),
        reconciled.as_secs_f64(),
        reconciled.as_secs_f64() * 1000.0 / total as f64,
        if reconciles > 0.0 {
            (sum_after - sum_before) * 1000.0 / reconciles
        } else {
            0.0
        },
        create_requests / total as f64,
        deleted.as_secs_f64(),
    ))
}

/// A cluster-scoped object deleted on drop.
struct Deleted(Vec<String>);

impl Drop for Deleted {
    fn drop(&mut self) {
        let mut args = vec!["delete", "--ignore-not-found"];
        args.extend(self.0.iter().map(String::as_str));
        let _ = kubectl(&args);
    }
}
