//! The token lifecycle against a local fake token endpoint.

use std::collections::BTreeMap;

use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::State;
use axum::response::IntoResponse;
use axum::{Form, Json, Router, routing::post};
use serde_json::json;
use splice_crypto::{Cipher, MasterKey};
use splice_domain::*;
use splice_store::{
    ConnectorStore, EventQuery, EventStore, IdentityStore, IntegrationStore, SessionStore, SqlStore,
};

use super::*;

/// How the fake provider answers refresh grants.
#[derive(Clone, Copy)]
enum Mode {
    Rotate,
    KeepRefreshToken,
    InvalidGrant,
    Unavailable,
    BadClient,
}

struct Provider {
    mode: Mode,
    grants: AtomicUsize,
}

async fn token(
    State(provider): State<Arc<Provider>>,
    Form(form): Form<BTreeMap<String, String>>,
) -> axum::response::Response {
    let n = provider.grants.fetch_add(1, Ordering::SeqCst) + 1;
    assert_eq!(form["grant_type"], "refresh_token");
    // Slow enough that concurrent callers overlap.
    tokio::time::sleep(Duration::from_millis(50)).await;
    match provider.mode {
        Mode::Rotate => Json(json!({"access_token": format!("access-{n}"),
            "refresh_token": format!("refresh-{n}"), "expires_in": 3600,
            "token_type": "Bearer"})).into_response(),
        Mode::KeepRefreshToken => Json(json!({"access_token": format!("access-{n}"),
            "expires_in": "3599", "token_type": "bearer"})).into_response(),
        Mode::InvalidGrant => (axum::http::StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant", "error_description": "Token has been expired or revoked."})))
            .into_response(),
        Mode::Unavailable => (axum::http::StatusCode::SERVICE_UNAVAILABLE, "<html>down</html>").into_response(),
        Mode::BadClient => (axum::http::StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client", "error_description": "The OAuth client was not found."})))
            .into_response(),
    }
}

struct Fixture {
    manager: TokenManager,
    store: Arc<SqlStore>,
    provider: Arc<Provider>,
    identity: Identity,
    _dir: tempfile::TempDir,
}

async fn fixture(mode: Mode, expires_at: Option<Millis>, refresh: Option<&str>) -> Fixture {
    let provider = Arc::new(Provider {
        mode,
        grants: AtomicUsize::new(0),
    });
    let app = Router::new()
        .route("/token", post(token))
        .with_state(provider.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let cipher = Cipher::new(&MasterKey::generate());
    let store = Arc::new(
        SqlStore::open_sqlite(&dir.path().join("db"), cipher)
            .await
            .unwrap(),
    );
    let connector = Connector {
        id: ConnectorId::parse("idp").unwrap(),
        config: ConnectorConfig::OAuth2(OAuth2Config {
            authorization_url: format!("http://{addr}/auth"),
            token_url: format!("http://{addr}/token"),
            client_id: "c".into(),
            client_secret: Secret::new("s"),
            scopes: vec![],
            pkce: false,
            authorize_params: BTreeMap::new(),
            client_auth: ClientAuth::Body,
            userinfo_url: None,
        }),
        misconfigured: None,
        meta: Meta::new(Tags::default(), 0),
    };
    store.create_connector(&connector).await.unwrap();
    let integration = Integration {
        id: IntegrationId::parse("app").unwrap(),
        files: BTreeMap::new(),
        connectors: BTreeMap::new(),
        runtime: RuntimeSettings::default(),
        schedules: Vec::new(),
        meta: Meta::new(Tags::default(), 0),
    };
    store.put_integration(&integration, b"").await.unwrap();

    let identity = Identity {
        id: IdentityId::generate(),
        connector: connector.id.clone(),
        tenant: TenantId::parse("acme").unwrap(),
        subject: Some("alice".into()),
        status: IdentityStatus::Healthy,
        status_reason: None,
        status_at: 0,
        tokens: TokenSet {
            access_token: Secret::new("access-0"),
            refresh_token: refresh.map(Secret::new),
            expires_at,
            scopes: vec!["read".into()],
            values: Default::default(),
            named: Default::default(),
        },
        refresh: RefreshState::default(),
        meta: Meta::new(Tags::default(), 0),
    };
    // Identities are only ever created through a session step.
    let mut session = Session {
        id: SessionId::generate(),
        integration: integration.id.clone(),
        tenant: identity.tenant.clone(),
        redirect_url: "https://app.example".into(),
        status: SessionStatus::Pending,
        steps: vec![],
        error: None,
        install: None,
        reconnect: false,
        expires_at: 0,
        meta: Meta::new(Tags::default(), 0),
    };
    store.create_session(&session).await.unwrap();
    session.meta.version += 1;
    store
        .attach_identity(&session, &identity, true)
        .await
        .unwrap();

    let client = OAuthClient::new(reqwest::Client::new());
    let settings = Lifecycle {
        dead_after_days: 2,
        ..Lifecycle::default()
    };
    let manager = TokenManager::new(store.clone(), client, Arc::new(GenericEndpoints), settings);
    Fixture {
        manager,
        store,
        provider,
        identity,
        _dir: dir,
    }
}

fn expired() -> Option<Millis> {
    Some(now_millis() - 1_000)
}

#[tokio::test]
async fn a_valid_token_is_returned_without_refreshing() {
    let f = fixture(
        Mode::Rotate,
        Some(now_millis() + 3_600_000),
        Some("refresh-0"),
    )
    .await;
    let identity = f.manager.access_token(&f.identity.id, false).await.unwrap();
    assert_eq!(identity.tokens.access_token.expose(), "access-0");
    assert_eq!(f.provider.grants.load(Ordering::SeqCst), 0);

    // No expiry at all means it never needs a refresh (case C06).
    let g = fixture(Mode::Rotate, None, Some("refresh-0")).await;
    g.manager.access_token(&g.identity.id, false).await.unwrap();
    assert_eq!(g.provider.grants.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn concurrent_uses_share_one_refresh_and_store_the_rotated_token() {
    let f = Arc::new(fixture(Mode::Rotate, expired(), Some("refresh-0")).await);
    let calls = (0..50).map(|_| {
        let f = f.clone();
        tokio::spawn(async move { f.manager.access_token(&f.identity.id, false).await })
    });
    for call in futures_join(calls).await {
        let identity = call.unwrap();
        assert_eq!(identity.tokens.access_token.expose(), "access-1");
    }
    assert_eq!(f.provider.grants.load(Ordering::SeqCst), 1);
    let stored = f.store.get_identity(&f.identity.id).await.unwrap().unwrap();
    assert_eq!(stored.tokens.refresh_token.unwrap().expose(), "refresh-1");
    assert!(
        f.manager.locks.lock().unwrap().is_empty(),
        "locks are released"
    );
}

async fn futures_join<T: Send + 'static>(
    handles: impl Iterator<Item = tokio::task::JoinHandle<Result<T, TokenFailure>>>,
) -> Vec<Result<T, TokenFailure>> {
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

#[tokio::test]
async fn an_omitted_refresh_token_keeps_the_old_one() {
    // Origin: Google-style refresh responses without refresh_token (case C11).
    let f = fixture(
        Mode::KeepRefreshToken,
        expired(),
        Some("1//FAKE-RT-ORIGINAL"),
    )
    .await;
    let before = now_millis();
    let identity = f.manager.access_token(&f.identity.id, false).await.unwrap();
    assert_eq!(identity.tokens.access_token.expose(), "access-1");
    assert_eq!(
        identity.tokens.refresh_token.unwrap().expose(),
        "1//FAKE-RT-ORIGINAL"
    );
    assert_eq!(identity.tokens.scopes, vec!["read".to_string()]);
    let expires = identity.tokens.expires_at.unwrap();
    assert!(expires >= before + 3_599_000 && expires <= now_millis() + 3_599_000);
}

#[tokio::test]
async fn invalid_grant_marks_the_identity_needing_reauth() {
    let f = fixture(Mode::InvalidGrant, expired(), Some("refresh-0")).await;
    let err = f
        .manager
        .access_token(&f.identity.id, false)
        .await
        .unwrap_err();
    assert!(
        matches!(err, TokenFailure::NeedsReauth(ref r) if r.contains("invalid_grant")),
        "{err:?}"
    );

    let stored = f.store.get_identity(&f.identity.id).await.unwrap().unwrap();
    assert_eq!(stored.status, IdentityStatus::NeedsReauth);
    assert_eq!(
        stored.status_reason.as_deref(),
        Some("invalid_grant: Token has been expired or revoked.")
    );
    // The refresh token is kept, and later calls fail fast without asking the provider.
    assert_eq!(stored.tokens.refresh_token.unwrap().expose(), "refresh-0");
    let again = f
        .manager
        .access_token(&f.identity.id, false)
        .await
        .unwrap_err();
    assert!(matches!(again, TokenFailure::NeedsReauth(_)));
    assert_eq!(f.provider.grants.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_outage_keeps_the_identity_and_uses_a_still_valid_token() {
    // Inside the margin but not expired: the current token is still served.
    let soon = Some(now_millis() + 60_000);
    let f = fixture(Mode::Unavailable, soon, Some("refresh-0")).await;
    let identity = f.manager.access_token(&f.identity.id, false).await.unwrap();
    assert_eq!(identity.tokens.access_token.expose(), "access-0");

    // Expired: the caller gets a transient error, and the identity stays healthy.
    let g = fixture(Mode::Unavailable, expired(), Some("refresh-0")).await;
    let err = g
        .manager
        .access_token(&g.identity.id, false)
        .await
        .unwrap_err();
    assert!(matches!(err, TokenFailure::Unavailable(_)), "{err:?}");
    let stored = g.store.get_identity(&g.identity.id).await.unwrap().unwrap();
    assert_eq!(stored.status, IdentityStatus::Healthy);
}

#[tokio::test]
async fn forced_refresh_without_a_refresh_token_needs_reauth() {
    let f = fixture(Mode::Rotate, None, None).await;
    let err = f
        .manager
        .access_token(&f.identity.id, true)
        .await
        .unwrap_err();
    assert!(matches!(err, TokenFailure::NeedsReauth(_)), "{err:?}");
    assert_eq!(f.provider.grants.load(Ordering::SeqCst), 0);
}

#[test]
fn merge_overwrites_only_what_the_response_carries() {
    // Origin: Google-style refresh without refresh_token (case C11).
    let old = TokenSet {
        access_token: Secret::new("ya29.FAKE-OLD"),
        refresh_token: Some(Secret::new("1//FAKE-RT-ORIGINAL")),
        expires_at: Some(1_700_003_599_000),
        scopes: vec!["drive".into()],
        values: BTreeMap::from([("instance_url".to_string(), "https://a.example".to_string())]),
        named: BTreeMap::from([(
            "user".to_string(),
            NamedToken {
                access_token: Secret::new("user-old"),
                refresh_token: Some(Secret::new("user-rt")),
                expires_at: None,
            },
        )]),
    };
    let fresh = crate::TokenResponse {
        access_token: Secret::new("ya29.FAKE-NEW"),
        refresh_token: None,
        expires_at: Some(1_700_007_149_000),
        scopes: None,
    };
    let user = crate::TokenResponse {
        access_token: Secret::new("user-new"),
        ..fresh.clone()
    };
    let response = crate::response::TokenSet {
        token: fresh,
        tokens: BTreeMap::from([("user".to_string(), user)]),
        account_id: None,
        captured: BTreeMap::from([("team".to_string(), "T1".to_string())]),
    };
    let merged = merge(&old, response);
    assert_eq!(merged.access_token.expose(), "ya29.FAKE-NEW");
    assert_eq!(
        merged.refresh_token.unwrap().expose(),
        "1//FAKE-RT-ORIGINAL"
    );
    assert_eq!(merged.expires_at, Some(1_700_007_149_000));
    assert_eq!(merged.scopes, vec!["drive".to_string()]);
    assert_eq!(merged.values["instance_url"], "https://a.example");
    assert_eq!(merged.values["team"], "T1");
    assert_eq!(merged.named["user"].access_token.expose(), "user-new");
    assert_eq!(
        merged.named["user"]
            .refresh_token
            .as_ref()
            .unwrap()
            .expose(),
        "user-rt"
    );
}

async fn events(store: &SqlStore) -> Vec<String> {
    let query = EventQuery {
        limit: 50,
        ..Default::default()
    };
    let mut kinds: Vec<String> = store
        .list_events(&query)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    kinds.reverse();
    kinds
}

#[tokio::test]
async fn a_rejected_grant_is_an_event() {
    let f = fixture(Mode::InvalidGrant, expired(), Some("refresh-0")).await;
    f.manager
        .access_token(&f.identity.id, false)
        .await
        .unwrap_err();
    assert_eq!(events(&f.store).await, vec!["identity.needs_reauth"]);
}

#[tokio::test]
async fn an_outage_backs_off_counts_days_and_only_then_kills() {
    let f = fixture(Mode::Unavailable, expired(), Some("refresh-0")).await;
    let err = f
        .manager
        .access_token(&f.identity.id, false)
        .await
        .unwrap_err();
    assert!(matches!(err, TokenFailure::Unavailable(_)), "{err:?}");
    let stored = f.store.get_identity(&f.identity.id).await.unwrap().unwrap();
    assert_eq!(stored.status, IdentityStatus::Healthy);
    assert_eq!(stored.refresh.failure_days, 1);
    assert!(stored.refresh.next_attempt_at.unwrap() > now_millis() + 20_000);

    // While backing off, the provider is not asked again.
    let err = f
        .manager
        .access_token(&f.identity.id, false)
        .await
        .unwrap_err();
    assert!(matches!(err, TokenFailure::Unavailable(_)), "{err:?}");
    assert_eq!(f.provider.grants.load(Ordering::SeqCst), 1);

    // A second failing day (simulated: yesterday's failure, backoff over) makes it dead.
    let mut aged = stored.clone();
    aged.refresh.last_failure_day = Some(now_millis() / 86_400_000 - 1);
    aged.refresh.next_attempt_at = None;
    aged.meta.version += 1;
    f.store.update_health(&aged, None).await.unwrap();
    let err = f
        .manager
        .access_token(&f.identity.id, false)
        .await
        .unwrap_err();
    assert!(matches!(err, TokenFailure::NeedsReauth(_)), "{err:?}");
    let dead = f.store.get_identity(&f.identity.id).await.unwrap().unwrap();
    assert_eq!(dead.status, IdentityStatus::Dead);
    assert_eq!(dead.refresh.failure_days, 2);
    assert_eq!(
        events(&f.store).await,
        vec!["identity.refresh_failed", "identity.dead"]
    );
}

#[tokio::test]
async fn a_rejected_client_flags_the_connector_not_the_identity() {
    let f = fixture(Mode::BadClient, expired(), Some("refresh-0")).await;
    let err = f
        .manager
        .access_token(&f.identity.id, false)
        .await
        .unwrap_err();
    assert!(
        matches!(err, TokenFailure::ConnectorMisconfigured(_)),
        "{err:?}"
    );

    let identity = f.store.get_identity(&f.identity.id).await.unwrap().unwrap();
    assert_eq!(identity.status, IdentityStatus::Healthy);
    let connector = f
        .store
        .get_connector(&identity.connector)
        .await
        .unwrap()
        .unwrap();
    assert!(
        connector
            .misconfigured
            .unwrap()
            .starts_with("invalid_client")
    );
    assert_eq!(events(&f.store).await, vec!["connector.misconfigured"]);

    // Until the connector is fixed, the provider is not asked again.
    f.manager
        .access_token(&f.identity.id, false)
        .await
        .unwrap_err();
    assert_eq!(f.provider.grants.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_sweep_refreshes_expiring_and_idle_identities() {
    let f = fixture(Mode::Rotate, expired(), Some("refresh-0")).await;
    let report = f.manager.sweep(Duration::from_secs(60)).await.unwrap();
    assert_eq!(
        report,
        SweepReport {
            checked: 1,
            failed: 0
        }
    );
    assert_eq!(f.provider.grants.load(Ordering::SeqCst), 1);

    // Fresh now: nothing is due.
    let report = f.manager.sweep(Duration::from_secs(60)).await.unwrap();
    assert_eq!(report.checked, 0);

    // A token that never expires but was obtained long ago is exercised.
    let idle = fixture(Mode::Rotate, None, Some("refresh-0")).await;
    let report = idle.manager.sweep(Duration::from_secs(60)).await.unwrap();
    assert_eq!(
        report,
        SweepReport {
            checked: 1,
            failed: 0
        }
    );
    let stored = idle
        .store
        .get_identity(&idle.identity.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.tokens.refresh_token.unwrap().expose(), "refresh-1");
}
