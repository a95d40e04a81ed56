//! Flash sessions and the code words they issued (`flash_session`, `flash_code`, migration
//! 0009).

use std::collections::HashMap;

use sqlx::PgPool;
use uuid::Uuid;

use crate::locate::flash::{code, Timing};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FlashSession {
    pub flash_session_id: Uuid,
    pub scene_id: Uuid,
    pub unlocated_only: bool,
    pub starts_at_us: i64,
    pub symbol_us: i32,
    pub slots: i32,
    pub phones: i32,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl FlashSession {
    pub fn timing(&self) -> Timing {
        Timing {
            starts_at_us: self.starts_at_us,
            symbol_us: i64::from(self.symbol_us),
        }
    }
}

const COLUMNS: &str =
    "flash_session_id, scene_id, unlocated_only, starts_at_us, symbol_us, slots, phones, created_at";

pub async fn insert_session(
    pool: &PgPool,
    scene_id: Uuid,
    created_by: Uuid,
    unlocated_only: bool,
    timing: Timing,
) -> Result<FlashSession, sqlx::Error> {
    sqlx::query_as(&format!(
        "insert into flash_session (scene_id, created_by, unlocated_only, starts_at_us, symbol_us, slots)
         values ($1, $2, $3, $4, $5, $6) returning {COLUMNS}"
    ))
    .bind(scene_id)
    .bind(created_by)
    .bind(unlocated_only)
    .bind(timing.starts_at_us)
    .bind(timing.symbol_us as i32)
    .bind(code::SLOTS as i32)
    .fetch_one(pool)
    .await
}

pub async fn session(pool: &PgPool, session_id: Uuid) -> Result<Option<FlashSession>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {COLUMNS} from flash_session where flash_session_id = $1"
    ))
    .bind(session_id)
    .fetch_optional(pool)
    .await
}

/// Counts phones a node issued codes to.
pub async fn add_phones(pool: &PgPool, session_id: Uuid, phones: usize) -> Result<(), sqlx::Error> {
    sqlx::query("update flash_session set phones = phones + $2 where flash_session_id = $1")
        .bind(session_id)
        .bind(phones as i32)
        .execute(pool)
        .await?;
    Ok(())
}

/// A code word for each pixel (drawn at random, distinct within the session; a pixel that
/// has one already keeps it). Returns every pixel's code.
pub async fn issue_codes(
    pool: &PgPool,
    session_id: Uuid,
    pixel_ids: &[Uuid],
) -> Result<Vec<(Uuid, u64)>, sqlx::Error> {
    let mut issued: HashMap<Uuid, u64> = HashMap::new();
    // a few rounds: a drawn code that another phone holds already (a chance of phones /
    // 20^9 each) is drawn again
    for _ in 0..4 {
        let wanting: Vec<Uuid> = pixel_ids
            .iter()
            .filter(|p| !issued.contains_key(p))
            .copied()
            .collect();
        if wanting.is_empty() {
            break;
        }
        for batch in wanting.chunks(10_000) {
            let codes: Vec<i64> = {
                let mut rng = rand::thread_rng();
                batch
                    .iter()
                    .map(|_| code::random_code(&mut rng) as i64)
                    .collect()
            };
            sqlx::query(
                "insert into flash_code (flash_session_id, code, pixel_id)
                 select $1, c.code, c.pixel_id from unnest($2::bigint[], $3::uuid[]) as c(code, pixel_id)
                 on conflict do nothing",
            )
            .bind(session_id)
            .bind(&codes)
            .bind(batch)
            .execute(pool)
            .await?;
        }
        let rows: Vec<(Uuid, i64)> = sqlx::query_as(
            "select pixel_id, code from flash_code where flash_session_id = $1 and pixel_id = any($2)",
        )
        .bind(session_id)
        .bind(&wanting)
        .fetch_all(pool)
        .await?;
        issued.extend(rows.into_iter().map(|(p, c)| (p, c as u64)));
    }
    Ok(issued.into_iter().collect())
}

/// The pixels the session issued these code words to (codes it did not issue are absent).
pub async fn pixels_of(
    pool: &PgPool,
    session_id: Uuid,
    codes: &[u64],
) -> Result<HashMap<u64, Uuid>, sqlx::Error> {
    let codes: Vec<i64> = codes.iter().map(|&c| c as i64).collect();
    let rows: Vec<(i64, Uuid)> = sqlx::query_as(
        "select code, pixel_id from flash_code where flash_session_id = $1 and code = any($2)",
    )
    .bind(session_id)
    .bind(&codes)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(c, p)| (c as u64, p)).collect())
}
