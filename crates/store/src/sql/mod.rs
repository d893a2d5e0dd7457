//! The SQL implementation of every storage trait. SQLite today; the dialect-specific parts are
//! the connection setup and the migrations folder.

mod connectors;
mod identities;
mod installs;
mod integrations;
mod invocations;
mod sessions;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use splice_crypto::Cipher;
use splice_domain::{Meta, Tags};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool, sqlite::SqliteRow};

use crate::{Result, StoreError};

/// Plaintext sealed under the master key at first start, to detect a wrong key later.
const KEY_CHECK: &[u8] = b"splice master key check v1";
const KEY_CHECK_CONTEXT: &str = "meta:key_check";

/// Storage over one SQL pool, with the cipher that seals secrets.
#[derive(Clone)]
pub struct SqlStore {
    pool: SqlitePool,
    cipher: Cipher,
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(
        "the master key does not match the one this database was created with; \
         start with the original key (SPLICE_MASTER_KEY or the key file)"
    )]
    WrongMasterKey,
}

impl SqlStore {
    /// Opens (creating if needed) the SQLite database at `path` in WAL mode, applies the
    /// embedded migrations and checks the master key against the database.
    pub async fn open_sqlite(path: &Path, cipher: Cipher) -> Result<Self, OpenError> {
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;

        sqlx::migrate!("migrations/sqlite").run(&pool).await?;

        let store = Self { pool, cipher };
        store.check_master_key().await?;
        Ok(store)
    }

    async fn check_master_key(&self) -> Result<(), OpenError> {
        let sealed = self.cipher.encrypt(KEY_CHECK_CONTEXT, KEY_CHECK);
        sqlx::query("INSERT INTO meta (key, value) VALUES ('key_check', ?) ON CONFLICT DO NOTHING")
            .bind(sealed)
            .execute(&self.pool)
            .await?;
        let stored: Vec<u8> = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'key_check'")
            .fetch_one(&self.pool)
            .await?;
        match self.cipher.decrypt(KEY_CHECK_CONTEXT, &stored) {
            Ok(plain) if plain == KEY_CHECK => Ok(()),
            _ => Err(OpenError::WrongMasterKey),
        }
    }

    /// Reads a value from the `meta` table.
    pub async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let value = sqlx::query_scalar("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(value)
    }

    /// Writes a value to the `meta` table unless the key exists; returns whether it wrote.
    pub async fn put_meta_if_absent(&self, key: &str, value: &[u8]) -> Result<bool> {
        let done =
            sqlx::query("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT DO NOTHING")
                .bind(key)
                .bind(value)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Closes the pool, waiting for connections to return.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    fn seal(&self, context: &str, plain: &[u8]) -> Vec<u8> {
        self.cipher.encrypt(context, plain)
    }

    fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        self.cipher
            .decrypt(context, sealed)
            .map_err(|e| StoreError::Corrupt(format!("{context}: {e}")))
    }
}

/// Reads the common `tags, created_at, updated_at, version` columns.
fn read_meta(row: &SqliteRow) -> Result<Meta> {
    let tags: String = row.try_get("tags")?;
    Ok(Meta {
        tags: from_json(&tags, "tags")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        version: row.try_get("version")?,
    })
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    // Serializing plain data structures (maps of strings, derived structs) cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

fn from_json<T: serde::de::DeserializeOwned>(raw: &str, what: &str) -> Result<T> {
    serde_json::from_str(raw).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn parse_column<T>(raw: &str, what: &str, parse: impl Fn(&str) -> Option<T>) -> Result<T> {
    parse(raw).ok_or_else(|| StoreError::Corrupt(format!("{what}: unexpected value {raw:?}")))
}

/// Replaces the searchable tag rows of one entity, inside the caller's transaction.
async fn write_tags(
    tx: &mut sqlx::SqliteConnection,
    kind: &str,
    entity_id: &str,
    tags: &Tags,
) -> Result<()> {
    sqlx::query("DELETE FROM entity_tags WHERE kind = ? AND entity_id = ?")
        .bind(kind)
        .bind(entity_id)
        .execute(&mut *tx)
        .await?;
    for (key, value) in tags.iter() {
        sqlx::query("INSERT INTO entity_tags (kind, entity_id, key, value) VALUES (?, ?, ?, ?)")
            .bind(kind)
            .bind(entity_id)
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// Appends one `AND id IN (…)` clause per tag filter; bind the key and value of each in order.
fn tag_clauses(kind: &str, id_column: &str, count: usize) -> String {
    let clause = format!(
        " AND {id_column} IN (SELECT entity_id FROM entity_tags \
         WHERE kind = '{kind}' AND key = ? AND value = ?)"
    );
    clause.repeat(count)
}

/// Maps a unique-constraint violation to [`StoreError::Conflict`].
fn conflict_on_unique(err: sqlx::Error, what: impl Into<String>) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what.into()),
        _ => StoreError::Database(err),
    }
}

#[cfg(test)]
mod tests;
