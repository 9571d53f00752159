//! The web page on the real cluster, in the real Chromium driven through
//! the DevTools protocol: log in with a pasted token, see the Containers
//! RBAC allows, a terminal (`echo $((6*7))` → 42) that follows a resize and
//! survives a reload, a watcher that sees it and cannot type into it, its
//! recording replayed, the live logs of a ticking Container followed, and
//! a user without rights refused. Screenshots go to docs/web/.

mod common;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use common::cdp::{Browser, Tab};
use common::release::*;
use hatchway_e2e::{TestNamespace, isolated_from_host_network};
use serde_json::json;

const TICKER: &str = "i=0; while true; do i=$((i+1)); echo tick $i; sleep 1; done";

/// The terminal's screen (scrollback included), as lines of text.
const SCREEN: &str = "(() => { const b = window.hatchwayTerminal.buffer.active; const lines = []; \
                      for (let i = 0; i < b.length; i++) lines.push(b.getLine(i).translateToString(true).trimEnd()); \
                      return lines.join('\\n'); })()";

fn screen_has_line(line: &str) -> String {
    format!("{SCREEN}.split('\\n').includes({})", json!(line))
}

fn status_is(status: &str) -> String {
    format!(
        "document.getElementById('status').textContent === {}",
        json!(status)
    )
}

/// Where the screenshots go: `HATCHWAY_SCREENSHOTS` (`make screenshots`
/// sets it to docs/web to refresh the README's pictures), else a scratch
/// directory beside the build.
fn shots() -> PathBuf {
    let dir = std::env::var_os("HATCHWAY_SCREENSHOTS").map_or_else(
        || Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&dir).expect("the screenshots' directory");
    dir
}

/// Logs the tab in with `token` as a user does: pasted into the form.
fn log_in(browser: &mut Browser, tab: &Tab, page: &str, token: &str) -> Result<String> {
    browser.navigate(tab, page)?;
    browser.wait_for(tab, "the login form", "!document.getElementById('login').hidden")?;
    browser.eval(
        tab,
        &format!(
            "document.getElementById('token').value = {}; document.getElementById('login-form').requestSubmit(); true",
            json!(token)
        ),
    )?;
    let who = browser.wait_for(
        tab,
        "the user's name",
        "document.getElementById('who').textContent",
    )?;
    Ok(who.as_str().unwrap_or_default().to_owned())
}

/// Types a command line into the tab's terminal.
fn run(browser: &mut Browser, tab: &Tab, line: &str) -> Result<()> {
    browser.eval(tab, "window.hatchwayTerminal.focus(); true")?;
    browser.type_text(tab, line)?;
    browser.enter(tab)
}

#[test]
fn the_web_page_serves_a_terminal_logs_and_recordings_in_chromium() -> Result<()> {
    let users = TestNamespace::new("web-users")?;
    let release = Release::install("web", &users, &[])?;
    let alice = User::new(&users, &release, "alice", Some("edit"))?;
    let nobody = User::new(&users, &release, "nobody", None)?;
    let viewer = User::new(&users, &release, "viewer", Some("view"))?;
    users.apply(&container("ticker", TICKER, json!([])))?;
    wait_phase(&users, "ticker", "Running")?;
    alice.wait_rights("ticker")?;
    viewer.wait_rights("ticker")?;

    // Chromium in a network namespace of its own (the cluster's veths come
    // and go; Chromium aborts page loads on such changes): 127.0.0.1:PORT
    // there relays to the router's NodePort.
    let router = std::net::SocketAddr::new(release.node_ip.parse()?, release.node_port);
    let profile = tempfile::tempdir()?;
    let profile_dir = profile.path().to_owned();
    let mut browser =
        isolated_from_host_network(release.node_port, router, move || Browser::launch(&profile_dir))?;
    let page = format!("https://127.0.0.1:{}/", release.node_port);
    let ns = users.name.clone();
    let tab = browser.tab(1200, 800)?;

    let who = log_in(&mut browser, &tab, &page, &alice.token)?;
    ensure!(who.ends_with(":alice"), "logged in as {who}");

    // The Containers of the namespace, with what alice may do.
    browser.eval(&tab, &format!("location.hash = '#/ns/{ns}'; true"))?;
    let row = "document.querySelector('#list tbody tr[data-name=\"ticker\"]')";
    browser.wait_for(&tab, "ticker in the list", &format!("{row} !== null"))?;
    let actions = browser.eval(&tab, &format!("{row}.cells[5].textContent"))?;
    ensure!(
        actions
            .as_str()
            .is_some_and(|a| a.contains("terminal") && a.contains("logs")),
        "alice's actions: {actions}"
    );
    browser.screenshot(&tab, &shots().join("containers.png"))?;

    // A terminal: 42 on the screen.
    browser.eval(
        &tab,
        &format!("location.hash = '#/ns/{ns}/c/ticker/terminal'; true"),
    )?;
    browser.wait_for(&tab, "the terminal to connect", &status_is("connected"))?;
    run(&mut browser, &tab, "export MARK=kept-$((40+2)); echo $((6*7))")?;
    browser.wait_for(&tab, "42 on the screen", &screen_has_line("42"))?;
    browser.screenshot(&tab, &shots().join("terminal.png"))?;

    // A smaller window: the terminal and the shell follow.
    let before = browser.eval(&tab, "window.hatchwayTerminal.cols")?;
    browser.resize(&tab, 800, 500)?;
    let size = browser.wait_for(
        &tab,
        "the terminal to fit the window",
        &format!("window.hatchwayTerminal.cols !== {before} && `${{window.hatchwayTerminal.rows}} ${{window.hatchwayTerminal.cols}}`"),
    )?;
    let size = size.as_str().context("rows and columns")?.to_owned();
    run(&mut browser, &tab, "stty size")?;
    browser.wait_for(&tab, "the shell's new size", &screen_has_line(&size))?;

    // A reload: the same shell, its screen kept.
    browser.reload(&tab)?;
    browser.wait_for(&tab, "the terminal to resume", &status_is("connected"))?;
    browser.wait_for(&tab, "the kept screen", &screen_has_line("42"))?;
    run(&mut browser, &tab, "echo $MARK")?;
    browser.wait_for(&tab, "the same shell's variable", &screen_has_line("kept-42"))?;

    // A watcher in another tab sees the terminal and cannot type into it.
    let sessions = format!("/v1/namespaces/{ns}/containers/ticker/sessions");
    let id = browser.eval(
        &tab,
        &format!(
            "fetch({}).then(r => r.json()).then(j => j.terminals.find(t => t.live && t.user.endsWith(':alice')).id)",
            json!(sessions)
        ),
    )?;
    let id = id.as_str().context("alice's terminal id")?.to_owned();
    let watcher = browser.tab(1200, 800)?;
    browser.navigate(&watcher, &format!("{page}#/ns/{ns}/c/ticker/watch/{id}"))?;
    browser.wait_for(&watcher, "the watch", &status_is("watching (read-only)"))?;
    browser.wait_for(&watcher, "the watched screen", &screen_has_line("kept-42"))?;
    run(&mut browser, &watcher, "touch /tmp/injected; echo INJ''ECTED")?;
    run(&mut browser, &tab, "echo seen-by-$((2*3))")?;
    browser.wait_for(
        &watcher,
        "alice's output at the watcher",
        &screen_has_line("seen-by-6"),
    )?;
    let screen = browser.eval(&tab, SCREEN)?;
    ensure!(
        !screen.as_str().unwrap_or_default().contains("INJECTED"),
        "the watcher's keys reached the terminal: {screen}"
    );
    let out = alice.run(&["shell", "ticker", "--", "test ! -e /tmp/injected"])?;
    ensure!(out.status.success(), "the watcher's command ran: {}", show(&out));

    // The shell ends; its recording replays.
    run(&mut browser, &tab, "exit")?;
    browser.wait_for(&tab, "the shell's end", &status_is("ended (0)"))?;
    browser.eval(
        &tab,
        &format!("location.hash = '#/ns/{ns}/c/ticker/replay/{id}'; true"),
    )?;
    browser.wait_for(&tab, "the replay", &status_is("replayed"))?;
    browser.wait_for(&tab, "42 in the replay", &screen_has_line("42"))?;

    // Logs, followed as the Container ticks.
    browser.eval(&tab, &format!("location.hash = '#/ns/{ns}/c/ticker/logs'; true"))?;
    let ticks = "Math.max(0, ...document.getElementById('log-text').textContent.split('\\n').map(l => +(l.match(/^tick (\\d+)$/) || [0, 0])[1]))";
    let first = browser.wait_for(&tab, "ticks in the log", &format!("{ticks} > 0 && {ticks}"))?;
    let first = first.as_u64().context("a tick")?;
    browser.wait_for(&tab, "newer ticks", &format!("{ticks} >= {}", first + 2))?;
    browser.screenshot(&tab, &shots().join("logs.png"))?;

    // A viewer (ClusterRole view: list and logs, no shell): the
    // Container, its logs, no terminal.
    browser.eval(&tab, "fetch('/ui/logout', {method: 'POST'}).then(r => r.status)")?;
    log_in(&mut browser, &tab, &page, &viewer.token)?;
    browser.eval(&tab, &format!("location.hash = '#/ns/{ns}'; true"))?;
    browser.wait_for(&tab, "ticker in the viewer's list", &format!("{row} !== null"))?;
    let actions = browser.eval(&tab, &format!("{row}.cells[5].textContent"))?;
    ensure!(
        actions
            .as_str()
            .is_some_and(|a| a.contains("logs") && !a.contains("terminal")),
        "the viewer's actions: {actions}"
    );

    // Someone without rights: logged in, but no Containers.
    browser.eval(&tab, "fetch('/ui/logout', {method: 'POST'}).then(r => r.status)")?;
    log_in(&mut browser, &tab, &page, &nobody.token)?;
    browser.eval(&tab, &format!("location.hash = '#/ns/{ns}'; true"))?;
    let note = browser.wait_for(
        &tab,
        "the refusal",
        "document.getElementById('list-note').textContent.startsWith('403') && document.getElementById('list-note').textContent",
    )?;
    ensure!(
        note.as_str()
            .is_some_and(|n| n.contains("may not list containers")),
        "nobody's list: {note}"
    );
    users.passed();
    release.ns.passed();
    Ok(())
}
