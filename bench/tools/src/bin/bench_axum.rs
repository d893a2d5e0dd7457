//! The ceiling of the benchmark suite: a bare axum server answering `ok` on
//! `/v1/integrations/{id}/api/{*path}`, the same route shape Splice serves, with nothing else.
//!
//! Usage: `bench-axum 127.0.0.1:9001`.

use axum::Router;
use axum::routing::any;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".to_owned());
    let app = Router::new()
        .route("/v1/integrations/{id}/api/{*path}", any(ok))
        .route("/health", any(ok));
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    eprintln!("bench-axum listening on {listen}");
    axum::serve(listener, app).await
}

async fn ok() -> &'static str {
    "ok"
}
