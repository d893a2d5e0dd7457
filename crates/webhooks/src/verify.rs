//! Signature verification over the raw body, before anything else reads the request.
//!
//! [`verify`] takes a [`Scheme`], the secret, the request and the current time, and answers
//! whether the delivery is authentic and fresh. Every comparison of signature bytes runs in
//! constant time. Nothing here parses the body for meaning (Linear's and Graph's in-body fields
//! excepted) or decides what to do with the event; that is `describe` and the server.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, VerifyingKey};
use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;

use crate::request::WebhookRequest;
use crate::scheme::{Algorithm, Encoding, HmacConfig, Scheme, TimestampUnit};

/// Why a delivery was refused. Each variant has a stable machine-readable [`code`](Self::code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The signature header is absent (or holds no signature of the expected kind).
    #[error("the request carries no signature")]
    MissingSignature,
    /// The signature header is present but cannot be read.
    #[error("the signature header is malformed")]
    MalformedSignature,
    /// The signature does not match the body and secret.
    #[error("the signature does not match")]
    SignatureMismatch,
    /// The signed timestamp is too far from now.
    #[error("the request timestamp is outside the accepted window")]
    TimestampOutOfWindow,
    /// The scheme requires a timestamp and the request has none (or an unreadable one).
    #[error("the request carries no usable timestamp")]
    MissingTimestamp,
    /// The request is signed with an algorithm this scheme does not accept.
    #[error("the signature uses an algorithm that is not accepted")]
    UnsupportedAlgorithm,
    /// The configured secret or public key is unusable (e.g. a Discord key that is not hex).
    #[error("the configured secret is not usable for this scheme")]
    InvalidSecret,
}

impl VerifyError {
    /// A stable snake_case code for API error envelopes and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingSignature => "missing_signature",
            Self::MalformedSignature => "malformed_signature",
            Self::SignatureMismatch => "signature_mismatch",
            Self::TimestampOutOfWindow => "timestamp_out_of_window",
            Self::MissingTimestamp => "missing_timestamp",
            Self::UnsupportedAlgorithm => "unsupported_algorithm",
            Self::InvalidSecret => "invalid_secret",
        }
    }
}

/// Checks that `request` was signed under `scheme` with `secret` and is fresh at `now`.
///
/// `secret` is the signing secret as bytes (for Discord, the application's public key in hex;
/// for Asana, the secret stored from the handshake; for Microsoft Graph, the `clientState`).
pub fn verify(
    scheme: &Scheme,
    secret: &[u8],
    request: &WebhookRequest<'_>,
    now: SystemTime,
) -> Result<(), VerifyError> {
    let now_ms = unix_millis(now);
    match scheme {
        Scheme::Slack { tolerance_secs } => {
            verify_v0(request, secret, now_ms, *tolerance_secs, SLACK)
        }
        Scheme::Zoom { tolerance_secs } => {
            verify_v0(request, secret, now_ms, *tolerance_secs, ZOOM)
        }
        Scheme::Github { allow_sha1 } => verify_github(request, secret, *allow_sha1),
        Scheme::Stripe { tolerance_secs } => {
            verify_stripe(request, secret, now_ms, *tolerance_secs)
        }
        Scheme::Shopify => {
            let header = required_header(request, "X-Shopify-Hmac-Sha256")?;
            let provided = decode_digest(header, Encoding::Base64)?;
            check_mac(Algorithm::Sha256, secret, &[request.body], &provided)
        }
        Scheme::Hubspot { tolerance_secs } => {
            verify_hubspot(request, secret, now_ms, *tolerance_secs)
        }
        Scheme::Linear { tolerance_secs } => {
            verify_linear(request, secret, now_ms, *tolerance_secs)
        }
        Scheme::Atlassian => verify_hub_signature(request, secret, &[Algorithm::Sha256]),
        Scheme::Intercom => verify_hub_signature(request, secret, &[Algorithm::Sha1]),
        Scheme::Asana => {
            let header = required_header(request, "X-Hook-Signature")?;
            let provided = decode_digest(header, Encoding::Hex)?;
            check_mac(Algorithm::Sha256, secret, &[request.body], &provided)
        }
        Scheme::Discord { tolerance_secs } => {
            verify_discord(request, secret, now_ms, *tolerance_secs)
        }
        Scheme::MicrosoftGraph => verify_graph_client_state(request, secret),
        Scheme::Hmac(config) => verify_generic(config, request, secret, now_ms),
    }
}

/// Header names of the `v0=hex(HMAC("v0:{ts}:{body}"))` family shared by Slack and Zoom.
struct V0Headers {
    signature: &'static str,
    timestamp: &'static str,
}

const SLACK: V0Headers = V0Headers {
    signature: "X-Slack-Signature",
    timestamp: "X-Slack-Request-Timestamp",
};

const ZOOM: V0Headers = V0Headers {
    signature: "x-zm-signature",
    timestamp: "x-zm-request-timestamp",
};

fn verify_v0(
    request: &WebhookRequest<'_>,
    secret: &[u8],
    now_ms: i128,
    tolerance_secs: u64,
    names: V0Headers,
) -> Result<(), VerifyError> {
    let header = required_header(request, names.signature)?;
    let timestamp = request
        .header(names.timestamp)
        .ok_or(VerifyError::MissingTimestamp)?;
    let seconds = parse_timestamp(timestamp)?;
    check_window_secs(seconds, now_ms, tolerance_secs)?;

    let digest = header
        .strip_prefix("v0=")
        .ok_or(VerifyError::MalformedSignature)?;
    let provided = decode_digest(digest, Encoding::Hex)?;
    let parts: [&[u8]; 4] = [b"v0:", timestamp.as_bytes(), b":", request.body];
    check_mac(Algorithm::Sha256, secret, &parts, &provided)
}

fn verify_github(
    request: &WebhookRequest<'_>,
    secret: &[u8],
    allow_sha1: bool,
) -> Result<(), VerifyError> {
    if let Some(header) = request.header("X-Hub-Signature-256") {
        return check_prefixed(header, "sha256=", Algorithm::Sha256, secret, request.body);
    }

    // A delivery with only the SHA-1 header is a downgrade unless the integration opted in.
    match request.header("X-Hub-Signature") {
        Some(header) if allow_sha1 => {
            check_prefixed(header, "sha1=", Algorithm::Sha1, secret, request.body)
        }
        Some(_) => Err(VerifyError::UnsupportedAlgorithm),
        None => Err(VerifyError::MissingSignature),
    }
}

fn verify_stripe(
    request: &WebhookRequest<'_>,
    secret: &[u8],
    now_ms: i128,
    tolerance_secs: u64,
) -> Result<(), VerifyError> {
    let header = required_header(request, "Stripe-Signature")?;
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for item in header.split(',') {
        let Some((key, value)) = item.trim().split_once('=') else {
            continue;
        };
        match key {
            "t" => timestamp = Some(value),
            // Other schemes (v0 is Stripe's test-mode scheme) are ignored on purpose.
            "v1" => candidates.push(value),
            _ => {}
        }
    }

    let timestamp = timestamp.ok_or(VerifyError::MissingTimestamp)?;
    let seconds = parse_timestamp(timestamp)?;
    if candidates.is_empty() {
        return Err(VerifyError::MissingSignature);
    }
    check_window_secs(seconds, now_ms, tolerance_secs)?;

    let expected = compute_mac(
        Algorithm::Sha256,
        secret,
        &[timestamp.as_bytes(), b".", request.body],
    )?;
    // During a secret roll Stripe sends one v1 per secret; any may match.
    let mut matched = subtle::Choice::from(0);
    for candidate in candidates {
        if let Ok(bytes) = hex::decode(candidate) {
            matched |= expected.as_slice().ct_eq(&bytes);
        }
    }
    if bool::from(matched) {
        Ok(())
    } else {
        Err(VerifyError::SignatureMismatch)
    }
}

fn verify_hubspot(
    request: &WebhookRequest<'_>,
    secret: &[u8],
    now_ms: i128,
    tolerance_secs: u64,
) -> Result<(), VerifyError> {
    let header = required_header(request, "X-HubSpot-Signature-v3")?;
    let timestamp = request
        .header("X-HubSpot-Request-Timestamp")
        .ok_or(VerifyError::MissingTimestamp)?;
    let millis = parse_timestamp(timestamp)?;
    check_window(millis, now_ms, tolerance_secs)?;

    let provided = decode_digest(header, Encoding::Base64)?;
    let uri = hubspot_uri(request.uri);
    let parts: [&[u8]; 4] = [
        request.method.as_bytes(),
        uri.as_bytes(),
        request.body,
        timestamp.as_bytes(),
    ];
    check_mac(Algorithm::Sha256, secret, &parts, &provided)
}

/// HubSpot signs the URI with these percent-escapes decoded and every other byte untouched.
fn hubspot_uri(uri: &str) -> String {
    const DECODED: [(&str, char); 12] = [
        ("%3A", ':'),
        ("%2F", '/'),
        ("%3F", '?'),
        ("%40", '@'),
        ("%21", '!'),
        ("%24", '$'),
        ("%27", '\''),
        ("%28", '('),
        ("%29", ')'),
        ("%2A", '*'),
        ("%2C", ','),
        ("%3B", ';'),
    ];
    let mut out = String::with_capacity(uri.len());
    let mut rest = uri;
    while let Some(index) = rest.find('%') {
        out.push_str(&rest[..index]);
        let escape = rest.get(index..index + 3).unwrap_or(&rest[index..]);
        match DECODED
            .iter()
            .find(|(code, _)| code.eq_ignore_ascii_case(escape))
        {
            Some((_, decoded)) => {
                out.push(*decoded);
                rest = &rest[index + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[index + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn verify_linear(
    request: &WebhookRequest<'_>,
    secret: &[u8],
    now_ms: i128,
    tolerance_secs: Option<u64>,
) -> Result<(), VerifyError> {
    let header = required_header(request, "Linear-Signature")?;
    let provided = decode_digest(header, Encoding::Hex)?;
    check_mac(Algorithm::Sha256, secret, &[request.body], &provided)?;

    // The timestamp sits inside the signed body, so it is read only once the body is trusted.
    let Some(tolerance_secs) = tolerance_secs else {
        return Ok(());
    };
    let body: serde_json::Value =
        serde_json::from_slice(request.body).map_err(|_| VerifyError::MissingTimestamp)?;
    let millis = match body.get("webhookTimestamp") {
        Some(serde_json::Value::Number(n)) => n.as_i64().map(i128::from),
        Some(serde_json::Value::String(s)) => s.parse::<i128>().ok(),
        _ => None,
    }
    .ok_or(VerifyError::MissingTimestamp)?;
    check_window(millis, now_ms, tolerance_secs)
}

/// The WebSub form `X-Hub-Signature: {algorithm}={hex}` used by Atlassian and Intercom.
fn verify_hub_signature(
    request: &WebhookRequest<'_>,
    secret: &[u8],
    accepted: &[Algorithm],
) -> Result<(), VerifyError> {
    let header = required_header(request, "X-Hub-Signature")?;
    let (label, digest) = header
        .split_once('=')
        .ok_or(VerifyError::MalformedSignature)?;
    let algorithm = Algorithm::from_label(label).ok_or(VerifyError::UnsupportedAlgorithm)?;
    if !accepted.contains(&algorithm) {
        return Err(VerifyError::UnsupportedAlgorithm);
    }
    let provided = decode_digest(digest, Encoding::Hex)?;
    check_mac(algorithm, secret, &[request.body], &provided)
}

fn verify_discord(
    request: &WebhookRequest<'_>,
    public_key_hex: &[u8],
    now_ms: i128,
    tolerance_secs: Option<u64>,
) -> Result<(), VerifyError> {
    let key_bytes: [u8; 32] = hex::decode(public_key_hex)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(VerifyError::InvalidSecret)?;
    let key = VerifyingKey::from_bytes(&key_bytes).map_err(|_| VerifyError::InvalidSecret)?;

    let header = required_header(request, "X-Signature-Ed25519")?;
    let timestamp = request
        .header("X-Signature-Timestamp")
        .ok_or(VerifyError::MissingTimestamp)?;
    if let Some(tolerance_secs) = tolerance_secs {
        check_window_secs(parse_timestamp(timestamp)?, now_ms, tolerance_secs)?;
    }

    let signature_bytes: [u8; 64] = hex::decode(header)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(VerifyError::MalformedSignature)?;
    let signature = Signature::from_bytes(&signature_bytes);
    let mut message = Vec::with_capacity(timestamp.len() + request.body.len());
    message.extend_from_slice(timestamp.as_bytes());
    message.extend_from_slice(request.body);
    key.verify_strict(&message, &signature)
        .map_err(|_| VerifyError::SignatureMismatch)
}

/// Graph signs nothing; each notification echoes the `clientState` we chose, which must match.
fn verify_graph_client_state(
    request: &WebhookRequest<'_>,
    client_state: &[u8],
) -> Result<(), VerifyError> {
    let body: serde_json::Value =
        serde_json::from_slice(request.body).map_err(|_| VerifyError::MalformedSignature)?;
    let notifications = body
        .get("value")
        .and_then(serde_json::Value::as_array)
        .ok_or(VerifyError::MalformedSignature)?;
    if notifications.is_empty() {
        return Err(VerifyError::MissingSignature);
    }

    let mut all_match = subtle::Choice::from(1);
    for notification in notifications {
        let state = notification
            .get("clientState")
            .and_then(serde_json::Value::as_str)
            .ok_or(VerifyError::MissingSignature)?;
        all_match &= state.as_bytes().ct_eq(client_state);
    }
    if bool::from(all_match) {
        Ok(())
    } else {
        Err(VerifyError::SignatureMismatch)
    }
}

fn verify_generic(
    config: &HmacConfig,
    request: &WebhookRequest<'_>,
    secret: &[u8],
    now_ms: i128,
) -> Result<(), VerifyError> {
    let header = required_header(request, &config.header)?;
    let digest = match &config.prefix {
        Some(prefix) => header
            .strip_prefix(prefix.as_str())
            .ok_or(VerifyError::MalformedSignature)?,
        None => header,
    };
    let provided = decode_digest(digest, config.encoding)?;

    let timestamp = match &config.timestamp_header {
        Some(name) => {
            let value = request.header(name).ok_or(VerifyError::MissingTimestamp)?;
            let number = parse_timestamp(value)?;
            match config.timestamp_unit {
                TimestampUnit::Seconds => check_window_secs(number, now_ms, config.tolerance_secs),
                TimestampUnit::Milliseconds => check_window(number, now_ms, config.tolerance_secs),
            }?;
            value
        }
        None => "",
    };

    let payload = match &config.signed_payload {
        Some(template) => fill_template(template, timestamp, request),
        None => request.body.to_vec(),
    };
    check_mac(config.algorithm, secret, &[&payload], &provided)
}

/// Replaces `{timestamp}`, `{body}`, `{method}` and `{uri}` in `template`, keeping the body's
/// bytes exactly as received.
fn fill_template(template: &str, timestamp: &str, request: &WebhookRequest<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(template.len() + request.body.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.extend_from_slice(&rest.as_bytes()[..start]);
        let tail = &rest[start..];
        let (value, skip): (&[u8], usize) = if tail.starts_with("{timestamp}") {
            (timestamp.as_bytes(), "{timestamp}".len())
        } else if tail.starts_with("{body}") {
            (request.body, "{body}".len())
        } else if tail.starts_with("{method}") {
            (request.method.as_bytes(), "{method}".len())
        } else if tail.starts_with("{uri}") {
            (request.uri.as_bytes(), "{uri}".len())
        } else {
            (b"{", 1)
        };
        out.extend_from_slice(value);
        rest = &tail[skip..];
    }
    out.extend_from_slice(rest.as_bytes());
    out
}

fn required_header<'a>(request: &WebhookRequest<'a>, name: &str) -> Result<&'a str, VerifyError> {
    match request.header(name) {
        Some(value) if !value.is_empty() => Ok(value),
        _ => Err(VerifyError::MissingSignature),
    }
}

fn check_prefixed(
    header: &str,
    prefix: &str,
    algorithm: Algorithm,
    secret: &[u8],
    body: &[u8],
) -> Result<(), VerifyError> {
    let digest = header
        .strip_prefix(prefix)
        .ok_or(VerifyError::MalformedSignature)?;
    let provided = decode_digest(digest, Encoding::Hex)?;
    check_mac(algorithm, secret, &[body], &provided)
}

fn decode_digest(text: &str, encoding: Encoding) -> Result<Vec<u8>, VerifyError> {
    let text = text.trim();
    let decoded = match encoding {
        Encoding::Hex => hex::decode(text).ok(),
        Encoding::Base64 => BASE64.decode(text).ok(),
    };
    decoded.ok_or(VerifyError::MalformedSignature)
}

/// Compares the MAC of `parts` with `provided` in constant time.
fn check_mac(
    algorithm: Algorithm,
    secret: &[u8],
    parts: &[&[u8]],
    provided: &[u8],
) -> Result<(), VerifyError> {
    let expected = compute_mac(algorithm, secret, parts)?;
    if bool::from(expected.as_slice().ct_eq(provided)) {
        Ok(())
    } else {
        Err(VerifyError::SignatureMismatch)
    }
}

/// The HMAC of the concatenated `parts` under `secret`.
pub(crate) fn compute_mac(
    algorithm: Algorithm,
    secret: &[u8],
    parts: &[&[u8]],
) -> Result<Vec<u8>, VerifyError> {
    fn run<M: Mac + hmac::digest::KeyInit>(
        secret: &[u8],
        parts: &[&[u8]],
    ) -> Result<Vec<u8>, VerifyError> {
        // HMAC takes keys of any length; the error arm exists only for the trait's sake.
        let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(secret)
            .map_err(|_| VerifyError::InvalidSecret)?;
        for part in parts {
            mac.update(part);
        }
        Ok(mac.finalize().into_bytes().to_vec())
    }
    match algorithm {
        Algorithm::Sha1 => run::<Hmac<sha1::Sha1>>(secret, parts),
        Algorithm::Sha256 => run::<Hmac<sha2::Sha256>>(secret, parts),
        Algorithm::Sha512 => run::<Hmac<sha2::Sha512>>(secret, parts),
    }
}

fn parse_timestamp(value: &str) -> Result<i128, VerifyError> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) || value.len() > 20 {
        return Err(VerifyError::MissingTimestamp);
    }
    value
        .parse::<i128>()
        .map_err(|_| VerifyError::MissingTimestamp)
}

/// Like [`check_window`] for a timestamp in whole seconds: now is truncated to the second
/// first, as providers' own libraries do, so exactly `tolerance_secs` apart is still accepted.
fn check_window_secs(
    timestamp: i128,
    now_ms: i128,
    tolerance_secs: u64,
) -> Result<(), VerifyError> {
    let now_secs = now_ms.div_euclid(1000);
    check_window(timestamp * 1000, now_secs * 1000, tolerance_secs)
}

/// Rejects a timestamp more than `tolerance_secs` away from now, in either direction.
fn check_window(timestamp_ms: i128, now_ms: i128, tolerance_secs: u64) -> Result<(), VerifyError> {
    let tolerance_ms = i128::from(tolerance_secs) * 1000;
    if (now_ms - timestamp_ms).abs() > tolerance_ms {
        Err(VerifyError::TimestampOutOfWindow)
    } else {
        Ok(())
    }
}

/// `now` in Unix milliseconds; a clock before 1970 counts as the epoch.
fn unix_millis(now: SystemTime) -> i128 {
    now.duration_since(UNIX_EPOCH)
        .map(|elapsed| i128::try_from(elapsed.as_millis()).unwrap_or(i128::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn error_codes_are_stable() {
        let codes: Vec<&str> = [
            VerifyError::MissingSignature,
            VerifyError::MalformedSignature,
            VerifyError::SignatureMismatch,
            VerifyError::TimestampOutOfWindow,
            VerifyError::MissingTimestamp,
            VerifyError::UnsupportedAlgorithm,
            VerifyError::InvalidSecret,
        ]
        .iter()
        .map(VerifyError::code)
        .collect();

        assert_eq!(
            codes,
            [
                "missing_signature",
                "malformed_signature",
                "signature_mismatch",
                "timestamp_out_of_window",
                "missing_timestamp",
                "unsupported_algorithm",
                "invalid_secret",
            ]
        );
    }

    #[test]
    fn second_timestamps_compare_against_now_truncated_to_the_second() {
        let now_ms = 1_000_300_999;

        assert_eq!(check_window_secs(1_000_000, now_ms, 300), Ok(()));
        assert_eq!(
            check_window_secs(999_999, now_ms, 300),
            Err(VerifyError::TimestampOutOfWindow)
        );
    }

    #[test]
    fn hubspot_uri_decodes_only_the_listed_escapes() {
        assert_eq!(
            hubspot_uri("https://example.com/hook%3Fa%3Db?x=%2Fy%20z%2a%41"),
            "https://example.com/hook?a%3Db?x=/y%20z*%41"
        );
        assert_eq!(hubspot_uri("https://e.com/%"), "https://e.com/%");
    }

    #[test]
    fn template_substitutes_placeholders_and_keeps_other_braces() {
        let headers = Vec::new();
        let request = WebhookRequest::new("POST", "/h", &headers, b"{\"a\":1}");

        let filled = fill_template("{method} {uri} {timestamp}.{body}{x}", "17", &request);

        assert_eq!(filled, b"POST /h 17.{\"a\":1}{x}");
    }

    /// Signs `body` the way a sender configured like `config` would.
    fn sign_generic(config: &HmacConfig, secret: &[u8], body: &[u8]) -> String {
        let digest = compute_mac(config.algorithm, secret, &[body]).expect("mac");
        let text = match config.encoding {
            Encoding::Hex => hex::encode(digest),
            Encoding::Base64 => BASE64.encode(digest),
        };
        format!("{}{text}", config.prefix.as_deref().unwrap_or_default())
    }

    #[test]
    fn signed_random_bodies_verify_and_any_flipped_byte_fails() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let configs = [
            (Algorithm::Sha1, Encoding::Hex, Some("sha1=")),
            (Algorithm::Sha256, Encoding::Base64, None),
            (Algorithm::Sha512, Encoding::Hex, Some("sha512=")),
        ];

        for (algorithm, encoding, prefix) in configs {
            let config = HmacConfig {
                header: "X-Signature".into(),
                algorithm,
                encoding,
                prefix: prefix.map(str::to_owned),
                timestamp_header: None,
                signed_payload: None,
                timestamp_unit: TimestampUnit::Seconds,
                tolerance_secs: 300,
            };
            let scheme = Scheme::Hmac(config.clone());
            for _ in 0..40 {
                let len = rng.gen_range(1..300);
                let body: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
                let secret: Vec<u8> = (0..32).map(|_| rng.r#gen()).collect();
                let headers = vec![(
                    "x-signature".to_owned(),
                    sign_generic(&config, &secret, &body),
                )];

                let request = WebhookRequest::new("POST", "/h", &headers, &body);
                assert_eq!(verify(&scheme, &secret, &request, at(0)), Ok(()));

                let mut tampered = body.clone();
                let index = rng.gen_range(0..tampered.len());
                tampered[index] ^= 1 << rng.gen_range(0..8);
                let request = WebhookRequest::new("POST", "/h", &headers, &tampered);
                assert_eq!(
                    verify(&scheme, &secret, &request, at(0)),
                    Err(VerifyError::SignatureMismatch)
                );
            }
        }
    }

    #[test]
    fn slack_signature_survives_every_body_and_breaks_on_any_flip() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(21);
        let scheme = Scheme::Slack {
            tolerance_secs: 300,
        };
        let secret = b"random-body-secret";

        for _ in 0..50 {
            let len = rng.gen_range(0..200);
            let body: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
            let parts: [&[u8]; 4] = [b"v0:", b"1000", b":", &body];
            let signature = format!(
                "v0={}",
                hex::encode(compute_mac(Algorithm::Sha256, secret, &parts).expect("mac"))
            );
            let headers = vec![
                ("X-Slack-Signature".to_owned(), signature),
                ("X-Slack-Request-Timestamp".to_owned(), "1000".to_owned()),
            ];

            let request = WebhookRequest::new("POST", "/", &headers, &body);
            assert_eq!(verify(&scheme, secret, &request, at(1000)), Ok(()));

            for index in 0..body.len() {
                let mut tampered = body.clone();
                tampered[index] ^= 0x80;
                let request = WebhookRequest::new("POST", "/", &headers, &tampered);
                assert_eq!(
                    verify(&scheme, secret, &request, at(1000)),
                    Err(VerifyError::SignatureMismatch)
                );
            }
        }
    }
}
