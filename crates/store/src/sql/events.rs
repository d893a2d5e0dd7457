//! Events for the application: identity health transitions, connector problems, installs.

use async_trait::async_trait;
use splice_domain::{Event, EventId, TenantId};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Dialect, SqlStore, from_json};
use crate::{EventQuery, EventStore, Result, StoreError};

/// Inserts an event inside the caller's transaction.
pub(super) async fn insert_event(tx: &mut sqlx::AnyConnection, event: &Event) -> Result<()> {
    sqlx::query(
        "INSERT INTO events (id, type, at, tenant, subject, data) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(event.id.as_str())
    .bind(&event.kind)
    .bind(event.at)
    .bind(event.tenant.as_ref().map(TenantId::as_str))
    .bind(&event.subject)
    .bind(event.data.to_string())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Events written per `INSERT` at most.
const EVENTS_PER_INSERT: usize = 100;

/// Inserts events inside the caller's transaction, in multi-row `INSERT`s, in order.
pub(super) async fn insert_events(
    tx: &mut sqlx::AnyConnection,
    dialect: Dialect,
    events: &[Event],
) -> Result<()> {
    for chunk in events.chunks(EVENTS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO events (id, type, at, tenant, subject, data) VALUES {}",
            dialect.value_rows(chunk.len(), 6, "")
        );
        let mut query = sqlx::query(&sql);
        for event in chunk {
            query = query
                .bind(event.id.as_str())
                .bind(&event.kind)
                .bind(event.at)
                .bind(event.tenant.as_ref().map(TenantId::as_str))
                .bind(&event.subject)
                .bind(event.data.to_string());
        }
        query.execute(&mut *tx).await?;
    }
    Ok(())
}

fn read_event(row: &AnyRow) -> Result<Event> {
    let corrupt = |e: splice_domain::InvalidValue| StoreError::Corrupt(e.to_string());
    let tenant: Option<String> = row.try_get("tenant")?;
    Ok(Event {
        id: EventId::parse(row.try_get("id")?).map_err(corrupt)?,
        kind: row.try_get("type")?,
        at: row.try_get("at")?,
        tenant: tenant
            .map(|t| TenantId::parse(&t))
            .transpose()
            .map_err(corrupt)?,
        subject: row.try_get("subject")?,
        data: from_json(row.try_get("data")?, "event data")?,
    })
}

#[async_trait]
impl EventStore for SqlStore {
    async fn record_event(&self, event: &Event) -> Result<()> {
        let _turn = self.write_turn().await;
        let mut conn = self.pool.acquire().await?;
        insert_event(&mut conn, event).await
    }

    async fn list_events(&self, query: &EventQuery) -> Result<Vec<Event>> {
        let order = if query.after.is_some() { "ASC" } else { "DESC" };
        let rows = sqlx::query(&format!(
            "SELECT * FROM events WHERE (CAST($1 AS TEXT) IS NULL OR type = $1) \
             AND (CAST($2 AS TEXT) IS NULL OR tenant = $2) \
             AND (CAST($3 AS TEXT) IS NULL OR subject = $3) \
             AND (CAST($4 AS TEXT) IS NULL OR $4 = '' \
             OR seq > (SELECT seq FROM events WHERE id = $4)) \
             ORDER BY seq {order} LIMIT $5"
        ))
        .bind(&query.kind)
        .bind(query.tenant.as_ref().map(TenantId::as_str))
        .bind(&query.subject)
        .bind(&query.after)
        .bind(i64::from(query.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(read_event).collect()
    }
}
