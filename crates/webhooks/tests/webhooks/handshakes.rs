//! Handshake replies, byte for byte, and the order they take relative to verification.

use splice_webhooks::{HandshakeOrder, ProviderKind, WebhookRequest, handshake};

use crate::providers::ZOOM_SECRET;
use crate::support::headers;

#[test]
fn zoom_url_validation_answers_with_hex_hmac_of_the_plain_token() {
    let body = br#"{"payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_ts":1700000000000,"event":"endpoint.url_validation"}"#;
    let request = WebhookRequest::new("POST", "/hooks/zoom", &[], body);

    let reply = handshake(ProviderKind::Zoom, &request, ZOOM_SECRET).expect("a handshake");

    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_type, Some("application/json"));
    assert_eq!(
        String::from_utf8(reply.body).expect("utf-8"),
        r#"{"plainToken":"qgg8vlvZRS6UYooatFL8Aw","encryptedToken":"d417bf578e16c938f0fc80359f288c37472bc04be58a4d4c5748f9e172aac9a9"}"#
    );
    assert_eq!(
        ProviderKind::Zoom.handshake_order(),
        HandshakeOrder::AfterVerification
    );
}

#[test]
fn graph_validation_token_is_echoed_decoded_as_plain_text() {
    let uri = "/hooks/graph?validationToken=Validation%3A%20Testing%20client%20application%20reachability%20for%20subscription%20Request-Id%3A%2025c6f2b5";
    let request = WebhookRequest::new("POST", uri, &[], b"");

    let reply = handshake(ProviderKind::MicrosoftGraph, &request, b"").expect("a handshake");

    assert_eq!(reply.status, 200);
    assert!(
        reply
            .content_type
            .is_some_and(|t| t.starts_with("text/plain"))
    );
    assert_eq!(
        reply.body,
        b"Validation: Testing client application reachability for subscription Request-Id: 25c6f2b5"
    );
    assert_eq!(
        ProviderKind::MicrosoftGraph.handshake_order(),
        HandshakeOrder::BeforeVerification
    );
}

#[test]
fn asana_hook_secret_is_echoed_and_handed_over_for_storage() {
    let secret = "b537207f20cbfa02357cf448134da559e8bd39d61597dcd5631b8012eae53e81";
    let headers = headers(&[("x-hook-secret", secret)]);
    let request = WebhookRequest::new("POST", "/hooks/asana/7654", &headers, b"");

    let reply = handshake(ProviderKind::Asana, &request, b"").expect("a handshake");

    assert_eq!(reply.status, 200);
    assert!(reply.body.is_empty());
    assert_eq!(
        reply.headers,
        [("X-Hook-Secret".to_owned(), secret.to_owned())]
    );
    assert_eq!(reply.secret_to_store.as_deref(), Some(secret));
    assert_eq!(
        ProviderKind::Asana.handshake_order(),
        HandshakeOrder::BeforeVerification
    );
}

#[test]
fn discord_ping_is_answered_with_pong() {
    let body = br#"{"id":"1","application_id":"2","type":1,"version":1}"#;
    let request = WebhookRequest::new("POST", "/", &[], body);

    let reply = handshake(ProviderKind::Discord, &request, b"").expect("a handshake");

    assert_eq!(reply.body, br#"{"type":1}"#);
    assert_eq!(reply.content_type, Some("application/json"));
    assert_eq!(
        ProviderKind::Discord.handshake_order(),
        HandshakeOrder::AfterVerification
    );
}

#[test]
fn providers_without_handshakes_never_answer_one() {
    let body = br#"{"type":"url_verification","challenge":"x","event":"endpoint.url_validation"}"#;
    let headers = headers(&[("X-Hook-Secret", "s")]);
    let request = WebhookRequest::new("POST", "/?validationToken=t", &headers, body);

    for kind in [
        ProviderKind::Github,
        ProviderKind::Stripe,
        ProviderKind::Shopify,
        ProviderKind::Hubspot,
        ProviderKind::Linear,
        ProviderKind::Atlassian,
        ProviderKind::Intercom,
        ProviderKind::Generic,
    ] {
        assert_eq!(kind.handshake_order(), HandshakeOrder::None, "{kind}");
        assert_eq!(handshake(kind, &request, b"secret"), None, "{kind}");
    }
}
