//! The provider files compiled into the binary. A test checks that this list and the
//! `providers/` folder agree.

/// Pairs of provider name and file text.
macro_rules! provider_files {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../providers/", $name, ".toml")))),*]
    };
}

pub(crate) const FILES: &[(&str, &str)] = provider_files![
    "airtable",
    "api_key",
    "api_key_query",
    "asana",
    "atlassian",
    "basic",
    "box",
    "calendly",
    "clickup",
    "discord",
    "dropbox",
    "figma",
    "github",
    "gitlab",
    "google",
    "hubspot",
    "intercom",
    "linear",
    "linkedin",
    "mailchimp",
    "microsoft",
    "monday",
    "notion",
    "oauth2",
    "oauth2_client_credentials",
    "pipedrive",
    "quickbooks",
    "reddit",
    "salesforce",
    "shopify",
    "slack",
    "stripe",
    "xero",
    "zendesk",
    "zoom",
];
