//! The `c3s` server binary: parse settings, start logging, build the app, run until a signal.
//! `c3s backup DIR` and `c3s restore DIR` back up and restore the deployment the same
//! settings name (`src/backup.rs`).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use c3s::app::App;
use c3s::config::Config;

#[derive(Parser)]
#[command(name = "c3s", version, about = "Cloud Scene Screen Service")]
struct Cli {
    #[command(flatten)]
    config: Config,
    #[command(subcommand)]
    command: Option<Task>,
}

#[derive(Subcommand)]
enum Task {
    /// Serve (the default).
    Serve,
    /// Write a consistent backup (PostgreSQL dump + every frame's bytes) into an empty
    /// directory.
    Backup { dir: PathBuf },
    /// Restore a backup into empty databases (or, with --force, replace what is there).
    Restore {
        dir: PathBuf,
        #[arg(long)]
        force: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = cli.config;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if config.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    match cli.command.unwrap_or(Task::Serve) {
        Task::Serve => {}
        Task::Backup { dir } => {
            let report = c3s::store::backup::backup(&config, &dir).await?;
            println!("{}", serde_json::to_string(&report)?);
            return Ok(());
        }
        Task::Restore { dir, force } => {
            let report = c3s::store::backup::restore(&config, &dir, force).await?;
            println!("{}", serde_json::to_string(&report)?);
            return Ok(());
        }
    }
    tracing::info!(?config, "starting");

    let app = App::build(config).await.context("starting c3s")?;
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    app.run(shutdown).await
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = ?e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}
