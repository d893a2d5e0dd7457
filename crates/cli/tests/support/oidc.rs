//! Runs the oidc-provider fixture (`tests/fixtures/oidc/server.js`) as a child process.
//!
//! Installs the fixture's npm packages on first use, starts `node server.js` on an OS-chosen
//! port and stops it on drop. It does not drive the login pages; see [`super::browser`].
//! [`ensure_installed`] installs the other npm fixtures too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use super::{Output, lock};

const READY_PREFIX: &str = "listening on ";
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How the provider treats its clients.
#[derive(Clone, Debug)]
pub struct OidcOptions {
    /// `client_secret_post` or `client_secret_basic`.
    pub token_auth_method: &'static str,
    /// Access token lifetime in seconds, for client credentials tokens too.
    pub access_token_ttl_secs: u64,
    /// `(client id, client secret)` of a second client that may only use the client
    /// credentials grant, authenticating with HTTP Basic; `None` registers no such client.
    pub client_credentials: Option<(String, String)>,
}

impl Default for OidcOptions {
    fn default() -> Self {
        Self {
            token_auth_method: "client_secret_post",
            access_token_ttl_secs: 4,
            client_credentials: None,
        }
    }
}

/// A running oidc-provider with one confidential client (and optionally a client credentials
/// client).
pub struct OidcProvider {
    child: Child,
    issuer: String,
    output: Output,
    http: reqwest::Client,
    client_id: String,
    client_secret: String,
    token_auth_method: &'static str,
}

impl OidcProvider {
    /// Starts a provider whose client redirects to `redirect_uri`, with default options.
    pub async fn start(redirect_uri: &str, client_id: &str, client_secret: &str) -> Self {
        Self::start_with(
            redirect_uri,
            client_id,
            client_secret,
            OidcOptions::default(),
        )
        .await
    }

    /// Starts a provider whose client redirects to `redirect_uri`.
    pub async fn start_with(
        redirect_uri: &str,
        client_id: &str,
        client_secret: &str,
        options: OidcOptions,
    ) -> Self {
        let dir = fixture_dir();
        ensure_installed(&dir, "oidc-provider/package.json");

        let mut command = Command::new("node");
        if let Some((cc_id, cc_secret)) = &options.client_credentials {
            command
                .env("CC_CLIENT_ID", cc_id)
                .env("CC_CLIENT_SECRET", cc_secret);
        }
        let mut child = command
            .arg("server.js")
            .current_dir(&dir)
            .env("PORT", "0")
            .env("CLIENT_ID", client_id)
            .env("CLIENT_SECRET", client_secret)
            .env("REDIRECT_URI", redirect_uri)
            .env("TOKEN_AUTH_METHOD", options.token_auth_method)
            .env(
                "ACCESS_TOKEN_TTL",
                options.access_token_ttl_secs.to_string(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn `node server.js` (is Node.js installed?)");

        let output = Output::default();
        output.capture(child.stdout.take().expect("child stdout"));
        output.capture(child.stderr.take().expect("child stderr"));

        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("build an HTTP client");
        // Built before waiting so that Drop stops the child if the wait panics.
        let mut provider = Self {
            child,
            issuer: String::new(),
            output,
            http,
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            token_auth_method: options.token_auth_method,
        };
        provider.issuer = wait_for_issuer(&mut provider.child, &provider.output).await;
        provider
    }

    /// The issuer URL, `http://127.0.0.1:<port>` without a trailing slash.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The authorization endpoint.
    pub fn authorization_url(&self) -> String {
        format!("{}/auth", self.issuer)
    }

    /// The token endpoint.
    pub fn token_url(&self) -> String {
        format!("{}/token", self.issuer)
    }

    /// The userinfo endpoint; answers `{"sub": <login>}` for an access token with `openid`.
    pub fn userinfo_url(&self) -> String {
        format!("{}/me", self.issuer)
    }

    /// The revocation endpoint (RFC 7009), authenticated like the token endpoint.
    pub fn revocation_url(&self) -> String {
        format!("{}/token/revocation", self.issuer)
    }

    /// The echo endpoint's base: `<echo_url>/any/path` answers with the request it got.
    pub fn echo_url(&self) -> String {
        format!("{}/__echo", self.issuer)
    }

    /// Revokes `token` as the main client; revoking a refresh token revokes its whole grant.
    /// Returns the status, 200 when the provider accepted the request.
    pub async fn revoke(&self, token: &str) -> StatusCode {
        let form = [("token", token)];
        let response = self
            .client_request(&self.revocation_url(), &form)
            .send()
            .await
            .expect("POST /token/revocation");
        response.status()
    }

    /// Uses `refresh_token` at the token endpoint as the main client: status and JSON body.
    pub async fn refresh(&self, refresh_token: &str) -> (StatusCode, Value) {
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ];
        let response = self
            .client_request(&self.token_url(), &form)
            .send()
            .await
            .expect("POST /token");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A client credentials grant with HTTP Basic authentication: status and JSON body.
    pub async fn client_credentials_grant(
        &self,
        client_id: &str,
        client_secret: &str,
    ) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.token_url())
            .basic_auth(client_id, Some(client_secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .expect("POST /token");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A form POST authenticated as the main client, the way its auth method says.
    fn client_request(&self, url: &str, form: &[(&str, &str)]) -> reqwest::RequestBuilder {
        let request = self.http.post(url);
        if self.token_auth_method == "client_secret_basic" {
            return request
                .basic_auth(&self.client_id, Some(&self.client_secret))
                .form(form);
        }
        let mut fields = vec![
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.as_str()),
        ];
        fields.extend_from_slice(form);
        request.form(&fields)
    }

    /// What the provider printed so far, for failure messages.
    pub fn output(&self) -> String {
        self.output.text()
    }

    /// Grant counts and every token value issued so far, from the fixture's `/__stats`.
    pub async fn stats(&self) -> OidcStats {
        let url = format!("{}/__stats", self.issuer);
        let response = self.http.get(&url).send().await.expect("GET /__stats");
        assert!(
            response.status().is_success(),
            "GET /__stats: {}",
            response.status()
        );
        let raw: Value = response.json().await.expect("/__stats returns JSON");
        OidcStats::from_json(raw)
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- oidc fixture output ----\n{}", self.output());
        }
    }
}

/// A snapshot of the fixture's `/__stats` answer.
#[derive(Clone, Debug)]
pub struct OidcStats {
    /// The raw JSON, for failure messages.
    pub raw: Value,
}

impl OidcStats {
    fn from_json(raw: Value) -> Self {
        Self { raw }
    }

    /// Successful token-endpoint requests with this `grant_type`.
    pub fn grants(&self, grant_type: &str) -> u64 {
        self.raw["grants"][grant_type].as_u64().unwrap_or(0)
    }

    /// Failed token-endpoint requests with this `grant_type`.
    pub fn grant_errors(&self, grant_type: &str) -> u64 {
        self.raw["grant_errors"][grant_type].as_u64().unwrap_or(0)
    }

    /// Every access token value issued, oldest first.
    pub fn access_tokens(&self) -> Vec<String> {
        strings(&self.raw["access_tokens"])
    }

    /// Every refresh token value issued, oldest first.
    pub fn refresh_tokens(&self) -> Vec<String> {
        strings(&self.raw["refresh_tokens"])
    }

    /// The most recently issued refresh token, if any.
    pub fn newest_refresh_token(&self) -> Option<String> {
        self.raw["newest_refresh_token"].as_str().map(str::to_owned)
    }
}

fn strings(value: &Value) -> Vec<String> {
    let items = value.as_array().map(Vec::as_slice).unwrap_or_default();
    items
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

/// The folder holding `server.js`, `package.json` and `package-lock.json`.
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oidc")
}

/// Runs `npm ci` in the npm fixture folder `dir` once per test binary, unless
/// `node_modules/<probe>` (a file of an installed package) is already there.
///
/// Tests in one binary share the record of finished installs; a second fixture waits for the
/// first one's install, which also keeps two `npm ci` runs from competing for the CPU. Separate
/// processes (e.g. nextest) are kept apart by installing into a private temporary folder and
/// renaming the result into place: a rename onto a `node_modules` another process already
/// placed fails and the loser's copy is dropped.
pub fn ensure_installed(dir: &Path, probe: &str) {
    static INSTALLED: Mutex<BTreeMap<PathBuf, Result<(), String>>> = Mutex::new(BTreeMap::new());
    let result = lock(&INSTALLED)
        .entry(dir.to_path_buf())
        .or_insert_with(|| install_packages(dir, probe))
        .clone();
    if let Err(message) = result {
        panic!("{message}");
    }
}

fn install_packages(dir: &Path, probe: &str) -> Result<(), String> {
    let target = dir.join("node_modules");
    if target.join(probe).is_file() {
        return Ok(());
    }

    let staging = tempfile::Builder::new()
        .prefix(".install-")
        .tempdir_in(dir)
        .map_err(|err| format!("create a staging folder in {}: {err}", dir.display()))?;
    for file in ["package.json", "package-lock.json"] {
        std::fs::copy(dir.join(file), staging.path().join(file))
            .map_err(|err| format!("copy {file} for npm ci: {err}"))?;
    }

    let output = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(staging.path())
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("run `npm ci` (is npm installed?): {err}"))?;
    if !output.status.success() {
        return Err(format!(
            "`npm ci` in {} failed with {}:\n{}\n{}",
            dir.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        ));
    }

    let renamed = std::fs::rename(staging.path().join("node_modules"), &target);
    match renamed {
        Ok(()) => Ok(()),
        Err(_) if target.join(probe).is_file() => Ok(()),
        Err(err) => Err(format!("move node_modules into {}: {err}", dir.display())),
    }
}

/// Waits for the `listening on <issuer>` line and returns the issuer.
async fn wait_for_issuer(child: &mut Child, output: &Output) -> String {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let text = output.text();
        // Only whole lines count: the port may not have been written yet.
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        let ready = complete
            .lines()
            .find_map(|line| line.strip_prefix(READY_PREFIX));
        if let Some(issuer) = ready {
            return issuer.trim().to_owned();
        }

        if let Ok(Some(status)) = child.try_wait() {
            panic!("oidc fixture exited with {status} before it was ready:\n{text}");
        }
        if Instant::now() > deadline {
            panic!("oidc fixture not ready after {START_TIMEOUT:?}:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
