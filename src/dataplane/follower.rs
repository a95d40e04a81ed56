//! The log follower: every node follows the scene event log and applies it to its hub
//! (DESIGN.md, "Many nodes").
//!
//! A command, on whichever node, commits its effect and its event in one transaction
//! (`commands`); then that node applies the log at once ([`Follower::catch_up`]), and every
//! other node does when the log announces the append or, should the announcement be lost, at
//! its next poll ([`Follower::catch_up_all`]). Each scene hub records the last event it
//! applied, so an event is applied once per node, in order, whichever way it arrives.
//!
//! The follower reads the log through [`SceneLog`] (PostgreSQL implements it in
//! `store::log`), so nothing here knows how the log is stored.

use std::sync::Arc;

use futures::future::BoxFuture;
use uuid::Uuid;

use super::framecache::FrameCache;
use super::grid::Grid;
use super::hub::{Change, Hub, SceneHub, SceneSnapshot};
use super::protocol::{CloseReason, ScenePublic, ServerMsg};
use super::scheduler::Waker;
use crate::events::{Located, SceneEvent, StoredEvent};
use crate::playback::{Show, Timeline};
use crate::scene::{parse_color, Scene, SceneStatus};

/// Why the log could not be read.
pub type LogError = Box<dyn std::error::Error + Send + Sync>;

/// A scene as its log stands at `head_seq`: the events after it are exactly those not in it.
#[derive(Debug, Clone)]
pub struct LogSnapshot {
    pub scene: Scene,
    /// The show and its timeline folded from the log; none before the first show.
    pub show: Option<(Show, Timeline)>,
    pub head_seq: i64,
}

/// What the follower reads the log through.
pub trait SceneLog: Send + Sync + 'static {
    /// The scene and its show as of the log's head; none when there is no such scene.
    fn snapshot(&self, scene_id: Uuid) -> BoxFuture<'_, Result<Option<LogSnapshot>, LogError>>;
    /// A scene's events after `after_seq`, in order, at most `limit`.
    fn events_after(
        &self,
        scene_id: Uuid,
        after_seq: i64,
        limit: i64,
    ) -> BoxFuture<'_, Result<Vec<StoredEvent>, LogError>>;
    /// The head `seq` of each of the given scenes that has events.
    fn heads<'a>(
        &'a self,
        scene_ids: &'a [Uuid],
    ) -> BoxFuture<'a, Result<Vec<(Uuid, i64)>, LogError>>;
}

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("there is no such scene")]
    NoScene,
    #[error("the scene log cannot be read")]
    Log(#[source] LogError),
}

/// Events read per query while catching up.
const CATCH_UP_BATCH: i64 = 500;

/// Applies the log to this node's hub.
pub struct Follower {
    log: Arc<dyn SceneLog>,
    hub: Arc<Hub>,
    frames: Arc<FrameCache>,
    scheduler: Waker,
    /// Bounds the shows being preloaded at once: a burst of show builds queues its preloads
    /// (each decodes every frame of its show) instead of decoding them all at once.
    preloads: Arc<tokio::sync::Semaphore>,
}

/// Shows preloaded at once on one node.
const PRELOADS_AT_ONCE: usize = 2;

fn rgb(color: &str) -> [u8; 3] {
    let v = parse_color(color).unwrap_or(0);
    [(v >> 16) as u8, (v >> 8) as u8, v as u8]
}

fn snapshot_of(scene: &Scene, show: Option<Arc<Show>>, timeline: Timeline) -> SceneSnapshot {
    SceneSnapshot {
        grid: show.as_deref().map_or(Grid { w: 1, h: 1 }, Grid::for_show),
        show,
        timeline,
        ..SceneSnapshot::idle(
            scene.width as f32,
            scene.height as f32,
            rgb(&scene.idle_color),
        )
    }
}

impl Follower {
    pub fn new(
        log: Arc<dyn SceneLog>,
        hub: Arc<Hub>,
        frames: Arc<FrameCache>,
        scheduler: Waker,
    ) -> Follower {
        Follower {
            log,
            hub,
            frames,
            scheduler,
            preloads: Arc::new(tokio::sync::Semaphore::new(PRELOADS_AT_ONCE)),
        }
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The scene's hub on this node, loading its snapshot from the log if it has none yet.
    pub async fn scene_hub(&self, scene_id: Uuid) -> Result<Arc<SceneHub>, FollowError> {
        if let Some(hub) = self.hub.scene(scene_id) {
            return Ok(hub);
        }
        let found = self
            .log
            .snapshot(scene_id)
            .await
            .map_err(FollowError::Log)?
            .ok_or(FollowError::NoScene)?;
        let (show, timeline) = match found.show {
            Some((show, timeline)) => (Some(Arc::new(show)), timeline),
            None => (None, Timeline::NEW),
        };
        if let Some(show) = show.clone() {
            self.preload(show);
        }
        let snapshot = snapshot_of(&found.scene, show, timeline);
        let hub = self
            .hub
            .scene_or_insert(scene_id, || (snapshot, found.head_seq));
        if found.scene.status == SceneStatus::Ended {
            hub.end();
        }
        // events appended while the snapshot loaded
        self.catch_up(scene_id).await;
        Ok(hub)
    }

    /// Applies the scene's events this node has not applied yet to its hub (if it has one).
    /// Called after a local command commits, on an announcement, and by the poll. A failure
    /// is logged, not returned: the change stands in the log, and the next call applies it.
    pub async fn catch_up(&self, scene_id: Uuid) {
        let Some(hub) = self.hub.scene(scene_id) else {
            return;
        };
        if let Err(e) = self.try_catch_up(&hub).await {
            tracing::warn!(%scene_id, error = ?e, "could not apply the scene's events yet");
        }
    }

    async fn try_catch_up(&self, hub: &SceneHub) -> Result<(), LogError> {
        let _applying = hub.applying.lock().await;
        loop {
            let events = self
                .log
                .events_after(hub.scene_id, hub.applied_seq(), CATCH_UP_BATCH)
                .await?;
            for event in &events {
                self.apply(hub, event);
                hub.set_applied_seq(event.seq);
            }
            if (events.len() as i64) < CATCH_UP_BATCH {
                break;
            }
        }
        self.scheduler.wake();
        Ok(())
    }

    /// Applies what every hub of this node has missed, by comparing with the log's heads.
    pub async fn catch_up_all(&self) {
        let scenes: Vec<Uuid> = self.hub.scenes().iter().map(|s| s.scene_id).collect();
        if scenes.is_empty() {
            return;
        }
        match self.log.heads(&scenes).await {
            Ok(heads) => {
                for (scene_id, seq) in heads {
                    let behind = self
                        .hub
                        .scene(scene_id)
                        .is_some_and(|hub| hub.applied_seq() < seq);
                    if behind {
                        self.catch_up(scene_id).await;
                    }
                }
            }
            Err(e) => tracing::debug!(error = ?e, "log poll skipped"),
        }
    }

    /// Applies one event to this node's hub of its scene.
    fn apply(&self, hub: &SceneHub, stored: &StoredEvent) {
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
                    self.hub.close_scene(hub.scene_id, CloseReason::SceneEnded);
                    hub.announce(Change::Ended);
                    return;
                }
                let current = hub.snapshot();
                hub.set_snapshot(snapshot_of(&scene, current.show.clone(), current.timeline));
                let public = ScenePublic::from(&scene);
                let msg = ServerMsg::Scene { scene: &public }.to_json();
                hub.for_each_conn(|conn| {
                    conn.offer_text(msg.clone());
                });
                hub.announce(Change::Scene(Box::new(scene)));
            }
            SceneEvent::SceneDeleted {} => {
                self.hub.close_scene(hub.scene_id, CloseReason::SceneEnded);
                hub.announce(Change::Ended);
            }
            SceneEvent::ShowBuilt { show, timeline } => {
                let show = Arc::new(show);
                self.preload(show.clone());
                let current = hub.snapshot();
                hub.set_snapshot(SceneSnapshot {
                    grid: Grid::for_show(&show),
                    show: Some(show.clone()),
                    timeline,
                    ..(*current).clone()
                });
                hub.announce(Change::Show { show, timeline });
            }
            SceneEvent::Playback { timeline, .. } => {
                let current = hub.snapshot();
                hub.set_snapshot(SceneSnapshot {
                    timeline,
                    ..(*current).clone()
                });
                if let Some(show) = current.show.clone() {
                    hub.announce(Change::Show { show, timeline });
                }
            }
            SceneEvent::PixelLocated(located) => Self::locate(hub, located),
            SceneEvent::PixelsLocated { pixels } => {
                for located in pixels {
                    Self::locate(hub, located);
                }
            }
            SceneEvent::PixelKicked { pixel_id } => {
                if let Some(conn) = hub.conn_of_pixel(pixel_id) {
                    conn.close_with(CloseReason::Kicked);
                }
                hub.announce(Change::Kicked { pixel_id });
            }
            // the frames, seats and geo-reference are read from their tables when used: a
            // show is a snapshot of its frames, and locating reads the scene as it is
            SceneEvent::FramesAdded { .. }
            | SceneEvent::FrameUpdated { .. }
            | SceneEvent::FrameDeleted { .. }
            | SceneEvent::FramesReordered { .. }
            | SceneEvent::SeatsReplaced { .. }
            | SceneEvent::GeoReferenceSet { .. }
            | SceneEvent::SceneScheduled { .. } => {}
        }
    }

    /// A phone placed: it is told where it stands, and the scene's watchers hear of it.
    fn locate(hub: &SceneHub, located: Located) {
        let Located { pixel_id, x, y, .. } = located;
        if let Some(conn) = hub.conn_of_pixel(pixel_id) {
            conn.set_position(Some((x as f32, y as f32)));
            conn.offer_text(ServerMsg::Located { x, y }.to_json());
        }
        hub.announce(Change::Located(located));
    }

    /// Fetches and resamples a show's frames in the background, well before they play.
    fn preload(&self, show: Arc<Show>) {
        let cache = self.frames.clone();
        let scheduler = self.scheduler.clone();
        let preloads = self.preloads.clone();
        tokio::spawn(async move {
            let Ok(_slot) = preloads.acquire_owned().await else {
                return;
            };
            cache.preload(&show).await;
            scheduler.wake();
        });
    }
}
