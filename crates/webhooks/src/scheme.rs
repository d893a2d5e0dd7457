//! Signature schemes: how each provider signs a delivery, as data read from a catalog entry.
//!
//! A [`Scheme`] says which headers carry the signature and timestamp, what is signed and how the
//! digest is encoded. It deserializes from the connector catalog, e.g. `{"scheme":"slack"}` or
//! `{"scheme":"hmac","header":"X-Signature","algorithm":"sha256","encoding":"hex"}`. The checks
//! themselves live in `verify`; this module holds no secrets.

use serde::Deserialize;

/// Replay window used by Slack, Stripe, HubSpot and Zoom unless configured otherwise.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;

/// Linear asks receivers to reject deliveries whose `webhookTimestamp` is over a minute old.
pub const LINEAR_TOLERANCE_SECS: u64 = 60;

/// How a provider signs its webhook deliveries.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "scheme", rename_all = "snake_case", deny_unknown_fields)]
pub enum Scheme {
    /// Slack v0: `X-Slack-Signature: v0=hex(HMAC-SHA256("v0:{ts}:{body}"))` with
    /// `X-Slack-Request-Timestamp` in seconds.
    Slack {
        /// Largest accepted distance between the timestamp and now, in seconds.
        #[serde(default = "default_tolerance")]
        tolerance_secs: u64,
    },
    /// GitHub: `X-Hub-Signature-256: sha256=hex(HMAC-SHA256(body))`.
    Github {
        /// Accept a delivery that carries only the legacy SHA-1 `X-Hub-Signature`.
        #[serde(default)]
        allow_sha1: bool,
    },
    /// Stripe: `Stripe-Signature: t={ts},v1={hex},…` over `"{ts}.{body}"`; any `v1` may match.
    Stripe {
        /// Largest accepted distance between `t` and now, in seconds.
        #[serde(default = "default_tolerance")]
        tolerance_secs: u64,
    },
    /// Shopify: `X-Shopify-Hmac-Sha256: base64(HMAC-SHA256(body))`; no timestamp.
    Shopify,
    /// HubSpot v3: `X-HubSpot-Signature-v3: base64(HMAC-SHA256(method + uri + body + ts))`
    /// with `X-HubSpot-Request-Timestamp` in milliseconds.
    Hubspot {
        /// Largest accepted distance between the timestamp and now, in seconds.
        #[serde(default = "default_tolerance")]
        tolerance_secs: u64,
    },
    /// Linear: `Linear-Signature: hex(HMAC-SHA256(body))`, plus `webhookTimestamp` (ms) in the
    /// body.
    Linear {
        /// Largest accepted age of `webhookTimestamp` in seconds; `null` skips the check.
        #[serde(default = "default_linear_tolerance")]
        tolerance_secs: Option<u64>,
    },
    /// Zoom: `x-zm-signature: v0=hex(HMAC-SHA256("v0:{ts}:{body}"))` with
    /// `x-zm-request-timestamp` in seconds.
    Zoom {
        /// Largest accepted distance between the timestamp and now, in seconds.
        #[serde(default = "default_tolerance")]
        tolerance_secs: u64,
    },
    /// Atlassian (Jira, Confluence): `X-Hub-Signature: sha256=hex(HMAC-SHA256(body))`, the
    /// WebSub `method=signature` form.
    Atlassian,
    /// Intercom: `X-Hub-Signature: sha1=hex(HMAC-SHA1(body))` keyed with the client secret.
    Intercom,
    /// Discord interactions: Ed25519 over `timestamp + body`; the secret is the application's
    /// public key in hex.
    Discord {
        /// Largest accepted distance of `X-Signature-Timestamp` from now; `null` skips the check
        /// (Discord documents none).
        #[serde(default)]
        tolerance_secs: Option<u64>,
    },
    /// Asana: `X-Hook-Signature: hex(HMAC-SHA256(body))` keyed with the secret from the
    /// `X-Hook-Secret` handshake.
    Asana,
    /// Microsoft Graph: no signature; every notification's `clientState` must equal the secret
    /// given when the subscription was created.
    MicrosoftGraph,
    /// Any other provider, described field by field.
    Hmac(HmacConfig),
}

/// A configurable HMAC scheme for providers without a built-in one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HmacConfig {
    /// The header that carries the signature.
    pub header: String,
    /// The hash under the HMAC.
    pub algorithm: Algorithm,
    /// How the digest is written in the header.
    pub encoding: Encoding,
    /// Text before the digest, e.g. `sha256=`; it must be present when configured.
    #[serde(default)]
    pub prefix: Option<String>,
    /// The header that carries the timestamp, when the provider sends one.
    #[serde(default)]
    pub timestamp_header: Option<String>,
    /// What is signed, with `{timestamp}`, `{body}`, `{method}` and `{uri}` placeholders;
    /// the raw body alone when absent.
    #[serde(default)]
    pub signed_payload: Option<String>,
    /// Unit of the timestamp header.
    #[serde(default)]
    pub timestamp_unit: TimestampUnit,
    /// Largest accepted distance between the timestamp and now, in seconds.
    #[serde(default = "default_tolerance")]
    pub tolerance_secs: u64,
}

/// Hash functions accepted under HMAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// HMAC-SHA1, still used by Intercom and GitHub's legacy header.
    Sha1,
    /// HMAC-SHA256.
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

impl Algorithm {
    /// Parses the names providers put in signature prefixes (`sha256=`), ignoring case.
    pub fn from_label(label: &str) -> Option<Self> {
        match label.to_ascii_lowercase().as_str() {
            "sha1" => Some(Self::Sha1),
            "sha256" => Some(Self::Sha256),
            "sha512" => Some(Self::Sha512),
            _ => None,
        }
    }
}

/// How a digest is written as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Hexadecimal, either case.
    Hex,
    /// Standard base64 with padding.
    Base64,
}

/// Unit of a timestamp header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimestampUnit {
    /// Unix seconds.
    #[default]
    Seconds,
    /// Unix milliseconds.
    Milliseconds,
}

fn default_tolerance() -> u64 {
    DEFAULT_TOLERANCE_SECS
}

fn default_linear_tolerance() -> Option<u64> {
    Some(LINEAR_TOLERANCE_SECS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Scheme {
        serde_json::from_str(json).expect("scheme parses")
    }

    #[test]
    fn builtin_schemes_take_documented_defaults() {
        assert_eq!(
            parse(r#"{"scheme":"slack"}"#),
            Scheme::Slack {
                tolerance_secs: 300
            }
        );
        assert_eq!(
            parse(r#"{"scheme":"github"}"#),
            Scheme::Github { allow_sha1: false }
        );
        assert_eq!(
            parse(r#"{"scheme":"linear"}"#),
            Scheme::Linear {
                tolerance_secs: Some(60)
            }
        );
        assert_eq!(
            parse(r#"{"scheme":"microsoft_graph"}"#),
            Scheme::MicrosoftGraph
        );
    }

    #[test]
    fn generic_hmac_reads_every_field() {
        let scheme = parse(
            r#"{"scheme":"hmac","header":"X-Signature","algorithm":"sha512",
                "encoding":"base64","prefix":"sha512=","timestamp_header":"X-Timestamp",
                "signed_payload":"{timestamp}.{body}","timestamp_unit":"milliseconds",
                "tolerance_secs":60}"#,
        );

        let Scheme::Hmac(config) = scheme else {
            panic!("expected a generic scheme");
        };
        assert_eq!(config.header, "X-Signature");
        assert_eq!(config.algorithm, Algorithm::Sha512);
        assert_eq!(config.encoding, Encoding::Base64);
        assert_eq!(config.prefix.as_deref(), Some("sha512="));
        assert_eq!(config.timestamp_header.as_deref(), Some("X-Timestamp"));
        assert_eq!(config.timestamp_unit, TimestampUnit::Milliseconds);
        assert_eq!(config.tolerance_secs, 60);
    }

    #[test]
    fn unknown_algorithm_or_misspelt_field_is_a_config_error() {
        let bad_algorithm = r#"{"scheme":"hmac","header":"X","algorithm":"md5","encoding":"hex"}"#;
        let misspelt = r#"{"scheme":"slack","tolerance":5}"#;
        let misspelt_generic =
            r#"{"scheme":"hmac","header":"X","algorithm":"sha256","encoding":"hex","prefx":"a"}"#;

        assert!(serde_json::from_str::<Scheme>(bad_algorithm).is_err());
        assert!(serde_json::from_str::<Scheme>(misspelt).is_err());
        assert!(serde_json::from_str::<Scheme>(misspelt_generic).is_err());
    }
}
