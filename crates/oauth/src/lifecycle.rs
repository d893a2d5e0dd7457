//! Keeping identities' access tokens fresh, and their health visible.
//!
//! Every use asks [`TokenManager::access_token`]. A token within the refresh margin of its
//! expiry is refreshed first; concurrent uses of one identity share that refresh (a lock per
//! identity in this process, then the store's cross-node guard, and the identity is re-read
//! after taking both); the write carries the version that was read, so a slower refresher can
//! never overwrite a newer token.
//!
//! Failures are classified: a rejected grant marks the identity `needs_reauth`; a rejected
//! client flags the connector, not its identities; an outage or rate limit is transient: the
//! identity backs off (protecting the provider) and counts the day, and only after
//! [`Lifecycle::dead_after_days`] failing days is it `dead`. Each transition is recorded as an
//! event in the same transaction. [`TokenManager::sweep`] refreshes identities about to expire
//! and exercises idle ones so their refresh tokens do not lapse.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use splice_domain::{
    Connector, ConnectorId, Event, Identity, IdentityId, IdentityStatus, Millis, NamedToken,
    Secret, TokenSet, now_millis,
};
use splice_store::{Store, StoreError};

use crate::client::{OAuthClient, ProviderRequest};
use crate::response::{self, TokenError};

const DAY_MS: Millis = 86_400_000;

/// Why no access token could be produced.
#[derive(Debug, thiserror::Error)]
pub enum TokenFailure {
    #[error("identity not found")]
    NotFound,
    /// The user must connect again; the reason says why.
    #[error("identity needs re-authorization: {0}")]
    NeedsReauth(String),
    /// The connector's client is misconfigured at the provider.
    #[error("connector rejected by the provider: {0}")]
    ConnectorMisconfigured(String),
    /// The provider could not be reached or failed; try again later.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Settings of the token lifecycle.
#[derive(Clone, Copy, Debug)]
pub struct Lifecycle {
    /// Refresh this long before a token expires.
    pub margin: Duration,
    /// An identity whose refreshes failed on this many distinct days is `dead`.
    pub dead_after_days: i64,
    /// Wait after a transient failure before asking the provider again; doubles with each
    /// failing day, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// The sweep refreshes identities whose tokens are older than this, so refresh tokens that
    /// lapse when unused stay alive.
    pub idle_refresh: Duration,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            margin: Duration::from_secs(300),
            dead_after_days: 5,
            backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(3600),
            idle_refresh: Duration::from_secs(24 * 3600),
        }
    }
}

/// How to reach a connector's token endpoint. The server implements it with the provider
/// catalog; hand-configured OAuth 2.0 connectors use [`ProviderRequest::generic`].
pub trait Endpoints: Send + Sync {
    /// The token request for a connector, with an identity's values (settings and captured
    /// fields) when the URLs depend on them.
    fn token_request(
        &self,
        connector: &Connector,
        values: &BTreeMap<String, String>,
    ) -> Result<TokenEndpoint, String>;
}

/// Endpoints of hand-configured OAuth 2.0 connectors only; catalog connectors are refused.
pub struct GenericEndpoints;

impl Endpoints for GenericEndpoints {
    fn token_request(
        &self,
        connector: &Connector,
        _values: &BTreeMap<String, String>,
    ) -> Result<TokenEndpoint, String> {
        match &connector.config {
            splice_domain::ConnectorConfig::OAuth2(config) => Ok(TokenEndpoint {
                request: ProviderRequest::generic(config),
                scopes: config.scopes.clone(),
                scope_separator: " ".into(),
            }),
            splice_domain::ConnectorConfig::Provider(p) => {
                Err(format!("provider {:?} needs the catalog", p.provider))
            }
        }
    }
}

/// A connector's token endpoint and the scopes a client-credentials grant asks for.
#[derive(Clone, Debug)]
pub struct TokenEndpoint {
    pub request: ProviderRequest,
    pub scopes: Vec<String>,
    pub scope_separator: String,
}

/// A connector's own token (client credentials), cached in this process.
#[derive(Clone, Debug)]
struct AppToken {
    token: Secret,
    expires_at: Option<Millis>,
    connector_version: i64,
}

/// What one sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub checked: usize,
    pub failed: usize,
}

/// Hands out fresh access tokens, refreshing them when needed.
pub struct TokenManager {
    store: Arc<dyn Store>,
    client: OAuthClient,
    endpoints: Arc<dyn Endpoints>,
    settings: Lifecycle,
    locks: Mutex<HashMap<IdentityId, Arc<tokio::sync::Mutex<()>>>>,
    app_tokens: tokio::sync::Mutex<HashMap<ConnectorId, AppToken>>,
    app_locks: Mutex<HashMap<ConnectorId, Arc<tokio::sync::Mutex<()>>>>,
}

fn millis(duration: Duration) -> Millis {
    Millis::try_from(duration.as_millis()).unwrap_or(Millis::MAX)
}

impl TokenManager {
    pub fn new(
        store: Arc<dyn Store>,
        client: OAuthClient,
        endpoints: Arc<dyn Endpoints>,
        settings: Lifecycle,
    ) -> Self {
        Self {
            store,
            client,
            endpoints,
            settings,
            locks: Mutex::default(),
            app_tokens: tokio::sync::Mutex::default(),
            app_locks: Mutex::default(),
        }
    }

    /// How long before its expiry an access token is refreshed.
    pub fn margin(&self) -> Duration {
        self.settings.margin
    }

    /// The connector's own access token (client credentials), minted on first use, cached,
    /// and minted again within the margin of its expiry. Concurrent callers share one mint.
    pub async fn app_token(&self, connector: &Connector) -> Result<Secret, TokenFailure> {
        if let Some(reason) = &connector.misconfigured {
            return Err(TokenFailure::ConnectorMisconfigured(reason.clone()));
        }
        if let Some(token) = self.cached_app_token(connector).await {
            return Ok(token);
        }
        // One mint per connector at a time; other connectors are not held up.
        let lock = {
            let mut locks = self.app_locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(connector.id.clone()).or_default().clone()
        };
        let _minting = lock.lock().await;
        if let Some(token) = self.cached_app_token(connector).await {
            return Ok(token);
        }
        let endpoint = self
            .endpoints
            .token_request(connector, &BTreeMap::new())
            .map_err(TokenFailure::ConnectorMisconfigured)?;
        let minted = self
            .client
            .client_credentials_with(
                &endpoint.request,
                &endpoint.scopes,
                &endpoint.scope_separator,
            )
            .await;
        match minted {
            Ok(set) => {
                let token = set.token.access_token;
                let entry = AppToken {
                    token: token.clone(),
                    expires_at: set.token.expires_at,
                    connector_version: connector.meta.version,
                };
                self.app_tokens
                    .lock()
                    .await
                    .insert(connector.id.clone(), entry);
                tracing::info!(connector.id = %connector.id, "client-credentials token minted");
                Ok(token)
            }
            Err(
                TokenError::Misconfigured { error, description }
                | TokenError::Rejected { error, description },
            ) => {
                self.app_tokens.lock().await.remove(&connector.id);
                Err(TokenFailure::ConnectorMisconfigured(format!(
                    "{error}: {description}"
                )))
            }
            Err(TokenError::Transient(reason) | TokenError::Invalid(reason)) => {
                Err(TokenFailure::Unavailable(reason))
            }
        }
    }

    async fn cached_app_token(&self, connector: &Connector) -> Option<Secret> {
        let cache = self.app_tokens.lock().await;
        let cached = cache.get(&connector.id)?;
        let fresh = !self.needs_refresh_at(cached.expires_at, now_millis());
        (fresh && cached.connector_version == connector.meta.version).then(|| cached.token.clone())
    }

    /// The identity with an access token valid for at least the margin, refreshing first when
    /// needed. `force` refreshes even a token that looks valid (the provider answered 401).
    pub async fn access_token(
        &self,
        id: &IdentityId,
        force: bool,
    ) -> Result<Identity, TokenFailure> {
        let seen = self.load(id).await?;
        let now = now_millis();
        if !force && !self.needs_refresh(&seen.tokens, now) {
            return Ok(seen);
        }
        if seen.refresh.next_attempt_at.is_some_and(|at| at > now) {
            return usable_or_unavailable(seen, "backing off after a failed refresh");
        }

        // One refresher per identity in this process, then one across nodes.
        let lock = self.lock_for(id);
        let local = lock.lock().await;
        let result = match self.store.refresh_guard(id).await {
            Ok(guard) => {
                let result = self.refresh_locked(id, &seen, force).await;
                guard.release().await;
                result
            }
            Err(err) => Err(err.into()),
        };
        drop(local);
        self.release_lock(id, lock);
        result
    }

    /// Refreshes identities about to expire and exercises those whose tokens are older than
    /// the idle period. Call it periodically, at most every `interval`.
    pub async fn sweep(&self, interval: Duration) -> Result<SweepReport, StoreError> {
        let now = now_millis();
        let expiring_before = now + millis(self.settings.margin) + millis(interval);
        let stale_before = now - millis(self.settings.idle_refresh);
        let due = self
            .store
            .identities_due(expiring_before, stale_before, now, 500)
            .await?;

        let mut report = SweepReport::default();
        for id in due {
            report.checked += 1;
            let stale = match self.store.get_identity(&id).await? {
                Some(identity) => identity.refresh.refreshed_at < stale_before,
                None => continue,
            };
            if let Err(err) = self.access_token(&id, stale).await {
                report.failed += 1;
                tracing::debug!(identity.id = %id, error = %err, "sweep could not refresh");
            }
        }
        Ok(report)
    }

    async fn load(&self, id: &IdentityId) -> Result<Identity, TokenFailure> {
        let identity = self
            .store
            .get_identity(id)
            .await?
            .ok_or(TokenFailure::NotFound)?;
        if !identity.status.is_usable() {
            let reason = identity.status_reason.clone().unwrap_or_default();
            return Err(TokenFailure::NeedsReauth(reason));
        }
        Ok(identity)
    }

    fn needs_refresh(&self, tokens: &TokenSet, now: Millis) -> bool {
        self.needs_refresh_at(tokens.expires_at, now)
    }

    fn needs_refresh_at(&self, expires_at: Option<Millis>, now: Millis) -> bool {
        let margin = millis(self.settings.margin);
        expires_at.is_some_and(|at| at.saturating_sub(margin) <= now)
    }

    /// Runs under the identity's locks: re-reads, and refreshes only if nobody else just did.
    async fn refresh_locked(
        &self,
        id: &IdentityId,
        seen: &Identity,
        force: bool,
    ) -> Result<Identity, TokenFailure> {
        let current = self.load(id).await?;
        let refreshed_meanwhile = current.tokens != seen.tokens;
        if refreshed_meanwhile || (!force && !self.needs_refresh(&current.tokens, now_millis())) {
            return Ok(current);
        }
        if current
            .refresh
            .next_attempt_at
            .is_some_and(|at| at > now_millis())
        {
            return usable_or_unavailable(current, "backing off after a failed refresh");
        }

        let Some(refresh_token) = current.tokens.refresh_token.clone() else {
            return self.without_refresh_token(current, force).await;
        };
        let connector = self
            .store
            .get_connector(&current.connector)
            .await?
            .ok_or_else(|| TokenFailure::ConnectorMisconfigured("connector was deleted".into()))?;
        if let Some(reason) = &connector.misconfigured {
            // The client was rejected: asking again for every identity would only hammer the
            // provider. Updating the connector clears this.
            return Err(TokenFailure::ConnectorMisconfigured(reason.clone()));
        }
        let endpoint = self
            .endpoints
            .token_request(&connector, &current.tokens.values)
            .map_err(TokenFailure::ConnectorMisconfigured)?;

        let current = self.mark_refreshing(current).await?;
        tracing::debug!(identity.id = %id, "refreshing access token");
        match self
            .client
            .refresh_with(&endpoint.request, &refresh_token)
            .await
        {
            Ok(response) => self.store_refreshed(current, response).await,
            Err(err) => self.refresh_failed(current, err).await,
        }
    }

    /// Shows the refresh in flight on the identity.
    async fn mark_refreshing(&self, identity: Identity) -> Result<Identity, TokenFailure> {
        if identity.status == IdentityStatus::Refreshing {
            return Ok(identity);
        }
        let next = with_status(identity, IdentityStatus::Refreshing, None);
        self.store.update_health(&next, None).await?;
        Ok(next)
    }

    /// Merges a refresh response into the stored tokens (keeping the old refresh token and
    /// scopes when the provider sent none) and writes it with a version check.
    async fn store_refreshed(
        &self,
        current: Identity,
        response: response::TokenSet,
    ) -> Result<Identity, TokenFailure> {
        let tokens = merge(&current.tokens, response);
        let recovered = current.refresh.failure_days > 0;
        match self
            .store
            .update_tokens(&current.id, current.meta.version, &tokens)
            .await
        {
            Ok(written) => {
                tracing::info!(identity.id = %current.id, "access token refreshed");
                if recovered {
                    self.record(&written, "identity.recovered", json!({})).await;
                }
                Ok(written)
            }
            // Another writer stored a newer token after we read: theirs wins.
            Err(StoreError::VersionMismatch(_)) => self.load(&current.id).await,
            Err(err) => Err(err.into()),
        }
    }

    async fn refresh_failed(
        &self,
        current: Identity,
        err: TokenError,
    ) -> Result<Identity, TokenFailure> {
        match err {
            TokenError::Rejected { error, description } => {
                let reason = format!("{error}: {description}");
                tracing::warn!(identity.id = %current.id, %error, "refresh rejected; identity needs re-authorization");
                self.set_unusable(current, IdentityStatus::NeedsReauth, &reason)
                    .await?;
                Err(TokenFailure::NeedsReauth(reason))
            }
            TokenError::Misconfigured { error, description } => {
                let reason = format!("{error}: {description}");
                tracing::error!(connector.id = %current.connector, %error, "provider rejected the connector's client");
                let event = Event::new(
                    "connector.misconfigured",
                    None,
                    current.connector.as_str(),
                    json!({"connector": current.connector, "reason": reason}),
                );
                self.store
                    .set_connector_misconfigured(&current.connector, Some(&reason), &event)
                    .await?;
                let healthy = with_status(current, IdentityStatus::Healthy, None);
                ignore_lost_race(self.store.update_health(&healthy, None).await)?;
                Err(TokenFailure::ConnectorMisconfigured(reason))
            }
            TokenError::Transient(reason) | TokenError::Invalid(reason) => {
                tracing::warn!(identity.id = %current.id, %reason, "refresh failed");
                let current = self.count_failure(current, &reason).await?;
                usable_or_unavailable(current, &reason)
            }
        }
    }

    /// Records a transient failure: counts the day, backs off, and after too many failing
    /// days declares the identity dead.
    async fn count_failure(
        &self,
        identity: Identity,
        reason: &str,
    ) -> Result<Identity, TokenFailure> {
        let now = now_millis();
        let today = now / DAY_MS;
        let mut next = with_status(identity, IdentityStatus::Healthy, None);
        let new_day = next.refresh.last_failure_day != Some(today);
        if new_day {
            next.refresh.failure_days += 1;
            next.refresh.last_failure_day = Some(today);
        }
        let doublings = u32::try_from(next.refresh.failure_days.saturating_sub(1))
            .unwrap_or(u32::MAX)
            .min(16);
        let backoff = self
            .settings
            .backoff
            .saturating_mul(1 << doublings)
            .min(self.settings.max_backoff);
        next.refresh.next_attempt_at = Some(now + millis(backoff));

        let data = json!({"connector": next.connector, "reason": reason, "failure_days": next.refresh.failure_days});
        let event = if next.refresh.failure_days >= self.settings.dead_after_days {
            next.status = IdentityStatus::Dead;
            next.status_reason = Some(format!(
                "refreshing failed on {} days; last: {reason}",
                next.refresh.failure_days
            ));
            next.status_at = now;
            Some(self.event(&next, "identity.dead", data))
        } else if new_day {
            Some(self.event(&next, "identity.refresh_failed", data))
        } else {
            None
        };
        ignore_lost_race(self.store.update_health(&next, event.as_ref()).await)?;
        Ok(next)
    }

    async fn without_refresh_token(
        &self,
        current: Identity,
        force: bool,
    ) -> Result<Identity, TokenFailure> {
        let expired = current
            .tokens
            .expires_at
            .is_some_and(|at| at <= now_millis());
        if !force && !expired {
            return Ok(current);
        }
        let reason = if force {
            "the provider rejected the access token and there is no refresh token"
        } else {
            "the access token expired and there is no refresh token"
        };
        self.set_unusable(current, IdentityStatus::NeedsReauth, reason)
            .await?;
        Err(TokenFailure::NeedsReauth(reason.into()))
    }

    async fn set_unusable(
        &self,
        identity: Identity,
        status: IdentityStatus,
        reason: &str,
    ) -> Result<(), TokenFailure> {
        let next = with_status(identity, status, Some(reason));
        let kind = format!("identity.{}", status.as_str());
        let event = self.event(
            &next,
            &kind,
            json!({"connector": next.connector, "reason": reason}),
        );
        ignore_lost_race(self.store.update_health(&next, Some(&event)).await)
    }

    fn event(&self, identity: &Identity, kind: &str, data: serde_json::Value) -> Event {
        Event::new(
            kind,
            Some(identity.tenant.clone()),
            identity.id.as_str(),
            data,
        )
    }

    async fn record(&self, identity: &Identity, kind: &str, data: serde_json::Value) {
        if let Err(err) = self
            .store
            .record_event(&self.event(identity, kind, data))
            .await
        {
            tracing::warn!(error = %err, kind, "could not record an event");
        }
    }

    fn lock_for(&self, id: &IdentityId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(id.clone()).or_default().clone()
    }

    fn release_lock(&self, id: &IdentityId, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        drop(lock);
        // Only the map holds it now: nobody is waiting, so forget it.
        if locks.get(id).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(id);
        }
    }
}

/// The identity at its next version with a new status (and reason, for unusable ones).
fn with_status(mut identity: Identity, status: IdentityStatus, reason: Option<&str>) -> Identity {
    let now = now_millis();
    if identity.status != status {
        identity.status_at = now;
    }
    identity.status = status;
    identity.status_reason = reason.map(str::to_owned);
    identity.meta.updated_at = now;
    identity.meta.version += 1;
    identity
}

/// A newer write (a fresh token from another refresher) makes a health update moot.
fn ignore_lost_race(result: Result<(), StoreError>) -> Result<(), TokenFailure> {
    match result {
        Ok(()) | Err(StoreError::VersionMismatch(_)) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// A token that has not expired yet still works while the provider is unavailable.
fn usable_or_unavailable(identity: Identity, reason: &str) -> Result<Identity, TokenFailure> {
    let still_valid = identity
        .tokens
        .expires_at
        .is_none_or(|at| at > now_millis());
    if still_valid && identity.status.is_usable() {
        Ok(identity)
    } else if identity.status.is_usable() {
        Err(TokenFailure::Unavailable(reason.to_owned()))
    } else {
        Err(TokenFailure::NeedsReauth(
            identity.status_reason.unwrap_or_default(),
        ))
    }
}

/// Applies a refresh response to stored tokens (RFC 6749 section 6: an omitted refresh token
/// means keep the old one). Captured values and named tokens are merged the same way.
pub fn merge(old: &TokenSet, response: response::TokenSet) -> TokenSet {
    let token = response.token;
    let mut values = old.values.clone();
    values.extend(response.captured);
    let mut named = old.named.clone();
    for (name, fresh) in response.tokens {
        let kept = named.get(&name).and_then(|t| t.refresh_token.clone());
        named.insert(
            name,
            NamedToken {
                access_token: fresh.access_token,
                refresh_token: fresh.refresh_token.or(kept),
                expires_at: fresh.expires_at,
            },
        );
    }
    TokenSet {
        access_token: token.access_token,
        refresh_token: token.refresh_token.or_else(|| old.refresh_token.clone()),
        expires_at: token.expires_at,
        scopes: token.scopes.unwrap_or_else(|| old.scopes.clone()),
        values,
        named,
    }
}

/// Stored tokens from a first token response (code exchange), with identity-level values.
pub fn first_tokens(
    response: response::TokenSet,
    mut values: BTreeMap<String, String>,
) -> TokenSet {
    values.extend(response.captured);
    let named = response
        .tokens
        .into_iter()
        .map(|(name, t)| {
            let token = NamedToken {
                access_token: t.access_token,
                refresh_token: t.refresh_token,
                expires_at: t.expires_at,
            };
            (name, token)
        })
        .collect();
    let token = response.token;
    TokenSet {
        access_token: token.access_token,
        refresh_token: token.refresh_token,
        expires_at: token.expires_at,
        scopes: token.scopes.unwrap_or_default(),
        values,
        named,
    }
}

#[cfg(test)]
mod tests;
