//! Installs and the identities each one uses.

use std::collections::BTreeMap;

use async_trait::async_trait;
use splice_domain::{IdentityId, Install, InstallId, IntegrationId, TagFilter, TenantId};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{SqlStore, read_meta, tag_clauses, to_json, write_tags};
use crate::{InstallStore, Result, StoreError};

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

impl SqlStore {
    async fn read_install(&self, row: &AnyRow) -> Result<Install> {
        let id = InstallId::parse(row.try_get("id")?).map_err(corrupt)?;
        let links: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, identity_id FROM install_identities WHERE install_id = $1 ORDER BY name",
        )
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await?;
        let mut identities = BTreeMap::new();
        for (name, identity) in links {
            identities.insert(name, IdentityId::parse(&identity).map_err(corrupt)?);
        }
        Ok(Install {
            integration: IntegrationId::parse(row.try_get("integration_id")?).map_err(corrupt)?,
            tenant: TenantId::parse(row.try_get("tenant")?).map_err(corrupt)?,
            identities,
            meta: read_meta(row)?,
            id,
        })
    }

    /// Inserts an install with its identity links inside the caller's transaction.
    pub(super) async fn insert_install(
        &self,
        tx: &mut sqlx::AnyConnection,
        install: &Install,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO installs (id, integration_id, tenant, tags, created_at, updated_at, \
             version) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(install.id.as_str())
        .bind(install.integration.as_str())
        .bind(install.tenant.as_str())
        .bind(to_json(&install.meta.tags))
        .bind(install.meta.created_at)
        .bind(install.meta.updated_at)
        .bind(install.meta.version)
        .execute(&mut *tx)
        .await?;
        for (name, identity) in &install.identities {
            sqlx::query(
                "INSERT INTO install_identities (install_id, name, identity_id) VALUES ($1, $2, $3)",
            )
            .bind(install.id.as_str())
            .bind(name)
            .bind(identity.as_str())
            .execute(&mut *tx)
            .await?;
        }
        write_tags(tx, "install", install.id.as_str(), &install.meta.tags).await
    }
}

#[async_trait]
impl InstallStore for SqlStore {
    async fn get_install(&self, id: &InstallId) -> Result<Option<Install>> {
        let row = sqlx::query("SELECT * FROM installs WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => Ok(Some(self.read_install(&row).await?)),
            None => Ok(None),
        }
    }

    async fn list_installs(
        &self,
        integration: &IntegrationId,
        tenant: Option<&TenantId>,
        tags: &[TagFilter],
    ) -> Result<Vec<Install>> {
        let sql = format!(
            "SELECT * FROM installs WHERE integration_id = $1 AND (CAST($2 AS TEXT) IS NULL OR tenant = $2){} \
             ORDER BY created_at DESC, id",
            tag_clauses("install", "id", tags.len(), 3)
        );
        let tenant = tenant.map(TenantId::as_str);
        let mut query = sqlx::query(&sql).bind(integration.as_str()).bind(tenant);
        for filter in tags {
            query = query.bind(&filter.key).bind(&filter.value);
        }
        let rows = query.fetch_all(&self.pool).await?;
        let mut installs = Vec::with_capacity(rows.len());
        for row in &rows {
            installs.push(self.read_install(row).await?);
        }
        Ok(installs)
    }

    async fn installs_using(&self, identity: &IdentityId) -> Result<Vec<InstallId>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT install_id FROM install_identities WHERE identity_id = $1 ORDER BY install_id",
        )
        .bind(identity.as_str())
        .fetch_all(&self.pool)
        .await?;
        ids.iter()
            .map(|id| InstallId::parse(id).map_err(corrupt))
            .collect()
    }

    async fn delete_install(&self, id: &InstallId) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM entity_tags WHERE kind = 'install' AND entity_id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM installs WHERE id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }
}
