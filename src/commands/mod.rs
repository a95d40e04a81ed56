//! The one path for scene commands (DESIGN.md, "Many nodes"; the Decider of fmodel-rust, in
//! plain SQL): every command that changes a scene, from an operator's play to a phone typing
//! its seat, is a [`Command`]:
//!
//! ```text
//! let mut command = state.commands.begin(scene_id).await?;   // the scene, locked
//! ... decide on command.scene(), write the effect through command.tx() ...
//! command.commit(actor, events).await?;                      // append, commit, apply
//! ```
//!
//! The code between the two calls is the *decision*: given the scene as it is, under its
//! locks, it checks what it must, writes its effect to the tables and names the events that
//! record it. Everything else is owned here, once:
//! 1. **the lock order** ([`Commands::begin`]): the scene's row (`for no key update`: phones
//!    joining the scene are not held up), then the head of the scene's log (an advisory lock);
//!    whatever the decision locks comes after these, so two commands of one scene never wait
//!    on each other in opposite orders;
//! 2. **the append** after the head it locked ([`Command::commit`]; optimistic concurrency:
//!    the log's unique chain refuses an append that does not follow the head, so a writer
//!    that skipped the lock can never fork a scene's stream);
//! 3. **the commit** of effect and events together (a command dropped before it rolls back);
//! 4. **the local apply**: this node's follower applies the new events at once; the other
//!    nodes hear of them from the log.
//!
//! (A guard rather than a function taking the decision as a closure: a closure borrowing the
//! transaction makes a future Rust cannot yet prove `Send` for every lifetime, which axum's
//! handlers need.)
//!
//! [`placements`] batches the most frequent command (placing phones) on top of it.

pub mod placements;

use std::sync::Arc;

use sqlx::PgPool;
use uuid::Uuid;

use crate::dataplane::follower::Follower;
use crate::events::SceneEvent;
use crate::scene::Scene;
use crate::store::{self, events::AppendError, Tx};

/// Events a decision appends, each with who commanded it (none: a phone, for itself).
pub type Stamped = Vec<(Option<Uuid>, SceneEvent)>;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("there is no such scene")]
    NoScene,
    /// The scene's log moved past the head this command locked: only a writer that skipped
    /// the lock can cause it. Nothing was written.
    #[error("the scene changed while the command was decided")]
    Conflict,
    #[error("the database failed")]
    Store(#[from] sqlx::Error),
}

impl From<AppendError> for CommandError {
    fn from(e: AppendError) -> Self {
        match e {
            AppendError::Conflict => CommandError::Conflict,
            AppendError::Db(e) => CommandError::Store(e),
        }
    }
}

/// Starts scene commands. Cheap to clone.
#[derive(Clone)]
pub struct Commands {
    db: PgPool,
    follower: Arc<Follower>,
}

/// A scene command under way: the scene locked, its log's head locked, a transaction open.
pub struct Command {
    tx: Tx,
    scene_id: Uuid,
    /// The scene as it is under the lock; none while a new scene is being created.
    scene: Option<Scene>,
    /// The head of the scene's log when it was locked (none: no events yet).
    head: Option<Uuid>,
    follower: Arc<Follower>,
}

impl Commands {
    pub fn new(db: PgPool, follower: Arc<Follower>) -> Commands {
        Commands { db, follower }
    }

    /// Begins a command on scene `scene_id`: takes its locks in the one order, and reads it.
    pub async fn begin(&self, scene_id: Uuid) -> Result<Command, CommandError> {
        let mut tx = self.db.begin().await?;
        // the lock order: the scene's row, then its log's head
        let scene = store::scenes::lock_scene(&mut tx, scene_id)
            .await?
            .ok_or(CommandError::NoScene)?;
        let head = store::events::lock_head(&mut tx, scene_id).await?;
        Ok(Command {
            tx,
            scene_id,
            scene: Some(scene),
            head: head.map(|h| h.event_id),
            follower: self.follower.clone(),
        })
    }

    /// Begins the command that creates scene `scene_id` (the decision inserts it). No lock:
    /// nobody else knows the scene yet, and the log takes one first event per scene.
    pub async fn begin_new(&self, scene_id: Uuid) -> Result<Command, CommandError> {
        Ok(Command {
            tx: self.db.begin().await?,
            scene_id,
            scene: None,
            head: None,
            follower: self.follower.clone(),
        })
    }
}

impl Command {
    /// The transaction the decision writes its effect in.
    pub fn tx(&mut self) -> &mut Tx {
        &mut self.tx
    }

    /// The transaction and the scene at once (a decision reads one while writing the other).
    pub fn parts(&mut self) -> (&mut Tx, &Scene) {
        let scene = self
            .scene
            .as_ref()
            .expect("a command that creates its scene has no scene to read yet");
        (&mut self.tx, scene)
    }

    /// The scene as it is under the command's lock.
    pub fn scene(&self) -> &Scene {
        self.scene
            .as_ref()
            .expect("a command that creates its scene has no scene to read yet")
    }

    /// Appends the decision's events (all by `actor`; none: a phone, for itself), commits,
    /// and applies them on this node.
    pub async fn commit(
        self,
        actor: Option<Uuid>,
        events: Vec<SceneEvent>,
    ) -> Result<(), CommandError> {
        let stamped = events.into_iter().map(|e| (actor, e)).collect();
        self.commit_stamped(stamped).await
    }

    /// [`Command::commit`] for a decision that records the acts of several actors at once
    /// (a batch of placements).
    pub async fn commit_stamped(mut self, events: Stamped) -> Result<(), CommandError> {
        append(&mut self.tx, self.scene_id, self.head, &events).await?;
        self.tx.commit().await?;
        if !events.is_empty() {
            self.follower.catch_up(self.scene_id).await;
        }
        Ok(())
    }
}
/// Appends `events` after `previous`, one statement per run of the same actor, in order.
async fn append(
    tx: &mut Tx,
    scene_id: Uuid,
    mut previous: Option<Uuid>,
    events: &Stamped,
) -> Result<(), CommandError> {
    for run in events.chunk_by(|a, b| a.0 == b.0) {
        let batch: Vec<SceneEvent> = run.iter().map(|(_, e)| e.clone()).collect();
        let heads = store::events::append(tx, scene_id, previous, &batch, run[0].0).await?;
        previous = heads.last().map(|h| h.event_id).or(previous);
    }
    Ok(())
}
