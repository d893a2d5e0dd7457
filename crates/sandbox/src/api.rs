//! The types that cross the boundary between the sandbox and the rest of Splice.
//!
//! The server builds an [`Invoke`] from an HTTP request, the sandbox runs it and hands back an
//! [`Invocation`]. Everything the integration code may reach outside its runtime goes through
//! the [`Host`] trait, which the server implements.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;

/// Resource limits applied to every invocation of one integration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Heap limit of the runtime, in bytes.
    pub memory_bytes: usize,
    /// Time the interpreter may spend running JavaScript for one invocation.
    pub cpu_ms: u64,
    /// Wall-clock bound of one invocation, awaited I/O included.
    pub wall_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            cpu_ms: 1_000,
            wall_ms: 30_000,
        }
    }
}

/// How invocations of an integration share JavaScript state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// Warm contexts are reused: module-level state persists between invocations of one version.
    #[default]
    Warm,
    /// Every invocation gets a runtime of its own, freed after it answers.
    Invocation,
}

/// One deployed version of an integration, as the sandbox needs it to run.
#[derive(Clone, Debug)]
pub struct Program {
    pub integration: String,
    /// Increases with every deploy; warm runtimes of an older version are never reused.
    pub version: i64,
    /// Output of [`crate::compile`], stored at deploy time.
    pub bytecode: Arc<Vec<u8>>,
    pub limits: Limits,
    pub isolation: Isolation,
}

/// What an invocation runs: a route, or a background task handler.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RequestKind {
    /// An HTTP request for the integration's router.
    #[default]
    Http,
    /// A background task: `path` is the task's name, `body` its JSON payload; the handler's
    /// return value becomes the response body as JSON.
    Task,
    /// A provider event for one install: `path` is `<connector name>:<event type>`, `body` the
    /// event as JSON, and the `x-splice-install` header names the install.
    Event,
    /// A schedule firing: `path` is the schedule's name, `body` `{"slot": <RFC 3339>}`, and for
    /// a per-install schedule the `x-splice-install` header names the install.
    Cron,
    /// Loads the program — evaluates its modules and checks its default export — and answers
    /// 204 without running any handler: the check at deploy.
    Probe,
}

impl RequestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Task => "task",
            Self::Event => "event",
            Self::Probe => "probe",
            Self::Cron => "cron",
        }
    }
}

/// An HTTP request routed to the integration's router (or a task, see [`RequestKind`]).
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub kind: RequestKind,
    pub method: String,
    /// Path below `/v1/integrations/{id}/api`, always starting with `/`.
    pub path: String,
    /// Raw query string without the leading `?`.
    pub query: String,
    /// Header names are lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// The response the integration's router produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// Severity of a captured console line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Info,
    Warn,
    Error,
}

/// One `console.*` call made during an invocation.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LogLine {
    pub level: LogLevel,
    pub message: String,
    /// Milliseconds since the invocation started.
    pub at_ms: u64,
}

/// Why an invocation did not produce a response.
#[derive(Clone, Debug, thiserror::Error, PartialEq)]
pub enum InvokeError {
    #[error("cpu time limit of {0} ms exceeded")]
    CpuLimit(u64),
    #[error("wall time limit of {0} ms exceeded")]
    WallLimit(u64),
    #[error("memory limit of {0} bytes exceeded")]
    MemoryLimit(usize),
    #[error("stack overflow")]
    StackOverflow,
    /// The code threw (or its promise rejected) and nothing caught it.
    #[error("uncaught exception: {message}")]
    Exception {
        message: String,
        stack: Option<String>,
    },
    /// The module did not export what Splice expects (e.g. no default `Integration`).
    #[error("invalid integration: {0}")]
    InvalidProgram(String),
    #[error("sandbox unavailable: {0}")]
    Internal(String),
}

/// The outcome of one invocation, with what it logged and how long it took.
#[derive(Debug)]
pub struct Invocation {
    pub result: Result<Response, InvokeError>,
    pub logs: Vec<LogLine>,
    pub duration: Duration,
}

/// Which identity a connector call from integration code resolves to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum IdentityScope {
    /// The tenant's identity on the connector (`integration.tenant.connector(ctx, name, tenant)`).
    Tenant(String),
    /// The identity an install uses (`integration.install.connector(ctx, name, install)`).
    Install(String),
}

/// A request from integration code for a connector's access token.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub integration: String,
    /// The connector's name in the integration's code (mapped to a connector id at deploy).
    pub connector: String,
    pub scope: IdentityScope,
    /// Refresh even when the stored token looks valid (after the provider answered 401).
    pub force_refresh: bool,
}

/// A background task started from integration code (`integration.task.start(…)`).
#[derive(Clone, Debug, PartialEq)]
pub struct TaskRequest {
    pub integration: String,
    /// The task handler's name.
    pub name: String,
    /// Handed to the handler as `ctx.payload`.
    pub payload: serde_json::Value,
    /// Do not start before this long from now.
    pub delay: Duration,
    /// Starting the same task twice with one key queues it once.
    pub idempotency_key: Option<String>,
    /// Runs before the task is dead-lettered; the host's default when `None`.
    pub max_attempts: Option<u32>,
}

/// An outbound HTTP request made by `fetch` in integration code.
#[derive(Clone, Debug, Default)]
pub struct FetchRequest {
    pub method: String,
    /// Absolute, or (for a connector fetch) relative to the connector's API base URL.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Bytes>,
    /// Set by `connector.fetch`: the host adds the identity's credentials, resolves relative
    /// URLs, refreshes and retries once on a 401, and honours `Retry-After`.
    pub connector: Option<ConnectorTarget>,
}

/// The connector and identity an authenticated fetch is made with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectorTarget {
    pub integration: String,
    /// The connector's name in the integration's code.
    pub connector: String,
    pub scope: IdentityScope,
}

/// The provider's answer to a [`FetchRequest`].
#[derive(Clone, Debug, Default)]
pub struct FetchResponse {
    pub status: u16,
    pub status_text: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// An error the host reports to integration code; thrown there as an `Error` carrying `code`.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("{code}: {message}")]
pub struct HostError {
    pub code: String,
    pub message: String,
}

/// Everything integration code can reach outside its runtime. Implemented by the server.
///
/// Futures returned here are awaited on the sandbox's own threads, so implementations must not
/// rely on that thread's reactor: spawn onto the server's runtime and await the handle.
pub trait Host: Send + Sync + 'static {
    fn token(&self, request: TokenRequest) -> BoxFuture<'static, Result<String, HostError>>;
    fn fetch(&self, request: FetchRequest) -> BoxFuture<'static, Result<FetchResponse, HostError>>;
    /// Queues a background task of the same integration; resolves to the job's id.
    fn start_task(&self, request: TaskRequest) -> BoxFuture<'static, Result<String, HostError>> {
        let _ = request;
        Box::pin(std::future::ready(Err(HostError {
            code: "unsupported".into(),
            message: "this host runs no background tasks".into(),
        })))
    }
}

/// Where a compile error is, in the files the user deployed.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}:{line}:{column}: {message}")]
pub struct CompileError {
    pub file: String,
    pub line: u32,
    pub column: u32,
    pub message: String,
}

/// The source files of one deploy, by file name (`integration.js` is the entry point).
pub type Files = BTreeMap<String, String>;
