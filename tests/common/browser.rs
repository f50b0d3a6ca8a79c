//! A real browser for the dashboard's tests: Debian's `chromium`, driven
//! headless through `chromedriver` with plain WebDriver calls over HTTP
//! (no WebDriver crate). [`Browser::start`] answers `None`, after printing
//! why, when either program is missing, so the test can skip; `.ci/run`
//! installs both (`chromium`, `chromium-driver`).
//!
//! `REDQ_TEST_CHROMIUM` and `REDQ_TEST_CHROMEDRIVER` name other programs.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use super::server::free_port;
use super::wait::eventually;

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn program(var: &str, default: &str) -> Option<PathBuf> {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    path.is_file().then_some(path)
}

/// A headless Chromium session. On drop the driver's whole process group
/// (the driver and the Chromium it started) is killed and the profile
/// directory removed, even when the test failed half-way.
pub struct Browser {
    driver: Child,
    profile: tempfile::TempDir,
    base: String,
    http: reqwest::Client,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session with a window of
    /// `width` × `height`; `None` (with a message) when not installed.
    pub async fn start(width: u32, height: u32) -> Option<Browser> {
        let Some(chromium) = program("REDQ_TEST_CHROMIUM", "/usr/bin/chromium") else {
            eprintln!("SKIPPED: no chromium (apt-get install chromium chromium-driver, or set REDQ_TEST_CHROMIUM)");
            return None;
        };
        let Some(driver) = program("REDQ_TEST_CHROMEDRIVER", "/usr/bin/chromedriver") else {
            eprintln!("SKIPPED: no chromedriver (apt-get install chromium-driver, or set REDQ_TEST_CHROMEDRIVER)");
            return None;
        };
        let port = free_port();
        let profile = tempfile::tempdir().expect("temp dir");
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let mut b = Browser {
            driver: child,
            profile,
            base: format!("http://127.0.0.1:{port}"),
            http,
        };
        let status = format!("{}/status", b.base);
        let probe = b.http.clone();
        eventually("chromedriver to answer", Duration::from_secs(20), || {
            let (probe, status) = (probe.clone(), status.clone());
            async move {
                let r = probe.get(&status).send().await.ok()?;
                let v: Value = r.json().await.ok()?;
                v["value"]["ready"].as_bool().filter(|r| *r)
            }
        })
        .await;
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--hide-scrollbars", "--disable-crash-reporter", "--disable-breakpad", format!("--window-size={width},{height}"),
                     format!("--user-data-dir={}", b.profile.path().display())]
        }}}});
        let v = b.call("POST", "/session", Some(caps)).await;
        let id = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_owned();
        b.base = format!("{}/session/{id}", b.base);
        Some(b)
    }

    /// One WebDriver call; answers its `value`, panicking on an error.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let v = self.try_call(method, path, body).await;
        if v.get("error").is_some() {
            panic!("WebDriver {method} {path}: {v}");
        }
        v
    }

    /// One WebDriver call; answers its `value` (errors included).
    async fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body.unwrap_or_else(|| json!({}))),
        };
        let r = req.send().await.expect("WebDriver request");
        let v: Value = r.json().await.expect("WebDriver JSON");
        v["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url }))).await;
    }

    /// The element `css` selects (panics when there is none).
    pub async fn find(&self, css: &str) -> String {
        let v = self
            .call(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css:?}: {v}"))
            .to_owned()
    }

    pub async fn click(&self, css: &str) {
        let el = self.find(css).await;
        self.call("POST", &format!("/element/{el}/click"), None)
            .await;
    }

    /// The rendered text of the element `css` selects.
    pub async fn text(&self, css: &str) -> String {
        let el = self.find(css).await;
        let v = self.call("GET", &format!("/element/{el}/text"), None).await;
        v.as_str().unwrap_or_default().to_owned()
    }

    /// Runs `script` in the page; answers what it returns.
    pub async fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// The text of an open alert, if the page opened one.
    pub async fn alert(&self) -> Option<String> {
        let v = self.try_call("GET", "/alert/text", None).await;
        v.as_str().map(str::to_owned)
    }

    /// Ends the session: Chromium quits and removes its profile. (Dropping
    /// the browser only kills the driver.)
    pub async fn quit(self) {
        let _ = self.try_call("DELETE", "", None).await;
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        let v = self.call("GET", "/screenshot", None).await;
        base64(v.as_str().expect("screenshot data"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The group the driver leads (process_group(0)): Chromium too.
        if let Ok(pgid) = i32::try_from(self.driver.id()) {
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
        let _ = self.driver.wait();
    }
}

/// Decodes standard base64.
fn base64(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
