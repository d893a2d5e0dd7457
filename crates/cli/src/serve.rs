//! `splice serve`: prepares the data directory, keys and database, then runs the server
//! until SIGTERM or Ctrl-C.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use splice_catalog::Catalog;
use splice_crypto::{Cipher, MasterKey, random_token, sha256_hex};
use splice_oauth::Lifecycle;
use splice_sandbox::EngineConfig;
use splice_server::{AppState, ServerConfig};
use splice_store::SqlStore;

use crate::config::Config;

const KEY_FILE: &str = "master.key";
const ADMIN_KEY_META: &str = "admin_key_sha256";

pub fn init_tracing(filter: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .with_context(|| format!("invalid configuration: log filter {filter:?}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    Ok(())
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let master_key = master_key(&config, true)?;

    let store = open_store(&config, &master_key).await?;
    let admin_key_hash = admin_key_hash(&config, &store).await?;

    let server_config = ServerConfig {
        listen: config.listen,
        public_url: config.public_url()?,
        admin_key_hash,
        lifecycle: Lifecycle {
            margin: Duration::from_secs(config.refresh_margin_secs),
            dead_after_days: config.dead_after_days,
            idle_refresh: Duration::from_secs(config.idle_refresh_secs),
            ..Lifecycle::default()
        },
        sweep_interval: Duration::from_secs(config.sweep_interval_secs),
        session_ttl: Duration::from_secs(config.session_ttl_secs),
        shutdown_grace: Duration::from_secs(config.shutdown_grace_secs),
        sandbox: sandbox_config(&config),
        queue_workers: config.queue_workers,
        queue_poll: Duration::from_millis(config.queue_poll_ms),
        queue_lease: Duration::from_secs(config.queue_lease_secs),
        queue_max_running: (config.queue_max_running_per_integration > 0)
            .then_some(config.queue_max_running_per_integration),
        task_wall: Duration::from_secs(config.task_wall_secs),
        task_retention: Duration::from_secs(config.task_retention_secs),
        catalog: Arc::new(
            Catalog::load(config.providers_dir.as_deref())
                .context("invalid configuration: providers_dir")?,
        ),
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let state = AppState::new(&server_config, Arc::new(store.clone()));

    tracing::info!(
        listen = %config.listen,
        public_url = %server_config.public_url,
        startup_ms = started.elapsed().as_millis() as u64,
        "splice is ready"
    );
    splice_server::serve(
        listener,
        state,
        shutdown_signal(),
        server_config.shutdown_grace,
    )
    .await?;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Opens the configured database (migrating it, and checking the master key against it).
pub async fn open_store(config: &Config, master_key: &MasterKey) -> anyhow::Result<SqlStore> {
    let url = config.database_url();
    SqlStore::open(&url, Cipher::new(master_key), &config.pool_settings())
        .await
        .with_context(|| format!("opening database {}", redact_url(&url)))
}

/// A database URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

fn sandbox_config(config: &Config) -> EngineConfig {
    let mut sandbox = EngineConfig::default();
    if let Some(workers) = config.sandbox_workers {
        sandbox.workers = workers;
    }
    sandbox.max_runtimes_per_integration = config.sandbox_runtimes_per_integration;
    sandbox
}

/// The master key from configuration, or from the key file, generated on first start.
pub fn master_key(config: &Config, create: bool) -> anyhow::Result<MasterKey> {
    if let Some(encoded) = &config.master_key {
        return MasterKey::from_base64(encoded)
            .context("invalid configuration: master_key must be 32 bytes of base64");
    }
    let path = config.data_dir.join(KEY_FILE);
    if path.exists() {
        let encoded = std::fs::read_to_string(&path)
            .with_context(|| format!("reading master key file {}", path.display()))?;
        return MasterKey::from_base64(&encoded).with_context(|| {
            format!(
                "master key file {} is not 32 bytes of base64",
                path.display()
            )
        });
    }
    anyhow::ensure!(
        create,
        "no master key: set SPLICE_MASTER_KEY or point --data-dir at the directory holding {KEY_FILE}"
    );
    let key = MasterKey::generate();
    write_private(&path, &key.to_base64())?;
    tracing::info!(path = %path.display(), "generated a new master key; back it up with the database");
    Ok(key)
}

/// Creates a file readable only by its owner (mode 0600); never overwrites one.
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// The admin key's digest: from `SPLICE_ADMIN_KEY`, else the stored one, else a new key
/// printed once.
async fn admin_key_hash(config: &Config, store: &SqlStore) -> anyhow::Result<String> {
    if let Some(key) = &config.admin_key {
        anyhow::ensure!(
            key.len() >= 16,
            "invalid configuration: admin_key must be at least 16 characters"
        );
        return Ok(sha256_hex(key));
    }
    if let Some(stored) = store.get_meta(ADMIN_KEY_META).await? {
        return String::from_utf8(stored).context("stored admin key digest is not text");
    }
    let key = format!("sk_{}", random_token(32));
    let digest = sha256_hex(&key);
    if store
        .put_meta_if_absent(ADMIN_KEY_META, digest.as_bytes())
        .await?
    {
        // Printed once, on stdout rather than in the log stream.
        println!("Generated admin API key (shown only once; keep it safe):\n\n    {key}\n");
        return Ok(digest);
    }
    // Another process stored one first.
    let stored = store
        .get_meta(ADMIN_KEY_META)
        .await?
        .context("admin key digest vanished")?;
    String::from_utf8(stored).context("stored admin key digest is not text")
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://splice:hunter2@db:5432/splice"),
            "postgres://splice:***@db:5432/splice"
        );
        assert_eq!(
            redact_url("sqlite:///var/lib/splice.db"),
            "sqlite:///var/lib/splice.db"
        );
    }

    #[test]
    fn key_file_is_private_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        write_private(&path, "one").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(write_private(&path, "two").is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one");
    }
}
