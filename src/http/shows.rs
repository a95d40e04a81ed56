//! Shows and playback (operators), presence, and placing phones on the scene (observers).

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::extract::{Auth, Json, Path, Query};
use super::scenes::scene_with_right;
use crate::app::AppState;
use crate::auth::Permission;
use crate::clock;
use crate::dataplane::grid::Grid;
use crate::dataplane::presence::Presence;
use crate::error::{Error, ErrorBody, Result};
use crate::events::SceneEvent;
use crate::playback::{Command, PlaybackError, Show, ShowFrame, Timeline};
use crate::store;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_show, put_show))
        .routes(routes!(get_frame_raster))
        .routes(routes!(control_playback))
        .routes(routes!(get_presence))
}

/// A play starts at least this far ahead, so every phone has its colours in time.
pub const MIN_START_LEAD_MS: i64 = 1000;
const DEFAULT_START_LEAD_MS: i64 = 3000;
/// Pause, resume, seek and stop take effect this far ahead unless told otherwise: long enough
/// for the news to reach phones on a slow network before the instant.
const DEFAULT_COMMAND_LEAD_MS: i64 = 500;
const MAX_LEAD_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug, Serialize, ToSchema)]
pub struct ShowState {
    pub scene_id: Uuid,
    pub show: Show,
    pub timeline: Timeline,
    /// The grid every frame is resampled to (a phone's colour is its cell's).
    pub grid: Grid,
    pub total_ms: i64,
    /// Server time of this answer, µs since the Unix epoch.
    pub server_time_us: i64,
    /// Position in the show now, ms; none when nothing plays.
    pub position_ms: Option<i64>,
}

pub fn show_state(scene_id: Uuid, show: Show, timeline: Timeline) -> ShowState {
    let now_us = clock::now_us();
    ShowState {
        scene_id,
        grid: Grid::for_show(&show),
        total_ms: show.total_ms(),
        position_ms: timeline.state_at(now_us / 1000).position_at(now_us / 1000),
        show,
        timeline,
        server_time_us: now_us,
    }
}

/// Optimistic concurrency for show commands: the show version the command was decided on.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct Expected {
    /// Refuse the command (409, with the current state) unless the show is still at this
    /// version: two operators acting on the same stale state cannot both win. Left out, the
    /// command applies to whatever the state is.
    pub expected_version: Option<i64>,
}

/// The current show state, or 409 with it when the caller expected another version.
fn check_expected(
    scene_id: Uuid,
    expected: &Expected,
    current: Option<&(Show, Timeline)>,
) -> Result<()> {
    let Some(want) = expected.expected_version else {
        return Ok(());
    };
    let version = current.map_or(0, |(_, t)| t.version);
    if version == want {
        return Ok(());
    }
    let current = current.map(|(show, timeline)| show_state(scene_id, show.clone(), *timeline));
    Err(Error::Stale {
        message: format!(
            "the show is at version {version}, not {want}: someone else changed it; look again"
        ),
        current: serde_json::to_value(current).unwrap_or_default(),
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShowRequest {
    /// Frames in show order (a frame may appear more than once); all of the scene's frames in
    /// their order when left out.
    pub frame_ids: Option<Vec<Uuid>>,
    #[serde(rename = "loop", default)]
    pub looped: bool,
}

/// The scene's show and where its playback is.
#[utoipa::path(get, path = "/scenes/{scene_id}/show", tag = "shows", params(("scene_id" = Uuid, Path)),
    responses((status = 200, body = ShowState), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn get_show(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(scene_id): Path<Uuid>,
) -> Result<Json<ShowState>> {
    scene_with_right(&state, &me, scene_id, Permission::Observer).await?;
    let stored = store::shows::show_of(&state.db, scene_id)
        .await?
        .ok_or(Error::NotFound("show"))?;
    Ok(Json(show_state(scene_id, stored.show, stored.timeline)))
}

/// Builds (or rebuilds) the scene's show from its frames. Playback stops; a new version starts.
#[utoipa::path(put, path = "/scenes/{scene_id}/show", tag = "shows", params(("scene_id" = Uuid, Path), Expected),
    request_body = ShowRequest,
    responses((status = 200, body = ShowState), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn put_show(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(scene_id): Path<Uuid>,
    Query(expected): Query<Expected>,
    Json(body): Json<ShowRequest>,
) -> Result<Json<ShowState>> {
    scene_with_right(&state, &me, scene_id, Permission::Operator).await?;
    let mut command = state.commands.begin(scene_id).await?;
    let tx = command.tx();
    let frames = store::frames::list_frames(&mut **tx, scene_id).await?;
    let chosen: Vec<_> = match &body.frame_ids {
        None => frames.iter().collect(),
        Some(ids) => ids
            .iter()
            .map(|id| {
                frames.iter().find(|f| f.frame_id == *id).ok_or_else(|| {
                    Error::invalid("unknown_frame", format!("frame {id} is not in this scene"))
                })
            })
            .collect::<Result<_>>()?,
    };
    if chosen.is_empty() {
        return Err(Error::invalid(
            "empty_show",
            "a show needs at least one frame",
        ));
    }
    let show = Show {
        frames: chosen
            .into_iter()
            .map(|f| ShowFrame {
                frame_id: f.frame_id,
                sha256: hex::encode(&f.sha256.0),
                gridfs_id: f.gridfs_id.clone(),
                duration_ms: f.duration_ms as u32,
                width: f.width as u32,
                height: f.height as u32,
                clip: f.clip.as_ref().map(|c| {
                    let (first, frames, _) = super::clips::clip_frames(c.start_ms, c.end_ms, c.fps);
                    crate::playback::ClipPlay {
                        first,
                        frames,
                        fps: c.fps as u32,
                        video_start_us: (c.video_start_s * 1e6).round() as i64,
                    }
                }),
            })
            .collect(),
        looped: body.looped,
    };
    let previous = store::events::show_state(&mut **tx, scene_id).await?;
    check_expected(scene_id, &expected, previous.as_ref())?;
    let base = previous.map(|(_, t)| t).unwrap_or(Timeline::NEW);
    let timeline = base
        .apply(
            Command::Stop {
                at_ms: clock::now_ms(),
            },
            &show,
        )
        .map_err(playback_error)?;
    store::shows::save_show(tx, scene_id, &show, &timeline).await?;
    let built = SceneEvent::ShowBuilt {
        show: show.clone(),
        timeline,
    };
    command.commit(Some(me.user_id), vec![built]).await?;
    Ok(Json(show_state(scene_id, show, timeline)))
}

/// A playback command. Instants are relative to the server's now, in ms.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum PlaybackRequest {
    /// Start at `start_in_ms` from now (at least 1000, default 3000), from `from_ms` into
    /// the show (default 0).
    Play {
        start_in_ms: Option<i64>,
        from_ms: Option<i64>,
    },
    Pause {
        in_ms: Option<i64>,
    },
    Resume {
        start_in_ms: Option<i64>,
    },
    Seek {
        position_ms: i64,
        in_ms: Option<i64>,
    },
    Stop {
        in_ms: Option<i64>,
    },
}

fn lead(requested: Option<i64>, default: i64, min: i64) -> Result<i64> {
    let lead = requested.unwrap_or(default);
    if !(min..=MAX_LEAD_MS).contains(&lead) {
        return Err(Error::invalid(
            "invalid_lead",
            format!("the command must take effect {min} ms to a day from now"),
        ));
    }
    Ok(lead)
}

fn playback_error(e: PlaybackError) -> Error {
    match e {
        PlaybackError::OutOfRange(..) => Error::invalid("out_of_range", e.to_string()),
        _ => Error::Conflict(e.to_string()),
    }
}

/// Play, pause, resume, seek or stop the show. Each command makes a new version.
#[utoipa::path(post, path = "/scenes/{scene_id}/playback", tag = "shows", params(("scene_id" = Uuid, Path), Expected),
    request_body = PlaybackRequest,
    responses((status = 200, body = ShowState), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn control_playback(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(scene_id): Path<Uuid>,
    Query(expected): Query<Expected>,
    Json(body): Json<PlaybackRequest>,
) -> Result<Json<ShowState>> {
    scene_with_right(&state, &me, scene_id, Permission::Operator).await?;
    let now = clock::now_ms();
    let command = match body {
        PlaybackRequest::Play {
            start_in_ms,
            from_ms,
        } => Command::Play {
            start_at_ms: now + lead(start_in_ms, DEFAULT_START_LEAD_MS, MIN_START_LEAD_MS)?,
            from_ms: from_ms.unwrap_or(0),
        },
        PlaybackRequest::Pause { in_ms } => Command::Pause {
            at_ms: now + lead(in_ms, DEFAULT_COMMAND_LEAD_MS, 0)?,
        },
        PlaybackRequest::Resume { start_in_ms } => Command::Resume {
            at_ms: now + lead(start_in_ms, DEFAULT_START_LEAD_MS, MIN_START_LEAD_MS)?,
        },
        PlaybackRequest::Seek { position_ms, in_ms } => Command::Seek {
            position_ms,
            at_ms: now + lead(in_ms, DEFAULT_COMMAND_LEAD_MS, 0)?,
        },
        PlaybackRequest::Stop { in_ms } => Command::Stop {
            at_ms: now + lead(in_ms, DEFAULT_COMMAND_LEAD_MS, 0)?,
        },
    };
    let mut locked = state.commands.begin(scene_id).await?;
    let tx = locked.tx();
    let current = store::events::show_state(&mut **tx, scene_id).await?;
    check_expected(scene_id, &expected, current.as_ref())?;
    let (show, base) = current
        .ok_or_else(|| Error::Conflict("the scene has no show yet; build one first".into()))?;
    let timeline = base.apply(command, &show).map_err(playback_error)?;
    store::shows::save_show(tx, scene_id, &show, &timeline).await?;
    let event = SceneEvent::Playback { command, timeline };
    locked.commit(Some(me.user_id), vec![event]).await?;
    tracing::info!(%scene_id, version = timeline.version, ?command, "playback");
    Ok(Json(show_state(scene_id, show, timeline)))
}

/// Phones of the scene on every node: connected, located, synced, sync errors (other nodes'
/// counts are at most a few seconds old).
#[utoipa::path(get, path = "/scenes/{scene_id}/presence", tag = "shows", params(("scene_id" = Uuid, Path)),
    responses((status = 200, body = Presence), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn get_presence(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(scene_id): Path<Uuid>,
) -> Result<Json<Presence>> {
    scene_with_right(&state, &me, scene_id, Permission::Observer).await?;
    let presence = crate::nodes::presence(&state.db, &state.hub, state.node_id, scene_id).await?;
    Ok(Json(presence))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct RasterParams {
    /// For a clip: which of its show frames (from its `clip.first`; default its first).
    pub index: Option<u32>,
}

/// One frame of the scene's show as the phones get it: resampled to the show's grid (from
/// the frame cache the scheduler reads), three bytes (r, g, b) a cell, row by row; the grid's
/// size in `X-Grid-Width` and `X-Grid-Height`. A phone at scene point (x, y) shows the cell
/// `floor(y / height × grid_h) × grid_w + floor(x / width × grid_w)` (clamped to the grid).
#[utoipa::path(get, path = "/scenes/{scene_id}/show/frames/{frame_id}/raster", tag = "shows",
    params(("scene_id" = Uuid, Path), ("frame_id" = Uuid, Path), RasterParams),
    responses((status = 200, description = "the cells' colours", content_type = "application/octet-stream"),
        (status = 304, description = "unchanged since the `If-None-Match` ETag"), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "an `index` for a still, or outside the clip's stretch"),
        (status = 503, body = ErrorBody, description = "the frame store is unreachable, or the clip's frame was not decoded within 10 s")),
    security(("bearer" = [])))]
async fn get_frame_raster(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path((scene_id, frame_id)): Path<(Uuid, Uuid)>,
    Query(params): Query<RasterParams>,
    request_headers: axum::http::HeaderMap,
) -> Result<axum::response::Response> {
    use crate::dataplane::framecache::LoadError;
    use axum::http::{header, HeaderValue};
    use axum::response::IntoResponse;
    scene_with_right(&state, &me, scene_id, Permission::Observer).await?;
    let stored = store::shows::show_of(&state.db, scene_id)
        .await?
        .ok_or(Error::NotFound("show"))?;
    let frame = stored
        .show
        .frames
        .iter()
        .find(|f| f.frame_id == frame_id)
        .ok_or(Error::NotFound("frame of the show"))?;
    let grid = Grid::for_show(&stored.show);
    // a clip's show frame: the one asked for (within its stretch), else its first
    let index = match (&frame.clip, params.index) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(Error::invalid(
                "not_a_clip",
                "only a clip's frames have an index",
            ))
        }
        (Some(c), None) => Some(c.first),
        (Some(c), Some(i)) if (c.first..c.first + c.frames).contains(&i) => Some(i),
        (Some(c), Some(_)) => {
            return Err(Error::invalid(
                "invalid_index",
                format!(
                    "the clip plays show frames {} to {}",
                    c.first,
                    c.first + c.frames - 1
                ),
            ))
        }
    };
    // the same frame on the same grid is always the same colours
    let etag = match index {
        None => format!("\"{}-{}x{}\"", frame.sha256, grid.w, grid.h),
        Some(i) => format!(
            "\"{}-{}-{}-{}x{}\"",
            frame.sha256,
            frame.clip.as_ref().map_or(0, |c| c.fps),
            i,
            grid.w,
            grid.h
        ),
    };
    let seen = request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    if seen {
        return Ok(axum::http::StatusCode::NOT_MODIFIED.into_response());
    }
    let loaded = match index {
        None => state.frame_cache.load(frame, grid).await,
        Some(i) => {
            state
                .frame_cache
                .load_clip_frame(frame, i, grid, std::time::Duration::from_secs(10))
                .await
        }
    };
    let raster = loaded.map_err(|e| match e {
        LoadError::Fetch(_) => Error::Unavailable("the frame store"),
        LoadError::ClipNotReady => Error::Unavailable("the clip decoder"),
        other => Error::Internal(other.into()),
    })?;
    let mut response = raster.to_rgb_bytes().into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert("x-grid-width", HeaderValue::from(grid.w));
    headers.insert("x-grid-height", HeaderValue::from(grid.h));
    // the same frame on the same grid is always the same colours
    if let Ok(tag) = HeaderValue::from_str(&format!("\"{}-{}x{}\"", frame.sha256, grid.w, grid.h)) {
        headers.insert(header::ETAG, tag);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=86400"),
    );
    Ok(response)
}
