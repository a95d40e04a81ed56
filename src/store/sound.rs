//! Beacons, sound setups and listening sessions (`beacon`, `sound_setup`, `sound_session`,
//! `sound_listener`, migration 0012).

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

/// A scene's scale and air temperature.
#[derive(Debug, Clone, Copy, PartialEq, sqlx::FromRow)]
pub struct SoundSetup {
    pub metres_per_unit: f64,
    pub temperature_c: f64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BeaconRow {
    pub beacon_id: Uuid,
    pub scene_id: Uuid,
    pub slot: i16,
    pub name: String,
    pub x: f64,
    pub y: f64,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

const BEACON_COLUMNS: &str = "beacon_id, scene_id, slot, name, x, y, created_at";

pub async fn setup(pool: &PgPool, scene_id: Uuid) -> Result<Option<SoundSetup>, sqlx::Error> {
    sqlx::query_as("select metres_per_unit, temperature_c from sound_setup where scene_id = $1")
        .bind(scene_id)
        .fetch_optional(pool)
        .await
}

pub async fn put_setup(
    pool: &PgPool,
    scene_id: Uuid,
    setup: SoundSetup,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into sound_setup (scene_id, metres_per_unit, temperature_c) values ($1, $2, $3)
         on conflict (scene_id) do update
         set metres_per_unit = excluded.metres_per_unit, temperature_c = excluded.temperature_c,
             updated_at = now()",
    )
    .bind(scene_id)
    .bind(setup.metres_per_unit)
    .bind(setup.temperature_c)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn beacons(pool: &PgPool, scene_id: Uuid) -> Result<Vec<BeaconRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {BEACON_COLUMNS} from beacon where scene_id = $1 order by slot"
    ))
    .bind(scene_id)
    .fetch_all(pool)
    .await
}

pub async fn beacon(pool: &PgPool, beacon_id: Uuid) -> Result<Option<BeaconRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {BEACON_COLUMNS} from beacon where beacon_id = $1"
    ))
    .bind(beacon_id)
    .fetch_optional(pool)
    .await
}

/// The beacon whose page holds `key` (none: no such beacon, or another key).
pub async fn beacon_by_key(
    pool: &PgPool,
    beacon_id: Uuid,
    key_sha256: &[u8],
) -> Result<Option<BeaconRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {BEACON_COLUMNS} from beacon where beacon_id = $1 and key_sha256 = $2"
    ))
    .bind(beacon_id)
    .bind(key_sha256)
    .fetch_optional(pool)
    .await
}

/// Adds a beacon in the lowest free slot (`slot`: that one). None when the slot is taken or
/// every slot is.
pub async fn insert_beacon(
    pool: &PgPool,
    scene_id: Uuid,
    slot: Option<i16>,
    name: &str,
    (x, y): (f64, f64),
    key_sha256: &[u8],
) -> Result<Option<BeaconRow>, sqlx::Error> {
    // the lowest free slot is picked in the insert itself; two at once may pick the same,
    // and the unique (scene, slot) refuses the second
    let inserted = sqlx::query_as(&format!(
        "insert into beacon (scene_id, slot, name, x, y, key_sha256)
         select $1, s, $3, $4, $5, $6 from
           (select coalesce($2, (select min(g) from generate_series(0, 7) g
                                 where g not in (select slot from beacon where scene_id = $1)))::smallint s) free
         where s is not null
         on conflict (scene_id, slot) do nothing
         returning {BEACON_COLUMNS}"
    ))
    .bind(scene_id)
    .bind(slot)
    .bind(name)
    .bind(x)
    .bind(y)
    .bind(key_sha256)
    .fetch_optional(pool)
    .await?;
    Ok(inserted)
}

pub async fn update_beacon(
    pool: &PgPool,
    beacon_id: Uuid,
    name: Option<&str>,
    x: Option<f64>,
    y: Option<f64>,
) -> Result<Option<BeaconRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "update beacon set name = coalesce($2, name), x = coalesce($3, x), y = coalesce($4, y)
         where beacon_id = $1 returning {BEACON_COLUMNS}"
    ))
    .bind(beacon_id)
    .bind(name)
    .bind(x)
    .bind(y)
    .fetch_optional(pool)
    .await
}

pub async fn delete_beacon(pool: &PgPool, beacon_id: Uuid) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("delete from beacon where beacon_id = $1")
        .bind(beacon_id)
        .execute(pool)
        .await?
        .rows_affected()
        > 0)
}

/// A beacon as a session keeps it: its slot and place in metres.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionBeacon {
    pub slot: u8,
    pub x_m: f64,
    pub y_m: f64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SoundSession {
    pub sound_session_id: Uuid,
    pub scene_id: Uuid,
    pub unlocated_only: bool,
    pub starts_at_us: i64,
    pub period_us: i32,
    pub slot_us: i32,
    pub repeats: i16,
    pub beacons: sqlx::types::Json<Vec<SessionBeacon>>,
    pub metres_per_unit: f64,
    pub speed_m_s: f64,
    pub phones: i32,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl SoundSession {
    /// When the phones stop recording: the last slot of the last period, and its tail.
    pub fn ends_at_us(&self) -> i64 {
        self.starts_at_us + i64::from(self.repeats) * i64::from(self.period_us)
    }
}

const SESSION_COLUMNS: &str = "sound_session_id, scene_id, unlocated_only, starts_at_us, \
    period_us, slot_us, repeats, beacons, metres_per_unit, speed_m_s, phones, created_at";

/// A new session's schedule and what it is solved with.
pub struct NewSession<'a> {
    pub scene_id: Uuid,
    pub created_by: Uuid,
    pub unlocated_only: bool,
    pub starts_at_us: i64,
    pub period_us: i32,
    pub slot_us: i32,
    pub repeats: i16,
    pub beacons: &'a [SessionBeacon],
    pub metres_per_unit: f64,
    pub speed_m_s: f64,
}

pub async fn insert_session(
    pool: &PgPool,
    s: &NewSession<'_>,
) -> Result<SoundSession, sqlx::Error> {
    sqlx::query_as(&format!(
        "insert into sound_session (scene_id, created_by, unlocated_only, starts_at_us, period_us,
           slot_us, repeats, beacons, metres_per_unit, speed_m_s)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) returning {SESSION_COLUMNS}"
    ))
    .bind(s.scene_id)
    .bind(s.created_by)
    .bind(s.unlocated_only)
    .bind(s.starts_at_us)
    .bind(s.period_us)
    .bind(s.slot_us)
    .bind(s.repeats)
    .bind(sqlx::types::Json(s.beacons))
    .bind(s.metres_per_unit)
    .bind(s.speed_m_s)
    .fetch_one(pool)
    .await
}

pub async fn session(pool: &PgPool, session_id: Uuid) -> Result<Option<SoundSession>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {SESSION_COLUMNS} from sound_session where sound_session_id = $1"
    ))
    .bind(session_id)
    .fetch_optional(pool)
    .await
}

/// The sessions a beacon plays in: those not over yet (newest last).
pub async fn coming_sessions(
    pool: &PgPool,
    scene_id: Uuid,
    now_us: i64,
) -> Result<Vec<SoundSession>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {SESSION_COLUMNS} from sound_session
         where scene_id = $1 and starts_at_us + repeats::bigint * period_us > $2
         order by starts_at_us limit 8"
    ))
    .bind(scene_id)
    .bind(now_us)
    .fetch_all(pool)
    .await
}

/// Records the phones a node told to listen, and counts them.
pub async fn add_listeners(
    pool: &PgPool,
    session_id: Uuid,
    pixel_ids: &[Uuid],
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "insert into sound_listener (sound_session_id, pixel_id)
         select $1, p from unnest($2::uuid[]) p on conflict do nothing",
    )
    .bind(session_id)
    .bind(pixel_ids)
    .execute(&mut *tx)
    .await?;
    sqlx::query("update sound_session set phones = phones + $2 where sound_session_id = $1")
        .bind(session_id)
        .bind(pixel_ids.len() as i32)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Takes a phone's one report of a session: false when it was not told to listen in it, or
/// has reported already.
pub async fn take_report(
    pool: &PgPool,
    session_id: Uuid,
    pixel_id: Uuid,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "update sound_listener set reported_at = now()
         where sound_session_id = $1 and pixel_id = $2 and reported_at is null",
    )
    .bind(session_id)
    .bind(pixel_id)
    .execute(pool)
    .await?
    .rows_affected()
        == 1)
}

/// What a report came to: placed or not.
pub async fn record_outcome(
    pool: &PgPool,
    session_id: Uuid,
    pixel_id: Uuid,
    placed: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update sound_listener set placed = $3 where sound_session_id = $1 and pixel_id = $2",
    )
    .bind(session_id)
    .bind(pixel_id)
    .bind(placed)
    .execute(pool)
    .await?;
    Ok(())
}

/// How many phones reported, were placed and were refused.
pub async fn tally(pool: &PgPool, session_id: Uuid) -> Result<(i64, i64, i64), sqlx::Error> {
    sqlx::query_as(
        "select count(reported_at), count(*) filter (where placed), count(*) filter (where not placed)
         from sound_listener where sound_session_id = $1",
    )
    .bind(session_id)
    .fetch_one(pool)
    .await
}
