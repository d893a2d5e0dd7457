//! The storage suite. Each test opens its own database in a temporary directory.

use std::collections::BTreeMap;

use splice_crypto::{Cipher, MasterKey};
use splice_domain::*;
use tempfile::TempDir;

use super::{OpenError, SqlStore};
use crate::*;

/// One test database: a SQLite file in a temporary directory, or a fresh PostgreSQL database
/// created under `SPLICE_TEST_DATABASE_URL`.
struct TestDb {
    url: String,
    key: MasterKey,
    _dir: TempDir,
}

impl TestDb {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = super::sqlite_url(&dir.path().join("splice.db"));
        Self {
            url,
            key: MasterKey::generate(),
            _dir: dir,
        }
    }

    /// `None` when no PostgreSQL server is configured for tests.
    async fn postgres() -> Option<Self> {
        use sqlx::Connection;
        let admin = std::env::var("SPLICE_TEST_DATABASE_URL").ok()?;
        let name = format!(
            "splice_test_{}",
            splice_crypto::random_token(9)
                .to_lowercase()
                .replace(['-', '_'], "x")
        );
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .expect("connect to SPLICE_TEST_DATABASE_URL");
        sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap();
        let base = admin.rsplit_once('/').expect("database URL has a path").0;
        let url = format!("{base}/{name}");
        Some(Self {
            url,
            key: MasterKey::generate(),
            _dir: tempfile::tempdir().unwrap(),
        })
    }

    async fn open(&self) -> SqlStore {
        let settings = super::PoolSettings::default();
        SqlStore::open(&self.url, Cipher::new(&self.key), &settings)
            .await
            .unwrap()
    }
}

/// Runs each named test body on SQLite, and on PostgreSQL when one is configured.
macro_rules! storage_suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = super::TestDb::sqlite().await;
                    super::$name(&db, db.open().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(db) = super::TestDb::postgres().await else {
                        eprintln!("SPLICE_TEST_DATABASE_URL is not set; skipping the PostgreSQL run");
                        return;
                    };
                    super::$name(&db, db.open().await).await;
                }
            )*
        }
    };
}

storage_suite!(
    connector_round_trips_with_its_secret,
    provider_connectors_round_trip_with_and_without_a_secret,
    connector_update_checks_the_version,
    deploys_bump_the_version_and_keep_created_at,
    integrations_using_a_connector_come_with_its_name,
    schedules_are_stored_and_their_slots_only_advance,
    auth_state_is_single_use,
    identities_are_found_by_subject_and_tenant,
    token_updates_lose_to_a_newer_writer,
    status_changes_are_stored_with_the_reason,
    commit_creates_the_install_and_marks_the_session,
    invocations_list_newest_first_with_filters,
    a_different_master_key_is_refused,
    refresh_guards_exclude_each_other_across_pools,
    due_identities_are_expiring_or_stale_and_not_backing_off,
    events_list_newest_first_and_poll_after_a_cursor,
    connectors_can_be_flagged_misconfigured,
    hook_secrets_are_sealed_and_the_first_one_stays,
    jobs_round_trip_with_payload_and_result,
    an_idempotency_key_returns_the_stored_job,
    a_batch_enqueues_in_order_and_keys_dedupe_within_and_across,
    jobs_wait_for_their_run_at_and_kind,
    claims_take_the_oldest_due_first_up_to_the_limit,
    a_lapsed_lease_is_reclaimed_and_the_stale_run_refused,
    a_job_queued_below_the_claim_floor_waits_for_the_sweep,
    failures_retry_then_dead_letter_with_the_last_error,
    a_batch_of_outcomes_is_written_with_its_events,
    replay_and_cancel_move_jobs_between_states,
    a_lapsed_last_attempt_becomes_a_dead_letter,
    the_partition_limit_caps_running_jobs,
    purge_removes_only_old_finished_jobs,
    concurrent_claimers_never_share_a_job,
    concurrent_claimers_respect_the_partition_limit,
);

fn tags(pairs: &[(&str, &str)]) -> Tags {
    let map = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Tags::parse(map).unwrap()
}

fn connector(id: &str, secret: &str) -> Connector {
    Connector {
        id: ConnectorId::parse(id).unwrap(),
        config: ConnectorConfig::OAuth2(OAuth2Config {
            authorization_url: "https://idp.example/auth".into(),
            token_url: "https://idp.example/token".into(),
            client_id: "client-1".into(),
            client_secret: Secret::new(secret),
            scopes: vec!["openid".into()],
            pkce: true,
            authorize_params: BTreeMap::new(),
            client_auth: ClientAuth::Basic,
            userinfo_url: None,
        }),
        misconfigured: None,
        meta: Meta::new(tags(&[("team", "core")]), 1_000),
    }
}

fn integration(id: &str) -> Integration {
    let mut connectors = BTreeMap::new();
    connectors.insert("idp".to_string(), ConnectorId::parse("idp").unwrap());
    Integration {
        id: IntegrationId::parse(id).unwrap(),
        files: BTreeMap::from([("integration.js".to_string(), "export default 1".to_string())]),
        connectors,
        runtime: RuntimeSettings::default(),
        schedules: Vec::new(),
        meta: Meta::new(Tags::default(), 1_000),
    }
}

fn identity(tenant: &str, subject: &str, access: &str) -> Identity {
    Identity {
        id: IdentityId::generate(),
        connector: ConnectorId::parse("idp").unwrap(),
        tenant: TenantId::parse(tenant).unwrap(),
        subject: Some(subject.into()),
        status: IdentityStatus::Healthy,
        status_reason: None,
        status_at: 1_000,
        tokens: TokenSet {
            access_token: Secret::new(access),
            refresh_token: Some(Secret::new(format!("{access}-refresh"))),
            expires_at: Some(5_000),
            scopes: vec!["openid".into()],
            values: Default::default(),
            named: Default::default(),
        },
        refresh: RefreshState {
            refreshed_at: 1_000,
            ..RefreshState::default()
        },
        meta: Meta::new(tags(&[("source", "test")]), 1_000),
    }
}

fn session(integration: &str, tenant: &str) -> Session {
    Session {
        id: SessionId::generate(),
        integration: IntegrationId::parse(integration).unwrap(),
        tenant: TenantId::parse(tenant).unwrap(),
        redirect_url: "https://app.example/done".into(),
        status: SessionStatus::Pending,
        steps: vec![SessionStep {
            name: "idp".into(),
            connector: ConnectorId::parse("idp").unwrap(),
            identity: None,
            settings: Default::default(),
            reconnect: None,
        }],
        error: None,
        install: None,
        reconnect: false,
        expires_at: 10_000,
        meta: Meta::new(tags(&[("plan", "pro")]), 1_000),
    }
}

/// Connector `idp`, integration `sync`, and one session of tenant `acme` whose step holds a
/// new identity.
async fn seed(store: &SqlStore) -> (Session, Identity) {
    store
        .create_connector(&connector("idp", "client-secret-1"))
        .await
        .unwrap();
    store
        .put_integration(&integration("sync"), b"bytecode")
        .await
        .unwrap();
    let mut session = session("sync", "acme");
    store.create_session(&session).await.unwrap();
    let identity = identity("acme", "alice", "access-1");
    session.steps[0].identity = Some(identity.id.clone());
    session.status = SessionStatus::Completed;
    session.meta.version += 1;
    store
        .attach_identity(&session, &identity, true)
        .await
        .unwrap();
    (session, identity)
}

async fn connector_round_trips_with_its_secret(_db: &TestDb, store: SqlStore) {
    let created = connector("idp", "client-secret-1");
    store.create_connector(&created).await.unwrap();

    let loaded = store.get_connector(&created.id).await.unwrap().unwrap();
    assert_eq!(loaded, created);

    let err = store.create_connector(&created).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
}

async fn hook_secrets_are_sealed_and_the_first_one_stays(_db: &TestDb, store: SqlStore) {
    use sqlx::Row;
    let created = connector("asana", "client-secret-1");
    store.create_connector(&created).await.unwrap();
    let id = &created.id;
    let first = Secret::new("b537207f20cbfa02357cf448134da559e8bd039bb0e0d4cd4d9d9b6f0a0d1ef2");
    let second = Secret::new("an-impostor-secret");

    // Only an opened hook takes a secret, and only before it expires.
    let claim = store
        .add_hook_secret(id, "projects", &first, 1_000)
        .await
        .unwrap();
    assert_eq!(claim, HookClaim::NotOpen);
    assert!(
        store
            .open_hook(id, "projects", 61_000, 1_000)
            .await
            .unwrap()
    );
    assert!(
        !store
            .open_hook(id, "projects", 99_000, 2_000)
            .await
            .unwrap()
    );
    assert_eq!(store.hook_secret(id, "projects").await.unwrap(), None);
    let claim = store
        .add_hook_secret(id, "projects", &first, 2_000)
        .await
        .unwrap();
    assert_eq!(claim, HookClaim::Stored);
    let claim = store
        .add_hook_secret(id, "projects", &second, 3_000)
        .await
        .unwrap();
    assert_eq!(claim, HookClaim::Taken);
    assert_eq!(
        store.hook_secret(id, "projects").await.unwrap(),
        Some(first.clone())
    );

    assert!(store.open_hook(id, "tasks", 10_000, 1_000).await.unwrap());
    let late = store
        .add_hook_secret(id, "tasks", &second, 10_001)
        .await
        .unwrap();
    assert_eq!(late, HookClaim::NotOpen);
    assert_eq!(store.hook_secret(id, "tasks").await.unwrap(), None);

    let row = sqlx::query("SELECT secret FROM hook_secrets WHERE hook = 'projects'")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    let raw: Vec<u8> = row.try_get("secret").unwrap();
    assert!(!String::from_utf8_lossy(&raw).contains(first.expose()));

    // Deleting the connector takes its hooks along.
    assert!(store.delete_connector(id).await.unwrap());
    store.create_connector(&created).await.unwrap();
    assert_eq!(store.hook_secret(id, "projects").await.unwrap(), None);
    let claim = store
        .add_hook_secret(id, "projects", &first, 2_000)
        .await
        .unwrap();
    assert_eq!(claim, HookClaim::NotOpen);
}

async fn connector_update_checks_the_version(_db: &TestDb, store: SqlStore) {
    let mut c = connector("idp", "one");
    store.create_connector(&c).await.unwrap();

    c.meta.version = 2;
    c.meta.updated_at = 2_000;
    store.update_connector(&c).await.unwrap();
    assert_eq!(
        store
            .get_connector(&c.id)
            .await
            .unwrap()
            .unwrap()
            .meta
            .version,
        2
    );

    let err = store.update_connector(&c).await.unwrap_err();
    assert!(matches!(err, StoreError::VersionMismatch(_)), "{err:?}");

    assert!(store.delete_connector(&c.id).await.unwrap());
    assert!(!store.delete_connector(&c.id).await.unwrap());
    assert!(store.get_connector(&c.id).await.unwrap().is_none());
}

async fn integrations_using_a_connector_come_with_its_name(_db: &TestDb, store: SqlStore) {
    let mut crm = integration("crm-sync");
    crm.connectors
        .insert("crm".into(), ConnectorId::parse("hubspot").unwrap());
    let mut other = integration("chat");
    other.connectors.clear();
    for (integration, code) in [(&crm, b"c"), (&other, b"o"), (&integration("mail"), b"m")] {
        store.put_integration(integration, code).await.unwrap();
    }
    let using = |id: &str| {
        let store = store.clone();
        let id = ConnectorId::parse(id).unwrap();
        async move { store.integrations_using(&id).await.unwrap() }
    };
    let names = |pairs: Vec<(IntegrationId, String)>| -> Vec<(String, String)> {
        pairs
            .into_iter()
            .map(|(id, n)| (id.to_string(), n))
            .collect()
    };
    assert_eq!(
        names(using("hubspot").await),
        [("crm-sync".to_owned(), "crm".to_owned())]
    );
    assert_eq!(
        names(using("idp").await),
        [
            ("crm-sync".to_owned(), "idp".to_owned()),
            ("mail".to_owned(), "idp".to_owned())
        ]
    );
    assert!(using("slack").await.is_empty());
}

async fn deploys_bump_the_version_and_keep_created_at(_db: &TestDb, store: SqlStore) {
    let (first, created) = store
        .put_integration(&integration("sync"), b"v1")
        .await
        .unwrap();
    assert!(created);
    assert_eq!(first.meta.version, 1);

    let mut next = integration("sync");
    next.meta.created_at = 9_999;
    next.meta.updated_at = 9_999;
    let (second, created) = store.put_integration(&next, b"v2").await.unwrap();
    assert!(!created);
    assert_eq!(second.meta.version, 2);
    assert_eq!(second.meta.created_at, 1_000);

    let program = store.get_program(&next.id).await.unwrap().unwrap();
    assert_eq!(program.bytecode, b"v2");
    assert_eq!(program.integration.meta.version, 2);
}

async fn auth_state_is_single_use(_db: &TestDb, store: SqlStore) {
    let (session, _) = seed(&store).await;
    let state = AuthState {
        state_hash: "hash-1".into(),
        session: session.id.clone(),
        step: 0,
        connector: ConnectorId::parse("idp").unwrap(),
        pkce_verifier: Some(Secret::new("verifier-xyz")),
        expires_at: 5_000,
    };
    store.put_auth_state(&state).await.unwrap();

    assert_eq!(store.take_auth_state("hash-1").await.unwrap(), Some(state));
    assert_eq!(store.take_auth_state("hash-1").await.unwrap(), None);
    assert_eq!(store.take_auth_state("unknown").await.unwrap(), None);
}

async fn identities_are_found_by_subject_and_tenant(_db: &TestDb, store: SqlStore) {
    let (_, identity) = seed(&store).await;
    let connector = ConnectorId::parse("idp").unwrap();
    let acme = TenantId::parse("acme").unwrap();

    let found = store
        .find_identity_by_subject(&connector, &acme, "alice")
        .await
        .unwrap();
    assert_eq!(found.as_ref().map(|i| &i.id), Some(&identity.id));
    assert_eq!(found.unwrap().tokens, identity.tokens);

    let other = TenantId::parse("globex").unwrap();
    assert!(
        store
            .find_identity_by_subject(&connector, &other, "alice")
            .await
            .unwrap()
            .is_none()
    );

    let by_subject = store
        .identities_with_subjects(&connector, &["bob", "alice"])
        .await
        .unwrap();
    assert_eq!(by_subject, vec![identity.id.clone()]);
    assert!(
        store
            .identities_with_subjects(&connector, &[])
            .await
            .unwrap()
            .is_empty()
    );

    let filter = [TagFilter::parse("source=test").unwrap()];
    assert_eq!(
        store
            .list_identities(&connector, Some(&acme), &filter)
            .await
            .unwrap()
            .len(),
        1
    );
    let miss = [TagFilter::parse("source=other").unwrap()];
    assert!(
        store
            .list_identities(&connector, None, &miss)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn token_updates_lose_to_a_newer_writer(_db: &TestDb, store: SqlStore) {
    let (_, identity) = seed(&store).await;
    let mut fresh = identity.tokens.clone();
    fresh.access_token = Secret::new("access-2");

    let written = store.update_tokens(&identity.id, 1, &fresh).await.unwrap();
    assert_eq!(written.meta.version, 2);
    assert_eq!(written.tokens.access_token.expose(), "access-2");

    // A refresher that read version 1 must not overwrite the newer token.
    let mut stale = identity.tokens.clone();
    stale.access_token = Secret::new("access-stale");
    let err = store
        .update_tokens(&identity.id, 1, &stale)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::VersionMismatch(_)), "{err:?}");
    let now = store.get_identity(&identity.id).await.unwrap().unwrap();
    assert_eq!(now.tokens.access_token.expose(), "access-2");
}

async fn status_changes_are_stored_with_the_reason(_db: &TestDb, store: SqlStore) {
    let (_, mut identity) = seed(&store).await;
    identity.status = IdentityStatus::NeedsReauth;
    identity.status_reason = Some("invalid_grant: revoked".into());
    identity.meta.version += 1;
    identity.refresh.failure_days = 2;
    identity.refresh.last_failure_day = Some(19_000);
    let event = Event::new(
        "identity.needs_reauth",
        Some(identity.tenant.clone()),
        identity.id.as_str(),
        serde_json::json!({"reason": "invalid_grant: revoked"}),
    );
    store.update_health(&identity, Some(&event)).await.unwrap();
    let events = store
        .list_events(&EventQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events, vec![event.clone()]);
    // The same version again loses, and records no event.
    let err = store
        .update_health(&identity, Some(&event))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::VersionMismatch(_)), "{err:?}");
    let events = store
        .list_events(&EventQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1);

    let loaded = store.get_identity(&identity.id).await.unwrap().unwrap();
    assert_eq!(loaded.status, IdentityStatus::NeedsReauth);
    assert_eq!(
        loaded.status_reason.as_deref(),
        Some("invalid_grant: revoked")
    );

    // New tokens make it healthy again.
    let healed = store
        .update_tokens(&identity.id, 2, &identity.tokens)
        .await
        .unwrap();
    assert_eq!(healed.status, IdentityStatus::Healthy);
    assert_eq!(healed.status_reason, None);
}

async fn commit_creates_the_install_and_marks_the_session(_db: &TestDb, store: SqlStore) {
    let (mut session, identity) = seed(&store).await;
    let install = Install {
        id: InstallId::generate(),
        integration: session.integration.clone(),
        tenant: session.tenant.clone(),
        identities: BTreeMap::from([("idp".to_string(), identity.id.clone())]),
        meta: Meta::new(session.meta.tags.clone(), 2_000),
    };
    session.status = SessionStatus::Committed;
    session.install = Some(install.id.clone());
    session.meta.version += 1;
    store.commit_session(&session, &install).await.unwrap();

    assert_eq!(
        store.get_install(&install.id).await.unwrap(),
        Some(install.clone())
    );
    let stored = store.get_session(&session.id).await.unwrap().unwrap();
    assert_eq!(stored, session);

    let acme = TenantId::parse("acme").unwrap();
    let pro = [TagFilter::parse("plan=pro").unwrap()];
    let listed = store
        .list_installs(&session.integration, Some(&acme), &pro)
        .await
        .unwrap();
    assert_eq!(listed, vec![install.clone()]);
    let free = [TagFilter::parse("plan=free").unwrap()];
    assert!(
        store
            .list_installs(&session.integration, None, &free)
            .await
            .unwrap()
            .is_empty()
    );

    // Committing again from the same version fails and creates nothing.
    let again = Install {
        id: InstallId::generate(),
        ..install.clone()
    };
    let err = store.commit_session(&session, &again).await.unwrap_err();
    assert!(matches!(err, StoreError::VersionMismatch(_)), "{err:?}");
    assert!(store.get_install(&again.id).await.unwrap().is_none());

    assert!(store.delete_install(&install.id).await.unwrap());
    assert!(
        store
            .list_installs(&session.integration, None, &pro)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn invocations_list_newest_first_with_filters(_db: &TestDb, store: SqlStore) {
    let id = IntegrationId::parse("sync").unwrap();
    let record = |at: i64, install: Option<&str>| InvocationRecord {
        integration: id.clone(),
        install: install.map(str::to_string),
        at,
        method: "GET".into(),
        path: "/x".into(),
        status: 200,
        duration_us: 42,
        error: None,
        logs: serde_json::json!([{"level": "info", "message": "hi", "at_ms": 0}]),
    };
    let batch = [record(1, None), record(2, Some("ins_a")), record(3, None)];
    store.record_invocations(&batch).await.unwrap();

    let all = InvocationQuery {
        limit: 10,
        ..Default::default()
    };
    let ats: Vec<_> = store
        .list_invocations(&id, &all)
        .await
        .unwrap()
        .iter()
        .map(|r| r.at)
        .collect();
    assert_eq!(ats, vec![3, 2, 1]);

    let by_install = InvocationQuery {
        install: Some("ins_a".into()),
        limit: 10,
        ..all.clone()
    };
    assert_eq!(
        store.list_invocations(&id, &by_install).await.unwrap(),
        vec![batch[1].clone()]
    );

    // A batch larger than one multi-row insert is written whole.
    let many: Vec<_> = (10..260).map(|at| record(at, Some("ins_b"))).collect();
    store.record_invocations(&many).await.unwrap();
    let by_b = InvocationQuery {
        install: Some("ins_b".into()),
        limit: 500,
        ..Default::default()
    };
    assert_eq!(store.list_invocations(&id, &by_b).await.unwrap().len(), 250);

    let window = InvocationQuery {
        since: Some(2),
        until: Some(3),
        limit: 10,
        ..all
    };
    assert_eq!(store.list_invocations(&id, &window).await.unwrap().len(), 1);
}

async fn a_different_master_key_is_refused(db: &TestDb, store: SqlStore) {
    store.close().await;
    let other = Cipher::new(&MasterKey::generate());
    let settings = super::PoolSettings::default();
    let err = SqlStore::open(&db.url, other, &settings)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, OpenError::WrongMasterKey), "{err:?}");
}

/// Two pools stand for two nodes: the second guard waits until the first is released.
async fn refresh_guards_exclude_each_other_across_pools(db: &TestDb, store: SqlStore) {
    let (_, identity) = seed(&store).await;
    if store.dialect() == super::Dialect::Sqlite {
        // A SQLite store serves one node; the in-process lock is the whole guard.
        let guard = store.refresh_guard(&identity.id).await.unwrap();
        guard.release().await;
        return;
    }
    let other_node = db.open().await;
    let first = store.refresh_guard(&identity.id).await.unwrap();

    let id = identity.id.clone();
    let waiter = tokio::spawn(async move {
        let guard = other_node.refresh_guard(&id).await.unwrap();
        guard.release().await;
        std::time::Instant::now()
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "second node took the guard while the first held it"
    );
    let released_at = std::time::Instant::now();
    first.release().await;
    let acquired_at = waiter.await.unwrap();
    assert!(acquired_at >= released_at);

    // Dropping a guard without releasing it (a failed refresh) frees it too.
    let dropped = store.refresh_guard(&identity.id).await.unwrap();
    drop(dropped);
    let again = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        store.refresh_guard(&identity.id),
    )
    .await
    .expect("a dropped guard is released")
    .unwrap();
    again.release().await;
}

#[tokio::test]
async fn no_secret_reaches_the_database_file() {
    let db = TestDb::sqlite().await;
    let store = db.open().await;
    let (session, identity) = seed(&store).await;
    let state = AuthState {
        state_hash: "h".into(),
        session: session.id.clone(),
        step: 0,
        connector: identity.connector.clone(),
        pkce_verifier: Some(Secret::new("pkce-verifier-secret")),
        expires_at: 1,
    };
    store.put_auth_state(&state).await.unwrap();
    store.close().await;

    let mut raw = Vec::new();
    for entry in std::fs::read_dir(db._dir.path()).unwrap() {
        raw.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    assert!(raw.len() > 4096, "database files were read");
    for secret in [
        "client-secret-1",
        "access-1",
        "access-1-refresh",
        "pkce-verifier-secret",
    ] {
        let found = raw.windows(secret.len()).any(|w| w == secret.as_bytes());
        assert!(!found, "{secret} is stored in plain text");
    }
    // Non-secret data is stored, so the search above looks at real content.
    assert!(raw.windows(5).any(|w| w == b"alice"));
}

/// Copies a seeded SQLite store into a second SQLite store, and into PostgreSQL when one is
/// configured; secrets still open under the same key.
#[tokio::test]
async fn copy_moves_every_row_and_secrets_still_open() {
    let source_db = TestDb::sqlite().await;
    let source = source_db.open().await;
    let (session, identity) = seed(&source).await;
    let record = InvocationRecord {
        integration: session.integration.clone(),
        install: None,
        at: 7,
        method: "GET".into(),
        path: "/".into(),
        status: 200,
        duration_us: 1,
        error: None,
        logs: serde_json::json!([]),
    };
    source.record_invocations(&[record]).await.unwrap();

    let mut targets = vec![TestDb::sqlite().await];
    targets.extend(TestDb::postgres().await);
    for mut target_db in targets {
        target_db.key = source_db.key.clone();
        let target = target_db.open().await;
        let report = source.copy_into(&target).await.unwrap();
        let rows = |table: &str| report.iter().find(|(t, _)| *t == table).unwrap().1;
        assert_eq!(rows("connectors"), 1);
        assert_eq!(rows("identities"), 1);
        assert_eq!(rows("sessions"), 1);
        assert_eq!(rows("invocations"), 1);

        let copied = target.get_identity(&identity.id).await.unwrap().unwrap();
        assert_eq!(copied.tokens, identity.tokens);
        let connector = target
            .get_connector(&identity.connector)
            .await
            .unwrap()
            .unwrap();
        let secret = connector.config.client_secret().map(Secret::expose);
        assert_eq!(secret, Some("client-secret-1"));

        // A second copy into a populated database is refused.
        let err = source.copy_into(&target).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    }
}

async fn due_identities_are_expiring_or_stale_and_not_backing_off(_db: &TestDb, store: SqlStore) {
    let (_, identity) = seed(&store).await; // expires at 5_000, refreshed at 1_000
    assert_eq!(
        store.identities_due(6_000, 0, 0, 10).await.unwrap(),
        vec![identity.id.clone()]
    );
    assert!(
        store
            .identities_due(4_000, 0, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Stale: tokens obtained before the cutoff, whatever their expiry.
    assert_eq!(
        store.identities_due(0, 2_000, 0, 10).await.unwrap(),
        vec![identity.id.clone()]
    );

    let mut backing_off = identity.clone();
    backing_off.refresh.next_attempt_at = Some(9_000);
    backing_off.meta.version += 1;
    store.update_health(&backing_off, None).await.unwrap();
    assert!(
        store
            .identities_due(6_000, 0, 8_999, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .identities_due(6_000, 0, 9_000, 10)
            .await
            .unwrap()
            .len(),
        1
    );

    let mut dead = backing_off.clone();
    dead.status = IdentityStatus::Dead;
    dead.meta.version += 1;
    store.update_health(&dead, None).await.unwrap();
    assert!(
        store
            .identities_due(6_000, 2_000, 9_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn events_list_newest_first_and_poll_after_a_cursor(_db: &TestDb, store: SqlStore) {
    let acme = TenantId::parse("acme").unwrap();
    let made: Vec<Event> = (0..3)
        .map(|i| {
            Event::new(
                if i == 1 {
                    "install.created"
                } else {
                    "identity.dead"
                },
                Some(acme.clone()),
                &format!("subject-{i}"),
                serde_json::json!({"n": i}),
            )
        })
        .collect();
    for event in &made {
        store.record_event(event).await.unwrap();
    }
    let newest = store
        .list_events(&EventQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let subjects: Vec<_> = newest.iter().map(|e| e.subject.as_str()).collect();
    assert_eq!(subjects, ["subject-2", "subject-1", "subject-0"]);

    let dead = EventQuery {
        kind: Some("identity.dead".into()),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(store.list_events(&dead).await.unwrap().len(), 2);

    let after = EventQuery {
        after: Some(made[0].id.to_string()),
        limit: 10,
        ..Default::default()
    };
    let polled: Vec<_> = store
        .list_events(&after)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(polled, vec![made[1].id.clone(), made[2].id.clone()]);
}

async fn connectors_can_be_flagged_misconfigured(_db: &TestDb, store: SqlStore) {
    let mut c = connector("idp", "one");
    store.create_connector(&c).await.unwrap();
    let event = Event::new(
        "connector.misconfigured",
        None,
        "idp",
        serde_json::json!({}),
    );
    store
        .set_connector_misconfigured(&c.id, Some("invalid_client: bad secret"), &event)
        .await
        .unwrap();
    let flagged = store.get_connector(&c.id).await.unwrap().unwrap();
    assert_eq!(
        flagged.misconfigured.as_deref(),
        Some("invalid_client: bad secret")
    );

    // Updating the connector (new credentials) clears the flag.
    c.meta.version = 2;
    store.update_connector(&c).await.unwrap();
    assert_eq!(
        store
            .get_connector(&c.id)
            .await
            .unwrap()
            .unwrap()
            .misconfigured,
        None
    );
}

async fn provider_connectors_round_trip_with_and_without_a_secret(_db: &TestDb, store: SqlStore) {
    let oauth = Connector {
        id: ConnectorId::parse("slack").unwrap(),
        config: ConnectorConfig::Provider(ProviderConfig {
            provider: "slack".into(),
            client_id: Some("id".into()),
            client_secret: Some(Secret::new("slack-secret")),
            scopes: Some(vec!["chat:write".into()]),
            settings: Default::default(),
            webhook: Some(WebhookConfig {
                provider: None,
                secret: Some(Secret::new("slack-signing-secret")),
                scheme: None,
            }),
        }),
        misconfigured: None,
        meta: Meta::new(Tags::default(), 1),
    };
    let keyed = Connector {
        id: ConnectorId::parse("stripe").unwrap(),
        config: ConnectorConfig::Provider(ProviderConfig {
            provider: "stripe".into(),
            client_id: None,
            client_secret: None,
            scopes: None,
            settings: [("base_url".to_string(), "https://api.example".to_string())].into(),
            webhook: None,
        }),
        misconfigured: None,
        meta: Meta::new(Tags::default(), 1),
    };
    for connector in [oauth, keyed] {
        store.create_connector(&connector).await.unwrap();
        assert_eq!(
            store.get_connector(&connector.id).await.unwrap(),
            Some(connector)
        );
    }
}

// The job queue.

const LEASE: std::time::Duration = std::time::Duration::from_secs(30);

/// A claim by `worker` at `now` of up to ten jobs of any kind, with a 30 s lease.
fn claim_at(worker: &str, now: Millis) -> JobClaim<'_> {
    JobClaim {
        worker,
        kinds: &[],
        limit: 10,
        lease: LEASE,
        max_running_per_partition: None,
        now,
    }
}

fn new_job(kind: &str, n: i64, run_at: Millis) -> NewJob {
    NewJob::new(kind, serde_json::json!({ "n": n }), run_at)
}

async fn jobs_round_trip_with_payload_and_result(_db: &TestDb, store: SqlStore) {
    let new = NewJob {
        partition: Some("sync".into()),
        max_attempts: 3,
        ..new_job("integration.task", 7, 1_000)
    };
    let (queued, created) = store.enqueue_job(&new, 900).await.unwrap();
    assert!(created);
    assert!(
        queued.id.starts_with("job_") && queued.id.len() == 36,
        "{}",
        queued.id
    );
    assert_eq!(queued.status, JobStatus::Queued);
    assert_eq!(queued.payload, serde_json::json!({ "n": 7 }));
    assert_eq!(queued.partition.as_deref(), Some("sync"));
    assert_eq!((queued.attempts, queued.max_attempts), (0, 3));
    assert_eq!((queued.run_at, queued.created_at), (1_000, 900));
    assert_eq!(queued.started_at, None);
    assert_eq!(store.next_job_due(&[]).await.unwrap(), Some(1_000));

    let claimed = store
        .claim_jobs(&claim_at("node-a/1", 1_000))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let run = &claimed[0];
    assert_eq!(run.id, queued.id);
    assert_eq!(run.status, JobStatus::Running);
    assert_eq!(run.attempts, 1);
    assert_eq!(run.lease_owner.as_deref(), Some("node-a/1"));
    assert_eq!(run.lease_until, Some(31_000));
    assert_eq!(run.started_at, Some(1_000));
    assert_eq!(run.payload, queued.payload);

    let beat = store
        .heartbeat_job(run, LEASE, 20_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(beat.lease_until, Some(50_000));
    // While leased, the job is due again only when the lease lapses.
    assert_eq!(store.next_job_due(&[]).await.unwrap(), Some(50_000));

    let result = serde_json::json!({ "synced": 42 });
    let done = store
        .complete_job(run, &result, 21_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(done.result, Some(result));
    assert_eq!((done.finished_at, done.updated_at), (Some(21_000), 21_000));
    assert_eq!(done.lease_until, None);
    assert_eq!(store.get_job(&run.id).await.unwrap(), Some(done));
    assert_eq!(store.next_job_due(&[]).await.unwrap(), None);
    assert!(
        store
            .claim_jobs(&claim_at("node-a/1", 99_000))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.get_job("job_missing").await.unwrap(), None);
}

async fn a_batch_enqueues_in_order_and_keys_dedupe_within_and_across(
    _db: &TestDb,
    store: SqlStore,
) {
    let keyed = |n: i64, key: &str| NewJob {
        idempotency_key: Some(key.into()),
        ..new_job("webhook.event", n, 1_000)
    };
    let (earlier, _) = store.enqueue_job(&keyed(0, "k:old"), 900).await.unwrap();

    // 250 jobs: more than one statement's worth, with repeats inside the batch and a key
    // stored before.
    let mut batch: Vec<NewJob> = (1..=247)
        .map(|n| new_job("integration.task", n, 1_000))
        .collect();
    batch.push(keyed(248, "k:new"));
    batch.push(keyed(249, "k:new"));
    batch.push(keyed(250, "k:old"));
    let stored = store.enqueue_jobs(&batch, 1_000).await.unwrap();
    assert_eq!(stored.len(), 250);
    for (n, (job, created)) in stored.iter().take(247).enumerate() {
        assert!(created);
        assert_eq!(job.payload, serde_json::json!({ "n": n + 1 }));
        assert_eq!(job.status, JobStatus::Queued);
    }
    let (first, created) = &stored[247];
    assert!(created);
    let (second, created_again) = &stored[248];
    assert!(!created_again);
    assert_eq!(second.id, first.id);
    assert_eq!(second.payload, serde_json::json!({ "n": 248 }));
    let (old, created) = &stored[249];
    assert!(!created);
    assert_eq!(old.id, earlier.id);

    let ids: std::collections::BTreeSet<_> = stored.iter().map(|(j, _)| j.id.clone()).collect();
    assert_eq!(ids.len(), 249);
    assert!(store.enqueue_jobs(&[], 1_000).await.unwrap().is_empty());
}

async fn an_idempotency_key_returns_the_stored_job(_db: &TestDb, store: SqlStore) {
    let new = NewJob {
        idempotency_key: Some("slack:delivery:Ev123".into()),
        ..new_job("webhook.event", 1, 1_000)
    };
    let (first, created) = store.enqueue_job(&new, 1_000).await.unwrap();
    assert!(created);

    // A redelivery, even with another payload, is the same job.
    let again = NewJob {
        payload: serde_json::json!({ "n": 2 }),
        ..new.clone()
    };
    let (second, created) = store.enqueue_job(&again, 2_000).await.unwrap();
    assert!(!created);
    assert_eq!(second, first);

    // Still the same job once it has run.
    let run = store
        .claim_jobs(&claim_at("w", 1_000))
        .await
        .unwrap()
        .remove(0);
    store
        .complete_job(&run, &serde_json::json!(null), 1_500)
        .await
        .unwrap()
        .unwrap();
    let (third, created) = store.enqueue_job(&new, 3_000).await.unwrap();
    assert!(!created);
    assert_eq!(
        (third.id, third.status),
        (first.id.clone(), JobStatus::Succeeded)
    );

    // Jobs without a key never collide.
    let (a, _) = store
        .enqueue_job(&new_job("webhook.event", 1, 1_000), 1_000)
        .await
        .unwrap();
    let (b, _) = store
        .enqueue_job(&new_job("webhook.event", 1, 1_000), 1_000)
        .await
        .unwrap();
    assert_ne!(a.id, b.id);
    let all = JobQuery {
        limit: 10,
        ..Default::default()
    };
    assert_eq!(store.list_jobs(&all).await.unwrap().len(), 3);
}

async fn jobs_wait_for_their_run_at_and_kind(_db: &TestDb, store: SqlStore) {
    let (later, _) = store
        .enqueue_job(&new_job("schedule.fire", 1, 5_000), 0)
        .await
        .unwrap();
    let (sooner, _) = store
        .enqueue_job(&new_job("webhook.event", 2, 3_000), 0)
        .await
        .unwrap();
    assert_eq!(store.next_job_due(&[]).await.unwrap(), Some(3_000));
    assert_eq!(
        store.next_job_due(&["schedule.fire"]).await.unwrap(),
        Some(5_000)
    );
    assert_eq!(
        store.next_job_due(&["integration.task"]).await.unwrap(),
        None
    );

    assert!(
        store
            .claim_jobs(&claim_at("w", 2_999))
            .await
            .unwrap()
            .is_empty()
    );

    // A worker for schedules only does not take the due webhook event.
    let schedules = JobClaim {
        kinds: &["schedule.fire"],
        ..claim_at("w", 4_000)
    };
    assert!(store.claim_jobs(&schedules).await.unwrap().is_empty());

    let ids = |jobs: Vec<Job>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
    let due = store.claim_jobs(&claim_at("w", 4_000)).await.unwrap();
    assert_eq!(ids(due), vec![sooner.id.clone()]);
    let due = store.claim_jobs(&claim_at("w", 5_000)).await.unwrap();
    assert_eq!(ids(due), vec![later.id.clone()]);
}

async fn claims_take_the_oldest_due_first_up_to_the_limit(_db: &TestDb, store: SqlStore) {
    let mut made = Vec::new();
    for (n, run_at) in [(0, 300), (1, 100), (2, 200)] {
        made.push(
            store
                .enqueue_job(&new_job("k", n, run_at), 0)
                .await
                .unwrap()
                .0,
        );
    }
    let two = JobClaim {
        limit: 2,
        ..claim_at("w", 1_000)
    };
    let claimed: Vec<_> = store
        .claim_jobs(&two)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(claimed, vec![made[1].id.clone(), made[2].id.clone()]);
}

async fn a_job_queued_below_the_claim_floor_waits_for_the_sweep(_db: &TestDb, store: SqlStore) {
    let (first, _) = store.enqueue_job(&new_job("k", 1, 5_000), 0).await.unwrap();
    let taken = store.claim_jobs(&claim_at("w", 6_000)).await.unwrap();
    assert_eq!(taken[0].id, first.id);

    // Between sweeps claims start a second below the oldest job the last one took: a job
    // due before that (built long before it was committed, or by a node whose clock is
    // behind) waits for the next sweep.
    let (late, _) = store.enqueue_job(&new_job("k", 2, 2_999), 0).await.unwrap();
    let (close, _) = store.enqueue_job(&new_job("k", 3, 4_000), 0).await.unwrap();
    let ids = |jobs: Vec<Job>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.claim_jobs(&claim_at("w", 6_001)).await.unwrap()),
        [close.id]
    );
    assert!(
        store
            .claim_jobs(&claim_at("w", 6_500))
            .await
            .unwrap()
            .is_empty()
    );
    // The sweep, a second after the last, claims from the oldest.
    assert_eq!(
        ids(store.claim_jobs(&claim_at("w", 7_000)).await.unwrap()),
        [late.id]
    );
}

async fn a_lapsed_lease_is_reclaimed_and_the_stale_run_refused(_db: &TestDb, store: SqlStore) {
    let (job, _) = store.enqueue_job(&new_job("k", 1, 0), 0).await.unwrap();
    let stale = store
        .claim_jobs(&claim_at("node-a", 1_000))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(stale.lease_until, Some(31_000));

    // Node A is gone; before the lease lapses nobody else may take the job.
    assert!(
        store
            .claim_jobs(&claim_at("node-b", 31_000))
            .await
            .unwrap()
            .is_empty()
    );
    // Lapsed runs are looked for once a second: the last look was a millisecond ago.
    assert!(
        store
            .claim_jobs(&claim_at("node-b", 31_001))
            .await
            .unwrap()
            .is_empty()
    );
    let fresh = store
        .claim_jobs(&claim_at("node-b", 32_000))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(fresh.id, job.id);
    assert_eq!(
        (fresh.attempts, fresh.lease_owner.as_deref()),
        (2, Some("node-b"))
    );

    // Node A comes back: none of its writes land.
    assert_eq!(
        store.heartbeat_job(&stale, LEASE, 32_000).await.unwrap(),
        None
    );
    let late = serde_json::json!("late");
    assert_eq!(
        store.complete_job(&stale, &late, 32_000).await.unwrap(),
        None
    );
    assert_eq!(
        store.fail_job(&stale, "boom", None, 32_000).await.unwrap(),
        None
    );
    assert_eq!(store.get_job(&job.id).await.unwrap().unwrap(), fresh);

    // The same worker name re-claiming its own job is a new run too.
    let again = store
        .claim_jobs(&claim_at("node-b", 70_000))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(again.attempts, 3);
    assert_eq!(
        store.complete_job(&fresh, &late, 70_001).await.unwrap(),
        None
    );

    let done = store
        .complete_job(&again, &serde_json::json!("ok"), 70_002)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.result, Some(serde_json::json!("ok")));
    // A job never claimed has no run to write for.
    assert_eq!(store.complete_job(&job, &late, 70_003).await.unwrap(), None);
}

async fn failures_retry_then_dead_letter_with_the_last_error(_db: &TestDb, store: SqlStore) {
    let new = NewJob {
        max_attempts: 2,
        ..new_job("webhook.delivery", 1, 0)
    };
    let (job, _) = store.enqueue_job(&new, 0).await.unwrap();

    let first = store
        .claim_jobs(&claim_at("w", 1_000))
        .await
        .unwrap()
        .remove(0);
    let retried = store
        .fail_job(&first, "HTTP 503", Some(5_000), 1_100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(retried.status, JobStatus::Queued);
    assert_eq!((retried.run_at, retried.attempts), (5_000, 1));
    assert_eq!(retried.last_error.as_deref(), Some("HTTP 503"));
    assert_eq!((retried.lease_until, retried.finished_at), (None, None));
    assert!(
        store
            .claim_jobs(&claim_at("w", 4_999))
            .await
            .unwrap()
            .is_empty()
    );

    let second = store
        .claim_jobs(&claim_at("w", 5_000))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(second.attempts, 2);
    let dead = store
        .fail_job(&second, "HTTP 500", Some(9_000), 5_100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dead.status, JobStatus::Failed);
    assert_eq!(dead.last_error.as_deref(), Some("HTTP 500"));
    assert_eq!((dead.run_at, dead.finished_at), (5_000, Some(5_100)));
    assert!(
        store
            .claim_jobs(&claim_at("w", 99_000))
            .await
            .unwrap()
            .is_empty()
    );

    let dead_letters = JobQuery {
        status: Some(JobStatus::Failed),
        limit: 10,
        ..Default::default()
    };
    let listed = store.list_jobs(&dead_letters).await.unwrap();
    assert_eq!(listed, vec![dead.clone()]);
    assert_eq!(listed[0].id, job.id);

    // A failure without `retry_at` is final even with attempts left.
    store.enqueue_job(&new_job("k", 2, 0), 0).await.unwrap();
    let run = store
        .claim_jobs(&claim_at("w", 100_000))
        .await
        .unwrap()
        .remove(0);
    let final_failure = store
        .fail_job(&run, "bad payload", None, 100_001)
        .await
        .unwrap();
    assert_eq!(final_failure.unwrap().status, JobStatus::Failed);
}

async fn a_batch_of_outcomes_is_written_with_its_events(_db: &TestDb, store: SqlStore) {
    let jobs: Vec<NewJob> = (0..5)
        .map(|n| NewJob {
            max_attempts: 2,
            ..new_job("integration.task", n, 0)
        })
        .collect();
    let queued: Vec<Job> = store
        .enqueue_jobs(&jobs, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|(job, _)| job)
        .collect();
    let claim = JobClaim {
        limit: 4,
        ..claim_at("w", 1_000)
    };
    let runs = store.claim_jobs(&claim).await.unwrap();
    assert_eq!(runs.len(), 4);
    let mut stale = runs[3].clone();
    stale.lease_owner = Some("another".into());
    let never_claimed = queued
        .iter()
        .find(|job| runs.iter().all(|run| run.id != job.id))
        .unwrap()
        .clone();

    let result = serde_json::json!({ "synced": 3 });
    let outcomes = [
        (&runs[0], JobOutcome::Succeeded(&result)),
        (
            &runs[1],
            JobOutcome::Failed {
                error: "HTTP 503",
                retry_at: Some(5_000),
            },
        ),
        (
            &runs[2],
            JobOutcome::Failed {
                error: "bad payload",
                retry_at: None,
            },
        ),
        (&stale, JobOutcome::Succeeded(&result)),
        (&never_claimed, JobOutcome::Succeeded(&result)),
    ];
    let event = |job: &Job| {
        let kind = format!("test.{}", job.status.as_str());
        Some(Event::new(
            &kind,
            None,
            &job.id,
            serde_json::json!(job.last_error),
        ))
    };
    let finished = store.finish_jobs(&outcomes, 1_200, &event).await.unwrap();

    let statuses: Vec<Option<JobStatus>> = finished
        .iter()
        .map(|j| j.as_ref().map(|j| j.status))
        .collect();
    assert_eq!(
        statuses,
        [
            Some(JobStatus::Succeeded),
            Some(JobStatus::Queued),
            Some(JobStatus::Failed),
            None,
            None
        ]
    );
    let done = finished[0].as_ref().unwrap();
    assert_eq!(done.result, Some(result.clone()));
    assert_eq!((done.finished_at, done.lease_until), (Some(1_200), None));
    let retried = finished[1].as_ref().unwrap();
    assert_eq!((retried.run_at, retried.attempts), (5_000, 1));
    assert_eq!(retried.last_error.as_deref(), Some("HTTP 503"));
    let dead = finished[2].as_ref().unwrap();
    assert_eq!(dead.last_error.as_deref(), Some("bad payload"));
    // What lost its run is as the claim left it.
    assert_eq!(store.get_job(&runs[3].id).await.unwrap().unwrap(), runs[3]);
    assert_eq!(
        store.get_job(&never_claimed.id).await.unwrap().unwrap(),
        never_claimed
    );

    // One event per written outcome, in order, and none for the others.
    let query = EventQuery {
        after: Some(String::new()),
        limit: 10,
        ..Default::default()
    };
    let events: Vec<(String, String)> = store
        .list_events(&query)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.subject))
        .collect();
    assert_eq!(
        events,
        [
            ("test.succeeded".to_owned(), runs[0].id.clone()),
            ("test.queued".to_owned(), runs[1].id.clone()),
            ("test.failed".to_owned(), runs[2].id.clone()),
        ]
    );
}

async fn replay_and_cancel_move_jobs_between_states(_db: &TestDb, store: SqlStore) {
    let new = NewJob {
        max_attempts: 1,
        ..new_job("webhook.event", 1, 0)
    };
    let (job, _) = store.enqueue_job(&new, 0).await.unwrap();
    let run = store
        .claim_jobs(&claim_at("w", 1_000))
        .await
        .unwrap()
        .remove(0);
    store
        .fail_job(&run, "boom", Some(2_000), 1_001)
        .await
        .unwrap()
        .unwrap();

    let replayed = store.replay_job(&job.id, 50_000).await.unwrap().unwrap();
    assert_eq!(replayed.status, JobStatus::Queued);
    assert_eq!((replayed.attempts, replayed.run_at), (0, 50_000));
    assert_eq!((replayed.finished_at, replayed.lease_until), (None, None));
    // Only failed or cancelled jobs replay.
    assert_eq!(store.replay_job(&job.id, 50_001).await.unwrap(), None);

    let again = store
        .claim_jobs(&claim_at("w", 50_000))
        .await
        .unwrap()
        .remove(0);
    assert_eq!((again.id.as_str(), again.attempts), (job.id.as_str(), 1));
    // Only queued jobs cancel.
    assert_eq!(store.cancel_job(&job.id, 50_001).await.unwrap(), None);
    store
        .complete_job(&again, &serde_json::json!(1), 50_002)
        .await
        .unwrap()
        .unwrap();

    let (other, _) = store
        .enqueue_job(&new_job("k", 2, 60_000), 0)
        .await
        .unwrap();
    let cancelled = store.cancel_job(&other.id, 10).await.unwrap().unwrap();
    assert_eq!(
        (cancelled.status, cancelled.finished_at),
        (JobStatus::Cancelled, Some(10))
    );
    assert!(
        store
            .claim_jobs(&claim_at("w", 70_000))
            .await
            .unwrap()
            .is_empty()
    );
    let back = store.replay_job(&other.id, 80_000).await.unwrap().unwrap();
    assert_eq!(back.status, JobStatus::Queued);
}

async fn a_lapsed_last_attempt_becomes_a_dead_letter(_db: &TestDb, store: SqlStore) {
    let new = NewJob {
        max_attempts: 1,
        ..new_job("k", 1, 0)
    };
    let (job, _) = store.enqueue_job(&new, 0).await.unwrap();
    store.claim_jobs(&claim_at("node-a", 1_000)).await.unwrap();

    // Its node died; with no attempt left the job is not run again.
    assert!(
        store
            .claim_jobs(&claim_at("node-b", 40_000))
            .await
            .unwrap()
            .is_empty()
    );
    let dead = store.get_job(&job.id).await.unwrap().unwrap();
    assert_eq!(dead.status, JobStatus::Failed);
    assert_eq!(
        dead.last_error.as_deref(),
        Some("the lease of the last attempt expired")
    );
    assert_eq!(dead.finished_at, Some(40_000));
}

async fn the_partition_limit_caps_running_jobs(_db: &TestDb, store: SqlStore) {
    let mut by_partition: BTreeMap<Option<&str>, Vec<String>> = BTreeMap::new();
    for (n, partition) in [
        (0, Some("crm")),
        (1, Some("crm")),
        (2, Some("crm")),
        (3, Some("erp")),
    ]
    .into_iter()
    .chain([(4, None), (5, None)])
    {
        let new = NewJob {
            partition: partition.map(String::from),
            ..new_job("k", n, n)
        };
        let (job, _) = store.enqueue_job(&new, 0).await.unwrap();
        by_partition.entry(partition).or_default().push(job.id);
    }
    let limited = |now| JobClaim {
        max_running_per_partition: Some(2),
        ..claim_at("w", now)
    };
    let ids = |jobs: &[Job]| jobs.iter().map(|j| j.id.clone()).collect::<Vec<_>>();

    let first = store.claim_jobs(&limited(1_000)).await.unwrap();
    let crm = &by_partition[&Some("crm")];
    let erp = &by_partition[&Some("erp")];
    let free = &by_partition[&None];
    let expected = vec![
        crm[0].clone(),
        crm[1].clone(),
        erp[0].clone(),
        free[0].clone(),
        free[1].clone(),
    ];
    assert_eq!(ids(&first), expected);

    // `crm` is at its limit until one of its runs ends.
    assert!(store.claim_jobs(&limited(1_001)).await.unwrap().is_empty());
    store
        .complete_job(&first[0], &serde_json::json!(0), 1_002)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ids(&store.claim_jobs(&limited(1_003)).await.unwrap()),
        vec![crm[2].clone()]
    );

    // A limit of one with one run in flight lets nothing more through.
    let mut one = limited(1_004);
    one.max_running_per_partition = Some(1);
    store
        .enqueue_job(
            &NewJob {
                partition: Some("erp".into()),
                ..new_job("k", 9, 0)
            },
            0,
        )
        .await
        .unwrap();
    assert!(store.claim_jobs(&one).await.unwrap().is_empty());
}

async fn purge_removes_only_old_finished_jobs(_db: &TestDb, store: SqlStore) {
    for n in 0..3 {
        store.enqueue_job(&new_job("k", n, n), 0).await.unwrap();
    }
    let claimed = store.claim_jobs(&claim_at("w", 100)).await.unwrap();
    store
        .complete_job(&claimed[0], &serde_json::json!(0), 1_000)
        .await
        .unwrap()
        .unwrap();
    store
        .fail_job(&claimed[1], "no", None, 2_000)
        .await
        .unwrap()
        .unwrap();
    let (queued, _) = store.enqueue_job(&new_job("k", 9, 0), 0).await.unwrap();

    assert_eq!(store.purge_finished_jobs(1_000).await.unwrap(), 0);
    assert_eq!(store.purge_finished_jobs(2_001).await.unwrap(), 2);
    assert_eq!(store.get_job(&claimed[0].id).await.unwrap(), None);
    assert_eq!(store.get_job(&claimed[1].id).await.unwrap(), None);
    // Running and queued jobs stay, however old.
    assert!(store.get_job(&claimed[2].id).await.unwrap().is_some());
    assert!(store.get_job(&queued.id).await.unwrap().is_some());
    assert_eq!(store.purge_finished_jobs(i64::MAX).await.unwrap(), 0);
}

async fn concurrent_claimers_never_share_a_job(db: &TestDb, store: SqlStore) {
    const JOBS: i64 = 200;
    for n in 0..JOBS {
        store.enqueue_job(&new_job("k", n, n), 0).await.unwrap();
    }

    // Two pools on one database are two nodes.
    let nodes = [store, db.open().await];
    let mut tasks = Vec::new();
    for (node, store) in nodes.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let worker = format!("node-{node}");
            let mut taken = Vec::new();
            loop {
                let claim = JobClaim {
                    limit: 7,
                    ..claim_at(&worker, 10_000)
                };
                let jobs = store.claim_jobs(&claim).await.unwrap();
                if jobs.is_empty() {
                    return taken;
                }
                taken.extend(jobs.into_iter().map(|j| j.id));
                tokio::task::yield_now().await;
            }
        }));
    }
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    let mut per_node = Vec::new();
    for task in tasks {
        let taken = task.await.unwrap();
        per_node.push(taken.len());
        for id in taken {
            *counts.entry(id).or_default() += 1;
        }
    }
    assert_eq!(counts.len(), JOBS as usize, "claimed by node: {per_node:?}");
    assert!(counts.values().all(|&c| c == 1), "a job was claimed twice");
    assert_eq!(per_node.iter().sum::<usize>(), JOBS as usize);
}

async fn concurrent_claimers_respect_the_partition_limit(db: &TestDb, store: SqlStore) {
    const ROUNDS: i64 = 20;
    for n in 0..ROUNDS {
        let kind = if n % 2 == 0 { "a" } else { "b" };
        let new = NewJob {
            partition: Some("crm".into()),
            ..new_job(kind, n, n)
        };
        store.enqueue_job(&new, 0).await.unwrap();
    }
    let other = db.open().await;
    let claim = |worker, kinds| JobClaim {
        kinds,
        max_running_per_partition: Some(1),
        ..claim_at(worker, 10_000)
    };

    // Each round two nodes claim at once, each for its own kind, so they go for different
    // rows; still only one run of `crm` may start.
    for round in 0..ROUNDS {
        let (claim_a, claim_b) = (claim("node-a", &["a"]), claim("node-b", &["b"]));
        let (a, b) = tokio::join!(store.claim_jobs(&claim_a), other.claim_jobs(&claim_b));
        let claimed: Vec<Job> = a.unwrap().into_iter().chain(b.unwrap()).collect();
        assert_eq!(claimed.len(), 1, "round {round}: {claimed:?}");
        store
            .complete_job(&claimed[0], &serde_json::json!(round), 10_000)
            .await
            .unwrap()
            .unwrap();
    }
    let done = JobQuery {
        status: Some(JobStatus::Succeeded),
        limit: 100,
        ..Default::default()
    };
    assert_eq!(store.list_jobs(&done).await.unwrap().len(), ROUNDS as usize);
}

#[test]
fn retry_delay_doubles_caps_and_jitters() {
    use std::time::Duration;
    let (base, max) = (Duration::from_secs(1), Duration::from_secs(60));
    let full = |attempt| retry_delay(attempt, base, max, 1.0);
    assert_eq!(full(1), Duration::from_secs(1));
    assert_eq!(full(2), Duration::from_secs(2));
    assert_eq!(full(4), Duration::from_secs(8));
    assert_eq!(full(6), Duration::from_secs(32));
    assert_eq!(full(7), Duration::from_secs(60));
    assert_eq!(full(500), Duration::from_secs(60));
    assert_eq!(full(0), Duration::from_secs(1));

    // Jitter spreads each step over its upper half.
    assert_eq!(retry_delay(4, base, max, 0.0), Duration::from_secs(4));
    assert_eq!(retry_delay(4, base, max, 0.5), Duration::from_secs(6));
    assert_eq!(retry_delay(9, base, max, 0.0), Duration::from_secs(30));
    // Out-of-range jitter is clamped rather than trusted.
    assert_eq!(retry_delay(4, base, max, 7.0), Duration::from_secs(8));
    assert_eq!(retry_delay(4, base, max, -1.0), Duration::from_secs(4));
}

/// `db copy` must move every column of every table; a migration that adds one must update it.
#[tokio::test]
async fn the_copy_covers_every_column_of_the_schema() {
    use sqlx::Row;
    let db = TestDb::sqlite().await;
    let store = db.open().await;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' \
         AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_sqlx_%' ORDER BY name",
    )
    .fetch_all(&store.pool)
    .await
    .unwrap();
    let copied = super::copy::copied_columns();
    let mut copied_tables: Vec<&str> = copied.iter().map(|(t, _)| *t).collect();
    copied_tables.sort_unstable();
    assert_eq!(tables, copied_tables);

    for (table, columns) in copied {
        let rows = sqlx::query(&format!("SELECT name FROM pragma_table_info('{table}')"))
            .fetch_all(&store.pool)
            .await
            .unwrap();
        let mut schema: Vec<String> = rows.iter().map(|r| r.get::<String, _>("name")).collect();
        schema.retain(|c| c != "seq");
        schema.sort();
        let mut listed: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
        listed.sort();
        assert_eq!(schema, listed, "columns of {table}");
    }
}

async fn schedules_are_stored_and_their_slots_only_advance(_db: &TestDb, store: SqlStore) {
    let mut declared = integration("sync");
    declared.schedules = vec![ScheduleSpec {
        name: "nightly".into(),
        cron: "0 3 * * *".into(),
        time_zone: Some("Europe/Berlin".into()),
        per_install: true,
    }];
    let (stored, _) = store.put_integration(&declared, b"v1").await.unwrap();
    assert_eq!(stored.schedules, declared.schedules);
    store
        .put_integration(&integration("plain"), b"v1")
        .await
        .unwrap();
    let scheduled = store.scheduled_integrations().await.unwrap();
    assert_eq!(
        scheduled,
        vec![(
            declared.id.clone(),
            declared.schedules.clone(),
            stored.meta.updated_at
        )]
    );

    let id = &declared.id;
    assert_eq!(store.schedule_slot(id, "nightly", "").await.unwrap(), None);
    store
        .advance_schedule(id, "nightly", "", 2_000)
        .await
        .unwrap();
    store
        .advance_schedule(id, "nightly", "", 1_000)
        .await
        .unwrap();
    assert_eq!(
        store.schedule_slot(id, "nightly", "").await.unwrap(),
        Some(2_000)
    );
    store
        .advance_schedule(id, "nightly", "ins_x", 500)
        .await
        .unwrap();
    assert_eq!(
        store.schedule_slot(id, "nightly", "ins_x").await.unwrap(),
        Some(500)
    );
}

#[test]
fn multi_row_values_bind_in_order_on_both_dialects() {
    use super::Dialect;
    assert_eq!(
        Dialect::Postgres.value_rows(2, 3, "'queued', 0"),
        "($1, $2, $3, 'queued', 0), ($4, $5, $6, 'queued', 0)"
    );
    assert_eq!(Dialect::Sqlite.value_rows(2, 2, ""), "(?, ?), (?, ?)");
}
