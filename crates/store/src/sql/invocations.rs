//! The invocation log: appended in batches off the request path, listed newest first.

use async_trait::async_trait;
use splice_domain::{IntegrationId, InvocationRecord};
use sqlx::Row;

use super::{Dialect, SqlStore, from_json};
use crate::{InvocationQuery, InvocationStore, Result, StoreError};

/// Columns bound per invocation row.
const COLUMNS: usize = 9;

/// The most rows one `INSERT` writes, a power of two.
///
/// SQLite runs a statement on its connection's thread in one go, on cores the request
/// threads share: a statement of hundreds of rows held a core for a millisecond or two, and a
/// request arriving then waited for it. Short statements leave gaps between them. PostgreSQL
/// does the work in its own processes, so there fewer round trips matter more.
fn largest_insert(dialect: Dialect) -> usize {
    match dialect {
        Dialect::Sqlite => 32,
        Dialect::Postgres => 512,
    }
}

/// Splits `rows` into runs whose lengths are powers of two no larger than `largest`, longest
/// first: every statement then has one of a few shapes, each prepared once per connection
/// and reused.
fn power_of_two_runs<T>(rows: &[T], largest: usize) -> impl Iterator<Item = &[T]> {
    debug_assert!(largest.is_power_of_two());
    let mut rest = rows;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let fits = 1 << rest.len().ilog2();
        let (run, tail) = rest.split_at(fits.min(largest));
        rest = tail;
        Some(run)
    })
}

#[async_trait]
impl InvocationStore for SqlStore {
    async fn record_invocations(&self, records: &[InvocationRecord]) -> Result<()> {
        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        for chunk in power_of_two_runs(records, largest_insert(self.dialect())) {
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

#[cfg(test)]
mod tests {
    use super::power_of_two_runs;

    fn lengths(rows: usize, largest: usize) -> Vec<usize> {
        let rows: Vec<usize> = (0..rows).collect();
        let runs: Vec<&[usize]> = power_of_two_runs(&rows, largest).collect();
        // The runs cover the rows in order, each once.
        assert_eq!(runs.concat(), rows);
        runs.iter().map(|run| run.len()).collect()
    }

    #[test]
    fn rows_are_written_in_runs_of_a_few_shapes() {
        let mut expected = vec![32; 11];
        expected.extend([16, 8, 4]);
        assert_eq!(lengths(380, 32), expected);
        assert_eq!(lengths(5, 32), vec![4, 1]);
        assert_eq!(lengths(64, 32), vec![32, 32]);
        assert_eq!(lengths(1, 512), vec![1]);
        assert_eq!(lengths(1000, 512), vec![512, 256, 128, 64, 32, 8]);
        assert!(lengths(0, 32).is_empty());
    }
}
