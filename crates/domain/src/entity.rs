//! The entities Splice manages. Each carries `tags`, creation and update times, and a `version`
//! that increases with every write (used for optimistic concurrency and cache keys).

use std::collections::BTreeMap;

use crate::{ConnectorId, IdentityId, InstallId, IntegrationId, Millis, Secret, SessionId};
use crate::{Tags, TenantId};

/// Fields every stored entity has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    pub tags: Tags,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub version: i64,
}

impl Meta {
    /// Metadata of an entity created now.
    pub fn new(tags: Tags, now: Millis) -> Self {
        Self {
            tags,
            created_at: now,
            updated_at: now,
            version: 1,
        }
    }
}

/// How a connector authenticates its client at the token endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// `client_id` and `client_secret` in the form body.
    #[default]
    Body,
    /// HTTP Basic with the url-encoded id and secret.
    Basic,
}

/// A generic OAuth 2.0 authorization-code connector.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Config {
    pub authorization_url: String,
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default = "yes")]
    pub pkce: bool,
    #[serde(default)]
    pub authorize_params: BTreeMap<String, String>,
    #[serde(default)]
    pub client_auth: ClientAuth,
    #[serde(default)]
    pub userinfo_url: Option<String>,
}

fn yes() -> bool {
    true
}

/// A connector made from a provider catalog entry plus the developer's app credentials.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The catalog entry's name.
    #[serde(default)]
    pub provider: String,
    /// The OAuth app's client id (OAuth providers only).
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_secret: Option<Secret>,
    /// Scopes to request instead of the catalog's defaults.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// Values of the catalog entry's connector-level settings.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// How the provider's webhooks to this connector are verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookConfig>,
}

/// Incoming webhooks of a connector: which provider's format, and the signing secret.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The provider's webhook format (`slack`, `github`, `stripe`, …, or `generic`); defaults to
    /// the catalog entry's name.
    #[serde(default)]
    pub provider: Option<String>,
    /// The signing secret (or, for Discord, the public key).
    #[serde(default)]
    pub secret: Option<Secret>,
    /// A signature scheme overriding the provider's (required for `generic`).
    #[serde(default)]
    pub scheme: Option<serde_json::Value>,
}

/// What a connector is, by type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectorConfig {
    /// A generic OAuth 2.0 authorization-code connector configured by hand.
    OAuth2(OAuth2Config),
    /// A connector described by the provider catalog.
    Provider(ProviderConfig),
}

impl ConnectorConfig {
    /// The `type` name used in the API and storage.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::OAuth2(_) => "oauth2",
            Self::Provider(_) => "provider",
        }
    }

    /// The webhook signing secret, when the connector has one.
    pub fn webhook_secret(&self) -> Option<&Secret> {
        match self {
            Self::OAuth2(_) => None,
            Self::Provider(c) => c.webhook.as_ref().and_then(|w| w.secret.as_ref()),
        }
    }

    /// The client secret, when the connector has one.
    pub fn client_secret(&self) -> Option<&Secret> {
        match self {
            Self::OAuth2(c) => Some(&c.client_secret),
            Self::Provider(c) => c.client_secret.as_ref(),
        }
    }
}

/// A connector: Splice's relationship with one service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connector {
    pub id: ConnectorId,
    pub config: ConnectorConfig,
    /// Set when the provider rejected the connector's client (e.g. `invalid_client`): the
    /// developer must fix its credentials. Cleared by an update.
    pub misconfigured: Option<String>,
    pub meta: Meta,
}

/// How invocations of an integration share JavaScript state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// Warm contexts reused across invocations of one version.
    #[default]
    Warm,
    /// A fresh runtime for every invocation.
    Invocation,
}

/// Resource limits of an integration's invocations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSettings {
    pub memory_mb: u32,
    pub cpu_ms: u64,
    pub wall_ms: u64,
    pub isolation: Isolation,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self {
            memory_mb: 64,
            cpu_ms: 1_000,
            wall_ms: 30_000,
            isolation: Isolation::Warm,
        }
    }
}

impl RuntimeSettings {
    /// Checks the limits lie in the ranges Splice supports.
    pub fn validate(&self) -> Result<(), crate::InvalidValue> {
        let bad = |field, reason: &str| Err(crate::InvalidValue::new(field, reason));
        if !(8..=1024).contains(&self.memory_mb) {
            return bad("memory_mb", "must be between 8 and 1024");
        }
        if !(1..=60_000).contains(&self.cpu_ms) {
            return bad("cpu_ms", "must be between 1 and 60000");
        }
        if !(1..=300_000).contains(&self.wall_ms) {
            return bad("wall_ms", "must be between 1 and 300000");
        }
        Ok(())
    }
}

/// A deployed integration. Its compiled bytecode is stored beside it, not carried here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Integration {
    pub id: IntegrationId,
    pub files: BTreeMap<String, String>,
    /// Connector names used in code, mapped to connector ids.
    pub connectors: BTreeMap<String, ConnectorId>,
    pub runtime: RuntimeSettings,
    /// Cron schedules whose firings run the integration's `cron` handlers.
    pub schedules: Vec<ScheduleSpec>,
    pub meta: Meta,
}

/// A schedule declared at deploy: a cron expression in a time zone, run once per firing for
/// the integration, or once per install.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    pub name: String,
    /// Five fields, or six with seconds first.
    pub cron: String,
    #[serde(default)]
    pub time_zone: Option<String>,
    #[serde(default)]
    pub per_install: bool,
}

/// The health of an identity's credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityStatus {
    Healthy,
    /// A refresh is in flight.
    Refreshing,
    /// The provider rejected the grant; the user must connect again.
    NeedsReauth,
    /// Refreshing failed on too many days in a row; the user must connect again.
    Dead,
}

impl IdentityStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Refreshing => "refreshing",
            Self::NeedsReauth => "needs_reauth",
            Self::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "healthy" => Some(Self::Healthy),
            "refreshing" => Some(Self::Refreshing),
            "needs_reauth" => Some(Self::NeedsReauth),
            "dead" => Some(Self::Dead),
            _ => None,
        }
    }

    /// Whether the credential can still be used or refreshed.
    pub fn is_usable(self) -> bool {
        matches!(self, Self::Healthy | Self::Refreshing)
    }
}

/// Refresh bookkeeping of an identity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RefreshState {
    /// When the tokens were last obtained (connect or refresh).
    pub refreshed_at: Millis,
    /// Distinct UTC days on which refreshing failed since the last success.
    pub failure_days: i64,
    /// The last such day, as days since the Unix epoch.
    pub last_failure_day: Option<i64>,
    /// No refresh is attempted before this time (backoff after a transient failure).
    pub next_attempt_at: Option<Millis>,
}

/// The tokens of one identity. Encrypted as a whole at rest.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenSet {
    pub access_token: Secret,
    #[serde(default)]
    pub refresh_token: Option<Secret>,
    /// When the access token expires; `None` when the provider gave no lifetime.
    #[serde(default)]
    pub expires_at: Option<Millis>,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Identity-level settings and values captured at connect time (a shop, an instance URL,
    /// a realm id), used to build URLs for this identity.
    #[serde(default)]
    pub values: BTreeMap<String, String>,
    /// Further tokens the provider issued besides the primary one (Slack's user token).
    #[serde(default)]
    pub named: BTreeMap<String, NamedToken>,
}

/// A token the provider issued besides the primary one.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NamedToken {
    pub access_token: Secret,
    #[serde(default)]
    pub refresh_token: Option<Secret>,
    #[serde(default)]
    pub expires_at: Option<Millis>,
}

/// One user's credential with one connector's service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub id: IdentityId,
    pub connector: ConnectorId,
    pub tenant: TenantId,
    /// The provider's id for the account (userinfo `sub`, or from the token response).
    pub subject: Option<String>,
    pub status: IdentityStatus,
    pub status_reason: Option<String>,
    pub status_at: Millis,
    pub tokens: TokenSet,
    pub refresh: RefreshState,
    pub meta: Meta,
}

/// One tenant's configured integration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Install {
    pub id: InstallId,
    pub integration: IntegrationId,
    pub tenant: TenantId,
    /// Connector names used in code, mapped to the identity this install uses for each.
    pub identities: BTreeMap<String, IdentityId>,
    pub meta: Meta,
}

/// Where a session is in the connect flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// The user has not finished every connector step.
    Pending,
    /// Every step has an identity; the session can be committed.
    Completed,
    /// The install exists.
    Committed,
    /// The user refused or a provider failed; see the error.
    Failed,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Completed => "completed",
            Self::Committed => "committed",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "completed" => Some(Self::Completed),
            "committed" => Some(Self::Committed),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// One connector the user must authorize during a session.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionStep {
    /// The connector's name in the integration's code.
    pub name: String,
    pub connector: ConnectorId,
    pub identity: Option<IdentityId>,
    /// Identity-level settings given at session creation or in the connect form.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, String>,
    /// On a reconnect, the identity this step re-authorizes (its id is kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnect: Option<IdentityId>,
}

/// Why a session failed, as the provider or Splice reported it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionError {
    pub code: String,
    pub description: String,
}

/// A connect flow that ends in an install once committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub id: SessionId,
    pub integration: IntegrationId,
    pub tenant: TenantId,
    pub redirect_url: String,
    pub status: SessionStatus,
    pub steps: Vec<SessionStep>,
    pub error: Option<SessionError>,
    pub install: Option<InstallId>,
    /// Whether this session re-authorizes the identities of an existing install (`install`).
    pub reconnect: bool,
    pub expires_at: Millis,
    pub meta: Meta,
}

impl Session {
    /// The first step still waiting for an identity.
    pub fn next_step(&self) -> Option<(usize, &SessionStep)> {
        self.steps
            .iter()
            .enumerate()
            .find(|(_, s)| s.identity.is_none())
    }
}

/// A pending authorization request, keyed by the hash of its `state`. Single use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthState {
    pub state_hash: String,
    pub session: SessionId,
    pub step: usize,
    pub connector: ConnectorId,
    pub pkce_verifier: Option<Secret>,
    pub expires_at: Millis,
}

/// One recorded invocation of an integration.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InvocationRecord {
    pub integration: IntegrationId,
    pub install: Option<String>,
    pub at: Millis,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub duration_us: i64,
    pub error: Option<String>,
    /// Captured console lines, as JSON objects (`level`, `message`, `at_ms`).
    pub logs: serde_json::Value,
}

/// Every type of [`Event`] Splice records.
pub const EVENT_TYPES: &[&str] = &[
    "identity.needs_reauth",
    "identity.refresh_failed",
    "identity.dead",
    "identity.recovered",
    "connector.misconfigured",
    "install.created",
    "install.reconnected",
    "install.deleted",
    "task.finished",
    "task.failed",
    "job.dead_lettered",
];

/// Something that happened, recorded for the application (`GET /v1/events`).
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub id: crate::EventId,
    /// Dotted name, e.g. `identity.needs_reauth`.
    pub kind: String,
    pub at: Millis,
    pub tenant: Option<TenantId>,
    /// The id of the entity it is about.
    pub subject: String,
    pub data: serde_json::Value,
}

impl Event {
    pub fn new(
        kind: &str,
        tenant: Option<TenantId>,
        subject: &str,
        data: serde_json::Value,
    ) -> Self {
        Self {
            id: crate::EventId::generate(),
            kind: kind.to_owned(),
            at: crate::now_millis(),
            tenant,
            subject: subject.to_owned(),
            data,
        }
    }
}

/// A URL the application registered to receive Splice's events, signed with its secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    /// `whk_` and 32 hex digits.
    pub id: String,
    pub url: String,
    /// Event types to deliver; empty means all.
    pub events: Vec<String>,
    pub secret: Secret,
    pub meta: Meta,
}
