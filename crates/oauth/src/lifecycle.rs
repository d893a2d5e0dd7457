//! Keeping identities' access tokens fresh.
//!
//! Every use asks [`TokenManager::access_token`]. A token within the refresh margin of its
//! expiry is refreshed first; concurrent uses of one identity share that refresh (a lock per
//! identity in this process, then the store's cross-node guard, and the identity is re-read
//! after taking both); the write carries the version that was read, so a slower refresher can
//! never overwrite a newer token. A rejected grant marks
//! the identity `needs_reauth` rather than deleting anything.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use splice_domain::{
    ConnectorConfig, Identity, IdentityId, IdentityStatus, Millis, TokenSet, now_millis,
};
use splice_store::{Store, StoreError};

use crate::client::OAuthClient;
use crate::response::{TokenError, TokenResponse};

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

/// Hands out fresh access tokens, refreshing them when needed.
pub struct TokenManager {
    store: Arc<dyn Store>,
    client: OAuthClient,
    margin: Duration,
    locks: Mutex<HashMap<IdentityId, Arc<tokio::sync::Mutex<()>>>>,
}

impl TokenManager {
    /// `margin` is how long before expiry a token is refreshed.
    pub fn new(store: Arc<dyn Store>, client: OAuthClient, margin: Duration) -> Self {
        Self {
            store,
            client,
            margin,
            locks: Mutex::default(),
        }
    }

    /// The identity with an access token valid for at least the margin, refreshing first when
    /// needed. `force` refreshes even a token that looks valid (the provider answered 401).
    pub async fn access_token(
        &self,
        id: &IdentityId,
        force: bool,
    ) -> Result<Identity, TokenFailure> {
        let seen = self.load(id).await?;
        if !force && !self.needs_refresh(&seen.tokens, now_millis()) {
            return Ok(seen);
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

    async fn load(&self, id: &IdentityId) -> Result<Identity, TokenFailure> {
        let identity = self
            .store
            .get_identity(id)
            .await?
            .ok_or(TokenFailure::NotFound)?;
        if identity.status == IdentityStatus::NeedsReauth {
            let reason = identity.status_reason.clone().unwrap_or_default();
            return Err(TokenFailure::NeedsReauth(reason));
        }
        Ok(identity)
    }

    fn needs_refresh(&self, tokens: &TokenSet, now: Millis) -> bool {
        let margin = Millis::try_from(self.margin.as_millis()).unwrap_or(Millis::MAX);
        tokens
            .expires_at
            .is_some_and(|at| at.saturating_sub(margin) <= now)
    }

    /// Runs under the identity's lock: re-reads, and refreshes only if nobody else just did.
    async fn refresh_locked(
        &self,
        id: &IdentityId,
        seen: &Identity,
        force: bool,
    ) -> Result<Identity, TokenFailure> {
        let current = self.load(id).await?;
        let refreshed_meanwhile = current.meta.version != seen.meta.version;
        if refreshed_meanwhile || (!force && !self.needs_refresh(&current.tokens, now_millis())) {
            return Ok(current);
        }

        let Some(refresh_token) = current.tokens.refresh_token.clone() else {
            return self.without_refresh_token(current, force).await;
        };
        let connector = self
            .store
            .get_connector(&current.connector)
            .await?
            .ok_or_else(|| TokenFailure::ConnectorMisconfigured("connector was deleted".into()))?;
        let ConnectorConfig::OAuth2(config) = &connector.config;

        tracing::debug!(identity.id = %id, "refreshing access token");
        match self.client.refresh(config, &refresh_token).await {
            Ok(response) => self.store_refreshed(current, response).await,
            Err(err) => self.refresh_failed(current, err).await,
        }
    }

    /// Merges a refresh response into the stored tokens (keeping the old refresh token and
    /// scopes when the provider sent none) and writes it with a version check.
    async fn store_refreshed(
        &self,
        current: Identity,
        response: TokenResponse,
    ) -> Result<Identity, TokenFailure> {
        let tokens = merge(&current.tokens, response);
        match self
            .store
            .update_tokens(&current.id, current.meta.version, &tokens)
            .await
        {
            Ok(written) => {
                tracing::info!(identity.id = %current.id, "access token refreshed");
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
                self.mark_needs_reauth(current, &reason).await?;
                Err(TokenFailure::NeedsReauth(reason))
            }
            TokenError::Misconfigured { error, description } => {
                tracing::error!(connector.id = %current.connector, %error, "provider rejected the connector's client");
                Err(TokenFailure::ConnectorMisconfigured(format!(
                    "{error}: {description}"
                )))
            }
            TokenError::Transient(reason) | TokenError::Invalid(reason) => {
                tracing::warn!(identity.id = %current.id, %reason, "refresh failed");
                // A token inside the margin but not yet expired still works: use it.
                let still_valid = current
                    .tokens
                    .expires_at
                    .is_some_and(|at| at > now_millis());
                if still_valid {
                    return Ok(current);
                }
                Err(TokenFailure::Unavailable(reason))
            }
        }
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
        self.mark_needs_reauth(current, reason).await?;
        Err(TokenFailure::NeedsReauth(reason.into()))
    }

    async fn mark_needs_reauth(
        &self,
        mut identity: Identity,
        reason: &str,
    ) -> Result<(), TokenFailure> {
        let now = now_millis();
        identity.status = IdentityStatus::NeedsReauth;
        identity.status_reason = Some(reason.to_owned());
        identity.status_at = now;
        identity.meta.updated_at = now;
        identity.meta.version += 1;
        match self.store.update_status(&identity).await {
            // A newer write (a fresh token) makes this failure moot.
            Ok(()) | Err(StoreError::VersionMismatch(_)) => Ok(()),
            Err(err) => Err(err.into()),
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

/// Applies a refresh response to stored tokens (RFC 6749 section 6: an omitted refresh token
/// means keep the old one).
pub fn merge(old: &TokenSet, response: TokenResponse) -> TokenSet {
    TokenSet {
        access_token: response.access_token,
        refresh_token: response.refresh_token.or_else(|| old.refresh_token.clone()),
        expires_at: response.expires_at,
        scopes: response.scopes.unwrap_or_else(|| old.scopes.clone()),
    }
}

#[cfg(test)]
mod tests;
