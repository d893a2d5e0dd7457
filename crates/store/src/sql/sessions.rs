//! Sessions, their single-use authorization states, and the two transactions that move a
//! session forward: attaching an identity to a step, and committing into an install.

use async_trait::async_trait;
use splice_domain::{
    AuthState, ConnectorId, Identity, Install, IntegrationId, Secret, Session, SessionId,
    SessionStatus, TenantId,
};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{SqlStore, from_json, parse_column, read_meta, to_json};
use crate::{Result, SessionStore, StoreError};

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn verifier_context(state_hash: &str) -> String {
    format!("auth_state:{state_hash}:pkce_verifier")
}

fn read_session(row: &AnyRow) -> Result<Session> {
    let status: String = row.try_get("status")?;
    let error: Option<String> = row.try_get("error")?;
    let install: Option<String> = row.try_get("install_id")?;
    Ok(Session {
        id: SessionId::parse(row.try_get("id")?).map_err(corrupt)?,
        integration: IntegrationId::parse(row.try_get("integration_id")?).map_err(corrupt)?,
        tenant: TenantId::parse(row.try_get("tenant")?).map_err(corrupt)?,
        redirect_url: row.try_get("redirect_url")?,
        status: parse_column(&status, "session status", SessionStatus::parse)?,
        steps: from_json(row.try_get("steps")?, "session steps")?,
        error: error.map(|e| from_json(&e, "session error")).transpose()?,
        install: install
            .map(|i| splice_domain::InstallId::parse(&i).map_err(corrupt))
            .transpose()?,
        reconnect: row.try_get::<i64, _>("reconnect")? != 0,
        expires_at: row.try_get("expires_at")?,
        meta: read_meta(row)?,
    })
}

/// Writes a session with a version check inside the caller's transaction.
async fn rewrite_session(tx: &mut sqlx::AnyConnection, session: &Session) -> Result<()> {
    let done = sqlx::query(
        "UPDATE sessions SET status = $1, steps = $2, error = $3, install_id = $4, tags = $5, \
         updated_at = $6, version = $7 WHERE id = $8 AND version = $9",
    )
    .bind(session.status.as_str())
    .bind(to_json(&session.steps))
    .bind(session.error.as_ref().map(to_json))
    .bind(session.install.as_ref().map(|i| i.as_str()))
    .bind(to_json(&session.meta.tags))
    .bind(session.meta.updated_at)
    .bind(session.meta.version)
    .bind(session.id.as_str())
    .bind(session.meta.version - 1)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::VersionMismatch(format!(
            "session {}",
            session.id
        )));
    }
    Ok(())
}

#[async_trait]
impl SessionStore for SqlStore {
    async fn create_session(&self, session: &Session) -> Result<()> {
        sqlx::query(
            "INSERT INTO sessions (id, integration_id, tenant, redirect_url, status, steps, \
             error, install_id, expires_at, tags, created_at, updated_at, version, reconnect) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(session.id.as_str())
        .bind(session.integration.as_str())
        .bind(session.tenant.as_str())
        .bind(&session.redirect_url)
        .bind(session.status.as_str())
        .bind(to_json(&session.steps))
        .bind(session.error.as_ref().map(to_json))
        .bind(session.install.as_ref().map(|i| i.as_str()))
        .bind(session.expires_at)
        .bind(to_json(&session.meta.tags))
        .bind(session.meta.created_at)
        .bind(session.meta.updated_at)
        .bind(session.meta.version)
        .bind(i64::from(session.reconnect))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_session(&self, id: &SessionId) -> Result<Option<Session>> {
        let row = sqlx::query("SELECT * FROM sessions WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| read_session(&r)).transpose()
    }

    async fn update_session(&self, session: &Session) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        rewrite_session(&mut conn, session).await
    }

    async fn put_auth_state(&self, state: &AuthState) -> Result<()> {
        let verifier = state
            .pkce_verifier
            .as_ref()
            .map(|v| self.seal(&verifier_context(&state.state_hash), v.expose().as_bytes()));
        sqlx::query(
            "INSERT INTO auth_states (state_hash, session_id, step, connector_id, \
             pkce_verifier, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&state.state_hash)
        .bind(state.session.as_str())
        .bind(i64::try_from(state.step).unwrap_or(i64::MAX))
        .bind(state.connector.as_str())
        .bind(verifier)
        .bind(state.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn take_auth_state(&self, state_hash: &str) -> Result<Option<AuthState>> {
        // DELETE … RETURNING makes the state single-use even with racing callbacks.
        let row = sqlx::query("DELETE FROM auth_states WHERE state_hash = $1 RETURNING *")
            .bind(state_hash)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let sealed: Option<Vec<u8>> = row.try_get("pkce_verifier")?;
        let pkce_verifier = match sealed {
            Some(sealed) => {
                let plain = self.unseal(&verifier_context(state_hash), &sealed)?;
                Some(Secret::new(String::from_utf8(plain).map_err(corrupt)?))
            }
            None => None,
        };
        let step: i64 = row.try_get("step")?;
        Ok(Some(AuthState {
            state_hash: state_hash.to_owned(),
            session: SessionId::parse(row.try_get("session_id")?).map_err(corrupt)?,
            step: usize::try_from(step).map_err(corrupt)?,
            connector: ConnectorId::parse(row.try_get("connector_id")?).map_err(corrupt)?,
            pkce_verifier,
            expires_at: row.try_get("expires_at")?,
        }))
    }

    async fn attach_identity(
        &self,
        session: &Session,
        identity: &Identity,
        new: bool,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        if new {
            self.insert_identity(&mut tx, identity).await?;
        } else {
            self.rewrite_identity(&mut tx, identity).await?;
        }
        rewrite_session(&mut tx, session).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn commit_session(&self, session: &Session, install: &Install) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        rewrite_session(&mut tx, session).await?;
        if !session.reconnect {
            self.insert_install(&mut tx, install).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
