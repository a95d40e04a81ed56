//! The one placement path: every locating method (seat, GPS, an observer's tap, a bulk
//! placement, every code of a photo) places phones here, batched per scene.
//!
//! A placement records an observation, moves the pixel when the observation is confident
//! ([`crate::locate::resolve`]: the newest confident one wins, a far one is flagged) and appends
//! `pixel_located` to the scene's log (`pixels_located` for a group of several). Appends to one scene are serialised (its log has one
//! head), so one transaction per placement would cap a scene at one commit at a time (899
//! one-event transactions a second on one scene, measured with durable commits: `scripts/bench
//! log`), just when a stadium types in its seats. So each scene has a writer that takes every
//! placement waiting for it as one batch: one command through the pipeline, a handful of
//! set-based statements whatever the batch's size, one commit; each caller gets its own
//! answer.
//!
//! Callers hand in *groups* (one observer's placements at once: a photo's codes, a bulk
//! placement); a group is never split between batches, and a group that must be placed whole
//! is refused whole when any of its phones cannot be placed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{CommandError, Commands, Stamped};
use crate::events::{Located, SceneEvent};
use crate::locate::{resolve, tolerance, Contradiction, Current, Decision, Observation};
use crate::scene::{Pixel, Scene};
use crate::store::{self, locate::NewObservation, Tx};

/// What an observation did.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Placement {
    /// The pixel after it, when it moved the pixel.
    pub pixel: Option<Pixel>,
    /// Whether it moved the pixel (otherwise it was recorded only: not confident enough).
    pub placed: bool,
    /// Set when it disagreed with where the pixel was.
    pub contradiction: Option<Contradiction>,
    /// The pixel was already there by the same method: nothing was written, and nobody
    /// else is told (the caller may tell the phone itself).
    #[serde(skip)]
    pub unchanged: bool,
}

/// Why one phone of a batch was not placed (nothing was recorded for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("pixel not found")]
    UnknownPixel,
    #[error("this phone was removed from the scene")]
    Kicked,
    /// Its group had to be placed whole, and another of its phones could not be.
    #[error("not placed: another phone of the same request could not be")]
    WithTheRest,
}

/// Why a whole batch failed (every caller in it gets this).
#[derive(Debug, Clone, thiserror::Error)]
pub enum PlaceError {
    #[error("there is no such scene")]
    NoScene,
    #[error("the database is unavailable; try again shortly")]
    Unavailable,
    #[error("the placements could not be written")]
    Failed,
}

impl PlaceError {
    fn of(e: &CommandError) -> PlaceError {
        match e {
            CommandError::NoScene => PlaceError::NoScene,
            CommandError::Store(
                sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed,
            ) => PlaceError::Unavailable,
            _ => PlaceError::Failed,
        }
    }
}

/// Each phone's answer, in the order the group listed them.
pub type Answers = Vec<Result<Placement, Refused>>;

/// Placements written in one batch at most (a group placed whole is never split, so one
/// larger group makes a larger batch; others are split into parts of this size).
const MAX_BATCH: usize = 1024;
/// Groups waiting per scene before callers wait to queue theirs.
const QUEUE: usize = 4096;
/// A scene's writer ends after this long without placements (a new one starts on demand).
const IDLE: Duration = Duration::from_secs(60);

struct Group {
    items: Vec<(Uuid, Observation)>,
    observer: Option<Uuid>,
    whole: bool,
    reply: oneshot::Sender<Result<Answers, PlaceError>>,
}

/// The per-scene placement writers of this node.
pub struct Placements {
    commands: Commands,
    queues: DashMap<Uuid, mpsc::Sender<Group>>,
}

impl Placements {
    pub fn new(commands: Commands) -> Arc<Placements> {
        Arc::new(Placements {
            commands,
            queues: DashMap::new(),
        })
    }

    /// Places one phone from one observation (`observer`: who saw it; none for a phone
    /// locating itself).
    pub async fn place(
        self: &Arc<Self>,
        scene_id: Uuid,
        pixel_id: Uuid,
        obs: Observation,
        observer: Option<Uuid>,
    ) -> Result<Result<Placement, Refused>, PlaceError> {
        let mut answers = self
            .place_group(scene_id, vec![(pixel_id, obs)], observer, false)
            .await?;
        Ok(answers.pop().unwrap_or(Err(Refused::UnknownPixel)))
    }

    /// Places many phones seen by one observer, each recorded as its own observation.
    /// `whole`: all of them or none (every answer is then a refusal when any is).
    pub async fn place_group(
        self: &Arc<Self>,
        scene_id: Uuid,
        items: Vec<(Uuid, Observation)>,
        observer: Option<Uuid>,
        whole: bool,
    ) -> Result<Answers, PlaceError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        // a big group that need not be placed whole (a clip of 50 000 phones) goes in parts,
        // so a phone typing its seat meanwhile waits for one part, not for all of it
        if !whole && items.len() > MAX_BATCH {
            let mut answers = Vec::with_capacity(items.len());
            for part in items.chunks(MAX_BATCH) {
                answers.extend(self.queue(scene_id, part.to_vec(), observer, false).await?);
            }
            return Ok(answers);
        }
        self.queue(scene_id, items, observer, whole).await
    }

    /// Queues one group for the scene's writer (starting one when there is none) and waits
    /// for its answers.
    async fn queue(
        self: &Arc<Self>,
        scene_id: Uuid,
        items: Vec<(Uuid, Observation)>,
        observer: Option<Uuid>,
        whole: bool,
    ) -> Result<Answers, PlaceError> {
        let (reply, answer) = oneshot::channel();
        let mut group = Group {
            items,
            observer,
            whole,
            reply,
        };
        loop {
            let queue = self
                .queues
                .entry(scene_id)
                .or_insert_with(|| {
                    let (tx, rx) = mpsc::channel(QUEUE);
                    tokio::spawn(self.clone().write(scene_id, rx));
                    tx
                })
                .clone();
            match queue.send(group).await {
                Ok(()) => break,
                // that writer went idle and ended: start another
                Err(mpsc::error::SendError(back)) => {
                    self.queues
                        .remove_if(&scene_id, |_, q| q.same_channel(&queue));
                    group = back;
                }
            }
        }
        answer.await.map_err(|_| PlaceError::Failed)?
    }

    /// One scene's writer: takes every group waiting, writes them as one batch, answers each.
    async fn write(self: Arc<Self>, scene_id: Uuid, mut queue: mpsc::Receiver<Group>) {
        loop {
            let first = match tokio::time::timeout(IDLE, queue.recv()).await {
                Ok(Some(group)) => group,
                Ok(None) => break,
                // idle: take no more, but answer what is already queued
                Err(_) => {
                    queue.close();
                    continue;
                }
            };
            let mut size = first.items.len();
            let mut batch = vec![first];
            while size < MAX_BATCH {
                match queue.try_recv() {
                    Ok(group) => {
                        size += group.items.len();
                        batch.push(group);
                    }
                    Err(_) => break,
                }
            }
            let written = self.write_batch(scene_id, &batch).await;
            match written {
                Ok(answers) => {
                    for (group, answer) in batch.into_iter().zip(answers) {
                        let _ = group.reply.send(Ok(answer));
                    }
                }
                Err(e) => {
                    tracing::warn!(%scene_id, error = ?e, placements = size, "placements not written");
                    let failure = PlaceError::of(&e);
                    for group in batch {
                        let _ = group.reply.send(Err(failure.clone()));
                    }
                }
            }
        }
        self.queues.remove_if(&scene_id, |_, q| q.is_closed());
    }

    /// One batch, as one command.
    async fn write_batch(
        &self,
        scene_id: Uuid,
        batch: &[Group],
    ) -> Result<Vec<Answers>, CommandError> {
        let started = std::time::Instant::now();
        let mut command = self.commands.begin(scene_id).await?;
        let locked = started.elapsed();
        let (tx, scene) = command.parts();
        let (events, answers) = decide(tx, scene, batch).await?;
        let decided = started.elapsed();
        let n_events = events.len();
        command.commit_stamped(events).await?;
        tracing::debug!(
            %scene_id,
            groups = batch.len(),
            events = n_events,
            locked_ms = locked.as_millis() as u64,
            decided_ms = decided.as_millis() as u64,
            committed_ms = started.elapsed().as_millis() as u64,
            "placements written"
        );
        Ok(answers)
    }
}

/// A placement decided but not written yet.
struct Decided {
    contradiction: Option<Contradiction>,
    placed: bool,
    unchanged: bool,
    pixel_id: Uuid,
}

/// The batch's decision: every phone's current place read (and locked) in one statement, each
/// observation resolved in arrival order (a phone seen twice in one batch is resolved against
/// its first placement), then the observations, the moves and the events written at once.
async fn decide(
    tx: &mut Tx,
    scene: &Scene,
    batch: &[Group],
) -> Result<(Stamped, Vec<Answers>), CommandError> {
    let scene_id = scene.scene_id;
    let mut ids: Vec<Uuid> = batch
        .iter()
        .flat_map(|g| g.items.iter().map(|(p, _)| *p))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let started = std::time::Instant::now();
    let mut now = store::locate::lock_pixels(tx, scene_id, &ids).await?;
    let pixels_locked = started.elapsed();
    let tolerance = tolerance(scene.width, scene.height);
    let refusal = |pixel: &Uuid, now: &HashMap<Uuid, store::locate::PixelNow>| match now.get(pixel)
    {
        None => Some(Refused::UnknownPixel),
        Some(p) if p.kicked => Some(Refused::Kicked),
        Some(_) => None,
    };

    let mut observations = Vec::new();
    // each phone's last place in the batch (a phone seen twice moves once)
    let mut moves: HashMap<Uuid, Located> = HashMap::new();
    let mut events: Stamped = Vec::new();
    let mut decided: Vec<Vec<Result<Decided, Refused>>> = Vec::with_capacity(batch.len());
    for group in batch {
        if group.whole && group.items.iter().any(|(p, _)| refusal(p, &now).is_some()) {
            decided.push(
                group
                    .items
                    .iter()
                    .map(|(p, _)| Err(refusal(p, &now).unwrap_or(Refused::WithTheRest)))
                    .collect(),
            );
            continue;
        }
        let mut answers = Vec::with_capacity(group.items.len());
        let mut located = Vec::new();
        for (pixel_id, obs) in &group.items {
            if let Some(refused) = refusal(pixel_id, &now) {
                answers.push(Err(refused));
                continue;
            }
            let current = now.get_mut(pixel_id).expect("checked above");
            let here = Current {
                x: obs.x,
                y: obs.y,
                method: obs.method,
            };
            // the same place by the same method again (a phone sending its seat twice) is
            // not news: nothing recorded, no event; the answer is the pixel as it is
            if current.current == Some(here) {
                moves.entry(*pixel_id).or_insert(Located {
                    pixel_id: *pixel_id,
                    x: obs.x,
                    y: obs.y,
                    method: obs.method,
                    confidence: current.confidence.unwrap_or(obs.confidence),
                });
                answers.push(Ok(Decided {
                    contradiction: None,
                    placed: true,
                    unchanged: true,
                    pixel_id: *pixel_id,
                }));
                continue;
            }
            let decision = resolve(current.current, obs, tolerance);
            let contradiction = match decision {
                Decision::Place { contradiction } => contradiction,
                Decision::Record => None,
            };
            observations.push(NewObservation {
                pixel_id: *pixel_id,
                obs: *obs,
                observer: group.observer,
                contradiction: contradiction.map(|c| c.distance),
            });
            let placed = matches!(decision, Decision::Place { .. });
            if placed {
                current.current = Some(here);
                current.confidence = Some(obs.confidence);
                let place = Located {
                    pixel_id: *pixel_id,
                    x: obs.x,
                    y: obs.y,
                    method: obs.method,
                    confidence: obs.confidence,
                };
                moves.insert(*pixel_id, place);
                located.push(place);
            }
            answers.push(Ok(Decided {
                contradiction,
                placed,
                unchanged: false,
                pixel_id: *pixel_id,
            }));
        }
        // one event per command: a group of one phone, or one for the observer's whole group
        match (group.items.len(), located.as_slice()) {
            (_, []) => {}
            (1, [one]) => events.push((group.observer, SceneEvent::PixelLocated(*one))),
            _ => events.push((
                group.observer,
                SceneEvent::PixelsLocated { pixels: located },
            )),
        }
        decided.push(answers);
    }

    let resolved = started.elapsed();
    store::locate::insert_observations(tx, scene_id, &observations).await?;
    let recorded = started.elapsed();
    let moves: Vec<Located> = moves.into_values().collect();
    let moved: HashMap<Uuid, Pixel> = store::scenes::move_pixels(tx, scene_id, &moves)
        .await?
        .into_iter()
        .map(|p| (p.pixel_id, p))
        .collect();
    tracing::trace!(
        %scene_id,
        pixels_locked_ms = pixels_locked.as_millis() as u64,
        resolved_ms = resolved.as_millis() as u64,
        recorded_ms = recorded.as_millis() as u64,
        moved_ms = started.elapsed().as_millis() as u64,
        "placements decided"
    );
    let answers = decided
        .into_iter()
        .map(|group| {
            group
                .into_iter()
                .map(|d| {
                    d.map(|d| Placement {
                        pixel: d.placed.then(|| moved.get(&d.pixel_id).cloned()).flatten(),
                        placed: d.placed,
                        contradiction: d.contradiction,
                        unchanged: d.unchanged,
                    })
                })
                .collect()
        })
        .collect();
    Ok((events, answers))
}
