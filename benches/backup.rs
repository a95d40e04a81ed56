//! Backup and restore of a deployment holding 1 GB of frames.
//!
//! `scripts/bench backup` (or `cargo bench --bench backup` with the environment of
//! `scripts/test`). Writes 64 frame files of 16 MiB (random bytes: nothing here decodes them)
//! with their rows, then times `backup::backup` into a temporary directory and
//! `backup::restore` into a fresh database and GridFS database, checks every restored file's
//! bytes, and prints one JSON line per step and a summary.

use std::time::Instant;

use c3s::app::App;
use c3s::config::Config;
use c3s::store::backup;
use c3s::store::gridfs::FrameStore;
use c3s::testkit::{fresh_database, shared_mongodb_url};
use mongodb::bson::doc;
use serde_json::json;
use sha2::{Digest, Sha256};

const FILES: usize = 64;
const FILE_BYTES: usize = 16 * 1024 * 1024;

fn noise(seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(FILE_BYTES);
    while out.len() < FILE_BYTES {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(FILE_BYTES);
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = Config::for_tests(
        fresh_database().await?,
        shared_mongodb_url(),
        format!("c3s_bench_{}", uuid::Uuid::new_v4().simple()),
    );
    config.store_timeout_ms = 60_000;
    // migrations and the stores, as a server has them
    let app = App::build(config.clone()).await?;
    let db = app.state().db.clone();
    let store = FrameStore::connect(&config).await?;
    let owner: uuid::Uuid = sqlx::query_scalar(
        "insert into app_user (login, display_name, password_hash) values ('bench', 'bench', 'x')
         returning user_id",
    )
    .fetch_one(&db)
    .await?;
    let scene: uuid::Uuid = sqlx::query_scalar(
        "insert into scene (owner_id, name, width, height) values ($1, 'Big', 100, 50)
         returning scene_id",
    )
    .bind(owner)
    .fetch_one(&db)
    .await?;
    let writing = Instant::now();
    let mut digests = Vec::new();
    for i in 0..FILES {
        let bytes = noise(i as u64 + 1);
        let sha = Sha256::digest(&bytes).to_vec();
        let id = store.put("frame", doc! {}, &bytes).await.map_err(|e| {
            anyhow::anyhow!(
                "writing file {i} ({} MB so far): {e:?}",
                i * FILE_BYTES / 1_000_000
            )
        })?;
        sqlx::query(
            "insert into frame (scene_id, position, duration_ms, width, height, content_type,
                 byte_size, sha256, gridfs_id)
             values ($1, $2, 100, 1000, 1000, 'image/png', $3, $4, $5)",
        )
        .bind(scene)
        .bind(i as i32)
        .bind(bytes.len() as i64)
        .bind(&sha)
        .bind(id.to_hex())
        .execute(&db)
        .await?;
        digests.push((id, sha));
    }
    let total_mb = (FILES * FILE_BYTES) as f64 / 1e6;
    println!(
        "{}",
        json!({"bench": "backup", "case": "frames written", "mb": total_mb, "seconds": writing.elapsed().as_secs_f64()})
    );

    let dir = std::env::temp_dir().join(format!(
        "c3s-bench-backup-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let backed_up = backup::backup(&config, &dir).await?;
    println!(
        "{}",
        json!({"bench": "backup", "case": "backup", "report": backed_up, "mb_per_s": (total_mb / backed_up.seconds).round()})
    );

    let mut target = config.clone();
    target.database_url = fresh_database().await?.into();
    target.mongodb_database = format!("c3s_bench_restored_{}", uuid::Uuid::new_v4().simple());
    let restored = backup::restore(&target, &dir, false).await?;
    println!(
        "{}",
        json!({"bench": "backup", "case": "restore", "report": restored, "mb_per_s": (total_mb / restored.seconds).round()})
    );

    let check = FrameStore::connect(&target).await?;
    for (id, sha) in &digests {
        let bytes = check.get(*id).await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
        anyhow::ensure!(
            Sha256::digest(&bytes).as_slice() == sha.as_slice(),
            "frame {id} differs"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{}",
        json!({"bench": "backup", "frames": FILES, "mb": total_mb,
               "backup_seconds": (backed_up.seconds * 10.0).round() / 10.0,
               "restore_seconds": (restored.seconds * 10.0).round() / 10.0,
               "verified": true})
    );
    Ok(())
}
