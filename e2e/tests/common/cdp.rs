//! A headless Chromium driven through the DevTools protocol over its
//! pipe (`--remote-debugging-pipe`: JSON messages ended by NUL on fds 3
//! and 4), so it works from a network namespace of its own (see
//! [`hatchway_e2e::isolated_from_host_network`]) where no debugging port could be
//! reached. Only what the web page's tests need: tabs, navigation,
//! JavaScript, keys, the viewport, screenshots.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

/// How long one DevTools call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A running Chromium and the pipe to it.
pub struct Browser {
    child: Child,
    to_browser: std::io::PipeWriter,
    from_browser: mpsc::Receiver<Value>,
    next_id: u64,
}

/// One tab, attached with a flat session.
#[derive(Clone, Debug)]
pub struct Tab {
    session: String,
}

impl Browser {
    /// Starts Chromium headless with `user_data_dir`, trusting any
    /// certificate (the router's CA is not in its store; what is under
    /// test is the page). Call it where its network should be (inside
    /// [`hatchway_e2e::isolated_from_host_network`]).
    pub fn launch(user_data_dir: &Path) -> Result<Self> {
        let (browser_reads, we_write) = std::io::pipe()?;
        let (we_read, browser_writes) = std::io::pipe()?;
        // The pipe's ends become Chromium's fds 3 and 4 through the shell
        // (stdin and stdout carry them there; both are /dev/null after).
        let flags = [
            "--ignore-certificate-errors",
            "--remote-debugging-pipe",
            "--window-size=1200,800",
        ];
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(r#"exec chromium "$@" 3<&0 4>&1 0</dev/null 1>/dev/null"#)
            .arg("chromium")
            .args(hatchway_e2e::CHROMIUM_FLAGS)
            .args(flags)
            .arg(format!("--user-data-dir={}", user_data_dir.display()))
            .arg("about:blank")
            .stdin(Stdio::from(browser_reads))
            .stdout(Stdio::from(browser_writes))
            .stderr(Stdio::null());
        let child = command.spawn().context("starting chromium")?;
        // Chromium holds its ends now; ours are only these.
        drop(command);
        let (tx, from_browser) = mpsc::channel();
        let reader = we_read;
        std::thread::spawn(move || {
            let mut reader = BufReader::new(reader);
            let mut message = Vec::new();
            while reader.read_until(0, &mut message).is_ok_and(|n| n > 0) {
                message.pop();
                if let Ok(value) = serde_json::from_slice(&message)
                    && tx.send(value).is_err()
                {
                    return;
                }
                message.clear();
            }
        });
        Ok(Self {
            child,
            to_browser: we_write,
            from_browser,
            next_id: 1,
        })
    }

    /// Calls `method` (in `tab`, or on the browser): its result.
    pub fn call(&mut self, tab: Option<&Tab>, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(tab) = tab {
            message["sessionId"] = json!(tab.session);
        }
        let mut bytes = serde_json::to_vec(&message)?;
        bytes.push(0);
        self.to_browser
            .write_all(&bytes)
            .with_context(|| format!("sending {method} to chromium"))?;
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = self
                .from_browser
                .recv_timeout(left)
                .map_err(|_| anyhow!("chromium did not answer {method} in {CALL_TIMEOUT:?}"))?;
            if answer["id"] != id {
                continue; // an event
            }
            if let Some(error) = answer.get("error") {
                bail!("{method}: {error}");
            }
            return Ok(answer["result"].clone());
        }
    }

    /// A new tab at `about:blank`, sized `width`×`height`.
    pub fn tab(&mut self, width: u32, height: u32) -> Result<Tab> {
        let target = self.call(None, "Target.createTarget", json!({"url": "about:blank"}))?;
        let attached = self.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        )?;
        let tab = Tab {
            session: attached["sessionId"]
                .as_str()
                .context("no session for the tab")?
                .to_owned(),
        };
        self.resize(&tab, width, height)?;
        Ok(tab)
    }

    /// The tab's viewport (the page sees a window resize).
    pub fn resize(&mut self, tab: &Tab, width: u32, height: u32) -> Result<()> {
        self.call(
            Some(tab),
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        )?;
        Ok(())
    }

    /// Goes to `url` and waits until the document has loaded.
    pub fn navigate(&mut self, tab: &Tab, url: &str) -> Result<()> {
        self.call(Some(tab), "Page.navigate", json!({"url": url}))?;
        self.wait_for(tab, "the page to load", "document.readyState === 'complete'")?;
        Ok(())
    }

    /// Reloads the tab and waits until the document has loaded.
    pub fn reload(&mut self, tab: &Tab) -> Result<()> {
        self.eval(tab, "window.hatchwayReloading = true")?;
        self.call(Some(tab), "Page.reload", json!({}))?;
        self.wait_for(
            tab,
            "the reload",
            "!window.hatchwayReloading && document.readyState === 'complete'",
        )?;
        Ok(())
    }

    /// Evaluates `expression` in the page (promises awaited): its value.
    pub fn eval(&mut self, tab: &Tab, expression: &str) -> Result<Value> {
        let result = self.call(
            Some(tab),
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        )?;
        if let Some(exception) = result.get("exceptionDetails") {
            bail!("{expression}: {exception}");
        }
        Ok(result["result"]["value"].clone())
    }

    /// Waits (up to a minute) until `expression` is truthy in the page.
    pub fn wait_for(&mut self, tab: &Tab, what: &str, expression: &str) -> Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = Value::Null;
        while Instant::now() < deadline {
            match self.eval(tab, expression) {
                Ok(value) if !matches!(value, Value::Null | Value::Bool(false)) && value != "" => {
                    return Ok(value);
                }
                Ok(value) => last = value,
                Err(error) => last = json!(error.to_string()),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // What the page shows, to say why.
        let shown = self
            .eval(
                tab,
                "`${location.href}: ${document.body ? document.body.innerText.slice(0, 800) : ''}`",
            )
            .unwrap_or_default();
        bail!("waiting for {what}: {expression} is still {last}; the page: {shown}")
    }

    /// Types `text` as keystrokes into the focused element.
    pub fn type_text(&mut self, tab: &Tab, text: &str) -> Result<()> {
        self.call(Some(tab), "Input.insertText", json!({"text": text}))?;
        Ok(())
    }

    /// Presses Enter.
    pub fn enter(&mut self, tab: &Tab) -> Result<()> {
        for kind in ["keyDown", "keyUp"] {
            let mut key = json!({"type": kind, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13});
            if kind == "keyDown" {
                key["text"] = json!("\r");
            }
            self.call(Some(tab), "Input.dispatchKeyEvent", key)?;
        }
        Ok(())
    }

    /// A PNG of the tab's viewport, written to `path`.
    pub fn screenshot(&mut self, tab: &Tab, path: &Path) -> Result<()> {
        use base64::Engine as _;
        let shot = self.call(Some(tab), "Page.captureScreenshot", json!({"format": "png"}))?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().context("no screenshot data")?)
            .context("the screenshot is not base64")?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
