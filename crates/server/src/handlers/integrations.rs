//! `/v1/integrations`: deploy (compile and store), list, read, delete, and the invocation log.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use splice_domain::{
    ConnectorId, Integration, Isolation, Meta, RuntimeSettings, ScheduleSpec, Tags, now_millis,
    parse_rfc3339,
};
use splice_store::{InvocationQuery, StoredProgram};

use super::integration_id;
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, QueryPairs};
use crate::programs::Loaded;
use crate::views;

const ENTRY_FILE: &str = "integration.js";
const MAX_FILES: usize = 64;
const DEFAULT_LOG_LIMIT: u32 = 50;
const MAX_LOG_LIMIT: u32 = 500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployIntegration {
    files: BTreeMap<String, String>,
    #[serde(default)]
    connectors: BTreeMap<String, ConnectorId>,
    #[serde(default)]
    tags: Tags,
    #[serde(default)]
    isolation: Isolation,
    #[serde(default)]
    limits: Limits,
    /// Cron schedules running the integration's `cron` handlers.
    #[serde(default)]
    schedules: Vec<ScheduleSpec>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Limits {
    memory_mb: Option<u32>,
    cpu_ms: Option<u64>,
    wall_ms: Option<u64>,
}

/// Compiles and stores a new version. A compile error is a 400 naming file, line and column,
/// and leaves the previous version serving.
pub async fn deploy_integration(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<DeployIntegration>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let id = splice_domain::IntegrationId::parse(&id)?;
    check_files(&body.files)?;
    for (name, connector) in &body.connectors {
        if state.store.get_connector(connector).await?.is_none() {
            return Err(ApiError::invalid(format!(
                "connectors.{name}: no connector {connector}"
            )));
        }
    }
    let defaults = RuntimeSettings::default();
    let runtime = RuntimeSettings {
        memory_mb: body.limits.memory_mb.unwrap_or(defaults.memory_mb),
        cpu_ms: body.limits.cpu_ms.unwrap_or(defaults.cpu_ms),
        wall_ms: body.limits.wall_ms.unwrap_or(defaults.wall_ms),
        isolation: body.isolation,
    };
    runtime
        .validate()
        .map_err(|e| ApiError::invalid(format!("limits.{e}")))?;

    check_schedules(&body.schedules)?;
    let bytecode = compile(body.files.clone()).await?;
    load_check(&state, &id, &runtime, &bytecode).await?;
    let now = now_millis();
    let integration = Integration {
        id,
        files: body.files,
        connectors: body.connectors,
        runtime,
        schedules: body.schedules,
        meta: Meta::new(body.tags, now),
    };
    let (stored, created) = state.store.put_integration(&integration, &bytecode).await?;

    state.programs.put(Loaded::new(StoredProgram {
        integration: stored.clone(),
        bytecode,
    }));
    state.engine.evict(stored.id.as_str());
    state.connector_users.clear();
    let announced = format!("{}@{}", stored.id, stored.meta.version);
    if let Err(err) = state.store.announce_deploy(&announced).await {
        tracing::warn!(error = %err, "announcing the deploy failed; other nodes reload on their own check");
    }
    tracing::info!(integration.id = %stored.id, version = stored.meta.version, "integration deployed");
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(views::integration(&stored))))
}

/// Each schedule must parse (cron expression, time zone) and names must be unique.
fn check_schedules(schedules: &[ScheduleSpec]) -> ApiResult<()> {
    let mut seen = std::collections::BTreeSet::new();
    for (i, spec) in schedules.iter().enumerate() {
        splice_schedule::Schedule::parse(
            &spec.name,
            &spec.cron,
            spec.time_zone.as_deref(),
            spec.per_install,
        )
        .map_err(|e| ApiError::invalid(format!("schedules[{i}]: {e}")))?;
        if !seen.insert(spec.name.as_str()) {
            return Err(ApiError::invalid(format!(
                "schedules[{i}]: name {:?} is used twice",
                spec.name
            )));
        }
    }
    Ok(())
}

fn check_files(files: &BTreeMap<String, String>) -> ApiResult<()> {
    if !files.contains_key(ENTRY_FILE) {
        return Err(ApiError::invalid(format!(
            "files must contain {ENTRY_FILE:?}"
        )));
    }
    if files.len() > MAX_FILES {
        return Err(ApiError::invalid(format!("at most {MAX_FILES} files")));
    }
    let bad = files.keys().find(|name| {
        !name.ends_with(".js")
            || name.starts_with('/')
            || name
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..")
    });
    match bad {
        Some(name) => Err(ApiError::invalid(format!(
            "file name {name:?} must be a relative path ending in .js"
        ))),
        None => Ok(()),
    }
}

/// Compiles off the async runtime: parsing large sources is CPU work.
/// Loads the new version once in a throwaway sandbox — its modules evaluated, its default
/// export checked — so code that throws while it is imported, or exports no `Integration`, is
/// refused at deploy and the previous version keeps serving. The check runs under the
/// integration's limits and without connector access.
async fn load_check(
    state: &AppState,
    id: &splice_domain::IntegrationId,
    runtime: &RuntimeSettings,
    bytecode: &[u8],
) -> ApiResult<()> {
    let loaded = Loaded::new(StoredProgram {
        integration: Integration {
            id: id.clone(),
            files: BTreeMap::new(),
            connectors: BTreeMap::new(),
            runtime: *runtime,
            schedules: Vec::new(),
            meta: Meta::new(Tags::default(), 0),
        },
        bytecode: bytecode.to_vec(),
    });
    let mut program = loaded.program;
    program.integration = format!("{id}:deploy-check");
    program.isolation = splice_sandbox::Isolation::Invocation;
    let request = splice_sandbox::Request {
        kind: splice_sandbox::RequestKind::Probe,
        ..splice_sandbox::Request::default()
    };
    let invocation = state.engine.invoke(&program, request).await;
    state.engine.evict(&program.integration);
    match invocation.result {
        Ok(_) => Ok(()),
        Err(splice_sandbox::InvokeError::Internal(message)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "sandbox_unavailable",
            message,
        )),
        Err(err) => {
            let stack = match &err {
                splice_sandbox::InvokeError::Exception { stack, .. } => stack.clone(),
                _ => None,
            };
            Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_integration",
                format!("the code failed while loading: {err}"),
            )
            .with_details(json!({ "stack": stack })))
        }
    }
}

async fn compile(files: BTreeMap<String, String>) -> ApiResult<Vec<u8>> {
    let result = tokio::task::spawn_blocking(move || splice_sandbox::compile(&files))
        .await
        .map_err(ApiError::internal)?;
    result.map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "compile_error", e.to_string()).with_details(json!({
            "file": e.file,
            "line": e.line,
            "column": e.column,
        }))
    })
}

pub async fn list_integrations(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let integrations = state.store.list_integrations().await?;
    Ok(Json(views::items(
        integrations.iter().map(views::integration),
    )))
}

pub async fn get_integration(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let integration = load(&state, &id).await?;
    Ok(Json(views::integration(&integration)))
}

/// Deletes an integration with its installs and sessions; identities stay with the tenant.
pub async fn delete_integration(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = integration_id(&id)?;
    if !state.store.delete_integration(&id).await? {
        return Err(ApiError::not_found(format!("integration {id}")));
    }
    state.programs.remove(&id);
    state.connector_users.clear();
    state.engine.evict(id.as_str());
    if let Err(err) = state.store.announce_deploy(id.as_str()).await {
        tracing::warn!(error = %err, "announcing the deletion failed");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Recent invocations, newest first: `?install=`, `?since=`/`?until=` (RFC 3339 or Unix
/// milliseconds), `?limit=` (default 50, at most 500).
pub async fn list_logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: QueryPairs,
) -> ApiResult<Json<Value>> {
    let integration = load(&state, &id).await?;
    let limit = match query.get("limit") {
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LOG_LIMIT).contains(n))
            .ok_or_else(|| ApiError::invalid(format!("limit must be 1-{MAX_LOG_LIMIT}")))?,
        None => DEFAULT_LOG_LIMIT,
    };
    let filter = InvocationQuery {
        install: query.get("install").map(str::to_owned),
        since: query
            .get("since")
            .map(|t| parse_time("since", t))
            .transpose()?,
        until: query
            .get("until")
            .map(|t| parse_time("until", t))
            .transpose()?,
        limit,
    };
    let records = state
        .store
        .list_invocations(&integration.id, &filter)
        .await?;
    Ok(Json(views::items(records.iter().map(views::invocation))))
}

fn parse_time(field: &str, raw: &str) -> ApiResult<i64> {
    raw.parse::<i64>()
        .ok()
        .or_else(|| parse_rfc3339(raw))
        .ok_or_else(|| ApiError::invalid(format!("{field} must be RFC 3339 or Unix milliseconds")))
}

async fn load(state: &AppState, id: &str) -> ApiResult<Integration> {
    let id = integration_id(id)?;
    state
        .store
        .get_integration(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("integration {id}")))
}
