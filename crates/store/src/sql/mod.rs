//! The SQL implementation of every storage trait. SQLite today; the dialect-specific parts are
//! the connection setup and the migrations folder.

mod connectors;
mod copy;
mod events;
pub use copy::CopyReport;
mod identities;
mod installs;
mod integrations;
mod invocations;
mod jobs;
pub(crate) use jobs::DEPLOYS_CHANNEL;
mod sessions;
mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use splice_crypto::Cipher;
use splice_domain::{Meta, Tags};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

use crate::{Result, StoreError};

/// Plaintext sealed under the master key at first start, to detect a wrong key later.
const KEY_CHECK: &[u8] = b"splice master key check v1";
const KEY_CHECK_CONTEXT: &str = "meta:key_check";

/// Which SQL database a store talks to. Queries are written once, with `$n` parameters, in
/// the SQL both understand; the dialect matters for connection setup, migrations, locks and
/// long multi-row statements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// `VALUES` rows for a multi-row statement: `rows` groups of `columns` parameters, bound
    /// row by row in order, each followed by the literal `constants` (if any). PostgreSQL
    /// gets `$1, $2, …`; SQLite gets plain `?`, because it looks numbered and named
    /// parameters up by a linear scan, which makes binding hundreds of them quadratic.
    pub(crate) fn value_rows(self, rows: usize, columns: usize, constants: &str) -> String {
        let mut sql = String::with_capacity(rows * columns * 5);
        for row in 0..rows {
            sql.push_str(if row == 0 { "(" } else { ", (" });
            for column in 1..=columns {
                if column > 1 {
                    sql.push_str(", ");
                }
                match self {
                    Dialect::Sqlite => sql.push('?'),
                    Dialect::Postgres => {
                        sql.push('$');
                        sql.push_str(&(row * columns + column).to_string());
                    }
                }
            }
            if !constants.is_empty() {
                sql.push_str(", ");
                sql.push_str(constants);
            }
            sql.push(')');
        }
        sql
    }

    /// The dialect a database URL names.
    pub fn of(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Some(Self::Postgres)
        } else {
            None
        }
    }
}

/// Connection pool settings.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    pub max_connections: u32,
    /// PostgreSQL `statement_timeout`; SQLite has none.
    pub statement_timeout: Option<Duration>,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 16,
            statement_timeout: Some(Duration::from_secs(30)),
        }
    }
}

/// Storage over one SQL pool, with the cipher that seals secrets.
#[derive(Clone)]
pub struct SqlStore {
    pool: AnyPool,
    dialect: Dialect,
    cipher: Cipher,
    /// Kept for connections outside the pool (PostgreSQL `LISTEN`).
    url: String,
    /// On SQLite, the busiest writers (the job queue, the invocation log) queue here for
    /// the database's single write lock, in order, instead of retrying on `SQLITE_BUSY` with
    /// sleeps that starve some of them for seconds under load.
    writers: Arc<tokio::sync::Mutex<()>>,
    /// When this process last dead-lettered lapsed last attempts (see `jobs`).
    last_reap: Arc<std::sync::atomic::AtomicI64>,
    /// The oldest `run_at` a claim may need to look at between sweeps (see `jobs`).
    claim_floor: Arc<std::sync::atomic::AtomicI64>,
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("unsupported database URL; use sqlite://… or postgres://…")]
    UnsupportedUrl,
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
    /// Connects to `url` (`sqlite://path` — created if missing, WAL mode — or
    /// `postgres://…`), applies the embedded migrations (under PostgreSQL's migration lock, so
    /// nodes starting together do not race) and checks the master key against the database.
    pub async fn open(
        url: &str,
        cipher: Cipher,
        settings: &PoolSettings,
    ) -> Result<Self, OpenError> {
        let store = Self::connect(url, cipher, settings).await?;
        store.migrate().await?;
        store.check_master_key().await?;
        Ok(store)
    }

    /// Opens the SQLite database file at `path`.
    pub async fn open_sqlite(path: &std::path::Path, cipher: Cipher) -> Result<Self, OpenError> {
        Self::open(&sqlite_url(path), cipher, &PoolSettings::default()).await
    }

    /// Connects and migrates without checking the master key (for copying raw rows).
    pub(crate) async fn connect(
        url: &str,
        cipher: Cipher,
        settings: &PoolSettings,
    ) -> Result<Self, OpenError> {
        sqlx::any::install_default_drivers();
        let dialect = Dialect::of(url).ok_or(OpenError::UnsupportedUrl)?;
        let url = match dialect {
            Dialect::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_owned(),
        };
        let timeout = settings.statement_timeout;
        let pool = AnyPoolOptions::new()
            .max_connections(settings.max_connections)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    for statement in session_setup(dialect, timeout) {
                        conn.execute(statement.as_str()).await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        Ok(Self {
            pool,
            dialect,
            cipher,
            url,
            writers: Arc::default(),
            last_reap: Arc::new(std::sync::atomic::AtomicI64::new(i64::MIN)),
            claim_floor: Arc::new(std::sync::atomic::AtomicI64::new(i64::MIN)),
        })
    }

    async fn migrate(&self) -> Result<(), OpenError> {
        match self.dialect {
            Dialect::Sqlite => sqlx::migrate!("migrations/sqlite").run(&self.pool).await?,
            Dialect::Postgres => {
                sqlx::migrate!("migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
        }
        Ok(())
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Waits for this process's turn to write, on SQLite; PostgreSQL needs no turn.
    pub(crate) async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.dialect {
            Dialect::Sqlite => Some(self.writers.lock().await),
            Dialect::Postgres => None,
        }
    }

    async fn check_master_key(&self) -> Result<(), OpenError> {
        let sealed = self.cipher.encrypt(KEY_CHECK_CONTEXT, KEY_CHECK);
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('key_check', $1) ON CONFLICT DO NOTHING",
        )
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
        let value = sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(value)
    }

    /// Writes a value to the `meta` table unless the key exists; returns whether it wrote.
    pub async fn put_meta_if_absent(&self, key: &str, value: &[u8]) -> Result<bool> {
        let done =
            sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING")
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

    fn unseal(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        self.cipher
            .decrypt(context, sealed)
            .map_err(|e| StoreError::Corrupt(format!("{context}: {e}")))
    }
}

#[async_trait::async_trait]
impl crate::ClusterStore for SqlStore {
    fn is_shared(&self) -> bool {
        self.dialect == Dialect::Postgres
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// The URL of a SQLite database file.
pub fn sqlite_url(path: &std::path::Path) -> String {
    format!("sqlite://{}", path.display())
}

/// Statements run on every new connection.
fn session_setup(dialect: Dialect, statement_timeout: Option<Duration>) -> Vec<String> {
    match dialect {
        Dialect::Sqlite => vec![
            "PRAGMA journal_mode = WAL".into(),
            "PRAGMA synchronous = NORMAL".into(),
            "PRAGMA foreign_keys = ON".into(),
            "PRAGMA busy_timeout = 5000".into(),
            // 32 MiB of page cache per connection (the default is 2 MiB): the job queue and
            // the invocation log are read and written constantly.
            "PRAGMA cache_size = -32768".into(),
            "PRAGMA mmap_size = 1073741824".into(),
        ],
        Dialect::Postgres => match statement_timeout {
            Some(t) => vec![format!("SET statement_timeout = {}", t.as_millis())],
            None => vec![],
        },
    }
}

/// Reads the common `tags, created_at, updated_at, version` columns.
fn read_meta(row: &AnyRow) -> Result<Meta> {
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
    tx: &mut sqlx::AnyConnection,
    kind: &str,
    entity_id: &str,
    tags: &Tags,
) -> Result<()> {
    sqlx::query("DELETE FROM entity_tags WHERE kind = $1 AND entity_id = $2")
        .bind(kind)
        .bind(entity_id)
        .execute(&mut *tx)
        .await?;
    for (key, value) in tags.iter() {
        sqlx::query(
            "INSERT INTO entity_tags (kind, entity_id, key, value) VALUES ($1, $2, $3, $4)",
        )
        .bind(kind)
        .bind(entity_id)
        .bind(key)
        .bind(value)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// One `AND id IN (…)` clause per tag filter, numbering parameters from `first`; bind the key
/// and value of each filter in order.
fn tag_clauses(kind: &str, id_column: &str, count: usize, first: usize) -> String {
    (0..count)
        .map(|i| {
            let (key, value) = (first + 2 * i, first + 2 * i + 1);
            format!(
                " AND {id_column} IN (SELECT entity_id FROM entity_tags \
                 WHERE kind = '{kind}' AND key = ${key} AND value = ${value})"
            )
        })
        .collect()
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
