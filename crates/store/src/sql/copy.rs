//! Copying a whole installation from one database to another (e.g. SQLite to PostgreSQL).
//!
//! Rows move as stored: secrets stay sealed under the same master key, which both stores must
//! share. The copy runs in one transaction on the target and checks the row counts after.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::SqlStore;
use crate::{Result, StoreError};

/// Column kinds, enough to move every column of the schema.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Int,
    Bytes,
}

use Kind::{Bytes, Int, Text};

/// Tables in an order that satisfies foreign keys, with the columns to copy. Every column of
/// the schema is listed (a test checks this against the database), except generated sequence
/// numbers.
#[rustfmt::skip]
const TABLES: &[(&str, &[(&str, Kind)])] = &[
    ("meta", &[("key", Text), ("value", Bytes)]),
    ("connectors", &[
        ("id", Text), ("kind", Text), ("config", Text), ("client_secret", Bytes), ("tags", Text),
        ("created_at", Int), ("updated_at", Int), ("version", Int), ("status", Text),
        ("status_reason", Text), ("webhook_secret", Bytes),
    ]),
    ("integrations", &[
        ("id", Text), ("files", Text), ("bytecode", Bytes), ("connectors", Text),
        ("runtime", Text), ("tags", Text), ("created_at", Int), ("updated_at", Int),
        ("version", Int), ("schedules", Text),
    ]),
    ("identities", &[
        ("id", Text), ("connector_id", Text), ("tenant", Text), ("subject", Text),
        ("status", Text), ("status_reason", Text), ("status_at", Int), ("tokens", Bytes),
        ("expires_at", Int), ("tags", Text), ("created_at", Int), ("updated_at", Int),
        ("version", Int), ("has_refresh_token", Int), ("refreshed_at", Int),
        ("failure_days", Int), ("last_failure_day", Int), ("next_attempt_at", Int),
    ]),
    ("installs", &[
        ("id", Text), ("integration_id", Text), ("tenant", Text), ("tags", Text),
        ("created_at", Int), ("updated_at", Int), ("version", Int),
    ]),
    ("schedule_runs", &[
        ("integration_id", Text), ("schedule", Text), ("install_id", Text), ("last_slot", Int),
    ]),
    ("install_identities", &[("install_id", Text), ("name", Text), ("identity_id", Text)]),
    ("entity_tags", &[("kind", Text), ("entity_id", Text), ("key", Text), ("value", Text)]),
    ("sessions", &[
        ("id", Text), ("integration_id", Text), ("tenant", Text), ("redirect_url", Text),
        ("status", Text), ("steps", Text), ("error", Text), ("install_id", Text),
        ("expires_at", Int), ("tags", Text), ("created_at", Int), ("updated_at", Int),
        ("version", Int), ("reconnect", Int),
    ]),
    ("auth_states", &[
        ("state_hash", Text), ("session_id", Text), ("step", Int), ("connector_id", Text),
        ("pkce_verifier", Bytes), ("expires_at", Int),
    ]),
    ("invocations", &[
        ("integration_id", Text), ("install_id", Text), ("at", Int), ("method", Text),
        ("path", Text), ("status", Int), ("duration_us", Int), ("error", Text), ("logs", Text),
    ]),
    ("events", &[
        ("id", Text), ("type", Text), ("at", Int), ("tenant", Text), ("subject", Text),
        ("data", Text),
    ]),
    ("webhooks", &[
        ("id", Text), ("url", Text), ("events", Text), ("secret", Bytes), ("tags", Text),
        ("created_at", Int), ("updated_at", Int), ("version", Int),
    ]),
    ("hook_secrets", &[
        ("connector_id", Text), ("hook", Text), ("secret", Bytes), ("expires_at", Int),
        ("created_at", Int),
    ]),
    ("jobs", &[
        ("id", Text), ("kind", Text), ("partition_key", Text), ("payload", Text),
        ("idempotency_key", Text), ("status", Text), ("attempts", Int), ("max_attempts", Int),
        ("run_at", Int), ("lease_owner", Text), ("lease_until", Int), ("last_error", Text),
        ("result", Text), ("created_at", Int), ("updated_at", Int), ("finished_at", Int),
        ("started_at", Int),
    ]),
];

/// The tables and columns the copy moves, for checking against the schema.
#[cfg(test)]
pub(super) fn copied_columns() -> Vec<(&'static str, Vec<&'static str>)> {
    TABLES
        .iter()
        .map(|(t, cols)| (*t, cols.iter().map(|(c, _)| *c).collect()))
        .collect()
}

/// Rows copied per table.
pub type CopyReport = Vec<(&'static str, i64)>;

enum Value {
    Text(Option<String>),
    Int(Option<i64>),
    Bytes(Option<Vec<u8>>),
}

fn read(row: &AnyRow, column: &str, kind: Kind) -> Result<Value> {
    Ok(match kind {
        Text => Value::Text(row.try_get(column)?),
        Int => Value::Int(row.try_get(column)?),
        Bytes => Value::Bytes(row.try_get(column)?),
    })
}

impl SqlStore {
    /// Copies every row of `self` into `target`, which must hold no connectors, integrations
    /// or identities yet. Returns the rows copied per table, verified by counting.
    pub async fn copy_into(&self, target: &SqlStore) -> Result<CopyReport> {
        for table in ["connectors", "integrations", "identities"] {
            if count(target, table).await? > 0 {
                return Err(StoreError::Conflict(format!(
                    "the target database's {table}"
                )));
            }
        }

        let mut tx = target.pool.begin().await?;
        for (table, columns) in TABLES {
            let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
            let params: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
            let select = format!("SELECT {} FROM {table}", names.join(", "));
            let conflict = if *table == "meta" {
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
            } else {
                ""
            };
            let insert = format!(
                "INSERT INTO {table} ({}) VALUES ({}){conflict}",
                names.join(", "),
                params.join(", ")
            );

            let rows = sqlx::query(&select).fetch_all(&self.pool).await?;
            for row in &rows {
                let mut query = sqlx::query(&insert);
                for (name, kind) in columns.iter() {
                    query = match read(row, name, *kind)? {
                        Value::Text(v) => query.bind(v),
                        Value::Int(v) => query.bind(v),
                        Value::Bytes(v) => query.bind(v),
                    };
                }
                query.execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;

        let mut report = Vec::new();
        for (table, _) in TABLES {
            let (source, copied) = (count(self, table).await?, count(target, table).await?);
            if source != copied {
                return Err(StoreError::Corrupt(format!(
                    "{table}: {source} rows in the source, {copied} in the target"
                )));
            }
            report.push((*table, copied));
        }
        Ok(report)
    }
}

async fn count(store: &SqlStore, table: &str) -> Result<i64> {
    let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(&store.pool)
        .await?;
    Ok(n)
}
