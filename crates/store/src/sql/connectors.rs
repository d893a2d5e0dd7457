//! Connectors: their configuration as JSON, the client secret sealed in its own column.

use async_trait::async_trait;
use splice_domain::{
    Connector, ConnectorConfig, ConnectorId, Event, Millis, OAuth2Config, ProviderConfig, Secret,
};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{SqlStore, conflict_on_unique, from_json, read_meta, to_json};
use crate::{ConnectorStore, HookClaim, Result, StoreError};

fn webhook_context(id: &ConnectorId) -> String {
    format!("connector:{id}:webhook_secret")
}

fn hook_context(id: &ConnectorId, hook: &str) -> String {
    format!("connector:{id}:hook:{hook}")
}

fn secret_context(id: &ConnectorId) -> String {
    format!("connector:{id}:client_secret")
}

/// Splits a connector's config into the public JSON and the secret (empty when it has none).
fn split_config(config: &ConnectorConfig) -> (String, &str) {
    let mut json = match config {
        ConnectorConfig::OAuth2(oauth) => serde_json::to_value(oauth),
        ConnectorConfig::Provider(provider) => serde_json::to_value(provider),
    }
    .unwrap_or_default();
    if let Some(map) = json.as_object_mut() {
        map.remove("client_secret");
        if let Some(webhook) = map.get_mut("webhook").and_then(|w| w.as_object_mut()) {
            webhook.remove("secret");
        }
    }
    let secret = config
        .client_secret()
        .map(Secret::expose)
        .unwrap_or_default();
    (json.to_string(), secret)
}

impl SqlStore {
    fn seal_webhook(&self, connector: &Connector) -> Option<Vec<u8>> {
        let secret = connector.config.webhook_secret()?;
        Some(self.seal(&webhook_context(&connector.id), secret.expose().as_bytes()))
    }

    fn read_connector(&self, row: &AnyRow) -> Result<Connector> {
        let id = ConnectorId::parse(row.try_get("id")?)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let kind: String = row.try_get("kind")?;
        let sealed: Vec<u8> = row.try_get("client_secret")?;
        let secret = String::from_utf8(self.unseal(&secret_context(&id), &sealed)?)
            .map_err(|_| StoreError::Corrupt("client secret is not text".into()))?;

        let mut json: serde_json::Value = from_json(row.try_get("config")?, "connector config")?;
        if let Some(map) = json.as_object_mut()
            && !secret.is_empty()
        {
            map.insert("client_secret".into(), secret.into());
        }
        let sealed_webhook: Option<Vec<u8>> = row.try_get("webhook_secret")?;
        if let Some(sealed) = sealed_webhook {
            let plain = String::from_utf8(self.unseal(&webhook_context(&id), &sealed)?)
                .map_err(|_| StoreError::Corrupt("webhook secret is not text".into()))?;
            if let Some(webhook) = json.get_mut("webhook").and_then(|w| w.as_object_mut()) {
                webhook.insert("secret".into(), plain.into());
            }
        }
        let config = match kind.as_str() {
            "oauth2" => ConnectorConfig::OAuth2(
                serde_json::from_value::<OAuth2Config>(json)
                    .map_err(|e| StoreError::Corrupt(format!("connector config: {e}")))?,
            ),
            "provider" => ConnectorConfig::Provider(
                serde_json::from_value::<ProviderConfig>(json)
                    .map_err(|e| StoreError::Corrupt(format!("connector config: {e}")))?,
            ),
            other => {
                return Err(StoreError::Corrupt(format!(
                    "unknown connector kind {other:?}"
                )));
            }
        };
        let status: String = row.try_get("status")?;
        let misconfigured = match status.as_str() {
            "misconfigured" => Some(
                row.try_get::<Option<String>, _>("status_reason")?
                    .unwrap_or_default(),
            ),
            _ => None,
        };
        Ok(Connector {
            id,
            config,
            misconfigured,
            meta: read_meta(row)?,
        })
    }
}

#[async_trait]
impl ConnectorStore for SqlStore {
    async fn create_connector(&self, connector: &Connector) -> Result<()> {
        let (config, secret) = split_config(&connector.config);
        let sealed = self.seal(&secret_context(&connector.id), secret.as_bytes());
        sqlx::query(
            "INSERT INTO connectors (id, kind, config, client_secret, tags, created_at, \
             updated_at, version, webhook_secret) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(connector.id.as_str())
        .bind(connector.config.kind())
        .bind(config)
        .bind(sealed)
        .bind(to_json(&connector.meta.tags))
        .bind(connector.meta.created_at)
        .bind(connector.meta.updated_at)
        .bind(connector.meta.version)
        .bind(self.seal_webhook(connector))
        .execute(&self.pool)
        .await
        .map_err(|e| conflict_on_unique(e, format!("connector {}", connector.id)))?;
        Ok(())
    }

    async fn get_connector(&self, id: &ConnectorId) -> Result<Option<Connector>> {
        let row = sqlx::query("SELECT * FROM connectors WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| self.read_connector(&r)).transpose()
    }

    async fn list_connectors(&self) -> Result<Vec<Connector>> {
        let rows = sqlx::query("SELECT * FROM connectors ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| self.read_connector(r)).collect()
    }

    async fn update_connector(&self, connector: &Connector) -> Result<()> {
        let (config, secret) = split_config(&connector.config);
        let sealed = self.seal(&secret_context(&connector.id), secret.as_bytes());
        let done = sqlx::query(
            "UPDATE connectors SET kind = $1, config = $2, client_secret = $3, tags = $4, \
             updated_at = $5, version = $6, status = 'ok', status_reason = NULL, \
             webhook_secret = $9 WHERE id = $7 AND version = $8",
        )
        .bind(connector.config.kind())
        .bind(config)
        .bind(sealed)
        .bind(to_json(&connector.meta.tags))
        .bind(connector.meta.updated_at)
        .bind(connector.meta.version)
        .bind(connector.id.as_str())
        .bind(connector.meta.version - 1)
        .bind(self.seal_webhook(connector))
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::VersionMismatch(format!(
                "connector {}",
                connector.id
            )));
        }
        Ok(())
    }

    async fn set_connector_misconfigured(
        &self,
        id: &ConnectorId,
        reason: Option<&str>,
        event: &Event,
    ) -> Result<()> {
        let status = if reason.is_some() {
            "misconfigured"
        } else {
            "ok"
        };
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE connectors SET status = $1, status_reason = $2 WHERE id = $3")
            .bind(status)
            .bind(reason)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        super::events::insert_event(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_connector(&self, id: &ConnectorId) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM entity_tags WHERE kind = 'identity' AND entity_id IN \
             (SELECT id FROM identities WHERE connector_id = $1)",
        )
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query("DELETE FROM connectors WHERE id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    async fn open_hook(
        &self,
        connector: &ConnectorId,
        hook: &str,
        expires_at: Millis,
        now: Millis,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO hook_secrets (connector_id, hook, secret, expires_at, created_at) \
             VALUES ($1, $2, NULL, $3, $4) ON CONFLICT (connector_id, hook) DO NOTHING",
        )
        .bind(connector.as_str())
        .bind(hook)
        .bind(expires_at)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn add_hook_secret(
        &self,
        connector: &ConnectorId,
        hook: &str,
        secret: &Secret,
        now: Millis,
    ) -> Result<HookClaim> {
        let sealed = self.seal(&hook_context(connector, hook), secret.expose().as_bytes());
        let done = sqlx::query(
            "UPDATE hook_secrets SET secret = $1 WHERE connector_id = $2 AND hook = $3 \
             AND secret IS NULL AND expires_at >= $4",
        )
        .bind(sealed)
        .bind(connector.as_str())
        .bind(hook)
        .bind(now)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(HookClaim::Stored);
        }
        let taken = sqlx::query(
            "SELECT 1 AS taken FROM hook_secrets WHERE connector_id = $1 AND hook = $2 \
             AND secret IS NOT NULL",
        )
        .bind(connector.as_str())
        .bind(hook)
        .fetch_optional(&self.pool)
        .await?;
        Ok(if taken.is_some() {
            HookClaim::Taken
        } else {
            HookClaim::NotOpen
        })
    }

    async fn hook_secret(&self, connector: &ConnectorId, hook: &str) -> Result<Option<Secret>> {
        let row =
            sqlx::query("SELECT secret FROM hook_secrets WHERE connector_id = $1 AND hook = $2")
                .bind(connector.as_str())
                .bind(hook)
                .fetch_optional(&self.pool)
                .await?;
        let Some(sealed) = row
            .map(|r| r.try_get::<Option<Vec<u8>>, _>("secret"))
            .transpose()?
            .flatten()
        else {
            return Ok(None);
        };
        let plain = self.unseal(&hook_context(connector, hook), &sealed)?;
        let text = String::from_utf8(plain)
            .map_err(|_| StoreError::Corrupt("hook secret is not text".into()))?;
        Ok(Some(Secret::new(text)))
    }
}
