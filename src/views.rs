//! Views: named consumers of the scene event log (event streaming after fstore-sql).
//!
//! Each node runs one instance of every view. Instances compete: a scene's pending events are
//! claimed by one instance at a time (a lease in `event_lock`), applied and acknowledged in one
//! transaction, so every event changes a view exactly once; events claimed by an instance that
//! died are delivered again when its lease runs out. A notification of a new event (relayed by
//! `nodes::follow`) wakes the instances at once; without one they look every `POLL_EVERY`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::events::StoredEvent;
use crate::store::events::{self as log, Claim};
use crate::store::{self};

pub use crate::store::views::{summary, SceneSummary};

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

/// Keeps `scene_summary`.
pub struct Summary;

impl Projection for Summary {
    const VIEW: &'static str = "scene_summary";

    async fn apply(&self, conn: &mut PgConnection, event: &StoredEvent) -> Result<(), sqlx::Error> {
        store::views::count_in_summary(conn, event).await
    }
}
