//! Users, sessions and permission grants.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use crate::auth::{Grant, Identity, Permission};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub user_id: Uuid,
    pub login: Option<String>,
    pub display_name: String,
    pub password_hash: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A login session or a device token; `kind` is the column's word.
#[derive(Debug, Clone, Copy)]
pub enum SessionKind {
    Login,
    Device,
}

impl SessionKind {
    fn as_str(self) -> &'static str {
        match self {
            SessionKind::Login => "login",
            SessionKind::Device => "device",
        }
    }
}

#[tracing::instrument(skip_all, err)]
pub async fn insert_user(
    tx: &mut Transaction<'_, Postgres>,
    login: Option<&str>,
    display_name: &str,
    password_hash: Option<&str>,
) -> Result<UserRow, sqlx::Error> {
    sqlx::query_as(
        "insert into app_user (login, display_name, password_hash) values ($1, $2, $3)
         returning user_id, login, display_name, password_hash, created_at",
    )
    .bind(login)
    .bind(display_name)
    .bind(password_hash)
    .fetch_one(&mut **tx)
    .await
}

pub async fn user_by_login(pool: &PgPool, login: &str) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(
        "select user_id, login, display_name, password_hash, created_at
         from app_user where login = $1",
    )
    .bind(login)
    .fetch_optional(pool)
    .await
}

pub async fn user_by_id(pool: &PgPool, user_id: Uuid) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(
        "select user_id, login, display_name, password_hash, created_at
         from app_user where user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(pool)
    .await
}

/// A new guest identity (a phone) and its device token, in the caller's transaction: the
/// user and its session are written together or not at all. Returns the user and the token.
pub async fn create_guest(
    tx: &mut super::Tx,
    display_name: &str,
    expires_at: DateTime<Utc>,
) -> Result<(UserRow, String), sqlx::Error> {
    let user = insert_user(tx, None, display_name, None).await?;
    let (token, hash) = crate::auth::new_token();
    insert_session(
        &mut **tx,
        user.user_id,
        &hash,
        SessionKind::Device,
        expires_at,
    )
    .await?;
    Ok((user, token))
}

#[tracing::instrument(skip_all, err)]
pub async fn insert_session(
    executor: impl sqlx::PgExecutor<'_>,
    user_id: Uuid,
    token_hash: &[u8; 32],
    kind: SessionKind,
    expires_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into session (user_id, token_hash, kind, expires_at) values ($1, $2, $3, $4)",
    )
    .bind(user_id)
    .bind(&token_hash[..])
    .bind(kind.as_str())
    .bind(expires_at)
    .execute(executor)
    .await?;
    Ok(())
}

/// Revokes the session behind a token; true when there was a live one.
pub async fn revoke_session(pool: &PgPool, token_hash: &[u8; 32]) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "update session set revoked_at = now()
         where token_hash = $1 and revoked_at is null",
    )
    .bind(&token_hash[..])
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The identity behind a live (unexpired, unrevoked) token, with all its grants, in one query.
#[tracing::instrument(skip_all, err)]
pub async fn identity_by_token(
    pool: &PgPool,
    token_hash: &[u8; 32],
) -> Result<Option<Identity>, sqlx::Error> {
    let rows = sqlx::query(
        "select u.user_id, u.login, up.permission_id, up.scene_id
         from session s
         join app_user u on u.user_id = s.user_id
         left join user_permission up on up.user_id = u.user_id
         where s.token_hash = $1 and s.revoked_at is null and s.expires_at > now()",
    )
    .bind(&token_hash[..])
    .fetch_all(pool)
    .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let mut identity = Identity {
        user_id: first.try_get("user_id")?,
        login: first.try_get("login")?,
        grants: Vec::new(),
    };
    for row in &rows {
        let permission_id: Option<i16> = row.try_get("permission_id")?;
        if let Some(permission) = permission_id.and_then(Permission::from_id) {
            identity.grants.push(Grant {
                permission,
                scene_id: row.try_get("scene_id")?,
            });
        }
    }
    Ok(Some(identity))
}

/// Grants a permission; granting one that is already held is a no-op.
#[tracing::instrument(skip_all, err)]
pub async fn grant(
    executor: impl sqlx::PgExecutor<'_>,
    user_id: Uuid,
    grant: &Grant,
    granted_by: Option<Uuid>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into user_permission (user_id, permission_id, scene_id, granted_by)
         values ($1, $2, $3, $4)
         on conflict (user_id, permission_id, scene_id) do nothing",
    )
    .bind(user_id)
    .bind(grant.permission.id())
    .bind(grant.scene_id)
    .bind(granted_by)
    .execute(executor)
    .await?;
    Ok(())
}

/// Revokes a permission; true when it was held.
pub async fn revoke(pool: &PgPool, user_id: Uuid, grant: &Grant) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "delete from user_permission
         where user_id = $1 and permission_id = $2 and scene_id is not distinct from $3",
    )
    .bind(user_id)
    .bind(grant.permission.id())
    .bind(grant.scene_id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn grants_of(pool: &PgPool, user_id: Uuid) -> Result<Vec<Grant>, sqlx::Error> {
    let rows: Vec<(i16, Option<Uuid>)> = sqlx::query_as(
        "select permission_id, scene_id from user_permission where user_id = $1
         order by permission_id, scene_id",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, scene_id)| {
            Some(Grant {
                permission: Permission::from_id(id)?,
                scene_id,
            })
        })
        .collect())
}
