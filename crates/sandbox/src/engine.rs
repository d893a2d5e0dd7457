//! The engine: worker threads that own runtimes, and per-integration pools that decide which
//! runtime serves which call.
//!
//! A runtime serving an integration lives on one worker thread (a current-thread tokio
//! runtime with a `LocalSet`). Runtimes are born and die elsewhere: a builder thread makes
//! spare runtimes ahead of need, each with its context and `splice` module ready, and frees
//! the ones that are done, so the threads serving calls do neither (see [`Moving`] for how a
//! runtime changes threads).
//!
//! The [`Registry`] is the shared truth about runtimes: how many each integration has, which
//! are idle, and on which worker they live. A semaphore per integration caps its runtimes; a
//! call holds a permit for as long as it uses a runtime, so extra calls wait for one to be
//! free. What happens inside a runtime is [`crate::isolate`]'s business.
//!
//! A worker thread can also run the caller's own tasks ([`Engine::run_on_worker`]): the server
//! serves HTTP on them, so a request whose runtime lives on the thread that parsed it never
//! changes threads. Calls made from a worker thread prefer runtimes on that thread, and one
//! that finds an idle runtime there runs at once, inside the caller's task: a handler that
//! finishes synchronously holds its runtime only while it runs, so one runtime per thread
//! serves any number of connections.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tracing::Instrument;

use crate::api::{Host, Invocation, InvokeError, Isolation, Program, Request};
use crate::isolate::{Isolate, RuntimeKey};

thread_local! {
    /// The engine (by registry address) and worker index of the current thread, if it is a
    /// worker thread.
    static ON_WORKER: Cell<Option<(usize, usize)>> = const { Cell::new(None) };
    /// The runtimes of the worker running on the current thread.
    static HERE: RefCell<Option<Worker>> = const { RefCell::new(None) };
}

/// Stack of a worker thread; far above QuickJS's own limit, so deep recursion stays a JS error.
const WORKER_STACK_BYTES: usize = 16 << 20;

/// How an [`Engine`] sizes its threads and pools.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Worker threads running JavaScript.
    pub workers: usize,
    /// Runtimes (and so concurrent invocations) one integration may have.
    pub max_runtimes_per_integration: usize,
    /// Idle runtimes are dropped after this long without a call.
    pub idle_timeout: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            workers: std::thread::available_parallelism().map_or(2, usize::from),
            max_runtimes_per_integration: 4,
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// Runs integration programs on a pool of worker threads with warm, per-integration runtimes.
///
/// Cheap to share behind an `Arc`; [`Engine::invoke`] may be called from any tokio runtime
/// that has the time driver enabled. Dropping the engine stops its workers.
pub struct Engine {
    registry: Arc<Registry>,
    workers: Vec<mpsc::UnboundedSender<Command>>,
}

type RuntimeId = u64;

enum Command {
    Invoke(Box<Job>),
    Drop(RuntimeId),
    Run(Pin<Box<dyn Future<Output = ()> + Send>>),
}

struct Job {
    lease: Lease,
    program: Program,
    request: Request,
    reply: oneshot::Sender<Invocation>,
}

impl Job {
    /// A call to send to a runtime, and where its answer will come.
    fn new(
        lease: Lease,
        program: &Program,
        request: Request,
    ) -> (Self, oneshot::Receiver<Invocation>) {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            lease,
            program: program.clone(),
            request,
            reply,
        };
        (job, answer)
    }
}

impl Engine {
    /// Starts the worker threads. Threads that cannot be started are logged and skipped.
    pub fn new(config: EngineConfig, host: Arc<dyn Host>) -> Engine {
        let config = EngineConfig {
            workers: config.workers.max(1),
            max_runtimes_per_integration: config.max_runtimes_per_integration.max(1),
            idle_timeout: config.idle_timeout,
        };
        let registry = Arc::new(Registry::new(config.clone()));

        let builder = spawn_builder(Arc::clone(&host));
        let workers = (0..config.workers)
            .filter_map(|index| {
                let fleet = Fleet {
                    registry: Arc::clone(&registry),
                    host: Arc::clone(&host),
                    builder: builder.clone(),
                };
                spawn_worker(index, fleet)
            })
            .collect::<Vec<_>>();
        registry.lock().per_worker = vec![0; workers.len()];

        Engine { registry, workers }
    }

    /// Runs one request through `program`, waiting for a free runtime of its integration.
    pub async fn invoke(&self, program: &Program, request: Request) -> Invocation {
        let span = tracing::debug_span!(
            "sandbox.invoke",
            integration.id = %program.integration,
            integration.version = program.version,
        );
        self.invoke_inner(program, request).instrument(span).await
    }

    async fn invoke_inner(&self, program: &Program, request: Request) -> Invocation {
        let started = Instant::now();
        let request = match self.try_here(program, request) {
            Ok(answer) => return self.answer(answer, started).await,
            Err(request) => request,
        };
        let lease = match self.acquire(program).await {
            Ok(lease) => lease,
            Err(error) => return failed(error, started),
        };

        let worker = lease.worker;
        let (job, answer) = Job::new(lease, program, request);
        let sent = self
            .workers
            .get(worker)
            .map(|w| w.send(Command::Invoke(Box::new(job))));
        if !matches!(sent, Some(Ok(()))) {
            return failed(internal("sandbox worker stopped"), started);
        }
        self.answer(answer, started).await
    }

    /// Starts the call with [`start_here`] when an idle runtime of `program` waits on the
    /// worker thread the caller runs on; otherwise hands the request back. Synchronous, so
    /// that nothing of the thread's own is held across an await of [`Engine::invoke`].
    #[expect(
        clippy::result_large_err,
        reason = "the request is handed back to the caller, moved once"
    )]
    fn try_here(
        &self,
        program: &Program,
        request: Request,
    ) -> Result<oneshot::Receiver<Invocation>, Request> {
        let Some((lease, worker)) = self.lease_here(program) else {
            return Err(request);
        };
        let (job, answer) = Job::new(lease, program, request);
        start_here(job, worker);
        Ok(answer)
    }

    /// An idle runtime of `program` on the worker thread the caller runs on, if it can be
    /// had without waiting.
    fn lease_here(&self, program: &Program) -> Option<(Lease, Worker)> {
        let index = self.registry.current_worker()?;
        let worker = HERE.with_borrow(Clone::clone)?;
        let lease = Registry::checkout_idle(&self.registry, program, index)?;
        Some((lease, worker))
    }

    async fn answer(&self, answer: oneshot::Receiver<Invocation>, started: Instant) -> Invocation {
        let invocation = answer
            .await
            .unwrap_or_else(|_| failed(internal("invocation aborted"), started));
        tracing::debug!(
            duration_ms = invocation.duration.as_millis(),
            ok = invocation.result.is_ok(),
            "sandbox invocation finished"
        );
        invocation
    }

    /// Worker threads running.
    pub fn workers(&self) -> usize {
        self.workers.iter().filter(|w| !w.is_closed()).count()
    }

    /// Runs `task` on worker thread `index`, next to that worker's runtimes, until it ends or
    /// the engine is dropped. Returns `false` when there is no such worker. The task shares
    /// the thread with JavaScript: while a call runs synchronously, the task waits.
    pub fn run_on_worker(
        &self,
        index: usize,
        task: impl Future<Output = ()> + Send + 'static,
    ) -> bool {
        self.workers
            .get(index)
            .is_some_and(|w| w.send(Command::Run(Box::pin(task))).is_ok())
    }

    /// Drops the idle runtimes of an integration; busy ones are dropped when their call ends.
    pub fn evict(&self, integration: &str) {
        let stale = self.registry.evict(integration);
        self.drop_runtimes(stale);
    }

    /// Runtimes currently alive, busy or idle, across all integrations.
    pub fn resident_runtimes(&self) -> usize {
        self.registry.lock().per_worker.iter().sum()
    }

    /// Runtimes currently alive for one integration.
    pub fn resident_runtimes_of(&self, integration: &str) -> usize {
        self.registry
            .lock()
            .pools
            .get(integration)
            .map_or(0, |pool| pool.resident.total())
    }

    async fn acquire(&self, program: &Program) -> Result<Lease, InvokeError> {
        if self.workers.is_empty() {
            return Err(internal("no sandbox worker threads are running"));
        }

        let semaphore = self.registry.semaphore(&program.integration);
        let permit = semaphore
            .acquire_owned()
            .await
            .map_err(|_| internal("runtime pool closed"))?;

        let live: Vec<bool> = self.workers.iter().map(|w| !w.is_closed()).collect();
        let local = self.registry.current_worker();
        let (lease, stale) = Registry::checkout(&self.registry, program, permit, &live, local);
        self.drop_runtimes(stale);
        Ok(lease)
    }

    fn drop_runtimes(&self, runtimes: Vec<(usize, RuntimeId)>) {
        for (worker, id) in runtimes {
            if let Some(worker) = self.workers.get(worker) {
                // A stopped worker has dropped its runtimes already.
                let _ = worker.send(Command::Drop(id));
            }
        }
    }
}

fn failed(error: InvokeError, started: Instant) -> Invocation {
    Invocation {
        result: Err(error),
        logs: Vec::new(),
        duration: started.elapsed(),
    }
}

fn internal(message: &str) -> InvokeError {
    InvokeError::Internal(message.to_owned())
}

/// Shared bookkeeping of every runtime, by integration and by worker.
struct Registry {
    config: EngineConfig,
    state: Mutex<Pools>,
}

#[derive(Default)]
struct Pools {
    pools: HashMap<String, Pool>,
    per_worker: Vec<usize>,
    next_id: RuntimeId,
}

struct Pool {
    semaphore: Arc<Semaphore>,
    idle: Vec<IdleRuntime>,
    /// Runtimes alive (busy or idle) for this integration, by worker.
    resident: Residents,
    /// Bumped by evict: runtimes leased before it are dropped when their call ends.
    generation: u64,
}

/// How many runtimes live on each worker.
#[derive(Default)]
struct Residents(Vec<usize>);

impl Residents {
    fn total(&self) -> usize {
        self.0.iter().sum()
    }

    fn on(&self, worker: usize) -> usize {
        self.0.get(worker).copied().unwrap_or(0)
    }

    fn add(&mut self, worker: usize) {
        if self.0.len() <= worker {
            self.0.resize(worker + 1, 0);
        }
        self.0[worker] += 1;
    }

    fn remove(&mut self, worker: usize) {
        if let Some(count) = self.0.get_mut(worker) {
            *count = count.saturating_sub(1);
        }
    }
}

struct IdleRuntime {
    id: RuntimeId,
    worker: usize,
    key: RuntimeKey,
    since: Instant,
}

impl Registry {
    fn new(config: EngineConfig) -> Self {
        Self {
            config,
            state: Mutex::new(Pools::default()),
        }
    }

    /// This engine's worker index of the current thread, if it is one of its workers.
    fn current_worker(&self) -> Option<usize> {
        let me = std::ptr::from_ref(self) as usize;
        ON_WORKER
            .get()
            .and_then(|(engine, index)| (engine == me).then_some(index))
    }

    fn lock(&self) -> MutexGuard<'_, Pools> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn semaphore(&self, integration: &str) -> Arc<Semaphore> {
        let max = self.config.max_runtimes_per_integration;
        let mut state = self.lock();
        if let Some(pool) = state.pools.get(integration) {
            return Arc::clone(&pool.semaphore);
        }
        let pool = state
            .pools
            .entry(integration.to_owned())
            .or_insert_with(|| Pool {
                semaphore: Arc::new(Semaphore::new(max)),
                idle: Vec::new(),
                resident: Residents::default(),
                generation: 0,
            });
        Arc::clone(&pool.semaphore)
    }

    /// Picks an idle runtime of the right version, or reserves a new one; returns runtimes
    /// that must be dropped (older versions, or the oldest idle one when at the cap).
    ///
    /// A call made on worker thread `local` takes an idle runtime of that thread first, then
    /// starts a new one there while the integration is under its cap (or at the cap, when the
    /// thread has none: another thread's oldest idle runtime makes room), and only then takes
    /// another thread's idle runtime: a warm call stays on its thread.
    fn checkout(
        this: &Arc<Self>,
        program: &Program,
        permit: OwnedSemaphorePermit,
        live: &[bool],
        local: Option<usize>,
    ) -> (Lease, Vec<(usize, RuntimeId)>) {
        let key = RuntimeKey::of(program);
        let max = this.config.max_runtimes_per_integration;
        let mut guard = this.lock();
        let state = &mut *guard;
        let pool = state
            .pools
            .entry(program.integration.clone())
            .or_insert_with(|| Pool {
                semaphore: Arc::clone(permit.semaphore()),
                idle: Vec::new(),
                resident: Residents::default(),
                generation: 0,
            });

        let mut stale = Vec::new();
        pool.idle.retain(|idle| {
            let keep = idle.key == key || idle.key.version > key.version;
            if !keep {
                stale.push((idle.worker, idle.id));
            }
            keep
        });

        let local = local.filter(|worker| live.get(*worker).copied().unwrap_or(false));
        let under_cap = pool.resident.total().saturating_sub(stale.len()) < max;
        // A thread without a runtime of its own gets one even at the cap, in place of another
        // thread's idle one: borrowing would send each of its calls across threads.
        let build_here = local.is_some_and(|worker| {
            let gone = stale.iter().filter(|(w, _)| *w == worker).count();
            let own = pool.resident.on(worker).saturating_sub(gone);
            under_cap || own == 0
        });
        let reused = local
            .and_then(|worker| {
                pool.idle
                    .iter()
                    .rposition(|idle| idle.key == key && idle.worker == worker)
            })
            .or_else(|| {
                if build_here {
                    return None;
                }
                pool.idle.iter().rposition(|idle| idle.key == key)
            })
            .map(|at| pool.idle.remove(at));
        let (id, worker) = match reused {
            Some(idle) => (idle.id, idle.worker),
            None => {
                if pool.resident.total().saturating_sub(stale.len()) >= max && !pool.idle.is_empty()
                {
                    let oldest = pool.idle.remove(0);
                    stale.push((oldest.worker, oldest.id));
                }
                let worker = local.unwrap_or_else(|| least_loaded(&state.per_worker, live));
                state.next_id += 1;
                pool.resident.add(worker);
                if let Some(count) = state.per_worker.get_mut(worker) {
                    *count += 1;
                }
                (state.next_id, worker)
            }
        };

        for (worker, _) in &stale {
            pool.resident.remove(*worker);
            if let Some(count) = state.per_worker.get_mut(*worker) {
                *count = count.saturating_sub(1);
            }
        }

        let lease = Lease {
            registry: Arc::clone(this),
            integration: program.integration.clone(),
            runtime: id,
            worker,
            key,
            generation: pool.generation,
            released: false,
            _permit: permit,
        };
        (lease, stale)
    }

    /// Takes an idle runtime of exactly this program on `worker`, with a permit of its
    /// integration, if both are to be had without waiting.
    fn checkout_idle(this: &Arc<Self>, program: &Program, worker: usize) -> Option<Lease> {
        let key = RuntimeKey::of(program);
        let mut state = this.lock();
        let pool = state.pools.get_mut(&program.integration)?;
        let at = pool
            .idle
            .iter()
            .rposition(|idle| idle.key == key && idle.worker == worker)?;
        let permit = Arc::clone(&pool.semaphore).try_acquire_owned().ok()?;
        let idle = pool.idle.remove(at);
        Some(Lease {
            registry: Arc::clone(this),
            integration: program.integration.clone(),
            runtime: idle.id,
            worker,
            key,
            generation: pool.generation,
            released: false,
            _permit: permit,
        })
    }

    /// Ends a lease: the runtime becomes idle, or is forgotten. Returns whether to keep it.
    fn release(&self, lease: &Lease, healthy: bool) -> bool {
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(pool) = state.pools.get_mut(&lease.integration) else {
            return false;
        };

        if healthy && lease.generation == pool.generation {
            pool.idle.push(IdleRuntime {
                id: lease.runtime,
                worker: lease.worker,
                key: lease.key,
                since: Instant::now(),
            });
            return true;
        }

        pool.resident.remove(lease.worker);
        if let Some(count) = state.per_worker.get_mut(lease.worker) {
            *count = count.saturating_sub(1);
        }
        false
    }

    fn evict(&self, integration: &str) -> Vec<(usize, RuntimeId)> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let Some(pool) = state.pools.get_mut(integration) else {
            return Vec::new();
        };

        pool.generation += 1;
        let stale: Vec<_> = pool
            .idle
            .drain(..)
            .map(|idle| (idle.worker, idle.id))
            .collect();
        for (worker, _) in &stale {
            pool.resident.remove(*worker);
            if let Some(count) = state.per_worker.get_mut(*worker) {
                *count = count.saturating_sub(1);
            }
        }
        state.forget_unused(integration);
        stale
    }

    /// Idle runtimes of one worker past the idle timeout, removed from the books.
    fn expired(&self, worker: usize, now: Instant) -> Vec<RuntimeId> {
        let timeout = self.config.idle_timeout;
        let mut guard = self.lock();
        let state = &mut *guard;

        let mut expired = Vec::new();
        let mut emptied = Vec::new();
        for (integration, pool) in &mut state.pools {
            let before = pool.idle.len();
            pool.idle.retain(|idle| {
                let keep = idle.worker != worker || now.duration_since(idle.since) < timeout;
                if !keep {
                    expired.push(idle.id);
                }
                keep
            });
            for _ in pool.idle.len()..before {
                pool.resident.remove(worker);
            }
            if pool.resident.total() == 0 {
                emptied.push(integration.clone());
            }
        }

        if let Some(count) = state.per_worker.get_mut(worker) {
            *count = count.saturating_sub(expired.len());
        }
        for integration in emptied {
            state.forget_unused(&integration);
        }
        expired
    }
}

impl Pools {
    /// Removes a pool nobody uses, so deleted integrations leave nothing behind. A pool whose
    /// semaphore is shared (a permit or a waiting call) stays.
    fn forget_unused(&mut self, integration: &str) {
        let unused = self.pools.get(integration).is_some_and(|pool| {
            pool.resident.total() == 0 && Arc::strong_count(&pool.semaphore) == 1
        });
        if unused {
            self.pools.remove(integration);
        }
    }
}

fn least_loaded(per_worker: &[usize], live: &[bool]) -> usize {
    per_worker
        .iter()
        .enumerate()
        .filter(|(index, _)| live.get(*index).copied().unwrap_or(false))
        .min_by_key(|(_, count)| **count)
        .map_or(0, |(index, _)| index)
}

/// The right to use one runtime for one call; releases itself if dropped unused.
struct Lease {
    registry: Arc<Registry>,
    integration: String,
    runtime: RuntimeId,
    worker: usize,
    key: RuntimeKey,
    generation: u64,
    released: bool,
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    /// Returns the runtime to its pool; `false` means the caller must drop it.
    fn release(mut self, healthy: bool) -> bool {
        self.released = true;
        self.registry.release(&self, healthy)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.released {
            self.registry.release(self, false);
        }
    }
}

/// What every worker thread shares: the books, the host, and the builder thread.
struct Fleet {
    registry: Arc<Registry>,
    host: Arc<dyn Host>,
    builder: Option<Builder>,
}

fn spawn_worker(index: usize, fleet: Fleet) -> Option<mpsc::UnboundedSender<Command>> {
    let (commands, inbox) = mpsc::unbounded_channel();
    let spawned = std::thread::Builder::new()
        .name(format!("splice-sandbox-{index}"))
        .stack_size(WORKER_STACK_BYTES)
        .spawn(move || run_worker(index, inbox, fleet));

    match spawned {
        Ok(_) => Some(commands),
        Err(error) => {
            tracing::error!(worker = index, %error, "could not start sandbox worker thread");
            None
        }
    }
}

fn run_worker(index: usize, inbox: mpsc::UnboundedReceiver<Command>, fleet: Fleet) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(worker = index, %error, "could not start sandbox worker runtime");
            return;
        }
    };
    ON_WORKER.set(Some((Arc::as_ptr(&fleet.registry) as usize, index)));
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, serve(index, inbox, fleet));
}

type Isolates = Rc<RefCell<HashMap<RuntimeId, Isolate>>>;

/// Runtimes a worker keeps built ahead for cold starts and strict isolation, each with its
/// first stage ready.
const SPARES: usize = 2;

/// A worker's spare runtimes: ready, on their way from the builder thread, or being built
/// on the worker's own thread (when there is no builder).
#[derive(Default)]
struct Spares {
    ready: RefCell<Vec<Isolate>>,
    /// Looked at when a spare is wanted, so a call never waits for one that is late; nor
    /// does it depend on when this thread gets round to a wake-up from the builder.
    ordered: RefCell<VecDeque<oneshot::Receiver<Moving>>>,
    building: Cell<usize>,
}

impl Spares {
    fn pending(&self) -> usize {
        self.ready.borrow().len() + self.ordered.borrow().len() + self.building.get()
    }

    /// A spare from the builder, if one has arrived.
    fn arrived(&self) -> Option<Isolate> {
        let mut ordered = self.ordered.borrow_mut();
        while let Some(next) = ordered.front_mut() {
            match next.try_recv() {
                Ok(Moving(isolate)) => {
                    ordered.pop_front();
                    return Some(isolate);
                }
                Err(oneshot::error::TryRecvError::Empty) => return None,
                // The builder could not build it; it is ordered again.
                Err(oneshot::error::TryRecvError::Closed) => {
                    ordered.pop_front();
                }
            }
        }
        None
    }
}

/// The thread that builds spare runtimes and frees used ones, so that the threads serving
/// calls do neither: a cold start or a call under strict isolation waits for no runtime to
/// be built, and no answer waits for a runtime to be freed.
#[derive(Clone)]
struct Builder {
    chores: mpsc::UnboundedSender<Chore>,
    /// Runtimes sent to be freed and not freed yet.
    unfreed: Arc<AtomicUsize>,
}

/// Runtimes that may wait for the builder thread to free them; past this a worker frees its
/// own, so memory stays bounded when calls outpace the builder.
const UNFREED: usize = 8;

enum Chore {
    /// Build a spare runtime and send it back.
    Build(oneshot::Sender<Moving>),
    /// Free a runtime nobody will use again.
    Free(Box<Moving>),
}

/// An isolate handed whole between a worker and the builder thread.
///
/// `Isolate` is not `Send`: its host state is shared through `Rc` with the native functions
/// installed in its runtime, and it holds `Persistent` handles into that runtime. Every such
/// clone and handle lives inside the isolate or inside its runtime, so moving the isolate
/// moves all of them at once, and one thread holds it at a time. The QuickJS runtime itself
/// may change threads: with rquickjs's `parallel` feature its lock and its stack limit follow
/// the thread that enters it.
struct Moving(Isolate);

#[expect(
    unsafe_code,
    reason = "an isolate moves with every handle into it; see `Moving`"
)]
unsafe impl Send for Moving {}

fn spawn_builder(host: Arc<dyn Host>) -> Option<Builder> {
    let (chores, inbox) = mpsc::unbounded_channel();
    let unfreed = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&unfreed);
    let spawned = std::thread::Builder::new()
        .name("splice-build".to_owned())
        .stack_size(WORKER_STACK_BYTES)
        .spawn(move || run_builder(inbox, host, &counter));
    match spawned {
        Ok(_) => Some(Builder { chores, unfreed }),
        Err(error) => {
            tracing::warn!(%error, "could not start the runtime builder thread; workers build their own runtimes");
            None
        }
    }
}

fn run_builder(
    mut inbox: mpsc::UnboundedReceiver<Chore>,
    host: Arc<dyn Host>,
    unfreed: &AtomicUsize,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::warn!(%error, "could not start the runtime builder; workers build their own runtimes");
            return;
        }
    };
    runtime.block_on(async move {
        while let Some(chore) = inbox.recv().await {
            match chore {
                Chore::Build(reply) => {
                    if reply.is_closed() {
                        continue;
                    }
                    if let Some(spare) = Isolate::spare(Arc::clone(&host)).await {
                        // A worker that stopped meanwhile drops it here.
                        let _ = reply.send(Moving(spare));
                    }
                }
                Chore::Free(isolate) => {
                    drop(isolate);
                    unfreed.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
    });
}

/// A worker's main loop: start invocations, drop runtimes, sweep idle ones.
async fn serve(index: usize, mut inbox: mpsc::UnboundedReceiver<Command>, fleet: Fleet) {
    let Fleet {
        registry,
        host,
        builder,
    } = fleet;
    let worker = Worker {
        isolates: Rc::default(),
        spares: Rc::default(),
        host,
        builder,
    };
    worker.order_spares();
    HERE.set(Some(worker.clone()));
    let period =
        (registry.config.idle_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
    let mut sweep = tokio::time::interval(period);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            command = inbox.recv() => match command {
                Some(Command::Invoke(job)) => {
                    tokio::task::spawn_local(run_job(*job, worker.clone()));
                }
                Some(Command::Run(task)) => {
                    tokio::task::spawn_local(task);
                }
                Some(Command::Drop(id)) => {
                    let dropped = worker.isolates.borrow_mut().remove(&id);
                    if let Some(isolate) = dropped {
                        worker.free(isolate);
                    }
                }
                None => break,
            },
            _ = sweep.tick() => {
                for id in registry.expired(index, Instant::now()) {
                    let dropped = worker.isolates.borrow_mut().remove(&id);
                    if let Some(isolate) = dropped {
                        tracing::debug!(runtime.id = id, "dropped idle runtime");
                        worker.free(isolate);
                    }
                }
            }
        }
    }
    // The runtimes go with the loop, not with the thread's locals.
    HERE.set(None);
}

/// What a call needs of its worker.
#[derive(Clone)]
struct Worker {
    isolates: Isolates,
    spares: Rc<Spares>,
    host: Arc<dyn Host>,
    builder: Option<Builder>,
}

impl Worker {
    /// A spare runtime if one is ready; another is ordered in its place.
    fn take_spare(&self) -> Option<Isolate> {
        let spare = self.spares.ready.borrow_mut().pop();
        let spare = spare.or_else(|| self.spares.arrived());
        self.order_spares();
        spare
    }

    /// Orders spare runtimes until [`SPARES`] are ready or on their way: from the builder
    /// thread, or built here as a task of this thread when there is none.
    fn order_spares(&self) {
        let spares = &self.spares;
        while spares.pending() < SPARES {
            if let Some(builder) = &self.builder {
                let (reply, spare) = oneshot::channel();
                if builder.chores.send(Chore::Build(reply)).is_ok() {
                    spares.ordered.borrow_mut().push_back(spare);
                    continue;
                }
            }
            spares.building.set(spares.building.get() + 1);
            let spares = Rc::clone(spares);
            let host = Arc::clone(&self.host);
            tokio::task::spawn_local(async move {
                let spare = Isolate::spare(host).await;
                spares.building.set(spares.building.get().saturating_sub(1));
                if let Some(spare) = spare {
                    spares.ready.borrow_mut().push(spare);
                }
            });
        }
    }

    /// Frees a runtime on the builder thread; here, when there is none, it has stopped, or
    /// it is [`UNFREED`] runtimes behind, as a task of this thread queued behind whatever
    /// called (an answer being written, say).
    fn free(&self, isolate: Isolate) {
        let reserved = self.builder.as_ref().filter(|builder| {
            let count = &builder.unfreed;
            count
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < UNFREED).then_some(n + 1)
                })
                .is_ok()
        });
        let Some(builder) = reserved else {
            drop_later(isolate);
            return;
        };
        if let Err(unsent) = builder.chores.send(Chore::Free(Box::new(Moving(isolate)))) {
            builder.unfreed.fetch_sub(1, Ordering::Relaxed);
            drop_later(unsent);
        }
    }
}

/// Drops `value` in a task of this thread, after the current one yields.
fn drop_later<T: 'static>(value: T) {
    tokio::task::spawn_local(async move { drop(value) });
}

/// Starts a call right here, inside the caller's task, on a runtime of this thread: no queue
/// to go through and no task to wake. The caller is a connection served on this thread; a
/// handler that finishes synchronously has answered when this returns, and one that awaits
/// goes on as a task of the thread.
fn start_here(job: Job, worker: Worker) {
    let mut call = Box::pin(run_job(job, worker));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    if call.as_mut().poll(&mut cx).is_pending() {
        // Polled again, with a real waker, as a task of its own.
        tokio::task::spawn_local(call);
    }
}

/// Runs one call on its runtime (creating the runtime if needed) and replies.
async fn run_job(job: Job, worker: Worker) {
    let id = job.lease.runtime;
    let started = Instant::now();

    let existing = worker.isolates.borrow_mut().remove(&id);
    let existing = existing.filter(|isolate| isolate.key() == RuntimeKey::of(&job.program));
    let created = match existing {
        Some(isolate) => Ok(isolate),
        None => {
            let spare = worker.take_spare();
            tracing::debug!(runtime.id = id, integration.id = %job.program.integration, spare = spare.is_some(), "creating runtime");
            match spare {
                Some(mut isolate) => isolate.bind(&job.program).map(|()| isolate),
                None => Isolate::new(&job.program, Arc::clone(&worker.host)),
            }
        }
    };
    match created {
        Ok(isolate) => run_call(isolate, job, started, &worker).await,
        Err(error) => {
            job.lease.release(false);
            let _ = job.reply.send(failed(error, started));
        }
    }
}

/// Runs the call, answers, and gives the runtime back (or drops it, and with
/// [`Isolation::Invocation`] builds its successor).
async fn run_call(mut isolate: Isolate, job: Job, started: Instant, worker: &Worker) {
    let Job {
        lease,
        program,
        request,
        reply,
    } = job;
    let id = lease.runtime;
    let mut outcome = isolate.invoke(&request).await;
    outcome.invocation.duration = started.elapsed();

    if !outcome.healthy {
        lease.release(false);
        tracing::debug!(
            runtime.id = id,
            "discarded runtime after a failed invocation"
        );
        let _ = reply.send(outcome.invocation);
        worker.free(isolate);
        return;
    }
    if isolate.key().isolation == Isolation::Warm {
        let evicted = if lease.release(true) {
            worker.isolates.borrow_mut().insert(id, isolate);
            None
        } else {
            Some(isolate)
        };
        // The caller may have gone away; then nobody wants the answer.
        let _ = reply.send(outcome.invocation);
        if let Some(isolate) = evicted {
            // Its integration was evicted or redeployed while it ran.
            worker.free(isolate);
        }
        return;
    }

    // A fresh runtime per call: the answer goes first, then this runtime is freed whole, with
    // everything the call left in it, and the next call gets a spare with its stage ready.
    // Both happen on the builder thread when there is one; the caller may be a connection on
    // this thread, and as a task queued behind it the rest starts once it has sent the answer.
    let _ = reply.send(outcome.invocation);
    worker.free(isolate);
    let worker = worker.clone();
    tokio::task::spawn_local(async move {
        let next = match worker.take_spare() {
            Some(spare) => Some(spare),
            None => Isolate::spare(Arc::clone(&worker.host)).await,
        };
        let next = next.and_then(|mut next| next.bind(&program).ok().map(|()| next));
        // Without one, the next call builds its own runtime, and reports why it cannot.
        let Some(next) = next else {
            lease.release(false);
            return;
        };
        if lease.release(true) {
            worker.isolates.borrow_mut().insert(id, next);
        } else {
            worker.free(next);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Engine>();
    }

    fn program() -> Program {
        Program {
            integration: "app".to_owned(),
            version: 1,
            bytecode: Arc::new(Vec::new()),
            limits: crate::Limits::default(),
            isolation: Isolation::Warm,
        }
    }

    /// A registry of two live workers.
    fn two_workers(max_runtimes_per_integration: usize) -> Arc<Registry> {
        let registry = Arc::new(Registry::new(EngineConfig {
            workers: 2,
            max_runtimes_per_integration,
            idle_timeout: Duration::from_secs(60),
        }));
        registry.lock().per_worker = vec![0, 0];
        registry
    }

    /// Checks a runtime out for a call made on worker `local` (or off the workers).
    fn take(registry: &Arc<Registry>, local: Option<usize>) -> (Lease, Vec<(usize, RuntimeId)>) {
        let Ok(permit) = registry.semaphore("app").try_acquire_owned() else {
            panic!("no permit left");
        };
        Registry::checkout(registry, &program(), permit, &[true, true], local)
    }

    /// Checks a runtime out and straight back in, as a finished call does.
    fn call(registry: &Arc<Registry>, local: Option<usize>) -> usize {
        let (lease, stale) = take(registry, local);
        assert!(stale.is_empty());
        let worker = lease.worker;
        assert!(lease.release(true));
        worker
    }

    #[test]
    fn calls_from_a_worker_thread_use_runtimes_on_that_thread() {
        let registry = two_workers(2);

        // From outside the workers: the least loaded one, then its idle runtime again.
        assert_eq!(call(&registry, None), 0);
        assert_eq!(call(&registry, None), 0);
        // From worker 1: a runtime of its own rather than worker 0's idle one...
        assert_eq!(call(&registry, Some(1)), 1);
        assert_eq!(call(&registry, Some(1)), 1);
        assert_eq!(call(&registry, Some(0)), 0);
        assert_eq!(registry.lock().per_worker, vec![1, 1]);

        // ...but at the cap, another thread's idle runtime instead of waiting.
        let (held, _) = take(&registry, Some(1));
        assert_eq!(held.worker, 1);
        assert_eq!(call(&registry, Some(1)), 0);
        drop(held);
    }

    #[test]
    fn a_thread_without_a_runtime_gets_one_at_the_cap() {
        let registry = two_workers(2);

        // Two calls at once on worker 0 take the whole cap there.
        let (first, _) = take(&registry, Some(0));
        let (second, _) = take(&registry, Some(0));
        assert_eq!((first.worker, second.worker), (0, 0));
        assert!(first.release(true) && second.release(true));

        // Worker 1 has none: one of worker 0's idle runtimes makes room for its own.
        let (own, stale) = take(&registry, Some(1));
        assert_eq!(own.worker, 1);
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].0, 0);
        assert!(own.release(true));
        assert_eq!(registry.lock().per_worker, vec![1, 1]);
        assert_eq!(call(&registry, Some(1)), 1);
        assert_eq!(call(&registry, Some(0)), 0);
    }

    /// A host whose every operation fails: enough for code that makes no host calls.
    struct NoHost;

    impl Host for NoHost {
        fn token(
            &self,
            _: crate::TokenRequest,
        ) -> futures::future::BoxFuture<'static, Result<String, crate::HostError>> {
            Box::pin(std::future::ready(Err(unreachable_host())))
        }

        fn fetch(
            &self,
            _: crate::FetchRequest,
        ) -> futures::future::BoxFuture<'static, Result<crate::FetchResponse, crate::HostError>>
        {
            Box::pin(std::future::ready(Err(unreachable_host())))
        }
    }

    fn unreachable_host() -> crate::HostError {
        crate::HostError {
            code: "unreachable".into(),
            message: "no host in this test".into(),
        }
    }

    /// Runs the work `start` begins to completion on a thread of its own, as a worker or the
    /// builder would.
    fn on_thread<T, W>(start: impl FnOnce() -> W + Send + 'static) -> T
    where
        T: Send + 'static,
        W: Future<Output = T>,
    {
        let thread = std::thread::Builder::new()
            .stack_size(WORKER_STACK_BYTES)
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                runtime.block_on(start())
            })
            .expect("thread");
        thread.join().expect("the thread panicked")
    }

    fn get(path: &str) -> Request {
        Request {
            kind: crate::RequestKind::Http,
            method: "GET".into(),
            path: path.into(),
            query: String::new(),
            headers: Vec::new(),
            body: bytes::Bytes::new(),
        }
    }

    #[test]
    fn a_runtime_built_on_one_thread_serves_calls_on_another() {
        let source = "import { Integration } from 'splice';\n\
                      const integration = new Integration();\n\
                      const down = (n) => down(n + 1) + 1;\n\
                      integration.router.get('/ok', (ctx) => { ctx.body = 'ok'; });\n\
                      integration.router.get('/deep', (ctx) => { ctx.body = down(0); });\n\
                      export default integration;\n";
        let files = [("integration.js".to_owned(), source.to_owned())].into();
        let program = Program {
            bytecode: Arc::new(crate::compile(&files).expect("compiles")),
            ..program()
        };

        // Built the way the builder thread builds spares, on a thread that stays alive (so the
        // next one cannot reuse its stack)...
        let (send_spare, spare) = std::sync::mpsc::channel();
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let builder = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("tokio runtime");
            let spare = runtime.block_on(Isolate::spare(Arc::new(NoHost)));
            let _ = send_spare.send(spare.map(Moving));
            let _ = wait.recv();
        });
        let Ok(Some(spare)) = spare.recv() else {
            panic!("no spare runtime was built");
        };
        // ...then bound and called on another thread, and freed on a third (this one).
        let (calls, used) = on_thread(move || async move {
            // Taken whole: a closure using only the field would capture just the isolate.
            let spare = spare;
            let Moving(mut isolate) = spare;
            isolate.bind(&program).expect("binds");
            let ok = isolate.invoke(&get("/ok")).await;
            let deep = isolate.invoke(&get("/deep")).await;
            let again = isolate.invoke(&get("/ok")).await;
            let results = [ok, deep, again].map(|outcome| outcome.invocation.result);
            (results, Moving(isolate))
        });
        drop(used);
        drop(done);
        builder.join().expect("the builder thread panicked");

        let [ok, deep, again] = calls;
        assert_eq!(ok.map(|r| r.body), Ok(bytes::Bytes::from_static(b"ok")));
        // QuickJS's stack limit follows the thread that runs the code: recursion is caught
        // on the second thread's stack, not measured against the first one's.
        assert_eq!(deep, Err(InvokeError::StackOverflow));
        assert_eq!(again.map(|r| r.status), Ok(200));
    }

    #[tokio::test]
    async fn runtimes_wait_to_be_freed_off_the_thread_only_up_to_a_bound() {
        tokio::task::LocalSet::new()
            .run_until(free_past_the_bound())
            .await;
    }

    async fn free_past_the_bound() {
        // A builder that never gets round to its chores.
        let (chores, mut inbox) = mpsc::unbounded_channel();
        let builder = Builder {
            chores,
            unfreed: Arc::new(AtomicUsize::new(0)),
        };
        let worker = Worker {
            isolates: Rc::default(),
            spares: Rc::default(),
            host: Arc::new(NoHost),
            builder: Some(builder.clone()),
        };

        for _ in 0..UNFREED + 3 {
            let isolate = Isolate::spare(Arc::new(NoHost)).await.expect("a runtime");
            worker.free(isolate);
        }

        // The rest were freed in place.
        assert_eq!(builder.unfreed.load(Ordering::Relaxed), UNFREED);
        let mut queued = 0;
        while let Ok(chore) = inbox.try_recv() {
            assert!(matches!(chore, Chore::Free(_)));
            queued += 1;
        }
        assert_eq!(queued, UNFREED);
    }

    #[test]
    fn new_runtimes_go_to_the_least_loaded_live_worker() {
        assert_eq!(least_loaded(&[3, 1, 2], &[true, true, true]), 1);
        assert_eq!(least_loaded(&[3, 1, 2], &[true, false, true]), 2);
        assert_eq!(least_loaded(&[], &[]), 0);
    }
}
