//! Backup and restore of a whole deployment: `c3s backup DIR` and `c3s restore DIR`.
//!
//! A backup is a directory:
//! - `postgres.dump`: `pg_dump --format=custom` of the database, taken in a snapshot exported
//!   by a transaction that also lists the frames, so the dump and the list agree exactly;
//! - `frames/<gridfs id>`: the bytes of every GridFS file a frame row names, each checked
//!   against the row's SHA-256 as it is written;
//! - `manifest.json`: what is in it (counts, bytes, the dump's and each frame file's SHA-256).
//!
//! A restore first verifies the whole backup (the dump's SHA-256 and every frame file's)
//! without touching anything; it refuses databases that are not empty unless forced, and a
//! forced restore refuses while a node of the deployment is running (its heartbeat is
//! fresh). Then it restores the dump with `pg_restore` and writes every frame file back under
//! its own id, so the restored rows and bytes are the backed-up ones exactly.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, ensure, Context};
use mongodb::bson::{doc, oid::ObjectId};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection};

use crate::config::Config;
use crate::store::gridfs::FrameStore;

const FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub scenes: i64,
    pub pixels: i64,
    pub events: i64,
    pub frames: Vec<FrameFile>,
    pub frame_bytes: u64,
    /// Hex SHA-256 of `postgres.dump` (absent in backups made before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump_sha256: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FrameFile {
    pub gridfs_id: String,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
    pub bytes: u64,
}

/// What a backup or restore did, for the log line and the operator.
#[derive(Debug, Serialize)]
pub struct Report {
    pub frames: usize,
    pub frame_bytes: u64,
    pub scenes: i64,
    pub seconds: f64,
}

/// Points a PostgreSQL client tool at the deployment's database without putting a password
/// on its command line (where any user of the machine could read it): the URL goes without
/// its password in `--dbname`, the password in the tool's environment (`PGPASSWORD`).
fn connect_to(tool: &mut Command, config: &Config) {
    let (url, password) = split_password(config.database_url.expose_secret());
    tool.arg("--dbname").arg(url);
    if let Some(password) = password {
        tool.env("PGPASSWORD", password);
    }
}

/// `scheme://user:password@host/...` as the URL without its password, and the password
/// (percent-decoded).
fn split_password(url: &str) -> (String, Option<String>) {
    match crate::config::password_parts(url) {
        Some((user, password, host)) => (
            format!("{user}{host}"),
            Some(
                percent_encoding::percent_decode_str(password)
                    .decode_utf8_lossy()
                    .into_owned(),
            ),
        ),
        None => (url.to_owned(), None),
    }
}

/// The PostgreSQL client tools: `PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`, else
/// `PATH`.
fn pg_tool(name: &str) -> PathBuf {
    if let Ok(bin) = std::env::var("PG_BIN") {
        return Path::new(&bin).join(name);
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|dirs| {
            dirs.filter_map(|d| d.ok())
                .filter_map(|d| {
                    let version: u32 = d.file_name().to_str()?.parse().ok()?;
                    let tool = d.path().join("bin").join(name);
                    tool.exists().then_some((version, tool))
                })
                .max_by_key(|(v, _)| *v)
                .map(|(_, tool)| tool)
        });
    newest.unwrap_or_else(|| PathBuf::from(name))
}

fn run(mut command: Command, what: &str) -> anyhow::Result<()> {
    let out = command
        .output()
        .with_context(|| format!("running {what} (install the PostgreSQL client tools)"))?;
    ensure!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Writes a backup of the deployment `config` names into `dir` (created; must be empty).
pub async fn backup(config: &Config, dir: &Path) -> anyhow::Result<Report> {
    let started = Instant::now();
    std::fs::create_dir_all(dir.join("frames"))
        .with_context(|| format!("creating {}", dir.display()))?;
    ensure!(
        std::fs::read_dir(dir.join("frames"))?.next().is_none()
            && !dir.join("manifest.json").exists(),
        "{} already holds a backup; give an empty directory",
        dir.display()
    );
    // one snapshot for the frame list and the dump
    let mut db = PgConnection::connect(config.database_url.expose_secret())
        .await
        .context("connecting to PostgreSQL")?;
    sqlx::query("begin isolation level repeatable read read only")
        .execute(&mut db)
        .await?;
    let snapshot: String = sqlx::query_scalar("select pg_export_snapshot()")
        .fetch_one(&mut db)
        .await?;
    let frames: Vec<(String, Vec<u8>)> =
        sqlx::query_as("select gridfs_id, sha256 from frame order by gridfs_id")
            .fetch_all(&mut db)
            .await?;
    let (scenes, pixels, events): (i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from scene), (select count(*) from pixel),
                (select count(*) from scene_event)",
    )
    .fetch_one(&mut db)
    .await?;
    let mut dump = Command::new(pg_tool("pg_dump"));
    // which nodes run, and their phones, are the running deployment's, not its data
    dump.args(["--format=custom", "--no-owner", "--no-privileges"])
        .args([
            "--exclude-table-data=node",
            "--exclude-table-data=node_presence",
        ])
        .arg(format!("--snapshot={snapshot}"))
        .arg("--file")
        .arg(dir.join("postgres.dump"));
    connect_to(&mut dump, config);
    let dumped = tokio::task::spawn_blocking(move || run(dump, "pg_dump"));
    // the frames are read while pg_dump works (the snapshot stays open until both are done)
    let store = FrameStore::connect(config).await?;
    let mut files = Vec::with_capacity(frames.len());
    let mut frame_bytes = 0u64;
    for (gridfs_id, sha256) in &frames {
        let id = ObjectId::parse_str(gridfs_id)?;
        let (digest, bytes) = copy_out(&store, id, &dir.join("frames").join(gridfs_id))
            .await
            .map_err(|e| anyhow::anyhow!("frame file {gridfs_id}: {e:#}; run the backup again"))?;
        ensure!(
            digest.as_slice() == sha256.as_slice(),
            "frame file {gridfs_id} does not match its SHA-256 in the database"
        );
        frame_bytes += bytes;
        files.push(FrameFile {
            gridfs_id: gridfs_id.clone(),
            sha256: hex::encode(digest),
            bytes,
        });
    }
    dumped.await??;
    sqlx::query("commit").execute(&mut db).await?;
    let dump_sha256 = Some(hex_sha256_of_file(&dir.join("postgres.dump")).await?);
    let manifest = Manifest {
        dump_sha256,
        format: FORMAT,
        created_at: chrono::Utc::now(),
        scenes,
        pixels,
        events,
        frames: files,
        frame_bytes,
    };
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest)?,
    )?;
    Ok(Report {
        frames: manifest.frames.len(),
        frame_bytes,
        scenes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Restores the backup in `dir` into the deployment `config` names. Its database and GridFS
/// bucket must be empty unless `force` (then they are emptied first).
pub async fn restore(config: &Config, dir: &Path, force: bool) -> anyhow::Result<Report> {
    let started = Instant::now();
    let manifest: Manifest = serde_json::from_slice(
        &std::fs::read(dir.join("manifest.json"))
            .with_context(|| format!("{} holds no backup (manifest.json)", dir.display()))?,
    )?;
    ensure!(
        manifest.format == FORMAT,
        "backup format {} is not {FORMAT}",
        manifest.format
    );
    // the whole backup is checked before anything is touched: a damaged one replaces nothing
    verify(dir, &manifest).await?;
    let mut db = PgConnection::connect(config.database_url.expose_secret())
        .await
        .context("connecting to PostgreSQL")?;
    let tables: i64 = sqlx::query_scalar(
        "select count(*) from information_schema.tables where table_schema = 'public'",
    )
    .fetch_one(&mut db)
    .await?;
    let store = FrameStore::connect(config).await?;
    let files = store
        .list()
        .await
        .map_err(|e| anyhow::anyhow!("listing GridFS: {e:?}"))?;
    if (tables > 0 || !files.is_empty()) && !force {
        bail!(
            "the target is not empty ({tables} tables in PostgreSQL, {} files in GridFS): \
             restore into empty databases, or pass --force to replace what is there",
            files.len()
        );
    }
    if force && tables > 0 {
        let running: i64 = sqlx::query_scalar(
            "select count(*) from information_schema.tables
             where table_schema = 'public' and table_name = 'node'",
        )
        .fetch_one(&mut db)
        .await?;
        if running > 0 {
            let fresh: i64 = sqlx::query_scalar(
                "select count(*) from node where seen_at > now() - make_interval(secs => $1)",
            )
            .bind(NODE_FRESH_S)
            .fetch_one(&mut db)
            .await?;
            ensure!(
                fresh == 0,
                "{fresh} node(s) of this deployment are running (a heartbeat in the last \
                 {NODE_FRESH_S} s): stop every node before a forced restore"
            );
        }
    }
    if force {
        sqlx::query("drop schema public cascade")
            .execute(&mut db)
            .await?;
        sqlx::query("create schema public").execute(&mut db).await?;
        for file in files {
            store
                .delete(file.id)
                .await
                .map_err(|e| anyhow::anyhow!("emptying GridFS: {e:?}"))?;
        }
    }
    db.close().await?;
    let mut restore = Command::new(pg_tool("pg_restore"));
    restore
        .args(["--no-owner", "--no-privileges", "--exit-on-error"])
        .arg(dir.join("postgres.dump"));
    connect_to(&mut restore, config);
    tokio::task::spawn_blocking(move || run(restore, "pg_restore")).await??;
    for file in &manifest.frames {
        copy_in(&store, dir, file)
            .await
            .map_err(|e| anyhow::anyhow!("writing frame {}: {e:#}", file.gridfs_id))?;
    }
    Ok(Report {
        frames: manifest.frames.len(),
        frame_bytes: manifest.frame_bytes,
        scenes: manifest.scenes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A node whose heartbeat is younger than this is running (heartbeats come every 2 s).
const NODE_FRESH_S: f64 = 30.0;

/// Checks the dump and every frame file against the manifest.
async fn verify(dir: &Path, manifest: &Manifest) -> anyhow::Result<()> {
    let dump = dir.join("postgres.dump");
    ensure!(
        dump.exists(),
        "{} is missing from the backup",
        dump.display()
    );
    if let Some(expected) = &manifest.dump_sha256 {
        ensure!(
            &hex_sha256_of_file(&dump).await? == expected,
            "postgres.dump in the backup is damaged (SHA-256 differs); nothing was changed"
        );
    }
    for file in &manifest.frames {
        frame_file(dir, file).await?;
    }
    Ok(())
}

/// One frame file of the backup, checked against its SHA-256 (read in pieces: a clip can be
/// gigabytes).
async fn frame_file(dir: &Path, file: &FrameFile) -> anyhow::Result<()> {
    let path = dir.join("frames").join(&file.gridfs_id);
    ensure!(
        path.exists(),
        "frame file {} is missing from the backup",
        file.gridfs_id
    );
    ensure!(
        hex_sha256_of_file(&path).await? == file.sha256,
        "frame file {} in the backup is damaged (SHA-256 differs); nothing was changed",
        file.gridfs_id
    );
    Ok(())
}

/// Copies one GridFS file to `path` in pieces, returning its SHA-256 and length.
async fn copy_out(
    store: &FrameStore,
    id: ObjectId,
    path: &Path,
) -> anyhow::Result<([u8; 32], u64)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::compat::FuturesAsyncReadCompatExt;
    let mut stream = store
        .open(id)
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        .compat();
    let mut file =
        tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::create(path).await?);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).await?;
        bytes += n as u64;
    }
    file.flush().await?;
    Ok((hasher.finalize().into(), bytes))
}

/// Writes one frame file of the backup to GridFS under its own id, in pieces.
async fn copy_in(store: &FrameStore, dir: &Path, file: &FrameFile) -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt;
    let id = ObjectId::parse_str(&file.gridfs_id)?;
    let mut upload = store
        .start_upload_with_id(id, &file.gridfs_id, doc! {"restored": true})
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut source = tokio::fs::File::open(dir.join("frames").join(&file.gridfs_id)).await?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match source.read(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                upload.abort().await;
                return Err(e.into());
            }
        };
        if n == 0 {
            break;
        }
        if let Err(e) = upload.write(&buf[..n]).await {
            upload.abort().await;
            return Err(anyhow::anyhow!("{e:?}"));
        }
    }
    upload
        .finish()
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(())
}

/// Hex SHA-256 of a file, read in pieces (a dump can be large).
async fn hex_sha256_of_file(path: &Path) -> anyhow::Result<String> {
    use tokio::io::AsyncReadExt;
    let mut file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("reading {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_leave_the_url_for_the_environment() {
        assert_eq!(
            split_password("postgres://c3s:p%40ss%3Aw@db:5432/c3s"),
            (
                "postgres://c3s@db:5432/c3s".to_owned(),
                Some("p@ss:w".to_owned())
            )
        );
        assert_eq!(
            split_password("postgres://postgres@127.0.0.1/c3s"),
            ("postgres://postgres@127.0.0.1/c3s".to_owned(), None)
        );
    }
}
