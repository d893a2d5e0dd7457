//! Outbound webhooks registered by the application, with their signing secrets sealed, and the
//! cursor of the event feed already turned into deliveries.

use async_trait::async_trait;
use splice_domain::{Secret, Webhook};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{SqlStore, from_json, read_meta, to_json};
use crate::{Result, StoreError, WebhookStore};

const CURSOR_KEY: &str = "webhook_delivery_cursor";

fn secret_context(id: &str) -> String {
    format!("webhook:{id}:secret")
}

impl SqlStore {
    fn read_webhook(&self, row: &AnyRow) -> Result<Webhook> {
        let id: String = row.try_get("id")?;
        let sealed: Vec<u8> = row.try_get("secret")?;
        let secret = String::from_utf8(self.unseal(&secret_context(&id), &sealed)?)
            .map_err(|_| StoreError::Corrupt("webhook secret is not text".into()))?;
        Ok(Webhook {
            url: row.try_get("url")?,
            events: from_json(row.try_get("events")?, "webhook events")?,
            secret: Secret::new(secret),
            meta: read_meta(row)?,
            id,
        })
    }
}

#[async_trait]
impl WebhookStore for SqlStore {
    async fn create_webhook(&self, webhook: &Webhook) -> Result<()> {
        sqlx::query(
            "INSERT INTO webhooks (id, url, events, secret, tags, created_at, updated_at, version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&webhook.id)
        .bind(&webhook.url)
        .bind(to_json(&webhook.events))
        .bind(self.seal(
            &secret_context(&webhook.id),
            webhook.secret.expose().as_bytes(),
        ))
        .bind(to_json(&webhook.meta.tags))
        .bind(webhook.meta.created_at)
        .bind(webhook.meta.updated_at)
        .bind(webhook.meta.version)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_webhook(&self, id: &str) -> Result<Option<Webhook>> {
        let row = sqlx::query("SELECT * FROM webhooks WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| self.read_webhook(&r)).transpose()
    }

    async fn list_webhooks(&self) -> Result<Vec<Webhook>> {
        let rows = sqlx::query("SELECT * FROM webhooks ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| self.read_webhook(r)).collect()
    }

    async fn delete_webhook(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM webhooks WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delivery_cursor(&self) -> Result<Option<String>> {
        let value = self.get_meta(CURSOR_KEY).await?;
        Ok(value.and_then(|v| String::from_utf8(v).ok()))
    }

    async fn set_delivery_cursor(&self, event_id: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(CURSOR_KEY)
        .bind(event_id.as_bytes().to_vec())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
