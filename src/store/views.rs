//! The tables of the log's views (`views`): `scene_summary`.

use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::events::StoredEvent;

/// The operator's summary of a scene (`scene_summary`), counted from its events.
#[derive(Debug, Clone, Default, Serialize, ToSchema, sqlx::FromRow)]
pub struct SceneSummary {
    pub scene_id: Uuid,
    /// Events of the scene applied so far.
    pub events: i64,
    /// The last of them (`seq` in the log).
    pub last_seq: i64,
    pub last_event_at: Option<chrono::DateTime<chrono::Utc>>,
    pub show_version: i64,
    pub playback_commands: i64,
    /// Times a phone was placed (a phone placed twice counts twice).
    pub located: i64,
    pub kicked: i64,
}

/// Counts one event into its scene's summary.
pub async fn count_in_summary(
    conn: &mut PgConnection,
    event: &StoredEvent,
) -> Result<(), sqlx::Error> {
    let version = event.data["timeline"]["version"].as_i64();
    // phones placed: one for `pixel_located`, each of `pixels_located`'s
    let located = match event.event.as_str() {
        "pixel_located" => 1,
        "pixels_located" => event.data["pixels"]
            .as_array()
            .map_or(0, |p| p.len() as i64),
        _ => 0,
    };
    sqlx::query(
        "insert into scene_summary as s (scene_id, events, last_seq, last_event_at,
             show_version, playback_commands, located, kicked)
         values ($1, 1, $2, $3, coalesce($4, 0), ($5 = 'playback')::int,
             $6, ($5 = 'pixel_kicked')::int)
         on conflict (scene_id) do update set
             events = s.events + 1,
             last_seq = excluded.last_seq,
             last_event_at = excluded.last_event_at,
             show_version = coalesce($4, s.show_version),
             playback_commands = s.playback_commands + excluded.playback_commands,
             located = s.located + excluded.located,
             kicked = s.kicked + excluded.kicked",
    )
    .bind(event.scene_id)
    .bind(event.seq)
    .bind(event.created_at)
    .bind(version)
    .bind(&event.event)
    .bind(located)
    .execute(conn)
    .await?;
    Ok(())
}

/// The summary of a scene; zeros before its first event is counted.
pub async fn summary(pool: &PgPool, scene_id: Uuid) -> Result<SceneSummary, sqlx::Error> {
    let found: Option<SceneSummary> =
        sqlx::query_as("select * from scene_summary where scene_id = $1")
            .bind(scene_id)
            .fetch_optional(pool)
            .await?;
    Ok(found.unwrap_or(SceneSummary {
        scene_id,
        ..SceneSummary::default()
    }))
}
