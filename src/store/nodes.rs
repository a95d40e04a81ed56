//! The nodes that are up (`node`, migration 0008), and the notifications nodes send each other
//! (`pg_notify`): the log's own (a trigger, migration 0005), phone signals and their answers.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

/// The channel the log's trigger announces appends on (migration 0005).
pub const SCENE_EVENT_CHANNEL: &str = "c3s_scene_event";
/// Signals to single phones, for whichever node holds them (`nodes::Signals`).
pub const SIGNAL_CHANNEL: &str = "c3s_phone_signal";
/// Each node's answer to a signal: how many of its phones it reached.
pub const SIGNAL_ACK_CHANNEL: &str = "c3s_phone_signal_ack";

/// Records that this node is up (now).
pub async fn heartbeat(pool: &PgPool, node_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into node (node_id) values ($1)
         on conflict (node_id) do update set seen_at = now()",
    )
    .bind(node_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// The other nodes seen within `fresh`.
pub async fn other_nodes(
    pool: &PgPool,
    node_id: Uuid,
    fresh: Duration,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "select node_id from node
         where node_id <> $1 and seen_at > now() - make_interval(secs => $2)",
    )
    .bind(node_id)
    .bind(fresh.as_secs_f64())
    .fetch_all(pool)
    .await
}

/// Removes this node's heartbeat and presence reports (it is shutting down).
pub async fn forget_node(pool: &PgPool, node_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("delete from node where node_id = $1")
        .bind(node_id)
        .execute(pool)
        .await?;
    super::presence::forget_node(pool, node_id).await
}

/// Sends `payload` to every node listening on `channel` (this one included).
pub async fn notify(pool: &PgPool, channel: &str, payload: &str) -> Result<(), sqlx::Error> {
    sqlx::query("select pg_notify($1, $2)")
        .bind(channel)
        .bind(payload)
        .execute(pool)
        .await?;
    Ok(())
}

/// Whether PostgreSQL answers (for `/readyz`).
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query_scalar::<_, i32>("select 1")
        .fetch_one(pool)
        .await
        .map(drop)
}
