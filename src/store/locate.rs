//! Observations, geo-references and seat maps.

use std::collections::HashMap;

use sqlx::types::Json;
use sqlx::PgPool;
use uuid::Uuid;

use super::Tx;

use crate::locate::gps::GeoPoint;
use crate::locate::seat::Seat;
use crate::locate::{Current, Observation};
use crate::scene::LocationMethod;

/// A pixel as placing it needs to know it.
#[derive(Debug, Clone, Copy)]
pub struct PixelNow {
    pub current: Option<Current>,
    /// How sure the observation that placed it was.
    pub confidence: Option<f32>,
    /// A kicked pixel may not be placed.
    pub kicked: bool,
}

/// The scene's pixels among `pixel_ids`, locked for the rest of the transaction (in pixel
/// order, so two batches never wait on each other in opposite orders). A pixel not in the
/// scene is not in the map.
pub async fn lock_pixels(
    tx: &mut Tx,
    scene_id: Uuid,
    pixel_ids: &[Uuid],
) -> Result<HashMap<Uuid, PixelNow>, sqlx::Error> {
    type Row = (
        Uuid,
        Option<f64>,
        Option<f64>,
        Option<i16>,
        Option<f32>,
        String,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "select pixel_id, x, y, location_method_id, confidence, status from pixel
         where scene_id = $1 and pixel_id = any($2) order by pixel_id for update",
    )
    .bind(scene_id)
    .bind(pixel_ids)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(pixel_id, x, y, method, confidence, status)| {
            let current = match (x, y, method.and_then(LocationMethod::from_id)) {
                (Some(x), Some(y), Some(method)) => Some(Current { x, y, method }),
                _ => None,
            };
            let kicked = status == "kicked";
            let now = PixelNow {
                current,
                confidence,
                kicked,
            };
            (pixel_id, now)
        })
        .collect())
}

/// One observation to record.
#[derive(Debug, Clone, Copy)]
pub struct NewObservation {
    pub pixel_id: Uuid,
    pub obs: Observation,
    /// Who saw it; none for a phone locating itself.
    pub observer: Option<Uuid>,
    /// How far it is from where the pixel was, when it disagreed.
    pub contradiction: Option<f64>,
}

/// Records observations, all in one statement.
#[tracing::instrument(skip_all, err)]
pub async fn insert_observations(
    tx: &mut Tx,
    scene_id: Uuid,
    observations: &[NewObservation],
) -> Result<(), sqlx::Error> {
    if observations.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&NewObservation) -> f64| observations.iter().map(f).collect::<Vec<_>>();
    let pixels: Vec<Uuid> = observations.iter().map(|o| o.pixel_id).collect();
    let methods: Vec<i16> = observations.iter().map(|o| o.obs.method.id()).collect();
    let confidences: Vec<f32> = observations.iter().map(|o| o.obs.confidence).collect();
    let observers: Vec<Option<Uuid>> = observations.iter().map(|o| o.observer).collect();
    let contradictions: Vec<Option<f64>> = observations.iter().map(|o| o.contradiction).collect();
    sqlx::query(
        "insert into observation (scene_id, pixel_id, x, y, location_method_id, confidence,
             observer_id, contradiction)
         select $1, o.* from unnest($2::uuid[], $3::float8[], $4::float8[], $5::smallint[],
             $6::real[], $7::uuid[], $8::float8[]) as o",
    )
    .bind(scene_id)
    .bind(&pixels)
    .bind(col(|o| o.obs.x))
    .bind(col(|o| o.obs.y))
    .bind(&methods)
    .bind(&confidences)
    .bind(&observers)
    .bind(&contradictions)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn set_geo_reference(
    executor: impl sqlx::PgExecutor<'_>,
    scene_id: Uuid,
    points: &[GeoPoint],
    accuracy_m: f64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into scene_geo_reference (scene_id, points, accuracy_m) values ($1, $2, $3)
         on conflict (scene_id) do update set points = excluded.points,
             accuracy_m = excluded.accuracy_m, updated_at = now()",
    )
    .bind(scene_id)
    .bind(Json(points))
    .bind(accuracy_m)
    .execute(executor)
    .await?;
    Ok(())
}

pub async fn geo_reference(
    pool: &PgPool,
    scene_id: Uuid,
) -> Result<Option<(Vec<GeoPoint>, f64)>, sqlx::Error> {
    let row: Option<(Json<Vec<GeoPoint>>, f64)> =
        sqlx::query_as("select points, accuracy_m from scene_geo_reference where scene_id = $1")
            .bind(scene_id)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(p, a)| (p.0, a)))
}

/// Whose seat map: a scene's own (`seat`) or a venue's (`venue_seat`, used by the venue's
/// scenes that have none).
#[derive(Debug, Clone, Copy)]
pub enum SeatMap {
    Scene(Uuid),
    Venue(Uuid),
}

/// Replaces a seat map with `seats`, in batches of 10 000.
pub async fn replace_seats(tx: &mut Tx, map: SeatMap, seats: &[Seat]) -> Result<(), sqlx::Error> {
    let (table, key, id) = match map {
        SeatMap::Scene(id) => ("seat", "scene_id", id),
        SeatMap::Venue(id) => ("venue_seat", "venue_id", id),
    };
    sqlx::query(&format!("delete from {table} where {key} = $1"))
        .bind(id)
        .execute(&mut **tx)
        .await?;
    for batch in seats.chunks(10_000) {
        let col = |f: fn(&Seat) -> String| batch.iter().map(f).collect::<Vec<_>>();
        let xs: Vec<f64> = batch.iter().map(|s| s.x).collect();
        let ys: Vec<f64> = batch.iter().map(|s| s.y).collect();
        sqlx::query(&format!(
            "insert into {table} ({key}, section, row_name, seat, x, y)
             select $1, * from unnest($2::text[], $3::text[], $4::text[], $5::float8[], $6::float8[])"
        ))
        .bind(id)
        .bind(col(|s| s.section.clone()))
        .bind(col(|s| s.row.clone()))
        .bind(col(|s| s.seat.clone()))
        .bind(&xs)
        .bind(&ys)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Whether another phone of the scene (not kicked) already stands at (x, y) by its seat.
pub async fn seat_taken(
    pool: &PgPool,
    scene_id: Uuid,
    pixel_id: Uuid,
    x: f64,
    y: f64,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "select exists (select 1 from pixel where scene_id = $1 and pixel_id <> $2
           and status = 'located' and location_method_id = $3 and x = $4 and y = $5)",
    )
    .bind(scene_id)
    .bind(pixel_id)
    .bind(LocationMethod::Seat.id())
    .bind(x)
    .bind(y)
    .fetch_one(pool)
    .await
}

pub async fn seat_position(
    pool: &PgPool,
    scene_id: Uuid,
    section: &str,
    row: &str,
    seat: &str,
) -> Result<Option<(f64, f64)>, sqlx::Error> {
    // the scene's own seat map, else its venue's (migration 0007)
    sqlx::query_as(
        "select x, y from seat where scene_id = $1 and section = $2 and row_name = $3 and seat = $4
         union all
         select vs.x, vs.y from venue_seat vs join scene s on s.venue_id = vs.venue_id
         where s.scene_id = $1 and vs.section = $2 and vs.row_name = $3 and vs.seat = $4
           and not exists (select 1 from seat where scene_id = $1)
         limit 1",
    )
    .bind(scene_id)
    .bind(section)
    .bind(row)
    .bind(seat)
    .fetch_optional(pool)
    .await
}

pub async fn seat_count(pool: &PgPool, scene_id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("select count(*) from seat where scene_id = $1")
        .bind(scene_id)
        .fetch_one(pool)
        .await
}

/// The deployment's signing secret (made by the migration).
pub async fn server_secret(pool: &PgPool) -> Result<Vec<u8>, sqlx::Error> {
    sqlx::query_scalar("select secret from server_secret where server_secret_id = 1")
        .fetch_one(pool)
        .await
}
