//! The HTTP API: one router per domain, assembled here with the OpenAPI document generated
//! from the same handlers (so the document cannot drift from the routes), health checks, the
//! static web client, and JSON errors for unknown routes and methods.

pub mod accounts;
pub mod body;
pub mod calendar;
pub mod clips;
pub mod extract;
pub mod flash;
pub mod frames;
pub mod live;
pub mod locate;
pub mod log;
pub mod scenes;
pub mod search;
pub mod shows;
pub mod sound;

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::services::ServeDir;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::app::AppState;
use crate::error::{Error, ErrorBody};

/// Largest JSON body any endpoint takes; frame uploads stream and have their own limit.
const MAX_JSON_BODY_BYTES: usize = 1024 * 1024;
/// A request that takes longer than this is cut off (uploads of large frames included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Ends a request that takes longer than it may with 408 (an empty body): `REQUEST_TIMEOUT`,
/// or for a clip upload (gigabytes from a laptop on venue Wi-Fi) `C3S_CLIP_UPLOAD_TIMEOUT_S`.
async fn request_timeout(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let limit = if clips::is_clip_upload(request.method(), request.uri().path()) {
        Duration::from_secs(state.config.clip_upload_timeout_s.max(1))
    } else {
        REQUEST_TIMEOUT
    };
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => StatusCode::REQUEST_TIMEOUT.into_response(),
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "C3S — Cloud Scene Screen Service", description = "Scenes, pixels, frames and the people who run them. Every error is `{error, message}`."),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth),
    tags((name = "accounts"), (name = "scenes"), (name = "frames"), (name = "shows"), (name = "locating"), (name = "calendar"), (name = "realtime"), (name = "health"))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The statuses the shared layers answer for any route they pass (the extractors, the body
/// limit, the timeout, the stores), added to each operation that can meet them so its entry
/// lists every status it can answer; what a handler itself answers it documents itself.
struct SharedResponses;

impl Modify for SharedResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::Operation;
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        let add = |op: &mut Operation, status: &str, description: &str| {
            op.responses
                .responses
                .entry(status.to_owned())
                .or_insert_with(|| error(description).into());
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/api/") {
                continue;
            }
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for op in operations.into_iter().flatten() {
                let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
                if has_params || op.request_body.is_some() {
                    add(op, "400", "a malformed path, query or body");
                }
                if op.security.is_some() {
                    add(op, "401", "no live bearer token");
                }
                if op.request_body.is_some() {
                    add(op, "413", "the body is over its limit");
                    add(
                        op,
                        "415",
                        "the body is not of the type this operation takes",
                    );
                    add(op, "422", "a field's value is not allowed");
                }
                // the timeout layer answers with an empty body
                op.responses
                    .responses
                    .entry("408".to_owned())
                    .or_insert_with(|| {
                        ResponseBuilder::new()
                            .description("the request took longer than the server allows")
                            .build()
                            .into()
                    });
                add(
                    op,
                    "503",
                    "a store this request needs is unreachable; nothing was written",
                );
            }
        }
    }
}

/// Every documented route (health checks, and the API under `/api`) and its OpenAPI document.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let api = OpenApiRouter::new()
        .merge(accounts::router())
        .merge(scenes::router())
        .merge(frames::router())
        .merge(clips::router())
        .merge(shows::router())
        .merge(live::router())
        .merge(locate::router())
        .merge(flash::router())
        .merge(sound::router())
        .merge(log::router())
        .merge(calendar::router())
        .merge(search::router());
    let (router, mut openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .merge(crate::ws::router())
        .nest("/api", api)
        .split_for_parts();
    // on the whole document: the paths are merged in only now
    SharedResponses.modify(&mut openapi);
    (router, openapi)
}

pub fn router(state: AppState) -> Router {
    let (api, openapi) = api();
    // serialised once: the document is the same for the life of the process
    let openapi = bytes::Bytes::from(openapi.to_json().unwrap_or_default());
    let api = api.route(
        "/api/openapi.json",
        get(move || {
            let doc = openapi.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    doc,
                )
            }
        }),
    );
    // a scene's short address (`/s/{key}`, from the join code) is the phone page, which reads
    // the scene from its own address
    let phone_page = state.config.web_root.join("phone.html");
    let api = api.route_service("/s/{key}", tower_http::services::ServeFile::new(phone_page));
    let static_files = ServeDir::new(&state.config.web_root)
        .append_index_html_on_directories(true)
        .not_found_service(axum::handler::HandlerWithoutStateExt::into_service(
            unknown_route,
        ));
    api.route_layer(axum::middleware::from_fn(crate::telemetry::track_http))
        .fallback_service(static_files)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            body::min_rate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            request_timeout,
        ))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                let route = req
                    .extensions()
                    .get::<axum::extract::MatchedPath>()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default();
                tracing::info_span!("http", method = %req.method(), uri = %req.uri(), route)
            }),
        )
        .layer(CatchPanicLayer::custom(|_| {
            Error::Internal(anyhow::anyhow!("handler panicked")).into_response()
        }))
        .layer(cors(&state.config.cors_origins))
        .with_state(state)
}

/// CORS for the origins allowed (`C3S_CORS_ORIGINS`): an organizer's own site may call the
/// calendar and search from its pages. No origin allowed by default.
fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use axum::http::{header, HeaderValue, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins: Vec<&str> = origins
        .iter()
        .map(|o| o.trim().trim_end_matches('/'))
        .filter(|o| !o.is_empty())
        .collect();
    let allow = if origins.contains(&"*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        )
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([
            header::HeaderName::from_static("x-cache"),
            header::HeaderName::from_static("x-grid-width"),
            header::HeaderName::from_static("x-grid-height"),
        ])
        .max_age(std::time::Duration::from_secs(3600))
}

async fn unknown_route() -> Error {
    Error::NotFound("route")
}

async fn method_not_allowed() -> impl IntoResponse {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        axum::Json(ErrorBody {
            error: "method_not_allowed".into(),
            message: "this route does not take that method".into(),
            current: None,
        }),
    )
}

#[derive(Serialize, ToSchema)]
struct Health {
    status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

#[derive(Serialize, ToSchema)]
struct Readiness {
    postgres: &'static str,
    gridfs: &'static str,
}

/// PostgreSQL and the GridFS store are reachable (503 naming the one that is not).
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
async fn readyz(State(state): State<AppState>) -> (StatusCode, axum::Json<Readiness>) {
    let pg = crate::store::nodes::ping(&state.db);
    let (pg, mongo) = tokio::join!(pg, state.frame_store.ping());
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    let ready = pg.is_ok() && mongo.is_ok();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(Readiness {
            postgres: word(pg.is_ok()),
            gridfs: word(mongo.is_ok()),
        }),
    )
}
