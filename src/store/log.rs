//! The scene event log as the data plane's follower reads it ([`SceneLog`]).

use futures::future::BoxFuture;
use sqlx::PgPool;
use uuid::Uuid;

use crate::dataplane::follower::{LogError, LogSnapshot, SceneLog};
use crate::events::StoredEvent;

/// The log in PostgreSQL.
pub struct PgLog(pub PgPool);

impl PgLog {
    /// The scene and its show, with the log's head, read in one repeatable-read transaction
    /// (so the events after that head are exactly those not in it).
    async fn read_snapshot(&self, scene_id: Uuid) -> Result<Option<LogSnapshot>, sqlx::Error> {
        let mut tx = self.0.begin().await?;
        sqlx::query("set transaction isolation level repeatable read, read only")
            .execute(&mut *tx)
            .await?;
        let Some(scene) = super::scenes::scene_by_id(&mut *tx, scene_id).await? else {
            return Ok(None);
        };
        let show = super::events::show_state(&mut *tx, scene_id).await?;
        let head = super::events::head(&mut *tx, scene_id).await?;
        tx.commit().await?;
        Ok(Some(LogSnapshot {
            scene,
            show,
            head_seq: head.map_or(0, |h| h.seq),
        }))
    }
}

impl SceneLog for PgLog {
    fn snapshot(&self, scene_id: Uuid) -> BoxFuture<'_, Result<Option<LogSnapshot>, LogError>> {
        Box::pin(async move { Ok(self.read_snapshot(scene_id).await?) })
    }

    fn events_after(
        &self,
        scene_id: Uuid,
        after_seq: i64,
        limit: i64,
    ) -> BoxFuture<'_, Result<Vec<StoredEvent>, LogError>> {
        Box::pin(async move {
            Ok(super::events::events_after(&self.0, scene_id, after_seq, limit).await?)
        })
    }

    fn heads<'a>(
        &'a self,
        scene_ids: &'a [Uuid],
    ) -> BoxFuture<'a, Result<Vec<(Uuid, i64)>, LogError>> {
        Box::pin(async move { Ok(super::events::heads(&self.0, scene_ids).await?) })
    }
}
