//! Storage for Splice, behind traits split by capability so handlers never see SQL.
//!
//! [`SqlStore`] implements every trait over one sqlx pool. Secrets are encrypted here, on the
//! way in, and decrypted on the way out: nothing above this crate handles ciphertext and nothing
//! below it sees plaintext.

use async_trait::async_trait;

use splice_domain::{
    AuthState, Connector, ConnectorId, Event, Identity, IdentityId, Install, InstallId,
    Integration, IntegrationId, InvocationRecord, Millis, Session, SessionId, TagFilter, TenantId,
    TokenSet,
};

mod sql;

pub use sql::{CopyReport, Dialect, OpenError, PoolSettings, SqlStore, sqlite_url};

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A row with the same key exists.
    #[error("{0} already exists")]
    Conflict(String),
    /// The row changed since it was read (its version moved on).
    #[error("{0} was modified concurrently")]
    VersionMismatch(String),
    /// A referenced row does not exist.
    #[error("{0} not found")]
    Missing(String),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The compiled program of an integration's current version.
#[derive(Clone, Debug)]
pub struct StoredProgram {
    pub integration: Integration,
    pub bytecode: Vec<u8>,
}

/// Which invocations to list.
#[derive(Clone, Debug, Default)]
pub struct InvocationQuery {
    pub install: Option<String>,
    pub since: Option<Millis>,
    pub until: Option<Millis>,
    pub limit: u32,
}

#[async_trait]
pub trait ConnectorStore: Send + Sync {
    /// Inserts a new connector; [`StoreError::Conflict`] when the id is taken.
    async fn create_connector(&self, connector: &Connector) -> Result<()>;
    async fn get_connector(&self, id: &ConnectorId) -> Result<Option<Connector>>;
    async fn list_connectors(&self) -> Result<Vec<Connector>>;
    /// Replaces a connector whose stored version is `connector.meta.version - 1`.
    async fn update_connector(&self, connector: &Connector) -> Result<()>;
    /// Flags (with the reason) or clears a connector's misconfiguration, recording `event`.
    async fn set_connector_misconfigured(
        &self,
        id: &ConnectorId,
        reason: Option<&str>,
        event: &Event,
    ) -> Result<()>;
    /// Deletes a connector and, by cascade, its identities. False when it did not exist.
    async fn delete_connector(&self, id: &ConnectorId) -> Result<bool>;
}

#[async_trait]
pub trait IntegrationStore: Send + Sync {
    /// Creates or replaces an integration with its compiled bytecode; returns the stored row
    /// with its new version and whether it was created.
    async fn put_integration(
        &self,
        integration: &Integration,
        bytecode: &[u8],
    ) -> Result<(Integration, bool)>;
    async fn get_integration(&self, id: &IntegrationId) -> Result<Option<Integration>>;
    /// The integration with its bytecode, for running it.
    async fn get_program(&self, id: &IntegrationId) -> Result<Option<StoredProgram>>;
    async fn list_integrations(&self) -> Result<Vec<Integration>>;
    /// The current version of an integration, to check a cached program is still current.
    async fn integration_version(&self, id: &IntegrationId) -> Result<Option<i64>>;
    async fn delete_integration(&self, id: &IntegrationId) -> Result<bool>;
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    async fn create_session(&self, session: &Session) -> Result<()>;
    async fn get_session(&self, id: &SessionId) -> Result<Option<Session>>;
    /// Writes a session whose stored version is `session.meta.version - 1`.
    async fn update_session(&self, session: &Session) -> Result<()>;
    async fn put_auth_state(&self, state: &AuthState) -> Result<()>;
    /// Removes and returns the state with this hash, so it can be used once only.
    async fn take_auth_state(&self, state_hash: &str) -> Result<Option<AuthState>>;
    /// In one transaction: writes the identity (inserted when `new`, else its tokens, status
    /// and subject updated) and the session that now references it.
    async fn attach_identity(
        &self,
        session: &Session,
        identity: &Identity,
        new: bool,
    ) -> Result<()>;
    /// In one transaction: creates the install and marks the session committed.
    async fn commit_session(&self, session: &Session, install: &Install) -> Result<()>;
}

#[async_trait]
pub trait IdentityStore: Send + Sync {
    async fn get_identity(&self, id: &IdentityId) -> Result<Option<Identity>>;
    async fn find_identity_by_subject(
        &self,
        connector: &ConnectorId,
        tenant: &TenantId,
        subject: &str,
    ) -> Result<Option<Identity>>;
    async fn list_identities(
        &self,
        connector: &ConnectorId,
        tenant: Option<&TenantId>,
        tags: &[TagFilter],
    ) -> Result<Vec<Identity>>;
    /// Stores refreshed tokens if the identity is still at `expected_version`; returns the
    /// identity as written. [`StoreError::VersionMismatch`] means another writer won.
    async fn update_tokens(
        &self,
        id: &IdentityId,
        expected_version: i64,
        tokens: &TokenSet,
    ) -> Result<Identity>;
    /// Takes the identity's cross-node refresh guard, waiting while another node holds it.
    /// Held until [`RefreshGuard::release`] or drop, and released by the database if this
    /// process dies.
    async fn refresh_guard(&self, id: &IdentityId) -> Result<RefreshGuard>;
    /// Writes an identity's health and refresh bookkeeping if the stored version is
    /// `identity.meta.version - 1`, recording `event` in the same transaction.
    async fn update_health(&self, identity: &Identity, event: Option<&Event>) -> Result<()>;
    /// Usable identities with a refresh token whose access token expires before
    /// `expiring_before`, or whose tokens were obtained before `stale_before`, and that are not
    /// backing off at `now`. Oldest expiry first.
    async fn identities_due(
        &self,
        expiring_before: Millis,
        stale_before: Millis,
        now: Millis,
        limit: u32,
    ) -> Result<Vec<IdentityId>>;
    async fn delete_identity(&self, id: &IdentityId) -> Result<bool>;
}

#[async_trait]
pub trait InstallStore: Send + Sync {
    async fn get_install(&self, id: &InstallId) -> Result<Option<Install>>;
    async fn list_installs(
        &self,
        integration: &IntegrationId,
        tenant: Option<&TenantId>,
        tags: &[TagFilter],
    ) -> Result<Vec<Install>>;
    /// The installs that use an identity.
    async fn installs_using(&self, identity: &IdentityId) -> Result<Vec<InstallId>>;
    async fn delete_install(&self, id: &InstallId) -> Result<bool>;
}

#[async_trait]
pub trait InvocationStore: Send + Sync {
    /// Appends a batch of invocation records in one transaction.
    async fn record_invocations(&self, records: &[InvocationRecord]) -> Result<()>;
    /// Newest first.
    async fn list_invocations(
        &self,
        integration: &IntegrationId,
        query: &InvocationQuery,
    ) -> Result<Vec<InvocationRecord>>;
}

/// Which events to list.
#[derive(Clone, Debug, Default)]
pub struct EventQuery {
    pub kind: Option<String>,
    pub tenant: Option<TenantId>,
    pub subject: Option<String>,
    /// Only events after this one (by id), for polling.
    pub after: Option<String>,
    pub limit: u32,
}

#[async_trait]
pub trait EventStore: Send + Sync {
    async fn record_event(&self, event: &Event) -> Result<()>;
    /// Newest first, or oldest first after the `after` cursor.
    async fn list_events(&self, query: &EventQuery) -> Result<Vec<Event>>;
}

/// How the database is shared and whether it answers.
#[async_trait]
pub trait ClusterStore: Send + Sync {
    /// Whether other nodes may write to the same database (so in-process caches must be
    /// checked against it).
    fn is_shared(&self) -> bool;
    /// Checks the database answers.
    async fn ping(&self) -> Result<()>;
}

/// Everything Splice stores, as one object handlers can hold.
pub trait Store:
    ConnectorStore
    + IntegrationStore
    + SessionStore
    + IdentityStore
    + InstallStore
    + InvocationStore
    + EventStore
    + ClusterStore
{
}

impl<T> Store for T where
    T: ConnectorStore
        + IntegrationStore
        + SessionStore
        + IdentityStore
        + InstallStore
        + InvocationStore
        + EventStore
        + ClusterStore
{
}

/// A held cross-node refresh guard (see [`IdentityStore::refresh_guard`]).
///
/// On PostgreSQL it is a transaction holding an advisory lock: committing or dropping it (or
/// the connection dying with the process) releases the lock. On SQLite, a single-node store,
/// the in-process lock is the whole guard and this holds nothing.
pub struct RefreshGuard {
    tx: Option<sqlx::Transaction<'static, sqlx::Any>>,
}

impl RefreshGuard {
    /// Releases the guard now.
    pub async fn release(mut self) {
        if let Some(tx) = self.tx.take()
            && let Err(err) = tx.commit().await
        {
            tracing::warn!(error = %err, "releasing a refresh guard failed");
        }
    }
}
