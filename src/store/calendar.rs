//! Organizers, venues, the calendar, registrations and search (migration 0007).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, QueryBuilder, Transaction};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Organizer {
    pub organizer_id: Uuid,
    pub name: String,
    pub description: String,
    pub website: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Member {
    pub user_id: Uuid,
    pub login: Option<String>,
    pub display_name: String,
    /// `owner` (manages members too) or `member`.
    pub role: String,
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Feature {
    pub code: String,
    pub description: String,
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Venue {
    pub venue_id: Uuid,
    pub organizer_id: Uuid,
    pub name: String,
    pub address: String,
    pub lat: f64,
    pub lon: f64,
    pub capacity: i32,
    /// Accessibility features (codes of `GET /api/accessibility-features`).
    pub features: Vec<String>,
    /// Free-form facts: transport, parking, doors open, ...
    #[schema(value_type = Object)]
    pub details: sqlx::types::Json<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A venue's fields as written.
#[derive(Debug, Clone)]
pub struct VenueFields {
    pub name: String,
    pub address: String,
    pub lat: f64,
    pub lon: f64,
    pub capacity: i32,
    pub details: serde_json::Value,
}

/// When and where a scene is on, and how many may register.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Schedule {
    pub scene_id: Uuid,
    pub organizer_id: Option<Uuid>,
    pub venue_id: Option<Uuid>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    /// Registrations allowed (none: no registration).
    pub capacity: Option<i32>,
    pub registered: i32,
}

/// A show as the calendar and search list it.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Listing {
    pub scene_id: Uuid,
    pub name: String,
    pub description: String,
    pub status: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: Option<DateTime<Utc>>,
    pub capacity: Option<i32>,
    pub venue_id: Uuid,
    pub venue_name: String,
    pub venue_address: String,
    pub lat: f64,
    pub lon: f64,
    pub features: Vec<String>,
    pub organizer_id: Option<Uuid>,
    pub organizer_name: Option<String>,
    /// Search only: relevance to the text asked for (higher first).
    #[sqlx(default)]
    pub rank: Option<f32>,
    /// Search only: kilometres from the point asked for.
    #[sqlx(default)]
    pub distance_km: Option<f64>,
}

const LISTING_COLUMNS: &str = "s.scene_id, s.name, s.description, s.status, s.starts_at,
    s.ends_at, s.capacity, v.venue_id, v.name as venue_name, v.address as venue_address, v.lat,
    v.lon, coalesce((select array_agg(f.code order by f.code) from venue_feature vf
        join accessibility_feature f using (feature_id) where vf.venue_id = v.venue_id), '{}')
        as features,
    o.organizer_id, o.name as organizer_name";

const LISTING_FROM: &str = "from scene s join venue v on v.venue_id = s.venue_id
    left join organizer o on o.organizer_id = s.organizer_id";

// ---------------------------------------------------------------- organizers

pub async fn insert_organizer(
    tx: &mut Transaction<'_, Postgres>,
    name: &str,
    description: &str,
    website: &str,
    owner: Uuid,
) -> Result<Organizer, sqlx::Error> {
    let organizer: Organizer = sqlx::query_as(
        "insert into organizer (name, description, website) values ($1, $2, $3)
         returning organizer_id, name, description, website, created_at",
    )
    .bind(name)
    .bind(description)
    .bind(website)
    .fetch_one(&mut **tx)
    .await?;
    sqlx::query(
        "insert into organizer_member (organizer_id, user_id, role) values ($1, $2, 'owner')",
    )
    .bind(organizer.organizer_id)
    .bind(owner)
    .execute(&mut **tx)
    .await?;
    Ok(organizer)
}

pub async fn organizer_by_id(
    executor: impl sqlx::PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<Organizer>, sqlx::Error> {
    sqlx::query_as(
        "select organizer_id, name, description, website, created_at from organizer
         where organizer_id = $1",
    )
    .bind(id)
    .fetch_optional(executor)
    .await
}

/// The user's role in the organizer; none when not a member.
pub async fn member_role(
    executor: impl sqlx::PgExecutor<'_>,
    organizer_id: Uuid,
    user_id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("select role from organizer_member where organizer_id = $1 and user_id = $2")
        .bind(organizer_id)
        .bind(user_id)
        .fetch_optional(executor)
        .await
}

pub async fn set_member(
    pool: &PgPool,
    organizer_id: Uuid,
    user_id: Uuid,
    role: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into organizer_member (organizer_id, user_id, role) values ($1, $2, $3)
         on conflict (organizer_id, user_id) do update set role = excluded.role",
    )
    .bind(organizer_id)
    .bind(user_id)
    .bind(role)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn remove_member(
    pool: &PgPool,
    organizer_id: Uuid,
    user_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("delete from organizer_member where organizer_id = $1 and user_id = $2")
        .bind(organizer_id)
        .bind(user_id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn members(pool: &PgPool, organizer_id: Uuid) -> Result<Vec<Member>, sqlx::Error> {
    sqlx::query_as(
        "select u.user_id, u.login, u.display_name, m.role from organizer_member m
         join app_user u using (user_id) where m.organizer_id = $1 order by m.created_at",
    )
    .bind(organizer_id)
    .fetch_all(pool)
    .await
}

// ---------------------------------------------------------------- venues

pub async fn features(pool: &PgPool) -> Result<Vec<Feature>, sqlx::Error> {
    sqlx::query_as("select code, description from accessibility_feature order by feature_id")
        .fetch_all(pool)
        .await
}

/// The ids of the named features; the names that are not features as the error.
pub async fn feature_ids(
    pool: &PgPool,
    codes: &[String],
) -> Result<Result<Vec<i16>, Vec<String>>, sqlx::Error> {
    if codes.is_empty() {
        return Ok(Ok(Vec::new()));
    }
    let known: Vec<(i16, String)> =
        sqlx::query_as("select feature_id, code from accessibility_feature where code = any($1)")
            .bind(codes)
            .fetch_all(pool)
            .await?;
    let unknown: Vec<String> = codes
        .iter()
        .filter(|c| !known.iter().any(|(_, k)| k == *c))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Ok(Err(unknown));
    }
    let mut ids: Vec<i16> = known.into_iter().map(|(id, _)| id).collect();
    ids.sort_unstable();
    ids.dedup();
    Ok(Ok(ids))
}

const VENUE_COLUMNS: &str = "v.venue_id, v.organizer_id, v.name, v.address, v.lat, v.lon,
    v.capacity, v.details, v.created_at, v.updated_at,
    coalesce((select array_agg(f.code order by f.code) from venue_feature vf
        join accessibility_feature f using (feature_id) where vf.venue_id = v.venue_id), '{}')
        as features";

pub async fn venue_by_id(
    executor: impl sqlx::PgExecutor<'_>,
    venue_id: Uuid,
) -> Result<Option<Venue>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {VENUE_COLUMNS} from venue v where v.venue_id = $1"
    ))
    .bind(venue_id)
    .fetch_optional(executor)
    .await
}

/// The venue, held still (`for share`) until the transaction ends.
pub async fn share_venue(
    tx: &mut Transaction<'_, Postgres>,
    venue_id: Uuid,
) -> Result<Option<Venue>, sqlx::Error> {
    sqlx::query("select 1 from venue where venue_id = $1 for share")
        .bind(venue_id)
        .execute(&mut **tx)
        .await?;
    venue_by_id(&mut **tx, venue_id).await
}

/// Inserts (`venue_id` none) or updates a venue, and replaces its features.
pub async fn save_venue(
    tx: &mut Transaction<'_, Postgres>,
    venue_id: Option<Uuid>,
    organizer_id: Uuid,
    fields: &VenueFields,
    feature_ids: &[i16],
) -> Result<Uuid, sqlx::Error> {
    let id: Uuid = match venue_id {
        None => sqlx::query_scalar(
            "insert into venue (organizer_id, name, address, lat, lon, capacity, details)
             values ($1, $2, $3, $4, $5, $6, $7) returning venue_id",
        ),
        Some(_) => sqlx::query_scalar(
            "update venue set name = $2, address = $3, lat = $4, lon = $5, capacity = $6,
                 details = $7, updated_at = now()
             where venue_id = $8 and organizer_id = $1 returning venue_id",
        ),
    }
    .bind(organizer_id)
    .bind(&fields.name)
    .bind(&fields.address)
    .bind(fields.lat)
    .bind(fields.lon)
    .bind(fields.capacity)
    .bind(sqlx::types::Json(&fields.details))
    .bind(venue_id)
    .fetch_one(&mut **tx)
    .await?;
    sqlx::query("delete from venue_feature where venue_id = $1 and feature_id <> all($2)")
        .bind(id)
        .bind(feature_ids)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "insert into venue_feature (venue_id, feature_id) select $1, unnest($2::smallint[])
         on conflict do nothing",
    )
    .bind(id)
    .bind(feature_ids)
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

// ---------------------------------------------------------------- the calendar

pub async fn schedule_of(
    executor: impl sqlx::PgExecutor<'_>,
    scene_id: Uuid,
) -> Result<Option<Schedule>, sqlx::Error> {
    sqlx::query_as(
        "select scene_id, organizer_id, venue_id, starts_at, ends_at, capacity, registered
         from scene where scene_id = $1",
    )
    .bind(scene_id)
    .fetch_optional(executor)
    .await
}

/// Writes a scene's schedule; none when the scene is gone. Lowering the capacity below the
/// registrations already made fails on `scene_capacity_kept`.
pub async fn set_schedule(
    tx: &mut Transaction<'_, Postgres>,
    s: &Schedule,
) -> Result<Option<Schedule>, sqlx::Error> {
    sqlx::query_as(
        "update scene set organizer_id = $2, venue_id = $3, starts_at = $4, ends_at = $5,
             capacity = $6, updated_at = clock_timestamp()
         where scene_id = $1
         returning scene_id, organizer_id, venue_id, starts_at, ends_at, capacity, registered",
    )
    .bind(s.scene_id)
    .bind(s.organizer_id)
    .bind(s.venue_id)
    .bind(s.starts_at)
    .bind(s.ends_at)
    .bind(s.capacity)
    .fetch_optional(&mut **tx)
    .await
}

/// What the calendar lists.
#[derive(Debug, Clone, Default)]
pub struct CalendarFilter {
    pub venue_id: Option<Uuid>,
    pub organizer_id: Option<Uuid>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// Shows on the calendar (not drafts) starting in the window, soonest first; `limit + 1`
/// rows are asked for so the caller knows whether there are more.
pub async fn calendar(
    pool: &PgPool,
    f: &CalendarFilter,
    limit: i64,
    offset: i64,
) -> Result<Vec<Listing>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {LISTING_COLUMNS} {LISTING_FROM}
         where s.status <> 'draft' and s.starts_at is not null
           and ($1::uuid is null or s.venue_id = $1)
           and ($2::uuid is null or s.organizer_id = $2)
           and ($3::timestamptz is null or s.starts_at >= $3)
           and ($4::timestamptz is null or s.starts_at < $4)
         order by s.starts_at, s.scene_id
         limit $5 offset $6"
    ))
    .bind(f.venue_id)
    .bind(f.organizer_id)
    .bind(f.from)
    .bind(f.to)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await
}

// ---------------------------------------------------------------- registrations

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    Now,
    Already,
    Full,
    /// The scene takes no registrations, has started, or does not exist.
    NotOpen,
}

/// Registers the user for an upcoming show. Race-free: the scene's row is locked first (`for
/// no key update`, which the registration's foreign-key check does not wait for), so
/// concurrent registrations take the places one after another; the check constraint
/// `scene_capacity_kept` would refuse one too many anyway.
pub async fn register(
    pool: &PgPool,
    scene_id: Uuid,
    user_id: Uuid,
) -> Result<Registered, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let open: Option<(i32, Option<i32>)> = sqlx::query_as(
        "select registered, capacity from scene where scene_id = $1 and capacity is not null
           and starts_at > now() and status <> 'draft' and status <> 'ended' for no key update",
    )
    .bind(scene_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((registered, capacity)) = open else {
        return Ok(Registered::NotOpen);
    };
    let inserted = sqlx::query(
        "insert into registration (scene_id, user_id) values ($1, $2) on conflict do nothing",
    )
    .bind(scene_id)
    .bind(user_id)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Ok(Registered::Already);
    }
    if capacity.is_some_and(|c| registered >= c) {
        return Ok(Registered::Full);
    }
    sqlx::query("update scene set registered = registered + 1 where scene_id = $1")
        .bind(scene_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Registered::Now)
}

/// Cancels a registration; false when there was none.
pub async fn cancel(pool: &PgPool, scene_id: Uuid, user_id: Uuid) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // the same order as `register`: the scene's row, then the registration
    sqlx::query("select 1 from scene where scene_id = $1 for no key update")
        .bind(scene_id)
        .execute(&mut *tx)
        .await?;
    let removed = sqlx::query("delete from registration where scene_id = $1 and user_id = $2")
        .bind(scene_id)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    if removed.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query("update scene set registered = registered - 1 where scene_id = $1")
        .bind(scene_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Registrant {
    pub user_id: Uuid,
    pub login: Option<String>,
    pub display_name: String,
    pub registered_at: DateTime<Utc>,
}

pub async fn registrations(pool: &PgPool, scene_id: Uuid) -> Result<Vec<Registrant>, sqlx::Error> {
    sqlx::query_as(
        "select u.user_id, u.login, u.display_name, r.created_at as registered_at
         from registration r join app_user u using (user_id)
         where r.scene_id = $1 order by r.created_at, u.user_id",
    )
    .bind(scene_id)
    .fetch_all(pool)
    .await
}

// ---------------------------------------------------------------- search

/// A search, checked (see `http::search`).
#[derive(Debug, Clone, PartialEq, Hash, Eq)]
pub struct Search {
    /// Words to find (web-search syntax: `"exact phrase"`, `-not`, `or`).
    pub text: Option<String>,
    /// (lat, lon, radius in metres), as bit patterns so the search can be a cache key.
    pub near: Option<(u64, u64, u64)>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Accessibility features every result's venue must have (ids, sorted).
    pub features: Vec<i16>,
    pub limit: i64,
    pub offset: i64,
}

/// Shows matching every part of the search: ranked by relevance when there is text, else
/// nearest first when there is a point, else soonest first. `limit + 1` rows are asked for.
pub async fn search(pool: &PgPool, q: &Search) -> Result<Vec<Listing>, sqlx::Error> {
    search_query(q, "select ")
        .build_query_as()
        .fetch_all(pool)
        .await
}

/// The plan PostgreSQL chooses for a search (`EXPLAIN (FORMAT JSON)`), to check it uses the
/// indexes.
pub async fn explain_search(pool: &PgPool, q: &Search) -> Result<serde_json::Value, sqlx::Error> {
    let plan: sqlx::types::Json<serde_json::Value> =
        search_query(q, "explain (format json) select ")
            .build_query_scalar()
            .fetch_one(pool)
            .await?;
    Ok(plan.0)
}

fn search_query<'a>(q: &'a Search, start: &str) -> QueryBuilder<'a, Postgres> {
    let mut b: QueryBuilder<Postgres> = QueryBuilder::new(start);
    b.push(LISTING_COLUMNS);
    match &q.text {
        Some(text) => {
            b.push(", ts_rank(s.search, websearch_to_tsquery('simple', ")
                .push_bind(text.clone())
                .push(")) as rank");
        }
        None => {
            b.push(", null::real as rank");
        }
    }
    let near = q
        .near
        .map(|(lat, lon, r)| (f64::from_bits(lat), f64::from_bits(lon), f64::from_bits(r)));
    match near {
        Some((lat, lon, _)) => {
            b.push(", ");
            push_distance_km(&mut b, lat, lon);
            b.push(" as distance_km");
        }
        None => {
            b.push(", null::float8 as distance_km");
        }
    }
    b.push(" ").push(LISTING_FROM);
    b.push(" where s.status <> 'draft' and s.starts_at is not null");
    if let Some(text) = &q.text {
        b.push(" and s.search @@ websearch_to_tsquery('simple', ")
            .push_bind(text.clone())
            .push(")");
    }
    if let Some((lat, lon, radius)) = near {
        // the band of latitudes within the radius (the index), the band of longitudes when it
        // does not wrap around, then the exact distance
        let dlat = radius / 1000.0 / KM_PER_DEGREE;
        b.push(" and v.lat between ")
            .push_bind(lat - dlat)
            .push(" and ")
            .push_bind(lat + dlat);
        let cos = lat.to_radians().cos();
        if cos > 0.01 {
            let dlon = dlat / cos;
            if lon - dlon >= -180.0 && lon + dlon <= 180.0 {
                b.push(" and v.lon between ")
                    .push_bind(lon - dlon)
                    .push(" and ")
                    .push_bind(lon + dlon);
            }
        }
        b.push(" and ");
        push_distance_km(&mut b, lat, lon);
        b.push(" <= ").push_bind(radius / 1000.0);
    }
    if let Some(from) = q.from {
        b.push(" and s.starts_at >= ").push_bind(from);
    }
    if let Some(to) = q.to {
        b.push(" and s.starts_at < ").push_bind(to);
    }
    if !q.features.is_empty() {
        b.push(
            " and (select count(*) from venue_feature vf where vf.venue_id = v.venue_id
               and vf.feature_id = any(",
        )
        .push_bind(q.features.clone())
        .push(")) = ")
        .push_bind(q.features.len() as i64);
    }
    b.push(if q.text.is_some() {
        " order by rank desc, s.starts_at, s.scene_id"
    } else if near.is_some() {
        " order by distance_km, s.starts_at, s.scene_id"
    } else {
        " order by s.starts_at, s.scene_id"
    });
    b.push(" limit ").push_bind(q.limit + 1);
    b.push(" offset ").push_bind(q.offset);
    b
}

/// Kilometres per degree of latitude (and of longitude at the equator).
const KM_PER_DEGREE: f64 = 111.195;

/// The great-circle distance in km from (lat, lon) to the venue (haversine, mean Earth radius).
fn push_distance_km(b: &mut QueryBuilder<'_, Postgres>, lat: f64, lon: f64) {
    b.push("(12742.0176 * asin(least(1.0, sqrt(power(sin(radians(v.lat - ")
        .push_bind(lat)
        .push(") / 2), 2) + cos(radians(")
        .push_bind(lat)
        .push(")) * cos(radians(v.lat)) * power(sin(radians(v.lon - ")
        .push_bind(lon)
        .push(") / 2), 2)))))");
}

/// The catalog's version: it changes with every change a search could see.
pub async fn catalog_version(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("select version from catalog_version where catalog_version_id = 1")
        .fetch_one(pool)
        .await
}
