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
