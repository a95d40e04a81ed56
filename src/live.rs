//! Between the control plane and the data plane: builds a scene's [`SceneSnapshot`] from what
//! is stored, and publishes changes (a new show or playback version, a pixel placed or kicked,
//! a scene ended) to this node's hub and scheduler.

use std::sync::Arc;

use uuid::Uuid;

use crate::app::AppState;
use crate::framecache::Grid;
use crate::hub::{CloseReason, SceneHub, SceneSnapshot};
use crate::playback::Timeline;
use crate::scene::{parse_color, Scene};
use crate::store;

fn rgb(color: &str) -> [u8; 3] {
    let v = parse_color(color).unwrap_or(0);
    [(v >> 16) as u8, (v >> 8) as u8, v as u8]
}

/// The snapshot of a scene as stored now.
pub async fn load_snapshot(state: &AppState, scene: &Scene) -> Result<SceneSnapshot, sqlx::Error> {
    let stored = store::shows::show_of(&state.db, scene.scene_id).await?;
    let (show, timeline) = match stored {
        Some(s) => (Some(Arc::new(s.show)), s.timeline),
        None => (None, Timeline::NEW),
    };
    Ok(SceneSnapshot {
        width: scene.width as f32,
        height: scene.height as f32,
        idle_rgb: rgb(&scene.idle_color),
        grid: show.as_deref().map_or(Grid { w: 1, h: 1 }, Grid::for_show),
        show,
        timeline,
    })
}

/// The scene's hub on this node, loading its snapshot if it has none yet.
pub async fn scene_hub(state: &AppState, scene: &Scene) -> Result<Arc<SceneHub>, sqlx::Error> {
    if let Some(hub) = state.hub.scene(scene.scene_id) {
        return Ok(hub);
    }
    let snapshot = load_snapshot(state, scene).await?;
    if let Some(show) = snapshot.show.clone() {
        preload(state, show);
    }
    Ok(state.hub.scene_or_insert(scene.scene_id, || snapshot))
}

/// Reloads a scene's snapshot after a change (when phones of it are on this node) and makes
/// the scheduler send everyone a catch-up of the new version.
pub async fn publish_scene(state: &AppState, scene: &Scene) -> Result<(), sqlx::Error> {
    let Some(hub) = state.hub.scene(scene.scene_id) else {
        return Ok(());
    };
    let snapshot = load_snapshot(state, scene).await?;
    if let Some(show) = snapshot.show.clone() {
        preload(state, show);
    }
    hub.set_snapshot(snapshot);
    state.scheduler.wake();
    Ok(())
}

/// Fetches and resamples a show's frames in the background, well before they play.
fn preload(state: &AppState, show: Arc<crate::playback::Show>) {
    let cache = state.frame_cache.clone();
    let scheduler = state.scheduler.clone();
    tokio::spawn(async move {
        cache.preload(&show).await;
        scheduler.wake();
    });
}

/// Tells a connected phone where it now is.
pub fn publish_position(
    state: &AppState,
    scene_id: Uuid,
    pixel_id: Uuid,
    position: Option<(f64, f64)>,
) {
    if let Some(conn) = state.hub.conn_of_pixel(scene_id, pixel_id) {
        conn.set_position(position.map(|(x, y)| (x as f32, y as f32)));
        if let Some((x, y)) = position {
            conn.offer(crate::hub::Outgoing::Text(
                crate::ws::protocol::ServerMsg::Located { x, y }.to_json(),
            ));
        }
    }
    state.scheduler.wake();
}

pub fn publish_kick(state: &AppState, scene_id: Uuid, pixel_id: Uuid) {
    if let Some(conn) = state.hub.conn_of_pixel(scene_id, pixel_id) {
        conn.close_with(CloseReason::Kicked);
    }
}

pub fn publish_scene_ended(state: &AppState, scene_id: Uuid) {
    state.hub.close_scene(scene_id, CloseReason::SceneEnded);
}
