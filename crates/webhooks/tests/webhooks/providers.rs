//! Hand-computed vectors for schemes without a published one.
//!
//! Expected signatures were computed once with Python's `hmac`/`hashlib` and pasted here, so
//! these tests do not share code with the implementation. Discord's key pair comes from a
//! fixed seed.

use ed25519_dalek::{Signer, SigningKey};
use splice_webhooks::{ProviderKind, Scheme, VerifyError, WebhookRequest, verify};

use crate::support::{at, headers};

pub const HUBSPOT_SECRET: &[u8] = b"FAKE0hubspot0client0secret0001";
pub const HUBSPOT_URI: &str = "https://hooks.example.com/v1/webhooks/hubspot?install=in%3A1";
pub const HUBSPOT_BODY: &str = r#"[{"eventId":4102,"subscriptionId":77,"portalId":62515,"appId":54321,"occurredAt":1700000000000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM"},{"eventId":4103,"subscriptionId":78,"portalId":62515,"appId":54321,"occurredAt":1700000000050,"subscriptionType":"deal.propertyChange","attemptNumber":1,"objectId":456,"propertyName":"amount","propertyValue":"100","changeSource":"CRM"}]"#;
const HUBSPOT_SIGNATURE: &str = "MssQe3Uz2sxMxV2cgO8+e1fJjZWyr7112r0Uv49cvEo=";

pub const LINEAR_SECRET: &[u8] = b"FAKE0linear0signing0secret0001";
pub const LINEAR_BODY: &str = r#"{"action":"create","type":"Issue","createdAt":"2023-11-14T22:13:20.000Z","data":{"id":"9cfb482a-81e3-4154-b5b9-2c805e70a02d","title":"Broken sync","teamId":"72b2a2dc-6f4f-4423-9d34-24b5bd10634a"},"url":"https://linear.app/acme/issue/ENG-1","organizationId":"e9e3d1c2-0000-4000-8000-00000000f00d","webhookTimestamp":1700000000000,"webhookId":"000042e3-d123-4980-b49f-8e140eef9329"}"#;
const LINEAR_SIGNATURE: &str = "55c83632b854ae2530dcf7b135d8a6bf0dc86856974d3cf946b920bb1c97980e";

pub const ZOOM_SECRET: &[u8] = b"FAKE0zoom0secret0token0001";
pub const ZOOM_BODY: &str = r#"{"event":"meeting.started","payload":{"account_id":"AAAAAAfakeACCOUNT1","object":{"id":"85746065432","uuid":"4444AAAiAAAAAiAiAiiAii==","topic":"Standup"}},"event_ts":1700000000456}"#;
const ZOOM_SIGNATURE: &str = "v0=b07dac8c9dcc2ce6438a38b6eef843532afb43596c1b5a081ed18f7d928802c8";

pub const JIRA_SECRET: &[u8] = b"FAKE0jira0webhook0secret0001";
pub const JIRA_BODY: &str = r#"{"timestamp":1700000000000,"webhookEvent":"jira:issue_created","issue_event_type_name":"issue_created","user":{"self":"https://acme.atlassian.net/rest/api/2/user?accountId=5b10a2844c20165700ede21g","accountId":"5b10a2844c20165700ede21g"},"issue":{"id":"10001","self":"https://acme.atlassian.net/rest/api/2/issue/10001","key":"ENG-1","fields":{"summary":"Broken sync"}},"matchedWebhookIds":[1]}"#;
const JIRA_SIGNATURE: &str =
    "sha256=be452ee9fd9e8adea87e4067c119c5711e63e7e21f98d27e1a3baaa6e56c3160";

pub const INTERCOM_SECRET: &[u8] = b"FAKE0intercom0client0secret01";
pub const INTERCOM_BODY: &str = r#"{"type":"notification_event","app_id":"fakeapp1","data":{"type":"notification_event_data","item":{"type":"conversation","id":"147"}},"links":{},"id":"notif_00000000-0000-4000-8000-000000000001","topic":"conversation.user.created","delivery_status":"pending","delivery_attempts":1,"delivered_at":0,"first_sent_at":1700000000,"created_at":1700000000}"#;
const INTERCOM_SIGNATURE: &str = "sha1=efb60f1494ec18380adf7706e19cac44b827abe9";

pub const ASANA_SECRET: &[u8] = b"b537207f20cbfa02357cf448134da559e8bd39d61597dcd5631b8012eae53e81";
pub const ASANA_BODY: &str = r#"{"events":[{"user":{"gid":"1111","resource_type":"user"},"created_at":"2023-11-14T22:13:20.000Z","action":"changed","resource":{"gid":"2222","resource_type":"task"},"parent":null,"change":{"field":"name","action":"changed"}}]}"#;
const ASANA_SIGNATURE: &str = "ec3decb64180ee10fb651acbcdbaeb9c3edd528a6cebaba0fcb0764e6149a31b";

fn scheme_of(kind: ProviderKind) -> Scheme {
    kind.default_scheme().expect("built-in scheme")
}

mod hubspot {
    use super::*;

    fn request_with<'a>(
        headers: &'a [(String, String)],
        uri: &'a str,
        body: &'a str,
    ) -> WebhookRequest<'a> {
        WebhookRequest::new("POST", uri, headers, body.as_bytes())
    }

    fn signed() -> Vec<(String, String)> {
        headers(&[
            ("X-HubSpot-Signature-v3", HUBSPOT_SIGNATURE),
            ("X-HubSpot-Request-Timestamp", "1700000000123"),
        ])
    }

    #[test]
    fn v3_signature_covers_method_decoded_uri_body_and_millisecond_timestamp() {
        let headers = signed();
        let request = request_with(&headers, HUBSPOT_URI, HUBSPOT_BODY);

        assert_eq!(
            verify(
                &scheme_of(ProviderKind::Hubspot),
                HUBSPOT_SECRET,
                &request,
                at(1_700_000_010)
            ),
            Ok(())
        );
    }

    #[test]
    fn another_path_or_method_breaks_the_signature() {
        let headers = signed();
        let scheme = scheme_of(ProviderKind::Hubspot);
        let other_path = request_with(&headers, "https://hooks.example.com/other", HUBSPOT_BODY);
        let mut other_method = request_with(&headers, HUBSPOT_URI, HUBSPOT_BODY);
        other_method.method = "PUT";

        for request in [other_path, other_method] {
            assert_eq!(
                verify(&scheme, HUBSPOT_SECRET, &request, at(1_700_000_010)),
                Err(VerifyError::SignatureMismatch)
            );
        }
    }

    #[test]
    fn timestamp_older_than_five_minutes_is_refused() {
        let headers = signed();
        let request = request_with(&headers, HUBSPOT_URI, HUBSPOT_BODY);

        assert_eq!(
            verify(
                &scheme_of(ProviderKind::Hubspot),
                HUBSPOT_SECRET,
                &request,
                at(1_700_000_301)
            ),
            Err(VerifyError::TimestampOutOfWindow)
        );
    }

    #[test]
    fn missing_timestamp_header_is_reported() {
        let headers = headers(&[("X-HubSpot-Signature-v3", HUBSPOT_SIGNATURE)]);
        let request = request_with(&headers, HUBSPOT_URI, HUBSPOT_BODY);

        assert_eq!(
            verify(
                &scheme_of(ProviderKind::Hubspot),
                HUBSPOT_SECRET,
                &request,
                at(1_700_000_000)
            ),
            Err(VerifyError::MissingTimestamp)
        );
    }
}

mod linear {
    use super::*;

    fn check(body: &str, secret: &[u8], now: u64) -> Result<(), VerifyError> {
        let headers = headers(&[("Linear-Signature", LINEAR_SIGNATURE)]);
        let request = WebhookRequest::new("POST", "/", &headers, body.as_bytes());
        verify(&scheme_of(ProviderKind::Linear), secret, &request, at(now))
    }

    #[test]
    fn hex_signature_verifies_within_a_minute_of_webhook_timestamp() {
        assert_eq!(check(LINEAR_BODY, LINEAR_SECRET, 1_700_000_060), Ok(()));
    }

    #[test]
    fn delivery_older_than_a_minute_is_refused() {
        assert_eq!(
            check(LINEAR_BODY, LINEAR_SECRET, 1_700_000_061),
            Err(VerifyError::TimestampOutOfWindow)
        );
    }

    #[test]
    fn wrong_secret_or_tampered_body_does_not_verify() {
        let tampered = LINEAR_BODY.replace("Broken sync", "Broken sink");

        assert_eq!(
            check(LINEAR_BODY, b"other", 1_700_000_000),
            Err(VerifyError::SignatureMismatch)
        );
        assert_eq!(
            check(&tampered, LINEAR_SECRET, 1_700_000_000),
            Err(VerifyError::SignatureMismatch)
        );
    }

    #[test]
    fn timestamp_check_can_be_turned_off() {
        let scheme: Scheme =
            serde_json::from_str(r#"{"scheme":"linear","tolerance_secs":null}"#).expect("parses");
        let headers = headers(&[("linear-signature", LINEAR_SIGNATURE)]);
        let request = WebhookRequest::new("POST", "/", &headers, LINEAR_BODY.as_bytes());

        assert_eq!(
            verify(&scheme, LINEAR_SECRET, &request, at(1_800_000_000)),
            Ok(())
        );
    }
}

mod zoom {
    use super::*;

    fn check(pairs: &[(&str, &str)], now: u64) -> Result<(), VerifyError> {
        let headers = headers(pairs);
        let request = WebhookRequest::new("POST", "/", &headers, ZOOM_BODY.as_bytes());
        verify(
            &scheme_of(ProviderKind::Zoom),
            ZOOM_SECRET,
            &request,
            at(now),
        )
    }

    #[test]
    fn v0_signature_over_timestamp_and_body_verifies() {
        let pairs = [
            ("x-zm-signature", ZOOM_SIGNATURE),
            ("x-zm-request-timestamp", "1700000000"),
        ];

        assert_eq!(check(&pairs, 1_700_000_000), Ok(()));
    }

    #[test]
    fn another_timestamp_breaks_the_signature() {
        let pairs = [
            ("X-ZM-Signature", ZOOM_SIGNATURE),
            ("X-ZM-Request-Timestamp", "1700000001"),
        ];

        assert_eq!(
            check(&pairs, 1_700_000_000),
            Err(VerifyError::SignatureMismatch)
        );
    }

    #[test]
    fn stale_timestamp_is_refused() {
        let pairs = [
            ("x-zm-signature", ZOOM_SIGNATURE),
            ("x-zm-request-timestamp", "1700000000"),
        ];

        assert_eq!(
            check(&pairs, 1_700_000_301),
            Err(VerifyError::TimestampOutOfWindow)
        );
    }
}

mod hub_signature {
    //! Atlassian (`sha256=`) and Intercom (`sha1=`) share the `X-Hub-Signature` header.

    use super::*;

    fn check(
        kind: ProviderKind,
        secret: &[u8],
        header: &str,
        body: &str,
    ) -> Result<(), VerifyError> {
        let headers = headers(&[("X-Hub-Signature", header)]);
        let request = WebhookRequest::new("POST", "/", &headers, body.as_bytes());
        verify(&scheme_of(kind), secret, &request, at(0))
    }

    #[test]
    fn jira_sha256_signature_verifies() {
        assert_eq!(
            check(
                ProviderKind::Atlassian,
                JIRA_SECRET,
                JIRA_SIGNATURE,
                JIRA_BODY
            ),
            Ok(())
        );
    }

    #[test]
    fn jira_refuses_a_sha1_signature() {
        let sha1 = "sha1=efb60f1494ec18380adf7706e19cac44b827abe9";

        assert_eq!(
            check(ProviderKind::Atlassian, JIRA_SECRET, sha1, JIRA_BODY),
            Err(VerifyError::UnsupportedAlgorithm)
        );
    }

    #[test]
    fn intercom_sha1_signature_verifies() {
        assert_eq!(
            check(
                ProviderKind::Intercom,
                INTERCOM_SECRET,
                INTERCOM_SIGNATURE,
                INTERCOM_BODY
            ),
            Ok(())
        );
    }

    #[test]
    fn intercom_with_wrong_secret_does_not_verify() {
        assert_eq!(
            check(
                ProviderKind::Intercom,
                b"wrong",
                INTERCOM_SIGNATURE,
                INTERCOM_BODY
            ),
            Err(VerifyError::SignatureMismatch)
        );
    }

    #[test]
    fn unknown_algorithm_label_is_unsupported() {
        assert_eq!(
            check(ProviderKind::Atlassian, JIRA_SECRET, "md5=abcd", JIRA_BODY),
            Err(VerifyError::UnsupportedAlgorithm)
        );
    }

    #[test]
    fn signature_without_label_is_malformed() {
        assert_eq!(
            check(
                ProviderKind::Intercom,
                INTERCOM_SECRET,
                "efb60f14",
                INTERCOM_BODY
            ),
            Err(VerifyError::MalformedSignature)
        );
    }
}

mod asana {
    use super::*;

    #[test]
    fn signature_keyed_by_the_handshake_secret_verifies() {
        let headers = headers(&[("X-Hook-Signature", ASANA_SIGNATURE)]);
        let request = WebhookRequest::new("POST", "/", &headers, ASANA_BODY.as_bytes());

        assert_eq!(
            verify(
                &scheme_of(ProviderKind::Asana),
                ASANA_SECRET,
                &request,
                at(0)
            ),
            Ok(())
        );
        assert_eq!(
            verify(&scheme_of(ProviderKind::Asana), b"other", &request, at(0)),
            Err(VerifyError::SignatureMismatch)
        );
    }
}

mod discord {
    use super::*;

    const BODY: &str = r#"{"id":"1200000000000000001","application_id":"1100000000000000001","type":2,"guild_id":"1000000000000000001","data":{"name":"status"}}"#;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    fn signed(timestamp: &str, body: &str) -> Vec<(String, String)> {
        let message = [timestamp.as_bytes(), body.as_bytes()].concat();
        let signature = hex::encode(key().sign(&message).to_bytes());
        headers(&[
            ("X-Signature-Ed25519", &signature),
            ("X-Signature-Timestamp", timestamp),
        ])
    }

    fn public_key_hex() -> String {
        hex::encode(key().verifying_key().to_bytes())
    }

    #[test]
    fn ed25519_signature_over_timestamp_and_body_verifies() {
        let headers = signed("1700000000", BODY);
        let request = WebhookRequest::new("POST", "/", &headers, BODY.as_bytes());

        assert_eq!(
            verify(
                &scheme_of(ProviderKind::Discord),
                public_key_hex().as_bytes(),
                &request,
                at(1_700_000_000)
            ),
            Ok(())
        );
    }

    #[test]
    fn tampered_body_or_other_key_does_not_verify() {
        let headers = signed("1700000000", BODY);
        let tampered = BODY.replace("status", "statue");
        let other_key = hex::encode(
            SigningKey::from_bytes(&[8u8; 32])
                .verifying_key()
                .to_bytes(),
        );
        let scheme = scheme_of(ProviderKind::Discord);

        let request = WebhookRequest::new("POST", "/", &headers, tampered.as_bytes());
        assert_eq!(
            verify(&scheme, public_key_hex().as_bytes(), &request, at(0)),
            Err(VerifyError::SignatureMismatch)
        );
        let request = WebhookRequest::new("POST", "/", &headers, BODY.as_bytes());
        assert_eq!(
            verify(&scheme, other_key.as_bytes(), &request, at(0)),
            Err(VerifyError::SignatureMismatch)
        );
    }

    #[test]
    fn public_key_that_is_not_hex_is_an_invalid_secret() {
        let headers = signed("1700000000", BODY);
        let request = WebhookRequest::new("POST", "/", &headers, BODY.as_bytes());

        assert_eq!(
            verify(
                &scheme_of(ProviderKind::Discord),
                b"not-a-key",
                &request,
                at(0)
            ),
            Err(VerifyError::InvalidSecret)
        );
    }

    #[test]
    fn configured_tolerance_refuses_old_interactions() {
        let scheme = Scheme::Discord {
            tolerance_secs: Some(300),
        };
        let headers = signed("1700000000", BODY);
        let request = WebhookRequest::new("POST", "/", &headers, BODY.as_bytes());

        assert_eq!(
            verify(
                &scheme,
                public_key_hex().as_bytes(),
                &request,
                at(1_700_000_301)
            ),
            Err(VerifyError::TimestampOutOfWindow)
        );
    }
}

mod microsoft_graph {
    use super::*;

    #[test]
    fn every_notification_must_carry_the_client_state() {
        let scheme = scheme_of(ProviderKind::MicrosoftGraph);
        let good = br#"{"value":[{"subscriptionId":"s1","clientState":"FAKEstate","changeType":"created","tenantId":"t1"}]}"#;
        let mixed = br#"{"value":[{"clientState":"FAKEstate"},{"clientState":"other"}]}"#;
        let absent = br#"{"value":[{"changeType":"created"}]}"#;

        let check = |body: &[u8]| {
            verify(
                &scheme,
                b"FAKEstate",
                &WebhookRequest::new("POST", "/", &[], body),
                at(0),
            )
        };
        assert_eq!(check(good), Ok(()));
        assert_eq!(check(mixed), Err(VerifyError::SignatureMismatch));
        assert_eq!(check(absent), Err(VerifyError::MissingSignature));
    }
}

mod generic_hmac {
    use super::*;

    const CONFIG: &str = r#"{"scheme":"hmac","header":"Webhook-Signature","algorithm":"sha512",
        "encoding":"base64","prefix":"v1,","timestamp_header":"Webhook-Timestamp",
        "signed_payload":"{timestamp}.{body}"}"#;
    const BODY: &str = r#"{"id":"msg_1","type":"invoice.paid"}"#;
    const SIGNATURE: &str = "v1,CAf3CnX7+/sP9SD/pDxuLsvIQGZW2QOAUfJAD8ZIpVuSik1Yg2OlIeFAfkJY+ZRWJYQX22DjArP1J8reiDTGIA==";

    fn check(pairs: &[(&str, &str)], now: u64) -> Result<(), VerifyError> {
        let scheme: Scheme = serde_json::from_str(CONFIG).expect("config parses");
        let headers = headers(pairs);
        let request = WebhookRequest::new("POST", "/", &headers, BODY.as_bytes());
        verify(&scheme, b"FAKE0generic0secret0001", &request, at(now))
    }

    #[test]
    fn configured_template_prefix_and_encoding_verify() {
        let pairs = [
            ("webhook-signature", SIGNATURE),
            ("webhook-timestamp", "1700000000"),
        ];

        assert_eq!(check(&pairs, 1_700_000_100), Ok(()));
    }

    #[test]
    fn configured_window_applies() {
        let pairs = [
            ("webhook-signature", SIGNATURE),
            ("webhook-timestamp", "1700000000"),
        ];

        assert_eq!(
            check(&pairs, 1_700_000_301),
            Err(VerifyError::TimestampOutOfWindow)
        );
    }

    #[test]
    fn missing_prefix_is_malformed_and_missing_timestamp_is_reported() {
        let unprefixed = [
            ("webhook-signature", &SIGNATURE[3..]),
            ("webhook-timestamp", "1700000000"),
        ];
        let untimed = [("webhook-signature", SIGNATURE)];

        assert_eq!(
            check(&unprefixed, 1_700_000_000),
            Err(VerifyError::MalformedSignature)
        );
        assert_eq!(
            check(&untimed, 1_700_000_000),
            Err(VerifyError::MissingTimestamp)
        );
    }
}
