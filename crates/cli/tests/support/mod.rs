//! Harness for the end-to-end tests: a running Splice binary ([`app::TestApp`]), a real OpenID
//! Connect provider ([`oidc::OidcProvider`]), a cookie-keeping HTTP client that clicks
//! through the provider's login and consent pages ([`browser::Browser`]), and the providers'
//! own webhook signing libraries ([`signers`]).
//!
//! Everything here talks to loopback addresses only. Apart from "it started" and the shared
//! error-envelope checks in [`api`], assertions about Splice's behaviour live in the tests.

#![allow(dead_code, reason = "each test uses a different subset of the helpers")]

pub mod api;
pub mod app;
pub mod browser;
pub mod oidc;
pub mod receiver;
pub mod signers;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Returns a port on 127.0.0.1 that was free a moment ago.
///
/// The port is released before returning, so another process could take it first; that race
/// is accepted because Splice must be told its port before it starts.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind an ephemeral port");
    listener
        .local_addr()
        .expect("read the ephemeral port")
        .port()
}

/// Returns `len` random lowercase hex characters, unique enough to grep for in logs and files.
pub fn random_hex(len: usize) -> String {
    let mut out = String::with_capacity(len);
    while out.len() < len {
        // Each RandomState is seeded from the OS; mixing in the clock keeps values distinct
        // even where the per-thread seed is only incremented.
        let mut hasher = RandomState::new().build_hasher();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        hasher.write_u128(nanos.as_nanos());
        hasher.write_usize(out.len());
        out.push_str(&format!("{:016x}", hasher.finish()));
    }
    out.truncate(len);
    out
}

/// Bytes written by a child process to stdout and stderr, interleaved as they arrived.
#[derive(Clone, Default)]
pub struct Output(Arc<Mutex<Vec<u8>>>);

impl Output {
    /// Copies everything `stream` yields into this buffer on a background thread.
    pub fn capture(&self, mut stream: impl Read + Send + 'static) {
        let buffer = Arc::clone(&self.0);
        std::thread::spawn(move || {
            let mut chunk = [0_u8; 8192];
            while let Ok(read @ 1..) = stream.read(&mut chunk) {
                lock(&buffer).extend_from_slice(&chunk[..read]);
            }
        });
    }

    /// Everything captured so far, decoded lossily.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&lock(&self.0)).into_owned()
    }

    /// Everything captured so far, as raw bytes.
    pub fn bytes(&self) -> Vec<u8> {
        lock(&self.0).clone()
    }
}

/// Locks a mutex even if a panicking test thread poisoned it; the data is only bytes.
pub fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether `needle` occurs anywhere in `haystack`.
pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

/// Every regular file under `dir`, recursively, with its contents.
pub fn read_tree(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let entries = std::fs::read_dir(&current)
            .unwrap_or_else(|err| panic!("list {}: {err}", current.display()));
        for entry in entries {
            let path = entry.expect("read a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                // A file can vanish between listing and reading (SQLite's -shm, -journal).
                files.push((path, bytes));
            }
        }
    }
    files
}

/// A fresh, empty PostgreSQL database under `SPLICE_TEST_DATABASE_URL`, or `None` (with a
/// note on stderr) when no server is configured for tests.
pub async fn fresh_postgres_database() -> Option<String> {
    use sqlx::Connection;
    let Ok(admin) = std::env::var("SPLICE_TEST_DATABASE_URL") else {
        eprintln!("SPLICE_TEST_DATABASE_URL is not set; skipping a PostgreSQL test");
        return None;
    };
    let name = format!("splice_e2e_{}", random_hex(16));
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("connect to SPLICE_TEST_DATABASE_URL");
    sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create a test database");
    let base = admin.rsplit_once('/').expect("database URL has a path").0;
    Some(format!("{base}/{name}"))
}
