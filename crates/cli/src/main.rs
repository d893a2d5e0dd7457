//! The `splice` binary: parses flags, loads configuration, starts tracing, and hands over to
//! the library crates.

mod config;
mod db;
mod serve;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "splice",
    version,
    about = "A self-hostable integration platform"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the platform: HTTP API, hosted connect flow and integration runtime.
    Serve(config::ServeFlags),
    /// Database maintenance.
    #[command(subcommand)]
    Db(DbCommand),
}

#[derive(Subcommand)]
enum DbCommand {
    /// Copy an installation to another database (e.g. SQLite to PostgreSQL) and verify it.
    Copy(db::CopyFlags),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(flags) => {
            let config = config::Config::load(&flags)?;
            serve::init_tracing(&config.log)?;
            runtime.block_on(serve::run(config))
        }
        Command::Db(DbCommand::Copy(flags)) => runtime.block_on(db::copy(flags)),
    }
}
