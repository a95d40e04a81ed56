//! The only code that talks to the databases: PostgreSQL (sqlx) for everything relational and
//! MongoDB GridFS for frame bytes.
//!
//! Queries are written out in the functions that need them, each file owning one domain's
//! tables. Functions take a `PgPool` or a transaction; they do no permission checks (the HTTP
//! layer does) and return `sqlx::Error`, which `crate::error` maps to a status.
//!
//! Besides the tables: [`log`] is the scene log as the data plane's follower reads it,
//! [`gridfs`] implements the frame cache's frame source, [`listen`] hears the other nodes'
//! notifications, and [`backup`] dumps and restores a whole deployment.

pub mod backup;
pub mod calendar;
pub mod events;
pub mod flash;
pub mod frames;
pub mod gridfs;
pub mod joins;
pub mod listen;
pub mod locate;
pub mod log;
pub mod nodes;
pub mod presence;
pub mod scenes;
pub mod shows;
pub mod sound;
pub mod users;
pub mod views;

/// A transaction on the pool, as commands and stores pass it around.
pub type Tx = sqlx::Transaction<'static, sqlx::Postgres>;

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::config::Config;

/// The schema, embedded at build time from `migrations/`, applied at start-up.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// Opens the pool lazily: a node starts even while PostgreSQL is down and `/readyz` reports it;
/// connections are made (and re-made after a restart of PostgreSQL) on demand.
pub fn connect_pg(config: &Config) -> anyhow::Result<PgPool> {
    pool_of(config, config.db_max_connections, "c3s")
}

/// The phones' own pool (joins over the socket): a saturated HTTP API, or one account
/// flooding it, cannot take the connections a crowd needs to join.
pub fn connect_phone_pg(config: &Config) -> anyhow::Result<PgPool> {
    pool_of(config, config.db_phone_connections, "c3s-phones")
}

fn pool_of(config: &Config, max: u32, name: &str) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = config.database_url.expose_secret().parse()?;
    let options = options.application_name(name);
    Ok(PgPoolOptions::new()
        .max_connections(max.max(1))
        .acquire_timeout(config.store_timeout())
        .idle_timeout(Some(Duration::from_secs(300)))
        .test_before_acquire(true)
        .connect_lazy_with(options))
}

/// Deletes GridFS files that no frame row refers to and that are older than `grace` (so an
/// upload in flight, whose bytes precede its row, is never touched). Such files are left by a
/// failure between the two writes, or by a delete whose GridFS half failed. Returns how many
/// were deleted.
pub async fn sweep_orphan_frames(
    db: &PgPool,
    frame_store: &gridfs::FrameStore,
    grace: Duration,
) -> anyhow::Result<usize> {
    let files = frame_store.list().await?;
    let referenced: std::collections::HashSet<String> =
        frames::all_gridfs_ids(db).await?.into_iter().collect();
    let cutoff = std::time::SystemTime::now() - grace;
    let mut deleted = 0;
    for file in files {
        let created: std::time::SystemTime = file.id.timestamp().into();
        if created < cutoff && !referenced.contains(&file.id.to_hex()) {
            frame_store.delete(file.id).await?;
            deleted += 1;
        }
    }
    Ok(deleted)
}
