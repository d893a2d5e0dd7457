//! Splice's HTTP server: the `/v1` API, the hosted connect flow, and the bridge that runs
//! integration code with access to connectors.
//!
//! Handlers are grouped by resource under [`handlers`] and wired in [`router`]. They reach
//! storage only through `splice_store` traits, tokens only through `splice_oauth`, and code
//! only through `splice_sandbox`.

mod auth;
mod batch;
mod credentials;
mod error;
mod extract;
mod handlers;
mod host;
mod outbound;
mod programs;
mod recent;
mod recorder;
mod scheduler;
mod views;
mod worker;

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get, post};
use splice_catalog::Catalog;
use splice_oauth::{Lifecycle, OAuthClient, TokenManager};
use splice_sandbox::{Engine, EngineConfig};
use splice_store::Store;
use url::Url;

pub use error::ApiError;

/// Largest request body accepted (deploys carry source files).
pub(crate) const BODY_LIMIT: usize = 8 << 20;

/// Everything the server needs to know, already validated.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Externally visible base URL, without a trailing slash.
    pub public_url: Url,
    /// SHA-256 (hex) of the admin API key.
    pub admin_key_hash: String,
    /// Token refresh margin, backoff, dead-after-days and idle refresh.
    pub lifecycle: Lifecycle,
    /// How often the token sweep runs on this node.
    pub sweep_interval: Duration,
    /// How long a connect session stays usable.
    pub session_ttl: Duration,
    /// How long in-flight requests may take to finish after a shutdown signal.
    pub shutdown_grace: Duration,
    pub sandbox: EngineConfig,
    /// The provider catalog: built-in entries plus any from a configured folder.
    pub catalog: Arc<Catalog>,
    /// Workers on this node running queued jobs.
    pub queue_workers: usize,
    /// How often idle workers look for jobs nobody announced.
    pub queue_poll: Duration,
    /// How long a claimed job stays with its worker without a heartbeat: after a crash, the
    /// job runs again once this has passed.
    pub queue_lease: Duration,
    /// Jobs of one partition (integration, connector intake, webhook) running at once.
    pub queue_max_running: Option<u32>,
    /// Wall-time limit of one background task run.
    pub task_wall: Duration,
    /// How long finished jobs (task results, dead letters) are kept.
    pub task_retention: Duration,
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub store: Arc<dyn Store>,
    pub tokens: Arc<TokenManager>,
    pub oauth: OAuthClient,
    pub credentials: credentials::Credentials,
    pub outbound: outbound::Outbound,
    pub engine: Arc<Engine>,
    pub programs: programs::ProgramCache,
    pub recorder: recorder::Recorder,
    pub public_url: Url,
    pub admin_key_hash: String,
    pub session_ttl: Duration,
    /// Wakes workers when jobs are enqueued.
    pub jobs: Arc<worker::JobSignals>,
    /// Writes concurrently enqueued jobs (webhook intake, tasks) in batches.
    pub enqueuer: batch::Enqueuer,
    /// Records the outcomes of jobs that finish together in batches.
    pub outcomes: batch::Batcher<worker::OutcomeWrites>,
    /// Tokens recently handed to integration code; cleared when this node changes
    /// connectors, identities or installs.
    pub token_cache: Arc<host::TokenCache>,
    /// Connectors' webhook verifiers, recently read; cleared when this node changes connectors.
    pub webhook_verifiers: handlers::webhooks::Verifiers,
    /// The integrations using each connector, recently read, for webhooks no install matched;
    /// cleared when an integration is deployed or deleted (here, or announced by another node).
    pub connector_users: worker::ConnectorUsers,
    pub task_wall: Duration,
    pub task_retention: Duration,
    pub queue_poll: Duration,
    pub queue_lease: Duration,
    pub queue_max_running: Option<u32>,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Builds the state and starts its background tasks on the current tokio runtime.
    pub fn new(config: &ServerConfig, store: Arc<dyn Store>) -> Self {
        let http = outbound_client();
        let oauth = OAuthClient::new(http.clone());
        let credentials = credentials::Credentials::new(config.catalog.clone());
        let endpoints = Arc::new(credentials.clone());
        let tokens = Arc::new(TokenManager::new(
            store.clone(),
            oauth.clone(),
            endpoints,
            config.lifecycle,
        ));
        spawn_sweep(tokens.clone(), config.sweep_interval);
        let outbound = outbound::Outbound::new(http, tokens.clone(), credentials.clone());
        let programs = programs::ProgramCache::default();
        let jobs = Arc::new(worker::JobSignals::default());
        let token_cache = Arc::new(host::TokenCache::default());
        let enqueuer = batch::Batcher::start(batch::JobWrites(store.clone()));
        let outcomes = batch::Batcher::start(worker::OutcomeWrites(store.clone()));
        let host = host::SpliceHost::new(
            store.clone(),
            programs.clone(),
            credentials.clone(),
            outbound.clone(),
            jobs.clone(),
            enqueuer.clone(),
            token_cache.clone(),
        );
        let engine = Arc::new(Engine::new(config.sandbox.clone(), Arc::new(host)));
        let recorder = recorder::Recorder::start(store.clone());
        let state = Self(Arc::new(Inner {
            store,
            tokens,
            oauth,
            credentials,
            outbound,
            engine,
            programs,
            recorder,
            public_url: config.public_url.clone(),
            admin_key_hash: config.admin_key_hash.clone(),
            session_ttl: config.session_ttl,
            jobs,
            token_cache,
            enqueuer,
            outcomes,
            webhook_verifiers: recent::Recent::new(handlers::webhooks::VERIFIER_TTL),
            connector_users: recent::Recent::new(worker::CONNECTOR_USERS_TTL),
            task_wall: config.task_wall,
            task_retention: config.task_retention,
            queue_poll: config.queue_poll,
            queue_lease: config.queue_lease,
            queue_max_running: config.queue_max_running,
        }));
        worker::spawn_workers(state.clone(), config.queue_workers);
        worker::spawn_announcements(state.clone());
        scheduler::spawn_scheduler(state.clone());
        worker::spawn_dispatcher(state.clone());
        state
    }

    /// Wakes workers after jobs were committed (see [`worker::JobSignals::enqueued`]).
    pub fn jobs_enqueued(&self) {
        self.jobs.enqueued();
    }

    /// The one redirect URI to register with every provider.
    pub fn callback_url(&self) -> String {
        format!("{}/v1/oauth/callback", self.public_base())
    }

    /// The public URL without a trailing slash.
    pub fn public_base(&self) -> &str {
        self.public_url.as_str().trim_end_matches('/')
    }
}

/// Refreshes expiring and idle identities in the background. Every node sweeps; the
/// cross-node refresh guard and version checks make overlapping sweeps harmless.
fn spawn_sweep(tokens: Arc<TokenManager>, interval: Duration) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match tokens.sweep(interval).await {
                Ok(report) if report.checked > 0 => {
                    tracing::info!(
                        checked = report.checked,
                        failed = report.failed,
                        "token sweep"
                    );
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "token sweep failed"),
            }
        }
    });
}

fn outbound_client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("splice/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default()
}

/// All routes: public ones first, then the key-protected `/v1` API.
pub fn router(state: AppState) -> Router {
    use handlers::*;

    let api = Router::new()
        .route(
            "/v1/connectors",
            post(connectors::create_connector).get(connectors::list_connectors),
        )
        .route(
            "/v1/connectors/{id}",
            get(connectors::get_connector)
                .put(connectors::update_connector)
                .delete(connectors::delete_connector),
        )
        .route(
            "/v1/connectors/{id}/identities",
            get(identities::list_identities),
        )
        .route(
            "/v1/connectors/{id}/identities/{identity}",
            get(identities::get_identity).delete(identities::delete_identity),
        )
        .route(
            "/v1/connectors/{id}/identities/{identity}/token",
            get(identities::get_token),
        )
        .route("/v1/integrations", get(integrations::list_integrations))
        .route(
            "/v1/integrations/{id}",
            get(integrations::get_integration)
                .put(integrations::deploy_integration)
                .delete(integrations::delete_integration),
        )
        .route("/v1/integrations/{id}/logs", get(integrations::list_logs))
        .route("/v1/integrations/{id}/api", any(invoke::invoke_integration))
        .route(
            "/v1/integrations/{id}/api/{*path}",
            any(invoke::invoke_integration),
        )
        .route(
            "/v1/integrations/{id}/sessions",
            post(sessions::create_session),
        )
        .route(
            "/v1/integrations/{id}/installs",
            get(installs::list_installs),
        )
        .route(
            "/v1/integrations/{id}/installs/{install}",
            get(installs::get_install).delete(installs::delete_install),
        )
        .route("/v1/events", get(events::list_events))
        .route(
            "/v1/integrations/{id}/tasks/{name}",
            post(tasks::start_task),
        )
        .route("/v1/tasks/{id}", get(tasks::get_task))
        .route(
            "/v1/webhooks",
            post(subscriptions::create_webhook).get(subscriptions::list_webhooks),
        )
        .route(
            "/v1/webhooks/{id}",
            get(subscriptions::get_webhook).delete(subscriptions::delete_webhook),
        )
        .route(
            "/v1/webhooks/{id}/deliveries",
            get(subscriptions::list_deliveries),
        )
        .route("/v1/connectors/{id}/hooks", post(webhooks::open_hook))
        .route("/v1/jobs", get(tasks::list_jobs))
        .route("/v1/jobs/{id}", get(tasks::get_task))
        .route("/v1/jobs/{id}/replay", post(tasks::replay_job))
        .route("/v1/providers", get(providers::list_providers))
        .route("/v1/providers/{name}", get(providers::get_provider))
        .route(
            "/v1/connectors/{id}/identities/{identity}/proxy/{*path}",
            any(identities::proxy),
        )
        .route("/v1/sessions/{id}", get(sessions::get_session))
        .route("/v1/sessions/{id}/commit", post(sessions::commit_session))
        .fallback(health::unknown_route)
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ));

    let app = Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route(
            "/connect/{session}",
            get(connect::start_connect).post(connect::submit_connect),
        )
        .route("/v1/oauth/callback", get(connect::oauth_callback))
        .route(
            "/v1/connectors/{id}/webhook",
            post(webhooks::receive_webhook),
        )
        .merge(api)
        .fallback(health::unknown_route)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(error::json_errors))
        .with_state(state);

    // A span per request costs about 1.7 µs of CPU even when nothing records it, so it is
    // only there when the log level records it. 5xx answers are logged by `json_errors`.
    if !tracing::enabled!(tracing::Level::INFO) {
        return app;
    }
    let trace = tower_http::trace::TraceLayer::new_for_http()
        .make_span_with(|request: &axum::http::Request<_>| {
            // The path only: query strings carry OAuth codes and states.
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path())
        })
        .on_failure(());
    app.layer(trace)
}

/// Serves until `shutdown` resolves, then lets in-flight requests and running jobs finish
/// within the grace period and flushes the invocation log.
///
/// HTTP is served on the sandbox's worker threads, which are dealt the accepted connections
/// in turn: a call to an integration whose runtime lives on the thread that parsed the
/// request runs there, without waking another thread. Without worker threads it is served
/// on the caller's runtime.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let app = router(state.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(None::<tokio::time::Instant>);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(Some(tokio::time::Instant::now()));
    });

    let servers = spawn_servers(listener, app, &state.engine, &stop_rx)?;
    let mut stop_rx_wait = stop_rx.clone();
    let bounded = async move {
        // After the signal, give in-flight requests `grace` to finish.
        let _ = stop_rx_wait.wait_for(Option::is_some).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        results = futures::future::join_all(servers) => {
            for result in results {
                result.unwrap_or_else(|_| Err(std::io::Error::other("HTTP server thread stopped")))?;
            }
        }
        () = bounded => tracing::warn!("shutdown grace period elapsed with requests in flight"),
    }
    let signalled = (*stop_rx.borrow()).unwrap_or_else(tokio::time::Instant::now);
    let left = (signalled + grace).saturating_duration_since(tokio::time::Instant::now());
    worker::stop_workers(&state, left).await;
    state.recorder.flush().await;
    Ok(())
}

type Stopped = tokio::sync::oneshot::Receiver<std::io::Result<()>>;
type Stop = tokio::sync::watch::Receiver<Option<tokio::time::Instant>>;

/// Starts one HTTP server per sandbox worker thread and an acceptor that deals the
/// listener's connections out to them in turn; each server stops when `stop` is set. The
/// receivers answer when each server has finished its connections.
fn spawn_servers(
    listener: tokio::net::TcpListener,
    app: Router,
    engine: &Engine,
    stop: &Stop,
) -> std::io::Result<Vec<Stopped>> {
    let mut stopped = Vec::new();
    let mut handoffs = Vec::new();
    for index in 0..engine.workers() {
        let (give, take) = tokio::sync::mpsc::unbounded_channel();
        let (done, finished) = tokio::sync::oneshot::channel();
        let server = serve_dealt(take, app.clone(), stop.clone());
        let task = async move {
            server.await;
            let _ = done.send(Ok(()));
        };
        if engine.run_on_worker(index, task) {
            handoffs.push(give);
            stopped.push(finished);
        }
    }

    if handoffs.is_empty() {
        let (done, finished) = tokio::sync::oneshot::channel();
        let server = serve_http(listener, app, stop.clone());
        tokio::spawn(async move {
            let _ = done.send(server.await);
        });
        return Ok(vec![finished]);
    }
    tokio::spawn(deal_connections(listener, handoffs, stop.clone()));
    Ok(stopped)
}

/// Accepts connections until `stop` is set and hands each to the next server thread.
async fn deal_connections(
    listener: tokio::net::TcpListener,
    handoffs: Vec<tokio::sync::mpsc::UnboundedSender<Accepted>>,
    mut stop: Stop,
) {
    let mut next = 0;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(Option::is_some) => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!(%error, "could not accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "could not hand over a connection");
                continue;
            }
        };
        let mut connection = Some((stream, peer));
        for _ in 0..handoffs.len() {
            let Some(handoff) = handoffs.get(next % handoffs.len()) else {
                break;
            };
            next += 1;
            match connection.take().map(|c| handoff.send(c)) {
                Some(Err(refused)) => connection = Some(refused.0),
                _ => break,
            }
        }
    }
}

type Accepted = (std::net::TcpStream, SocketAddr);

/// Serves the connections dealt to this thread until `stop` is set, then lets open ones
/// finish. Each connection is a task of the thread's local set, so handing a call to a
/// runtime on this thread and getting its answer back wakes nothing outside the thread.
async fn serve_dealt(
    mut dealt: tokio::sync::mpsc::UnboundedReceiver<Accepted>,
    app: Router,
    mut stop: Stop,
) {
    // Every connection holds a receiver; the sender is closed once all of them are gone.
    let (tracker, untracked) = tokio::sync::watch::channel(());
    loop {
        let accepted = tokio::select! {
            accepted = dealt.recv() => accepted,
            () = stopped(&mut stop) => break,
        };
        let Some((stream, peer)) = accepted else {
            stopped(&mut stop).await;
            break;
        };
        // Registers the connection with this thread's runtime.
        let stream = match tokio::net::TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "could not take over a connection");
                continue;
            }
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let io = hyper_util::rt::TokioIo::new(stream);
        let mut stop = stop.clone();
        let held = tracker.subscribe();
        tokio::task::spawn_local(async move {
            let connection =
                hyper::server::conn::http1::Builder::new().serve_connection(io, service);
            let mut connection = std::pin::pin!(connection);
            let finished = tokio::select! {
                finished = connection.as_mut() => finished,
                () = stopped(&mut stop) => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = finished {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
            drop(held);
        });
    }
    drop(untracked);
    tracker.closed().await;
}

/// Resolves once `stop` is set; never, if it no longer can be.
async fn stopped(stop: &mut Stop) {
    if stop.wait_for(Option::is_some).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Serves `app` on `listener` from the current runtime until `stop` is set.
async fn serve_http(
    listener: tokio::net::TcpListener,
    app: Router,
    mut stop: Stop,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { stopped(&mut stop).await })
        .await
}
