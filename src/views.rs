//! Views: named consumers of the scene event log (event streaming after fstore-sql).
//!
//! Each node runs one instance of every view. Instances compete: a scene's pending events are
//! claimed by one instance at a time (a lease in `event_lock`), applied and acknowledged in one
//! transaction, so every event changes a view exactly once; events claimed by an instance that
//! died are delivered again when its lease runs out. A notification of a new event (relayed by
//! `live::follow`) wakes the instances at once; without one they look every `POLL_EVERY`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::events::StoredEvent;
use crate::store::events::{self as log, Claim};

/// How long an idle instance waits for a notification before looking anyway.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// Events applied per claim.
const BATCH: i64 = 200;
/// A scene whose events could not be applied is tried again after this.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// A view of the log: applies one event to its tables inside the caller's transaction.
pub trait Projection: Send + Sync + 'static {
    /// The view's registered name (`event_view`).
    const VIEW: &'static str;

    fn apply(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
}

/// One instance of a view.
pub struct Consumer<P> {
    projection: P,
    /// This instance's lease token.
    pub token: Uuid,
}

impl<P: Projection> Consumer<P> {
    pub fn new(projection: P) -> Self {
        Consumer {
            projection,
            token: Uuid::new_v4(),
        }
    }

    /// Claims one scene's pending events, applies them and acknowledges them in one
    /// transaction. Returns how many were applied; 0 when there was nothing to do or the lease
    /// was lost meanwhile (then nothing was applied).
    pub async fn process_next(&self, pool: &PgPool) -> Result<usize, sqlx::Error> {
        let Some(claim) = log::claim(pool, P::VIEW, self.token, BATCH).await? else {
            return Ok(0);
        };
        match self.apply(pool, &claim).await {
            Ok(n) => Ok(n),
            Err(e) => {
                // try this scene again later; the view's other scenes go on meanwhile
                let _ = log::postpone(pool, &claim, RETRY_AFTER).await;
                Err(e)
            }
        }
    }

    async fn apply(&self, pool: &PgPool, claim: &Claim) -> Result<usize, sqlx::Error> {
        let Some(last) = claim.events.last() else {
            return Ok(0);
        };
        let mut tx = pool.begin().await?;
        for event in &claim.events {
            self.projection.apply(&mut tx, event).await?;
        }
        if !log::ack(&mut tx, claim, last.seq).await? {
            tx.rollback().await?;
            tracing::warn!(view = P::VIEW, scene_id = %claim.scene_id, "lease lost; not applied");
            return Ok(0);
        }
        tx.commit().await?;
        Ok(claim.events.len())
    }

    /// Processes events until `stop`: all that are pending, then more on each `wake` (or
    /// every `POLL_EVERY`). A database that is down delays it; it never gives up.
    pub async fn run(self, pool: PgPool, wake: Arc<Notify>, stop: CancellationToken) {
        loop {
            let idle = match self.process_next(&pool).await {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => {
                    tracing::warn!(view = P::VIEW, error = ?e, "view could not apply events");
                    true
                }
            };
            if idle {
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(POLL_EVERY) => {}
                    _ = stop.cancelled() => return,
                }
            } else if stop.is_cancelled() {
                return;
            }
        }
    }
}

/// The operator's summary of a scene (`scene_summary`), counted from its events.
#[derive(Debug, Clone, Default, Serialize, ToSchema, sqlx::FromRow)]
pub struct SceneSummary {
    pub scene_id: Uuid,
    /// Events of the scene applied so far.
    pub events: i64,
    /// The last of them (`seq` in the log).
    pub last_seq: i64,
    pub last_event_at: Option<chrono::DateTime<chrono::Utc>>,
    pub show_version: i64,
    pub playback_commands: i64,
    /// Times a phone was placed (a phone placed twice counts twice).
    pub located: i64,
    pub kicked: i64,
}

/// Keeps `scene_summary`.
pub struct Summary;

impl Projection for Summary {
    const VIEW: &'static str = "scene_summary";

    async fn apply(&self, conn: &mut PgConnection, event: &StoredEvent) -> Result<(), sqlx::Error> {
        let version = event.data["timeline"]["version"].as_i64();
        sqlx::query(
            "insert into scene_summary as s (scene_id, events, last_seq, last_event_at,
                 show_version, playback_commands, located, kicked)
             values ($1, 1, $2, $3, coalesce($4, 0), ($5 = 'playback')::int,
                 ($5 = 'pixel_located')::int, ($5 = 'pixel_kicked')::int)
             on conflict (scene_id) do update set
                 events = s.events + 1,
                 last_seq = excluded.last_seq,
                 last_event_at = excluded.last_event_at,
                 show_version = coalesce($4, s.show_version),
                 playback_commands = s.playback_commands + excluded.playback_commands,
                 located = s.located + excluded.located,
                 kicked = s.kicked + excluded.kicked",
        )
        .bind(event.scene_id)
        .bind(event.seq)
        .bind(event.created_at)
        .bind(version)
        .bind(&event.event)
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// The summary of a scene; zeros before its first event is counted.
pub async fn summary(pool: &PgPool, scene_id: Uuid) -> Result<SceneSummary, sqlx::Error> {
    let found: Option<SceneSummary> =
        sqlx::query_as("select * from scene_summary where scene_id = $1")
            .bind(scene_id)
            .fetch_optional(pool)
            .await?;
    Ok(found.unwrap_or(SceneSummary {
        scene_id,
        ..SceneSummary::default()
    }))
}
