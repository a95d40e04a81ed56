//! Phones joining, many at once. The join writer (`crate::ws::joins`) hands in every join
//! waiting on the node; this answers all of them with a few set-based statements whatever
//! their number: one read of the scenes and their log heads, one read that resumes every
//! phone with a device token, and, for phones new to the scene, one transaction (users,
//! device sessions, pixels, `pixel` grants) with one commit.
//!
//! A returning phone that already has its pixel and grant costs that one read and no write.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::scenes::{PixelRow, SceneRow, PIXEL_COLUMNS, SCENE_COLUMNS};
use crate::scene::{Pixel, PixelStatus, Scene, SceneStatus};

/// One phone asking to join.
#[derive(Debug, Clone)]
pub struct Ask {
    pub scene_id: Uuid,
    /// SHA-256 of the device token it said hello with.
    pub token_hash: Option<[u8; 32]>,
}

/// What a join came to.
#[derive(Debug)]
pub enum Answer {
    NoScene,
    /// A draft or an ended scene: nothing was written.
    NotJoinable(Scene),
    /// The token is unknown, expired or revoked: nothing was written (the caller decides
    /// whether this phone may have a new identity).
    UnknownToken,
    Joined(Joined),
}

#[derive(Debug)]
pub struct Joined {
    pub scene: Scene,
    pub user_id: Uuid,
    /// A new device token, for a phone that had none.
    pub token: Option<String>,
    /// Its pixel; a kicked one comes back as it is (and got no grant).
    pub pixel: Pixel,
    /// The scene's last event when the pixel was read: a hub that has applied more may hold
    /// a placement or kick this pixel's row did not show yet.
    pub log_seq: i64,
}

#[derive(sqlx::FromRow)]
struct ResumeRow {
    token_hash: Vec<u8>,
    scene_id: Uuid,
    user_id: Uuid,
    pixel_id: Option<Uuid>,
    x: Option<f64>,
    y: Option<f64>,
    location_method_id: Option<i16>,
    confidence: Option<f32>,
    status: Option<String>,
    created_at: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
    granted: bool,
}

impl ResumeRow {
    fn pixel(&self) -> Option<Pixel> {
        Some(Pixel::from(PixelRow {
            pixel_id: self.pixel_id?,
            scene_id: self.scene_id,
            user_id: self.user_id,
            x: self.x,
            y: self.y,
            location_method_id: self.location_method_id,
            confidence: self.confidence,
            status: self.status.clone()?,
            created_at: self.created_at?,
            updated_at: self.updated_at?,
        }))
    }
}

/// Answers every ask, in order. New phones get a guest identity and a device token valid
/// until `device_expires`.
#[tracing::instrument(skip_all, fields(asks = asks.len()), err)]
pub async fn join_many(
    pool: &PgPool,
    asks: &[Ask],
    device_expires: DateTime<Utc>,
) -> Result<Vec<Answer>, sqlx::Error> {
    let mut scene_ids: Vec<Uuid> = asks.iter().map(|a| a.scene_id).collect();
    scene_ids.sort_unstable();
    scene_ids.dedup();

    // the log heads before the pixels (see `Joined::log_seq`)
    let heads: HashMap<Uuid, i64> = sqlx::query_as(
        "select s, coalesce((select max(seq) from scene_event where scene_id = s), 0)
         from unnest($1::uuid[]) as t (s)",
    )
    .bind(&scene_ids)
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();
    let scenes: HashMap<Uuid, Scene> = sqlx::query_as::<_, SceneRow>(&format!(
        "select {SCENE_COLUMNS} from scene s where s.scene_id = any($1)"
    ))
    .bind(&scene_ids)
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|row| {
        let scene = Scene::from(row);
        (scene.scene_id, scene)
    })
    .collect();
    let joinable = |id: &Uuid| {
        scenes
            .get(id)
            .is_some_and(|s| matches!(s.status, SceneStatus::Open | SceneStatus::Live))
    };

    // every returning phone at once: its identity, its pixel in the scene, its grant
    let (hashes, hash_scenes): (Vec<Vec<u8>>, Vec<Uuid>) = asks
        .iter()
        .filter(|a| joinable(&a.scene_id))
        .filter_map(|a| a.token_hash.map(|h| (h.to_vec(), a.scene_id)))
        .unzip();
    let mut resumed: HashMap<(Vec<u8>, Uuid), ResumeRow> = HashMap::new();
    if !hashes.is_empty() {
        let rows: Vec<ResumeRow> = sqlx::query_as(
            "select r.token_hash, r.scene_id, s.user_id, p.pixel_id, p.x, p.y,
                    p.location_method_id, p.confidence, p.status, p.created_at, p.updated_at,
                    exists (select 1 from user_permission up
                            where up.user_id = s.user_id and up.permission_id = 1
                              and up.scene_id = r.scene_id) as granted
             from unnest($1::bytea[], $2::uuid[]) as r (token_hash, scene_id)
             join session s on s.token_hash = r.token_hash
                           and s.revoked_at is null and s.expires_at > now()
             left join pixel p on p.user_id = s.user_id and p.scene_id = r.scene_id",
        )
        .bind(&hashes)
        .bind(&hash_scenes)
        .fetch_all(pool)
        .await?;
        for row in rows {
            resumed.insert((row.token_hash.clone(), row.scene_id), row);
        }
    }

    // what must be written: new identities, pixels, grants
    let new_phones = asks
        .iter()
        .filter(|a| a.token_hash.is_none() && joinable(&a.scene_id))
        .count();
    let mut need_pixel: Vec<(Uuid, Uuid)> = Vec::new();
    let mut need_grant: Vec<(Uuid, Uuid)> = Vec::new();
    for row in resumed.values() {
        match row.pixel() {
            None => need_pixel.push((row.scene_id, row.user_id)),
            Some(p) if p.status != PixelStatus::Kicked && !row.granted => {
                need_grant.push((row.scene_id, row.user_id))
            }
            Some(_) => {}
        }
    }
    let mut fresh: Vec<(Uuid, String)> = Vec::new();
    let mut pixels: HashMap<(Uuid, Uuid), Pixel> = HashMap::new();
    if new_phones > 0 || !need_pixel.is_empty() || !need_grant.is_empty() {
        let mut tx = pool.begin().await?;
        if new_phones > 0 {
            let users: Vec<Uuid> = sqlx::query_scalar(
                "insert into app_user (display_name)
                 select 'phone' from generate_series(1, $1) returning user_id",
            )
            .bind(new_phones as i32)
            .fetch_all(&mut *tx)
            .await?;
            let tokens: Vec<(String, [u8; 32])> =
                users.iter().map(|_| crate::auth::new_token()).collect();
            let token_hashes: Vec<Vec<u8>> = tokens.iter().map(|(_, h)| h.to_vec()).collect();
            sqlx::query(
                "insert into session (user_id, token_hash, kind, expires_at)
                 select u, h, 'device', $3 from unnest($1::uuid[], $2::bytea[]) as t (u, h)",
            )
            .bind(&users)
            .bind(&token_hashes)
            .bind(device_expires)
            .execute(&mut *tx)
            .await?;
            fresh = users
                .into_iter()
                .zip(tokens.into_iter().map(|(t, _)| t))
                .collect();
        }
        // the new phones' pixels, in the order of their asks
        let mut fresh_iter = fresh.iter();
        for ask in asks {
            if ask.token_hash.is_none() && joinable(&ask.scene_id) {
                let (user_id, _) = fresh_iter.next().expect("one user per new phone");
                need_pixel.push((ask.scene_id, *user_id));
            }
        }
        // one phone asking twice in a batch: one row each
        need_pixel.sort_unstable();
        need_pixel.dedup();
        if !need_pixel.is_empty() {
            let (s, u): (Vec<Uuid>, Vec<Uuid>) = need_pixel.iter().copied().unzip();
            let rows: Vec<PixelRow> = sqlx::query_as(&format!(
                "insert into pixel (scene_id, user_id)
                 select * from unnest($1::uuid[], $2::uuid[])
                 on conflict (scene_id, user_id) do update set scene_id = excluded.scene_id
                 returning {PIXEL_COLUMNS}"
            ))
            .bind(&s)
            .bind(&u)
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                let pixel = Pixel::from(row);
                if pixel.status != PixelStatus::Kicked {
                    need_grant.push((pixel.scene_id, pixel.user_id));
                }
                pixels.insert((pixel.scene_id, pixel.user_id), pixel);
            }
        }
        need_grant.sort_unstable();
        need_grant.dedup();
        if !need_grant.is_empty() {
            let (s, u): (Vec<Uuid>, Vec<Uuid>) = need_grant.iter().copied().unzip();
            sqlx::query(
                // decided again here, with the pixel row locked: a phone kicked since the
                // resume read gets no grant back
                "insert into user_permission (user_id, permission_id, scene_id)
                 select t.u, 1, t.s from unnest($1::uuid[], $2::uuid[]) as t (s, u)
                 join pixel p on p.scene_id = t.s and p.user_id = t.u and p.status <> 'kicked'
                 for share of p
                 on conflict (user_id, permission_id, scene_id) do nothing",
            )
            .bind(&s)
            .bind(&u)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
    }

    let mut fresh_iter = fresh.into_iter();
    let answers = asks
        .iter()
        .map(|ask| {
            let Some(scene) = scenes.get(&ask.scene_id) else {
                return Answer::NoScene;
            };
            if !joinable(&ask.scene_id) {
                return Answer::NotJoinable(scene.clone());
            }
            let log_seq = heads.get(&ask.scene_id).copied().unwrap_or(0);
            let (user_id, token) = match ask.token_hash {
                None => {
                    let (user_id, token) = fresh_iter.next().expect("one user per new phone");
                    (user_id, Some(token))
                }
                Some(hash) => match resumed.get(&(hash.to_vec(), ask.scene_id)) {
                    Some(row) => (row.user_id, None),
                    None => return Answer::UnknownToken,
                },
            };
            let pixel = match pixels.get(&(ask.scene_id, user_id)) {
                Some(p) => p.clone(),
                None => match ask
                    .token_hash
                    .and_then(|h| resumed.get(&(h.to_vec(), ask.scene_id)))
                    .and_then(ResumeRow::pixel)
                {
                    Some(p) => p,
                    None => return Answer::UnknownToken,
                },
            };
            Answer::Joined(Joined {
                scene: scene.clone(),
                user_id,
                token,
                pixel,
                log_seq,
            })
        })
        .collect();
    Ok(answers)
}
