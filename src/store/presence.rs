//! What each node reports of its phones (`node_presence`, migration 0006).

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use crate::dataplane::presence::Presence;

/// Replaces this node's reports with `scenes` (a scene not listed has no phones here now).
pub async fn report(
    pool: &PgPool,
    node_id: Uuid,
    scenes: &[(Uuid, Presence)],
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let ids: Vec<Uuid> = scenes.iter().map(|s| s.0).collect();
    sqlx::query("delete from node_presence where node_id = $1 and scene_id <> all($2)")
        .bind(node_id)
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    for (scene_id, p) in scenes {
        let histogram: Vec<i32> = p
            .sync_error_histogram
            .iter()
            .map(|b| b.count as i32)
            .collect();
        sqlx::query(
            "insert into node_presence (node_id, scene_id, connected, located, synced, histogram)
             values ($1, $2, $3, $4, $5, $6)
             on conflict (node_id, scene_id) do update set connected = excluded.connected,
                 located = excluded.located, synced = excluded.synced,
                 histogram = excluded.histogram, updated_at = now()",
        )
        .bind(node_id)
        .bind(scene_id)
        .bind(p.connected as i32)
        .bind(p.located as i32)
        .bind(p.synced as i32)
        .bind(&histogram)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// The other nodes' reports of a scene, made within `fresh`.
pub async fn others(
    pool: &PgPool,
    node_id: Uuid,
    scene_id: Uuid,
    fresh: Duration,
) -> Result<Vec<Presence>, sqlx::Error> {
    let rows: Vec<(i32, i32, i32, Vec<i32>)> = sqlx::query_as(
        "select connected, located, synced, histogram from node_presence
         where scene_id = $1 and node_id <> $2
           and updated_at > now() - make_interval(secs => $3)",
    )
    .bind(scene_id)
    .bind(node_id)
    .bind(fresh.as_secs_f64())
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(connected, located, synced, histogram)| {
            let mut p = Presence::empty();
            p.nodes = 1;
            p.connected = connected.max(0) as usize;
            p.located = located.max(0) as usize;
            p.synced = synced.max(0) as usize;
            for (bucket, count) in p.sync_error_histogram.iter_mut().zip(histogram) {
                bucket.count = count.max(0) as usize;
            }
            p
        })
        .collect())
}

/// Removes this node's reports (it is shutting down; see `nodes::forget_node`).
pub async fn forget_node(pool: &PgPool, node_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("delete from node_presence where node_id = $1")
        .bind(node_id)
        .execute(pool)
        .await?;
    Ok(())
}
