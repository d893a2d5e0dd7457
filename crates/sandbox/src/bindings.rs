//! The native side of the prelude's `host` table, and the state it shares with the runtime:
//! pending host operations and the console lines of the current invocation.
//!
//! Host calls (`fetch`, `token`, timers) return a JavaScript promise at once and queue a Rust
//! future; the invocation loop in [`crate::isolate`] awaits those futures between JavaScript
//! steps and settles the promises. Nothing here blocks or runs JavaScript itself.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::LocalBoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use rquickjs::{
    Array, ArrayBuffer, Ctx, Exception, Function, Object, Persistent, Promise, TypedArray, Value,
};

use crate::api::{
    ConnectorTarget, FetchRequest, FetchResponse, Host, HostError, IdentityScope, LogLevel,
    LogLine, TaskRequest, TokenRequest,
};
use crate::{modules, prelude};

/// Console lines kept per invocation; later ones are dropped.
const MAX_LOG_LINES: usize = 500;
/// Bytes kept per console line.
const MAX_LOG_LINE_BYTES: usize = 8 << 10;
/// Bytes of console output kept per invocation.
const MAX_LOG_BYTES: usize = 256 << 10;
/// Host operations one invocation may have in flight.
const MAX_PENDING_OPS: usize = 1024;
/// Longest timer delay; the wall limit ends invocations long before.
const MAX_TIMER: Duration = Duration::from_secs(24 * 3600);
/// Longest delay of a task started from code.
const MAX_TASK_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Evaluations of the core's lazily loaded parts one invocation may start. Entering QuickJS
/// from a native function re-bases its stack limit on the current depth, so every evaluation
/// lets code recurse one more stack budget deeper until the next step; a part that fails to
/// load (out of memory, say) and is retried ever deeper must not reach the thread's real stack
/// end. A part that loads is kept, so two are all a runtime normally needs.
const MAX_PART_LOADS: u32 = 4;

const LOG_CAP_NOTICE: &str =
    "log limit reached: further console output of this invocation was dropped";

/// What a finished host operation produced.
pub(crate) enum Outcome {
    Fetch(Result<FetchResponse, HostError>),
    Token(Result<String, HostError>),
    Task(Result<String, HostError>),
    Timer,
}

struct Settlers {
    resolve: Persistent<Function<'static>>,
    reject: Persistent<Function<'static>>,
}

type Operation = LocalBoxFuture<'static, (u64, Outcome)>;

/// `integration.task.start`'s options, checked by the prelude.
struct TaskOptions {
    delay_ms: f64,
    idempotency_key: Option<String>,
    max_attempts: Option<u32>,
}

/// Per-runtime state behind the native functions.
pub(crate) struct HostState {
    host: Arc<dyn Host>,
    /// Set when the runtime is bound to a program; empty before.
    integration: RefCell<String>,
    inner: RefCell<Inner>,
}

struct Inner {
    started: Instant,
    logs: Vec<LogLine>,
    log_bytes: usize,
    log_capped: bool,
    next_op: u64,
    part_loads: u32,
    waiting: HashMap<u64, Settlers>,
    operations: FuturesUnordered<Operation>,
}

impl HostState {
    pub(crate) fn new(host: Arc<dyn Host>, integration: String) -> Rc<Self> {
        let inner = Inner {
            started: Instant::now(),
            logs: Vec::new(),
            log_bytes: 0,
            log_capped: false,
            next_op: 0,
            part_loads: 0,
            waiting: HashMap::new(),
            operations: FuturesUnordered::new(),
        };
        Rc::new(Self {
            host,
            integration: RefCell::new(integration),
            inner: RefCell::new(inner),
        })
    }

    /// The integration whose code this runtime runs, from now on.
    pub(crate) fn set_integration(&self, integration: &str) {
        integration.clone_into(&mut self.integration.borrow_mut());
    }

    /// Starts an invocation: the log clock restarts and the log buffer is empty.
    pub(crate) fn begin(&self) {
        let mut inner = self.inner.borrow_mut();
        inner.started = Instant::now();
        inner.logs.clear();
        inner.log_bytes = 0;
        inner.log_capped = false;
        inner.part_loads = 0;
    }

    /// Ends an invocation: drops operations still in flight and hands back its console lines.
    pub(crate) fn finish(&self) -> Vec<LogLine> {
        let (logs, waiting, operations) = {
            let mut inner = self.inner.borrow_mut();
            let logs = std::mem::take(&mut inner.logs);
            let waiting = std::mem::take(&mut inner.waiting);
            let operations = std::mem::take(&mut inner.operations);
            (logs, waiting, operations)
        };
        drop((waiting, operations));
        logs
    }

    /// Waits for the next host operation to finish; `None` when none is in flight.
    pub(crate) async fn next_outcome(&self) -> Option<(u64, Outcome)> {
        poll_fn(|cx| {
            let mut inner = self.inner.borrow_mut();
            if inner.operations.is_empty() {
                return Poll::Ready(None);
            }
            inner.operations.poll_next_unpin(cx)
        })
        .await
    }

    /// Resolves or rejects the promise of a finished operation.
    pub(crate) fn settle<'js>(
        &self,
        ctx: &Ctx<'js>,
        id: u64,
        outcome: Outcome,
    ) -> rquickjs::Result<()> {
        let Some(settlers) = self.inner.borrow_mut().waiting.remove(&id) else {
            return Ok(());
        };

        let settled = match outcome {
            Outcome::Fetch(Ok(response)) => Ok(response_to_js(ctx, response)?.into_value()),
            Outcome::Token(Ok(text)) | Outcome::Task(Ok(text)) => {
                Ok(rquickjs::String::from_str(ctx.clone(), &text)?.into_value())
            }
            Outcome::Timer => Ok(Value::new_undefined(ctx.clone())),
            Outcome::Fetch(Err(error)) | Outcome::Token(Err(error)) | Outcome::Task(Err(error)) => {
                Err(host_error_to_js(ctx, &error)?)
            }
        };
        match settled {
            Ok(value) => settlers.resolve.restore(ctx)?.call((value,)),
            Err(error) => settlers.reject.restore(ctx)?.call((error,)),
        }
    }

    /// Creates the `host` table and publishes it as `globalThis.__splice_host` for the prelude.
    pub(crate) fn install<'js>(self: &Rc<Self>, ctx: &Ctx<'js>) -> rquickjs::Result<Object<'js>> {
        let table = Object::new(ctx.clone())?;

        let state = Rc::clone(self);
        table.set(
            "log",
            Function::new(ctx.clone(), move |level: i32, message: String| {
                state.log(level, message);
            })?,
        )?;

        let state = Rc::clone(self);
        table.set(
            "canLog",
            Function::new(ctx.clone(), move || !state.inner.borrow().log_capped)?,
        )?;

        let state = Rc::clone(self);
        table.set(
            "fetch",
            Function::new(ctx.clone(), move |ctx: Ctx<'js>, request: Object<'js>| {
                state.fetch(&ctx, &request)
            })?,
        )?;

        let state = Rc::clone(self);
        let token =
            move |ctx: Ctx<'js>, connector: String, scope: String, id: String, force: bool| {
                state.token(&ctx, connector, &scope, id, force)
            };
        table.set("token", Function::new(ctx.clone(), token)?)?;

        let state = Rc::clone(self);
        let start_task = move |ctx: Ctx<'js>,
                               name: String,
                               payload: String,
                               delay_ms: f64,
                               key: Option<String>,
                               attempts: Option<u32>| {
            let options = TaskOptions {
                delay_ms,
                idempotency_key: key,
                max_attempts: attempts,
            };
            state.start_task(&ctx, name, &payload, options)
        };
        table.set("startTask", Function::new(ctx.clone(), start_task)?)?;

        let state = Rc::clone(self);
        table.set(
            "sleep",
            Function::new(ctx.clone(), move |ctx: Ctx<'js>, ms: f64| {
                state.sleep(&ctx, ms)
            })?,
        )?;

        let state = Rc::clone(self);
        table.set(
            "loadPart",
            Function::new(ctx.clone(), move |ctx: Ctx<'js>, name: String| {
                load_part(&state, ctx, name)
            })?,
        )?;
        table.set("utf8Encode", Function::new(ctx.clone(), utf8_encode)?)?;
        table.set("utf8Decode", Function::new(ctx.clone(), utf8_decode)?)?;

        ctx.globals().set("__splice_host", table.clone())?;
        Ok(table)
    }

    fn log(&self, level: i32, message: String) {
        let level = match level {
            1 => LogLevel::Warn,
            2 => LogLevel::Error,
            _ => LogLevel::Info,
        };

        let mut inner = self.inner.borrow_mut();
        if inner.log_capped {
            return;
        }
        let at_ms = u64::try_from(inner.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if inner.logs.len() + 1 >= MAX_LOG_LINES || inner.log_bytes + message.len() > MAX_LOG_BYTES
        {
            inner.log_capped = true;
            let message = LOG_CAP_NOTICE.to_owned();
            inner.logs.push(LogLine {
                level: LogLevel::Warn,
                message,
                at_ms,
            });
            return;
        }

        let message = truncate(message, MAX_LOG_LINE_BYTES);
        inner.log_bytes += message.len();
        inner.logs.push(LogLine {
            level,
            message,
            at_ms,
        });
    }

    fn fetch<'js>(&self, ctx: &Ctx<'js>, request: &Object<'js>) -> rquickjs::Result<Promise<'js>> {
        let mut fetch = fetch_request_from_js(request)?;
        let target: Option<Object<'js>> = request.get("connector")?;
        if let Some(target) = target {
            let name: String = target.get("name")?;
            let scope: String = target.get("scope")?;
            let id: String = target.get("id")?;
            fetch.connector = Some(ConnectorTarget {
                integration: self.integration.borrow().clone(),
                connector: name,
                scope: identity_scope(ctx, &scope, id)?,
            });
        }
        let request = fetch;
        let pending = self.host.fetch(request);
        self.start(ctx, pending.map(Outcome::Fetch).boxed_local())
    }

    fn token<'js>(
        &self,
        ctx: &Ctx<'js>,
        connector: String,
        scope: &str,
        id: String,
        force_refresh: bool,
    ) -> rquickjs::Result<Promise<'js>> {
        let scope = identity_scope(ctx, scope, id)?;
        let request = TokenRequest {
            integration: self.integration.borrow().clone(),
            connector,
            scope,
            force_refresh,
        };
        let pending = self.host.token(request);
        self.start(ctx, pending.map(Outcome::Token).boxed_local())
    }

    /// `payload` is the JSON text of the task's payload (the prelude stringifies it).
    fn start_task<'js>(
        &self,
        ctx: &Ctx<'js>,
        name: String,
        payload: &str,
        options: TaskOptions,
    ) -> rquickjs::Result<Promise<'js>> {
        let payload = serde_json::from_str(payload)
            .map_err(|e| Exception::throw_type(ctx, &format!("task payload: {e}")))?;
        let request = TaskRequest {
            integration: self.integration.borrow().clone(),
            name,
            payload,
            delay: millis_to_duration(options.delay_ms, MAX_TASK_DELAY),
            idempotency_key: options.idempotency_key,
            max_attempts: options.max_attempts,
        };
        let pending = self.host.start_task(request);
        self.start(ctx, pending.map(Outcome::Task).boxed_local())
    }

    fn sleep<'js>(&self, ctx: &Ctx<'js>, ms: f64) -> rquickjs::Result<Promise<'js>> {
        let delay = millis_to_duration(ms, MAX_TIMER);
        self.start(
            ctx,
            tokio::time::sleep(delay)
                .map(|()| Outcome::Timer)
                .boxed_local(),
        )
    }

    /// Queues an operation and returns the promise it will settle.
    fn start<'js>(
        &self,
        ctx: &Ctx<'js>,
        operation: LocalBoxFuture<'static, Outcome>,
    ) -> rquickjs::Result<Promise<'js>> {
        if self.inner.borrow().waiting.len() >= MAX_PENDING_OPS {
            let message = format!("more than {MAX_PENDING_OPS} host operations in flight");
            return Err(Exception::throw_range(ctx, &message));
        }

        let (promise, resolve, reject) = ctx.promise()?;
        let settlers = Settlers {
            resolve: Persistent::save(ctx, resolve),
            reject: Persistent::save(ctx, reject),
        };

        let mut inner = self.inner.borrow_mut();
        let id = inner.next_op;
        inner.next_op += 1;
        inner.waiting.insert(id, settlers);
        inner
            .operations
            .push(operation.map(move |outcome| (id, outcome)).boxed_local());
        Ok(promise)
    }
}

/// A JavaScript delay in milliseconds, capped at `max`.
fn millis_to_duration(ms: f64, max: Duration) -> Duration {
    // `Infinity` and anything past the cap is the cap; NaN and ≤ 0 are no delay.
    if ms.is_nan() || ms <= 0.0 {
        Duration::ZERO
    } else if ms >= max.as_secs_f64() * 1000.0 {
        max
    } else {
        Duration::from_secs_f64(ms / 1000.0)
    }
}

/// The identity a connector call means, from its scope name and id.
fn identity_scope(ctx: &Ctx<'_>, scope: &str, id: String) -> rquickjs::Result<IdentityScope> {
    match scope {
        "tenant" => Ok(IdentityScope::Tenant(id)),
        "install" => Ok(IdentityScope::Install(id)),
        other => Err(Exception::throw_type(
            ctx,
            &format!("unknown identity scope {other}"),
        )),
    }
}

/// Reads the prelude's `{ method, url, headers: [[name, value]], body }`.
fn fetch_request_from_js(request: &Object<'_>) -> rquickjs::Result<FetchRequest> {
    let method: String = request.get("method")?;
    let url: String = request.get("url")?;
    let pairs: Vec<Vec<String>> = request.get("headers")?;
    let headers = pairs
        .into_iter()
        .filter_map(|pair| match <[String; 2]>::try_from(pair) {
            Ok([name, value]) => Some((name, value)),
            Err(_) => None,
        })
        .collect();
    let body: Value<'_> = request.get("body")?;

    Ok(FetchRequest {
        method,
        url,
        headers,
        body: body_bytes(&body).map(Bytes::from),
        connector: None,
    })
}

/// Builds the `{ status, statusText, url, headers, body }` the prelude wraps in a `Response`.
fn response_to_js<'js>(ctx: &Ctx<'js>, response: FetchResponse) -> rquickjs::Result<Object<'js>> {
    let object = Object::new(ctx.clone())?;
    object.set("status", response.status)?;
    object.set("statusText", response.status_text)?;
    object.set("url", response.url)?;
    object.set("headers", pairs_to_js(ctx, &response.headers)?)?;
    object.set(
        "body",
        TypedArray::<u8>::new(ctx.clone(), response.body.to_vec())?,
    )?;
    Ok(object)
}

/// `[[name, value], ...]` as a JavaScript array.
pub(crate) fn pairs_to_js<'js>(
    ctx: &Ctx<'js>,
    pairs: &[(String, String)],
) -> rquickjs::Result<Array<'js>> {
    let array = Array::new(ctx.clone())?;
    for (i, (name, value)) in pairs.iter().enumerate() {
        let pair = Array::new(ctx.clone())?;
        pair.set(0, name.as_str())?;
        pair.set(1, value.as_str())?;
        array.set(i, pair)?;
    }
    Ok(array)
}

fn host_error_to_js<'js>(ctx: &Ctx<'js>, error: &HostError) -> rquickjs::Result<Value<'js>> {
    let object = Object::new(ctx.clone())?;
    object.set("code", error.code.as_str())?;
    object.set("message", error.message.as_str())?;
    Ok(object.into_value())
}

/// The bytes of a string, `Uint8Array` or `ArrayBuffer`; `None` for anything else.
pub(crate) fn body_bytes(value: &Value<'_>) -> Option<Vec<u8>> {
    if let Some(text) = value.as_string() {
        return text.to_string().ok().map(String::into_bytes);
    }
    if let Ok(array) = TypedArray::<u8>::from_value(value.clone()) {
        return Some(copy_raw(array.as_raw()));
    }
    ArrayBuffer::from_value(value.clone()).map(|buffer| copy_raw(buffer.as_raw()))
}

/// Copies bytes out of a JavaScript buffer (empty when it was detached).
#[expect(
    unsafe_code,
    reason = "reading an ArrayBuffer's bytes needs a raw slice"
)]
fn copy_raw(raw: Option<std::ptr::NonNull<[u8]>>) -> Vec<u8> {
    // SAFETY: the pointer comes from a live buffer whose owner the caller holds, and the bytes
    // are copied before control returns to JavaScript, so nothing can detach or resize the
    // buffer while the slice exists.
    raw.map(|raw| unsafe { raw.as_ref() }.to_vec())
        .unwrap_or_default()
}

/// Evaluates one of the core's lazily loaded parts and returns its `bind` function, at most
/// [`MAX_PART_LOADS`] times an invocation.
fn load_part<'js>(
    state: &HostState,
    ctx: Ctx<'js>,
    name: String,
) -> rquickjs::Result<Function<'js>> {
    {
        let mut inner = state.inner.borrow_mut();
        if inner.part_loads >= MAX_PART_LOADS {
            let message = format!("the splice module's '{name}' part could not be loaded");
            return Err(Exception::throw_internal(&ctx, &message));
        }
        inner.part_loads += 1;
    }
    let bytecode =
        prelude::part_bytecode(&name).map_err(|e| Exception::throw_internal(&ctx, &e))?;
    // Evaluating without resolution is sound only for a module without static imports, which
    // `prelude::compile` guarantees for every part.
    let (module, _) = modules::load_bytecode(&ctx, bytecode)?.eval()?;
    module.get("bind")
}

fn utf8_encode<'js>(ctx: Ctx<'js>, text: String) -> rquickjs::Result<TypedArray<'js, u8>> {
    TypedArray::new(ctx, text.into_bytes())
}

fn utf8_decode<'js>(
    ctx: Ctx<'js>,
    data: Value<'js>,
    fatal: bool,
    strip_bom: bool,
) -> rquickjs::Result<String> {
    let bytes = body_bytes(&data).unwrap_or_default();
    let bytes = match bytes.strip_prefix(b"\xEF\xBB\xBF") {
        Some(rest) if strip_bom => rest,
        _ => &bytes[..],
    };
    if fatal {
        return std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| Exception::throw_type(&ctx, "the encoded data was not valid utf-8"));
    }
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// Cuts a string to at most `max` bytes on a character boundary, marking the cut.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str("… [truncated]");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_on_char_boundaries() {
        assert_eq!(truncate("héllo".to_owned(), 2), "h… [truncated]");
        assert_eq!(truncate("short".to_owned(), 10), "short");
    }

    #[test]
    fn delays_from_javascript_never_overflow() {
        let max = Duration::from_secs(60);
        assert_eq!(millis_to_duration(1500.0, max), Duration::from_millis(1500));
        assert_eq!(millis_to_duration(1e300, max), max);
        assert_eq!(millis_to_duration(f64::INFINITY, max), max);
        assert_eq!(millis_to_duration(f64::MAX, max), max);
        assert_eq!(millis_to_duration(f64::NAN, max), Duration::ZERO);
        assert_eq!(millis_to_duration(-5.0, max), Duration::ZERO);
        assert_eq!(millis_to_duration(f64::NEG_INFINITY, max), Duration::ZERO);
    }
}
