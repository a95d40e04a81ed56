//! Accounts, guest phones, sessions and permission grants.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::extract::{bearer_token, Auth, ClientIp, Json, Path, Query};
use crate::app::AppState;
use crate::auth::{self, Grant, Permission};
use crate::error::{Error, ErrorBody, Result};
use crate::store;
use crate::store::users::{self, SessionKind, UserRow};
use crate::text::Rule;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(create_guest))
        .routes(routes!(get_me))
        .routes(routes!(list_permissions, grant_permission))
        .routes(routes!(revoke_permission))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct User {
    pub user_id: Uuid,
    /// None for a guest phone.
    pub login: Option<String>,
    pub display_name: String,
    pub created_at: DateTime<Utc>,
}

impl From<UserRow> for User {
    fn from(u: UserRow) -> Self {
        User {
            user_id: u.user_id,
            login: u.login,
            display_name: u.display_name,
            created_at: u.created_at,
        }
    }
}

/// A new bearer token: send it as `Authorization: Bearer <token>`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Session {
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub user: User,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Register {
    pub login: String,
    pub password: String,
    /// Defaults to the login.
    pub display_name: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub login: String,
    pub password: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGuest {
    pub display_name: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub user: User,
    pub grants: Vec<Grant>,
}

fn display_name(name: Option<String>, fallback: &str) -> Result<String> {
    Ok(Rule::name("display_name", 100).clean(name.as_deref().unwrap_or(fallback))?)
}

async fn start_session(state: &AppState, user: UserRow, kind: SessionKind) -> Result<Session> {
    let ttl = match kind {
        SessionKind::Login => Duration::hours(state.config.session_ttl_hours),
        SessionKind::Device => Duration::days(state.config.device_ttl_days),
    };
    let expires_at = Utc::now() + ttl;
    let (token, hash) = auth::new_token();
    users::insert_session(&state.db, user.user_id, &hash, kind, expires_at).await?;
    Ok(Session {
        token,
        expires_at,
        user: user.into(),
    })
}

/// Creates an account and logs it in.
#[utoipa::path(post, path = "/auth/register", tag = "accounts", request_body = Register,
    responses((status = 201, body = Session), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "too many password checks queued, or too many tries from this address; see `Retry-After`")))]
async fn register(
    State(state): State<AppState>,
    client: ClientIp,
    Json(body): Json<Register>,
) -> Result<(StatusCode, Json<Session>)> {
    state.rate_limits.logins.check(&client.ip)?;
    let login = auth::parse_login(&body.login)?;
    auth::check_password_strength(&body.password)?;
    let name = display_name(body.display_name, &login)?;
    let password = body.password;
    let hash = state
        .passwords
        .run(move || auth::hash_password(&password))
        .await??;
    let mut tx = state.db.begin().await?;
    let user = match users::insert_user(&mut tx, Some(&login), &name, Some(&hash)).await {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(Error::Conflict(format!("the login '{login}' is taken")))
        }
        other => other?,
    };
    tx.commit().await?;
    let session = start_session(&state, user, SessionKind::Login).await?;
    Ok((StatusCode::CREATED, Json(session)))
}

/// Exchanges a login and password for a session token.
#[utoipa::path(post, path = "/auth/login", tag = "accounts", request_body = Login,
    responses((status = 200, body = Session), (status = 401, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "too many password checks queued, or too many tries from this address; see `Retry-After`")))]
async fn login(
    State(state): State<AppState>,
    client: ClientIp,
    Json(body): Json<Login>,
) -> Result<Json<Session>> {
    state.rate_limits.logins.check(&client.ip)?;
    // a login no account can have is refused before the database is asked
    let login = auth::parse_login(&body.login).map_err(|_| Error::Unauthorized)?;
    let user = users::user_by_login(&state.db, &login).await?;
    let stored = user.as_ref().and_then(|u| u.password_hash.clone());
    let password = body.password;
    let ok = state
        .passwords
        .run(move || auth::verify_password(&password, stored.as_deref()))
        .await?;
    match user {
        Some(user) if ok => Ok(Json(start_session(&state, user, SessionKind::Login).await?)),
        _ => Err(Error::Unauthorized),
    }
}

/// Revokes the token the request carries.
#[utoipa::path(post, path = "/auth/logout", tag = "accounts",
    responses((status = 204), (status = 401, body = ErrorBody)), security(("bearer" = [])))]
async fn logout(
    State(state): State<AppState>,
    request: axum::extract::Request,
) -> Result<StatusCode> {
    let (parts, _) = request.into_parts();
    let token = bearer_token(&parts).ok_or(Error::Unauthorized)?;
    if users::revoke_session(&state.db, &auth::hash_token(token)).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::Unauthorized)
    }
}

/// Creates a guest identity for a phone: no password, a long-lived device token.
#[utoipa::path(post, path = "/auth/guest", tag = "accounts", request_body(content = NewGuest, description = "optional"),
    responses((status = 201, body = Session),
        (status = 429, body = ErrorBody, description = "too many guests from this address; see `Retry-After`")))]
async fn create_guest(
    State(state): State<AppState>,
    client: ClientIp,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Session>)> {
    state.rate_limits.guests.check(&client.ip)?;
    // the body is optional: an empty one means "no display name"
    let body: NewGuest = if body.iter().all(u8::is_ascii_whitespace) {
        NewGuest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| Error::bad_request("bad_json", e.to_string()))?
    };
    let name = display_name(body.display_name, "phone")?;
    let expires_at = Utc::now() + Duration::days(state.config.device_ttl_days);
    let mut tx = state.db.begin().await?;
    let (user, token) = users::create_guest(&mut tx, &name, expires_at).await?;
    tx.commit().await?;
    let session = Session {
        token,
        expires_at,
        user: user.into(),
    };
    Ok((StatusCode::CREATED, Json(session)))
}

/// The caller and every grant it holds.
#[utoipa::path(get, path = "/auth/me", tag = "accounts",
    responses((status = 200, body = Me), (status = 401, body = ErrorBody)), security(("bearer" = [])))]
async fn get_me(State(state): State<AppState>, Auth(me): Auth) -> Result<Json<Me>> {
    let user = users::user_by_id(&state.db, me.user_id)
        .await?
        .ok_or(Error::Unauthorized)?;
    Ok(Json(Me {
        user: user.into(),
        grants: me.grants,
    }))
}

/// A grant to give or take: a permission, globally or in one scene.
#[derive(Debug, Deserialize, ToSchema, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    pub permission: Permission,
    pub scene_id: Option<Uuid>,
}

/// A user's grants (the user themself, or an admin).
#[utoipa::path(get, path = "/users/{user_id}/permissions", tag = "accounts",
    params(("user_id" = Uuid, Path)),
    responses((status = 200, body = [Grant]), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
async fn list_permissions(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(user_id): Path<Uuid>,
) -> Result<Json<Vec<Grant>>> {
    if me.user_id != user_id && !me.is_admin() {
        return Err(Error::forbidden(
            "only an admin sees other users' permissions",
        ));
    }
    Ok(Json(users::grants_of(&state.db, user_id).await?))
}

/// Grants a permission: an admin any, a scene's operator observer, kick or operator in it.
#[utoipa::path(post, path = "/users/{user_id}/permissions", tag = "accounts",
    params(("user_id" = Uuid, Path)), request_body = GrantRequest,
    responses((status = 201, body = Grant), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn grant_permission(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(user_id): Path<Uuid>,
    Json(body): Json<GrantRequest>,
) -> Result<(StatusCode, Json<Grant>)> {
    let grant = Grant {
        permission: body.permission,
        scene_id: body.scene_id,
    };
    auth::validate_grant(&grant)?;
    if !me.may_grant(&grant) {
        return Err(Error::forbidden(
            "only an admin, or the scene's operator for its own scene, grants this",
        ));
    }
    let target = users::user_by_id(&state.db, user_id)
        .await?
        .ok_or(Error::NotFound("user"))?;
    if target.login.is_none() && grant.permission != Permission::Pixel {
        return Err(Error::invalid(
            "guest_user",
            "a guest phone cannot hold this permission; it needs an account",
        ));
    }
    users::grant(&state.db, user_id, &grant, Some(me.user_id))
        .await
        .map_err(|e| match e {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => Error::NotFound("scene"),
            other => other.into(),
        })?;
    Ok((StatusCode::CREATED, Json(grant)))
}

/// Revokes a permission (same rights as granting it); a scene's owner keeps theirs unless an
/// admin takes them.
#[utoipa::path(delete, path = "/users/{user_id}/permissions/{permission}", tag = "accounts",
    params(("user_id" = Uuid, Path), ("permission" = Permission, Path), ("scene_id" = Option<Uuid>, Query)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn revoke_permission(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path((user_id, permission)): Path<(Uuid, Permission)>,
    Query(scope): Query<SceneScope>,
) -> Result<StatusCode> {
    let grant = Grant {
        permission,
        scene_id: scope.scene_id,
    };
    if !me.may_grant(&grant) {
        return Err(Error::forbidden(
            "only an admin, or the scene's operator for its own scene, revokes this",
        ));
    }
    // the operators a scene's owner adds cannot take the scene from its owner
    if let Some(scene_id) = grant.scene_id {
        let owner = store::scenes::scene_by_id(&state.db, scene_id)
            .await?
            .map(|s| s.owner_id);
        if owner == Some(user_id) && me.user_id != user_id && !me.is_admin() {
            return Err(Error::forbidden(
                "the scene's owner keeps their rights in it; only an admin can take them",
            ));
        }
    }
    if users::revoke(&state.db, user_id, &grant).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::NotFound("grant"))
    }
}

#[derive(Debug, Deserialize)]
pub struct SceneScope {
    pub scene_id: Option<Uuid>,
}
