//! What integration code can reach outside its sandbox: connector tokens and outbound HTTP.
//!
//! The sandbox awaits these futures on its own threads, so each call is spawned onto the
//! server's runtime and the sandbox awaits only the join handle.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use splice_domain::{IdentityId, IdentityStatus, InstallId, IntegrationId, TenantId};
use splice_oauth::{TokenFailure, TokenManager};
use splice_sandbox::{FetchRequest, FetchResponse, Host, HostError, IdentityScope, TokenRequest};
use splice_store::Store;
use tokio::runtime::Handle;

use crate::programs::ProgramCache;

/// Outbound responses larger than this are refused rather than buffered.
const MAX_FETCH_BODY: usize = 16 << 20;
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

pub struct SpliceHost {
    inner: Arc<Inner>,
    runtime: Handle,
}

struct Inner {
    store: Arc<dyn Store>,
    tokens: Arc<TokenManager>,
    programs: ProgramCache,
    http: reqwest::Client,
}

fn host_error(code: &str, message: impl Into<String>) -> HostError {
    HostError {
        code: code.to_owned(),
        message: message.into(),
    }
}

impl SpliceHost {
    /// Must be called inside the server's tokio runtime.
    pub fn new(
        store: Arc<dyn Store>,
        tokens: Arc<TokenManager>,
        programs: ProgramCache,
        http: reqwest::Client,
    ) -> Self {
        let inner = Arc::new(Inner {
            store,
            tokens,
            programs,
            http,
        });
        Self {
            inner,
            runtime: Handle::current(),
        }
    }

    fn spawn<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = Result<T, HostError>> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, HostError>> {
        let handle = self.runtime.spawn(work);
        async move {
            handle
                .await
                .unwrap_or_else(|e| Err(host_error("internal", format!("host task failed: {e}"))))
        }
        .boxed()
    }
}

impl Host for SpliceHost {
    fn token(&self, request: TokenRequest) -> BoxFuture<'static, Result<String, HostError>> {
        let inner = self.inner.clone();
        self.spawn(async move { inner.token(request).await })
    }

    fn fetch(&self, request: FetchRequest) -> BoxFuture<'static, Result<FetchResponse, HostError>> {
        let inner = self.inner.clone();
        self.spawn(async move { inner.fetch(request).await })
    }
}

impl Inner {
    async fn token(&self, request: TokenRequest) -> Result<String, HostError> {
        let identity = self.resolve_identity(&request).await?;
        let fresh = self
            .tokens
            .access_token(&identity, request.force_refresh)
            .await
            .map_err(|e| match e {
                TokenFailure::NotFound => {
                    host_error("identity_not_found", "the identity was deleted")
                }
                TokenFailure::NeedsReauth(reason) => host_error(
                    "needs_reauth",
                    format!("the identity must be authorized again: {reason}"),
                ),
                TokenFailure::ConnectorMisconfigured(reason) => {
                    host_error("connector_misconfigured", reason)
                }
                TokenFailure::Unavailable(reason) => host_error("provider_unavailable", reason),
                TokenFailure::Store(err) => {
                    tracing::error!(error = %err, "token lookup failed");
                    host_error("internal", "token lookup failed")
                }
            })?;
        Ok(fresh.tokens.access_token.expose().to_owned())
    }

    /// Finds the identity a connector call means: the install's, or the tenant's.
    async fn resolve_identity(&self, request: &TokenRequest) -> Result<IdentityId, HostError> {
        let internal = |e: splice_store::StoreError| {
            tracing::error!(error = %e, "identity lookup failed");
            host_error("internal", "identity lookup failed")
        };
        let integration_id = IntegrationId::parse(&request.integration)
            .map_err(|e| host_error("internal", e.to_string()))?;
        let loaded = self
            .programs
            .get(self.store.as_ref(), &integration_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| host_error("internal", "integration was deleted"))?;
        let connector = loaded
            .integration
            .connectors
            .get(&request.connector)
            .ok_or_else(|| {
                host_error(
                    "unknown_connector",
                    format!(
                        "this integration has no connector named {:?}",
                        request.connector
                    ),
                )
            })?;

        match &request.scope {
            IdentityScope::Install(install) => {
                let not_found = || host_error("install_not_found", format!("no install {install}"));
                let id = InstallId::parse(install).map_err(|_| not_found())?;
                let install = self.store.get_install(&id).await.map_err(internal)?;
                let install = install
                    .filter(|i| i.integration == integration_id)
                    .ok_or_else(not_found)?;
                install
                    .identities
                    .get(&request.connector)
                    .cloned()
                    .ok_or_else(|| {
                        host_error(
                            "identity_not_found",
                            format!("install {id} has no identity for {:?}", request.connector),
                        )
                    })
            }
            IdentityScope::Tenant(tenant) => {
                let tenant = TenantId::parse(tenant)
                    .map_err(|e| host_error("invalid_tenant", e.to_string()))?;
                let identities = self
                    .store
                    .list_identities(connector, Some(&tenant), &[])
                    .await
                    .map_err(internal)?;
                // Newest healthy identity first; a tenant usually has exactly one.
                let chosen = identities
                    .iter()
                    .find(|i| i.status == IdentityStatus::Healthy)
                    .or(identities.first());
                chosen.map(|i| i.id.clone()).ok_or_else(|| {
                    host_error(
                        "identity_not_found",
                        format!("tenant {tenant} has no identity on connector {connector}"),
                    )
                })
            }
        }
    }

    async fn fetch(&self, request: FetchRequest) -> Result<FetchResponse, HostError> {
        let url = url::Url::parse(&request.url)
            .map_err(|e| host_error("invalid_url", format!("{}: {e}", request.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(host_error(
                "invalid_url",
                "only http and https URLs can be fetched",
            ));
        }
        let method = reqwest::Method::from_bytes(request.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| {
                host_error("invalid_method", format!("bad method {:?}", request.method))
            })?;

        let mut builder = self.http.request(method, url).timeout(FETCH_TIMEOUT);
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        if let Some(body) = request.body {
            builder = builder.body(body);
        }
        let response = builder
            .send()
            .await
            .map_err(|e| host_error("fetch_failed", e.to_string()))?;

        let status = response.status();
        let url = response.url().to_string();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        if response
            .content_length()
            .is_some_and(|n| n as usize > MAX_FETCH_BODY)
        {
            return Err(host_error(
                "response_too_large",
                "response body exceeds 16 MiB",
            ));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| host_error("fetch_failed", e.to_string()))?;
        if body.len() > MAX_FETCH_BODY {
            return Err(host_error(
                "response_too_large",
                "response body exceeds 16 MiB",
            ));
        }
        Ok(FetchResponse {
            status: status.as_u16(),
            status_text: status.canonical_reason().unwrap_or_default().to_owned(),
            url,
            headers,
            body,
        })
    }
}
