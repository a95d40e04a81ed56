//! A scene's event log and the summary counted from it (operators).

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::extract::{Auth, Json, Path, Query};
use super::scenes::scene_with_right;
use crate::app::AppState;
use crate::auth::Permission;
use crate::error::{Error, ErrorBody, Result};
use crate::store;
use crate::views::{self, SceneSummary};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_events))
        .routes(routes!(get_summary))
}

const DEFAULT_EVENTS: i64 = 100;
const MAX_EVENTS: i64 = 1000;

#[derive(Debug, Deserialize, IntoParams)]
pub struct EventsQuery {
    /// Events after this `seq` (0, the default: from the first).
    pub after: Option<i64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<i64>,
}

/// One event of the log.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoggedEvent {
    /// Order in the whole log; increases along a scene's stream.
    pub seq: i64,
    pub event_id: Uuid,
    /// The event before it in this scene's stream; none for the first.
    pub previous_id: Option<Uuid>,
    /// Its registered type: `scene_created`, `show_built`, `playback`, `pixel_located`, `pixels_located`, ...
    pub event: String,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    /// Who commanded it; none for a phone locating itself.
    pub actor_id: Option<Uuid>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    pub items: Vec<LoggedEvent>,
    /// Pass as `after` for the next page; none when this page is the end of the log for now.
    pub next_after: Option<i64>,
}

/// The scene's events in order, a page at a time.
#[utoipa::path(get, path = "/scenes/{scene_id}/events", tag = "scenes",
    params(("scene_id" = Uuid, Path), EventsQuery),
    responses((status = 200, body = EventPage), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn list_events(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(scene_id): Path<Uuid>,
    Query(query): Query<EventsQuery>,
) -> Result<Json<EventPage>> {
    scene_with_right(&state, &me, scene_id, Permission::Operator).await?;
    let limit = query.limit.unwrap_or(DEFAULT_EVENTS);
    if !(1..=MAX_EVENTS).contains(&limit) {
        return Err(Error::invalid(
            "invalid_limit",
            format!("limit is 1 to {MAX_EVENTS}"),
        ));
    }
    let after = query.after.unwrap_or(0).max(0);
    let events = store::events::events_after(&state.db, scene_id, after, limit).await?;
    let next_after = (events.len() as i64 == limit)
        .then(|| events.last().map(|e| e.seq))
        .flatten();
    Ok(Json(EventPage {
        items: events
            .into_iter()
            .map(|e| LoggedEvent {
                seq: e.seq,
                event_id: e.event_id,
                previous_id: e.previous_id,
                event: e.event,
                data: e.data,
                actor_id: e.actor_id,
                created_at: e.created_at,
            })
            .collect(),
        next_after,
    }))
}

/// Counts of the scene's events (kept by the `scene_summary` view; a moment behind the log).
#[utoipa::path(get, path = "/scenes/{scene_id}/summary", tag = "scenes",
    params(("scene_id" = Uuid, Path)),
    responses((status = 200, body = SceneSummary), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn get_summary(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(scene_id): Path<Uuid>,
) -> Result<Json<SceneSummary>> {
    scene_with_right(&state, &me, scene_id, Permission::Observer).await?;
    Ok(Json(views::summary(&state.db, scene_id).await?))
}
