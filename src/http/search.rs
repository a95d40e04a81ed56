//! One search over the calendar: text, distance, time window and accessibility, together.

use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, DurationRound, Utc};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::calendar::{check_point, check_window, feature_ids};
use super::extract::{ClientIp, Query};
use super::scenes::Paging;
use crate::app::AppState;
use crate::error::{Error, ErrorBody, Result};
use crate::search::SearchPage;
use crate::store::calendar::Search;
use crate::text::Rule;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(search))
}

/// Longest text searched for.
const MAX_TEXT: usize = 200;
const DEFAULT_RADIUS_KM: f64 = 25.0;
/// Half the Earth's circumference: every point is within it.
const MAX_RADIUS_KM: f64 = 20_040.0;

#[derive(Debug, Deserialize, IntoParams)]
pub struct SearchQuery {
    /// Words in the show's or venue's name, description or address (`"a phrase"`, `-not`,
    /// `or`); results are ranked by relevance.
    pub q: Option<String>,
    /// With `lon`: shows at venues within `radius_km` of this point, nearest first (when there
    /// is no text).
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    /// Default 25.
    pub radius_km: Option<f64>,
    /// Shows starting at or after this instant (RFC 3339; default: now).
    pub from: Option<DateTime<Utc>>,
    /// ... and before this one.
    pub to: Option<DateTime<Utc>>,
    /// Accessibility features the venue must have, comma-separated codes
    /// (`GET /api/accessibility-features`).
    pub features: Option<String>,
    pub page: Option<i64>,
    pub per_page: Option<i64>,
}

/// Finds shows by text, distance, time window and accessibility at once; paged, ranked.
/// Answers from a cache that is never older than the last change (`X-Cache: hit` or `miss`).
#[utoipa::path(get, path = "/search", tag = "calendar", params(SearchQuery),
    responses((status = 200, body = SearchPage), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "too many searches from this address; see `Retry-After`")))]
async fn search(
    State(state): State<AppState>,
    client: ClientIp,
    Query(q): Query<SearchQuery>,
) -> Result<Response> {
    state.rate_limits.searches.check(&client.ip)?;
    // the words as the search reads them: case and spacing do not change its results
    let text = Rule::line("q", MAX_TEXT).clean_opt(q.q.as_deref())?;
    let text = Some(
        text.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase(),
    )
    .filter(|t| !t.is_empty());
    let near = match (q.lat, q.lon) {
        (None, None) => {
            if q.radius_km.is_some() {
                return Err(Error::invalid(
                    "invalid_coordinates",
                    "radius_km needs lat and lon",
                ));
            }
            None
        }
        (Some(lat), Some(lon)) => {
            check_point(lat, lon)?;
            let radius = q.radius_km.unwrap_or(DEFAULT_RADIUS_KM);
            if !(radius.is_finite() && radius > 0.0 && radius <= MAX_RADIUS_KM) {
                return Err(Error::invalid(
                    "invalid_radius",
                    format!("radius_km is more than 0 and at most {MAX_RADIUS_KM}"),
                ));
            }
            Some((lat.to_bits(), lon.to_bits(), (radius * 1000.0).to_bits()))
        }
        _ => {
            return Err(Error::invalid(
                "invalid_coordinates",
                "give both lat and lon, or neither",
            ))
        }
    };
    check_window(q.from, q.to)?;
    // the cache key is normalised: "from now" is taken to the minute, given instants to the
    // second, so searches a second apart (or nanoseconds apart) are one cache entry
    let truncate = |t: DateTime<Utc>, unit| t.duration_trunc(unit).unwrap_or(t);
    let from = match q.from {
        Some(t) => truncate(t, chrono::Duration::seconds(1)),
        None => truncate(Utc::now(), chrono::Duration::minutes(1)),
    };
    let to = q.to.map(|t| truncate(t, chrono::Duration::seconds(1)));
    if to.is_some_and(|to| to <= from) {
        return Err(Error::invalid(
            "invalid_window",
            "the time window ends before it starts: `to` must be after `from` (default now)",
        ));
    }
    let codes: Vec<String> = q
        .features
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
        .collect();
    let features = feature_ids(&state, &codes).await?;
    let (limit, offset, _, _) = Paging {
        page: q.page,
        per_page: q.per_page,
    }
    .resolve()?;
    let search = Search {
        text,
        near,
        from: Some(from),
        to,
        features,
        limit,
        offset,
    };
    let (page, cached) = state.search_cache.search(&state.db, &search).await?;
    let mut response = axum::Json(page.as_ref()).into_response();
    response.headers_mut().insert(
        "x-cache",
        HeaderValue::from_static(if cached { "hit" } else { "miss" }),
    );
    Ok(response)
}
