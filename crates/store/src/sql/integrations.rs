//! Integrations: source files, compiled bytecode and runtime settings.

use async_trait::async_trait;
use std::collections::BTreeMap;

use splice_domain::{ConnectorId, Integration, IntegrationId};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{SqlStore, from_json, read_meta, to_json};
use crate::{IntegrationStore, Result, StoreError, StoredProgram};

const COLUMNS: &str =
    "id, files, connectors, runtime, schedules, tags, created_at, updated_at, version";

fn read_integration(row: &AnyRow) -> Result<Integration> {
    let id =
        IntegrationId::parse(row.try_get("id")?).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(Integration {
        id,
        files: from_json(row.try_get("files")?, "files")?,
        connectors: from_json(row.try_get("connectors")?, "connectors")?,
        runtime: from_json(row.try_get("runtime")?, "runtime")?,
        schedules: from_json(row.try_get("schedules")?, "schedules")?,
        meta: read_meta(row)?,
    })
}

#[async_trait]
impl IntegrationStore for SqlStore {
    async fn put_integration(
        &self,
        integration: &Integration,
        bytecode: &[u8],
    ) -> Result<(Integration, bool)> {
        // The upsert keeps created_at and bumps version, so concurrent deploys serialize.
        let row = sqlx::query(&format!(
            "INSERT INTO integrations (id, files, bytecode, connectors, runtime, tags, \
             created_at, updated_at, version, schedules) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9) \
             ON CONFLICT (id) DO UPDATE SET files = excluded.files, \
             bytecode = excluded.bytecode, connectors = excluded.connectors, \
             runtime = excluded.runtime, tags = excluded.tags, schedules = excluded.schedules, \
             updated_at = excluded.updated_at, version = integrations.version + 1 \
             RETURNING {COLUMNS}"
        ))
        .bind(integration.id.as_str())
        .bind(to_json(&integration.files))
        .bind(bytecode)
        .bind(to_json(&integration.connectors))
        .bind(to_json(&integration.runtime))
        .bind(to_json(&integration.meta.tags))
        .bind(integration.meta.created_at)
        .bind(integration.meta.updated_at)
        .bind(to_json(&integration.schedules))
        .fetch_one(&self.pool)
        .await?;
        let stored = read_integration(&row)?;
        let created = stored.meta.version == 1;
        Ok((stored, created))
    }

    async fn get_integration(&self, id: &IntegrationId) -> Result<Option<Integration>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM integrations WHERE id = $1"))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| read_integration(&r)).transpose()
    }

    async fn get_program(&self, id: &IntegrationId) -> Result<Option<StoredProgram>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS}, bytecode FROM integrations WHERE id = $1"
        ))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(StoredProgram {
            integration: read_integration(&row)?,
            bytecode: row.try_get("bytecode")?,
        }))
    }

    async fn list_integrations(&self) -> Result<Vec<Integration>> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM integrations ORDER BY id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(read_integration).collect()
    }

    async fn integrations_using(
        &self,
        connector: &ConnectorId,
    ) -> Result<Vec<(IntegrationId, String)>> {
        let rows = sqlx::query("SELECT id, connectors FROM integrations ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        let mut using = Vec::new();
        for row in &rows {
            let connectors: BTreeMap<String, ConnectorId> =
                from_json(row.try_get("connectors")?, "connectors")?;
            if let Some((name, _)) = connectors.iter().find(|(_, id)| *id == connector) {
                let id = IntegrationId::parse(row.try_get("id")?)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                using.push((id, name.clone()));
            }
        }
        Ok(using)
    }

    async fn integration_version(&self, id: &IntegrationId) -> Result<Option<i64>> {
        let version = sqlx::query_scalar("SELECT version FROM integrations WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(version)
    }

    async fn scheduled_integrations(
        &self,
    ) -> Result<Vec<(IntegrationId, Vec<splice_domain::ScheduleSpec>, i64)>> {
        let rows = sqlx::query(
            "SELECT id, schedules, updated_at FROM integrations WHERE schedules <> '[]' ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let id = IntegrationId::parse(row.try_get("id")?)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let schedules = from_json(row.try_get("schedules")?, "schedules")?;
                Ok((id, schedules, row.try_get("updated_at")?))
            })
            .collect()
    }

    async fn schedule_slot(
        &self,
        integration: &IntegrationId,
        schedule: &str,
        install: &str,
    ) -> Result<Option<i64>> {
        let slot = sqlx::query_scalar(
            "SELECT last_slot FROM schedule_runs \
             WHERE integration_id = $1 AND schedule = $2 AND install_id = $3",
        )
        .bind(integration.as_str())
        .bind(schedule)
        .bind(install)
        .fetch_optional(&self.pool)
        .await?;
        Ok(slot)
    }

    async fn advance_schedule(
        &self,
        integration: &IntegrationId,
        schedule: &str,
        install: &str,
        slot: i64,
    ) -> Result<()> {
        // Never moves backwards: a slower node recording an older slot changes nothing.
        sqlx::query(
            "INSERT INTO schedule_runs (integration_id, schedule, install_id, last_slot) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (integration_id, schedule, install_id) \
             DO UPDATE SET last_slot = excluded.last_slot \
             WHERE schedule_runs.last_slot < excluded.last_slot",
        )
        .bind(integration.as_str())
        .bind(schedule)
        .bind(install)
        .bind(slot)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delete_integration(&self, id: &IntegrationId) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM entity_tags WHERE kind = 'install' AND entity_id IN \
             (SELECT id FROM installs WHERE integration_id = $1)",
        )
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query("DELETE FROM integrations WHERE id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }
}
