//! Observations, geo-references and seat maps.

use sqlx::types::Json;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::locate::gps::GeoPoint;
use crate::locate::seat::Seat;
use crate::locate::{Current, Observation};
use crate::scene::LocationMethod;

/// The pixel's current position, locked for the rest of the transaction. Outer none: no such
/// pixel in the scene; `kicked` true: it may not be placed.
pub async fn lock_pixel(
    tx: &mut Transaction<'_, Postgres>,
    scene_id: Uuid,
    pixel_id: Uuid,
) -> Result<Option<(Option<Current>, bool)>, sqlx::Error> {
    type Row = (Option<f64>, Option<f64>, Option<i16>, String);
    let row: Option<Row> = sqlx::query_as(
        "select x, y, location_method_id, status from pixel
         where scene_id = $1 and pixel_id = $2 for update",
    )
    .bind(scene_id)
    .bind(pixel_id)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.map(|(x, y, method, status)| {
        let current = match (x, y, method.and_then(LocationMethod::from_id)) {
            (Some(x), Some(y), Some(method)) => Some(Current { x, y, method }),
            _ => None,
        };
        (current, status == "kicked")
    }))
}

#[tracing::instrument(skip_all, err)]
pub async fn insert_observation(
    tx: &mut Transaction<'_, Postgres>,
    scene_id: Uuid,
    pixel_id: Uuid,
    obs: &Observation,
    observer_id: Option<Uuid>,
    contradiction: Option<f64>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into observation (scene_id, pixel_id, x, y, location_method_id, confidence,
             observer_id, contradiction)
         values ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(scene_id)
    .bind(pixel_id)
    .bind(obs.x)
    .bind(obs.y)
    .bind(obs.method.id())
    .bind(obs.confidence)
    .bind(observer_id)
    .bind(contradiction)
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
pub async fn replace_seats(
    tx: &mut Transaction<'_, Postgres>,
    map: SeatMap,
    seats: &[Seat],
) -> Result<(), sqlx::Error> {
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

/// Records many observations of one method and observer at once.
pub async fn insert_placements(
    tx: &mut Transaction<'_, Postgres>,
    scene_id: Uuid,
    placements: &[(Uuid, f64, f64)],
    method: LocationMethod,
    confidence: f32,
    observer_id: Uuid,
) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = placements.iter().map(|p| p.0).collect();
    let xs: Vec<f64> = placements.iter().map(|p| p.1).collect();
    let ys: Vec<f64> = placements.iter().map(|p| p.2).collect();
    sqlx::query(
        "insert into observation (scene_id, pixel_id, x, y, location_method_id, confidence, observer_id)
         select $1, v.pixel_id, v.x, v.y, $5, $6, $7
         from unnest($2::uuid[], $3::float8[], $4::float8[]) as v(pixel_id, x, y)",
    )
    .bind(scene_id)
    .bind(&ids)
    .bind(&xs)
    .bind(&ys)
    .bind(method.id())
    .bind(confidence)
    .bind(observer_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The deployment's signing secret (made by the migration).
pub async fn server_secret(pool: &PgPool) -> Result<Vec<u8>, sqlx::Error> {
    sqlx::query_scalar("select secret from server_secret where server_secret_id = 1")
        .fetch_one(pool)
        .await
}
