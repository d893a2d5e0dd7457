//! Provider kinds: which provider sent a webhook, and what that implies by default.
//!
//! A [`ProviderKind`] is read from a catalog entry or a route segment. It picks the default
//! [`Scheme`], decides whether its handshake is answered before or after verification, and
//! selects the fields `describe` reads. It holds no secrets and no per-install data.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

use crate::scheme::{DEFAULT_TOLERANCE_SECS, LINEAR_TOLERANCE_SECS, Scheme};

/// The providers whose webhooks this crate understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub enum ProviderKind {
    /// Slack Events API, interactivity and slash commands.
    Slack,
    /// GitHub repository, organization and app webhooks.
    Github,
    /// Stripe events, including Connect.
    Stripe,
    /// Shopify app webhooks.
    Shopify,
    /// HubSpot app webhooks (signature v3).
    Hubspot,
    /// Linear webhooks.
    Linear,
    /// Zoom event subscriptions.
    Zoom,
    /// Atlassian (Jira, Confluence) admin webhooks signed with a secret.
    Atlassian,
    /// Intercom app webhooks.
    Intercom,
    /// Discord interactions endpoint.
    Discord,
    /// Microsoft Graph change notifications.
    MicrosoftGraph,
    /// Asana webhooks.
    Asana,
    /// A provider described only by a configured [`Scheme::Hmac`].
    Generic,
}

/// Whether a provider's handshake may be answered before its signature is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeOrder {
    /// The handshake request is signed: verify first, answer only a verified request.
    AfterVerification,
    /// The handshake carries no signature (there is nothing to verify yet); answer it first.
    BeforeVerification,
    /// The provider has no handshake.
    None,
}

/// A provider name that is not one of the known kinds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown webhook provider `{0}`")]
pub struct UnknownProvider(pub String);

impl ProviderKind {
    /// Every kind, in declaration order.
    pub const ALL: [ProviderKind; 13] = [
        Self::Slack,
        Self::Github,
        Self::Stripe,
        Self::Shopify,
        Self::Hubspot,
        Self::Linear,
        Self::Zoom,
        Self::Atlassian,
        Self::Intercom,
        Self::Discord,
        Self::MicrosoftGraph,
        Self::Asana,
        Self::Generic,
    ];

    /// The canonical lowercase name, as accepted by [`FromStr`].
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Slack => "slack",
            Self::Github => "github",
            Self::Stripe => "stripe",
            Self::Shopify => "shopify",
            Self::Hubspot => "hubspot",
            Self::Linear => "linear",
            Self::Zoom => "zoom",
            Self::Atlassian => "atlassian",
            Self::Intercom => "intercom",
            Self::Discord => "discord",
            Self::MicrosoftGraph => "microsoft_graph",
            Self::Asana => "asana",
            Self::Generic => "generic",
        }
    }

    /// The scheme this provider signs with, or `None` for [`Generic`](Self::Generic), which
    /// must be configured.
    pub fn default_scheme(self) -> Option<Scheme> {
        let scheme = match self {
            Self::Slack => Scheme::Slack {
                tolerance_secs: DEFAULT_TOLERANCE_SECS,
            },
            Self::Github => Scheme::Github { allow_sha1: false },
            Self::Stripe => Scheme::Stripe {
                tolerance_secs: DEFAULT_TOLERANCE_SECS,
            },
            Self::Shopify => Scheme::Shopify,
            Self::Hubspot => Scheme::Hubspot {
                tolerance_secs: DEFAULT_TOLERANCE_SECS,
            },
            Self::Linear => Scheme::Linear {
                tolerance_secs: Some(LINEAR_TOLERANCE_SECS),
            },
            Self::Zoom => Scheme::Zoom {
                tolerance_secs: DEFAULT_TOLERANCE_SECS,
            },
            Self::Atlassian => Scheme::Atlassian,
            Self::Intercom => Scheme::Intercom,
            Self::Discord => Scheme::Discord {
                tolerance_secs: None,
            },
            Self::MicrosoftGraph => Scheme::MicrosoftGraph,
            Self::Asana => Scheme::Asana,
            Self::Generic => return None,
        };
        Some(scheme)
    }

    /// When this provider's handshake (see `handshake`) is answered relative to verification.
    ///
    /// Slack's `url_verification`, Zoom's `endpoint.url_validation` and Discord's PING are
    /// signed like any delivery, and Zoom's reply is an HMAC under the signing secret, so
    /// answering it unverified would hand out signatures. Microsoft Graph's `validationToken`
    /// and Asana's `X-Hook-Secret` arrive before any secret exists to check them with.
    pub fn handshake_order(self) -> HandshakeOrder {
        match self {
            Self::Slack | Self::Zoom | Self::Discord => HandshakeOrder::AfterVerification,
            Self::MicrosoftGraph | Self::Asana => HandshakeOrder::BeforeVerification,
            _ => HandshakeOrder::None,
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProviderKind {
    type Err = UnknownProvider;

    /// Parses a name, ignoring case, `-` versus `_`, and a few common aliases (`jira`, `graph`).
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let normalized = name.trim().to_ascii_lowercase().replace('-', "_");
        let kind = match normalized.as_str() {
            "slack" => Self::Slack,
            "github" => Self::Github,
            "stripe" => Self::Stripe,
            "shopify" => Self::Shopify,
            "hubspot" => Self::Hubspot,
            "linear" => Self::Linear,
            "zoom" => Self::Zoom,
            "atlassian" | "jira" | "confluence" => Self::Atlassian,
            "intercom" => Self::Intercom,
            "discord" => Self::Discord,
            "microsoft_graph" | "microsoftgraph" | "msgraph" | "graph" => Self::MicrosoftGraph,
            "asana" => Self::Asana,
            "generic" | "hmac" => Self::Generic,
            _ => return Err(UnknownProvider(name.to_owned())),
        };
        Ok(kind)
    }
}

impl TryFrom<String> for ProviderKind {
    type Error = UnknownProvider;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        name.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_name() {
        for kind in ProviderKind::ALL {
            assert_eq!(kind.as_str().parse::<ProviderKind>(), Ok(kind));
        }
    }

    #[test]
    fn names_ignore_case_and_accept_aliases() {
        assert_eq!("GitHub".parse(), Ok(ProviderKind::Github));
        assert_eq!("jira".parse(), Ok(ProviderKind::Atlassian));
        assert_eq!("microsoft-graph".parse(), Ok(ProviderKind::MicrosoftGraph));
        assert_eq!(
            "gitlab".parse::<ProviderKind>(),
            Err(UnknownProvider("gitlab".into()))
        );
    }

    #[test]
    fn only_generic_lacks_a_default_scheme() {
        for kind in ProviderKind::ALL {
            assert_eq!(
                kind.default_scheme().is_none(),
                kind == ProviderKind::Generic
            );
        }
    }

    #[test]
    fn kind_deserializes_from_a_string() {
        let kind: ProviderKind = serde_json::from_str("\"shopify\"").expect("parses");

        assert_eq!(kind, ProviderKind::Shopify);
    }
}
