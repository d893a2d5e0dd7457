//! Signs webhook payloads with the providers' own libraries, run by the signers fixture
//! (`tests/fixtures/signers/sign.mjs`): `@octokit/webhooks-methods` for GitHub and the `stripe`
//! package for Stripe.
//!
//! Installs the fixture's npm packages on first use and runs one `node sign.mjs` per signature.
//! It computes no signature itself, so a test built on it checks Splice against the real
//! signers rather than against a second reading of the same documentation.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use super::oidc::ensure_installed;

/// GitHub's `X-Hub-Signature-256` value (`sha256=<hex>`) for `payload` under `secret`, from
/// `@octokit/webhooks-methods`' `sign`.
pub fn github_signature(secret: &str, payload: &str) -> String {
    sign(json!({"scheme": "github", "secret": secret, "payload": payload}))
}

/// A `Stripe-Signature` value (`t=<ts>,v1=<hex>`) for `payload` under `secret`, from
/// `stripe.webhooks.generateTestHeaderStringAsync`; signed now unless `timestamp` (Unix
/// seconds) is given.
pub fn stripe_signature(secret: &str, payload: &str, timestamp: Option<u64>) -> String {
    sign(json!({
        "scheme": "stripe",
        "secret": secret,
        "payload": payload,
        "timestamp": timestamp,
    }))
}

/// The folder holding `sign.mjs`, `package.json` and `package-lock.json`.
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/signers")
}

/// Runs `node sign.mjs` with `request` on stdin and returns the header value it prints.
fn sign(request: Value) -> String {
    let dir = fixture_dir();
    ensure_installed(&dir, "stripe/package.json");

    let mut child = Command::new("node")
        .arg("sign.mjs")
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn `node sign.mjs` (is Node.js installed?)");
    let mut stdin = child.stdin.take().expect("child stdin");
    stdin
        .write_all(request.to_string().as_bytes())
        .expect("write the signing request");
    drop(stdin);

    let output = child.wait_with_output().expect("wait for `node sign.mjs`");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && !stdout.trim().is_empty(),
        "`node sign.mjs` failed with {}:\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
    );
    stdout.trim().to_owned()
}
