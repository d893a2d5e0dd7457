//! The invocation log: appended in batches off the request path, listed newest first.

use async_trait::async_trait;
use splice_domain::{IntegrationId, InvocationRecord};
use sqlx::Row;

use super::{SqlStore, from_json};
use crate::{InvocationQuery, InvocationStore, Result, StoreError};

/// Columns bound per invocation row.
const COLUMNS: usize = 9;
/// Rows per INSERT, well under SQLite's and PostgreSQL's parameter limits.
const ROWS_PER_INSERT: usize = 500;

#[async_trait]
impl InvocationStore for SqlStore {
    async fn record_invocations(&self, records: &[InvocationRecord]) -> Result<()> {
        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        // One multi-row statement per chunk: a burst of invocations costs a few round trips.
        for chunk in records.chunks(ROWS_PER_INSERT) {
            let sql = format!(
                "INSERT INTO invocations (integration_id, install_id, at, method, path, status, \
                 duration_us, error, logs) VALUES {}",
                self.dialect().value_rows(chunk.len(), COLUMNS, "")
            );
            let mut query = sqlx::query(&sql);
            for r in chunk {
                query = query
                    .bind(r.integration.as_str())
                    .bind(&r.install)
                    .bind(r.at)
                    .bind(&r.method)
                    .bind(&r.path)
                    .bind(i64::from(r.status))
                    .bind(r.duration_us)
                    .bind(&r.error)
                    .bind(r.logs.to_string());
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_invocations(
        &self,
        integration: &IntegrationId,
        query: &InvocationQuery,
    ) -> Result<Vec<InvocationRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM invocations WHERE integration_id = $1 \
             AND (CAST($2 AS TEXT) IS NULL OR install_id = $2) \
             AND (CAST($3 AS BIGINT) IS NULL OR at >= $3) \
             AND (CAST($4 AS BIGINT) IS NULL OR at < $4) ORDER BY at DESC, seq DESC LIMIT $5",
        )
        .bind(integration.as_str())
        .bind(&query.install)
        .bind(query.since)
        .bind(query.until)
        .bind(i64::from(query.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let status: i64 = row.try_get("status")?;
                Ok(InvocationRecord {
                    integration: integration.clone(),
                    install: row.try_get("install_id")?,
                    at: row.try_get("at")?,
                    method: row.try_get("method")?,
                    path: row.try_get("path")?,
                    status: u16::try_from(status)
                        .map_err(|_| StoreError::Corrupt(format!("status {status}")))?,
                    duration_us: row.try_get("duration_us")?,
                    error: row.try_get("error")?,
                    logs: from_json(row.try_get("logs")?, "invocation logs")?,
                })
            })
            .collect()
    }
}
