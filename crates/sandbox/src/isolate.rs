//! One QuickJS runtime serving one version of one integration, and the invocation loop.
//!
//! An isolate owns its runtime's memory limit, interrupt handler and module loader. With
//! [`Isolation::Warm`] it keeps one context in which the program was evaluated once and reuses
//! its default export; with [`Isolation::Invocation`] it evaluates the program for one call,
//! and the engine replaces the whole runtime after that call. An invocation runs JavaScript in
//! short metered steps and awaits host operations in between (see [`crate::meter`] and
//! [`crate::bindings`]). Scheduling isolates onto threads is [`crate::engine`]'s business, not
//! this module's.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rquickjs::context::intrinsic;
use rquickjs::promise::PromiseState;
use rquickjs::{
    Array, Context, Ctx, Function, Module, Object, Persistent, Promise, Runtime, Value,
};

use crate::api::{
    Host, Invocation, InvokeError, Isolation, Limits, LogLine, Program, Request, Response,
};
use crate::bindings::{self, HostState};
use crate::image::{ENTRY, ProgramImage};
use crate::meter::{Budget, Meter};
use crate::modules::{ImageModules, SPLICE};

/// QuickJS's own stack budget; worker threads have far more, so overflow is a JS error.
const JS_STACK_BYTES: usize = 1 << 20;

/// After a failure, a runtime using this share of its memory limit is discarded.
const MEMORY_PRESSURE_PERCENT: usize = 90;

const NEVER_SETTLES: &str =
    "the handler's promise can never settle: it awaits something no host operation will resolve";

/// What integration code gets: the standard library without `eval`/`Function` (no parsing
/// at run time), plus the Performance and DOMException globals.
type Intrinsics = (
    intrinsic::Date,
    intrinsic::RegExpCompiler,
    intrinsic::RegExp,
    intrinsic::Json,
    intrinsic::Proxy,
    intrinsic::MapSet,
    intrinsic::TypedArrays,
    intrinsic::Promise,
    intrinsic::WeakRef,
    intrinsic::Performance,
    intrinsic::DOMException,
);

/// The settings a runtime was built for; a runtime serves only programs with equal keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RuntimeKey {
    pub(crate) version: i64,
    pub(crate) limits: Limits,
    pub(crate) isolation: Isolation,
}

impl RuntimeKey {
    pub(crate) fn of(program: &Program) -> Self {
        Self {
            version: program.version,
            limits: program.limits,
            isolation: program.isolation,
        }
    }
}

/// The result of one invocation plus whether the runtime may serve another.
pub(crate) struct Outcome {
    pub(crate) invocation: Invocation,
    pub(crate) healthy: bool,
}

/// A context with the host table installed and the prelude evaluated: everything a call
/// needs before the program's own modules.
struct Stage {
    table: Persistent<Object<'static>>,
    context: Context,
}

/// A context with the program evaluated, ready to dispatch requests.
struct Scope {
    dispatch: Persistent<Function<'static>>,
    instance: Persistent<Value<'static>>,
    context: Context,
}

/// An error raised inside a JavaScript step, before it is classified.
enum Fault {
    Js(rquickjs::Error),
    Invalid(String),
}

impl From<rquickjs::Error> for Fault {
    fn from(error: rquickjs::Error) -> Self {
        Fault::Js(error)
    }
}

/// A [`Fault`] read out of the context, free of JavaScript lifetimes.
enum Failure {
    Thrown {
        name: Option<String>,
        message: String,
        stack: Option<String>,
        nullish: bool,
    },
    Engine {
        message: String,
        allocation: bool,
    },
    Invalid(String),
}

/// One runtime for one integration version.
///
/// Its host state, module loader and limits are shared through `Rc` with what its runtime
/// holds, and nothing outside the isolate may keep a clone: the engine moves an isolate
/// between threads only whole (`engine::Moving`).
pub(crate) struct Isolate {
    key: RuntimeKey,
    state: Rc<HostState>,
    meter: Arc<Meter>,
    load_failure: Rc<RefCell<Option<String>>>,
    modules: ImageModules,
    warm: Option<Scope>,
    /// The first call's stage, built ahead by [`Isolate::spare`].
    spare: RefCell<Option<Stage>>,
    runtime: Runtime,
}

impl Isolate {
    /// Builds a runtime for `program` with its limits and module loader; runs no code yet.
    pub(crate) fn new(program: &Program, host: Arc<dyn Host>) -> Result<Self, InvokeError> {
        let mut isolate = Self::unbound(host)?;
        isolate.bind(program)?;
        Ok(isolate)
    }

    /// A runtime for no program yet, with the stage of its first call already built: what a
    /// cold start takes instead of building both while a call waits. `None` when it cannot be
    /// built; the cold start then builds its own and reports why.
    pub(crate) async fn spare(host: Arc<dyn Host>) -> Option<Self> {
        let isolate = Self::unbound(host).ok()?;
        let mut budget = Budget::new(&Limits::default());
        let stage = isolate.stage(&mut budget).await.ok()?;
        *isolate.spare.borrow_mut() = Some(stage);
        Some(isolate)
    }

    /// Gives a runtime built by [`Isolate::spare`] (or [`Isolate::new`]) its program: image,
    /// limits and integration. Runs no code.
    pub(crate) fn bind(&mut self, program: &Program) -> Result<(), InvokeError> {
        let image = ProgramImage::parse(Arc::clone(&program.bytecode))
            .map_err(InvokeError::InvalidProgram)?;
        self.modules.set_image(image);
        self.runtime.set_memory_limit(program.limits.memory_bytes);
        self.state.set_integration(&program.integration);
        self.key = RuntimeKey::of(program);
        Ok(())
    }

    fn unbound(host: Arc<dyn Host>) -> Result<Self, InvokeError> {
        let runtime = Runtime::new().map_err(|e| InvokeError::Internal(e.to_string()))?;

        let meter = Arc::new(Meter::default());
        runtime.set_max_stack_size(JS_STACK_BYTES);
        runtime.set_interrupt_handler(Some(meter.handler()));

        let load_failure = Rc::new(RefCell::new(None));
        let modules = ImageModules::new(Rc::clone(&load_failure));
        runtime.set_loader(modules.clone(), modules.clone());

        let limits = Limits::default();
        runtime.set_memory_limit(limits.memory_bytes);
        Ok(Self {
            key: RuntimeKey {
                version: 0,
                limits,
                isolation: Isolation::Warm,
            },
            state: HostState::new(host, String::new()),
            meter,
            load_failure,
            modules,
            warm: None,
            spare: RefCell::new(None),
            runtime,
        })
    }

    /// The settings this runtime was built for.
    pub(crate) fn key(&self) -> RuntimeKey {
        self.key
    }

    /// Runs one request through the program, within the program's limits.
    pub(crate) async fn invoke(&mut self, request: &Request) -> Outcome {
        let limits = self.key.limits;
        let started = std::time::Instant::now();
        let mut budget = Budget::new(&limits);
        self.state.begin();

        let wall = Duration::from_millis(limits.wall_ms);
        let run = tokio::time::timeout(wall, self.run(request, &mut budget)).await;
        let result = run.unwrap_or(Err(InvokeError::WallLimit(limits.wall_ms)));
        let logs = self.state.finish();

        self.conclude(result, logs, started)
    }

    /// Decides whether the runtime survives and packages the invocation.
    fn conclude(
        &mut self,
        result: Result<Response, InvokeError>,
        logs: Vec<LogLine>,
        started: std::time::Instant,
    ) -> Outcome {
        let healthy = match &result {
            Ok(_) => true,
            Err(InvokeError::Exception { .. }) => !self.under_memory_pressure(),
            Err(_) => false,
        };
        if !healthy {
            // Drop the context now: its values must go before the runtime does.
            self.warm = None;
        }
        let invocation = Invocation {
            result,
            logs,
            duration: started.elapsed(),
        };
        Outcome {
            invocation,
            healthy,
        }
    }

    async fn run(
        &mut self,
        request: &Request,
        budget: &mut Budget,
    ) -> Result<Response, InvokeError> {
        if request.kind == crate::api::RequestKind::Probe {
            self.load(budget).await?;
            return Ok(Response {
                status: 204,
                ..Response::default()
            });
        }
        match self.key.isolation {
            Isolation::Warm => {
                if self.warm.is_none() {
                    self.warm = Some(self.load(budget).await?);
                }
                let scope = self
                    .warm
                    .as_ref()
                    .ok_or_else(|| internal("warm context missing"))?;
                self.dispatch(scope, request, budget).await
            }
            Isolation::Invocation => {
                let scope = self.load(budget).await?;
                self.dispatch(&scope, request, budget).await
            }
        }
    }

    /// Builds a context: host table, prelude, then the program's entry module.
    ///
    /// A module that cannot be resolved or loaded makes the program invalid; that is only
    /// known here, so the loader's note is read here and nowhere else.
    async fn load(&self, budget: &mut Budget) -> Result<Scope, InvokeError> {
        self.load_failure.borrow_mut().take();
        let loaded = self.load_program(budget).await;
        let failure = self.load_failure.borrow_mut().take();
        match (loaded, failure) {
            (Err(InvokeError::Exception { .. }), Some(problem)) => {
                Err(InvokeError::InvalidProgram(problem))
            }
            (loaded, _) => loaded,
        }
    }

    /// A fresh context with the host table installed and the prelude evaluated.
    async fn stage(&self, budget: &mut Budget) -> Result<Stage, InvokeError> {
        let context =
            Context::custom::<Intrinsics>(&self.runtime).map_err(|e| self.engine_failure(&e))?;

        let (table, prelude) = self.step(budget, &context, |ctx| {
            let table = self.state.install(ctx)?;
            let prelude = Module::import(ctx, SPLICE)?;
            Ok((Persistent::save(ctx, table), Persistent::save(ctx, prelude)))
        })?;
        self.drive(&context, prelude, budget).await?;
        Ok(Stage { table, context })
    }

    async fn load_program(&self, budget: &mut Budget) -> Result<Scope, InvokeError> {
        let spare = self.spare.borrow_mut().take();
        let Stage { table, context } = match spare {
            Some(stage) => stage,
            None => self.stage(budget).await?,
        };

        let entry = self.step(budget, &context, |ctx| {
            Ok(Persistent::save(ctx, Module::import(ctx, ENTRY)?))
        })?;
        let namespace = self.drive(&context, entry, budget).await?;

        let (dispatch, instance) = self.step(budget, &context, |ctx| {
            let table: Object<'_> = table.restore(ctx)?;
            let validate: Function<'_> = table.get("validate")?;
            let dispatch: Function<'_> = table.get("dispatch")?;
            let namespace = namespace.restore(ctx)?;
            let namespace = namespace
                .as_object()
                .ok_or_else(|| Fault::Invalid("no module namespace".into()))?;

            let instance: Value<'_> = namespace.get("default")?;
            let problem: Option<String> = validate.call((instance.clone(),))?;
            if let Some(problem) = problem {
                return Err(Fault::Invalid(problem));
            }
            Ok((
                Persistent::save(ctx, dispatch),
                Persistent::save(ctx, instance),
            ))
        })?;

        Ok(Scope {
            dispatch,
            instance,
            context,
        })
    }

    /// Calls the prelude's dispatcher and converts what it resolves to.
    async fn dispatch(
        &self,
        scope: &Scope,
        request: &Request,
        budget: &mut Budget,
    ) -> Result<Response, InvokeError> {
        // A handler that finished synchronously answers at once, read in the same step; a
        // promise is driven.
        let answer = self.step(budget, &scope.context, |ctx| {
            let dispatch = scope.dispatch.clone().restore(ctx)?;
            let instance = scope.instance.clone().restore(ctx)?;
            let value: Value<'_> = dispatch.call((
                instance,
                request.kind.as_str(),
                request.method.as_str(),
                request.path.as_str(),
                request.query.as_str(),
                flat_pairs(ctx, &request.headers)?,
                String::from_utf8_lossy(&request.body).as_ref(),
            ))?;
            Ok(match value.as_promise() {
                Some(promise) => Err(Persistent::save(ctx, promise.clone())),
                None => Ok(response_from_js(&value)?),
            })
        })?;
        match answer {
            Ok(response) => {
                // Promise jobs the handler queued run now, not in the next invocation; the
                // answer is what the handler returned.
                self.run_jobs(budget)?;
                Ok(response)
            }
            Err(promise) => {
                let value = self.drive(&scope.context, promise, budget).await?;
                self.step(budget, &scope.context, |ctx| {
                    response_from_js(&value.restore(ctx)?)
                })
            }
        }
    }

    /// Runs jobs and host operations until `promise` settles.
    async fn drive(
        &self,
        context: &Context,
        promise: Persistent<Promise<'static>>,
        budget: &mut Budget,
    ) -> Result<Persistent<Value<'static>>, InvokeError> {
        loop {
            self.run_jobs(budget)?;

            let settled = self.step(budget, context, |ctx| {
                let promise = promise.clone().restore(ctx)?;
                match promise.state() {
                    PromiseState::Pending => Ok(None),
                    PromiseState::Resolved => {
                        let value: Value<'_> =
                            promise.result().unwrap_or(Err(rquickjs::Error::Unknown))?;
                        Ok(Some(Persistent::save(ctx, value)))
                    }
                    PromiseState::Rejected => {
                        let thrown = promise
                            .result::<Value<'_>>()
                            .unwrap_or(Err(rquickjs::Error::Unknown));
                        Err(thrown.err().unwrap_or(rquickjs::Error::Unknown).into())
                    }
                }
            })?;
            if let Some(value) = settled {
                return Ok(value);
            }

            let Some((id, outcome)) = self.state.next_outcome().await else {
                let message = NEVER_SETTLES.to_owned();
                return Err(InvokeError::Exception {
                    message,
                    stack: None,
                });
            };
            self.step(budget, context, |ctx| {
                Ok(self.state.settle(ctx, id, outcome)?)
            })?;
        }
    }

    /// Runs pending promise jobs until none is left.
    fn run_jobs(&self, budget: &mut Budget) -> Result<(), InvokeError> {
        if !self.runtime.is_job_pending() {
            return Ok(());
        }
        let result = self.meter.run(budget, || {
            loop {
                match self.runtime.execute_pending_job() {
                    Ok(true) if self.meter.tripped().is_none() => {}
                    Ok(_) => return Ok(()),
                    Err(job) => {
                        return Err(job
                            .0
                            .with(|ctx| describe(&ctx, Fault::Js(rquickjs::Error::Exception))));
                    }
                }
            }
        });
        self.check(result)
    }

    /// Runs one metered synchronous step inside the context.
    fn step<R>(
        &self,
        budget: &mut Budget,
        context: &Context,
        f: impl for<'js> FnOnce(&Ctx<'js>) -> Result<R, Fault>,
    ) -> Result<R, InvokeError> {
        let result = self.meter.run(budget, || {
            context.with(|ctx| f(&ctx).map_err(|fault| describe(&ctx, fault)))
        });
        self.check(result)
    }

    /// Turns a step's result into the invocation's error, limits first.
    fn check<R>(&self, result: Result<R, Failure>) -> Result<R, InvokeError> {
        if let Some(limit) = self.meter.tripped() {
            return Err(limit.error(&self.key.limits));
        }
        result.map_err(|failure| self.classify(failure))
    }

    fn classify(&self, failure: Failure) -> InvokeError {
        let limits = self.key.limits;

        match failure {
            Failure::Invalid(problem) => InvokeError::InvalidProgram(problem),
            Failure::Engine {
                allocation: true, ..
            } => InvokeError::MemoryLimit(limits.memory_bytes),
            Failure::Engine { message, .. } => InvokeError::Internal(message),
            Failure::Thrown {
                name,
                message,
                stack,
                nullish,
            } => match (name.as_deref(), message.as_str()) {
                (Some("InternalError"), "out of memory") => {
                    InvokeError::MemoryLimit(limits.memory_bytes)
                }
                (Some("InternalError"), "interrupted") => InvokeError::CpuLimit(limits.cpu_ms),
                (Some("RangeError"), m) if m.contains("Maximum call stack size exceeded") => {
                    InvokeError::StackOverflow
                }
                (_, _) if nullish && self.under_memory_pressure() => {
                    InvokeError::MemoryLimit(limits.memory_bytes)
                }
                (Some(name), message) => InvokeError::Exception {
                    message: format!("{name}: {message}"),
                    stack,
                },
                (None, _) => InvokeError::Exception { message, stack },
            },
        }
    }

    fn engine_failure(&self, error: &rquickjs::Error) -> InvokeError {
        let allocation = matches!(error, rquickjs::Error::Allocation);
        self.classify(Failure::Engine {
            message: error.to_string(),
            allocation,
        })
    }

    fn under_memory_pressure(&self) -> bool {
        let usage = self.runtime.memory_usage();
        let used = usize::try_from(usage.malloc_size).unwrap_or(usize::MAX);
        used.saturating_mul(100)
            >= self
                .key
                .limits
                .memory_bytes
                .saturating_mul(MEMORY_PRESSURE_PERCENT)
    }
}

impl Drop for Isolate {
    fn drop(&mut self) {
        // JavaScript values held on the Rust side must be freed before the runtime is.
        drop(self.state.finish());
        self.warm = None;
        self.spare.get_mut().take();
    }
}

/// Reads a fault out of the context; for a pending exception, its name, message and stack.
fn describe(ctx: &Ctx<'_>, fault: Fault) -> Failure {
    let error = match fault {
        Fault::Invalid(problem) => return Failure::Invalid(problem),
        Fault::Js(error) => error,
    };
    if !error.is_exception() {
        let allocation = matches!(error, rquickjs::Error::Allocation);
        return Failure::Engine {
            message: error.to_string(),
            allocation,
        };
    }

    let thrown = ctx.catch();
    let nullish = thrown.is_null() || thrown.is_undefined();
    let Some(object) = thrown.as_object() else {
        let message = thrown
            .as_string()
            .and_then(|s| s.to_string().ok())
            .unwrap_or_else(|| {
                if thrown.is_null() {
                    "null"
                } else {
                    "undefined"
                }
                .to_owned()
            });
        return Failure::Thrown {
            name: None,
            message,
            stack: None,
            nullish,
        };
    };

    let name: Option<String> = object.get("name").ok().flatten();
    let message: Option<String> = object.get("message").ok().flatten();
    let stack: Option<String> = object.get("stack").ok().flatten();
    let message = match message {
        Some(message) => message,
        None => ctx
            .json_stringify(thrown.clone())
            .ok()
            .flatten()
            .and_then(|s| s.to_string().ok())
            .unwrap_or_else(|| "[object]".to_owned()),
    };
    let stack = stack
        .map(|s| s.trim_end().to_owned())
        .filter(|s| !s.is_empty());
    Failure::Thrown {
        name: name.filter(|_| thrown.is_error()),
        message,
        stack,
        nullish,
    }
}

/// Request headers as `[name, value, name, value, ...]`: one array, whatever their number.
fn flat_pairs<'js>(ctx: &Ctx<'js>, pairs: &[(String, String)]) -> rquickjs::Result<Array<'js>> {
    let array = Array::new(ctx.clone())?;
    for (i, (name, value)) in pairs.iter().enumerate() {
        array.set(2 * i, name.as_str())?;
        array.set(2 * i + 1, value.as_str())?;
    }
    Ok(array)
}

/// Reads the dispatcher's `{ status, headers: [[name, value]], body }`.
fn response_from_js(value: &Value<'_>) -> Result<Response, Fault> {
    let object = value
        .as_object()
        .ok_or_else(|| internal_fault("dispatcher returned no object"))?;

    let status: f64 = object.get("status")?;
    if status.fract() != 0.0 || !(100.0..=599.0).contains(&status) {
        return Err(internal_fault(&format!("invalid response status {status}")));
    }
    let pairs: Array<'_> = object.get("headers")?;
    let mut headers = Vec::with_capacity(pairs.len());
    for pair in pairs.iter::<Array<'_>>() {
        let pair = pair?;
        if pair.len() == 2 {
            headers.push((pair.get(0)?, pair.get(1)?));
        }
    }
    let body: Value<'_> = object.get("body")?;

    Ok(Response {
        status: status as u16,
        headers,
        body: bindings::body_bytes(&body)
            .map(Bytes::from)
            .unwrap_or_default(),
    })
}

fn internal(message: &str) -> InvokeError {
    InvokeError::Internal(message.to_owned())
}

fn internal_fault(message: &str) -> Fault {
    Fault::Js(rquickjs::Error::new_from_js_message(
        "value",
        "response",
        message.to_owned(),
    ))
}
