//! Identities and rights: password hashing, bearer tokens, permissions and the checks every
//! mutating endpoint makes.
//!
//! Invariants: only a SHA-256 of a token is ever stored; a password is only ever stored as an
//! argon2id PHC string; an `admin` grant is always global.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

/// Why a caller or its credentials are refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuthError {
    /// The caller lacks the right (the sentence names it).
    #[error("{0}")]
    Forbidden(String),
    /// A login, password or grant that is not allowed (`code` names the rule).
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// The password hasher failed (a bug, not the caller's fault).
    #[error("password hashing failed: {0}")]
    Hashing(String),
}

impl AuthError {
    fn invalid(code: &'static str, message: &str) -> AuthError {
        AuthError::Invalid {
            code,
            message: message.to_owned(),
        }
    }
}

/// What a user may do. Stored as rows of `permission`; the codes are the API's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    Pixel,
    Observer,
    Operator,
    Kick,
    Admin,
}

impl Permission {
    pub const ALL: [Permission; 5] = [
        Permission::Pixel,
        Permission::Observer,
        Permission::Operator,
        Permission::Kick,
        Permission::Admin,
    ];

    /// The `permission.permission_id` seeded by the first migration.
    pub fn id(self) -> i16 {
        match self {
            Permission::Pixel => 1,
            Permission::Observer => 2,
            Permission::Operator => 3,
            Permission::Kick => 4,
            Permission::Admin => 5,
        }
    }

    pub fn from_id(id: i16) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.id() == id)
    }
}

/// One grant: a permission, everywhere (`scene_id` none) or in one scene.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct Grant {
    pub permission: Permission,
    pub scene_id: Option<Uuid>,
}

/// Who is calling, with every grant they hold. Built per request from the bearer token.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user_id: Uuid,
    /// None for a guest phone.
    pub login: Option<String>,
    pub grants: Vec<Grant>,
}

impl Identity {
    pub fn is_guest(&self) -> bool {
        self.login.is_none()
    }

    pub fn is_admin(&self) -> bool {
        self.grants
            .iter()
            .any(|g| g.permission == Permission::Admin)
    }

    fn holds(&self, permission: Permission, scene_id: Uuid) -> bool {
        self.grants.iter().any(|g| {
            g.permission == permission && (g.scene_id.is_none() || g.scene_id == Some(scene_id))
        })
    }

    /// Whether the caller may act with `permission` in `scene_id`. An admin may do anything;
    /// a scene's operator may also observe and kick in it.
    pub fn may(&self, permission: Permission, scene_id: Uuid) -> bool {
        if self.is_admin() || self.holds(permission, scene_id) {
            return true;
        }
        matches!(permission, Permission::Observer | Permission::Kick)
            && self.holds(Permission::Operator, scene_id)
    }

    /// `may`, as a 403 with a sentence naming the missing right.
    pub fn require(&self, permission: Permission, scene_id: Uuid) -> Result<(), AuthError> {
        if self.may(permission, scene_id) {
            Ok(())
        } else {
            Err(AuthError::Forbidden(format!(
                "this needs the {} permission for this scene",
                serde_json::to_value(permission)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            )))
        }
    }

    /// Whether the caller may grant or revoke `grant`: an admin anything; a scene's operator
    /// the scene-scoped observer, kick and operator rights of that scene.
    pub fn may_grant(&self, grant: &Grant) -> bool {
        if self.is_admin() {
            return true;
        }
        match (grant.permission, grant.scene_id) {
            (Permission::Observer | Permission::Kick | Permission::Operator, Some(scene_id)) => {
                self.holds(Permission::Operator, scene_id)
            }
            _ => false,
        }
    }
}

/// Whether `grant` makes sense at all: admin is global, pixel is per scene.
pub fn validate_grant(grant: &Grant) -> Result<(), AuthError> {
    match (grant.permission, grant.scene_id) {
        (Permission::Admin, Some(_)) => Err(AuthError::invalid(
            "invalid_grant",
            "admin is a global permission; leave scene_id out",
        )),
        (Permission::Pixel, None) => Err(AuthError::invalid(
            "invalid_grant",
            "pixel is granted per scene, by joining it",
        )),
        _ => Ok(()),
    }
}

/// A new random bearer token (256 bits, URL-safe) and the hash that is stored for it.
pub fn new_token() -> (String, [u8; 32]) {
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let hash = hash_token(&token);
    (token, hash)
}

pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// argon2id with the crate's recommended parameters. CPU-heavy: call it off the reactor.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hashing(e.to_string()))
}

/// Checks a password against a stored hash; `None` (no such user) still spends the time of a
/// check, so a response's timing does not tell whether a login exists.
pub fn verify_password(password: &str, stored: Option<&str>) -> bool {
    const DUMMY: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$4bYtBYIn/YE0FpHnNkjIjlnVGRKDUMwb3WjkQp1jcpc";
    let hash = stored.unwrap_or(DUMMY);
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let ok = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    ok && stored.is_some()
}

/// A login: lowercase letters, digits, `_.-`, 3 to 64 long (the column's check says the same).
pub fn parse_login(login: &str) -> Result<String, AuthError> {
    let login = login.trim().to_lowercase();
    let ok = (3..=64).contains(&login.len())
        && login
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c));
    if ok {
        Ok(login)
    } else {
        Err(AuthError::invalid(
            "invalid_login",
            "a login is 3 to 64 characters: letters, digits, '_', '.' or '-'",
        ))
    }
}

pub fn check_password_strength(password: &str) -> Result<(), AuthError> {
    if password.chars().count() < 8 || password.len() > 1024 {
        return Err(AuthError::invalid(
            "weak_password",
            "a password is 8 to 1024 characters long",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(grants: &[(Permission, Option<Uuid>)]) -> Identity {
        Identity {
            user_id: Uuid::new_v4(),
            login: Some("someone".into()),
            grants: grants
                .iter()
                .map(|&(permission, scene_id)| Grant {
                    permission,
                    scene_id,
                })
                .collect(),
        }
    }

    #[test]
    fn scoped_grants_stay_in_their_scene() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let observer = identity(&[(Permission::Observer, Some(a))]);
        assert!(observer.may(Permission::Observer, a));
        assert!(!observer.may(Permission::Observer, b));
        assert!(!observer.may(Permission::Operator, a));
    }

    #[test]
    fn operator_implies_observer_and_kick_in_its_scene_only() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let op = identity(&[(Permission::Operator, Some(a))]);
        assert!(op.may(Permission::Kick, a));
        assert!(op.may(Permission::Observer, a));
        assert!(!op.may(Permission::Kick, b));
        assert!(op.may_grant(&Grant {
            permission: Permission::Observer,
            scene_id: Some(a)
        }));
        assert!(!op.may_grant(&Grant {
            permission: Permission::Observer,
            scene_id: Some(b)
        }));
        assert!(!op.may_grant(&Grant {
            permission: Permission::Admin,
            scene_id: None
        }));
    }

    #[test]
    fn admin_may_everything() {
        let admin = identity(&[(Permission::Admin, None)]);
        assert!(admin.may(Permission::Operator, Uuid::new_v4()));
        assert!(admin.may_grant(&Grant {
            permission: Permission::Admin,
            scene_id: None
        }));
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let (t1, h1) = new_token();
        let (t2, _) = new_token();
        assert_ne!(t1, t2);
        assert_eq!(hash_token(&t1), h1);
        assert_eq!(t1.len(), 43);
    }

    #[test]
    fn passwords_verify_and_unknown_users_fail() {
        let hash = hash_password("correct horse").unwrap();
        assert!(verify_password("correct horse", Some(&hash)));
        assert!(!verify_password("wrong horse", Some(&hash)));
        assert!(!verify_password("correct horse", None));
    }

    #[test]
    fn logins_are_normalised_and_checked() {
        assert_eq!(parse_login(" Alice.Op ").unwrap(), "alice.op");
        assert!(parse_login("a").is_err());
        assert!(parse_login("semi;colon").is_err());
    }
}
