//! Identities: one user's credential with one connector, tokens sealed as one JSON value.

use async_trait::async_trait;
use splice_domain::{
    ConnectorId, Event, Identity, IdentityId, IdentityStatus, Millis, RefreshState, TagFilter,
    TenantId, TokenSet, now_millis,
};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::Dialect;
use super::{SqlStore, parse_column, read_meta, tag_clauses, to_json, write_tags};
use crate::{IdentityStore, RefreshGuard, Result, StoreError};

fn tokens_context(id: &IdentityId) -> String {
    format!("identity:{id}:tokens")
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

impl SqlStore {
    pub(super) fn read_identity(&self, row: &AnyRow) -> Result<Identity> {
        let id = IdentityId::parse(row.try_get("id")?).map_err(corrupt)?;
        let sealed: Vec<u8> = row.try_get("tokens")?;
        let tokens: TokenSet = serde_json::from_slice(&self.unseal(&tokens_context(&id), &sealed)?)
            .map_err(corrupt)?;
        let status: String = row.try_get("status")?;
        Ok(Identity {
            connector: ConnectorId::parse(row.try_get("connector_id")?).map_err(corrupt)?,
            tenant: TenantId::parse(row.try_get("tenant")?).map_err(corrupt)?,
            subject: row.try_get("subject")?,
            status: parse_column(&status, "identity status", IdentityStatus::parse)?,
            status_reason: row.try_get("status_reason")?,
            status_at: row.try_get("status_at")?,
            tokens,
            refresh: RefreshState {
                refreshed_at: row.try_get("refreshed_at")?,
                failure_days: row.try_get("failure_days")?,
                last_failure_day: row.try_get("last_failure_day")?,
                next_attempt_at: row.try_get("next_attempt_at")?,
            },
            meta: read_meta(row)?,
            id,
        })
    }

    pub(super) fn seal_tokens(&self, id: &IdentityId, tokens: &TokenSet) -> Vec<u8> {
        self.seal(&tokens_context(id), to_json(tokens).as_bytes())
    }

    /// Inserts a new identity inside the caller's transaction.
    pub(super) async fn insert_identity(
        &self,
        tx: &mut sqlx::AnyConnection,
        identity: &Identity,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO identities (id, connector_id, tenant, subject, status, status_reason, \
             status_at, tokens, expires_at, tags, created_at, updated_at, version, \
             has_refresh_token, refreshed_at, failure_days, last_failure_day, next_attempt_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
             $17, $18)",
        )
        .bind(identity.id.as_str())
        .bind(identity.connector.as_str())
        .bind(identity.tenant.as_str())
        .bind(&identity.subject)
        .bind(identity.status.as_str())
        .bind(&identity.status_reason)
        .bind(identity.status_at)
        .bind(self.seal_tokens(&identity.id, &identity.tokens))
        .bind(identity.tokens.expires_at)
        .bind(to_json(&identity.meta.tags))
        .bind(identity.meta.created_at)
        .bind(identity.meta.updated_at)
        .bind(identity.meta.version)
        .bind(i64::from(identity.tokens.refresh_token.is_some()))
        .bind(identity.refresh.refreshed_at)
        .bind(identity.refresh.failure_days)
        .bind(identity.refresh.last_failure_day)
        .bind(identity.refresh.next_attempt_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| super::conflict_on_unique(e, format!("identity {}", identity.id)))?;
        write_tags(tx, "identity", identity.id.as_str(), &identity.meta.tags).await
    }

    /// Rewrites an existing identity (tokens, subject, status, tags) with a version check,
    /// inside the caller's transaction.
    pub(super) async fn rewrite_identity(
        &self,
        tx: &mut sqlx::AnyConnection,
        identity: &Identity,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE identities SET subject = $1, status = $2, status_reason = $3, status_at = $4, \
             tokens = $5, expires_at = $6, tags = $7, updated_at = $8, version = $9, \
             has_refresh_token = $12, refreshed_at = $13, failure_days = $14, \
             last_failure_day = $15, next_attempt_at = $16 WHERE id = $10 AND version = $11",
        )
        .bind(&identity.subject)
        .bind(identity.status.as_str())
        .bind(&identity.status_reason)
        .bind(identity.status_at)
        .bind(self.seal_tokens(&identity.id, &identity.tokens))
        .bind(identity.tokens.expires_at)
        .bind(to_json(&identity.meta.tags))
        .bind(identity.meta.updated_at)
        .bind(identity.meta.version)
        .bind(identity.id.as_str())
        .bind(identity.meta.version - 1)
        .bind(i64::from(identity.tokens.refresh_token.is_some()))
        .bind(identity.refresh.refreshed_at)
        .bind(identity.refresh.failure_days)
        .bind(identity.refresh.last_failure_day)
        .bind(identity.refresh.next_attempt_at)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::VersionMismatch(format!(
                "identity {}",
                identity.id
            )));
        }
        write_tags(tx, "identity", identity.id.as_str(), &identity.meta.tags).await
    }
}

#[async_trait]
impl IdentityStore for SqlStore {
    async fn get_identity(&self, id: &IdentityId) -> Result<Option<Identity>> {
        let row = sqlx::query("SELECT * FROM identities WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| self.read_identity(&r)).transpose()
    }

    async fn find_identity_by_subject(
        &self,
        connector: &ConnectorId,
        tenant: &TenantId,
        subject: &str,
    ) -> Result<Option<Identity>> {
        let row = sqlx::query(
            "SELECT * FROM identities WHERE connector_id = $1 AND tenant = $2 AND subject = $3",
        )
        .bind(connector.as_str())
        .bind(tenant.as_str())
        .bind(subject)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| self.read_identity(&r)).transpose()
    }

    async fn list_identities(
        &self,
        connector: &ConnectorId,
        tenant: Option<&TenantId>,
        tags: &[TagFilter],
    ) -> Result<Vec<Identity>> {
        let sql = format!(
            "SELECT * FROM identities WHERE connector_id = $1 AND (CAST($2 AS TEXT) IS NULL OR tenant = $2){} \
             ORDER BY created_at DESC, id",
            tag_clauses("identity", "id", tags.len(), 3)
        );
        let tenant = tenant.map(TenantId::as_str);
        let mut query = sqlx::query(&sql).bind(connector.as_str()).bind(tenant);
        for filter in tags {
            query = query.bind(&filter.key).bind(&filter.value);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(|r| self.read_identity(r)).collect()
    }

    async fn identities_with_subjects(
        &self,
        connector: &ConnectorId,
        subjects: &[&str],
    ) -> Result<Vec<IdentityId>> {
        if subjects.is_empty() {
            return Ok(Vec::new());
        }
        let params: Vec<String> = (2..subjects.len() + 2).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT id FROM identities WHERE connector_id = $1 AND subject IN ({}) ORDER BY id",
            params.join(", ")
        );
        let mut query = sqlx::query_scalar::<_, String>(&sql).bind(connector.as_str());
        for subject in subjects {
            query = query.bind(*subject);
        }
        let ids = query.fetch_all(&self.pool).await?;
        ids.iter()
            .map(|id| IdentityId::parse(id).map_err(corrupt))
            .collect()
    }

    async fn update_tokens(
        &self,
        id: &IdentityId,
        expected_version: i64,
        tokens: &TokenSet,
    ) -> Result<Identity> {
        let now = now_millis();
        let row = sqlx::query(
            "UPDATE identities SET tokens = $1, expires_at = $2, status = 'healthy', \
             status_reason = NULL, status_at = CASE WHEN status = 'healthy' THEN status_at \
             ELSE $3 END, updated_at = $4, version = version + 1, has_refresh_token = $7, \
             refreshed_at = $4, failure_days = 0, last_failure_day = NULL, \
             next_attempt_at = NULL WHERE id = $5 AND version = $6 RETURNING *",
        )
        .bind(self.seal_tokens(id, tokens))
        .bind(tokens.expires_at)
        .bind(now)
        .bind(now)
        .bind(id.as_str())
        .bind(expected_version)
        .bind(i64::from(tokens.refresh_token.is_some()))
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => self.read_identity(&row),
            None => Err(StoreError::VersionMismatch(format!("identity {id}"))),
        }
    }

    async fn refresh_guard(&self, id: &IdentityId) -> Result<RefreshGuard> {
        if self.dialect() == Dialect::Sqlite {
            return Ok(RefreshGuard { tx: None });
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET LOCAL lock_timeout = '30s'")
            .execute(&mut *tx)
            .await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("identity-refresh:{id}"))
            .execute(&mut *tx)
            .await?;
        Ok(RefreshGuard { tx: Some(tx) })
    }

    async fn update_health(&self, identity: &Identity, event: Option<&Event>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE identities SET status = $1, status_reason = $2, status_at = $3, \
             updated_at = $4, version = $5, failure_days = $8, last_failure_day = $9, \
             next_attempt_at = $10 WHERE id = $6 AND version = $7",
        )
        .bind(identity.status.as_str())
        .bind(&identity.status_reason)
        .bind(identity.status_at)
        .bind(identity.meta.updated_at)
        .bind(identity.meta.version)
        .bind(identity.id.as_str())
        .bind(identity.meta.version - 1)
        .bind(identity.refresh.failure_days)
        .bind(identity.refresh.last_failure_day)
        .bind(identity.refresh.next_attempt_at)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::VersionMismatch(format!(
                "identity {}",
                identity.id
            )));
        }
        if let Some(event) = event {
            super::events::insert_event(&mut tx, event).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn identities_due(
        &self,
        expiring_before: Millis,
        stale_before: Millis,
        now: Millis,
        limit: u32,
    ) -> Result<Vec<IdentityId>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM identities WHERE status IN ('healthy', 'refreshing') \
             AND has_refresh_token = 1 \
             AND (expires_at < $1 OR refreshed_at < $2) \
             AND (next_attempt_at IS NULL OR next_attempt_at <= $3) \
             ORDER BY expires_at LIMIT $4",
        )
        .bind(expiring_before)
        .bind(stale_before)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        ids.iter()
            .map(|id| IdentityId::parse(id).map_err(corrupt))
            .collect()
    }

    async fn delete_identity(&self, id: &IdentityId) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM entity_tags WHERE kind = 'identity' AND entity_id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM identities WHERE id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }
}
