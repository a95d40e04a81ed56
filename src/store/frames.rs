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
    /// For a clip (a video): which stretch plays, and what the file is; none for an image.
    #[sqlx(skip)]
    pub clip: Option<ClipView>,
    #[serde(skip)]
    pub clip_start_ms: Option<i32>,
    #[serde(skip)]
    pub clip_end_ms: Option<i32>,
    #[serde(skip)]
    pub clip_fps: Option<i32>,
    #[serde(skip)]
    pub video_duration_ms: Option<i32>,
    #[serde(skip)]
    pub video_fps: Option<f64>,
    #[serde(skip)]
    pub video_codec: Option<String>,
    #[serde(skip)]
    pub video_start_s: Option<f64>,
}

/// A clip's part of a frame, as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ClipView {
    /// Where the stretch that plays starts and ends, ms into the video.
    pub start_ms: i32,
    pub end_ms: i32,
    /// The rate the show takes frames from it at.
    pub fps: i32,
    /// The whole video's length.
    pub video_duration_ms: i32,
    /// The file's own frame rate; none when it varies.
    pub video_fps: Option<f64>,
    pub codec: String,
    /// The presentation time the video starts at, in seconds (0 for most files).
    pub video_start_s: f64,
}

impl Frame {
    /// Fills `clip` from the clip columns.
    fn finish(mut self) -> Frame {
        self.clip = match (
            self.clip_start_ms,
            self.clip_end_ms,
            self.clip_fps,
            self.video_duration_ms,
        ) {
            (Some(start_ms), Some(end_ms), Some(fps), Some(video_duration_ms)) => Some(ClipView {
                start_ms,
                end_ms,
                fps,
                video_duration_ms,
                video_fps: self.video_fps,
                codec: self.video_codec.clone().unwrap_or_default(),
                video_start_s: self.video_start_s.unwrap_or(0.0),
            }),
            _ => None,
        };
        self
    }
}

/// What is stored of a clip with its frame row.
pub struct NewClip<'a> {
    pub start_ms: i32,
    pub end_ms: i32,
    pub fps: i32,
    pub video_duration_ms: i32,
    pub video_fps: Option<f64>,
    pub codec: &'a str,
    pub video_start_s: f64,
    pub poster: &'a [u8],
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
    pub clip: Option<NewClip<'a>>,
}

const FRAME_COLUMNS: &str = "frame_id, scene_id, position, duration_ms, width, height,
    content_type, byte_size, sha256, gridfs_id, original_name, created_at, clip_start_ms,
    clip_end_ms, clip_fps, video_duration_ms, video_fps, video_codec, video_start_s";

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
        let clip = f.clip.as_ref();
        let row: Frame = sqlx::query_as(&format!(
            "insert into frame (scene_id, position, duration_ms, width, height, content_type,
                 byte_size, sha256, gridfs_id, original_name, clip_start_ms, clip_end_ms,
                 clip_fps, video_duration_ms, video_fps, video_codec, video_start_s, poster)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                 $17, $18) returning {FRAME_COLUMNS}"
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
        .bind(clip.map(|c| c.start_ms))
        .bind(clip.map(|c| c.end_ms))
        .bind(clip.map(|c| c.fps))
        .bind(clip.map(|c| c.video_duration_ms))
        .bind(clip.and_then(|c| c.video_fps))
        .bind(clip.map(|c| c.codec))
        .bind(clip.map(|c| c.video_start_s))
        .bind(clip.map(|c| c.poster))
        .fetch_one(&mut **tx)
        .await?;
        out.push(row.finish());
        next += 1;
    }
    Ok(out)
}

pub async fn list_frames(
    executor: impl sqlx::PgExecutor<'_>,
    scene_id: Uuid,
) -> Result<Vec<Frame>, sqlx::Error> {
    let rows: Vec<Frame> = sqlx::query_as(&format!(
        "select {FRAME_COLUMNS} from frame where scene_id = $1 order by position"
    ))
    .bind(scene_id)
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().map(Frame::finish).collect())
}

pub async fn frame_by_id(
    pool: &PgPool,
    scene_id: Uuid,
    frame_id: Uuid,
) -> Result<Option<Frame>, sqlx::Error> {
    let row: Option<Frame> = sqlx::query_as(&format!(
        "select {FRAME_COLUMNS} from frame where scene_id = $1 and frame_id = $2"
    ))
    .bind(scene_id)
    .bind(frame_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Frame::finish))
}

/// A clip's poster PNG; none for an image or an unknown frame.
pub async fn poster_of(
    pool: &PgPool,
    scene_id: Uuid,
    frame_id: Uuid,
) -> Result<Option<Vec<u8>>, sqlx::Error> {
    sqlx::query_scalar("select poster from frame where scene_id = $1 and frame_id = $2")
        .bind(scene_id)
        .bind(frame_id)
        .fetch_optional(pool)
        .await
        .map(Option::flatten)
}

/// Sets which stretch of a clip plays and at what rate, with the duration that gives.
pub async fn set_clip(
    executor: impl sqlx::PgExecutor<'_>,
    scene_id: Uuid,
    frame_id: Uuid,
    (start_ms, end_ms, fps): (i32, i32, i32),
    duration_ms: i32,
) -> Result<Option<Frame>, sqlx::Error> {
    let row: Option<Frame> = sqlx::query_as(&format!(
        "update frame set clip_start_ms = $3, clip_end_ms = $4, clip_fps = $5, duration_ms = $6
         where scene_id = $1 and frame_id = $2 returning {FRAME_COLUMNS}"
    ))
    .bind(scene_id)
    .bind(frame_id)
    .bind(start_ms)
    .bind(end_ms)
    .bind(fps)
    .bind(duration_ms)
    .fetch_optional(executor)
    .await?;
    Ok(row.map(Frame::finish))
}

pub async fn set_duration(
    executor: impl sqlx::PgExecutor<'_>,
    scene_id: Uuid,
    frame_id: Uuid,
    duration_ms: i32,
) -> Result<Option<Frame>, sqlx::Error> {
    let row: Option<Frame> = sqlx::query_as(&format!(
        "update frame set duration_ms = $3 where scene_id = $1 and frame_id = $2
         returning {FRAME_COLUMNS}"
    ))
    .bind(scene_id)
    .bind(frame_id)
    .bind(duration_ms)
    .fetch_optional(executor)
    .await?;
    Ok(row.map(Frame::finish))
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

/// Deletes a frame row and closes the gap in the order; returns its GridFS id and hash.
#[tracing::instrument(skip_all, err)]
pub async fn delete_frame(
    tx: &mut Transaction<'_, Postgres>,
    scene_id: Uuid,
    frame_id: Uuid,
) -> Result<Option<(String, Vec<u8>)>, sqlx::Error> {
    let deleted: Option<(String, i32, Vec<u8>)> = sqlx::query_as(
        "delete from frame where scene_id = $1 and frame_id = $2
         returning gridfs_id, position, sha256",
    )
    .bind(scene_id)
    .bind(frame_id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((gridfs_id, position, sha256)) = deleted else {
        return Ok(None);
    };
    sqlx::query("update frame set position = position - 1 where scene_id = $1 and position > $2")
        .bind(scene_id)
        .bind(position)
        .execute(&mut **tx)
        .await?;
    Ok(Some((gridfs_id, sha256)))
}

/// Every GridFS id a frame row refers to (for the orphan sweep and tests).
pub async fn all_gridfs_ids(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("select gridfs_id from frame")
        .fetch_all(pool)
        .await
}
