//! The HTTP-facing error: every failure a client can see, with its status and JSON body
//! `{ "error": "<code>", "message": "<sentence>" }`.
//!
//! Internal causes are logged here, never sent: a client learns *what* failed, not our stack.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::AuthError;
use crate::budget::Busy;
use crate::commands::placements::PlaceError;
use crate::commands::CommandError;
use crate::scene::SceneError;
use crate::store::gridfs::GridFsError;
use crate::text::TextError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No identity, or an expired or revoked token.
    #[error("authentication required")]
    Unauthorized,
    /// An identity without the right for this action.
    #[error("{0}")]
    Forbidden(String),
    /// The named thing does not exist, or the caller may not know it exists.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request conflicts with what is stored (a taken login, a stale order).
    #[error("{0}")]
    Conflict(String),
    /// The command was decided on a state that has changed since; `current` is the state now.
    #[error("{message}")]
    Stale {
        message: String,
        current: serde_json::Value,
    },
    /// The thing asked for existed, but is over for good (an expired session).
    #[error("{0}")]
    Gone(String),
    /// Malformed request: bad JSON, bad path or query.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// Well-formed but invalid content (a bad field value, an undecodable image).
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// The request took too long: its body arrived too slowly.
    #[error("{0}")]
    TooSlow(String),
    #[error("the body is larger than the {limit} bytes allowed")]
    PayloadTooLarge { limit: u64 },
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Too much of this work is queued (or this client asks too often): come back after
    /// `retry_after_s` (sent as `Retry-After`).
    #[error("{message}")]
    TooManyRequests { message: String, retry_after_s: u64 },
    /// A store the request needs is unreachable; nothing was written.
    #[error("{0} is unavailable, try again shortly")]
    Unavailable(&'static str),
    /// A bug or an unexpected failure; logged with its cause.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable, machine-readable code (`not_found`, `invalid_image`, ...).
    pub error: String,
    /// A sentence for a person.
    pub message: String,
    /// With `conflict` from a command decided on a stale state: the state as it is now.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub current: Option<serde_json::Value>,
}

impl Error {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Error::Invalid {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Error::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Error::Forbidden(message.into())
    }

    pub fn status_code(&self) -> StatusCode {
        match self {
            Error::Unauthorized => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) | Error::Stale { .. } => StatusCode::CONFLICT,
            Error::Gone(_) => StatusCode::GONE,
            Error::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Error::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::TooSlow(_) => StatusCode::REQUEST_TIMEOUT,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Error::Unauthorized => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::NotFound(_) => "not_found",
            Error::Conflict(_) | Error::Stale { .. } => "conflict",
            Error::Gone(_) => "gone",
            Error::BadRequest { code, .. } | Error::Invalid { code, .. } => code,
            Error::PayloadTooLarge { .. } => "payload_too_large",
            Error::TooSlow(_) => "too_slow",
            Error::UnsupportedMediaType(_) => "unsupported_media_type",
            Error::TooManyRequests { .. } => "too_many_requests",
            Error::Unavailable(_) => "unavailable",
            Error::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match &self {
            Error::Internal(cause) => tracing::error!(error = ?cause, "internal error"),
            Error::Unavailable(what) => tracing::warn!(store = what, "store unavailable"),
            _ => {}
        }
        let body = ErrorBody {
            error: self.code().to_owned(),
            message: self.to_string(),
            current: match &self {
                Error::Stale { current, .. } => Some(current.clone()),
                _ => None,
            },
        };
        let mut response = (self.status_code(), axum::Json(body)).into_response();
        if let Error::TooManyRequests { retry_after_s, .. } = self {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(retry_after_s),
            );
        }
        response
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                tracing::warn!(error = ?e, "postgres unreachable");
                Error::Unavailable("the database")
            }
            sqlx::Error::RowNotFound => Error::NotFound("record"),
            sqlx::Error::Database(db) => match db.kind() {
                sqlx::error::ErrorKind::UniqueViolation => Error::Conflict(format!(
                    "that already exists ({})",
                    db.constraint().unwrap_or("unique")
                )),
                sqlx::error::ErrorKind::ForeignKeyViolation => Error::invalid(
                    "invalid_reference",
                    format!(
                        "a referenced record does not exist ({})",
                        db.constraint().unwrap_or("foreign key")
                    ),
                ),
                sqlx::error::ErrorKind::CheckViolation
                | sqlx::error::ErrorKind::NotNullViolation => Error::invalid(
                    "invalid_field",
                    format!(
                        "a value is out of range ({})",
                        db.constraint().unwrap_or("check")
                    ),
                ),
                // class 22, data exceptions (a NUL byte in text, a number out of range): a
                // value the edge's checks missed is still the client's, not a 500
                _ if db.code().is_some_and(|c| c.starts_with("22")) => {
                    tracing::warn!(error = ?e, "a value reached the database unchecked");
                    Error::invalid("invalid_field", "a value cannot be stored as given")
                }
                _ => Error::Internal(e.into()),
            },
            _ => Error::Internal(e.into()),
        }
    }
}

impl From<GridFsError> for Error {
    fn from(e: GridFsError) -> Self {
        match e {
            GridFsError::Unavailable(cause) => {
                tracing::warn!(error = ?cause, "gridfs unreachable");
                Error::Unavailable("the frame store")
            }
            GridFsError::NotFound => Error::NotFound("frame bytes"),
            GridFsError::Other(cause) => Error::Internal(cause.into()),
        }
    }
}

impl From<CommandError> for Error {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::NoScene => Error::NotFound("scene"),
            CommandError::Conflict => {
                Error::Conflict("the scene changed meanwhile; try again".into())
            }
            CommandError::Store(e) => e.into(),
        }
    }
}

impl From<PlaceError> for Error {
    fn from(e: PlaceError) -> Self {
        match e {
            PlaceError::NoScene => Error::NotFound("scene"),
            PlaceError::Unavailable => Error::Unavailable("the database"),
            PlaceError::Failed => Error::Internal(anyhow::anyhow!("a placement batch failed")),
        }
    }
}

impl From<Busy> for Error {
    fn from(e: Busy) -> Self {
        Error::TooManyRequests {
            message: e.to_string(),
            retry_after_s: e.retry_after_s,
        }
    }
}

impl From<TextError> for Error {
    fn from(e: TextError) -> Self {
        Error::invalid("invalid_text", e.to_string())
    }
}

impl From<SceneError> for Error {
    fn from(e: SceneError) -> Self {
        match e {
            SceneError::Invalid { code, message } => Error::Invalid { code, message },
            SceneError::Conflict(message) => Error::Conflict(message),
        }
    }
}

impl From<AuthError> for Error {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Forbidden(message) => Error::Forbidden(message),
            AuthError::Invalid { code, message } => Error::Invalid { code, message },
            AuthError::Hashing(cause) => Error::Internal(anyhow::anyhow!("argon2: {cause}")),
        }
    }
}

impl From<JsonRejection> for Error {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => Error::UnsupportedMediaType(
                "send the body as JSON with `Content-Type: application/json`".into(),
            ),
            JsonRejection::JsonDataError(e) => Error::invalid("invalid_json", e.body_text()),
            JsonRejection::JsonSyntaxError(e) => Error::bad_request("bad_json", e.body_text()),
            other => Error::bad_request("bad_json", other.body_text()),
        }
    }
}

impl From<PathRejection> for Error {
    fn from(rejection: PathRejection) -> Self {
        Error::bad_request("bad_path", rejection.body_text())
    }
}

impl From<QueryRejection> for Error {
    fn from(rejection: QueryRejection) -> Self {
        Error::bad_request("bad_query", rejection.body_text())
    }
}
