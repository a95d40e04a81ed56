//! Frame metadata rows. The bytes are in GridFS (`store::gridfs`); the HTTP layer keeps the
//! two in step (bytes first, then the row; row deleted first, then the bytes).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};
use utoipa::ToSchema;
use uuid::Uuid;

/// A frame as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Frame {
    pub frame_id: Uuid,
    pub scene_id: Uuid,
    /// 0-based place in the scene's frame order.
    pub position: i32,
    pub duration_ms: i32,
    pub width: i32,
    pub height: i32,
    pub content_type: String,
    pub byte_size: i64,
    /// Hex SHA-256 of the stored bytes.
    #[sqlx(try_from = "Vec<u8>")]
    #[schema(value_type = String)]
    pub sha256: Sha256Hex,
    /// ObjectId of the GridFS file holding the bytes.
    pub gridfs_id: String,
    pub original_name: String,
    pub created_at: DateTime<Utc>,
}

/// A SHA-256 shown as hex in JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sha256Hex(pub Vec<u8>);

impl From<Vec<u8>> for Sha256Hex {
    fn from(v: Vec<u8>) -> Self {
        Sha256Hex(v)
    }
}

impl Serialize for Sha256Hex {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(&self.0))
    }
}

/// What is inserted for one frame.
pub struct NewFrame<'a> {
    pub duration_ms: i32,
    pub width: i32,
    pub height: i32,
    pub content_type: &'a str,
    pub byte_size: i64,
    pub sha256: &'a [u8; 32],
    pub gridfs_id: String,
    pub original_name: &'a str,
}

const FRAME_COLUMNS: &str = "frame_id, scene_id, position, duration_ms, width, height,
    content_type, byte_size, sha256, gridfs_id, original_name, created_at";

/// Appends frames after the scene's last one, in order. The scene row is locked first so two
/// uploads to one scene take positions one after the other.
#[tracing::instrument(skip_all, err)]
pub async fn append_frames(
    tx: &mut Transaction<'_, Postgres>,
    scene_id: Uuid,
    frames: &[NewFrame<'_>],
) -> Result<Vec<Frame>, sqlx::Error> {
    sqlx::query("select 1 from scene where scene_id = $1 for update")
        .bind(scene_id)
        .execute(&mut **tx)
        .await?;
    let mut next: i32 =
        sqlx::query_scalar("select coalesce(max(position) + 1, 0) from frame where scene_id = $1")
            .bind(scene_id)
            .fetch_one(&mut **tx)
            .await?;
    let mut out = Vec::with_capacity(frames.len());
    for f in frames {
        let row: Frame = sqlx::query_as(&format!(
            "insert into frame (scene_id, position, duration_ms, width, height, content_type,
                 byte_size, sha256, gridfs_id, original_name)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) returning {FRAME_COLUMNS}"
        ))
        .bind(scene_id)
        .bind(next)
        .bind(f.duration_ms)
        .bind(f.width)
        .bind(f.height)
        .bind(f.content_type)
        .bind(f.byte_size)
        .bind(&f.sha256[..])
        .bind(&f.gridfs_id)
        .bind(f.original_name)
        .fetch_one(&mut **tx)
        .await?;
        out.push(row);
        next += 1;
    }
    Ok(out)
}

pub async fn list_frames(
    executor: impl sqlx::PgExecutor<'_>,
    scene_id: Uuid,
) -> Result<Vec<Frame>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {FRAME_COLUMNS} from frame where scene_id = $1 order by position"
    ))
    .bind(scene_id)
    .fetch_all(executor)
    .await
}

pub async fn frame_by_id(
    pool: &PgPool,
    scene_id: Uuid,
    frame_id: Uuid,
) -> Result<Option<Frame>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {FRAME_COLUMNS} from frame where scene_id = $1 and frame_id = $2"
    ))
    .bind(scene_id)
    .bind(frame_id)
    .fetch_optional(pool)
    .await
}

pub async fn set_duration(
    executor: impl sqlx::PgExecutor<'_>,
    scene_id: Uuid,
    frame_id: Uuid,
    duration_ms: i32,
) -> Result<Option<Frame>, sqlx::Error> {
    sqlx::query_as(&format!(
        "update frame set duration_ms = $3 where scene_id = $1 and frame_id = $2
         returning {FRAME_COLUMNS}"
    ))
    .bind(scene_id)
    .bind(frame_id)
    .bind(duration_ms)
    .fetch_optional(executor)
    .await
}

/// Gives frames their place in `order` (which the caller checked is a permutation of the
/// scene's frames). The unique (scene, position) constraint is checked at commit.
#[tracing::instrument(skip_all, err)]
pub async fn reorder(
    tx: &mut Transaction<'_, Postgres>,
    scene_id: Uuid,
    order: &[Uuid],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update frame f set position = o.position - 1
         from unnest($2::uuid[]) with ordinality as o(frame_id, position)
         where f.scene_id = $1 and f.frame_id = o.frame_id",
    )
    .bind(scene_id)
    .bind(order)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Deletes a frame row and closes the gap in the order; returns its GridFS id.
#[tracing::instrument(skip_all, err)]
pub async fn delete_frame(
    tx: &mut Transaction<'_, Postgres>,
    scene_id: Uuid,
    frame_id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    let deleted: Option<(String, i32)> = sqlx::query_as(
        "delete from frame where scene_id = $1 and frame_id = $2 returning gridfs_id, position",
    )
    .bind(scene_id)
    .bind(frame_id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((gridfs_id, position)) = deleted else {
        return Ok(None);
    };
    sqlx::query("update frame set position = position - 1 where scene_id = $1 and position > $2")
        .bind(scene_id)
        .bind(position)
        .execute(&mut **tx)
        .await?;
    Ok(Some(gridfs_id))
}

/// Every GridFS id a frame row refers to (for the orphan sweep and tests).
pub async fn all_gridfs_ids(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("select gridfs_id from frame")
        .fetch_all(pool)
        .await
}
