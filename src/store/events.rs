//! The scene event log (`scene_event`) and its consumers (`event_view`, `event_lock`): append
//! with optimistic concurrency, load a scene's stream, and stream events to named views with
//! a lease per scene (migration 0005 explains the tables).

use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::events::{SceneEvent, StoredEvent};
use crate::playback::{Show, Timeline};

/// The newest event of a scene's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub event_id: Uuid,
    pub seq: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Another event was appended after the expected previous one: decide again on the
    /// current state.
    #[error("the scene changed since; the command was decided on a stale state")]
    Conflict,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

const EVENT_COLUMNS: &str =
    "seq, event_id, previous_id, scene_id, event, data, actor_id, created_at";

#[derive(sqlx::FromRow)]
struct EventRow {
    seq: i64,
    event_id: Uuid,
    previous_id: Option<Uuid>,
    scene_id: Uuid,
    event: String,
    data: Json<serde_json::Value>,
    actor_id: Option<Uuid>,
    created_at: chrono::DateTime<chrono::Utc>,
}

impl From<EventRow> for StoredEvent {
    fn from(r: EventRow) -> Self {
        StoredEvent {
            seq: r.seq,
            event_id: r.event_id,
            previous_id: r.previous_id,
            scene_id: r.scene_id,
            event: r.event,
            data: r.data.0,
            actor_id: r.actor_id,
            created_at: r.created_at,
        }
    }
}

/// The newest event of a scene; none for a scene without events.
pub async fn head(
    executor: impl sqlx::PgExecutor<'_>,
    scene_id: Uuid,
) -> Result<Option<Head>, sqlx::Error> {
    let row: Option<(Uuid, i64)> = sqlx::query_as(
        "select event_id, seq from scene_event where scene_id = $1 order by seq desc limit 1",
    )
    .bind(scene_id)
    .fetch_optional(executor)
    .await?;
    Ok(row.map(|(event_id, seq)| Head { event_id, seq }))
}

/// Serialises the server's appends to one scene until the transaction ends, and returns the
/// scene's head. Taken last, after any row lock the transaction needs, so no two transactions
/// wait on each other in opposite orders.
pub async fn lock_head(
    tx: &mut Transaction<'_, Postgres>,
    scene_id: Uuid,
) -> Result<Option<Head>, sqlx::Error> {
    sqlx::query("select pg_advisory_xact_lock(hashtextextended($1::text, 5))")
        .bind(scene_id)
        .execute(&mut **tx)
        .await?;
    head(&mut **tx, scene_id).await
}

/// Appends events to a scene's stream after `previous` (none: the stream must be empty), in
/// order, in one statement. Fails with [`AppendError::Conflict`] when `previous` is no longer
/// the head: exactly one of several appends expecting the same previous event wins, which the
/// database enforces (`previous_id` is unique, the first event of a scene too).
pub async fn append(
    conn: &mut PgConnection,
    scene_id: Uuid,
    previous: Option<Uuid>,
    events: &[SceneEvent],
    actor_id: Option<Uuid>,
) -> Result<Vec<Head>, AppendError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = events.iter().map(|_| Uuid::new_v4()).collect();
    let previous_ids: Vec<Option<Uuid>> = std::iter::once(previous)
        .chain(ids[..ids.len() - 1].iter().copied().map(Some))
        .collect();
    let (names, data): (Vec<String>, Vec<serde_json::Value>) =
        events.iter().map(SceneEvent::to_parts).unzip();
    let appended: Result<Vec<(Uuid, i64)>, sqlx::Error> = sqlx::query_as(
        "insert into scene_event (event_id, previous_id, event, data, scene_id, actor_id)
         select e.event_id, e.previous_id, e.event, e.data, $5, $6
         from unnest($1::uuid[], $2::uuid[], $3::text[], $4::jsonb[])
             with ordinality as e(event_id, previous_id, event, data, n)
         order by e.n
         returning event_id, seq",
    )
    .bind(&ids)
    .bind(&previous_ids)
    .bind(&names)
    .bind(&data)
    .bind(scene_id)
    .bind(actor_id)
    .fetch_all(&mut *conn)
    .await;
    match appended {
        Ok(mut rows) => {
            rows.sort_by_key(|r| r.1);
            Ok(rows
                .into_iter()
                .map(|(event_id, seq)| Head { event_id, seq })
                .collect())
        }
        Err(sqlx::Error::Database(e))
            if matches!(
                e.constraint(),
                Some("scene_event_previous_id_key" | "scene_event_first_idx")
            ) =>
        {
            Err(AppendError::Conflict)
        }
        // an expected previous event that is not in this scene's stream at all
        Err(sqlx::Error::Database(e))
            if e.constraint() == Some("scene_event_scene_id_previous_id_fkey") =>
        {
            Err(AppendError::Conflict)
        }
        Err(e) => Err(e.into()),
    }
}

/// Appends events at the head of the scene's stream, whatever it is: for the server's own
/// commands, already decided under the transaction's locks. Returns the last one appended.
pub async fn append_at_head(
    tx: &mut Transaction<'_, Postgres>,
    scene_id: Uuid,
    events: &[SceneEvent],
    actor_id: Option<Uuid>,
) -> Result<Option<Head>, sqlx::Error> {
    let head = lock_head(tx, scene_id).await?;
    match append(tx, scene_id, head.map(|h| h.event_id), events, actor_id).await {
        Ok(heads) => Ok(heads.last().copied()),
        Err(AppendError::Db(e)) => Err(e),
        // the head is locked: only a writer that skipped the lock can get here
        Err(AppendError::Conflict) => Err(sqlx::Error::Protocol(
            "a scene event was appended without the scene's lock".into(),
        )),
    }
}

/// A scene's events after `after_seq`, in order, at most `limit`.
pub async fn events_after(
    executor: impl sqlx::PgExecutor<'_>,
    scene_id: Uuid,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let rows: Vec<EventRow> = sqlx::query_as(&format!(
        "select {EVENT_COLUMNS} from scene_event
         where scene_id = $1 and seq > $2 order by seq limit $3"
    ))
    .bind(scene_id)
    .bind(after_seq)
    .bind(limit)
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().map(StoredEvent::from).collect())
}

/// Every event of a scene, in order.
pub async fn load_events(
    executor: impl sqlx::PgExecutor<'_>,
    scene_id: Uuid,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    events_after(executor, scene_id, 0, i64::MAX).await
}

/// The scene's show and timeline, folded from its events (the last `show_built` and the
/// playback commands after it). None before the first show.
pub async fn show_state(
    executor: impl sqlx::PgExecutor<'_>,
    scene_id: Uuid,
) -> Result<Option<(Show, Timeline)>, sqlx::Error> {
    let rows: Vec<EventRow> = sqlx::query_as(&format!(
        "select {EVENT_COLUMNS} from scene_event
         where scene_id = $1 and event in ('show_built', 'playback')
           and seq >= coalesce((select max(seq) from scene_event
                                where scene_id = $1 and event = 'show_built'), 0)
         order by seq"
    ))
    .bind(scene_id)
    .fetch_all(executor)
    .await?;
    let events: Vec<SceneEvent> = rows
        .into_iter()
        .map(StoredEvent::from)
        .filter_map(|e| e.decode().ok())
        .collect();
    Ok(crate::events::fold_show(&events))
}

/// The head `seq` of each of the given scenes that has events.
pub async fn heads(pool: &PgPool, scene_ids: &[Uuid]) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
    sqlx::query_as(
        "select scene_id, max(seq) from scene_event where scene_id = any($1) group by scene_id",
    )
    .bind(scene_ids)
    .fetch_all(pool)
    .await
}

/// Registers a named view. `from_start`: it will consume every event already in the log;
/// otherwise only events appended from now on.
pub async fn register_view(
    pool: &PgPool,
    view: &str,
    lease_ms: i32,
    from_start: bool,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("insert into event_view (view, lease_ms) values ($1, $2) on conflict (view) do update set lease_ms = excluded.lease_ms")
        .bind(view)
        .bind(lease_ms)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "insert into event_lock (view, scene_id, acked_seq, last_seq)
         select $1, scene_id, case when $2 then 0 else max(seq) end, max(seq)
         from scene_event group by scene_id
         on conflict (view, scene_id) do nothing",
    )
    .bind(view)
    .bind(from_start)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// A scene's events claimed by one consumer instance until its lease ends.
#[derive(Debug)]
pub struct Claim {
    pub view: String,
    pub scene_id: Uuid,
    pub token: Uuid,
    pub events: Vec<StoredEvent>,
}

/// Claims the next scene with events the view has not acknowledged and no live lease, for
/// `token`, and returns up to `batch` of its events in order. None when there is nothing to do.
pub async fn claim(
    pool: &PgPool,
    view: &str,
    token: Uuid,
    batch: i64,
) -> Result<Option<Claim>, sqlx::Error> {
    let claimed: Option<(Uuid, i64)> = sqlx::query_as(
        "update event_lock l
         set locked_until = clock_timestamp() + make_interval(secs => v.lease_ms / 1000.0),
             lock_token = $2
         from event_view v
         where v.view = l.view and (l.view, l.scene_id) in (
             select view, scene_id from event_lock
             where view = $1 and acked_seq < last_seq
               and (locked_until is null or locked_until < clock_timestamp())
             order by last_seq
             limit 1
             for update skip locked)
         returning l.scene_id, l.acked_seq",
    )
    .bind(view)
    .bind(token)
    .fetch_optional(pool)
    .await?;
    let Some((scene_id, acked)) = claimed else {
        return Ok(None);
    };
    let events = events_after(pool, scene_id, acked, batch).await?;
    Ok(Some(Claim {
        view: view.to_owned(),
        scene_id,
        token,
        events,
    }))
}

/// Acknowledges the claim's events up to `seq` and ends its lease, inside the transaction
/// that applied them. False when the lease was lost (it ran out and another instance claimed
/// the events): the caller must roll back, so nothing is applied twice.
pub async fn ack(conn: &mut PgConnection, claim: &Claim, seq: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "update event_lock set acked_seq = $3, locked_until = null, lock_token = null
         where view = $1 and scene_id = $2 and lock_token = $4 and acked_seq < $3",
    )
    .bind(&claim.view)
    .bind(claim.scene_id)
    .bind(seq)
    .bind(claim.token)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Keeps a claim whose events could not be applied leased for `delay` more (then they are
/// delivered again), so one failing scene does not hold up the view's other scenes.
pub async fn postpone(
    pool: &PgPool,
    claim: &Claim,
    delay: std::time::Duration,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update event_lock set locked_until = clock_timestamp() + make_interval(secs => $4)
         where view = $1 and scene_id = $2 and lock_token = $3",
    )
    .bind(&claim.view)
    .bind(claim.scene_id)
    .bind(claim.token)
    .bind(delay.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(())
}
