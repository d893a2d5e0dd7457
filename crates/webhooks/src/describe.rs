//! Describing a verified delivery: its id, its type, and the provider accounts it concerns.
//!
//! [`describe`] reads headers first and the body second, so a body that is neither JSON nor a
//! form still yields what the headers give. It never fails and never decides routing: the
//! server matches [`EventInfo::account_ids`] against installs and deduplicates on
//! [`EventInfo::dedupe_key`] in shared storage. Call it only on a request `verify` accepted.

use serde_json::Value;

use crate::provider::ProviderKind;
use crate::request::WebhookRequest;

/// Event type used when neither headers nor body name one.
pub const UNKNOWN_EVENT: &str = "unknown";

/// What a verified delivery is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventInfo {
    /// The provider that sent it.
    pub provider: ProviderKind,
    /// The provider's id for this event or delivery, stable across the provider's retries and
    /// redeliveries, where the provider gives one.
    pub delivery_id: Option<String>,
    /// The event type, e.g. `issues.opened`, `app_mention`, `orders/create`.
    pub event_type: String,
    /// Provider account ids to route by (Slack team, GitHub installation, Shopify shop domain,
    /// HubSpot portal, …), most specific first, without duplicates.
    pub account_ids: Vec<String>,
    /// The provider's retry counter when it marks a redelivery (Slack `X-Slack-Retry-Num`,
    /// Atlassian `X-Atlassian-Webhook-Retry`, HubSpot `attemptNumber`).
    pub retry_attempt: Option<u32>,
}

impl EventInfo {
    /// A key equal for every delivery of the same event, for deduplication; `None` when the
    /// provider gives no delivery id.
    pub fn dedupe_key(&self) -> Option<String> {
        let delivery = self.delivery_id.as_deref()?;
        let account = self.account_ids.first().map_or("-", String::as_str);
        Some(format!(
            "{}:{account}:{}:{delivery}",
            self.provider, self.event_type
        ))
    }
}

/// Describes a delivery that has already passed verification.
pub fn describe(kind: ProviderKind, request: &WebhookRequest<'_>) -> EventInfo {
    let body = parse_body(request.body);
    let body = body.as_ref();
    let mut info = EventInfo {
        provider: kind,
        delivery_id: None,
        event_type: UNKNOWN_EVENT.to_owned(),
        account_ids: Vec::new(),
        retry_attempt: None,
    };

    match kind {
        ProviderKind::Slack => describe_slack(&mut info, request, body),
        ProviderKind::Github => describe_github(&mut info, request, body),
        ProviderKind::Stripe => {
            info.delivery_id = text_at(body, &["id"]);
            set_type(&mut info, text_at(body, &["type"]));
            push_account(&mut info, text_at(body, &["account"]));
        }
        ProviderKind::Shopify => describe_shopify(&mut info, request),
        ProviderKind::Hubspot => describe_hubspot(&mut info, body),
        ProviderKind::Linear => {
            info.delivery_id = header(request, "Linear-Delivery");
            set_type(&mut info, joined(body, "type", "action"));
            push_account(&mut info, text_at(body, &["organizationId"]));
        }
        ProviderKind::Zoom => {
            let event = text_at(body, &["event"]);
            let ts = text_at(body, &["event_ts"]);
            if let (Some(event), Some(ts)) = (&event, ts) {
                info.delivery_id = Some(format!("{event}:{ts}"));
            }
            set_type(&mut info, event);
            push_account(&mut info, text_at(body, &["payload", "account_id"]));
        }
        ProviderKind::Atlassian => describe_atlassian(&mut info, request, body),
        ProviderKind::Intercom => {
            info.delivery_id = text_at(body, &["id"]);
            set_type(&mut info, text_at(body, &["topic"]));
            push_account(&mut info, text_at(body, &["app_id"]));
            info.retry_attempt = number_at(body, &["delivery_attempts"])
                .and_then(|attempts| u32::try_from(attempts.saturating_sub(1)).ok())
                .filter(|retries| *retries > 0);
        }
        ProviderKind::Discord => describe_discord(&mut info, body),
        ProviderKind::MicrosoftGraph => describe_graph(&mut info, body),
        ProviderKind::Asana => describe_asana(&mut info, body),
        ProviderKind::Generic => {
            info.delivery_id = text_at(body, &["id"]);
            let kind = ["type", "event", "topic"]
                .iter()
                .find_map(|field| text_at(body, &[field]));
            set_type(&mut info, kind);
        }
    }
    info
}

fn describe_slack(info: &mut EventInfo, request: &WebhookRequest<'_>, body: Option<&Value>) {
    info.retry_attempt = header(request, "X-Slack-Retry-Num").and_then(|n| n.parse().ok());

    match text_at(body, &["type"]).as_deref() {
        Some("event_callback") => {
            info.delivery_id = text_at(body, &["event_id"]);
            set_type(info, text_at(body, &["event", "type"]));
        }
        Some(other) => {
            // Interactivity payloads (block_actions, view_submission, …) carry a trigger id.
            info.event_type = other.to_owned();
            info.delivery_id = text_at(body, &["trigger_id"]);
        }
        None if text_at(body, &["command"]).is_some() => {
            info.event_type = "slash_command".to_owned();
            info.delivery_id = text_at(body, &["trigger_id"]);
        }
        None => {}
    }

    push_account(info, text_at(body, &["team_id"]));
    push_account(info, text_at(body, &["team", "id"]));
    for authorization in array_at(body, &["authorizations"]) {
        push_account(info, text_at(Some(authorization), &["team_id"]));
    }
    push_account(info, text_at(body, &["enterprise_id"]));
}

fn describe_github(info: &mut EventInfo, request: &WebhookRequest<'_>, body: Option<&Value>) {
    info.delivery_id = header(request, "X-GitHub-Delivery");
    if let Some(event) = header(request, "X-GitHub-Event") {
        info.event_type = match text_at(body, &["action"]) {
            Some(action) => format!("{event}.{action}"),
            None => event,
        };
    }
    push_account(info, text_at(body, &["installation", "id"]));
    push_account(info, text_at(body, &["organization", "id"]));
    push_account(info, text_at(body, &["repository", "owner", "id"]));
}

fn describe_shopify(info: &mut EventInfo, request: &WebhookRequest<'_>) {
    // Duplicates share X-Shopify-Event-Id; the webhook id differs per delivery.
    info.delivery_id =
        header(request, "X-Shopify-Event-Id").or_else(|| header(request, "X-Shopify-Webhook-Id"));
    set_type(info, header(request, "X-Shopify-Topic"));
    push_account(
        info,
        header(request, "X-Shopify-Shop-Domain").map(|domain| domain.to_ascii_lowercase()),
    );
}

/// HubSpot posts batches: an array of events, each with its own id, type and portal.
fn describe_hubspot(info: &mut EventInfo, body: Option<&Value>) {
    let events: Vec<&Value> = match body {
        Some(Value::Array(events)) => events.iter().collect(),
        Some(single @ Value::Object(_)) => vec![single],
        _ => Vec::new(),
    };

    let ids: Vec<String> = events
        .iter()
        .filter_map(|event| text_at(Some(event), &["eventId"]))
        .collect();
    if !ids.is_empty() {
        info.delivery_id = Some(ids.join(","));
    }
    let mut types: Vec<String> = Vec::new();
    for event in &events {
        if let Some(kind) = text_at(Some(event), &["subscriptionType"])
            && !types.contains(&kind)
        {
            types.push(kind);
        }
        push_account(info, text_at(Some(event), &["portalId"]));
    }
    if !types.is_empty() {
        info.event_type = types.join(",");
    }
    info.retry_attempt = events
        .iter()
        .filter_map(|event| number_at(Some(event), &["attemptNumber"]))
        .max()
        .and_then(|attempt| u32::try_from(attempt).ok())
        .filter(|attempt| *attempt > 0);
}

fn describe_atlassian(info: &mut EventInfo, request: &WebhookRequest<'_>, body: Option<&Value>) {
    info.delivery_id = header(request, "X-Atlassian-Webhook-Identifier");
    info.retry_attempt = header(request, "X-Atlassian-Webhook-Retry").and_then(|n| n.parse().ok());
    set_type(info, text_at(body, &["webhookEvent"]));

    push_account(info, text_at(body, &["cloudId"]));
    // Without a cloud id, the site's base URL from any `self` link identifies the tenant.
    let site = ["issue", "comment", "project", "user", "sprint", "worklog"]
        .iter()
        .find_map(|field| text_at(body, &[field, "self"]))
        .and_then(|link| site_origin(&link));
    push_account(info, site);
}

/// `https://example.atlassian.net` from `https://example.atlassian.net/rest/api/2/issue/1`.
fn site_origin(link: &str) -> Option<String> {
    let (scheme, rest) = link.split_once("://")?;
    let host = rest.split('/').next().filter(|host| !host.is_empty())?;
    Some(format!("{scheme}://{host}"))
}

fn describe_discord(info: &mut EventInfo, body: Option<&Value>) {
    info.delivery_id = text_at(body, &["id"]);
    let kind = number_at(body, &["type"]).map(|kind| match kind {
        1 => "ping".to_owned(),
        2 => "application_command".to_owned(),
        3 => "message_component".to_owned(),
        4 => "application_command_autocomplete".to_owned(),
        5 => "modal_submit".to_owned(),
        other => format!("interaction_{other}"),
    });
    set_type(info, kind);
    push_account(info, text_at(body, &["guild_id"]));
}

fn describe_graph(info: &mut EventInfo, body: Option<&Value>) {
    let mut types: Vec<String> = Vec::new();
    for notification in array_at(body, &["value"]) {
        let notification = Some(notification);
        let kind = text_at(notification, &["lifecycleEvent"])
            .or_else(|| text_at(notification, &["changeType"]));
        if let Some(kind) = kind
            && !types.contains(&kind)
        {
            types.push(kind);
        }
        push_account(info, text_at(notification, &["tenantId"]));
    }
    if !types.is_empty() {
        info.event_type = types.join(",");
    }
}

fn describe_asana(info: &mut EventInfo, body: Option<&Value>) {
    let mut types: Vec<String> = Vec::new();
    for event in array_at(body, &["events"]) {
        let event = Some(event);
        let kind = match (
            text_at(event, &["resource", "resource_type"]),
            text_at(event, &["action"]),
        ) {
            (Some(resource), Some(action)) => format!("{resource}.{action}"),
            (None, Some(action)) => action,
            _ => continue,
        };
        if !types.contains(&kind) {
            types.push(kind);
        }
    }
    if !types.is_empty() {
        info.event_type = types.join(",");
    }
}

/// The body as JSON: parsed directly, or from a form (Slack interactivity wraps JSON in its
/// `payload` field; slash commands are plain form fields).
fn parse_body(body: &[u8]) -> Option<Value> {
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        return Some(value);
    }
    let text = std::str::from_utf8(body).ok()?;
    if !text.contains('=') {
        return None;
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(text).ok()?;
    if let Some((_, payload)) = pairs.iter().find(|(key, _)| key == "payload")
        && let Ok(value) = serde_json::from_str::<Value>(payload)
    {
        return Some(value);
    }
    let object = pairs
        .into_iter()
        .map(|(key, value)| (key, Value::String(value)))
        .collect();
    Some(Value::Object(object))
}

fn value_at<'a>(body: Option<&'a Value>, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(body?, |value, key| value.get(key))
}

/// A string or number at `path`, as text; empty strings count as absent.
fn text_at(body: Option<&Value>, path: &[&str]) -> Option<String> {
    match value_at(body, path)? {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

fn number_at(body: Option<&Value>, path: &[&str]) -> Option<u64> {
    match value_at(body, path)? {
        Value::Number(number) => number.as_u64(),
        Value::String(text) => text.parse().ok(),
        _ => None,
    }
}

fn array_at<'a>(body: Option<&'a Value>, path: &[&str]) -> &'a [Value] {
    value_at(body, path)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// `"{first}.{second}"` from two body fields, or whichever exists.
fn joined(body: Option<&Value>, first: &str, second: &str) -> Option<String> {
    match (text_at(body, &[first]), text_at(body, &[second])) {
        (Some(a), Some(b)) => Some(format!("{a}.{b}")),
        (a, b) => a.or(b),
    }
}

fn header(request: &WebhookRequest<'_>, name: &str) -> Option<String> {
    request
        .header(name)
        .filter(|value| !value.is_empty())
        .map(str::to_owned)
}

fn set_type(info: &mut EventInfo, kind: Option<String>) {
    if let Some(kind) = kind {
        info.event_type = kind;
    }
}

fn push_account(info: &mut EventInfo, account: Option<String>) {
    if let Some(account) = account
        && !info.account_ids.contains(&account)
    {
        info.account_ids.push(account);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unparseable_body_still_yields_header_facts() {
        let headers = vec![
            ("X-GitHub-Event".to_owned(), "push".to_owned()),
            ("X-GitHub-Delivery".to_owned(), "d-1".to_owned()),
        ];
        let request = WebhookRequest::new("POST", "/", &headers, b"\xff\xfenot json");

        let info = describe(ProviderKind::Github, &request);

        assert_eq!(info.event_type, "push");
        assert_eq!(info.delivery_id.as_deref(), Some("d-1"));
        assert!(info.account_ids.is_empty());
    }

    #[test]
    fn site_origin_keeps_scheme_and_host() {
        assert_eq!(
            site_origin("https://acme.atlassian.net/rest/api/2/issue/10001").as_deref(),
            Some("https://acme.atlassian.net")
        );
        assert_eq!(site_origin("not a url"), None);
    }

    #[test]
    fn dedupe_key_needs_a_delivery_id() {
        let mut info = EventInfo {
            provider: ProviderKind::Stripe,
            delivery_id: None,
            event_type: "charge.succeeded".into(),
            account_ids: vec![],
            retry_attempt: None,
        };
        assert_eq!(info.dedupe_key(), None);

        info.delivery_id = Some("evt_1".into());
        assert_eq!(
            info.dedupe_key().as_deref(),
            Some("stripe:-:charge.succeeded:evt_1")
        );
    }
}
