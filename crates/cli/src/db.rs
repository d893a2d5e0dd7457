//! `splice db …`: database maintenance.

use anyhow::Context;
use splice_crypto::Cipher;
use splice_store::SqlStore;

use crate::config::{Config, ServeFlags};
use crate::serve::{master_key, redact_url};

/// Flags of `splice db copy`.
#[derive(clap::Args, Debug)]
pub struct CopyFlags {
    /// The database to read, e.g. sqlite://splice-data/splice.db.
    #[arg(long)]
    from: String,
    /// The database to fill, e.g. postgres://splice:…@db/splice; must hold no data yet.
    #[arg(long)]
    to: String,
    #[command(flatten)]
    serve: ServeFlags,
}

/// Copies every row from one database to another, secrets still sealed under the same master
/// key, and verifies the row counts.
pub async fn copy(flags: CopyFlags) -> anyhow::Result<()> {
    let config = Config::load(&flags.serve)?;
    let key = master_key(&config, false)?;
    let settings = config.pool_settings();

    let source = SqlStore::open(&flags.from, Cipher::new(&key), &settings)
        .await
        .with_context(|| format!("opening {}", redact_url(&flags.from)))?;
    let target = SqlStore::open(&flags.to, Cipher::new(&key), &settings)
        .await
        .with_context(|| format!("opening {}", redact_url(&flags.to)))?;
    let report = source.copy_into(&target).await.context("copying")?;

    for (table, rows) in &report {
        println!("{table:<20} {rows:>8} rows");
    }
    println!(
        "copied and verified: {} → {}",
        redact_url(&flags.from),
        redact_url(&flags.to)
    );
    source.close().await;
    target.close().await;
    Ok(())
}
