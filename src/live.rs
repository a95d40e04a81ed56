//! Between the control plane and the data plane: every node follows the scene event log and
//! applies it to its hub (DESIGN.md, "Many nodes").
//!
//! A command, on whichever node, commits its effect and its event in one transaction; then
//! that node applies the log at once ([`catch_up`]), and every other node does when PostgreSQL
//! tells it (`LISTEN c3s_scene_event`) or, should the notification be lost (a dropped
//! connection, a restarted database), at its next poll ([`follow`]). Each scene hub records the
//! last event it applied, so an event is applied once per node, in order, whichever way it
//! arrives.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use uuid::Uuid;

use crate::app::AppState;
use crate::events::{SceneEvent, StoredEvent};
use crate::framecache::Grid;
use crate::hub::{CloseReason, Outgoing, SceneHub, SceneSnapshot};
use crate::playback::{Show, Timeline};
use crate::scene::{parse_color, Scene, SceneStatus};
use crate::store;

/// The notification channel the log's trigger writes to (migration 0005).
pub const CHANNEL: &str = "c3s_scene_event";
/// How often a node compares its hubs with the log's heads, in case a notification was lost.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// Events read per query while catching up.
const CATCH_UP_BATCH: i64 = 500;

fn rgb(color: &str) -> [u8; 3] {
    let v = parse_color(color).unwrap_or(0);
    [(v >> 16) as u8, (v >> 8) as u8, v as u8]
}

fn snapshot_of(scene: &Scene, show: Option<Arc<Show>>, timeline: Timeline) -> SceneSnapshot {
    SceneSnapshot {
        width: scene.width as f32,
        height: scene.height as f32,
        idle_rgb: rgb(&scene.idle_color),
        grid: show.as_deref().map_or(Grid { w: 1, h: 1 }, Grid::for_show),
        show,
        timeline,
    }
}

/// The scene's snapshot as its log stands now, with the log's head: read in one
/// repeatable-read transaction, so the events after that head are exactly those not in it.
pub async fn load_snapshot(
    state: &AppState,
    scene_id: Uuid,
) -> Result<Option<(SceneSnapshot, Scene, i64)>, sqlx::Error> {
    let mut tx = state.db.begin().await?;
    sqlx::query("set transaction isolation level repeatable read, read only")
        .execute(&mut *tx)
        .await?;
    let Some(scene) = store::scenes::scene_by_id(&mut *tx, scene_id).await? else {
        return Ok(None);
    };
    let show = store::events::show_state(&mut *tx, scene_id).await?;
    let head = store::events::head(&mut *tx, scene_id).await?;
    tx.commit().await?;
    let (show, timeline) = match show {
        Some((show, timeline)) => (Some(Arc::new(show)), timeline),
        None => (None, Timeline::NEW),
    };
    let snapshot = snapshot_of(&scene, show, timeline);
    Ok(Some((snapshot, scene, head.map_or(0, |h| h.seq))))
}

/// The scene's hub on this node, loading its snapshot if it has none yet.
pub async fn scene_hub(state: &AppState, scene: &Scene) -> Result<Arc<SceneHub>, sqlx::Error> {
    if let Some(hub) = state.hub.scene(scene.scene_id) {
        return Ok(hub);
    }
    let Some((snapshot, scene, seq)) = load_snapshot(state, scene.scene_id).await? else {
        return Err(sqlx::Error::RowNotFound);
    };
    if let Some(show) = snapshot.show.clone() {
        preload(state, show);
    }
    let hub = state
        .hub
        .scene_or_insert(scene.scene_id, || (snapshot, seq));
    if scene.status == SceneStatus::Ended {
        hub.end();
    }
    // events appended while the snapshot loaded
    catch_up(state, scene.scene_id).await;
    Ok(hub)
}

/// Applies the scene's events this node has not applied yet to its hub (if it has one).
/// Called after a local command commits, on a notification, and by the poll. A failure is
/// logged, not returned: the change stands in the log, and the next call applies it.
pub async fn catch_up(state: &AppState, scene_id: Uuid) {
    let Some(hub) = state.hub.scene(scene_id) else {
        return;
    };
    if let Err(e) = try_catch_up(state, &hub).await {
        tracing::warn!(%scene_id, error = ?e, "could not apply the scene's events yet");
    }
}

async fn try_catch_up(state: &AppState, hub: &SceneHub) -> Result<(), sqlx::Error> {
    let _applying = hub.applying.lock().await;
    loop {
        let events =
            store::events::events_after(&state.db, hub.scene_id, hub.applied_seq(), CATCH_UP_BATCH)
                .await?;
        for event in &events {
            apply(state, hub, event);
            hub.set_applied_seq(event.seq);
        }
        if (events.len() as i64) < CATCH_UP_BATCH {
            break;
        }
    }
    state.scheduler.wake();
    Ok(())
}

/// Applies one event to this node's hub of its scene.
fn apply(state: &AppState, hub: &SceneHub, stored: &StoredEvent) {
    let event = match stored.decode() {
        Ok(event) => event,
        Err(e) => {
            // a type from a newer node: nothing here knows what to do with it
            tracing::warn!(seq = stored.seq, event = %stored.event, error = %e, "event skipped");
            return;
        }
    };
    match event {
        SceneEvent::SceneCreated { .. } => {}
        SceneEvent::SceneUpdated { scene } => {
            if scene.status == SceneStatus::Ended {
                state.hub.close_scene(hub.scene_id, CloseReason::SceneEnded);
                return;
            }
            let current = hub.snapshot();
            hub.set_snapshot(snapshot_of(&scene, current.show.clone(), current.timeline));
            let public = crate::ws::protocol::ScenePublic::from(&scene);
            let msg = crate::ws::protocol::ServerMsg::Scene { scene: &public }.to_json();
            hub.for_each_conn(|conn| {
                conn.offer(Outgoing::Text(msg.clone()));
            });
        }
        SceneEvent::SceneDeleted {} => {
            state.hub.close_scene(hub.scene_id, CloseReason::SceneEnded);
        }
        SceneEvent::ShowBuilt { show, timeline } => {
            let show = Arc::new(show);
            preload(state, show.clone());
            let current = hub.snapshot();
            hub.set_snapshot(SceneSnapshot {
                grid: Grid::for_show(&show),
                show: Some(show),
                timeline,
                ..(*current).clone()
            });
        }
        SceneEvent::Playback { timeline, .. } => {
            let current = hub.snapshot();
            hub.set_snapshot(SceneSnapshot {
                timeline,
                ..(*current).clone()
            });
        }
        SceneEvent::PixelLocated { pixel_id, x, y, .. } => {
            if let Some(conn) = hub.conn_of_pixel(pixel_id) {
                conn.set_position(Some((x as f32, y as f32)));
                conn.offer(Outgoing::Text(
                    crate::ws::protocol::ServerMsg::Located { x, y }.to_json(),
                ));
            }
        }
        SceneEvent::PixelKicked { pixel_id } => {
            if let Some(conn) = hub.conn_of_pixel(pixel_id) {
                conn.close_with(CloseReason::Kicked);
            }
        }
        // the frames, seats and geo-reference are read from their tables when used: a show
        // is a snapshot of its frames, and locating reads the scene as it is
        SceneEvent::FramesAdded { .. }
        | SceneEvent::FrameUpdated { .. }
        | SceneEvent::FrameDeleted { .. }
        | SceneEvent::FramesReordered { .. }
        | SceneEvent::SeatsReplaced { .. }
        | SceneEvent::GeoReferenceSet { .. }
        | SceneEvent::SceneScheduled { .. } => {}
    }
}

/// Fetches and resamples a show's frames in the background, well before they play.
fn preload(state: &AppState, show: Arc<Show>) {
    let cache = state.frame_cache.clone();
    let scheduler = state.scheduler.clone();
    tokio::spawn(async move {
        cache.preload(&show).await;
        scheduler.wake();
    });
}

/// Applies what every hub of this node has missed, by comparing with the log's heads.
async fn catch_up_all(state: &AppState) {
    let scenes: Vec<Uuid> = state.hub.scenes().iter().map(|s| s.scene_id).collect();
    if scenes.is_empty() {
        return;
    }
    match store::events::heads(&state.db, &scenes).await {
        Ok(heads) => {
            for (scene_id, seq) in heads {
                let behind = state
                    .hub
                    .scene(scene_id)
                    .is_some_and(|hub| hub.applied_seq() < seq);
                if behind {
                    catch_up(state, scene_id).await;
                }
            }
        }
        Err(e) => tracing::debug!(error = ?e, "log poll skipped"),
    }
}

/// How often a node reports its phones per scene (`node_presence`), and how old a report may
/// be and still count.
pub const PRESENCE_EVERY: Duration = Duration::from_secs(2);
pub const PRESENCE_FRESH: Duration = Duration::from_secs(10);

/// Reports this node's phones of every scene every `PRESENCE_EVERY` until shutdown, so that
/// any node can answer for the whole scene.
pub async fn report_presence(state: AppState) {
    let mut every = tokio::time::interval(PRESENCE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = state.shutdown.cancelled() => return,
        }
        let mut scenes: Vec<(Uuid, crate::hub::Presence)> = Vec::new();
        for hub in state.hub.scenes() {
            let p = hub.presence();
            let scene = hub.scene_id.to_string();
            metrics::gauge!("c3s_phones_connected", "scene" => scene.clone())
                .set(p.connected as f64);
            metrics::gauge!("c3s_phones_located", "scene" => scene).set(p.located as f64);
            if p.connected > 0 {
                scenes.push((hub.scene_id, p));
            }
        }
        metrics::gauge!("c3s_db_pool_connections", "state" => "open")
            .set(f64::from(state.db.size()));
        metrics::gauge!("c3s_db_pool_connections", "state" => "idle")
            .set(state.db.num_idle() as f64);
        let (hits, misses) = state.frame_cache.hits_and_misses();
        metrics::counter!("c3s_frame_cache_hits_total").absolute(hits);
        metrics::counter!("c3s_frame_cache_misses_total").absolute(misses);
        if let Err(e) = store::presence::report(&state.db, state.node_id, &scenes).await {
            tracing::debug!(error = ?e, "presence not reported");
        }
    }
}

/// The presence of a scene's phones on every node: this node's as it is now, the others' as
/// they last reported.
pub async fn presence(
    state: &AppState,
    scene_id: Uuid,
) -> Result<crate::hub::Presence, sqlx::Error> {
    let mut total = match state.hub.scene(scene_id) {
        Some(hub) if hub.conn_count() > 0 => hub.presence(),
        _ => SceneHub::empty_presence(),
    };
    let others =
        store::presence::others(&state.db, state.node_id, scene_id, PRESENCE_FRESH).await?;
    for other in &others {
        total.add(other);
    }
    Ok(total)
}

/// Follows the log for this node until shutdown: applies each notified scene's events to its
/// hub, wakes the views (`views_wake`), and polls every `POLL_EVERY` in case a notification was
/// lost. A lost listening connection is made again; while PostgreSQL is down, the hubs keep
/// what they have and phones keep playing.
pub async fn follow(state: AppState, views_wake: Arc<tokio::sync::Notify>) {
    let mut poll = tokio::time::interval(POLL_EVERY);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut listener = match listen(&state).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::debug!(error = ?e, "cannot listen to the log yet");
                tokio::select! {
                    _ = poll.tick() => {
                        catch_up_all(&state).await;
                        continue;
                    }
                    _ = state.shutdown.cancelled() => return,
                }
            }
        };
        // whatever was appended while nobody listened
        catch_up_all(&state).await;
        views_wake.notify_waiters();
        loop {
            tokio::select! {
                received = listener.try_recv() => match received {
                    Ok(Some(notification)) => {
                        views_wake.notify_waiters();
                        // a burst (a crowd entering seats) is one catch-up per scene, not one
                        // per notification
                        let mut scenes: Vec<Uuid> =
                            notified_scene(notification.payload()).into_iter().collect();
                        while let Some(more) = listener.next_buffered() {
                            scenes.extend(notified_scene(more.payload()));
                        }
                        scenes.sort_unstable();
                        scenes.dedup();
                        for scene_id in scenes {
                            catch_up(&state, scene_id).await;
                        }
                    }
                    // the connection dropped and was made again: notifications may be lost
                    Ok(None) => catch_up_all(&state).await,
                    Err(e) => {
                        tracing::warn!(error = ?e, "lost the log's notifications; listening again");
                        break;
                    }
                },
                _ = poll.tick() => catch_up_all(&state).await,
                _ = state.shutdown.cancelled() => return,
            }
        }
    }
}

async fn listen(state: &AppState) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(&state.db).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// The scene of a notification's payload (`{"scene_id": ..., "seq": ...}`).
fn notified_scene(payload: &str) -> Option<Uuid> {
    #[derive(serde::Deserialize)]
    struct Payload {
        scene_id: Uuid,
    }
    serde_json::from_str::<Payload>(payload)
        .ok()
        .map(|p| p.scene_id)
}
