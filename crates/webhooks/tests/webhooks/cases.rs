//! Expected values from the shared real-world cases, in our own words.

use splice_webhooks::{
    HandshakeOrder, ProviderKind, Scheme, VerifyError, WebhookRequest, describe, handshake, verify,
};

use crate::support::{at, headers};

mod slack_signing {
    //! Origin: case C21 (Slack's published signing example and its 5-minute window).

    use super::*;

    const SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";
    const TIMESTAMP: &str = "1531420618";
    const SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";

    fn check(body: &str, now: u64) -> Result<(), VerifyError> {
        let headers = headers(&[
            ("X-Slack-Request-Timestamp", TIMESTAMP),
            ("X-Slack-Signature", SIGNATURE),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ]);
        let request = WebhookRequest::new("POST", "/hooks/slack", &headers, body.as_bytes());
        let scheme = ProviderKind::Slack
            .default_scheme()
            .expect("slack has a scheme");
        verify(&scheme, SECRET, &request, at(now))
    }

    #[test]
    fn published_example_verifies_at_its_own_timestamp() {
        assert_eq!(check(BODY, 1_531_420_618), Ok(()));
    }

    #[test]
    fn exactly_five_minutes_old_is_still_accepted() {
        assert_eq!(check(BODY, 1_531_420_918), Ok(()));
    }

    #[test]
    fn one_second_past_five_minutes_is_stale() {
        assert_eq!(
            check(BODY, 1_531_420_919),
            Err(VerifyError::TimestampOutOfWindow)
        );
    }

    #[test]
    fn timestamp_more_than_five_minutes_ahead_is_refused() {
        assert_eq!(
            check(BODY, 1_531_420_317),
            Err(VerifyError::TimestampOutOfWindow)
        );
    }

    #[test]
    fn one_changed_form_field_breaks_the_signature() {
        let tampered = BODY.replace("&text=&", "&text=x&");

        assert_eq!(
            check(&tampered, 1_531_420_618),
            Err(VerifyError::SignatureMismatch)
        );
    }

    #[test]
    fn another_secret_does_not_verify() {
        let headers = headers(&[
            ("x-slack-request-timestamp", TIMESTAMP),
            ("x-slack-signature", SIGNATURE),
        ]);
        let request = WebhookRequest::new("POST", "/", &headers, BODY.as_bytes());
        let scheme = Scheme::Slack {
            tolerance_secs: 300,
        };

        assert_eq!(
            verify(&scheme, b"not-the-secret", &request, at(1_531_420_618)),
            Err(VerifyError::SignatureMismatch)
        );
    }

    #[test]
    fn lowercase_header_names_verify_the_same() {
        let headers = headers(&[
            ("x-slack-request-timestamp", TIMESTAMP),
            ("x-slack-signature", SIGNATURE),
        ]);
        let request = WebhookRequest::new("POST", "/", &headers, BODY.as_bytes());
        let scheme = Scheme::Slack {
            tolerance_secs: 300,
        };

        assert_eq!(verify(&scheme, SECRET, &request, at(1_531_420_618)), Ok(()));
    }

    #[test]
    fn missing_signature_or_timestamp_is_reported_as_such() {
        let scheme = Scheme::Slack {
            tolerance_secs: 300,
        };
        let no_signature = headers(&[("X-Slack-Request-Timestamp", TIMESTAMP)]);
        let no_timestamp = headers(&[("X-Slack-Signature", SIGNATURE)]);

        let request = WebhookRequest::new("POST", "/", &no_signature, BODY.as_bytes());
        assert_eq!(
            verify(&scheme, SECRET, &request, at(1_531_420_618)),
            Err(VerifyError::MissingSignature)
        );
        let request = WebhookRequest::new("POST", "/", &no_timestamp, BODY.as_bytes());
        assert_eq!(
            verify(&scheme, SECRET, &request, at(1_531_420_618)),
            Err(VerifyError::MissingTimestamp)
        );
    }

    #[test]
    fn signature_without_v0_prefix_is_malformed() {
        let headers = headers(&[
            ("X-Slack-Request-Timestamp", TIMESTAMP),
            ("X-Slack-Signature", &SIGNATURE[3..]),
        ]);
        let request = WebhookRequest::new("POST", "/", &headers, BODY.as_bytes());
        let scheme = Scheme::Slack {
            tolerance_secs: 300,
        };

        assert_eq!(
            verify(&scheme, SECRET, &request, at(1_531_420_618)),
            Err(VerifyError::MalformedSignature)
        );
    }
}

mod github_signing {
    //! Origin: case C22 (GitHub's published vector, legacy SHA-1, missing signature, UTF-8).

    use super::*;

    const SECRET: &[u8] = b"It's a Secret to Everybody";
    const SHA256: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    const SHA1: &str = "sha1=01dc10d0c83e72ed246219cdd91669667fe2ca59";

    fn check(scheme: &Scheme, pairs: &[(&str, &str)], body: &[u8]) -> Result<(), VerifyError> {
        let headers = headers(pairs);
        let request = WebhookRequest::new("POST", "/hooks/github", &headers, body);
        verify(scheme, SECRET, &request, at(1_700_000_000))
    }

    fn default_scheme() -> Scheme {
        ProviderKind::Github
            .default_scheme()
            .expect("github has a scheme")
    }

    #[test]
    fn published_sha256_example_verifies() {
        let pairs = [
            ("X-Hub-Signature-256", SHA256),
            ("X-GitHub-Event", "ping"),
            ("X-GitHub-Delivery", "00000000-0000-0000-0000-00000000d001"),
        ];

        assert_eq!(check(&default_scheme(), &pairs, b"Hello, World!"), Ok(()));
    }

    #[test]
    fn modified_payload_is_refused() {
        let pairs = [("X-Hub-Signature-256", SHA256)];

        assert_eq!(
            check(&default_scheme(), &pairs, b"Hello, World?"),
            Err(VerifyError::SignatureMismatch)
        );
    }

    #[test]
    fn sha1_only_delivery_is_not_downgraded_to() {
        let pairs = [("X-Hub-Signature", SHA1)];

        assert_eq!(
            check(&default_scheme(), &pairs, b"Hello, World!"),
            Err(VerifyError::UnsupportedAlgorithm)
        );
    }

    #[test]
    fn sha1_only_delivery_verifies_when_explicitly_allowed() {
        let scheme: Scheme =
            serde_json::from_str(r#"{"scheme":"github","allow_sha1":true}"#).expect("parses");
        let pairs = [("X-Hub-Signature", SHA1)];

        assert_eq!(check(&scheme, &pairs, b"Hello, World!"), Ok(()));
        assert_eq!(
            check(&scheme, &pairs, b"Hello, World?"),
            Err(VerifyError::SignatureMismatch)
        );
    }

    #[test]
    fn sha256_header_wins_over_a_legacy_header_alongside() {
        let pairs = [
            (
                "X-Hub-Signature",
                "sha1=0000000000000000000000000000000000000000",
            ),
            ("X-Hub-Signature-256", SHA256),
        ];

        assert_eq!(check(&default_scheme(), &pairs, b"Hello, World!"), Ok(()));
    }

    #[test]
    fn unsigned_delivery_is_refused_as_missing_signature() {
        let pairs = [("X-GitHub-Event", "push")];

        assert_eq!(
            check(&default_scheme(), &pairs, b"Hello, World!"),
            Err(VerifyError::MissingSignature)
        );
    }

    #[test]
    fn utf8_body_is_signed_over_its_bytes_as_received() {
        let pairs = [(
            "X-Hub-Signature-256",
            "sha256=b106e6fd9882cc5050eda53df060919b6c629fcade419a783bf5badf8c5421f8",
        )];
        let body = "{\"title\":\"Café ☕\"}";
        let latin1: Vec<u8> = body.chars().map(|c| c as u32 as u8).collect();

        assert_eq!(check(&default_scheme(), &pairs, body.as_bytes()), Ok(()));
        assert_eq!(
            check(&default_scheme(), &pairs, &latin1),
            Err(VerifyError::SignatureMismatch)
        );
    }

    #[test]
    fn non_hex_digest_is_malformed() {
        let pairs = [("X-Hub-Signature-256", "sha256=not-hex")];

        assert_eq!(
            check(&default_scheme(), &pairs, b"Hello, World!"),
            Err(VerifyError::MalformedSignature)
        );
    }
}

mod stripe_signing {
    //! Origin: case C23 (Stripe-Signature parsing, secret roll, v0 ignored, 300 s tolerance).

    use super::*;

    const SECRET: &[u8] = b"whsec_FAKE0test0secret0do0not0use0000";
    const BODY: &str = r#"{"id":"evt_FAKE0000000001","object":"event","type":"payment_intent.succeeded","data":{"object":{"id":"pi_FAKE0001","amount":2000,"currency":"usd"}}}"#;
    const CURRENT: &str = "9291e74cd97141e82b1f8008591eda9d684a9f4037a97d7a5d8bc31df151f12f";
    const OLD: &str = "1d2d3ab6408344fcfceee2d619b4e491472d54d485ca0a8a9eb378aaf11de4a2";
    const TEST_MODE_V0: &str = "6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39";

    fn check(header: &str, now: u64) -> Result<(), VerifyError> {
        let headers = headers(&[("Stripe-Signature", header)]);
        let request = WebhookRequest::new("POST", "/hooks/stripe", &headers, BODY.as_bytes());
        let scheme = ProviderKind::Stripe
            .default_scheme()
            .expect("stripe has a scheme");
        verify(&scheme, SECRET, &request, at(now))
    }

    #[test]
    fn current_v1_verifies_and_v0_beside_it_is_ignored() {
        let header = format!("t=1700000000,v1={CURRENT},v0={TEST_MODE_V0}");

        assert_eq!(check(&header, 1_700_000_005), Ok(()));
    }

    #[test]
    fn any_v1_may_match_while_a_secret_is_rolled() {
        let header = format!("t=1700000000,v1={OLD},v1={CURRENT}");

        assert_eq!(check(&header, 1_700_000_005), Ok(()));
    }

    #[test]
    fn only_old_secret_signature_does_not_verify() {
        let header = format!("t=1700000000,v1={OLD}");

        assert_eq!(
            check(&header, 1_700_000_005),
            Err(VerifyError::SignatureMismatch)
        );
    }

    #[test]
    fn age_of_301_seconds_is_outside_tolerance() {
        let header = format!("t=1700000000,v1={CURRENT}");

        assert_eq!(
            check(&header, 1_700_000_301),
            Err(VerifyError::TimestampOutOfWindow)
        );
    }

    #[test]
    fn age_of_exactly_300_seconds_is_accepted() {
        let header = format!("t=1700000000,v1={CURRENT}");

        assert_eq!(check(&header, 1_700_000_300), Ok(()));
    }

    #[test]
    fn header_with_only_v0_has_no_usable_signature() {
        let header = format!("t=1700000000,v0={CURRENT}");

        assert_eq!(
            check(&header, 1_700_000_005),
            Err(VerifyError::MissingSignature)
        );
    }

    #[test]
    fn refreshed_timestamp_breaks_the_signature_it_is_covered_by() {
        let header = format!("t=1700000060,v1={CURRENT}");

        assert_eq!(
            check(&header, 1_700_000_061),
            Err(VerifyError::SignatureMismatch)
        );
    }

    #[test]
    fn header_without_timestamp_is_refused() {
        let header = format!("v1={CURRENT}");

        assert_eq!(
            check(&header, 1_700_000_005),
            Err(VerifyError::MissingTimestamp)
        );
    }
}

mod shopify_signing {
    //! Origin: case C24 (base64 HMAC of the raw body; routing only by the verified shop domain).

    use super::*;

    const SECRET: &[u8] = b"FAKE_shopify_client_secret_0001";
    const BODY: &str = r#"{"id":450789469,"email":"customer@example.com","total_price":"10.00","currency":"USD","line_items":[{"title":"T-shirt","quantity":1}]}"#;
    const BASE64_HMAC: &str = "TaWUfVVnvMI7WL7EbQEVR2cHVtfjMltDDJDShi5kuaM=";
    const HEX_HMAC: &str = "4da5947d5567bcc23b58bec46d011547670756d7e3325b430c90d2862e64b9a3";

    fn delivery(hmac: &str, shop: &str) -> Vec<(String, String)> {
        headers(&[
            ("X-Shopify-Topic", "orders/create"),
            ("X-Shopify-Shop-Domain", shop),
            ("X-Shopify-Hmac-Sha256", hmac),
            (
                "X-Shopify-Webhook-Id",
                "00000000-0000-0000-0000-00000000a001",
            ),
            ("X-Shopify-Event-Id", "00000000-0000-0000-0000-00000000e001"),
            ("Content-Type", "application/json"),
        ])
    }

    #[test]
    fn base64_hmac_of_raw_body_verifies_and_routes_by_shop_domain() {
        let headers = delivery(BASE64_HMAC, "fake-shop-01.myshopify.com");
        let request = WebhookRequest::new("POST", "/hooks/shopify", &headers, BODY.as_bytes());

        assert_eq!(verify(&Scheme::Shopify, SECRET, &request, at(0)), Ok(()));
        let info = describe(ProviderKind::Shopify, &request);
        assert_eq!(info.account_ids, ["fake-shop-01.myshopify.com"]);
        assert_eq!(info.event_type, "orders/create");
    }

    #[test]
    fn hex_digest_in_place_of_base64_is_refused() {
        let headers = delivery(HEX_HMAC, "fake-shop-01.myshopify.com");
        let request = WebhookRequest::new("POST", "/", &headers, BODY.as_bytes());

        assert!(verify(&Scheme::Shopify, SECRET, &request, at(0)).is_err());
    }

    #[test]
    fn reserialized_json_body_is_refused() {
        let headers = delivery(BASE64_HMAC, "fake-shop-01.myshopify.com");
        let value: serde_json::Value = serde_json::from_str(BODY).expect("json");
        let reserialized = serde_json::to_vec_pretty(&value).expect("json");
        let request = WebhookRequest::new("POST", "/", &headers, &reserialized);

        assert_eq!(
            verify(&Scheme::Shopify, SECRET, &request, at(0)),
            Err(VerifyError::SignatureMismatch)
        );
    }

    #[test]
    fn unknown_shop_is_described_by_its_domain_alone() {
        // The signature is valid; whether `not-installed` has an install is the server's call.
        let headers = delivery(BASE64_HMAC, "not-installed.myshopify.com");
        let request = WebhookRequest::new("POST", "/", &headers, BODY.as_bytes());

        assert_eq!(verify(&Scheme::Shopify, SECRET, &request, at(0)), Ok(()));
        let info = describe(ProviderKind::Shopify, &request);
        assert_eq!(info.account_ids, ["not-installed.myshopify.com"]);
    }
}

mod slack_url_verification {
    //! Origin: case C27 (Slack's url_verification handshake, signed like any request).

    use super::*;

    const SECRET: &[u8] = b"FAKE0slack0signing0secret0000001";
    const BODY: &str = r#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    const SIGNATURE: &str = "v0=b26748595e77c2e27daf8bdbdb3eb5cdcf3fea21f47a0fe31264d7c10fb3a8fc";

    #[test]
    fn challenge_is_echoed_as_plain_text_after_verification() {
        let headers = headers(&[
            ("Content-Type", "application/json"),
            ("X-Slack-Request-Timestamp", "1700000100"),
            ("X-Slack-Signature", SIGNATURE),
        ]);
        let request = WebhookRequest::new("POST", "/hooks/slack", &headers, BODY.as_bytes());
        let scheme = ProviderKind::Slack
            .default_scheme()
            .expect("slack has a scheme");

        assert_eq!(
            ProviderKind::Slack.handshake_order(),
            HandshakeOrder::AfterVerification
        );
        assert_eq!(verify(&scheme, SECRET, &request, at(1_700_000_100)), Ok(()));
        let reply = handshake(ProviderKind::Slack, &request, SECRET).expect("a handshake");
        assert_eq!(reply.status, 200);
        assert!(
            reply
                .content_type
                .is_some_and(|t| t.starts_with("text/plain"))
        );
        assert_eq!(
            reply.body,
            b"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
        );
        assert_eq!(reply.secret_to_store, None);
    }

    #[test]
    fn forged_challenge_fails_verification_before_any_reply() {
        let headers = headers(&[
            ("X-Slack-Request-Timestamp", "1700000100"),
            ("X-Slack-Signature", SIGNATURE),
        ]);
        let forged = BODY.replace("3eZb", "XXXX");
        let request = WebhookRequest::new("POST", "/", &headers, forged.as_bytes());
        let scheme = ProviderKind::Slack
            .default_scheme()
            .expect("slack has a scheme");

        assert_eq!(
            verify(&scheme, SECRET, &request, at(1_700_000_100)),
            Err(VerifyError::SignatureMismatch)
        );
    }

    #[test]
    fn challenge_names_no_tenant_to_route_to() {
        let request = WebhookRequest::new("POST", "/", &[], BODY.as_bytes());

        let info = describe(ProviderKind::Slack, &request);

        assert_eq!(info.event_type, "url_verification");
        assert!(info.account_ids.is_empty());
        assert_eq!(info.delivery_id, None);
    }
}

mod duplicate_deliveries {
    //! Origin: case C30 (Slack retries, GitHub redeliveries, Shopify and Stripe event ids).

    use super::*;

    const SLACK_SECRET: &[u8] = b"FAKE0slack0signing0secret0000001";
    const SLACK_BODY: &str = r#"{"token":"FAKEverificationtoken","team_id":"T0FAKETEAM1","api_app_id":"A0FAKEAPP01","event":{"type":"app_mention","user":"U0FAKEUSER1","text":"<@U0FAKEBOT1> status","ts":"1700000000.000100","channel":"C0FAKECHAN1","event_ts":"1700000000.000100"},"type":"event_callback","event_id":"Ev0FAKE00001","event_time":1700000000}"#;

    #[test]
    fn slack_retry_verifies_with_its_new_timestamp_and_shares_the_dedupe_key() {
        let first = headers(&[
            ("X-Slack-Request-Timestamp", "1700000001"),
            (
                "X-Slack-Signature",
                "v0=cd910bd7372571a78217740b7f4b3952375969034ef923691f3a7748b9a6a22c",
            ),
            ("Content-Type", "application/json"),
        ]);
        let retry = headers(&[
            ("X-Slack-Request-Timestamp", "1700000005"),
            (
                "X-Slack-Signature",
                "v0=c315a92159a55b2c90e3816aed14f5c95f02f2c186fa27b4d62132ee6be82821",
            ),
            ("X-Slack-Retry-Num", "1"),
            ("X-Slack-Retry-Reason", "http_timeout"),
            ("Content-Type", "application/json"),
        ]);
        let scheme = ProviderKind::Slack
            .default_scheme()
            .expect("slack has a scheme");
        let first = WebhookRequest::new("POST", "/", &first, SLACK_BODY.as_bytes());
        let retry = WebhookRequest::new("POST", "/", &retry, SLACK_BODY.as_bytes());

        assert_eq!(
            verify(&scheme, SLACK_SECRET, &first, at(1_700_000_001)),
            Ok(())
        );
        assert_eq!(
            verify(&scheme, SLACK_SECRET, &retry, at(1_700_000_005)),
            Ok(())
        );

        let first = describe(ProviderKind::Slack, &first);
        let retry = describe(ProviderKind::Slack, &retry);
        assert_eq!(first.delivery_id.as_deref(), Some("Ev0FAKE00001"));
        assert_eq!(first.event_type, "app_mention");
        assert_eq!(first.account_ids, ["T0FAKETEAM1"]);
        assert_eq!(first.retry_attempt, None);
        assert_eq!(retry.retry_attempt, Some(1));
        assert!(first.dedupe_key().is_some());
        assert_eq!(first.dedupe_key(), retry.dedupe_key());
    }

    #[test]
    fn github_redelivery_keeps_its_delivery_id() {
        let body = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
        let first = headers(&[
            ("X-GitHub-Event", "ping"),
            ("X-GitHub-Delivery", "00000000-0000-0000-0000-00000000d0d0"),
        ]);
        let redelivery = first.clone();

        let first = describe(
            ProviderKind::Github,
            &WebhookRequest::new("POST", "/", &first, body),
        );
        let again = describe(
            ProviderKind::Github,
            &WebhookRequest::new("POST", "/", &redelivery, body),
        );

        assert_eq!(
            first.delivery_id.as_deref(),
            Some("00000000-0000-0000-0000-00000000d0d0")
        );
        assert_eq!(first.dedupe_key(), again.dedupe_key());
    }

    #[test]
    fn shopify_duplicates_share_the_event_id_not_the_webhook_id() {
        let body = br#"{"id":450789469}"#;
        let delivery = |webhook_id: &str| {
            headers(&[
                ("X-Shopify-Topic", "orders/create"),
                ("X-Shopify-Shop-Domain", "fake-shop-01.myshopify.com"),
                ("X-Shopify-Webhook-Id", webhook_id),
                ("X-Shopify-Event-Id", "00000000-0000-0000-0000-00000000e001"),
            ])
        };
        let first = delivery("00000000-0000-0000-0000-00000000a001");
        let duplicate = delivery("00000000-0000-0000-0000-00000000a002");

        let first = describe(
            ProviderKind::Shopify,
            &WebhookRequest::new("POST", "/", &first, body),
        );
        let duplicate = describe(
            ProviderKind::Shopify,
            &WebhookRequest::new("POST", "/", &duplicate, body),
        );

        assert_eq!(
            first.delivery_id.as_deref(),
            Some("00000000-0000-0000-0000-00000000e001")
        );
        assert_eq!(first.dedupe_key(), duplicate.dedupe_key());
    }

    #[test]
    fn stripe_events_are_keyed_by_their_event_id() {
        let body = br#"{"id":"evt_FAKE0000000001","object":"event","type":"payment_intent.succeeded","account":"acct_FAKE01"}"#;

        let info = describe(
            ProviderKind::Stripe,
            &WebhookRequest::new("POST", "/", &[], body),
        );

        assert_eq!(info.delivery_id.as_deref(), Some("evt_FAKE0000000001"));
        assert_eq!(
            info.dedupe_key().as_deref(),
            Some("stripe:acct_FAKE01:payment_intent.succeeded:evt_FAKE0000000001")
        );
    }
}
