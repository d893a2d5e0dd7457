//! The provider catalog: every provider Splice knows, described as data rather than code.
//!
//! Each provider is one TOML file under `providers/`, compiled into the binary by [`builtin`].
//! An operator can add providers, or replace built-in ones, with files in a folder passed to
//! [`Catalog::load`]. A [`Provider`] turns connector settings into the requests of
//! `splice_oauth::client` and the response shape of `splice_oauth::response`; the quirk
//! engine itself (reading shapes, classifying failures) lives in the oauth crate, so this
//! crate depends on it and not the other way round. [`retry_after`] reads rate-limit waits.
//! Storage of connectors and identities is not this crate's business.

mod builtin;
pub mod provider;
pub mod retry_after;
mod template;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use provider::{
    AccountSpec, ApiKeyPlacement, ApiKeySpec, ApiSpec, AuthMode, OAuth2Spec, Provider,
    ProviderSummary, RateLimitSpec, Setting, SettingSource, SettingSummary,
};
pub use retry_after::{RetryPlan, parse_retry_after, retry_plan};

/// Why the catalog or a provider could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// A provider file is not valid TOML or does not fit the format.
    #[error("provider file {file}: {message}")]
    Parse { file: String, message: String },
    /// A provider file parses but contradicts itself.
    #[error("provider {provider}: {reason}")]
    Invalid { provider: String, reason: String },
    /// The extra providers folder could not be read.
    #[error("reading {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A setting the provider needs was not given and has no default.
    #[error("setting {0:?} is required")]
    MissingSetting(String),
    /// A setting's value does not fit the provider's pattern.
    #[error("setting {name:?} is invalid: {reason}")]
    InvalidSetting { name: String, reason: String },
    /// The operation needs another auth mode or a section the provider lacks.
    #[error("provider {provider} does not support {what}")]
    Unsupported { provider: String, what: String },
}

/// All known providers by name.
#[derive(Clone, Debug)]
pub struct Catalog {
    providers: BTreeMap<String, Provider>,
}

impl Catalog {
    /// The providers compiled into the binary.
    pub fn builtin() -> Self {
        let mut providers = BTreeMap::new();
        for (name, text) in builtin::FILES {
            let provider = parse_file(name, text, name)
                .unwrap_or_else(|e| panic!("built-in provider {name} is broken: {e}"));
            providers.insert(provider.name.clone(), provider);
        }
        Self { providers }
    }

    /// The built-in providers, then every `*.toml` in `extra_dir`; a file whose provider name
    /// is already known replaces that entry whole.
    pub fn load(extra_dir: Option<&Path>) -> Result<Self, CatalogError> {
        let mut catalog = Self::builtin();
        let Some(dir) = extra_dir else {
            return Ok(catalog);
        };

        let io = |source| CatalogError::Io {
            path: dir.to_owned(),
            source,
        };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(io)?;
        paths.retain(|p| p.extension().is_some_and(|ext| ext == "toml"));
        paths.sort();

        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(|source| CatalogError::Io {
                path: path.clone(),
                source,
            })?;
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            let provider = parse_file(&path.display().to_string(), &text, stem)?;
            catalog.providers.insert(provider.name.clone(), provider);
        }
        Ok(catalog)
    }

    pub fn get(&self, name: &str) -> Option<&Provider> {
        self.providers.get(name)
    }

    /// Every provider, by name.
    pub fn list(&self) -> impl Iterator<Item = &Provider> {
        self.providers.values()
    }

    /// What `GET /v1/providers` shows, by name.
    pub fn summaries(&self) -> Vec<ProviderSummary> {
        self.list().map(Provider::summary).collect()
    }
}

/// Parses and checks one provider file, whose provider must be named like the file.
fn parse_file(file: &str, text: &str, stem: &str) -> Result<Provider, CatalogError> {
    let provider: Provider = toml::from_str(text).map_err(|e| CatalogError::Parse {
        file: file.to_owned(),
        message: e.message().to_owned(),
    })?;
    if provider.name != stem {
        let reason = format!("its file is named {stem:?}; name the file after the provider");
        return Err(CatalogError::Invalid {
            provider: provider.name,
            reason,
        });
    }
    provider.validate()?;
    Ok(provider)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn builtin_lists_every_provider_file() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("providers");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
            .collect();
        on_disk.sort();
        let mut listed: Vec<String> = builtin::FILES.iter().map(|(n, _)| n.to_string()).collect();
        listed.sort();
        assert_eq!(listed, on_disk);
        assert!(Catalog::builtin().list().count() >= 34);
    }

    #[test]
    fn summaries_serialize_for_the_api() {
        let catalog = Catalog::builtin();
        let shopify = serde_json::to_value(catalog.get("shopify").unwrap().summary()).unwrap();
        assert_eq!(shopify["auth_mode"], "oauth2");
        assert_eq!(shopify["settings"][0]["name"], "shop");
        assert_eq!(shopify["settings"][0]["source"], "identity");
        assert_eq!(shopify["settings"][0]["required"], true);
        assert_eq!(shopify["settings"][1]["default"], "2025-01");
        assert_eq!(shopify["default_scopes"][0], "read_products");
        let stripe = serde_json::to_value(catalog.get("stripe").unwrap().summary()).unwrap();
        assert_eq!(stripe["auth_mode"], "api_key");
        assert_eq!(catalog.summaries().len(), catalog.list().count());
    }

    #[test]
    fn a_folder_adds_and_replaces_providers() {
        let dir = tempfile::tempdir().unwrap();
        let acme = "name = \"acme\"\ndisplay_name = \"Acme\"\ndocs_url = \"https://acme.test\"\n\
            auth_mode = \"api_key\"\n[api_key]\nplacement = \"query\"\nname = \"key\"\n";
        std::fs::write(dir.path().join("acme.toml"), acme).unwrap();
        let stripe = "name = \"stripe\"\ndisplay_name = \"Stripe (ours)\"\n\
            docs_url = \"https://stripe.test\"\nauth_mode = \"basic\"\n";
        std::fs::write(dir.path().join("stripe.toml"), stripe).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();

        let catalog = Catalog::load(Some(dir.path())).unwrap();
        assert_eq!(catalog.get("acme").unwrap().auth_mode, AuthMode::ApiKey);
        assert_eq!(catalog.get("stripe").unwrap().display_name, "Stripe (ours)");
        assert!(catalog.get("slack").is_some());
        assert_eq!(
            Catalog::load(None).unwrap().list().count(),
            Catalog::builtin().list().count()
        );
    }

    #[test]
    fn broken_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.toml"), "name = 3").unwrap();
        let err = Catalog::load(Some(dir.path())).unwrap_err();
        assert!(matches!(err, CatalogError::Parse { ref file, .. } if file.ends_with("bad.toml")));

        let wrong = "name = \"x\"\ndisplay_name = \"X\"\ndocs_url = \"u\"\nauth_mode = \"oauth2\"\n\
            [oauth2]\nauthorization_url = \"https://{tenant}.x.test/a\"\ntoken_url = \"https://x.test/t\"\n";
        std::fs::remove_file(dir.path().join("bad.toml")).unwrap();
        std::fs::write(dir.path().join("x.toml"), wrong).unwrap();
        let err = Catalog::load(Some(dir.path())).unwrap_err();
        assert!(err.to_string().contains("{tenant}"), "{err}");

        let missing = Catalog::load(Some(&dir.path().join("nope"))).unwrap_err();
        assert!(matches!(missing, CatalogError::Io { .. }));
    }

    #[test]
    fn settings_are_required_defaulted_and_validated() {
        let catalog = Catalog::builtin();
        let shopify = catalog.get("shopify").unwrap();
        let err = shopify.resolve_settings(&values(&[])).unwrap_err();
        assert!(matches!(err, CatalogError::MissingSetting(ref name) if name == "shop"));
        // A value that would move the request to another host is refused.
        for evil in ["evil.com/x?", "acme.evil.com#", "a b", "-acme"] {
            let err = shopify
                .resolve_settings(&values(&[("shop", evil)]))
                .unwrap_err();
            assert!(
                matches!(err, CatalogError::InvalidSetting { .. }),
                "{evil}: {err:?}"
            );
        }
        let resolved = shopify
            .resolve_settings(&values(&[("shop", "acme-store"), ("other", "x")]))
            .unwrap();
        assert_eq!(
            resolved,
            values(&[("api_version", "2025-01"), ("shop", "acme-store")])
        );

        let microsoft = catalog.get("microsoft").unwrap();
        let resolved = microsoft.resolve_settings(&values(&[])).unwrap();
        let authorize = microsoft.authorize(&resolved, "cid", None).unwrap();
        assert_eq!(
            authorize.authorization_url,
            "https://login.microsoftonline.com/common/oauth2/v2.0/authorize"
        );
    }

    #[test]
    fn authorize_requests_carry_provider_conventions() {
        let catalog = Catalog::builtin();
        let slack = catalog.get("slack").unwrap();
        let target = slack.authorize(&BTreeMap::new(), "cid", None).unwrap();
        assert_eq!(target.scope_separator, ",");
        let google = catalog.get("google").unwrap();
        let target = google.authorize(&BTreeMap::new(), "cid", None).unwrap();
        // Case C15: offline access and forced consent, so a refresh token comes back.
        assert_eq!(target.params["access_type"], "offline");
        assert_eq!(target.params["prompt"], "consent");
        let reddit = catalog.get("reddit").unwrap();
        let target = reddit.authorize(&BTreeMap::new(), "cid", None).unwrap();
        assert_eq!(target.params["duration"], "permanent");
        let atlassian = catalog.get("atlassian").unwrap();
        let target = atlassian.authorize(&BTreeMap::new(), "cid", None).unwrap();
        assert_eq!(target.params["audience"], "api.atlassian.com");

        let stripe = catalog.get("stripe").unwrap();
        let err = stripe.authorize(&BTreeMap::new(), "cid", None).unwrap_err();
        assert!(matches!(err, CatalogError::Unsupported { .. }));
        let credentials = catalog.get("oauth2_client_credentials").unwrap();
        let resolved = credentials
            .resolve_settings(&values(&[
                ("token_url", "https://idp.test/token"),
                ("base_url", "https://api.test"),
            ]))
            .unwrap();
        assert!(credentials.authorize(&resolved, "cid", None).is_err());
    }

    #[test]
    fn callback_captures_accept_plain_ids_only() {
        // QuickBooks puts the company id on the callback, not in the token response.
        let quickbooks = Catalog::builtin().get("quickbooks").unwrap().clone();
        let query = values(&[
            ("code", "c"),
            ("state", "s"),
            ("realmId", "9130357766900001"),
        ]);
        let captured = quickbooks.callback_captures(&query).unwrap();
        assert_eq!(captured, values(&[("realm_id", "9130357766900001")]));
        assert_eq!(
            quickbooks.account_id_from(&captured).as_deref(),
            Some("9130357766900001")
        );
        assert_eq!(
            quickbooks.api_base_url(&captured).unwrap().as_deref(),
            Some("https://quickbooks.api.intuit.com/v3/company/9130357766900001")
        );
        let evil = values(&[("realmId", "1/../../x")]);
        assert!(quickbooks.callback_captures(&evil).is_err());
        assert!(quickbooks.callback_captures(&values(&[])).is_err());
    }

    #[test]
    fn api_keys_go_where_the_provider_says() {
        let catalog = Catalog::builtin();
        let stripe = catalog.get("stripe").unwrap();
        let target = stripe.api_key_target(&BTreeMap::new()).unwrap();
        assert_eq!(
            target,
            (
                ApiKeyPlacement::Header,
                "Authorization".into(),
                "Bearer ".into()
            )
        );

        let generic = catalog.get("api_key").unwrap();
        let resolved = generic
            .resolve_settings(&values(&[
                ("header_name", "X-Api-Token"),
                ("prefix", "Token"),
                ("base_url", "https://api.test"),
            ]))
            .unwrap();
        let target = generic.api_key_target(&resolved).unwrap();
        assert_eq!(
            target,
            (
                ApiKeyPlacement::Header,
                "X-Api-Token".into(),
                "Token ".into()
            )
        );

        let query = catalog.get("api_key_query").unwrap();
        let resolved = query
            .resolve_settings(&values(&[("base_url", "https://api.test")]))
            .unwrap();
        let target = query.api_key_target(&resolved).unwrap();
        assert_eq!(
            target,
            (ApiKeyPlacement::Query, "api_key".into(), String::new())
        );

        let basic = catalog.get("basic").unwrap();
        assert_eq!(basic.auth_mode, AuthMode::Basic);
        assert_eq!(basic.api.auth_prefix, "Basic ");
    }
}
