//! Small helpers for Splice's JSON API shared by several tests: request bodies that many tests
//! send and checks of the error envelope `{"error":{"code":"...","message":"..."}}`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::app::TestApp;

/// The `error.code` of an error envelope, or `""` when the body is not one.
pub fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

/// The `error.message` of an error envelope, or `""` when the body is not one.
pub fn error_message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or_default()
}

/// Asserts that `reply` is an error envelope with this status and one of `codes`.
#[track_caller]
pub fn assert_error(reply: &(StatusCode, Value), status: StatusCode, codes: &[&str]) {
    let (actual, body) = reply;
    assert_eq!(*actual, status, "{body}");
    let code = error_code(body);
    assert!(
        codes.contains(&code),
        "expected code in {codes:?}, got {body}"
    );
    assert!(
        !error_message(body).is_empty(),
        "error without a message: {body}"
    );
}

/// A `PUT /v1/integrations/{id}` body with a single `integration.js`.
pub fn integration_body(code: &str, connectors: Value) -> Value {
    json!({
        "files": { "integration.js": code },
        "connectors": connectors,
        "tags": {},
    })
}

/// Deploys `code` as integration `id` and returns the response body; panics unless 200/201.
pub async fn deploy(app: &TestApp, id: &str, code: &str, connectors: Value) -> Value {
    let path = format!("/v1/integrations/{id}");
    let (status, body) = app.put(&path, &integration_body(code, connectors)).await;
    assert!(
        status == StatusCode::OK || status == StatusCode::CREATED,
        "{status}: {body}"
    );
    assert_eq!(body["id"], id, "{body}");
    assert!(
        !body["version"].is_null(),
        "deploy without a version: {body}"
    );
    body
}

/// The `items` array of a list response.
#[track_caller]
pub fn items(body: &Value) -> &Vec<Value> {
    body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items array in {body}"))
}

/// A string field, panicking with the body when it is missing.
#[track_caller]
pub fn str_field<'a>(body: &'a Value, field: &str) -> &'a str {
    body[field]
        .as_str()
        .unwrap_or_else(|| panic!("no string {field:?} in {body}"))
}
