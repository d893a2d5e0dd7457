//! What integration code can reach outside its sandbox: connector credentials, outbound
//! HTTP (plain or authenticated), and the job queue for background tasks.
//!
//! The sandbox awaits these futures on its own threads, so each call is spawned onto the
//! server's runtime and the sandbox awaits only the join handle.

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use splice_domain::{Connector, IdentityStatus, InstallId, IntegrationId, TenantId};
use splice_sandbox::{
    FetchRequest, FetchResponse, Host, HostError, IdentityScope, TaskRequest, TokenRequest,
};
use splice_store::Store;
use tokio::runtime::Handle;

use crate::credentials::{Credentials, Mode};
use crate::outbound::{Outbound, Principal, host_error};
use crate::programs::ProgramCache;
use crate::worker::{self, JobSignals, NewTask};

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
}

impl SpliceHost {
    /// Must be called inside the server's tokio runtime.
    pub fn new(
        store: Arc<dyn Store>,
        programs: ProgramCache,
        credentials: Credentials,
        outbound: Outbound,
        jobs: Arc<JobSignals>,
    ) -> Self {
        let inner = Arc::new(Inner {
            store,
            programs,
            credentials,
            outbound,
            jobs,
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
        self.spawn(async move {
            let (connector, principal) = inner
                .resolve(&request.integration, &request.connector, &request.scope)
                .await?;
            let (secret, _) = inner
                .outbound
                .secret(&connector, &principal, request.force_refresh)
                .await?;
            Ok(secret.expose().to_owned())
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
            max_attempts: worker::DEFAULT_TASK_ATTEMPTS,
            idempotency_key: request.idempotency_key,
        };
        let job = worker::enqueue_task(self.store.as_ref(), &self.jobs, task)
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
