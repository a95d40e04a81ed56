//! Scenes: create, read, list, update, delete; joining one; its pixels; kicking a pixel.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::extract::{Auth, ClientIp, Json, MaybeAuth, Path, Query};
use crate::app::AppState;
use crate::auth::{Grant, Identity, Permission};
use crate::error::{Error, ErrorBody, Result};
use crate::events::SceneEvent;
use crate::scene::{NewScene, Pixel, PixelStatus, Scene, SceneStatus, SceneUpdate};
use crate::store::{self, scenes::Visibility};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_scene, list_scenes))
        .routes(routes!(get_scene, update_scene, delete_scene))
        .routes(routes!(join_code))
        .routes(routes!(join_scene))
        .routes(routes!(list_pixels))
        .routes(routes!(kick_pixel))
}

/// Paging for list endpoints: `page` from 1, `per_page` 1..=200 (default 50).
#[derive(Debug, Deserialize, IntoParams)]
pub struct Paging {
    pub page: Option<i64>,
    pub per_page: Option<i64>,
}

impl Paging {
    /// (limit, offset, page, per_page) after validation.
    pub fn resolve(&self) -> Result<(i64, i64, i64, i64)> {
        let page = self.page.unwrap_or(1);
        let per_page = self.per_page.unwrap_or(50);
        if page < 1 || !(1..=200).contains(&per_page) {
            return Err(Error::bad_request(
                "bad_paging",
                "page starts at 1 and per_page is 1 to 200",
            ));
        }
        let offset = (page - 1)
            .checked_mul(per_page)
            .ok_or_else(|| Error::bad_request("bad_paging", "page is too large"))?;
        Ok((per_page, offset, page, per_page))
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: i64,
    pub page: i64,
    pub per_page: i64,
}

/// Loads a scene the caller may see: drafts only for their operators and admins. A scene the
/// caller may not see is "not found", so drafts' existence is not revealed.
pub async fn visible_scene(
    state: &AppState,
    who: Option<&Identity>,
    scene_id: Uuid,
) -> Result<Scene> {
    let scene = store::scenes::scene_by_id(&state.db, scene_id)
        .await?
        .ok_or(Error::NotFound("scene"))?;
    let operates = who.is_some_and(|w| w.may(Permission::Operator, scene_id));
    if scene.status == SceneStatus::Draft && !operates {
        return Err(Error::NotFound("scene"));
    }
    Ok(scene)
}

/// Loads a scene the caller holds `permission` in (404 when it does not exist, 403 without).
pub async fn scene_with_right(
    state: &AppState,
    who: &Identity,
    scene_id: Uuid,
    permission: Permission,
) -> Result<Scene> {
    let scene = store::scenes::scene_by_id(&state.db, scene_id)
        .await?
        .ok_or(Error::NotFound("scene"))?;
    who.require(permission, scene_id)?;
    Ok(scene)
}

/// Creates a scene; the caller (an account, not a guest phone) becomes its operator.
#[utoipa::path(post, path = "/scenes", tag = "scenes", request_body = NewScene,
    responses((status = 201, body = Scene), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn create_scene(
    State(state): State<AppState>,
    Auth(me): Auth,
    Json(body): Json<NewScene>,
) -> Result<(StatusCode, Json<Scene>)> {
    if me.is_guest() {
        return Err(Error::forbidden(
            "a guest phone cannot create scenes; log in",
        ));
    }
    let fields = body.validate()?;
    let scene_id = Uuid::new_v4();
    let mut command = state.commands.begin_new(scene_id).await?;
    let tx = command.tx();
    store::scenes::insert_scene(tx, scene_id, me.user_id, &fields).await?;
    let owner = Grant {
        permission: Permission::Operator,
        scene_id: Some(scene_id),
    };
    store::users::grant(&mut **tx, me.user_id, &owner, Some(me.user_id)).await?;
    let scene = store::scenes::scene_by_id(&mut **tx, scene_id)
        .await?
        .ok_or(Error::NotFound("scene"))?;
    let created = SceneEvent::SceneCreated {
        scene: scene.clone(),
    };
    command.commit(Some(me.user_id), vec![created]).await?;
    Ok((StatusCode::CREATED, Json(scene)))
}

/// Scenes the caller may see, newest first.
#[utoipa::path(get, path = "/scenes", tag = "scenes", params(Paging),
    responses((status = 200, body = Page<Scene>), (status = 400, body = ErrorBody)))]
async fn list_scenes(
    State(state): State<AppState>,
    MaybeAuth(who): MaybeAuth,
    Query(paging): Query<Paging>,
) -> Result<Json<Page<Scene>>> {
    let (limit, offset, page, per_page) = paging.resolve()?;
    let visibility = match &who {
        Some(w) if w.is_admin() => Visibility::All,
        other => Visibility::PublicAndOperatedBy(other.as_ref().map(|w| w.user_id)),
    };
    let (items, total) = store::scenes::list_scenes(&state.db, visibility, limit, offset).await?;
    Ok(Json(Page {
        items,
        total,
        page,
        per_page,
    }))
}

#[utoipa::path(get, path = "/scenes/{scene_id}", tag = "scenes", params(("scene_id" = Uuid, Path)),
    responses((status = 200, body = Scene), (status = 404, body = ErrorBody)))]
async fn get_scene(
    State(state): State<AppState>,
    MaybeAuth(who): MaybeAuth,
    Path(scene_id): Path<Uuid>,
) -> Result<Json<Scene>> {
    Ok(Json(visible_scene(&state, who.as_ref(), scene_id).await?))
}

/// The short path of a scene's phone page: `/s/` and the scene id in base64url (22 characters
/// instead of 36, so the join QR code stays small).
pub fn short_path(scene_id: Uuid) -> String {
    use base64::Engine;
    format!(
        "/s/{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(scene_id.as_bytes())
    )
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JoinCode {
    /// The phone page's path on this server.
    pub path: String,
    /// The full address: the server's `public_url` setting, or else the request's `Host`
    /// (and `X-Forwarded-Proto` when a trusted proxy sent it).
    pub url: String,
    /// The address as a QR code: its side in modules, and the modules row by row ('1' dark).
    pub side: usize,
    pub modules: String,
}

/// Where phones join a scene, and that address as a QR code to print or project.
#[utoipa::path(get, path = "/scenes/{scene_id}/join-code", tag = "scenes", params(("scene_id" = Uuid, Path)),
    responses((status = 200, body = JoinCode), (status = 404, body = ErrorBody)))]
async fn join_code(
    State(state): State<AppState>,
    MaybeAuth(who): MaybeAuth,
    client: ClientIp,
    Path(scene_id): Path<Uuid>,
    headers: axum::http::HeaderMap,
) -> Result<Json<JoinCode>> {
    visible_scene(&state, who.as_ref(), scene_id).await?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let origin = match &state.config.public_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let host = header("host").ok_or_else(|| {
                Error::invalid(
                    "no_host",
                    "the request names no host; set the server's public_url",
                )
            })?;
            // a chain of proxies says "https, http": the first is the client's; and only a
            // trusted proxy is believed
            let proto = header("x-forwarded-proto").filter(|_| client.via_proxy);
            let scheme = match proto.map(|p| p.split(',').next().unwrap_or("").trim()) {
                Some("https") => "https",
                _ => "http",
            };
            format!("{scheme}://{host}")
        }
    };
    let path = short_path(scene_id);
    let url = format!("{origin}{path}");
    let code = qrcode::QrCode::with_error_correction_level(url.as_bytes(), qrcode::EcLevel::M)
        .map_err(|e| {
            Error::invalid(
                "bad_host",
                format!("the address does not fit a QR code: {e}"),
            )
        })?;
    let (side, modules) = crate::locate::qr::modules(&code);
    Ok(Json(JoinCode {
        path,
        url,
        side,
        modules,
    }))
}

/// Changes a scene's fields or status (its operator, or an admin).
#[utoipa::path(patch, path = "/scenes/{scene_id}", tag = "scenes", params(("scene_id" = Uuid, Path)),
    request_body = SceneUpdate,
    responses((status = 200, body = Scene), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn update_scene(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(scene_id): Path<Uuid>,
    Json(body): Json<SceneUpdate>,
) -> Result<Json<Scene>> {
    // (the update's trigger takes the catalog's version row: after the scene's locks, so no
    // transaction holds that row while it waits for a scene)
    let mut command = state.commands.begin(scene_id).await?;
    let (tx, scene) = command.parts();
    me.require(Permission::Operator, scene_id)?;
    let fields = scene.fields().apply(body)?;
    store::scenes::update_scene(tx, scene_id, &fields).await?;
    let scene = store::scenes::scene_by_id(&mut **tx, scene_id)
        .await?
        .ok_or(Error::NotFound("scene"))?;
    let updated = SceneEvent::SceneUpdated {
        scene: scene.clone(),
    };
    command.commit(Some(me.user_id), vec![updated]).await?;
    Ok(Json(scene))
}

/// Deletes a scene with its pixels and frames, including the frames' bytes in GridFS. Only
/// its owner or an admin may.
#[utoipa::path(delete, path = "/scenes/{scene_id}", tag = "scenes", params(("scene_id" = Uuid, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn delete_scene(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(scene_id): Path<Uuid>,
) -> Result<StatusCode> {
    let mut command = state.commands.begin(scene_id).await?;
    me.require(Permission::Operator, scene_id)?;
    // a co-operator runs the show; only its owner (or an admin) ends it for good
    if command.scene().owner_id != me.user_id && !me.is_admin() {
        return Err(Error::forbidden(
            "only the scene's owner or an admin deletes a scene",
        ));
    }
    let tx = command.tx();
    let gridfs_ids = store::scenes::delete_scene(tx, scene_id).await?;
    command
        .commit(Some(me.user_id), vec![SceneEvent::SceneDeleted {}])
        .await?;
    super::frames::delete_bytes_after_commit(&state, gridfs_ids).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Joins the caller (a guest phone or an account) to an open or live scene as a pixel.
/// Joining again returns the same pixel; a kicked pixel is refused.
#[utoipa::path(post, path = "/scenes/{scene_id}/join", tag = "scenes", params(("scene_id" = Uuid, Path)),
    responses((status = 200, body = Pixel), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
async fn join_scene(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(scene_id): Path<Uuid>,
) -> Result<Json<Pixel>> {
    let scene = visible_scene(&state, Some(&me), scene_id).await?;
    if !matches!(scene.status, SceneStatus::Open | SceneStatus::Live) {
        return Err(Error::Conflict(format!(
            "the scene is {}; phones join open or live scenes",
            scene.status.as_str()
        )));
    }
    let mut tx = state.db.begin().await?;
    let pixel = store::scenes::join_scene(&mut tx, scene_id, me.user_id).await?;
    if pixel.status == PixelStatus::Kicked {
        return Err(Error::forbidden("this phone was removed from the scene"));
    }
    tx.commit().await?;
    Ok(Json(pixel))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct PixelFilter {
    pub status: Option<PixelStatus>,
    pub page: Option<i64>,
    pub per_page: Option<i64>,
}

/// A scene's pixels (its operators, observers, moderators and admins).
#[utoipa::path(get, path = "/scenes/{scene_id}/pixels", tag = "scenes",
    params(("scene_id" = Uuid, Path), PixelFilter),
    responses((status = 200, body = Page<Pixel>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn list_pixels(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(scene_id): Path<Uuid>,
    Query(filter): Query<PixelFilter>,
) -> Result<Json<Page<Pixel>>> {
    store::scenes::scene_by_id(&state.db, scene_id)
        .await?
        .ok_or(Error::NotFound("scene"))?;
    if !(me.may(Permission::Observer, scene_id) || me.may(Permission::Kick, scene_id)) {
        return Err(Error::forbidden(
            "listing pixels needs the operator, observer or kick permission for this scene",
        ));
    }
    let (limit, offset, page, per_page) = Paging {
        page: filter.page,
        per_page: filter.per_page,
    }
    .resolve()?;
    let (items, total) =
        store::scenes::list_pixels(&state.db, scene_id, filter.status, limit, offset).await?;
    Ok(Json(Page {
        items,
        total,
        page,
        per_page,
    }))
}

/// Removes a phone from the scene; it cannot join again.
#[utoipa::path(post, path = "/scenes/{scene_id}/pixels/{pixel_id}/kick", tag = "scenes",
    params(("scene_id" = Uuid, Path), ("pixel_id" = Uuid, Path)),
    responses((status = 200, body = Pixel), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn kick_pixel(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path((scene_id, pixel_id)): Path<(Uuid, Uuid)>,
) -> Result<Json<Pixel>> {
    scene_with_right(&state, &me, scene_id, Permission::Kick).await?;
    let mut command = state.commands.begin(scene_id).await?;
    let tx = command.tx();
    let pixel = store::scenes::kick_pixel(tx, scene_id, pixel_id)
        .await?
        .ok_or(Error::NotFound("pixel"))?;
    command
        .commit(Some(me.user_id), vec![SceneEvent::PixelKicked { pixel_id }])
        .await?;
    tracing::info!(%scene_id, %pixel_id, by = %me.user_id, "pixel kicked");
    Ok(Json(pixel))
}
