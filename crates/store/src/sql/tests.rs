//! The storage suite. Each test opens its own database in a temporary directory.

use std::collections::BTreeMap;

use splice_crypto::{Cipher, MasterKey};
use splice_domain::*;
use tempfile::TempDir;

use super::{OpenError, SqlStore};
use crate::*;

async fn open() -> (SqlStore, TempDir, MasterKey) {
    let dir = tempfile::tempdir().unwrap();
    let key = MasterKey::generate();
    let store = SqlStore::open_sqlite(&dir.path().join("splice.db"), Cipher::new(&key))
        .await
        .unwrap();
    (store, dir, key)
}

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
        }],
        error: None,
        install: None,
        expires_at: 10_000,
        meta: Meta::new(tags(&[("plan", "pro")]), 1_000),
    }
}

/// A store with connector `idp`, integration `sync`, and one session of tenant `acme` whose
/// step holds a new identity.
async fn seeded() -> (SqlStore, TempDir, Session, Identity) {
    let (store, dir, _) = open().await;
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
    (store, dir, session, identity)
}

#[tokio::test]
async fn connector_round_trips_with_its_secret() {
    let (store, _dir, _) = open().await;
    let created = connector("idp", "client-secret-1");
    store.create_connector(&created).await.unwrap();

    let loaded = store.get_connector(&created.id).await.unwrap().unwrap();
    assert_eq!(loaded, created);

    let err = store.create_connector(&created).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
}

#[tokio::test]
async fn connector_update_checks_the_version() {
    let (store, _dir, _) = open().await;
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

#[tokio::test]
async fn deploys_bump_the_version_and_keep_created_at() {
    let (store, _dir, _) = open().await;
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

#[tokio::test]
async fn auth_state_is_single_use() {
    let (store, _dir, session, _) = seeded().await;
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

#[tokio::test]
async fn identities_are_found_by_subject_and_tenant() {
    let (store, _dir, _, identity) = seeded().await;
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

#[tokio::test]
async fn token_updates_lose_to_a_newer_writer() {
    let (store, _dir, _, identity) = seeded().await;
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

#[tokio::test]
async fn status_changes_are_stored_with_the_reason() {
    let (store, _dir, _, mut identity) = seeded().await;
    identity.status = IdentityStatus::NeedsReauth;
    identity.status_reason = Some("invalid_grant: revoked".into());
    identity.meta.version += 1;
    store.update_status(&identity).await.unwrap();

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

#[tokio::test]
async fn commit_creates_the_install_and_marks_the_session() {
    let (store, _dir, mut session, identity) = seeded().await;
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

#[tokio::test]
async fn invocations_list_newest_first_with_filters() {
    let (store, _dir, _) = open().await;
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

    let window = InvocationQuery {
        since: Some(2),
        until: Some(3),
        limit: 10,
        ..all
    };
    assert_eq!(store.list_invocations(&id, &window).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_different_master_key_is_refused() {
    let (store, dir, _) = open().await;
    store.close().await;
    let other = Cipher::new(&MasterKey::generate());
    let err = SqlStore::open_sqlite(&dir.path().join("splice.db"), other)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, OpenError::WrongMasterKey), "{err:?}");
}

#[tokio::test]
async fn no_secret_reaches_the_database_file() {
    let (store, dir, session, identity) = seeded().await;
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
    for entry in std::fs::read_dir(dir.path()).unwrap() {
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
