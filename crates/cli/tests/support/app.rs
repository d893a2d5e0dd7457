//! Runs the real `splice serve` binary against a fresh data folder and talks to its API.
//!
//! Each [`TestApp`] owns one child process, one temporary data folder and a transcript of every
//! response it received, so a test can check that no secret leaked into storage, logs or API
//! answers. It does not know the API's resources; the tests spell out paths and bodies.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;
use tempfile::TempDir;

use super::{Output, free_port, lock, random_hex};

const START_TIMEOUT: Duration = Duration::from_secs(60);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// One request sent through [`TestApp::send`] and the answer it got.
#[derive(Clone, Debug)]
pub struct Exchange {
    pub method: Method,
    /// Path and query, e.g. `/v1/connectors/idp`.
    pub path: String,
    pub status: StatusCode,
    pub body: String,
}

/// A response with its body read.
#[derive(Clone, Debug)]
pub struct ApiResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl ApiResponse {
    /// The body as JSON; `Null` when empty, a JSON string holding the text when not JSON.
    pub fn json(&self) -> Value {
        if self.text.is_empty() {
            return Value::Null;
        }
        serde_json::from_str(&self.text).unwrap_or_else(|_| Value::String(self.text.clone()))
    }

    /// Status and JSON body, the shape the authenticated helpers return.
    pub fn reply(&self) -> (StatusCode, Value) {
        (self.status, self.json())
    }
}

/// How to start one Splice process.
#[derive(Clone, Debug)]
pub struct Node {
    pub port: u16,
    /// `SPLICE_PUBLIC_URL`: for a cluster, the address every node is reached at.
    pub public_url: String,
    pub admin_key: String,
    /// Extra or overriding environment variables.
    pub env: Vec<(String, String)>,
}

/// A running Splice server with its own data folder and admin key.
pub struct TestApp {
    // In a mutex so that `try_wait` works through `&self`.
    child: Mutex<Child>,
    base_url: String,
    admin_key: String,
    data_dir: TempDir,
    output: Output,
    http: reqwest::Client,
    transcript: Mutex<Vec<Exchange>>,
}

impl TestApp {
    /// Starts `splice serve` and waits until `GET /health` answers 200.
    pub async fn start() -> Self {
        Self::start_with_env(&[]).await
    }

    /// Like [`TestApp::start`], with extra or overriding environment variables.
    pub async fn start_with_env(extra_env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let node = Node {
            port,
            public_url: format!("http://127.0.0.1:{port}"),
            admin_key: format!("sk_test_{}", random_hex(40)),
            env: extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        Self::start_node(node).await
    }

    /// Starts one node as described: several nodes given the same database, master key,
    /// admin key and public URL form one cluster.
    pub async fn start_node(node: Node) -> Self {
        let data_dir = tempfile::Builder::new()
            .prefix("splice-e2e-")
            .tempdir()
            .expect("create a data folder");
        let Node {
            port,
            public_url,
            admin_key,
            env: extra_env,
        } = node;
        let base_url = format!("http://127.0.0.1:{port}");

        let mut command = Command::new(env!("CARGO_BIN_EXE_splice"));
        command.arg("serve");
        // Settings from the developer's shell must not leak into the test.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("SPLICE_") {
                command.env_remove(&name);
            }
        }
        command
            .env("SPLICE_LISTEN", format!("127.0.0.1:{port}"))
            .env("SPLICE_DATA_DIR", data_dir.path())
            .env("SPLICE_PUBLIC_URL", &public_url)
            .env("SPLICE_ADMIN_KEY", &admin_key)
            .env("SPLICE_REFRESH_MARGIN_SECS", "1")
            .env("SPLICE_LOG", "debug")
            .envs(extra_env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn the splice binary");

        let output = Output::default();
        output.capture(child.stdout.take().expect("child stdout"));
        output.capture(child.stderr.take().expect("child stderr"));

        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("build an HTTP client");
        let app = Self {
            child: Mutex::new(child),
            base_url,
            admin_key,
            data_dir,
            output,
            http,
            transcript: Mutex::new(Vec::new()),
        };
        app.wait_until_healthy().await;
        app
    }

    async fn wait_until_healthy(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let url = self.url("/health");
        loop {
            let probe = self
                .http
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if probe.is_ok_and(|response| response.status() == StatusCode::OK) {
                return;
            }

            if let Ok(Some(status)) = lock(&self.child).try_wait() {
                panic!(
                    "splice exited with {status} before it was healthy:\n{}",
                    self.logs()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "splice not healthy after {START_TIMEOUT:?}:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills the process with SIGKILL, as a crash would.
    pub fn kill(&self) {
        let mut child = lock(&self.child);
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Sends SIGTERM, as an orchestrator stopping the node would.
    pub fn terminate(&self) {
        let pid = lock(&self.child).id();
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        assert!(status.is_ok_and(|s| s.success()), "kill -TERM {pid} failed");
    }

    /// Waits up to `timeout` for the process to exit and returns its status.
    pub async fn wait_exit(&self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = lock(&self.child).try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// This node's own base URL, `http://127.0.0.1:<port>`.
    pub fn public_url(&self) -> &str {
        &self.base_url
    }

    /// An absolute URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// The admin key sent as a bearer token by the authenticated helpers.
    pub fn admin_key(&self) -> &str {
        &self.admin_key
    }

    /// The folder given as `SPLICE_DATA_DIR`.
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// Everything Splice wrote to stdout and stderr so far.
    pub fn logs(&self) -> String {
        self.output.text()
    }

    /// Everything Splice wrote to stdout and stderr so far, as raw bytes.
    pub fn log_bytes(&self) -> Vec<u8> {
        self.output.bytes()
    }

    /// Every exchange sent through [`TestApp::send`], oldest first.
    pub fn transcript(&self) -> Vec<Exchange> {
        lock(&self.transcript).clone()
    }

    /// `GET path` with the admin key.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body and the admin key.
    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    /// `PUT path` with a JSON body and the admin key.
    pub async fn put(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(body)).await
    }

    /// `DELETE path` with the admin key.
    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, None).await
    }

    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> (StatusCode, Value) {
        let mut request = self.authed(method, path);
        if let Some(body) = body {
            request = request.json(body);
        }
        self.send(request).await.reply()
    }

    /// A request to `path` without credentials, for custom headers and raw bodies.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.url(path))
    }

    /// A request to `path` carrying the admin key.
    pub fn authed(&self, method: Method, path: &str) -> RequestBuilder {
        self.request(method, path).bearer_auth(&self.admin_key)
    }

    /// Sends a request built by [`TestApp::request`] or [`TestApp::authed`] and records it.
    pub async fn send(&self, request: RequestBuilder) -> ApiResponse {
        let request = request.build().expect("build the request");
        let method = request.method().clone();
        let url = request.url();
        let path = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };

        let response =
            self.http.execute(request).await.unwrap_or_else(|err| {
                panic!("{method} {path}: {err}\nsplice logs:\n{}", self.logs())
            });
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("read the response body");

        lock(&self.transcript).push(Exchange {
            method,
            path,
            status,
            body: text.clone(),
        });
        ApiResponse {
            status,
            headers,
            text,
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let child = self
            .child
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let _ = child.kill();
        let _ = child.wait();
        if std::thread::panicking() {
            eprintln!("---- splice logs ----\n{}", self.logs());
        }
    }
}
