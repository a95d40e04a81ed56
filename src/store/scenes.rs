//! Scenes, their allowed locating methods, and their pixels.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::events::Located;
use crate::scene::{
    format_color, LocationMethod, Pixel, PixelStatus, Scene, SceneFields, SceneStatus,
};

#[derive(sqlx::FromRow)]
pub(super) struct SceneRow {
    scene_id: Uuid,
    owner_id: Uuid,
    name: String,
    description: String,
    venue: String,
    width: f64,
    height: f64,
    status: String,
    idle_color: i32,
    location_method_ids: Vec<i16>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<SceneRow> for Scene {
    fn from(r: SceneRow) -> Self {
        Scene {
            scene_id: r.scene_id,
            owner_id: r.owner_id,
            name: r.name,
            description: r.description,
            venue: r.venue,
            width: r.width,
            height: r.height,
            // the column's check allows only the four words
            status: SceneStatus::parse(&r.status).unwrap_or(SceneStatus::Draft),
            idle_color: format_color(r.idle_color),
            location_methods: r
                .location_method_ids
                .into_iter()
                .filter_map(LocationMethod::from_id)
                .collect(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

impl Scene {
    /// The stored fields, to apply an update on.
    pub fn fields(&self) -> SceneFields {
        SceneFields {
            name: self.name.clone(),
            description: self.description.clone(),
            venue: self.venue.clone(),
            width: self.width,
            height: self.height,
            status: self.status,
            idle_color: crate::scene::parse_color(&self.idle_color).unwrap_or(0),
            location_methods: self.location_methods.clone(),
        }
    }
}

pub(super) const SCENE_COLUMNS: &str = "s.scene_id, s.owner_id, s.name, s.description, s.venue, s.width,
    s.height, s.status, s.idle_color, s.created_at, s.updated_at,
    coalesce((select array_agg(m.location_method_id order by m.location_method_id)
              from scene_location_method m where m.scene_id = s.scene_id), '{}') as location_method_ids";

/// Creates a scene (its id chosen by the caller, so the command creating it knows it first).
#[tracing::instrument(skip_all, err)]
pub async fn insert_scene(
    tx: &mut Transaction<'_, Postgres>,
    scene_id: Uuid,
    owner_id: Uuid,
    fields: &SceneFields,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into scene (scene_id, owner_id, name, description, venue, width, height, status,
             idle_color)
         values ($9, $1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(owner_id)
    .bind(&fields.name)
    .bind(&fields.description)
    .bind(&fields.venue)
    .bind(fields.width)
    .bind(fields.height)
    .bind(fields.status.as_str())
    .bind(fields.idle_color)
    .bind(scene_id)
    .execute(&mut **tx)
    .await?;
    set_location_methods(tx, scene_id, &fields.location_methods).await
}

async fn set_location_methods(
    tx: &mut Transaction<'_, Postgres>,
    scene_id: Uuid,
    methods: &[LocationMethod],
) -> Result<(), sqlx::Error> {
    sqlx::query("delete from scene_location_method where scene_id = $1")
        .bind(scene_id)
        .execute(&mut **tx)
        .await?;
    let ids: Vec<i16> = methods.iter().map(|m| m.id()).collect();
    sqlx::query(
        "insert into scene_location_method (scene_id, location_method_id)
         select $1, unnest($2::smallint[])",
    )
    .bind(scene_id)
    .bind(&ids)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn scene_by_id(
    executor: impl sqlx::PgExecutor<'_>,
    scene_id: Uuid,
) -> Result<Option<Scene>, sqlx::Error> {
    let row: Option<SceneRow> = sqlx::query_as(&format!(
        "select {SCENE_COLUMNS} from scene s where s.scene_id = $1"
    ))
    .bind(scene_id)
    .fetch_optional(executor)
    .await?;
    Ok(row.map(Scene::from))
}

/// Locks a scene row for the rest of the transaction (`for no key update`: phones joining it,
/// whose pixel rows refer to it, are not held up) and reads it. `commands` takes this lock
/// first in every scene command.
pub async fn lock_scene(
    tx: &mut Transaction<'_, Postgres>,
    scene_id: Uuid,
) -> Result<Option<Scene>, sqlx::Error> {
    let locked: Option<Uuid> =
        sqlx::query_scalar("select scene_id from scene where scene_id = $1 for no key update")
            .bind(scene_id)
            .fetch_optional(&mut **tx)
            .await?;
    match locked {
        Some(_) => scene_by_id(&mut **tx, scene_id).await,
        None => Ok(None),
    }
}

/// Who can see which scenes in a listing.
pub enum Visibility {
    /// Every scene (admins).
    All,
    /// Scenes past draft, and drafts this user operates.
    PublicAndOperatedBy(Option<Uuid>),
}

/// One page of scenes, newest first, and the total count.
pub async fn list_scenes(
    pool: &PgPool,
    visibility: Visibility,
    limit: i64,
    offset: i64,
) -> Result<(Vec<Scene>, i64), sqlx::Error> {
    let (all, user_id) = match visibility {
        Visibility::All => (true, None),
        Visibility::PublicAndOperatedBy(user_id) => (false, user_id),
    };
    let filter = "($1 or s.status <> 'draft' or exists (
            select 1 from user_permission up
            where up.user_id = $2 and up.permission_id = 3 and up.scene_id = s.scene_id))";
    let rows: Vec<SceneRow> = sqlx::query_as(&format!(
        "select {SCENE_COLUMNS} from scene s where {filter}
         order by s.created_at desc, s.scene_id limit $3 offset $4"
    ))
    .bind(all)
    .bind(user_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    let total: i64 = sqlx::query_scalar(&format!("select count(*) from scene s where {filter}"))
        .bind(all)
        .bind(user_id)
        .fetch_one(pool)
        .await?;
    Ok((rows.into_iter().map(Scene::from).collect(), total))
}

#[tracing::instrument(skip_all, err)]
pub async fn update_scene(
    tx: &mut Transaction<'_, Postgres>,
    scene_id: Uuid,
    fields: &SceneFields,
) -> Result<(), sqlx::Error> {
    // clock_timestamp(), not now() (the transaction's start): of two updates that waited for
    // each other's row lock, the one that commits later must carry the later time, as phones
    // keep the later of two scene descriptions
    sqlx::query(
        "update scene set name = $2, description = $3, venue = $4, width = $5, height = $6,
             status = $7, idle_color = $8, updated_at = clock_timestamp()
         where scene_id = $1",
    )
    .bind(scene_id)
    .bind(&fields.name)
    .bind(&fields.description)
    .bind(&fields.venue)
    .bind(fields.width)
    .bind(fields.height)
    .bind(fields.status.as_str())
    .bind(fields.idle_color)
    .execute(&mut **tx)
    .await?;
    set_location_methods(tx, scene_id, &fields.location_methods).await
}

/// Deletes a scene with its pixels, grants and frame rows; returns the GridFS ids of the
/// frames it had, for the caller to delete once this transaction has committed.
#[tracing::instrument(skip_all, err)]
pub async fn delete_scene(
    tx: &mut Transaction<'_, Postgres>,
    scene_id: Uuid,
) -> Result<Vec<String>, sqlx::Error> {
    let gridfs_ids: Vec<String> =
        sqlx::query_scalar("select gridfs_id from frame where scene_id = $1")
            .bind(scene_id)
            .fetch_all(&mut **tx)
            .await?;
    sqlx::query("delete from scene where scene_id = $1")
        .bind(scene_id)
        .execute(&mut **tx)
        .await?;
    Ok(gridfs_ids)
}

#[derive(sqlx::FromRow)]
pub(super) struct PixelRow {
    pub pixel_id: Uuid,
    pub scene_id: Uuid,
    pub user_id: Uuid,
    pub x: Option<f64>,
    pub y: Option<f64>,
    pub location_method_id: Option<i16>,
    pub confidence: Option<f32>,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<PixelRow> for Pixel {
    fn from(r: PixelRow) -> Self {
        Pixel {
            pixel_id: r.pixel_id,
            scene_id: r.scene_id,
            user_id: r.user_id,
            x: r.x,
            y: r.y,
            method: r.location_method_id.and_then(LocationMethod::from_id),
            confidence: r.confidence,
            status: PixelStatus::parse(&r.status).unwrap_or(PixelStatus::Joined),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

pub(super) const PIXEL_COLUMNS: &str =
    "pixel_id, scene_id, user_id, x, y, location_method_id, confidence,
    status, created_at, updated_at";

pub async fn list_pixels(
    pool: &PgPool,
    scene_id: Uuid,
    status: Option<PixelStatus>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<Pixel>, i64), sqlx::Error> {
    let status = status.map(|s| match s {
        PixelStatus::Joined => "joined",
        PixelStatus::Located => "located",
        PixelStatus::Kicked => "kicked",
    });
    let rows: Vec<PixelRow> = sqlx::query_as(&format!(
        "select {PIXEL_COLUMNS} from pixel where scene_id = $1 and ($2::text is null or status = $2)
         order by created_at, pixel_id limit $3 offset $4"
    ))
    .bind(scene_id)
    .bind(status)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    let total: i64 = sqlx::query_scalar(
        "select count(*) from pixel where scene_id = $1 and ($2::text is null or status = $2)",
    )
    .bind(scene_id)
    .bind(status)
    .fetch_one(pool)
    .await?;
    Ok((rows.into_iter().map(Pixel::from).collect(), total))
}

pub async fn pixel_by_id(
    pool: &PgPool,
    scene_id: Uuid,
    pixel_id: Uuid,
) -> Result<Option<Pixel>, sqlx::Error> {
    let row: Option<PixelRow> = sqlx::query_as(&format!(
        "select {PIXEL_COLUMNS} from pixel where scene_id = $1 and pixel_id = $2"
    ))
    .bind(scene_id)
    .bind(pixel_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Pixel::from))
}

/// The caller's pixel in a scene, created on first join, with the `pixel` grant. A kicked
/// pixel is returned as is (and gets no grant): the caller refuses it.
#[tracing::instrument(skip_all, err)]
pub async fn join_scene(
    tx: &mut Transaction<'_, Postgres>,
    scene_id: Uuid,
    user_id: Uuid,
) -> Result<Pixel, sqlx::Error> {
    // `do update` (a no-op write) so that `returning` gives the row in both cases.
    let row: PixelRow = sqlx::query_as(&format!(
        "insert into pixel (scene_id, user_id) values ($1, $2)
         on conflict (scene_id, user_id) do update set scene_id = excluded.scene_id
         returning {PIXEL_COLUMNS}"
    ))
    .bind(scene_id)
    .bind(user_id)
    .fetch_one(&mut **tx)
    .await?;
    if row.status != "kicked" {
        sqlx::query(
            "insert into user_permission (user_id, permission_id, scene_id) values ($1, 1, $2)
             on conflict (user_id, permission_id, scene_id) do nothing",
        )
        .bind(user_id)
        .bind(scene_id)
        .execute(&mut **tx)
        .await?;
    }
    Ok(row.into())
}

/// Moves pixels (each listed once), all in one statement; returns the pixels moved (kicked
/// pixels and pixels of other scenes are not).
#[tracing::instrument(skip_all, err)]
pub async fn move_pixels(
    tx: &mut Transaction<'_, Postgres>,
    scene_id: Uuid,
    moves: &[Located],
) -> Result<Vec<Pixel>, sqlx::Error> {
    if moves.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = moves.iter().map(|m| m.pixel_id).collect();
    let xs: Vec<f64> = moves.iter().map(|m| m.x).collect();
    let ys: Vec<f64> = moves.iter().map(|m| m.y).collect();
    let methods: Vec<i16> = moves.iter().map(|m| m.method.id()).collect();
    let confidences: Vec<f32> = moves.iter().map(|m| m.confidence).collect();
    let rows: Vec<PixelRow> = sqlx::query_as(&format!(
        "update pixel p set x = v.x, y = v.y, location_method_id = v.method,
             confidence = v.confidence, status = 'located', updated_at = now()
         from unnest($2::uuid[], $3::float8[], $4::float8[], $5::smallint[], $6::real[])
             as v(pixel_id, x, y, method, confidence)
         where p.scene_id = $1 and p.pixel_id = v.pixel_id and p.status <> 'kicked'
         returning {}",
        PIXEL_COLUMNS
            .split(',')
            .map(|c| format!("p.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .bind(scene_id)
    .bind(&ids)
    .bind(&xs)
    .bind(&ys)
    .bind(&methods)
    .bind(&confidences)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().map(Pixel::from).collect())
}

/// Marks a pixel kicked and takes its `pixel` grant away; false when there is no such pixel.
#[tracing::instrument(skip_all, err)]
pub async fn kick_pixel(
    tx: &mut Transaction<'_, Postgres>,
    scene_id: Uuid,
    pixel_id: Uuid,
) -> Result<Option<Pixel>, sqlx::Error> {
    let row: Option<PixelRow> = sqlx::query_as(&format!(
        "update pixel set status = 'kicked', x = null, y = null, location_method_id = null,
             confidence = null, updated_at = now()
         where scene_id = $1 and pixel_id = $2 returning {PIXEL_COLUMNS}"
    ))
    .bind(scene_id)
    .bind(pixel_id)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(row) = &row {
        sqlx::query(
            "delete from user_permission where user_id = $1 and scene_id = $2 and permission_id = 1",
        )
        .bind(row.user_id)
        .bind(scene_id)
        .execute(&mut **tx)
        .await?;
    }
    Ok(row.map(Pixel::from))
}
