//! Placing phones, batched per scene.
//!
//! A placement writes the observation, moves the pixel and appends `pixel_located` to the
//! scene's log. Appends to one scene are serialised (the log has one head per scene), so one
//! transaction per placement would cap a scene at one commit at a time (899 one-event
//! transactions a second on one scene, measured with durable commits: `scripts/bench log`),
//! just when a stadium types in its seats. So every placement of a scene that arrives while
//! the previous batch is being written goes into the next batch: one transaction, one append
//! statement per actor, one commit; each caller gets its own answer.

use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::app::AppState;
use crate::error::Error;
use crate::events::SceneEvent;
use crate::locate::{resolve, tolerance, Decision, Observation};
use crate::scene::Scene;
use crate::store;

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

/// Placements written in one transaction, at most.
const MAX_BATCH: usize = 256;
/// Placements waiting per scene before callers wait to queue theirs.
const QUEUE: usize = 4096;
/// A scene's writer ends after this long without placements (a new one starts on demand).
const IDLE: Duration = Duration::from_secs(60);

struct Request {
    scene: Scene,
    pixel_id: Uuid,
    obs: Observation,
    observer: Option<Uuid>,
    reply: oneshot::Sender<Result<Placement, Error>>,
}

/// The per-scene writers of this node.
#[derive(Default)]
pub struct Placements {
    queues: DashMap<Uuid, mpsc::Sender<Request>>,
}

/// Records an observation of a pixel, resolves its location from it (newest confident one
/// wins, contradictions flagged), and tells the phone and the scheduler at once.
pub async fn place(
    state: &AppState,
    scene: &Scene,
    pixel_id: Uuid,
    obs: Observation,
    observer: Option<Uuid>,
) -> Result<Placement, Error> {
    let (reply, answer) = oneshot::channel();
    let mut request = Request {
        scene: scene.clone(),
        pixel_id,
        obs,
        observer,
        reply,
    };
    loop {
        let queue = state
            .placements
            .queues
            .entry(scene.scene_id)
            .or_insert_with(|| {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(write(state.clone(), scene.scene_id, rx));
                tx
            })
            .clone();
        match queue.send(request).await {
            Ok(()) => break,
            // that writer went idle and ended: start another
            Err(mpsc::error::SendError(back)) => {
                state
                    .placements
                    .queues
                    .remove_if(&scene.scene_id, |_, q| q.same_channel(&queue));
                request = back;
            }
        }
    }
    answer
        .await
        .map_err(|_| Error::Unavailable("the placement writer"))?
}

/// One scene's writer: takes every placement waiting, writes them as one batch, answers each.
async fn write(state: AppState, scene_id: Uuid, mut queue: mpsc::Receiver<Request>) {
    loop {
        let first = match tokio::time::timeout(IDLE, queue.recv()).await {
            Ok(Some(request)) => request,
            Ok(None) => break,
            // idle: take no more, but answer what is already queued
            Err(_) => {
                queue.close();
                continue;
            }
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        match write_batch(&state, scene_id, &batch).await {
            Ok(answers) => {
                let moved = answers.iter().any(|a| matches!(a, Ok(p) if p.placed));
                for (request, answer) in batch.into_iter().zip(answers) {
                    let _ = request.reply.send(answer);
                }
                if moved {
                    crate::live::catch_up(&state, scene_id).await;
                }
            }
            Err(e) => {
                tracing::warn!(%scene_id, error = ?e, placements = batch.len(), "placements not written");
                for request in batch {
                    let _ = request.reply.send(Err(failure(&e)));
                }
            }
        }
    }
    state
        .placements
        .queues
        .remove_if(&scene_id, |_, q| q.is_closed());
}

/// The error each caller of a failed batch gets (one cause, many answers).
fn failure(e: &sqlx::Error) -> Error {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
            Error::Unavailable("the database")
        }
        other => Error::Internal(anyhow::anyhow!("{other}")),
    }
}

/// Writes a batch in one transaction. A placement refused on its merits (no such pixel, a
/// kicked one) is an answer, not a failure; a database error fails the whole batch.
async fn write_batch(
    state: &AppState,
    scene_id: Uuid,
    batch: &[Request],
) -> Result<Vec<Result<Placement, Error>>, sqlx::Error> {
    let mut tx = state.db.begin().await?;
    // every pixel of the batch locked at once, in pixel order (as bulk placements lock them):
    // two transactions never wait on each other's pixels in opposite orders
    let ids: Vec<Uuid> = batch.iter().map(|r| r.pixel_id).collect();
    store::scenes::lock_pixels(&mut tx, scene_id, &ids).await?;
    let mut answers = Vec::with_capacity(batch.len());
    let mut located: Vec<(Option<Uuid>, SceneEvent)> = Vec::new();
    for r in batch {
        let Some((current, kicked)) =
            store::locate::lock_pixel(&mut tx, scene_id, r.pixel_id).await?
        else {
            answers.push(Err(Error::NotFound("pixel")));
            continue;
        };
        if kicked {
            answers.push(Err(Error::Conflict(
                "this phone was removed from the scene".into(),
            )));
            continue;
        }
        let decision = resolve(current, &r.obs, tolerance(r.scene.width, r.scene.height));
        let contradiction = match decision {
            Decision::Place { contradiction } => contradiction,
            Decision::Record => None,
        };
        store::locate::insert_observation(
            &mut tx,
            scene_id,
            r.pixel_id,
            &r.obs,
            r.observer,
            contradiction.map(|c| c.distance),
        )
        .await?;
        let pixel = match decision {
            Decision::Place { .. } => {
                store::scenes::place_pixel(
                    &mut *tx,
                    scene_id,
                    r.pixel_id,
                    (r.obs.x, r.obs.y),
                    r.obs.method,
                    r.obs.confidence,
                )
                .await?
            }
            Decision::Record => None,
        };
        if pixel.is_some() {
            let event = SceneEvent::PixelLocated {
                pixel_id: r.pixel_id,
                x: r.obs.x,
                y: r.obs.y,
                method: r.obs.method,
                confidence: r.obs.confidence,
            };
            located.push((r.observer, event));
        }
        answers.push(Ok(Placement {
            placed: pixel.is_some(),
            pixel,
            contradiction,
        }));
    }
    // in arrival order, one statement per run of the same actor
    for run in located.chunk_by(|a, b| a.0 == b.0) {
        let events: Vec<SceneEvent> = run.iter().map(|(_, e)| e.clone()).collect();
        store::events::append_at_head(&mut tx, scene_id, &events, run[0].0).await?;
    }
    tx.commit().await?;
    Ok(answers)
}
