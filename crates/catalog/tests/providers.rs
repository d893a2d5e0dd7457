//! Every catalog provider's code exchange and refresh against a local fake that answers in
//! the provider's documented shape. Each test checks what the fake received (path, grant,
//! client authentication, body format, Accept) and the normalised tokens.

mod fake;

use fake::*;
use serde_json::json;
use splice_domain::ClientAuth::{Basic, Body};
use splice_oauth::client::BodyFormat::{Form, Json, Query};
use splice_oauth::response::TokenError;

fn sent(
    path: &str,
    auth: splice_domain::ClientAuth,
    format: splice_oauth::client::BodyFormat,
) -> Sent<'_> {
    Sent { path, auth, format }
}

#[tokio::test]
async fn slack_reads_bot_and_user_tokens_and_refreshes_each() {
    let flow = Flow::new("slack", &[]).await;
    assert_eq!(
        flow.request.token_url,
        "https://slack.com/api/oauth.v2.access"
    );

    // Case C01 a: bot token at the top, user token under authed_user, comma scopes.
    let (seen, result) = flow
        .exchange(ok(json!({"ok": true, "app_id": "A0FAKEAPP01",
            "access_token": "xoxb-FAKE-0000000001-bot", "token_type": "bot",
            "scope": "commands,chat:write,channels:read", "bot_user_id": "U0FAKEBOT1",
            "team": {"id": "T0FAKETEAM1", "name": "Example Workspace"},
            "enterprise": null, "is_enterprise_install": false,
            "authed_user": {"id": "U0FAKEUSER1", "scope": "channels:history,chat:write",
                "access_token": "xoxp-FAKE-0000000001-user", "token_type": "user"}})))
        .await;
    check_sent(
        &seen,
        "authorization_code",
        sent("/api/oauth.v2.access", Body, Form),
    );
    let set = result.unwrap();
    assert_eq!(set.token.access_token.expose(), "xoxb-FAKE-0000000001-bot");
    assert_eq!(
        set.token.scopes,
        scopes(&["commands", "chat:write", "channels:read"])
    );
    assert_eq!(set.token.expires_at, None);
    let user = &set.tokens["user"];
    assert_eq!(user.access_token.expose(), "xoxp-FAKE-0000000001-user");
    assert_eq!(user.scopes, scopes(&["channels:history", "chat:write"]));
    assert_eq!(user.expires_at, None);
    assert_eq!(set.captured["authed_user_id"], "U0FAKEUSER1");
    assert_eq!(set.account_id.as_deref(), Some("team:T0FAKETEAM1"));

    // Case C02: with rotation both tokens expire in 12 h and carry their own refresh token.
    let (_, result) = flow
        .exchange(ok(json!({"ok": true, "app_id": "A0FAKEAPP01",
            "access_token": "xoxe.xoxb-1-FAKEBOTACCESS", "refresh_token": "xoxe-1-FAKEBOTREFRESH-1",
            "expires_in": 43200, "token_type": "bot", "scope": "chat:write",
            "team": {"id": "T0FAKETEAM1", "name": "Example Workspace"},
            "authed_user": {"id": "U0FAKEUSER1", "scope": "search:read",
                "access_token": "xoxe.xoxp-1-FAKEUSERACCESS",
                "refresh_token": "xoxe-1-FAKEUSERREFRESH-1", "expires_in": 43200,
                "token_type": "user"}})))
        .await;
    let set = result.unwrap();
    assert_eq!(
        set.token.refresh_token.as_ref().unwrap().expose(),
        "xoxe-1-FAKEBOTREFRESH-1"
    );
    assert_lifetime(&set.token, 43200);
    let user = &set.tokens["user"];
    assert_eq!(
        user.refresh_token.as_ref().unwrap().expose(),
        "xoxe-1-FAKEUSERREFRESH-1"
    );
    assert_lifetime(user, 43200);

    let (seen, result) = flow
        .refresh("xoxe-1-FAKEBOTREFRESH-1", ok(json!({"ok": true,
            "access_token": "xoxe.xoxb-1-FAKEBOTACCESS-2", "refresh_token": "xoxe-1-FAKEBOTREFRESH-2",
            "expires_in": 43200, "token_type": "bot", "team": {"id": "T0FAKETEAM1"}})))
        .await;
    let params = check_sent(
        &seen,
        "refresh_token",
        sent("/api/oauth.v2.access", Body, Form),
    );
    assert_eq!(params["refresh_token"], "xoxe-1-FAKEBOTREFRESH-1");
    let set = result.unwrap();
    assert_eq!(
        set.token.refresh_token.unwrap().expose(),
        "xoxe-1-FAKEBOTREFRESH-2"
    );

    // The user's refresh token is dead; only that credential needs the user again.
    let (_, result) = flow
        .refresh(
            "xoxe-1-FAKEUSERREFRESH-1",
            ok(json!({"ok": false, "error": "invalid_refresh_token"})),
        )
        .await;
    assert!(
        matches!(result, Err(TokenError::Rejected { ref error, .. }) if error == "invalid_refresh_token")
    );
}

#[tokio::test]
async fn slack_errors_in_a_200_are_told_apart() {
    // Case C03: ok:false in a 200; codes are the user's problem, the secret the developer's.
    let flow = Flow::new("slack", &[]).await;
    for code in ["invalid_code", "code_already_used"] {
        let (_, result) = flow.exchange(ok(json!({"ok": false, "error": code}))).await;
        assert!(matches!(result, Err(TokenError::Rejected { ref error, .. }) if error == code));
    }
    let (_, result) = flow
        .exchange(ok(json!({"ok": false, "error": "bad_client_secret"})))
        .await;
    assert!(
        matches!(result, Err(TokenError::Misconfigured { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn github_asks_for_json_and_reads_form_answers() {
    let flow = Flow::new("github", &[]).await;

    // Case C04 a: a form-encoded answer still parses, by its content type.
    let form = Answer {
        status: 200,
        content_type: FORM,
        body: "access_token=gho_FAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKE0001&scope=repo%2Cgist&token_type=bearer"
            .into(),
    };
    let (seen, result) = flow.exchange(form).await;
    let params = check_sent(
        &seen,
        "authorization_code",
        sent("/login/oauth/access_token", Body, Form),
    );
    assert_eq!(
        params["code_verifier"],
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    );
    let set = result.unwrap();
    assert_eq!(
        set.token.access_token.expose(),
        "gho_FAKEFAKEFAKEFAKEFAKEFAKEFAKEFAKE0001"
    );
    assert_eq!(set.token.scopes, scopes(&["repo", "gist"]));
    // Case C06: no expires_in is no expiry, never "expired now".
    assert_eq!(set.token.expires_at, None);
    assert_eq!(set.token.refresh_token, None);

    // Case C04 b: an error member in a 200 is an error.
    let (_, result) = flow
        .exchange(ok(json!({"error": "bad_verification_code",
            "error_description": "The code passed is incorrect or expired."})))
        .await;
    assert!(
        matches!(result, Err(TokenError::Rejected { ref error, .. }) if error == "bad_verification_code")
    );

    // GitHub App user tokens expire and refresh.
    let (seen, result) = flow
        .refresh(
            "ghr_FAKE1",
            ok(json!({"access_token": "ghu_FAKE2", "expires_in": 28800,
            "refresh_token": "ghr_FAKE2", "refresh_token_expires_in": 15811200,
            "scope": "", "token_type": "bearer"})),
        )
        .await;
    check_sent(
        &seen,
        "refresh_token",
        sent("/login/oauth/access_token", Body, Form),
    );
    let set = result.unwrap();
    assert_lifetime(&set.token, 28800);
    assert_eq!(set.token.refresh_token.unwrap().expose(), "ghr_FAKE2");

    // The account id is the numeric id from /user.
    let (seen, id, captured) = flow
        .userinfo(
            &Default::default(),
            ok(json!({"id": 583231, "login": "octocat"})),
        )
        .await;
    assert_eq!(seen.path, "/user");
    assert_eq!(seen.header("authorization"), Some("Bearer access-1"));
    assert!(seen.header("user-agent").is_some());
    assert_eq!(id.as_deref(), Some("583231"));
    assert_eq!(captured["login"], "octocat");
}

#[tokio::test]
async fn google_keeps_expiry_and_classifies_dead_refresh_tokens() {
    let flow = Flow::new("google", &[]).await;
    let (seen, result) = flow
        .exchange(ok(
            json!({"access_token": "ya29.FAKE-0001", "expires_in": 3599,
            "refresh_token": "1//FAKE-RT-ORIGINAL", "token_type": "Bearer",
            "scope": "openid https://www.googleapis.com/auth/userinfo.email",
            "id_token": "eyJhbGciOiJub25lIn0.FAKE."}),
        ))
        .await;
    check_sent(&seen, "authorization_code", sent("/token", Body, Form));
    let set = result.unwrap();
    assert_lifetime(&set.token, 3599);
    assert_eq!(
        set.token.refresh_token.unwrap().expose(),
        "1//FAKE-RT-ORIGINAL"
    );

    // Case C15: a repeat consent without a refresh token still succeeds; the caller keeps
    // the refresh token it holds for the same account.
    let (_, result) = flow
        .exchange(ok(
            json!({"access_token": "ya29.FAKE-RECONNECT", "expires_in": 3599,
            "token_type": "Bearer", "scope": "https://www.googleapis.com/auth/calendar.readonly",
            "id_token": "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxMDAwMDAwMDAwMDAwMDAwMDAwMDEifQ."}),
        ))
        .await;
    let set = result.unwrap();
    assert_eq!(set.token.access_token.expose(), "ya29.FAKE-RECONNECT");
    assert_eq!(set.token.refresh_token, None);

    // Case C11: the refresh answer has no refresh token; the stored one stays in use.
    let (seen, result) = flow
        .refresh(
            "1//FAKE-RT-ORIGINAL",
            ok(json!({"access_token": "ya29.FAKE-NEW",
            "expires_in": 3599, "scope": "https://www.googleapis.com/auth/drive.readonly",
            "token_type": "Bearer"})),
        )
        .await;
    let params = check_sent(&seen, "refresh_token", sent("/token", Body, Form));
    assert_eq!(params["refresh_token"], "1//FAKE-RT-ORIGINAL");
    let set = result.unwrap();
    assert_eq!(set.token.access_token.expose(), "ya29.FAKE-NEW");
    assert_eq!(set.token.refresh_token, None);
    assert_lifetime(&set.token, 3599);

    // Case C14 a: revoked or expired.
    let (_, result) = flow
        .refresh(
            "1//dead",
            status(
                400,
                json!({"error": "invalid_grant",
            "error_description": "Token has been expired or revoked."}),
            ),
        )
        .await;
    assert!(
        matches!(result, Err(TokenError::Rejected { ref error, .. }) if error == "invalid_grant")
    );
}

#[tokio::test]
async fn microsoft_reads_the_tenant_url_and_replaces_refresh_tokens() {
    let flow = Flow::new(
        "microsoft",
        &[("tenant", "00000000-0000-0000-0000-0000000000aa")],
    )
    .await;
    assert_eq!(
        flow.request.token_url,
        "https://login.microsoftonline.com/00000000-0000-0000-0000-0000000000aa/oauth2/v2.0/token"
    );

    // Case C10: the id_token is not the API token, and the lifetime is expires_in.
    let (seen, result) = flow
        .exchange(ok(json!({"token_type": "Bearer",
            "scope": "openid profile email https://graph.microsoft.com/Mail.Read https://graph.microsoft.com/User.Read",
            "expires_in": 4339, "ext_expires_in": 4339,
            "access_token": "eyJ0eXAiOiJKV1QiFAKEGRAPH.FAKE.FAKE",
            "refresh_token": "1.AXEA-FAKE-RT-1", "id_token": "eyJhbGciOiJub25lIn0.e30."})))
        .await;
    check_sent(
        &seen,
        "authorization_code",
        sent(
            "/00000000-0000-0000-0000-0000000000aa/oauth2/v2.0/token",
            Body,
            Form,
        ),
    );
    let set = result.unwrap();
    assert_eq!(
        set.token.access_token.expose(),
        "eyJ0eXAiOiJKV1QiFAKEGRAPH.FAKE.FAKE"
    );
    assert_lifetime(&set.token, 4339);

    let (_, result) = flow
        .refresh(
            "1.AXEA-FAKE-RT-1",
            ok(json!({"token_type": "Bearer", "expires_in": 3599,
            "ext_expires_in": 3599, "scope": "https://graph.microsoft.com/Mail.Read",
            "access_token": "eyJ0eXAiOiJKV1QiFAKEGRAPH2.FAKE.FAKE",
            "refresh_token": "1.AXEA-FAKE-RT-2"})),
        )
        .await;
    let set = result.unwrap();
    assert_eq!(
        set.token.refresh_token.unwrap().expose(),
        "1.AXEA-FAKE-RT-2"
    );

    // Case C14 b: inactivity expiry keeps its AADSTS description.
    let (_, result) = flow
        .refresh(
            "1.AXEA-FAKE-RT-1",
            status(
                400,
                json!({"error": "invalid_grant",
            "error_description": "AADSTS700082: The refresh token has expired due to inactivity."}),
            ),
        )
        .await;
    match result {
        Err(TokenError::Rejected { description, .. }) => {
            assert!(description.starts_with("AADSTS700082"));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn salesforce_captures_the_instance_and_has_no_expiry() {
    let flow = Flow::new("salesforce", &[]).await;
    assert_eq!(
        flow.request.token_url,
        "https://login.salesforce.com/services/oauth2/token"
    );

    // Case C16: instance_url, issued_at in ms, no expires_in.
    let (seen, result) = flow
        .exchange(ok(json!({"access_token": "00D000000000001!AQ4AQFAKEFAKEFAKE",
            "refresh_token": "5Aep861FAKE-RT", "signature": "8PNT38KdWXTIOg0HDpztbvlFdhN4s21GAsK2l+XlNMY=",
            "scope": "api refresh_token", "instance_url": "https://example-dev-ed.my.salesforce.com",
            "id": "https://login.salesforce.com/id/00D000000000001EAA/005000000000001AAA",
            "token_type": "Bearer", "issued_at": "1700000000123"})))
        .await;
    check_sent(
        &seen,
        "authorization_code",
        sent("/services/oauth2/token", Body, Form),
    );
    let set = result.unwrap();
    assert_eq!(set.token.expires_at, None);
    assert_eq!(
        set.captured["instance_url"],
        "https://example-dev-ed.my.salesforce.com"
    );
    assert_eq!(set.captured["issued_at_ms"], "1700000000123");
    assert_eq!(
        set.account_id.as_deref(),
        Some("https://login.salesforce.com/id/00D000000000001EAA/005000000000001AAA")
    );
    let mut values = flow.values.clone();
    values.extend(set.captured.clone());
    assert_eq!(
        flow.provider.api_base_url(&values).unwrap().as_deref(),
        Some("https://example-dev-ed.my.salesforce.com")
    );

    // The refresh answer has a new instance_url and no refresh token (kept, case C11).
    let (seen, result) = flow
        .refresh("5Aep861FAKE-RT", ok(json!({"access_token": "00D000000000001!AQ4AQFAKE2",
            "scope": "api refresh_token", "instance_url": "https://example-dev-ed.my.salesforce.com",
            "id": "https://login.salesforce.com/id/00D000000000001EAA/005000000000001AAA",
            "token_type": "Bearer", "issued_at": "1700007200456"})))
        .await;
    check_sent(
        &seen,
        "refresh_token",
        sent("/services/oauth2/token", Body, Form),
    );
    let set = result.unwrap();
    assert_eq!(set.token.refresh_token, None);
    assert_eq!(set.captured["issued_at_ms"], "1700007200456");
}

#[tokio::test]
async fn hubspot_exchanges_and_refreshes_with_body_credentials() {
    let flow = Flow::new("hubspot", &[]).await;
    let (seen, result) = flow
        .exchange(ok(
            json!({"token_type": "bearer", "refresh_token": "hs-rt-1",
            "access_token": "hs-at-1", "expires_in": 1800}),
        ))
        .await;
    check_sent(
        &seen,
        "authorization_code",
        sent("/oauth/v1/token", Body, Form),
    );
    assert_lifetime(&result.unwrap().token, 1800);
    let (seen, result) = flow
        .refresh(
            "hs-rt-1",
            ok(json!({"token_type": "bearer", "refresh_token": "hs-rt-1",
            "access_token": "hs-at-2", "expires_in": 1800})),
        )
        .await;
    check_sent(&seen, "refresh_token", sent("/oauth/v1/token", Body, Form));
    assert_eq!(result.unwrap().token.access_token.expose(), "hs-at-2");
    let (_, id, _) = flow
        .userinfo(&Default::default(), ok(json!({"portalId": 62515})))
        .await;
    assert_eq!(id.as_deref(), Some("62515"));
}

#[tokio::test]
async fn atlassian_sends_json_and_rotates_refresh_tokens() {
    let flow = Flow::new("atlassian", &[]).await;
    let (seen, result) = flow
        .exchange(ok(
            json!({"access_token": "FAKE-ATL-AT-1", "refresh_token": "FAKE-ATL-RT-A",
            "expires_in": 3600, "scope": "read:jira-work offline_access", "token_type": "Bearer"}),
        ))
        .await;
    check_sent(
        &seen,
        "authorization_code",
        sent("/oauth/token", Body, Json),
    );
    assert_lifetime(&result.unwrap().token, 3600);

    // Case C12: each refresh returns the next refresh token.
    let (seen, result) = flow
        .refresh(
            "FAKE-ATL-RT-A",
            ok(json!({"access_token": "FAKE-ATL-AT-2",
            "refresh_token": "FAKE-ATL-RT-B", "expires_in": 3600,
            "scope": "read:jira-work offline_access", "token_type": "Bearer"})),
        )
        .await;
    let params = check_sent(&seen, "refresh_token", sent("/oauth/token", Body, Json));
    assert_eq!(params["refresh_token"], "FAKE-ATL-RT-A");
    let set = result.unwrap();
    assert_eq!(set.token.access_token.expose(), "FAKE-ATL-AT-2");
    assert_eq!(set.token.refresh_token.unwrap().expose(), "FAKE-ATL-RT-B");

    // The spent token answers 403 invalid_grant, and a bare 403 means the same.
    let (_, result) = flow
        .refresh(
            "FAKE-ATL-RT-A",
            status(
                403,
                json!({"error": "invalid_grant",
            "error_description": "Unknown or invalid refresh token."}),
            ),
        )
        .await;
    assert!(
        matches!(result, Err(TokenError::Rejected { ref error, .. }) if error == "invalid_grant")
    );
    let forbidden = Answer {
        status: 403,
        content_type: "text/plain",
        body: "Forbidden".into(),
    };
    let (_, result) = flow.refresh("FAKE-ATL-RT-A", forbidden).await;
    assert!(
        matches!(result, Err(TokenError::Rejected { .. })),
        "{result:?}"
    );

    // The site's cloud id comes from accessible-resources and shapes the API URL.
    let (seen, id, captured) = flow
        .userinfo(
            &Default::default(),
            ok(json!([{"id": "1324a887-45db-1bf4-1e99-ef0ff456d421",
            "url": "https://acme.atlassian.net", "name": "acme", "scopes": ["read:jira-work"]}])),
        )
        .await;
    assert_eq!(seen.path, "/oauth/token/accessible-resources");
    assert_eq!(id.as_deref(), Some("1324a887-45db-1bf4-1e99-ef0ff456d421"));
    assert_eq!(
        flow.provider.api_base_url(&captured).unwrap().as_deref(),
        Some("https://api.atlassian.com/ex/jira/1324a887-45db-1bf4-1e99-ef0ff456d421")
    );
}

#[tokio::test]
async fn linear_reads_lowercase_bearer_and_finds_the_organization_by_graphql() {
    let flow = Flow::new("linear", &[]).await;
    // Case C07 a: lowercase bearer is accepted.
    let (seen, result) = flow
        .exchange(ok(
            json!({"access_token": "lin_oa_FAKE0001", "token_type": "bearer",
            "expires_in": 315360000, "scope": "read"}),
        ))
        .await;
    check_sent(
        &seen,
        "authorization_code",
        sent("/oauth/token", Body, Form),
    );
    let set = result.unwrap();
    assert_eq!(set.token.scopes, scopes(&["read"]));
    let (seen, result) = flow
        .refresh(
            "lin_rt_1",
            ok(
                json!({"access_token": "lin_oa_FAKE0002", "token_type": "Bearer",
            "expires_in": 86399, "refresh_token": "lin_rt_2", "scope": "read"}),
            ),
        )
        .await;
    check_sent(&seen, "refresh_token", sent("/oauth/token", Body, Form));
    assert_lifetime(&result.unwrap().token, 86399);

    let (seen, id, captured) = flow
        .userinfo(
            &Default::default(),
            ok(json!({"data": {"viewer": {"id": "user-1",
            "organization": {"id": "org-1"}}}})),
        )
        .await;
    assert_eq!(seen.method, axum::http::Method::POST);
    assert!(String::from_utf8_lossy(&seen.body).contains("viewer"));
    assert_eq!(id.as_deref(), Some("org-1"));
    assert_eq!(captured["user_id"], "user-1");
}

#[tokio::test]
async fn asana_names_the_user_in_the_exchange() {
    let flow = Flow::new("asana", &[]).await;
    let (seen, result) = flow
        .exchange(ok(json!({"access_token": "asana-at-1", "expires_in": 3600,
            "token_type": "bearer", "refresh_token": "asana-rt-1",
            "data": {"id": 4673218951i64, "gid": "4673218951", "name": "Greg Sanchez",
                "email": "gsanchez@example.com"}})))
        .await;
    check_sent(
        &seen,
        "authorization_code",
        sent("/-/oauth_token", Body, Form),
    );
    let set = result.unwrap();
    assert_eq!(set.account_id.as_deref(), Some("4673218951"));
    assert_eq!(set.captured["user_email"], "gsanchez@example.com");
    let (seen, result) = flow
        .refresh(
            "asana-rt-1",
            ok(json!({"access_token": "asana-at-2", "expires_in": 3600,
            "token_type": "bearer", "data": {"gid": "4673218951"}})),
        )
        .await;
    check_sent(&seen, "refresh_token", sent("/-/oauth_token", Body, Form));
    assert_lifetime(&result.unwrap().token, 3600);
}

#[tokio::test]
async fn notion_uses_basic_auth_with_a_json_body() {
    let flow = Flow::new("notion", &[]).await;
    let (seen, result) = flow
        .exchange(ok(
            json!({"access_token": "ntn_FAKE1", "token_type": "bearer",
            "refresh_token": "nrt_FAKE1", "bot_id": "b-1", "workspace_id": "w-1",
            "workspace_name": "Acme", "workspace_icon": null,
            "owner": {"type": "user", "user": {"object": "user", "id": "u-1"}},
            "duplicated_template_id": null, "request_id": "r-1"}),
        ))
        .await;
    check_sent(
        &seen,
        "authorization_code",
        sent("/v1/oauth/token", Basic, Json),
    );
    let set = result.unwrap();
    assert_eq!(set.account_id.as_deref(), Some("w-1"));
    assert_eq!(set.captured["bot_id"], "b-1");
    assert_eq!(set.captured["owner_user_id"], "u-1");
    assert_eq!(set.token.expires_at, None);
    let (seen, result) = flow
        .refresh(
            "nrt_FAKE1",
            ok(json!({"access_token": "ntn_FAKE2", "token_type": "bearer",
            "refresh_token": "nrt_FAKE2", "bot_id": "b-1", "workspace_id": "w-1"})),
        )
        .await;
    check_sent(&seen, "refresh_token", sent("/v1/oauth/token", Basic, Json));
    assert_eq!(
        result.unwrap().token.refresh_token.unwrap().expose(),
        "nrt_FAKE2"
    );
    assert_eq!(flow.provider.api.headers["Notion-Version"], "2022-06-28");
}

#[tokio::test]
async fn zoom_uses_basic_auth_and_rotates_refresh_tokens() {
    let flow = Flow::new("zoom", &[]).await;
    let (seen, result) = flow
        .exchange(ok(
            json!({"access_token": "zm-at-1", "token_type": "bearer",
            "refresh_token": "zm-rt-1", "expires_in": 3599, "scope": "user:read",
            "api_url": "https://api.zoom.us"}),
        ))
        .await;
    check_sent(
        &seen,
        "authorization_code",
        sent("/oauth/token", Basic, Form),
    );
    assert_lifetime(&result.unwrap().token, 3599);
    let (seen, result) = flow
        .refresh(
            "zm-rt-1",
            ok(json!({"access_token": "zm-at-2", "token_type": "bearer",
            "refresh_token": "zm-rt-2", "expires_in": 3599, "scope": "user:read"})),
        )
        .await;
    check_sent(&seen, "refresh_token", sent("/oauth/token", Basic, Form));
    assert_eq!(
        result.unwrap().token.refresh_token.unwrap().expose(),
        "zm-rt-2"
    );
}

#[tokio::test]
async fn shopify_templates_the_shop_and_has_no_refresh_token() {
    let flow = Flow::new("shopify", &[("shop", "fake-shop-01")]).await;
    assert_eq!(
        flow.request.token_url,
        "https://fake-shop-01.myshopify.com/admin/oauth/access_token"
    );
    let (seen, result) = flow
        .exchange(ok(
            json!({"access_token": "shpat_FAKE1", "scope": "write_orders,read_customers"}),
        ))
        .await;
    check_sent(
        &seen,
        "authorization_code",
        sent("/admin/oauth/access_token", Body, Json),
    );
    let set = result.unwrap();
    assert_eq!(
        set.token.scopes,
        scopes(&["write_orders", "read_customers"])
    );
    assert_eq!(set.token.refresh_token, None);
    assert_eq!(set.token.expires_at, None);
    assert_eq!(
        flow.provider.account_id_from(&flow.values).as_deref(),
        Some("fake-shop-01")
    );
    assert_eq!(flow.provider.api.auth_header, "X-Shopify-Access-Token");
    assert_eq!(
        flow.provider.api_base_url(&flow.values).unwrap().as_deref(),
        Some("https://fake-shop-01.myshopify.com/admin/api/2025-01")
    );
    // Expiring offline tokens refresh like any other.
    let (seen, result) = flow
        .refresh(
            "shprt_FAKE1",
            ok(json!({"access_token": "shpat_FAKE2", "expires_in": 3600,
            "refresh_token": "shprt_FAKE2", "scope": "write_orders"})),
        )
        .await;
    check_sent(
        &seen,
        "refresh_token",
        sent("/admin/oauth/access_token", Body, Json),
    );
    assert_lifetime(&result.unwrap().token, 3600);
}

#[tokio::test]
async fn gitlab_templates_a_self_managed_host() {
    let flow = Flow::new("gitlab", &[("host", "gitlab.example.com")]).await;
    assert_eq!(
        flow.request.token_url,
        "https://gitlab.example.com/oauth/token"
    );
    let (seen, result) = flow
        .exchange(ok(
            json!({"access_token": "glo-at-1", "token_type": "Bearer",
            "expires_in": 7200, "refresh_token": "glo-rt-1", "scope": "read_user",
            "created_at": 1607635748}),
        ))
        .await;
    let params = check_sent(
        &seen,
        "authorization_code",
        sent("/oauth/token", Body, Form),
    );
    assert!(params.contains_key("code_verifier"));
    assert_lifetime(&result.unwrap().token, 7200);
    let (seen, result) = flow
        .refresh(
            "glo-rt-1",
            ok(json!({"access_token": "glo-at-2", "token_type": "Bearer",
            "expires_in": 7200, "refresh_token": "glo-rt-2", "scope": "read_user",
            "created_at": 1607635749})),
        )
        .await;
    check_sent(&seen, "refresh_token", sent("/oauth/token", Body, Form));
    assert_eq!(
        result.unwrap().token.refresh_token.unwrap().expose(),
        "glo-rt-2"
    );
}

#[tokio::test]
async fn discord_uses_basic_auth() {
    let flow = Flow::new("discord", &[]).await;
    let (seen, result) = flow
        .exchange(ok(
            json!({"access_token": "dc-at-1", "token_type": "Bearer",
            "expires_in": 604800, "refresh_token": "dc-rt-1", "scope": "identify"}),
        ))
        .await;
    check_sent(
        &seen,
        "authorization_code",
        sent("/api/oauth2/token", Basic, Form),
    );
    assert_lifetime(&result.unwrap().token, 604800);
    let (seen, result) = flow
        .refresh(
            "dc-rt-1",
            ok(json!({"access_token": "dc-at-2", "token_type": "Bearer",
            "expires_in": 604800, "refresh_token": "dc-rt-2", "scope": "identify"})),
        )
        .await;
    check_sent(
        &seen,
        "refresh_token",
        sent("/api/oauth2/token", Basic, Form),
    );
    assert_eq!(
        result.unwrap().token.refresh_token.unwrap().expose(),
        "dc-rt-2"
    );
}

#[tokio::test]
async fn dropbox_reads_the_account_id_from_the_token_response() {
    let flow = Flow::new("dropbox", &[]).await;
    let (seen, result) = flow
        .exchange(ok(json!({"access_token": "sl.FAKE1", "expires_in": 14400,
            "token_type": "bearer", "scope": "account_info.read", "refresh_token": "db-rt-1",
            "account_id": "dbid:AAH4f99T0taONIb-OurWxbNQ6ywGRopQngc", "uid": "12345"})))
        .await;
    check_sent(
        &seen,
        "authorization_code",
        sent("/oauth2/token", Body, Form),
    );
    let set = result.unwrap();
    assert_eq!(
        set.account_id.as_deref(),
        Some("dbid:AAH4f99T0taONIb-OurWxbNQ6ywGRopQngc")
    );
    assert_lifetime(&set.token, 14400);
    // Refreshes answer without a refresh token or account id.
    let (seen, result) = flow
        .refresh(
            "db-rt-1",
            ok(json!({"access_token": "sl.FAKE2", "expires_in": 14400,
            "token_type": "bearer"})),
        )
        .await;
    check_sent(&seen, "refresh_token", sent("/oauth2/token", Body, Form));
    let set = result.unwrap();
    assert_eq!(set.token.refresh_token, None);
    assert_eq!(set.account_id, None);
}

#[tokio::test]
async fn box_rotates_single_use_refresh_tokens() {
    let flow = Flow::new("box", &[]).await;
    let (seen, result) = flow
        .exchange(ok(json!({"access_token": "box-at-1", "expires_in": 3600,
            "restricted_to": [], "refresh_token": "box-rt-1", "token_type": "bearer"})))
        .await;
    check_sent(
        &seen,
        "authorization_code",
        sent("/oauth2/token", Body, Form),
    );
    assert_lifetime(&result.unwrap().token, 3600);
    let (seen, result) = flow
        .refresh(
            "box-rt-1",
            ok(json!({"access_token": "box-at-2", "expires_in": 3600,
            "restricted_to": [], "refresh_token": "box-rt-2", "token_type": "bearer"})),
        )
        .await;
    check_sent(&seen, "refresh_token", sent("/oauth2/token", Body, Form));
    assert_eq!(
        result.unwrap().token.refresh_token.unwrap().expose(),
        "box-rt-2"
    );
}

#[tokio::test]
async fn intercom_tokens_never_expire() {
    let flow = Flow::new("intercom", &[]).await;
    let (seen, result) = flow
        .exchange(ok(
            json!({"token": "ic-at-1", "access_token": "ic-at-1", "token_type": "Bearer"}),
        ))
        .await;
    check_sent(
        &seen,
        "authorization_code",
        sent("/auth/eagle/token", Body, Form),
    );
    let set = result.unwrap();
    assert_eq!(set.token.access_token.expose(), "ic-at-1");
    assert_eq!(set.token.expires_at, None);
    // There is no refresh grant; a refresh attempt is rejected like any dead grant.
    let (seen, result) = flow
        .refresh(
            "none",
            status(400, json!({"error": "unsupported_grant_type"})),
        )
        .await;
    check_sent(
        &seen,
        "refresh_token",
        sent("/auth/eagle/token", Body, Form),
    );
    assert!(
        matches!(result, Err(TokenError::Misconfigured { .. })),
        "{result:?}"
    );
    let (_, id, _) = flow
        .userinfo(
            &Default::default(),
            ok(json!({"type": "admin", "id": "991267",
            "app": {"type": "app", "id_code": "abc123"}})),
        )
        .await;
    assert_eq!(id.as_deref(), Some("abc123"));
}

#[tokio::test]
async fn zendesk_templates_the_subdomain_and_sends_json() {
    let flow = Flow::new("zendesk", &[("subdomain", "acme")]).await;
    assert_eq!(
        flow.request.token_url,
        "https://acme.zendesk.com/oauth/tokens"
    );
    let (seen, result) = flow
        .exchange(ok(
            json!({"access_token": "zd-at-1", "token_type": "bearer",
            "scope": "read", "refresh_token": "zd-rt-1", "expires_in": 172800,
            "refresh_token_expires_in": 800000}),
        ))
        .await;
    check_sent(
        &seen,
        "authorization_code",
        sent("/oauth/tokens", Body, Json),
    );
    assert_lifetime(&result.unwrap().token, 172800);
    let (seen, result) = flow
        .refresh(
            "zd-rt-1",
            ok(json!({"access_token": "zd-at-2", "token_type": "bearer",
            "scope": "read", "refresh_token": "zd-rt-2", "expires_in": 172800})),
        )
        .await;
    check_sent(&seen, "refresh_token", sent("/oauth/tokens", Body, Json));
    assert_eq!(
        result.unwrap().token.refresh_token.unwrap().expose(),
        "zd-rt-2"
    );
    let (seen, id, _) = flow
        .userinfo(
            &Default::default(),
            ok(json!({"user": {"id": 35436, "name": "Agent"}})),
        )
        .await;
    assert_eq!(seen.path, "/api/v2/users/me");
    assert_eq!(id.as_deref(), Some("35436"));
}

#[tokio::test]
async fn pipedrive_captures_the_company_api_domain() {
    let flow = Flow::new("pipedrive", &[]).await;
    let (seen, result) = flow
        .exchange(ok(
            json!({"access_token": "pd-at-1", "token_type": "Bearer",
            "refresh_token": "pd-rt-1", "scope": "base,deals:full", "expires_in": 3599,
            "api_domain": "https://acme.pipedrive.com"}),
        ))
        .await;
    check_sent(
        &seen,
        "authorization_code",
        sent("/oauth/token", Basic, Form),
    );
    let set = result.unwrap();
    assert_eq!(set.token.scopes, scopes(&["base", "deals:full"]));
    assert_eq!(
        flow.provider
            .api_base_url(&set.captured)
            .unwrap()
            .as_deref(),
        Some("https://acme.pipedrive.com/api/v1")
    );
    let (seen, result) = flow
        .refresh(
            "pd-rt-1",
            ok(json!({"access_token": "pd-at-2", "token_type": "Bearer",
            "refresh_token": "pd-rt-2", "scope": "base", "expires_in": 3599,
            "api_domain": "https://acme.pipedrive.com"})),
        )
        .await;
    check_sent(&seen, "refresh_token", sent("/oauth/token", Basic, Form));
    assert_lifetime(&result.unwrap().token, 3599);
    let (seen, id, _) = flow
        .userinfo(
            &set.captured,
            ok(json!({"success": true, "data": {"id": 7, "company_id": 77}})),
        )
        .await;
    assert_eq!(seen.path, "/api/v1/users/me");
    assert_eq!(id.as_deref(), Some("77"));
}

#[tokio::test]
async fn quickbooks_uses_basic_auth_and_the_callback_realm() {
    let flow = Flow::new("quickbooks", &[]).await;
    let (seen, result) = flow
        .exchange(ok(json!({"token_type": "bearer", "expires_in": 3600,
            "refresh_token": "AB11-FAKE-RT-1", "x_refresh_token_expires_in": 8726400,
            "access_token": "eyJ-FAKE-AT-1"})))
        .await;
    check_sent(
        &seen,
        "authorization_code",
        sent("/oauth2/v1/tokens/bearer", Basic, Form),
    );
    assert_lifetime(&result.unwrap().token, 3600);
    let (seen, result) = flow
        .refresh(
            "AB11-FAKE-RT-1",
            ok(json!({"token_type": "bearer", "expires_in": 3600,
            "refresh_token": "AB11-FAKE-RT-2", "x_refresh_token_expires_in": 8726400,
            "access_token": "eyJ-FAKE-AT-2"})),
        )
        .await;
    check_sent(
        &seen,
        "refresh_token",
        sent("/oauth2/v1/tokens/bearer", Basic, Form),
    );
    assert_eq!(
        result.unwrap().token.refresh_token.unwrap().expose(),
        "AB11-FAKE-RT-2"
    );
    let query = [("realmId".to_string(), "4620816365".to_string())].into();
    let captured = flow.provider.callback_captures(&query).unwrap();
    assert_eq!(
        flow.provider.account_id_from(&captured).as_deref(),
        Some("4620816365")
    );
}

#[tokio::test]
async fn xero_uses_basic_auth_and_finds_the_tenant() {
    let flow = Flow::new("xero", &[]).await;
    let (seen, result) = flow
        .exchange(ok(
            json!({"id_token": "eyJ.FAKE.", "access_token": "xero-at-1",
            "expires_in": 1800, "token_type": "Bearer", "refresh_token": "xero-rt-1",
            "scope": "openid profile email accounting.transactions offline_access"}),
        ))
        .await;
    check_sent(
        &seen,
        "authorization_code",
        sent("/connect/token", Basic, Form),
    );
    assert_lifetime(&result.unwrap().token, 1800);
    let (seen, result) = flow
        .refresh(
            "xero-rt-1",
            ok(json!({"access_token": "xero-at-2", "expires_in": 1800,
            "token_type": "Bearer", "refresh_token": "xero-rt-2"})),
        )
        .await;
    check_sent(&seen, "refresh_token", sent("/connect/token", Basic, Form));
    assert_eq!(
        result.unwrap().token.refresh_token.unwrap().expose(),
        "xero-rt-2"
    );
    let (_, id, captured) = flow
        .userinfo(
            &Default::default(),
            ok(json!([{"id": "c-1",
            "tenantId": "70784a63-d24b-46a9-a4db-0e70a274b056", "tenantType": "ORGANISATION"}])),
        )
        .await;
    assert_eq!(id.as_deref(), Some("70784a63-d24b-46a9-a4db-0e70a274b056"));
    assert_eq!(
        captured["tenant_id"],
        "70784a63-d24b-46a9-a4db-0e70a274b056"
    );
}

#[tokio::test]
async fn calendly_names_owner_and_organization() {
    let flow = Flow::new("calendly", &[]).await;
    let (seen, result) = flow
        .exchange(ok(json!({"token_type": "Bearer", "expires_in": 7200,
            "created_at": 1548689183, "refresh_token": "cal-rt-1", "scope": "default",
            "access_token": "cal-at-1", "owner": "https://api.calendly.com/users/EBHAAFHDCAEQTSEZ",
            "organization": "https://api.calendly.com/organizations/EBHAAFHDCAEQTSEZ"})))
        .await;
    check_sent(
        &seen,
        "authorization_code",
        sent("/oauth/token", Basic, Form),
    );
    let set = result.unwrap();
    assert_eq!(
        set.account_id.as_deref(),
        Some("https://api.calendly.com/organizations/EBHAAFHDCAEQTSEZ")
    );
    assert_eq!(
        set.captured["owner"],
        "https://api.calendly.com/users/EBHAAFHDCAEQTSEZ"
    );
    let (seen, result) = flow
        .refresh(
            "cal-rt-1",
            ok(json!({"token_type": "Bearer", "expires_in": 7200,
            "refresh_token": "cal-rt-2", "access_token": "cal-at-2"})),
        )
        .await;
    check_sent(&seen, "refresh_token", sent("/oauth/token", Basic, Form));
    assert_lifetime(&result.unwrap().token, 7200);
}

#[tokio::test]
async fn airtable_requires_pkce_and_basic_auth() {
    let flow = Flow::new("airtable", &[]).await;
    let (seen, result) = flow
        .exchange(ok(json!({"access_token": "at-1", "refresh_token": "rt-1",
            "token_type": "Bearer", "scope": "data.records:read schema.bases:read",
            "expires_in": 3600, "refresh_expires_in": 5184000})))
        .await;
    let params = check_sent(
        &seen,
        "authorization_code",
        sent("/oauth2/v1/token", Basic, Form),
    );
    assert_eq!(
        params["code_verifier"],
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    );
    assert_eq!(
        result.unwrap().token.scopes,
        scopes(&["data.records:read", "schema.bases:read"])
    );
    let (seen, result) = flow
        .refresh(
            "rt-1",
            ok(json!({"access_token": "at-2", "refresh_token": "rt-2",
            "token_type": "Bearer", "expires_in": 3600})),
        )
        .await;
    check_sent(
        &seen,
        "refresh_token",
        sent("/oauth2/v1/token", Basic, Form),
    );
    assert_eq!(
        result.unwrap().token.refresh_token.unwrap().expose(),
        "rt-2"
    );
}

#[tokio::test]
async fn figma_refreshes_at_its_own_endpoint() {
    let flow = Flow::new("figma", &[]).await;
    let (seen, result) = flow
        .exchange(ok(
            json!({"user_id": 1234567890, "user_id_string": "1234567890",
            "access_token": "figu_FAKE1", "token_type": "bearer", "expires_in": 7776000,
            "refresh_token": "figur_FAKE1"}),
        ))
        .await;
    check_sent(
        &seen,
        "authorization_code",
        sent("/v1/oauth/token", Basic, Form),
    );
    let set = result.unwrap();
    assert_eq!(set.account_id.as_deref(), Some("1234567890"));
    let (seen, result) = flow
        .refresh(
            "figur_FAKE1",
            ok(json!({"access_token": "figu_FAKE2",
            "token_type": "bearer", "expires_in": 7776000})),
        )
        .await;
    check_sent(
        &seen,
        "refresh_token",
        sent("/v1/oauth/refresh", Basic, Form),
    );
    let set = result.unwrap();
    assert_lifetime(&set.token, 7_776_000);
    assert_eq!(set.token.refresh_token, None);
}

#[tokio::test]
async fn monday_tokens_never_expire() {
    let flow = Flow::new("monday", &[]).await;
    let (seen, result) = flow
        .exchange(ok(
            json!({"access_token": "mon-at-1", "token_type": "Bearer",
            "scope": "me:read boards:read"}),
        ))
        .await;
    check_sent(
        &seen,
        "authorization_code",
        sent("/oauth2/token", Body, Form),
    );
    let set = result.unwrap();
    assert_eq!(set.token.expires_at, None);
    assert_eq!(set.token.refresh_token, None);
    let (seen, result) = flow
        .refresh("none", status(400, json!({"error": "invalid_grant"})))
        .await;
    check_sent(&seen, "refresh_token", sent("/oauth2/token", Body, Form));
    assert!(matches!(result, Err(TokenError::Rejected { .. })));
    let (_, id, captured) = flow
        .userinfo(
            &Default::default(),
            ok(json!({"data": {"me": {"id": "9", "account": {"id": "42"}}}})),
        )
        .await;
    assert_eq!(id.as_deref(), Some("42"));
    assert_eq!(captured["user_id"], "9");
}

#[tokio::test]
async fn clickup_sends_parameters_in_the_query() {
    let flow = Flow::new("clickup", &[]).await;
    let (seen, result) = flow
        .exchange(ok(
            json!({"access_token": "cu-at-1", "token_type": "Bearer"}),
        ))
        .await;
    check_sent(
        &seen,
        "authorization_code",
        sent("/api/v2/oauth/token", Body, Query),
    );
    assert_eq!(result.unwrap().token.expires_at, None);
    let (seen, result) = flow
        .refresh(
            "none",
            status(
                400,
                json!({"err": "Oauth token not found",
        "ECODE": "OAUTH_014"}),
            ),
        )
        .await;
    check_sent(
        &seen,
        "refresh_token",
        sent("/api/v2/oauth/token", Body, Query),
    );
    assert!(matches!(result, Err(TokenError::Invalid(_))), "{result:?}");
    let (_, id, _) = flow
        .userinfo(
            &Default::default(),
            ok(json!({"user": {"id": 123, "username": "x"}})),
        )
        .await;
    assert_eq!(id.as_deref(), Some("123"));
}

#[tokio::test]
async fn mailchimp_reads_zero_lifetime_as_non_expiring_and_finds_the_data_center() {
    let flow = Flow::new("mailchimp", &[]).await;
    let (seen, result) = flow
        .exchange(ok(
            json!({"access_token": "mc-at-1", "expires_in": 0, "scope": null}),
        ))
        .await;
    check_sent(
        &seen,
        "authorization_code",
        sent("/oauth2/token", Body, Form),
    );
    let set = result.unwrap();
    assert_eq!(set.token.expires_at, None);
    assert_eq!(set.token.scopes, None);
    let (seen, result) = flow
        .refresh("none", status(400, json!({"error": "invalid_grant"})))
        .await;
    check_sent(&seen, "refresh_token", sent("/oauth2/token", Body, Form));
    assert!(matches!(result, Err(TokenError::Rejected { .. })));

    let (seen, id, captured) = flow
        .userinfo(
            &Default::default(),
            ok(json!({"dc": "us6", "user_id": 8412,
            "api_endpoint": "https://us6.api.mailchimp.com", "accountname": "Acme"})),
        )
        .await;
    assert_eq!(seen.header("authorization"), Some("OAuth access-1"));
    assert_eq!(id.as_deref(), Some("8412"));
    assert_eq!(
        flow.provider.api_base_url(&captured).unwrap().as_deref(),
        Some("https://us6.api.mailchimp.com/3.0")
    );
}

#[tokio::test]
async fn reddit_uses_basic_auth_and_its_own_user_agent() {
    let flow = Flow::new("reddit", &[]).await;
    let (seen, result) = flow
        .exchange(ok(
            json!({"access_token": "rd-at-1", "token_type": "bearer",
            "expires_in": 86400, "scope": "identity read", "refresh_token": "rd-rt-1"}),
        ))
        .await;
    check_sent(
        &seen,
        "authorization_code",
        sent("/api/v1/access_token", Basic, Form),
    );
    assert_eq!(seen.header("user-agent"), Some("splice-connector/1.0"));
    assert_lifetime(&result.unwrap().token, 86400);
    let (seen, result) = flow
        .refresh(
            "rd-rt-1",
            ok(json!({"access_token": "rd-at-2", "token_type": "bearer",
            "expires_in": 86400, "scope": "identity read", "refresh_token": "rd-rt-1"})),
        )
        .await;
    check_sent(
        &seen,
        "refresh_token",
        sent("/api/v1/access_token", Basic, Form),
    );
    assert_eq!(result.unwrap().token.access_token.expose(), "rd-at-2");
}

#[tokio::test]
async fn linkedin_accepts_a_missing_token_type() {
    let flow = Flow::new("linkedin", &[]).await;
    // Case C07 b: no token_type at all; Bearer is assumed.
    let (seen, result) = flow
        .exchange(ok(
            json!({"access_token": "AQV_FAKE_LINKEDIN_TOKEN", "expires_in": 5183999,
            "scope": "openid,profile,email"}),
        ))
        .await;
    check_sent(
        &seen,
        "authorization_code",
        sent("/oauth/v2/accessToken", Body, Form),
    );
    let set = result.unwrap();
    assert_lifetime(&set.token, 5_183_999);
    assert_eq!(set.token.scopes, scopes(&["openid", "profile", "email"]));
    let (seen, result) = flow
        .refresh(
            "AQX_FAKE_RT",
            ok(json!({"access_token": "AQV_FAKE_2", "expires_in": 5183999,
            "refresh_token": "AQX_FAKE_RT", "refresh_token_expires_in": 525600})),
        )
        .await;
    check_sent(
        &seen,
        "refresh_token",
        sent("/oauth/v2/accessToken", Body, Form),
    );
    assert_eq!(result.unwrap().token.access_token.expose(), "AQV_FAKE_2");
    // Case C07 c: a MAC token is refused rather than sent as Bearer.
    let (_, result) = flow
        .exchange(ok(
            json!({"access_token": "FAKE-MAC-TOKEN", "token_type": "mac", "expires_in": 3600}),
        ))
        .await;
    assert!(matches!(result, Err(TokenError::Invalid(_))));
}

#[tokio::test]
async fn generic_oauth2_takes_its_endpoints_from_settings() {
    let flow = Flow::new(
        "oauth2",
        &[
            ("authorization_url", "https://idp.example/authorize"),
            ("token_url", "https://idp.example/oauth/token"),
            ("base_url", "https://api.example"),
        ],
    )
    .await;
    assert_eq!(flow.request.token_url, "https://idp.example/oauth/token");
    // Case C08 b, c: Twitch-style array scopes, on the exchange and on refresh.
    let (seen, result) = flow
        .exchange(ok(
            json!({"access_token": "FAKE-TWITCH-AT-1", "expires_in": 14124,
            "refresh_token": "FAKE-TWITCH-RT-1",
            "scope": ["channel:read:subscriptions", "user:read:email"], "token_type": "bearer"}),
        ))
        .await;
    check_sent(
        &seen,
        "authorization_code",
        sent("/oauth/token", Body, Form),
    );
    let expected = scopes(&["channel:read:subscriptions", "user:read:email"]);
    assert_eq!(result.unwrap().token.scopes, expected);
    let (seen, result) = flow
        .refresh(
            "FAKE-TWITCH-RT-1",
            ok(json!({"access_token": "FAKE-TWITCH-AT-2",
            "expires_in": 14400, "refresh_token": "FAKE-TWITCH-RT-2",
            "scope": ["channel:read:subscriptions", "user:read:email"], "token_type": "bearer"})),
        )
        .await;
    check_sent(&seen, "refresh_token", sent("/oauth/token", Body, Form));
    let set = result.unwrap();
    assert_eq!(set.token.scopes, expected);
    assert_lifetime(&set.token, 14400);
}

#[tokio::test]
async fn generic_client_credentials_mints_with_basic_auth() {
    let flow = Flow::new(
        "oauth2_client_credentials",
        &[
            ("token_url", "https://idp.example/oauth2/token"),
            ("base_url", "https://api.example"),
        ],
    )
    .await;
    let requested = vec!["orders.read".to_string(), "orders.write".to_string()];
    let (seen, result) = flow
        .client_credentials(
            &requested,
            ok(json!({"access_token": "cc-at-1",
            "token_type": "Bearer", "expires_in": 3600})),
        )
        .await;
    let params = check_sent(
        &seen,
        "client_credentials",
        sent("/oauth2/token", Basic, Form),
    );
    assert_eq!(params["scope"], "orders.read orders.write");
    assert_lifetime(&result.unwrap().token, 3600);
    let (seen, _) = flow
        .refresh("unused", ok(json!({"access_token": "cc-at-2"})))
        .await;
    check_sent(&seen, "refresh_token", sent("/oauth2/token", Basic, Form));
}

#[tokio::test]
async fn refresh_failures_are_classified_by_who_must_act() {
    // Case C14 (a, b are checked with Google and Microsoft above).
    let flow = Flow::new(
        "oauth2",
        &[
            ("authorization_url", "https://idp.example/authorize"),
            ("token_url", "https://idp.example/token"),
            ("base_url", "https://api.example"),
        ],
    )
    .await;

    // c: an HTML 503 is transient.
    let html = Answer {
        status: 503,
        content_type: "text/html",
        body: "<html>Service Unavailable</html>".into(),
    };
    let (_, result) = flow.refresh("rt", html).await;
    assert!(
        matches!(result, Err(TokenError::Transient(_))),
        "{result:?}"
    );

    // e: an unknown client is the developer's to fix, not the user's.
    let (_, result) = flow
        .refresh(
            "rt",
            status(
                401,
                json!({"error": "invalid_client",
            "error_description": "The OAuth client was not found."}),
            ),
        )
        .await;
    assert!(
        matches!(result, Err(TokenError::Misconfigured { ref error, .. }) if error == "invalid_client")
    );

    // d: a network failure is transient.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = closed.local_addr().unwrap();
    drop(closed);
    let mut request = flow.request.clone();
    request.token_url = format!("http://{address}/token");
    let client = splice_oauth::OAuthClient::new(reqwest::Client::new());
    let result = client
        .refresh_with(&request, &splice_domain::Secret::new("rt"))
        .await;
    assert!(
        matches!(result, Err(TokenError::Transient(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn authorize_urls_use_the_provider_scope_separator() {
    let flow = Flow::new("slack", &[]).await;
    let mut target = flow
        .provider
        .authorize(&flow.values, CLIENT_ID, None)
        .unwrap();
    target
        .params
        .insert("user_scope".into(), "search:read".into());
    let client = splice_oauth::OAuthClient::new(reqwest::Client::new());
    let request = splice_oauth::AuthorizeRequest {
        redirect_uri: REDIRECT_URI,
        state: "st",
        code_challenge: None,
    };
    let url = client.authorize_url_with(&target, &request).unwrap();
    let pairs: std::collections::BTreeMap<String, String> =
        url.query_pairs().into_owned().collect();
    assert_eq!(url.path(), "/oauth/v2/authorize");
    assert_eq!(pairs["scope"], "chat:write,channels:read");
    assert_eq!(pairs["user_scope"], "search:read");
    assert_eq!(pairs["client_id"], CLIENT_ID);
    assert_eq!(pairs["state"], "st");

    let flow = Flow::new("shopify", &[("shop", "acme")]).await;
    let target = flow
        .provider
        .authorize(&flow.values, CLIENT_ID, None)
        .unwrap();
    let url = client.authorize_url_with(&target, &request).unwrap();
    assert_eq!(url.host_str(), Some("acme.myshopify.com"));
}
