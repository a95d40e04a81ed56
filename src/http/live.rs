//! What the operator's and observer's pages are told as it happens, instead of polling: a
//! scene's presence, its phones placed or removed, its show versions and its changes, as
//! server-sent events (`GET /api/scenes/{id}/live`); and the server's clock
//! (`GET /api/clock`), which the pages measure their offset against.
//!
//! The stream watches the scene's hub on this node ([`SceneHub::watch`]); the follower keeps
//! that hub up to date from the log whichever node the change was made on, so the page may be
//! served by any node.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::extract::{Auth, Json, Path};
use super::scenes::scene_with_right;
use super::shows::show_state;
use crate::app::AppState;
use crate::auth::Permission;
use crate::clock;
use crate::dataplane::follower::FollowError;
use crate::dataplane::hub::{Change, SceneHub};
use crate::dataplane::presence::Presence;
use crate::error::{Error, ErrorBody, Result};
use crate::events::Located;
use crate::scene::{LocationMethod, PixelStatus, SceneStatus};
use crate::store;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(watch_scene))
        .routes(routes!(get_clock))
}

/// How often a stream looks whether the scene's presence changed (other nodes report theirs
/// every 2 s).
const PRESENCE_EVERY: Duration = Duration::from_secs(1);
/// Events waiting for one slow page before the stream waits for it (a page that falls
/// further behind than its scene's change buffer is told to read everything again).
const STREAM_QUEUE: usize = 64;
/// A comment line this often keeps proxies from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Debug, Serialize, ToSchema)]
pub struct ServerClock {
    /// Server time, µs since the Unix epoch (monotonic, never steps back).
    pub server_time_us: i64,
}

/// The server's clock: a page measures its offset from the round trip of this call.
#[utoipa::path(get, path = "/clock", tag = "realtime",
    responses((status = 200, body = ServerClock)))]
async fn get_clock() -> impl axum::response::IntoResponse {
    let now = Json(ServerClock {
        server_time_us: clock::now_us(),
    });
    // every answer is a new measurement: never from a cache
    ([(axum::http::header::CACHE_CONTROL, "no-store")], now)
}

/// A phone placed, moved or removed (the `pixel` event).
#[derive(Debug, Serialize, ToSchema)]
pub struct PixelChange {
    pub pixel_id: Uuid,
    pub status: PixelStatus,
    pub x: Option<f64>,
    pub y: Option<f64>,
    pub method: Option<LocationMethod>,
    pub confidence: Option<f32>,
}

fn event(name: &str, data: &impl Serialize) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|_| Event::default().event("resync").data("{}"))
}

/// The scene as it happens, as server-sent events (`text/event-stream`), for the operator's
/// and observer's pages. Events, each `data` JSON:
/// - `presence` ([`Presence`]): at once, then whenever the counts change;
/// - `show` (`ShowState`, as `GET .../show`): at once when there is a show, then on every new
///   version (built, played, paused, ...);
/// - `pixel` ([`PixelChange`]): a phone placed, moved, or removed from the scene;
/// - `scene` (`Scene`): its fields or status changed;
/// - `ended` (`{}`): the scene ended or was deleted; the stream ends;
/// - `resync` (`{}`): the page fell behind (a thousand phones placed at once): read the
///   pixels and the show again.
#[utoipa::path(get, path = "/scenes/{scene_id}/live", tag = "realtime", params(("scene_id" = Uuid, Path)),
    responses((status = 200, description = "server-sent events (see above)", content_type = "text/event-stream"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn watch_scene(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(scene_id): Path<Uuid>,
) -> Result<Sse<impl Stream<Item = std::result::Result<Event, Infallible>>>> {
    let scene = scene_with_right(&state, &me, scene_id, Permission::Observer).await?;
    let (tx, rx) = mpsc::channel(STREAM_QUEUE);
    let stream =
        futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
        );
    let stream = Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE));
    if scene.status == SceneStatus::Ended {
        // said at once, and the stream ends: nothing more will happen to it
        let _ = tx.try_send(event("ended", &serde_json::json!({})));
        return Ok(stream);
    }
    let hub = state
        .follower
        .scene_hub(scene_id)
        .await
        .map_err(|e| match e {
            FollowError::NoScene => Error::NotFound("scene"),
            FollowError::Log(_) => Error::Unavailable("the database"),
        })?;
    // watching before the first answers are read: nothing that happens between is missed
    let changes = hub.watch();
    tokio::spawn(stream_scene(state, hub, changes, tx));
    Ok(stream)
}

/// Feeds one page's stream until the page goes away, the scene ends or the server stops.
async fn stream_scene(
    state: AppState,
    hub: std::sync::Arc<SceneHub>,
    mut changes: broadcast::Receiver<Change>,
    out: mpsc::Sender<Event>,
) {
    let scene_id = hub.scene_id;
    let presence = || {
        state
            .presence_cache
            .get(&state.db, &state.hub, state.node_id, scene_id)
    };
    let mut last: Option<Presence> = None;
    // a page that stops reading without closing must not hold this task (or the node's
    // shutdown): every send also ends on the page closing and on shutdown
    let deliver = async |e: Event| -> bool {
        tokio::select! {
            sent = out.send(e) => sent.is_ok(),
            _ = out.closed() => false,
            _ = state.shutdown.cancelled() => false,
        }
    };
    if let Ok(Some(s)) = store::shows::show_of(&state.db, scene_id).await {
        let now = show_state(scene_id, s.show, s.timeline);
        if !deliver(event("show", &now)).await {
            return;
        }
    }
    let mut every = tokio::time::interval(PRESENCE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let next = tokio::select! {
            change = changes.recv() => match change {
                Ok(change) => match change {
                    Change::Located(Located { pixel_id, x, y, method, confidence }) => {
                        Some(event("pixel", &PixelChange {
                            pixel_id,
                            status: PixelStatus::Located,
                            x: Some(x),
                            y: Some(y),
                            method: Some(method),
                            confidence: Some(confidence),
                        }))
                    }
                    Change::Kicked { pixel_id } => Some(event("pixel", &PixelChange {
                        pixel_id,
                        status: PixelStatus::Kicked,
                        x: None,
                        y: None,
                        method: None,
                        confidence: None,
                    })),
                    Change::Show { show, timeline } => {
                        Some(event("show", &show_state(scene_id, (*show).clone(), timeline)))
                    }
                    Change::Scene(scene) => Some(event("scene", &scene)),
                    Change::Ended => {
                        deliver(event("ended", &serde_json::json!({}))).await;
                        return;
                    }
                },
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    Some(event("resync", &serde_json::json!({})))
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = every.tick() => match presence().await {
                Ok(p) if last.as_ref() != Some(&p) => {
                    last = Some(p.clone());
                    Some(event("presence", &p))
                }
                _ => None,
            },
            _ = out.closed() => return,
            _ = state.shutdown.cancelled() => return,
        };
        if let Some(e) = next {
            if !deliver(e).await {
                return;
            }
        }
    }
}
