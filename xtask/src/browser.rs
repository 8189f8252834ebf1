//! What the dashboard's browser tests drive: a WebDriver session on headless Chromium (through
//! Debian's `chromedriver`), a JSON-over-HTTP client for it and for the server's API, and a TCP
//! proxy between the browser and the server that can be cut, to break the page's WebSocket.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};

/// One JSON request over HTTP/1.1 to a loopback `port`: the status and the body (`null` when
/// empty or not JSON).
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("nothing listens on 127.0.0.1:{port}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Accept: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    // Read the head, then exactly the body it announces: a peer may keep the connection open.
    let mut answer = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    let split = loop {
        if let Some(at) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut buffer)?;
        anyhow::ensure!(n > 0, "the connection closed before an answer's head");
        answer.extend_from_slice(&buffer[..n]);
    };
    let head = String::from_utf8_lossy(&answer[..split]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("a malformed status line: {head}"))?;
    let length = head.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|n| n.trim().parse::<usize>().ok())
    });
    let mut content = answer.split_off(split + 4);
    let chunked = head.contains("transfer-encoding: chunked");
    loop {
        let complete = match length {
            Some(length) => content.len() >= length,
            None if chunked => content.ends_with(b"0\r\n\r\n"),
            None => false,
        };
        if complete {
            break;
        }
        let n = stream.read(&mut buffer)?;
        if n == 0 {
            anyhow::ensure!(length.is_none() && !chunked, "an answer cut short");
            break;
        }
        content.extend_from_slice(&buffer[..n]);
    }
    if chunked {
        content = unchunk(&content)?;
    }
    let value = serde_json::from_slice(&content).unwrap_or(Value::Null);
    Ok((status, value))
}

/// A chunked body's bytes.
fn unchunk(mut rest: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("a chunk without its size line")?;
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&rest[..line])
                .split(';')
                .next()
                .unwrap_or("")
                .trim(),
            16,
        )?;
        rest = &rest[line + 2..];
        if size == 0 {
            return Ok(out);
        }
        anyhow::ensure!(rest.len() >= size + 2, "a chunk cut short");
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// A headless Chromium under `chromedriver`, ended when dropped.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
}

impl Browser {
    /// Starts `chromedriver` on `port` and opens a session with a window of `width`×`height`.
    pub fn start(port: u16, width: u32, height: u32) -> anyhow::Result<Self> {
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context(
                "cannot run chromedriver: install Debian's chromium and chromium-driver \
                 (apt-get install -y chromium chromium-driver)",
            )?;
        let mut browser = Self {
            driver,
            port,
            session: String::new(),
        };
        let mut ready = false;
        for _ in 0..100 {
            if let Ok((200, status)) = request(port, "GET", "/status", &[], None) {
                if status["value"]["ready"] == true {
                    ready = true;
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        anyhow::ensure!(ready, "chromedriver did not become ready within 10 s");
        let binary = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .context("no chromium binary: apt-get install -y chromium chromium-driver")?;
        let (status, created) = request(
            port,
            "POST",
            "/session",
            &[],
            Some(&json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": binary,
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--no-first-run",
                             "--disable-background-networking", "--disable-extensions",
                             "--disable-sync", "--disable-component-update",
                             format!("--window-size={width},{height}")],
                },
                "goog:loggingPrefs": {"browser": "ALL"},
                "timeouts": {"script": 20_000, "pageLoad": 20_000, "implicit": 0},
            }}})),
        )?;
        anyhow::ensure!(status == 200, "chromedriver refused a session: {created}");
        browser.session = created["value"]["sessionId"]
            .as_str()
            .context("a session without an ID")?
            .to_owned();
        Ok(browser)
    }

    /// A command of this session: its `value`, or the driver's error.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let full = format!("/session/{}{path}", self.session);
        let (status, answer) = request(self.port, method, &full, &[], body.as_ref())?;
        anyhow::ensure!(
            status == 200,
            "{method} {path}: {} ({})",
            answer["value"]["error"],
            answer["value"]["message"]
        );
        Ok(answer["value"].clone())
    }

    pub fn go(&self, url: &str) -> anyhow::Result<()> {
        self.call("POST", "/url", Some(json!({"url": url})))?;
        Ok(())
    }

    pub fn resize(&self, width: u32, height: u32) -> anyhow::Result<()> {
        self.call(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )?;
        Ok(())
    }

    /// Runs `script` (a function body) with `args` in the page: its return value.
    pub fn run(&self, script: &str, args: Value) -> anyhow::Result<Value> {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// Waits until `condition` (a JavaScript expression over `arg`) holds in the page, checked
    /// at once and again on every change of the document (a `MutationObserver`), for at most
    /// the session's script timeout. `what` names the wait in the error.
    pub fn until(&self, what: &str, condition: &str, arg: Value) -> anyhow::Result<()> {
        let script = format!(
            "const arg = arguments[0]; const done = arguments[arguments.length - 1];
             const check = () => {{ try {{ return !!({condition}); }} catch (e) {{ return false; }} }};
             if (check()) {{ done(true); return; }}
             const watch = new MutationObserver(() => {{
               if (check()) {{ watch.disconnect(); done(true); }}
             }});
             watch.observe(document, {{subtree: true, childList: true, characterData: true, attributes: true}});"
        );
        let waited = self.call(
            "POST",
            "/execute/async",
            Some(json!({"script": script, "args": [arg]})),
        );
        waited.map(drop).with_context(|| {
            // What the page showed instead, for whoever reads the failure.
            let shown = self
                .run(
                    "const main = document.querySelector('main');
                     return `${location.hash} ${JSON.stringify(main ? main.dataset : {})}: ${
                       (main ? main.innerText : document.body.innerText).slice(0, 800)}`;",
                    json!([]),
                )
                .unwrap_or_else(|e| Value::String(format!("(the page could not be read: {e})")));
            format!("waiting for {what}; the page showed {shown}")
        })
    }

    /// Waits for an element matching `css` whose text contains `text`.
    pub fn until_text(&self, css: &str, text: &str) -> anyhow::Result<()> {
        self.until(
            &format!("{css:?} to show {text:?}"),
            "[...document.querySelectorAll(arg[0])].some(e => e.textContent.includes(arg[1]))",
            json!([css, text]),
        )
    }

    /// How many elements match `css`.
    pub fn count(&self, css: &str) -> anyhow::Result<u64> {
        self.run(
            "return document.querySelectorAll(arguments[0]).length;",
            json!([css]),
        )?
        .as_u64()
        .context("a count that is not a number")
    }

    /// Clicks the first element matching `css`, as a user would (through the driver).
    pub fn click(&self, css: &str) -> anyhow::Result<()> {
        self.on_element(css, |id| {
            self.call("POST", &format!("/element/{id}/click"), Some(json!({})))
                .map(drop)
        })
    }

    /// Types `text` into the first element matching `css`, after clearing it.
    pub fn fill(&self, css: &str, text: &str) -> anyhow::Result<()> {
        self.on_element(css, |id| {
            self.call("POST", &format!("/element/{id}/clear"), Some(json!({})))?;
            self.call(
                "POST",
                &format!("/element/{id}/value"),
                Some(json!({"text": text})),
            )
            .map(drop)
        })
    }

    /// Does `act` to the first element matching `css`. A live page may redraw the element
    /// between finding it and acting on it (the driver then calls it stale): it is found again
    /// and the act repeated, a few times at most.
    fn on_element(
        &self,
        css: &str,
        act: impl Fn(&str) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut tries = 0;
        loop {
            let id = self.find(css)?;
            match act(&id) {
                Err(e) if tries < 5 && format!("{e}").contains("stale element reference") => {
                    tries += 1;
                }
                other => return other,
            }
        }
    }

    fn find(&self, css: &str) -> anyhow::Result<String> {
        let found = self
            .call(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .with_context(|| format!("finding {css:?}"))?;
        found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .map(str::to_owned)
            .context("an element reference without an ID")
    }

    /// A PNG of the window, written to `path`.
    pub fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        use base64::Engine as _;
        let data = self.call("GET", "/screenshot", None)?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().context("a screenshot that is not text")?)?;
        std::fs::write(path, png).with_context(|| format!("cannot write {}", path.display()))
    }

    /// The browser console's entries since the last call: `(level, message)`.
    pub fn console(&self) -> anyhow::Result<Vec<(String, String)>> {
        let entries = self.call("POST", "/se/log", Some(json!({"type": "browser"})))?;
        Ok(entries
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["level"].as_str().unwrap_or_default().to_owned(),
                    e["message"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = request(self.port, "DELETE", &path, &[], None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A TCP proxy from a port of its own to the server's: `cut` closes every connection through
/// it and refuses new ones until `mend`.
pub struct Proxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub fn start(target: u16) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let cut = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (is_cut, conns) = (cut.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if is_cut.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) = (
                    client.try_clone(),
                    server.try_clone(),
                    client.try_clone(),
                    server.try_clone(),
                ) else {
                    continue;
                };
                conns
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend([c3, s3]);
                std::thread::spawn(move || pipe(client, server));
                std::thread::spawn(move || pipe(s2, c2));
            }
        });
        Ok(Self { port, cut, open })
    }

    /// Breaks every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for conn in self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }

    pub fn mend(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until either side ends.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
