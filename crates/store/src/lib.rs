//! Storage for Splice, behind traits split by capability so handlers never see SQL.
//!
//! [`SqlStore`] implements every trait over one sqlx pool. Secrets are encrypted here, on the
//! way in, and decrypted on the way out: nothing above this crate handles ciphertext and nothing
//! below it sees plaintext.

use std::time::Duration;

use async_trait::async_trait;

use splice_domain::{
    AuthState, Connector, ConnectorId, Event, Identity, IdentityId, Install, InstallId,
    Integration, IntegrationId, InvocationRecord, Millis, Secret, Session, SessionId, TagFilter,
    TenantId, TokenSet, Webhook,
};

mod sql;

pub use sql::{CopyReport, Dialect, OpenError, PoolSettings, SqlStore, sqlite_url};

/// What became of a secret offered for a hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookClaim {
    Stored,
    /// The hook has its secret already.
    Taken,
    /// No such hook was opened, or it expired before the handshake.
    NotOpen,
}

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
    /// Opens a hook of the connector, waiting until `expires_at` for the provider's handshake
    /// to set its secret. False when the hook exists already.
    async fn open_hook(
        &self,
        connector: &ConnectorId,
        hook: &str,
        expires_at: Millis,
        now: Millis,
    ) -> Result<bool>;
    /// Stores the secret a provider issued for an open hook (Asana's handshake). Only an
    /// open, unexpired hook without a secret takes one: the first secret stays.
    async fn add_hook_secret(
        &self,
        connector: &ConnectorId,
        hook: &str,
        secret: &Secret,
        now: Millis,
    ) -> Result<HookClaim>;
    async fn hook_secret(&self, connector: &ConnectorId, hook: &str) -> Result<Option<Secret>>;
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
    /// The integrations that declare `connector`, each with the name it gives it, by id —
    /// without reading their files.
    async fn integrations_using(
        &self,
        connector: &ConnectorId,
    ) -> Result<Vec<(IntegrationId, String)>>;
    /// Integrations that declare schedules: id, schedules, and when they were deployed.
    async fn scheduled_integrations(
        &self,
    ) -> Result<Vec<(IntegrationId, Vec<splice_domain::ScheduleSpec>, Millis)>>;
    /// The last slot a schedule fired (for an install, or `""` for the integration).
    async fn schedule_slot(
        &self,
        integration: &IntegrationId,
        schedule: &str,
        install: &str,
    ) -> Result<Option<Millis>>;
    /// Records that a schedule fired `slot`, unless a later slot is already recorded.
    async fn advance_schedule(
        &self,
        integration: &IntegrationId,
        schedule: &str,
        install: &str,
        slot: Millis,
    ) -> Result<()>;
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
    /// The identities on a connector whose subject (provider account id) is one of `subjects`.
    async fn identities_with_subjects(
        &self,
        connector: &ConnectorId,
        subjects: &[&str],
    ) -> Result<Vec<IdentityId>>;
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
    /// Only events after this one (by id), oldest first, for polling; `""` starts at the
    /// oldest event.
    pub after: Option<String>,
    pub limit: u32,
}

#[async_trait]
pub trait EventStore: Send + Sync {
    async fn record_event(&self, event: &Event) -> Result<()>;
    /// Newest first, or oldest first after the `after` cursor.
    async fn list_events(&self, query: &EventQuery) -> Result<Vec<Event>>;
}

#[async_trait]
pub trait WebhookStore: Send + Sync {
    async fn create_webhook(&self, webhook: &Webhook) -> Result<()>;
    async fn get_webhook(&self, id: &str) -> Result<Option<Webhook>>;
    async fn list_webhooks(&self) -> Result<Vec<Webhook>>;
    async fn delete_webhook(&self, id: &str) -> Result<bool>;
    /// The last event already turned into deliveries.
    async fn delivery_cursor(&self) -> Result<Option<String>>;
    async fn set_delivery_cursor(&self, event_id: &str) -> Result<()>;
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

/// Attempts a job gets unless its [`NewJob`] says otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobStatus {
    /// Waiting for its `run_at`, or for a worker.
    Queued,
    /// Claimed by a worker whose lease runs until `lease_until`.
    Running,
    Succeeded,
    /// Dead letter: the last attempt failed, or the failure was final.
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }
}

/// A job to put on the queue.
#[derive(Clone, Debug, PartialEq)]
pub struct NewJob {
    /// What handles it, e.g. `webhook.event`, `integration.task`, `schedule.fire`.
    pub kind: String,
    /// Jobs sharing a partition (e.g. an integration id) count against one concurrency limit.
    pub partition: Option<String>,
    pub payload: serde_json::Value,
    /// Enqueueing a key that is already stored returns that job instead of a new one. Keys
    /// are global, so callers namespace them (`"<kind>:<source id>"`).
    pub idempotency_key: Option<String>,
    pub max_attempts: u32,
    /// Not before this time.
    pub run_at: Millis,
}

impl NewJob {
    /// A job of `kind` due at `run_at`, without partition or idempotency key.
    pub fn new(kind: impl Into<String>, payload: serde_json::Value, run_at: Millis) -> Self {
        Self {
            kind: kind.into(),
            partition: None,
            payload,
            idempotency_key: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            run_at,
        }
    }
}

/// A stored job.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    /// `job_` and 32 hex digits.
    pub id: String,
    pub kind: String,
    pub partition: Option<String>,
    pub payload: serde_json::Value,
    pub idempotency_key: Option<String>,
    pub status: JobStatus,
    /// Runs started so far, counted when a run is claimed.
    pub attempts: u32,
    pub max_attempts: u32,
    pub run_at: Millis,
    /// The worker that holds (or last held) the job.
    pub lease_owner: Option<String>,
    /// While running: when the lease lapses and another worker may take the job.
    pub lease_until: Option<Millis>,
    pub last_error: Option<String>,
    pub result: Option<serde_json::Value>,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// When the current (or last) run was claimed.
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
}

/// What a worker asks of [`JobStore::claim_jobs`].
#[derive(Clone, Debug)]
pub struct JobClaim<'a> {
    /// Recorded as the lease owner; unique per worker (node id and worker number).
    pub worker: &'a str,
    /// The kinds this worker handles; empty for every kind.
    pub kinds: &'a [&'a str],
    pub limit: u32,
    pub lease: Duration,
    /// At most this many jobs of one partition running at once (unexpired leases), counting
    /// the ones claimed now. Jobs without a partition are not limited.
    pub max_running_per_partition: Option<u32>,
    pub now: Millis,
}

/// Which jobs to list.
#[derive(Clone, Debug, Default)]
pub struct JobQuery {
    pub status: Option<JobStatus>,
    pub kind: Option<String>,
    pub partition: Option<String>,
    pub limit: u32,
}

/// What became of a claimed run, for [`JobStore::finish_jobs`].
#[derive(Clone, Copy, Debug)]
pub enum JobOutcome<'a> {
    /// Succeeded with this result.
    Succeeded(&'a serde_json::Value),
    /// Failed: queued again for `retry_at` while attempts are left, otherwise dead-lettered.
    Failed {
        error: &'a str,
        retry_at: Option<Millis>,
    },
}

/// The durable job queue.
///
/// A run's outcome (`heartbeat_job`, `complete_job`, `fail_job`) is written only while the
/// job is still the run that was claimed: status running, the same lease owner and the same
/// attempt. A worker whose lease lapsed and whose job was taken by another gets `None` and
/// must drop its outcome, so it can never overwrite the newer run's.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Stores a queued job; returns it and whether it was created. With an idempotency key
    /// that is already stored, returns the stored job (whatever its status) and `false`.
    async fn enqueue_job(&self, job: &NewJob, now: Millis) -> Result<(Job, bool)>;
    /// [`enqueue_job`](Self::enqueue_job) for many jobs in few statements; the answers are in
    /// the order of `jobs`. Two jobs of one batch with the same key are one job.
    async fn enqueue_jobs(&self, jobs: &[NewJob], now: Millis) -> Result<Vec<(Job, bool)>>;
    /// Atomically takes up to `limit` due jobs, oldest `run_at` first: queued ones due by
    /// `now`, and running ones whose lease lapsed. Each becomes running under the worker's
    /// lease with its attempt counted. Lapsed jobs with no attempt left become dead letters
    /// instead. No job is handed to two claimers, on any node.
    async fn claim_jobs(&self, claim: &JobClaim<'_>) -> Result<Vec<Job>>;
    /// Extends the lease of a claimed job to `now + lease`; `None` when the run lost it.
    async fn heartbeat_job(&self, job: &Job, lease: Duration, now: Millis) -> Result<Option<Job>>;
    /// Marks a claimed job succeeded with its result; `None` when the run lost it.
    async fn complete_job(
        &self,
        job: &Job,
        result: &serde_json::Value,
        now: Millis,
    ) -> Result<Option<Job>>;
    /// Records a claimed job's failure. With `retry_at` and attempts left it is queued again
    /// for `retry_at`; otherwise it becomes a dead letter (`failed`). `None` when the run
    /// lost the job.
    async fn fail_job(
        &self,
        job: &Job,
        error: &str,
        retry_at: Option<Millis>,
        now: Millis,
    ) -> Result<Option<Job>>;
    /// Records the outcomes of many claimed runs, each as [`complete_job`](Self::complete_job)
    /// or [`fail_job`](Self::fail_job) would, in one transaction; with each outcome written,
    /// the event `event` makes of the job it left behind, if any. Answers in the order of
    /// `runs`: `None` where the run had lost its job (and no event for it).
    async fn finish_jobs(
        &self,
        runs: &[(&Job, JobOutcome<'_>)],
        now: Millis,
        event: &(dyn for<'j> Fn(&'j Job) -> Option<Event> + Send + Sync),
    ) -> Result<Vec<Option<Job>>>;
    async fn get_job(&self, id: &str) -> Result<Option<Job>>;
    /// Newest first.
    async fn list_jobs(&self, query: &JobQuery) -> Result<Vec<Job>>;
    /// Queues a failed or cancelled job again, due at `now`, with its attempts reset.
    /// `None` when no such job is failed or cancelled.
    async fn replay_job(&self, id: &str, now: Millis) -> Result<Option<Job>>;
    /// Cancels a queued job; `None` when no such job is queued.
    async fn cancel_job(&self, id: &str, now: Millis) -> Result<Option<Job>>;
    /// When the next job of these kinds (empty: any) becomes claimable: the earliest queued
    /// `run_at` or running `lease_until`. For a worker to sleep until then.
    async fn next_job_due(&self, kinds: &[&str]) -> Result<Option<Millis>>;
    /// Deletes succeeded, failed and cancelled jobs finished before `before`; returns how many.
    async fn purge_finished_jobs(&self, before: Millis) -> Result<u64>;
    /// Tells the workers of every node sharing this database that jobs were enqueued
    /// (PostgreSQL `NOTIFY`). A store used by one process has no one else to tell.
    async fn announce_jobs(&self) -> Result<()> {
        Ok(())
    }
    /// Tells every node that an integration was deployed or deleted (`"*"`: anything may have
    /// changed), so they drop what they cached of it.
    async fn announce_deploy(&self, integration: &str) -> Result<()> {
        let _ = integration;
        Ok(())
    }
    /// Hears the announcements of every node, or `None` where there is nothing to hear.
    async fn listen(&self) -> Result<Option<Announcements>> {
        Ok(None)
    }
}

/// What a node heard from the others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Announcement {
    /// Jobs were enqueued.
    Jobs,
    /// An integration was deployed or deleted; `"*"` for any.
    Deployed(String),
    /// The connection was lost: announcements may have been missed. The next call to
    /// [`Announcements::next`] reconnects.
    Lost,
}

/// Announcements from every node (a PostgreSQL `LISTEN` connection).
pub struct Announcements(pub(crate) sqlx::postgres::PgListener);

impl Announcements {
    /// Waits for the next announcement.
    pub async fn next(&mut self) -> Result<Announcement> {
        let Some(notification) = self.0.try_recv().await? else {
            return Ok(Announcement::Lost);
        };
        Ok(match notification.channel() {
            sql::DEPLOYS_CHANNEL => Announcement::Deployed(notification.payload().to_owned()),
            _ => Announcement::Jobs,
        })
    }
}

/// How long to wait before retrying after failed attempt number `attempt` (1 for the first):
/// `base` doubled per attempt, capped at `max`, then scaled into its upper half by `jitter`
/// (0 gives half the step, 1 the full step), so retries of many jobs spread out. The caller
/// supplies `jitter`, a random number in `0..1`, which keeps this function deterministic.
pub fn retry_delay(attempt: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let doublings = attempt.saturating_sub(1);
    let step = 2u32
        .checked_pow(doublings)
        .and_then(|factor| base.checked_mul(factor))
        .map_or(max, |delay| delay.min(max));
    step.mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0)
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
    + JobStore
    + WebhookStore
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
        + JobStore
        + WebhookStore
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
