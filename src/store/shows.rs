//! The persisted show and playback timeline of each scene.

use sqlx::types::Json;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::playback::{Show, ShowFrame, Timeline};

#[derive(Debug, Clone)]
pub struct StoredShow {
    pub scene_id: Uuid,
    pub show: Show,
    pub timeline: Timeline,
}

#[derive(sqlx::FromRow)]
struct ShowRow {
    scene_id: Uuid,
    frames: Json<Vec<ShowFrame>>,
    looped: bool,
    timeline: Json<Timeline>,
}

impl From<ShowRow> for StoredShow {
    fn from(r: ShowRow) -> Self {
        StoredShow {
            scene_id: r.scene_id,
            show: Show {
                frames: r.frames.0,
                looped: r.looped,
            },
            timeline: r.timeline.0,
        }
    }
}

pub async fn show_of(
    executor: impl sqlx::PgExecutor<'_>,
    scene_id: Uuid,
) -> Result<Option<StoredShow>, sqlx::Error> {
    let row: Option<ShowRow> =
        sqlx::query_as("select scene_id, frames, looped, timeline from show where scene_id = $1")
            .bind(scene_id)
            .fetch_optional(executor)
            .await?;
    Ok(row.map(StoredShow::from))
}

/// Writes a show and its timeline (insert or replace).
#[tracing::instrument(skip_all, err)]
pub async fn save_show(
    tx: &mut Transaction<'_, Postgres>,
    scene_id: Uuid,
    show: &Show,
    timeline: &Timeline,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into show (scene_id, version, frames, looped, timeline) values ($1, $2, $3, $4, $5)
         on conflict (scene_id) do update set version = excluded.version, frames = excluded.frames,
             looped = excluded.looped, timeline = excluded.timeline, updated_at = now()",
    )
    .bind(scene_id)
    .bind(timeline.version)
    .bind(Json(&show.frames))
    .bind(show.looped)
    .bind(Json(timeline))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Whether the scene's show lists this frame.
pub async fn show_uses_frame(
    executor: impl sqlx::PgExecutor<'_>,
    scene_id: Uuid,
    frame_id: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "select exists (select 1 from show where scene_id = $1
             and frames @> jsonb_build_array(jsonb_build_object('frame_id', $2::text)))",
    )
    .bind(scene_id)
    .bind(frame_id.to_string())
    .fetch_one(executor)
    .await
}
