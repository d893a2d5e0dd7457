//! HTTP handlers, one module per resource. Request bodies are declared beside the handler
//! that reads them.

pub mod connect;
pub mod connectors;
pub mod events;
pub mod health;
pub mod identities;
pub mod installs;
pub mod integrations;
pub mod invoke;
pub mod providers;
pub mod sessions;
pub mod subscriptions;
pub mod tasks;
pub mod webhooks;

use splice_domain::{ConnectorId, IntegrationId, TagFilter, TenantId};

use crate::error::{ApiError, ApiResult};
use crate::extract::QueryPairs;

/// Parses a connector id from the path; an id that cannot exist is simply not found.
fn connector_id(raw: &str) -> ApiResult<ConnectorId> {
    ConnectorId::parse(raw).map_err(|_| ApiError::not_found(format!("connector {raw:?}")))
}

fn integration_id(raw: &str) -> ApiResult<IntegrationId> {
    IntegrationId::parse(raw).map_err(|_| ApiError::not_found(format!("integration {raw:?}")))
}

/// The `tenant` and repeated `tag=key=value` filters of a list request.
fn list_filters(query: &QueryPairs) -> ApiResult<(Option<TenantId>, Vec<TagFilter>)> {
    let tenant = query.get("tenant").map(TenantId::parse).transpose()?;
    let tags = query
        .all("tag")
        .map(TagFilter::parse)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((tenant, tags))
}
