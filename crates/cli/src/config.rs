//! Configuration in layers: built-in defaults, then an optional `splice.toml`, then `SPLICE_*`
//! environment variables, then command-line flags. A bad value fails start-up naming its key.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

const DEFAULT_CONFIG_FILE: &str = "splice.toml";

/// Flags of `splice serve`; each overrides the same key from file and environment.
#[derive(clap::Args, Debug, Default, Serialize)]
pub struct ServeFlags {
    /// Configuration file (default: ./splice.toml when it exists; env SPLICE_CONFIG).
    #[arg(long, env = "SPLICE_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8080.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Directory for the database and the generated master key.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Externally visible base URL, used in callback and session URLs.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// Database: sqlite://path or postgres://user:password@host/database.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
}

/// The merged configuration.
#[derive(Debug, Deserialize, Serialize)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Default: `http://<listen>`.
    pub public_url: Option<String>,
    /// Bootstrap admin API key; generated and printed once when unset.
    pub admin_key: Option<String>,
    /// Base64 of 32 bytes; default: `<data_dir>/master.key`, generated on first start.
    pub master_key: Option<String>,
    /// `sqlite://…` or `postgres://…`; default: `<data_dir>/splice.db`.
    pub database_url: Option<String>,
    pub database_pool_size: u32,
    /// PostgreSQL statement timeout; 0 disables it.
    pub database_statement_timeout_ms: u64,
    pub refresh_margin_secs: u64,
    /// Seconds between token sweeps (refreshing expiring and idle identities).
    pub sweep_interval_secs: u64,
    /// Refresh identities whose tokens are older than this, so unused refresh tokens live.
    pub idle_refresh_secs: u64,
    /// An identity whose refreshes failed on this many days is dead.
    pub dead_after_days: i64,
    pub session_ttl_secs: u64,
    pub shutdown_grace_secs: u64,
    /// Worker threads running integration code (default: one per CPU).
    pub sandbox_workers: Option<usize>,
    /// Warm runtimes an integration may have at once (its parallelism).
    pub sandbox_runtimes_per_integration: usize,
    /// Workers on this node running queued jobs; 0 makes a node that only serves requests.
    pub queue_workers: usize,
    /// How often idle workers look for jobs nobody announced, in milliseconds (a fallback:
    /// enqueues wake workers at once, on every node on PostgreSQL).
    pub queue_poll_ms: u64,
    /// How long a claimed job stays with its worker without a heartbeat, in seconds; after a
    /// crash its jobs run again once this has passed.
    pub queue_lease_secs: u64,
    /// At most this many jobs of one integration (or one connector's webhook intake, or one
    /// registered webhook's deliveries) run at once across the cluster; 0: no limit.
    pub queue_max_running_per_integration: u32,
    /// Wall-time limit of one background task run, in seconds.
    pub task_wall_secs: u64,
    /// How long finished jobs (task results, dead letters) are kept, in seconds.
    pub task_retention_secs: u64,
    /// A folder of provider files that add to or replace built-in catalog entries.
    pub providers_dir: Option<PathBuf>,
    /// Tracing filter, e.g. `info` or `splice_server=debug`.
    pub log: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("splice-data"),
            public_url: None,
            admin_key: None,
            master_key: None,
            database_url: None,
            database_pool_size: 16,
            database_statement_timeout_ms: 30_000,
            refresh_margin_secs: 300,
            sweep_interval_secs: 60,
            idle_refresh_secs: 24 * 3600,
            dead_after_days: 5,
            session_ttl_secs: 1800,
            shutdown_grace_secs: 30,
            sandbox_workers: None,
            sandbox_runtimes_per_integration: 4,
            queue_workers: 32,
            queue_poll_ms: 1000,
            queue_lease_secs: 60,
            queue_max_running_per_integration: 0,
            task_wall_secs: 900,
            task_retention_secs: 7 * 24 * 3600,
            providers_dir: None,
            log: "info".into(),
        }
    }
}

impl Config {
    pub fn load(flags: &ServeFlags) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match &flags.config {
            Some(path) if !path.exists() => bail!("config file {} does not exist", path.display()),
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if std::path::Path::new(DEFAULT_CONFIG_FILE).exists() => {
                figment = figment.merge(Toml::file_exact(DEFAULT_CONFIG_FILE));
            }
            None => {}
        }
        let env = Env::prefixed("SPLICE_").ignore(&["config"]).filter(|key| {
            // Variables for other tools (e.g. SPLICE_TEST_*) are not configuration.
            !key.as_str().starts_with("test_")
        });
        let config: Config = figment
            .merge(env)
            .merge(Serialized::defaults(flags))
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if let Some(url) = &self.public_url {
            let parsed = url::Url::parse(url).context("invalid configuration: public_url")?;
            if !matches!(parsed.scheme(), "http" | "https") {
                bail!("invalid configuration: public_url must be an http(s) URL");
            }
        }
        if let Some(url) = &self.database_url
            && splice_store::Dialect::of(url).is_none()
        {
            bail!("invalid configuration: database_url must start with sqlite:// or postgres://");
        }
        let minimums = [
            ("task_wall_secs", self.task_wall_secs, 1),
            ("queue_poll_ms", self.queue_poll_ms, 1),
            ("queue_lease_secs", self.queue_lease_secs, 3),
            ("session_ttl_secs", self.session_ttl_secs, 1),
        ];
        for (key, value, least) in minimums {
            if value < least {
                bail!("invalid configuration: {key} must be at least {least} (got {value})");
            }
        }
        if self.queue_workers > 1024 {
            bail!("invalid configuration: queue_workers must be at most 1024");
        }
        if self.sweep_interval_secs == 0 {
            bail!("invalid configuration: sweep_interval_secs must be at least 1");
        }
        if self.dead_after_days < 1 {
            bail!("invalid configuration: dead_after_days must be at least 1");
        }
        if self.database_pool_size == 0 {
            bail!("invalid configuration: database_pool_size must be at least 1");
        }
        if self.sandbox_runtimes_per_integration == 0 {
            bail!("invalid configuration: sandbox_runtimes_per_integration must be at least 1");
        }
        if self.sandbox_workers == Some(0) {
            bail!("invalid configuration: sandbox_workers must be at least 1");
        }
        Ok(())
    }

    /// The database URL, defaulting to the SQLite file in the data directory.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| splice_store::sqlite_url(&self.data_dir.join("splice.db")))
    }

    pub fn pool_settings(&self) -> splice_store::PoolSettings {
        let timeout = self.database_statement_timeout_ms;
        splice_store::PoolSettings {
            max_connections: self.database_pool_size,
            statement_timeout: (timeout > 0).then(|| std::time::Duration::from_millis(timeout)),
        }
    }

    /// The public URL, defaulting to the listen address.
    pub fn public_url(&self) -> anyhow::Result<url::Url> {
        let raw = self
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen));
        url::Url::parse(raw.trim_end_matches('/')).context("invalid configuration: public_url")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[expect(
        clippy::result_large_err,
        reason = "figment::Jail's closure returns figment::Error"
    )]
    fn layers_apply_in_order_and_bad_values_name_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "splice.toml",
                "listen = \"127.0.0.1:9000\"\nlog = \"debug\"\n",
            )?;
            jail.set_env("SPLICE_LOG", "warn");
            jail.set_env("SPLICE_TEST_DATABASE_URL", "ignored");

            let config = Config::load(&ServeFlags::default()).map_err(|e| e.to_string())?;
            assert_eq!(config.listen, "127.0.0.1:9000".parse().unwrap());
            assert_eq!(config.log, "warn");
            assert_eq!(config.refresh_margin_secs, 300);
            assert_eq!(
                config.public_url().unwrap().as_str(),
                "http://127.0.0.1:9000/"
            );

            let flags = ServeFlags {
                listen: Some("127.0.0.1:9100".into()),
                ..Default::default()
            };
            let config = Config::load(&flags).map_err(|e| e.to_string())?;
            assert_eq!(config.listen.port(), 9100);

            jail.set_env("SPLICE_REFRESH_MARGIN_SECS", "soon");
            let err = Config::load(&ServeFlags::default())
                .unwrap_err()
                .to_string();
            assert!(err.to_lowercase().contains("refresh_margin_secs"), "{err}");
            jail.set_env("SPLICE_REFRESH_MARGIN_SECS", "300");

            // Out-of-range values name the one key that is wrong.
            for (key, value, named, fine) in [
                (
                    "SPLICE_QUEUE_LEASE_SECS",
                    "1",
                    "queue_lease_secs must be at least 3",
                    "60",
                ),
                (
                    "SPLICE_QUEUE_POLL_MS",
                    "0",
                    "queue_poll_ms must be at least 1",
                    "1000",
                ),
                (
                    "SPLICE_TASK_WALL_SECS",
                    "0",
                    "task_wall_secs must be at least 1",
                    "900",
                ),
                (
                    "SPLICE_QUEUE_WORKERS",
                    "100000000",
                    "queue_workers must be at most",
                    "16",
                ),
            ] {
                jail.set_env(key, value);
                let err = Config::load(&ServeFlags::default())
                    .unwrap_err()
                    .to_string();
                assert!(err.contains(named), "{key}: {err}");
                jail.set_env(key, fine);
            }
            Ok(())
        });
    }

    #[test]
    fn a_named_config_file_must_exist() {
        let flags = ServeFlags {
            config: Some("/nonexistent/splice.toml".into()),
            ..Default::default()
        };
        let err = Config::load(&flags).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/splice.toml"), "{err}");
    }
}
