//! What integration code can reach outside its sandbox: connector credentials, outbound
//! HTTP (plain or authenticated), and the job queue for background tasks.
//!
//! The sandbox awaits these futures on its own threads, so each call is spawned onto the
//! server's runtime and the sandbox awaits only the join handle.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use splice_domain::{
    Connector, IdentityStatus, InstallId, IntegrationId, Millis, TenantId, now_millis,
};
use splice_sandbox::{
    FetchRequest, FetchResponse, Host, HostError, IdentityScope, TaskRequest, TokenRequest,
};
use splice_store::Store;
use tokio::runtime::Handle;

use crate::batch::Enqueuer;
use crate::credentials::{Credentials, Mode};
use crate::outbound::{Outbound, Principal, host_error};
use crate::programs::ProgramCache;
use crate::worker::{self, JobSignals, NewTask};

/// How long a token handed to integration code is answered from memory at most. Changes made
/// on another node (a reconnect, a deleted install) show after this; changes made on this node
/// clear the cache at once.
const TOKEN_CACHE_TTL: Duration = Duration::from_secs(10);
/// Entries kept at most; a full cache starts over.
const TOKEN_CACHE_MAX: usize = 10_000;

type TokenKey = (String, String, IdentityScope);

/// Access tokens recently handed to integration code, by integration, connector name and
/// identity scope, so asking again answers on the sandbox thread without a hop to the server
/// runtime or a database read. An entry lasts until its token enters the refresh margin, and
/// at most [`TOKEN_CACHE_TTL`]; a forced refresh replaces it.
#[derive(Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<TokenKey, (String, Instant)>>,
}

impl TokenCache {
    fn get(&self, key: &TokenKey) -> Option<String> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let (token, until) = entries.get(key)?;
        (Instant::now() < *until).then(|| token.clone())
    }

    fn put(&self, key: TokenKey, token: String, expires_at: Option<Millis>, margin: Duration) {
        let mut until = Instant::now() + TOKEN_CACHE_TTL;
        if let Some(expires_at) = expires_at {
            let left = expires_at - now_millis() - i64::try_from(margin.as_millis()).unwrap_or(0);
            match u64::try_from(left) {
                Ok(left) if left > 0 => {
                    until = until.min(Instant::now() + Duration::from_millis(left))
                }
                _ => return,
            }
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= TOKEN_CACHE_MAX {
            entries.clear();
        }
        entries.insert(key, (token, until));
    }

    /// Forgets every token: after a change on this node to connectors, identities or installs.
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

pub struct SpliceHost {
    inner: Arc<Inner>,
    runtime: Handle,
}

struct Inner {
    store: Arc<dyn Store>,
    programs: ProgramCache,
    credentials: Credentials,
    outbound: Outbound,
    jobs: Arc<JobSignals>,
    enqueuer: Enqueuer,
    tokens: Arc<TokenCache>,
}

impl SpliceHost {
    /// Must be called inside the server's tokio runtime.
    pub fn new(
        store: Arc<dyn Store>,
        programs: ProgramCache,
        credentials: Credentials,
        outbound: Outbound,
        jobs: Arc<JobSignals>,
        enqueuer: Enqueuer,
        tokens: Arc<TokenCache>,
    ) -> Self {
        let inner = Arc::new(Inner {
            store,
            programs,
            credentials,
            outbound,
            jobs,
            enqueuer,
            tokens,
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
        let key = (
            request.integration.clone(),
            request.connector.clone(),
            request.scope.clone(),
        );
        if !request.force_refresh
            && let Some(token) = self.inner.tokens.get(&key)
        {
            return futures::future::ready(Ok(token)).boxed();
        }
        let inner = self.inner.clone();
        self.spawn(async move {
            let (connector, principal) = inner
                .resolve(&request.integration, &request.connector, &request.scope)
                .await?;
            let credential = inner
                .outbound
                .secret(&connector, &principal, request.force_refresh)
                .await?;
            let token = credential.secret.expose().to_owned();
            if matches!(principal, Principal::Identity(_)) {
                let margin = inner.outbound.refresh_margin();
                inner
                    .tokens
                    .put(key, token.clone(), credential.expires_at, margin);
            }
            Ok(token)
        })
    }

    fn fetch(&self, request: FetchRequest) -> BoxFuture<'static, Result<FetchResponse, HostError>> {
        let inner = self.inner.clone();
        self.spawn(async move {
            match request.connector.clone() {
                None => inner.outbound.send(request).await,
                Some(target) => {
                    let (connector, principal) = inner
                        .resolve(&target.integration, &target.connector, &target.scope)
                        .await?;
                    inner
                        .outbound
                        .call_as(&connector, &principal, request)
                        .await
                }
            }
        })
    }

    fn start_task(&self, request: TaskRequest) -> BoxFuture<'static, Result<String, HostError>> {
        let inner = self.inner.clone();
        self.spawn(async move { inner.start_task(request).await })
    }
}

impl Inner {
    async fn start_task(&self, request: TaskRequest) -> Result<String, HostError> {
        worker::check_task_name(&request.name).map_err(|e| host_error("invalid_task", e))?;
        let integration = IntegrationId::parse(&request.integration)
            .map_err(|e| host_error("internal", e.to_string()))?;
        let delay = i64::try_from(request.delay.as_millis()).unwrap_or(i64::MAX);
        let task = NewTask {
            integration,
            name: request.name,
            payload: request.payload,
            run_at: splice_domain::now_millis().saturating_add(delay),
            max_attempts: request
                .max_attempts
                .unwrap_or(worker::DEFAULT_TASK_ATTEMPTS),
            idempotency_key: request.idempotency_key,
        };
        let job = worker::enqueue_task(&self.enqueuer, &self.jobs, task)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "queueing a task failed");
                host_error("internal", "queueing the task failed")
            })?;
        Ok(job.id)
    }

    /// The connector a name in code means, and whose credentials to use: the install's
    /// identity, the tenant's, or (client credentials) the connector's own.
    async fn resolve(
        &self,
        integration: &str,
        name: &str,
        scope: &IdentityScope,
    ) -> Result<(Connector, Principal), HostError> {
        let internal = |e: splice_store::StoreError| {
            tracing::error!(error = %e, "connector lookup failed");
            host_error("internal", "connector lookup failed")
        };
        let integration_id =
            IntegrationId::parse(integration).map_err(|e| host_error("internal", e.to_string()))?;
        let loaded = self
            .programs
            .get(self.store.as_ref(), &integration_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| host_error("internal", "integration was deleted"))?;
        let connector_id = loaded.integration.connectors.get(name).ok_or_else(|| {
            host_error(
                "unknown_connector",
                format!("this integration has no connector named {name:?}"),
            )
        })?;
        let connector = self
            .store
            .get_connector(connector_id)
            .await
            .map_err(internal)?
            .ok_or_else(|| {
                host_error(
                    "unknown_connector",
                    format!("connector {connector_id} was deleted"),
                )
            })?;
        let mode = self
            .credentials
            .mode(&connector)
            .map_err(|e| host_error("connector_misconfigured", e))?;
        if mode == Mode::ClientCredentials {
            return Ok((connector, Principal::App));
        }

        let identity = match scope {
            IdentityScope::Install(install) => {
                let not_found = || host_error("install_not_found", format!("no install {install}"));
                let id = InstallId::parse(install).map_err(|_| not_found())?;
                let install = self.store.get_install(&id).await.map_err(internal)?;
                let install = install
                    .filter(|i| i.integration == integration_id)
                    .ok_or_else(not_found)?;
                install.identities.get(name).cloned().ok_or_else(|| {
                    host_error(
                        "identity_not_found",
                        format!("install {id} has no identity for {name:?}"),
                    )
                })?
            }
            IdentityScope::Tenant(tenant) => {
                let tenant = TenantId::parse(tenant)
                    .map_err(|e| host_error("invalid_tenant", e.to_string()))?;
                let identities = self
                    .store
                    .list_identities(connector_id, Some(&tenant), &[])
                    .await
                    .map_err(internal)?;
                // Newest usable identity first; a tenant usually has exactly one.
                let chosen = identities
                    .iter()
                    .find(|i| i.status == IdentityStatus::Healthy)
                    .or(identities.first());
                chosen.map(|i| i.id.clone()).ok_or_else(|| {
                    host_error(
                        "identity_not_found",
                        format!("tenant {tenant} has no identity on connector {connector_id}"),
                    )
                })?
            }
        };
        Ok((connector, Principal::Identity(identity)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tenant: &str) -> TokenKey {
        (
            "crm-sync".into(),
            "crm".into(),
            IdentityScope::Tenant(tenant.into()),
        )
    }

    #[test]
    fn tokens_are_kept_until_their_refresh_margin() {
        let cache = TokenCache::default();
        let margin = Duration::from_secs(300);
        let hour = now_millis() + 3_600_000;
        cache.put(key("acme"), "at-1".into(), Some(hour), margin);
        assert_eq!(cache.get(&key("acme")).as_deref(), Some("at-1"));
        assert_eq!(cache.get(&key("globex")), None);

        // A token already inside its refresh margin is not kept: the next ask refreshes it.
        let soon = now_millis() + 200_000;
        cache.put(key("globex"), "at-2".into(), Some(soon), margin);
        assert_eq!(cache.get(&key("globex")), None);

        // Without a known lifetime (API keys), at most the cache's own lifetime.
        cache.put(key("initech"), "key-3".into(), None, margin);
        assert_eq!(cache.get(&key("initech")).as_deref(), Some("key-3"));

        cache.clear();
        assert_eq!(cache.get(&key("acme")), None);
    }

    #[test]
    fn an_entry_expires_with_its_token() {
        let cache = TokenCache::default();
        let expires = now_millis() + 1_050;
        cache.put(
            key("acme"),
            "at-1".into(),
            Some(expires),
            Duration::from_secs(1),
        );
        assert_eq!(cache.get(&key("acme")).as_deref(), Some("at-1"));
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(cache.get(&key("acme")), None);
    }
}
