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
    let hub = state.hub.scene_or_insert(scene.scene_id, || snapshot);
    // a command published while the snapshot loaded found no hub to tell: load once more
    // (set_snapshot keeps whichever version is newer)
    hub.set_snapshot(load_snapshot(state, scene).await?);
    Ok(hub)
}

/// Reloads a scene's snapshot after a change (when phones of it are on this node) and makes
/// the scheduler send everyone a catch-up of the new version. Called after the change is
/// committed, so a failure here is logged, not returned: the change stands, and the next
/// publication or phone join loads it.
pub async fn publish_scene(state: &AppState, scene: &Scene) {
    if let Err(e) = try_publish_scene(state, scene).await {
        tracing::warn!(scene_id = %scene.scene_id, error = ?e, "could not publish a scene change");
    }
}

async fn try_publish_scene(state: &AppState, scene: &Scene) -> Result<(), sqlx::Error> {
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

/// Sends every connected phone of the scene its new description (`scene` message).
pub fn tell_phones_about(state: &AppState, scene: &Scene) {
    let Some(hub) = state.hub.scene(scene.scene_id) else {
        return;
    };
    let public = crate::ws::protocol::ScenePublic::from(scene);
    let msg = crate::ws::protocol::ServerMsg::Scene { scene: &public }.to_json();
    hub.for_each_conn(|conn| {
        conn.offer(crate::hub::Outgoing::Text(msg.clone()));
    });
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

/// What an observation did.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Placement {
    /// The pixel after it (placed, or as it was when the observation was not confident enough).
    pub pixel: Option<crate::scene::Pixel>,
    /// Whether it moved the pixel.
    pub placed: bool,
    /// Set when it disagreed with where the pixel was.
    pub contradiction: Option<crate::locate::Contradiction>,
}

/// Records an observation of a pixel, resolves its location from it (newest confident one
/// wins, contradictions flagged), and tells the phone and the scheduler at once.
pub async fn place(
    state: &AppState,
    scene: &Scene,
    pixel_id: Uuid,
    obs: crate::locate::Observation,
    observer: Option<Uuid>,
) -> Result<Placement, crate::error::Error> {
    use crate::error::Error;
    use crate::locate::{resolve, tolerance, Decision};
    let mut tx = state.db.begin().await?;
    let (current, kicked) = store::locate::lock_pixel(&mut tx, scene.scene_id, pixel_id)
        .await?
        .ok_or(Error::NotFound("pixel"))?;
    if kicked {
        return Err(Error::Conflict(
            "this phone was removed from the scene".into(),
        ));
    }
    let decision = resolve(current, &obs, tolerance(scene.width, scene.height));
    let contradiction = match decision {
        Decision::Place { contradiction } => contradiction,
        Decision::Record => None,
    };
    store::locate::insert_observation(
        &mut tx,
        scene.scene_id,
        pixel_id,
        &obs,
        observer,
        contradiction.map(|c| c.distance),
    )
    .await?;
    let pixel = match decision {
        Decision::Place { .. } => {
            store::scenes::place_pixel(
                &mut *tx,
                scene.scene_id,
                pixel_id,
                (obs.x, obs.y),
                obs.method,
                obs.confidence,
            )
            .await?
        }
        Decision::Record => None,
    };
    tx.commit().await?;
    if pixel.is_some() {
        publish_position(state, scene.scene_id, pixel_id, Some((obs.x, obs.y)));
    }
    Ok(Placement {
        placed: pixel.is_some(),
        pixel,
        contradiction,
    })
}
