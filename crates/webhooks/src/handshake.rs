//! Endpoint handshakes: the challenges providers send to prove an endpoint is theirs.
//!
//! [`handshake`] recognises a challenge and builds the exact reply; it does not verify the
//! request. Whether the server must call `verify` first is given by
//! [`ProviderKind::handshake_order`]:
//!
//! | provider | challenge | order |
//! |---|---|---|
//! | Slack | body `type: url_verification` → echo `challenge` as text | verify first |
//! | Zoom | body `event: endpoint.url_validation` → `plainToken` + hex HMAC of it | verify first |
//! | Discord | body `type: 1` (PING) → `{"type":1}` | verify first |
//! | Microsoft Graph | query `validationToken` → echo it as text | unsigned, answer first |
//! | Asana | header `X-Hook-Secret` → echo it; the server must store it | unsigned, answer first |
//!
//! A handshake is never an event: once answered, the request is not queued or routed.

use crate::provider::ProviderKind;
use crate::request::WebhookRequest;
use crate::scheme::Algorithm;
use crate::verify::compute_mac;

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

/// Longest Zoom `plainToken` answered; Zoom's are short random strings.
const MAX_PLAIN_TOKEN_LEN: usize = 256;

/// The response a handshake expects, to be sent as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeReply {
    /// HTTP status (always 200 for the providers handled here).
    pub status: u16,
    /// The `Content-Type` of `body`, if there is a body.
    pub content_type: Option<&'static str>,
    /// The exact body bytes.
    pub body: Vec<u8>,
    /// Extra response headers (Asana's `X-Hook-Secret` echo).
    pub headers: Vec<(String, String)>,
    /// A secret the provider just issued, which the server must store to verify later
    /// deliveries (Asana). Never log it.
    pub secret_to_store: Option<String>,
}

impl HandshakeReply {
    fn ok(content_type: &'static str, body: Vec<u8>) -> Self {
        Self {
            status: 200,
            content_type: Some(content_type),
            body,
            headers: Vec::new(),
            secret_to_store: None,
        }
    }
}

/// The reply to `request` if it is `kind`'s handshake, or `None` if it is an ordinary delivery.
///
/// `secret` is the provider signing secret; only Zoom uses it (its reply is an HMAC under it).
/// Call [`crate::verify`] first whenever `kind.handshake_order()` says so.
pub fn handshake(
    kind: ProviderKind,
    request: &WebhookRequest<'_>,
    secret: &[u8],
) -> Option<HandshakeReply> {
    match kind {
        ProviderKind::Slack => slack_url_verification(request),
        ProviderKind::Zoom => zoom_url_validation(request, secret),
        ProviderKind::Discord => discord_ping(request),
        ProviderKind::MicrosoftGraph => graph_validation(request),
        ProviderKind::Asana => asana_hook_secret(request),
        _ => None,
    }
}

fn json_body(request: &WebhookRequest<'_>) -> Option<serde_json::Value> {
    serde_json::from_slice(request.body).ok()
}

fn slack_url_verification(request: &WebhookRequest<'_>) -> Option<HandshakeReply> {
    let body = json_body(request)?;
    if body.get("type")?.as_str()? != "url_verification" {
        return None;
    }
    let challenge = body.get("challenge")?.as_str()?;
    Some(HandshakeReply::ok(
        TEXT_PLAIN,
        challenge.as_bytes().to_vec(),
    ))
}

fn zoom_url_validation(request: &WebhookRequest<'_>, secret: &[u8]) -> Option<HandshakeReply> {
    let body = json_body(request)?;
    if body.get("event")?.as_str()? != "endpoint.url_validation" {
        return None;
    }
    let plain = body.get("payload")?.get("plainToken")?.as_str()?;

    // The reply is an HMAC under the signing secret, the same one event signatures use. Only
    // token-shaped values are answered, so the reply can never be a signature over a
    // `v0:{ts}:{body}` message someone else chose.
    let token_shaped = !plain.is_empty()
        && plain.len() <= MAX_PLAIN_TOKEN_LEN
        && plain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !token_shaped {
        return None;
    }

    let encrypted = hex::encode(compute_mac(Algorithm::Sha256, secret, &[plain.as_bytes()]).ok()?);
    let reply = format!("{{\"plainToken\":\"{plain}\",\"encryptedToken\":\"{encrypted}\"}}");
    Some(HandshakeReply::ok(JSON, reply.into_bytes()))
}

fn discord_ping(request: &WebhookRequest<'_>) -> Option<HandshakeReply> {
    let body = json_body(request)?;
    if body.get("type")?.as_u64()? != 1 {
        return None;
    }
    Some(HandshakeReply::ok(JSON, b"{\"type\":1}".to_vec()))
}

fn graph_validation(request: &WebhookRequest<'_>) -> Option<HandshakeReply> {
    let token = request.query_param("validationToken")?;
    Some(HandshakeReply::ok(TEXT_PLAIN, token.into_bytes()))
}

fn asana_hook_secret(request: &WebhookRequest<'_>) -> Option<HandshakeReply> {
    let secret = request.header("X-Hook-Secret")?;
    if secret.is_empty() {
        return None;
    }
    Some(HandshakeReply {
        status: 200,
        content_type: None,
        body: Vec::new(),
        headers: vec![("X-Hook-Secret".to_owned(), secret.to_owned())],
        secret_to_store: Some(secret.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zoom_refuses_to_sign_values_that_are_not_token_shaped() {
        let body = br#"{"event":"endpoint.url_validation","payload":{"plainToken":"v0:1:{}"}}"#;
        let request = WebhookRequest::new("POST", "/", &[], body);

        assert_eq!(handshake(ProviderKind::Zoom, &request, b"secret"), None);
    }

    #[test]
    fn ordinary_deliveries_are_not_handshakes() {
        let body = br#"{"type":"event_callback","event":{"type":"app_mention"}}"#;
        let request = WebhookRequest::new("POST", "/", &[], body);

        for kind in ProviderKind::ALL {
            assert_eq!(handshake(kind, &request, b"secret"), None, "{kind}");
        }
    }
}
