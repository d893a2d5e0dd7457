//! `describe` on realistic payloads from each provider.

use splice_webhooks::{ProviderKind, UNKNOWN_EVENT, WebhookRequest, describe};

use crate::providers::{
    ASANA_BODY, HUBSPOT_BODY, HUBSPOT_URI, INTERCOM_BODY, JIRA_BODY, LINEAR_BODY, ZOOM_BODY,
};
use crate::support::headers;

#[test]
fn github_event_type_joins_header_and_action_and_names_installation_first() {
    let headers = headers(&[
        ("X-GitHub-Event", "issues"),
        ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
    ]);
    let body = br#"{"action":"opened","issue":{"number":1},"repository":{"id":1296269,"owner":{"login":"octocat","id":1}},"organization":{"login":"github","id":9919},"sender":{"id":1},"installation":{"id":2311213}}"#;

    let info = describe(
        ProviderKind::Github,
        &WebhookRequest::new("POST", "/", &headers, body),
    );

    assert_eq!(info.event_type, "issues.opened");
    assert_eq!(
        info.delivery_id.as_deref(),
        Some("72d3162e-cc78-11e3-81ab-4c9367dc0958")
    );
    assert_eq!(info.account_ids, ["2311213", "9919", "1"]);
}

#[test]
fn slack_event_collects_team_and_authorization_teams_once_each() {
    let body = br#"{"team_id":"T1","api_app_id":"A1","event":{"type":"message"},"type":"event_callback","event_id":"Ev1","authorizations":[{"team_id":"T1"},{"team_id":"T2","enterprise_id":null}]}"#;

    let info = describe(
        ProviderKind::Slack,
        &WebhookRequest::new("POST", "/", &[], body),
    );

    assert_eq!(info.event_type, "message");
    assert_eq!(info.delivery_id.as_deref(), Some("Ev1"));
    assert_eq!(info.account_ids, ["T1", "T2"]);
}

#[test]
fn slack_interactivity_payload_inside_a_form_is_read() {
    let body = b"payload=%7B%22type%22%3A%22block_actions%22%2C%22team%22%3A%7B%22id%22%3A%22T0FAKETEAM1%22%2C%22domain%22%3A%22fake%22%7D%2C%22user%22%3A%7B%22id%22%3A%22U0FAKEUSER1%22%7D%2C%22api_app_id%22%3A%22A0FAKEAPP01%22%2C%22trigger_id%22%3A%221111.2222.abcd%22%2C%22actions%22%3A%5B%7B%22action_id%22%3A%22approve%22%2C%22type%22%3A%22button%22%7D%5D%7D";

    let info = describe(
        ProviderKind::Slack,
        &WebhookRequest::new("POST", "/", &[], body),
    );

    assert_eq!(info.event_type, "block_actions");
    assert_eq!(info.account_ids, ["T0FAKETEAM1"]);
    assert_eq!(info.delivery_id.as_deref(), Some("1111.2222.abcd"));
}

#[test]
fn slack_slash_command_form_is_read() {
    let body = b"token=x&team_id=T1DC2JH3J&command=%2Fwebhook-collect&text=&trigger_id=398738663015.47445629121";

    let info = describe(
        ProviderKind::Slack,
        &WebhookRequest::new("POST", "/", &[], body),
    );

    assert_eq!(info.event_type, "slash_command");
    assert_eq!(info.account_ids, ["T1DC2JH3J"]);
    assert_eq!(
        info.delivery_id.as_deref(),
        Some("398738663015.47445629121")
    );
}

#[test]
fn hubspot_batch_lists_every_event_type_and_id_and_marks_retries() {
    let info = describe(
        ProviderKind::Hubspot,
        &WebhookRequest::new("POST", HUBSPOT_URI, &[], HUBSPOT_BODY.as_bytes()),
    );

    assert_eq!(info.event_type, "contact.creation,deal.propertyChange");
    assert_eq!(info.delivery_id.as_deref(), Some("4102,4103"));
    assert_eq!(info.account_ids, ["62515"]);
    assert_eq!(info.retry_attempt, Some(1));
}

#[test]
fn linear_uses_delivery_header_type_action_and_organization() {
    let headers = headers(&[("Linear-Delivery", "234d1a4e-b617-4388-90fe-adc3633d6b72")]);

    let info = describe(
        ProviderKind::Linear,
        &WebhookRequest::new("POST", "/", &headers, LINEAR_BODY.as_bytes()),
    );

    assert_eq!(info.event_type, "Issue.create");
    assert_eq!(
        info.delivery_id.as_deref(),
        Some("234d1a4e-b617-4388-90fe-adc3633d6b72")
    );
    assert_eq!(info.account_ids, ["e9e3d1c2-0000-4000-8000-00000000f00d"]);
}

#[test]
fn zoom_delivery_is_event_and_timestamp_and_account_is_payload_account() {
    let info = describe(
        ProviderKind::Zoom,
        &WebhookRequest::new("POST", "/", &[], ZOOM_BODY.as_bytes()),
    );

    assert_eq!(info.event_type, "meeting.started");
    assert_eq!(
        info.delivery_id.as_deref(),
        Some("meeting.started:1700000000456")
    );
    assert_eq!(info.account_ids, ["AAAAAAfakeACCOUNT1"]);
}

#[test]
fn jira_names_site_from_self_links_and_reads_atlassian_headers() {
    let headers = headers(&[
        ("X-Atlassian-Webhook-Identifier", "6b1f7ab6-0001"),
        ("X-Atlassian-Webhook-Retry", "2"),
    ]);

    let info = describe(
        ProviderKind::Atlassian,
        &WebhookRequest::new("POST", "/", &headers, JIRA_BODY.as_bytes()),
    );

    assert_eq!(info.event_type, "jira:issue_created");
    assert_eq!(info.delivery_id.as_deref(), Some("6b1f7ab6-0001"));
    assert_eq!(info.account_ids, ["https://acme.atlassian.net"]);
    assert_eq!(info.retry_attempt, Some(2));
}

#[test]
fn intercom_reads_topic_notification_id_and_app() {
    let info = describe(
        ProviderKind::Intercom,
        &WebhookRequest::new("POST", "/", &[], INTERCOM_BODY.as_bytes()),
    );

    assert_eq!(info.event_type, "conversation.user.created");
    assert_eq!(
        info.delivery_id.as_deref(),
        Some("notif_00000000-0000-4000-8000-000000000001")
    );
    assert_eq!(info.account_ids, ["fakeapp1"]);
    assert_eq!(info.retry_attempt, None);
}

#[test]
fn discord_interaction_type_is_named_and_guild_routes() {
    let body = br#"{"id":"1200000000000000001","application_id":"1100000000000000001","type":2,"guild_id":"1000000000000000001","data":{"name":"status"}}"#;

    let info = describe(
        ProviderKind::Discord,
        &WebhookRequest::new("POST", "/", &[], body),
    );

    assert_eq!(info.event_type, "application_command");
    assert_eq!(info.delivery_id.as_deref(), Some("1200000000000000001"));
    assert_eq!(info.account_ids, ["1000000000000000001"]);
}

#[test]
fn graph_notifications_give_change_types_and_tenants() {
    let body = br#"{"value":[{"subscriptionId":"s1","clientState":"c","changeType":"created","resource":"Users/1/Messages/2","tenantId":"84bd8158-6d4d-4958-8b9f-9d6445542f95"}]}"#;

    let info = describe(
        ProviderKind::MicrosoftGraph,
        &WebhookRequest::new("POST", "/", &[], body),
    );

    assert_eq!(info.event_type, "created");
    assert_eq!(info.account_ids, ["84bd8158-6d4d-4958-8b9f-9d6445542f95"]);
}

#[test]
fn asana_events_give_resource_and_action() {
    let info = describe(
        ProviderKind::Asana,
        &WebhookRequest::new("POST", "/", &[], ASANA_BODY.as_bytes()),
    );

    assert_eq!(info.event_type, "task.changed");
    assert_eq!(info.delivery_id, None);
}

#[test]
fn stripe_connect_account_routes_the_event() {
    let body = br#"{"id":"evt_1","type":"invoice.paid","account":"acct_1","livemode":false}"#;

    let info = describe(
        ProviderKind::Stripe,
        &WebhookRequest::new("POST", "/", &[], body),
    );

    assert_eq!(info.event_type, "invoice.paid");
    assert_eq!(info.account_ids, ["acct_1"]);
}

#[test]
fn unreadable_body_yields_unknown_type_without_failing() {
    let info = describe(
        ProviderKind::Slack,
        &WebhookRequest::new("POST", "/", &[], b"\x00\x01binary"),
    );

    assert_eq!(info.event_type, UNKNOWN_EVENT);
    assert!(info.account_ids.is_empty());
}
