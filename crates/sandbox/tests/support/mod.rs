//! Test helpers: a scripted fake [`Host`] and shortcuts for building programs and requests.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use splice_sandbox::{
    Engine, EngineConfig, FetchRequest, FetchResponse, Host, HostError, Invocation, Isolation,
    Limits, Program, Request, Response, TokenRequest, compile,
};

/// A host whose answers depend on the URL:
/// - `https://api.test/hang` never answers;
/// - `https://api.test/slow` answers after 150 ms and counts calls in flight;
/// - `https://api.test/protected` answers 401 unless the bearer token is `fresh-token`;
/// - `https://api.test/fail` fails with code `network_error`;
/// - anything else echoes the request as JSON.
///
/// Tokens are `stale-token`, or `fresh-token` when a refresh is forced.
#[derive(Default)]
pub struct FakeHost {
    pub fetches: Mutex<Vec<FetchRequest>>,
    pub tokens: Mutex<Vec<TokenRequest>>,
    pub in_flight: Arc<AtomicUsize>,
    pub max_in_flight: Arc<AtomicUsize>,
}

impl Host for FakeHost {
    fn token(&self, request: TokenRequest) -> BoxFuture<'static, Result<String, HostError>> {
        let token = if request.force_refresh {
            "fresh-token"
        } else {
            "stale-token"
        };
        lock(&self.tokens).push(request);
        futures::future::ready(Ok(token.to_owned())).boxed()
    }

    fn fetch(&self, request: FetchRequest) -> BoxFuture<'static, Result<FetchResponse, HostError>> {
        lock(&self.fetches).push(request.clone());
        match request.url.as_str() {
            "https://api.test/hang" => futures::future::pending().boxed(),
            "https://api.test/slow" => self.slow(request),
            "https://api.test/fail" => futures::future::ready(Err(HostError {
                code: "network_error".to_owned(),
                message: "connection refused".to_owned(),
            }))
            .boxed(),
            "https://api.test/protected" => {
                let authorized = header(&request, "authorization") == Some("Bearer fresh-token");
                let (status, body) = if authorized {
                    (200, "secret")
                } else {
                    (401, "no")
                };
                futures::future::ready(Ok(text_response(&request, status, body))).boxed()
            }
            _ => futures::future::ready(Ok(echo(&request))).boxed(),
        }
    }
}

impl FakeHost {
    pub fn fetches(&self) -> Vec<FetchRequest> {
        lock(&self.fetches).clone()
    }

    pub fn tokens(&self) -> Vec<TokenRequest> {
        lock(&self.tokens).clone()
    }

    fn slow(&self, request: FetchRequest) -> BoxFuture<'static, Result<FetchResponse, HostError>> {
        let in_flight = Arc::clone(&self.in_flight);
        let max = Arc::clone(&self.max_in_flight);
        async move {
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(150)).await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok(text_response(&request, 200, "slow"))
        }
        .boxed()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn header<'a>(request: &'a FetchRequest, name: &str) -> Option<&'a str> {
    request
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn text_response(request: &FetchRequest, status: u16, body: &str) -> FetchResponse {
    FetchResponse {
        status,
        status_text: if status == 200 { "OK" } else { "Unauthorized" }.to_owned(),
        url: request.url.clone(),
        headers: vec![("content-type".to_owned(), "text/plain".to_owned())],
        body: Bytes::from(body.to_owned()),
    }
}

fn echo(request: &FetchRequest) -> FetchResponse {
    let body = serde_json::json!({
        "method": request.method,
        "url": request.url,
        "headers": request.headers,
        "body": request.body.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()),
    });
    FetchResponse {
        status: 200,
        status_text: "OK".to_owned(),
        url: request.url.clone(),
        headers: vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("x-multi".to_owned(), "a".to_owned()),
            ("X-Multi".to_owned(), "b".to_owned()),
        ],
        body: Bytes::from(body.to_string()),
    }
}

/// An engine with two workers and at most two runtimes per integration.
pub fn engine(host: &Arc<FakeHost>) -> Engine {
    engine_with(host, 2, Duration::from_secs(60))
}

pub fn engine_with(host: &Arc<FakeHost>, max_runtimes: usize, idle_timeout: Duration) -> Engine {
    let config = EngineConfig {
        workers: 2,
        max_runtimes_per_integration: max_runtimes,
        idle_timeout,
    };
    let host: Arc<dyn Host> = Arc::clone(host) as Arc<dyn Host>;
    Engine::new(config, host)
}

/// Compiles a one-file program.
pub fn program(integration: &str, version: i64, source: &str) -> Program {
    program_files(integration, version, &[("integration.js", source)])
}

pub fn program_files(integration: &str, version: i64, files: &[(&str, &str)]) -> Program {
    let files: BTreeMap<String, String> = files
        .iter()
        .map(|(n, s)| ((*n).to_owned(), (*s).to_owned()))
        .collect();
    let bytecode = compile(&files).unwrap_or_else(|e| panic!("test program does not compile: {e}"));
    Program {
        integration: integration.to_owned(),
        version,
        bytecode: Arc::new(bytecode),
        limits: Limits {
            memory_bytes: 32 << 20,
            cpu_ms: 200,
            wall_ms: 2_000,
        },
        isolation: Isolation::Warm,
    }
}

/// Wraps route definitions in the usual module boilerplate.
pub fn routes(body: &str) -> String {
    format!(
        "import {{ Integration }} from 'splice';\n\
         const integration = new Integration();\n\
         const router = integration.router;\n\
         {body}\n\
         export default integration;\n"
    )
}

pub fn get(path: &str) -> Request {
    request("GET", path, "", &[], "")
}

pub fn request(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Request {
    Request {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        headers: headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
        body: Bytes::from(body.to_owned()),
        ..Request::default()
    }
}

/// The response of a call that must succeed.
pub fn ok(invocation: Invocation) -> Response {
    match invocation.result {
        Ok(response) => response,
        Err(error) => panic!("invocation failed: {error:?}; logs: {:?}", invocation.logs),
    }
}

pub fn json(response: &Response) -> serde_json::Value {
    serde_json::from_slice(&response.body).unwrap_or_else(|e| {
        panic!(
            "body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&response.body)
        )
    })
}

pub fn text(response: &Response) -> String {
    String::from_utf8_lossy(&response.body).into_owned()
}

pub fn header_of<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}
