//! Micro-benchmarks of one sandbox invocation through `Engine::invoke`: a warm runtime, a
//! fresh runtime per call (`isolation: invocation`), a new runtime (cold start), and a route
//! that asks the host for a connector token. The host answers at once, so only the sandbox
//! and the bridge are measured.
//!
//! Run with `cargo bench -p splice-sandbox --bench invoke`; CI only compiles it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use futures::FutureExt;
use futures::future::BoxFuture;
use splice_sandbox::{
    Engine, EngineConfig, FetchRequest, FetchResponse, Host, HostError, Isolation, Limits, Program,
    Request, TokenRequest, compile,
};

const SOURCE: &str = r#"import { Integration } from "splice";
const integration = new Integration();
integration.router.get("/ok", (ctx) => { ctx.body = "ok"; });
integration.router.get("/token", async (ctx) => {
  const idp = await integration.tenant.connector(ctx, "idp", "acme");
  ctx.body = await idp.token();
});
export default integration;
"#;

/// Answers every token request with the same token and refuses network access.
struct InstantHost;

impl Host for InstantHost {
    fn token(&self, _request: TokenRequest) -> BoxFuture<'static, Result<String, HostError>> {
        futures::future::ready(Ok("bench-token".to_owned())).boxed()
    }

    fn fetch(
        &self,
        _request: FetchRequest,
    ) -> BoxFuture<'static, Result<FetchResponse, HostError>> {
        futures::future::ready(Err(HostError {
            code: "network_error".to_owned(),
            message: "no network in benchmarks".to_owned(),
        }))
        .boxed()
    }
}

fn program(version: i64, isolation: Isolation, bytecode: &Arc<Vec<u8>>) -> Program {
    Program {
        integration: "bench".to_owned(),
        version,
        bytecode: Arc::clone(bytecode),
        limits: Limits::default(),
        isolation,
    }
}

fn get(path: &str) -> Request {
    Request {
        method: "GET".to_owned(),
        path: path.to_owned(),
        query: String::new(),
        headers: vec![("accept".to_owned(), "*/*".to_owned())],
        body: Bytes::new(),
        ..Request::default()
    }
}

fn invoke(c: &mut Criterion) {
    let files = BTreeMap::from([("integration.js".to_owned(), SOURCE.to_owned())]);
    let bytecode = match compile(&files) {
        Ok(bytecode) => Arc::new(bytecode),
        Err(error) => panic!("benchmark program does not compile: {error}"),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => panic!("tokio runtime: {error}"),
    };
    let config = EngineConfig {
        workers: 1,
        max_runtimes_per_integration: 1,
        idle_timeout: Duration::from_secs(600),
    };
    let engine = runtime.block_on(async { Engine::new(config, Arc::new(InstantHost)) });

    let warm = program(1, Isolation::Warm, &bytecode);
    let fresh = program(1, Isolation::Invocation, &bytecode);
    let call = |program: &Program, path: &str| {
        let invocation = runtime.block_on(engine.invoke(program, get(path)));
        assert!(invocation.result.is_ok(), "{:?}", invocation.result);
    };

    let mut group = c.benchmark_group("sandbox_invoke");
    group.bench_function("warm", |b| b.iter(|| call(&warm, "/ok")));
    group.bench_function("warm_token", |b| b.iter(|| call(&warm, "/token")));
    group.bench_function("fresh_context", |b| b.iter(|| call(&fresh, "/ok")));
    let mut version = 1;
    group.bench_function("cold_runtime", |b| {
        b.iter(|| {
            // A new version never reuses a warm runtime: every call builds one from bytecode.
            version += 1;
            call(&program(version, Isolation::Warm, &bytecode), "/ok");
        })
    });
    group.finish();
}

criterion_group!(benches, invoke);
criterion_main!(benches);
