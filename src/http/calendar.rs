//! Organizers and their members, venues, the show calendar (JSON and iCalendar), and
//! registrations for shows.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::extract::{Auth, Json, MaybeAuth, Path, Query};
use super::locate::SeatMapErrors;
use super::scenes::{visible_scene, Paging};
use crate::app::AppState;
use crate::auth::{Identity, Permission};
use crate::error::{Error, ErrorBody, Result};
use crate::events::SceneEvent;
use crate::store;
use crate::store::calendar::{
    self as cal, CalendarFilter, Feature, Listing, Member, Organizer, Registered, Registrant,
    Schedule, Venue, VenueFields,
};
use crate::text::Rule;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_organizer))
        .routes(routes!(get_organizer))
        .routes(routes!(list_members, put_member))
        .routes(routes!(remove_member))
        .routes(routes!(list_features))
        .routes(routes!(create_venue))
        .routes(routes!(get_venue, update_venue))
        .routes(routes!(put_venue_seats))
        .routes(routes!(get_schedule, put_schedule))
        .routes(routes!(list_calendar))
        .routes(routes!(venue_ics))
        .routes(routes!(organizer_ics))
        .routes(routes!(list_registrations, register))
        .routes(routes!(cancel_registration))
}

fn account(me: &Identity) -> Result<()> {
    if me.is_guest() {
        return Err(Error::forbidden("a guest phone cannot do this; log in"));
    }
    Ok(())
}

/// The caller's role in the organizer (admins count as owners); 403 when not a member.
async fn require_member(state: &AppState, me: &Identity, organizer_id: Uuid) -> Result<String> {
    let mut conn = state.db.acquire().await?;
    require_member_in(&mut conn, me, organizer_id).await
}

/// [`require_member`] on a connection the caller holds (a command's transaction: no command
/// waits for a second connection of the pool while it holds one).
async fn require_member_in(
    conn: &mut sqlx::PgConnection,
    me: &Identity,
    organizer_id: Uuid,
) -> Result<String> {
    cal::organizer_by_id(&mut *conn, organizer_id)
        .await?
        .ok_or(Error::NotFound("organizer"))?;
    if me.is_admin() {
        return Ok("owner".into());
    }
    cal::member_role(&mut *conn, organizer_id, me.user_id)
        .await?
        .ok_or_else(|| Error::forbidden("only the organizer's members may do this"))
}

// ---------------------------------------------------------------- organizers

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrganizer {
    pub name: String,
    pub description: Option<String>,
    pub website: Option<String>,
}

/// Creates an organizer; the caller becomes its owner.
#[utoipa::path(post, path = "/organizers", tag = "calendar", request_body = NewOrganizer,
    responses((status = 201, body = Organizer), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn create_organizer(
    State(state): State<AppState>,
    Auth(me): Auth,
    Json(body): Json<NewOrganizer>,
) -> Result<(StatusCode, Json<Organizer>)> {
    account(&me)?;
    let name = Rule::name("name", 200).clean(&body.name)?;
    let description = Rule::prose("description", 5000).clean_opt(body.description.as_deref())?;
    let website = Rule::line("website", 500).clean_opt(body.website.as_deref())?;
    let mut tx = state.db.begin().await?;
    let organizer =
        cal::insert_organizer(&mut tx, &name, &description, &website, me.user_id).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(organizer)))
}

#[utoipa::path(get, path = "/organizers/{organizer_id}", tag = "calendar",
    params(("organizer_id" = Uuid, Path)),
    responses((status = 200, body = Organizer), (status = 404, body = ErrorBody)))]
async fn get_organizer(
    State(state): State<AppState>,
    Path(organizer_id): Path<Uuid>,
) -> Result<Json<Organizer>> {
    cal::organizer_by_id(&state.db, organizer_id)
        .await?
        .map(Json)
        .ok_or(Error::NotFound("organizer"))
}

/// The organizer's members (members only).
#[utoipa::path(get, path = "/organizers/{organizer_id}/members", tag = "calendar",
    params(("organizer_id" = Uuid, Path)),
    responses((status = 200, body = Vec<Member>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn list_members(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(organizer_id): Path<Uuid>,
) -> Result<Json<Vec<Member>>> {
    require_member(&state, &me, organizer_id).await?;
    Ok(Json(cal::members(&state.db, organizer_id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberRequest {
    /// The account to add, by login.
    pub login: String,
    /// `member` (default) or `owner`.
    pub role: Option<String>,
}

/// Adds an account to the organizer or changes its role (owners only).
#[utoipa::path(post, path = "/organizers/{organizer_id}/members", tag = "calendar",
    params(("organizer_id" = Uuid, Path)), request_body = MemberRequest,
    responses((status = 200, body = Vec<Member>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn put_member(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(organizer_id): Path<Uuid>,
    Json(body): Json<MemberRequest>,
) -> Result<Json<Vec<Member>>> {
    if require_member(&state, &me, organizer_id).await? != "owner" {
        return Err(Error::forbidden(
            "only the organizer's owners manage its members",
        ));
    }
    let role = body.role.as_deref().unwrap_or("member");
    if !matches!(role, "member" | "owner") {
        return Err(Error::invalid("invalid_role", "role is member or owner"));
    }
    let login = crate::auth::parse_login(&body.login)
        .map_err(|e| Error::invalid("invalid_login", e.to_string()))?;
    let user = store::users::user_by_login(&state.db, &login)
        .await?
        .ok_or(Error::NotFound("user"))?;
    cal::set_member(&state.db, organizer_id, user.user_id, role).await?;
    Ok(Json(cal::members(&state.db, organizer_id).await?))
}

/// Removes a member (owners; any member may leave).
#[utoipa::path(delete, path = "/organizers/{organizer_id}/members/{user_id}", tag = "calendar",
    params(("organizer_id" = Uuid, Path), ("user_id" = Uuid, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn remove_member(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path((organizer_id, user_id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode> {
    let role = require_member(&state, &me, organizer_id).await?;
    if role != "owner" && user_id != me.user_id {
        return Err(Error::forbidden(
            "only the organizer's owners remove other members",
        ));
    }
    if !cal::remove_member(&state.db, organizer_id, user_id).await? {
        return Err(Error::NotFound("member"));
    }
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- venues

/// The accessibility features a venue may list (and a search may require).
#[utoipa::path(get, path = "/accessibility-features", tag = "calendar",
    responses((status = 200, body = Vec<Feature>)))]
async fn list_features(State(state): State<AppState>) -> Result<Json<Vec<Feature>>> {
    Ok(Json(cal::features(&state.db).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VenueRequest {
    /// The organizer that manages the venue (creating only).
    pub organizer_id: Option<Uuid>,
    pub name: String,
    pub address: Option<String>,
    pub lat: f64,
    pub lon: f64,
    pub capacity: i32,
    /// Codes from `GET /api/accessibility-features`.
    #[serde(default)]
    pub features: Vec<String>,
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Value>,
}

/// Checks a venue request: its fields and its features' ids.
async fn venue_fields(state: &AppState, body: VenueRequest) -> Result<(VenueFields, Vec<i16>)> {
    let name = Rule::name("name", 200).clean(&body.name)?;
    check_point(body.lat, body.lon)?;
    if body.capacity <= 0 {
        return Err(Error::invalid(
            "invalid_capacity",
            "capacity is a positive number of people",
        ));
    }
    let details = body.details.unwrap_or_else(|| serde_json::json!({}));
    if !details.is_object() || details.to_string().len() > 20_000 {
        return Err(Error::invalid(
            "invalid_details",
            "details is a JSON object of at most 20 kB",
        ));
    }
    let ids = feature_ids(state, &body.features).await?;
    let fields = VenueFields {
        name,
        address: Rule::line("address", 500).clean_opt(body.address.as_deref())?,
        lat: body.lat,
        lon: body.lon,
        capacity: body.capacity,
        details,
    };
    Ok((fields, ids))
}

/// Refuses control characters (PostgreSQL cannot store a NUL; the others are never meant).
/// Refuses instants outside the years 1970 to 9999 (what the database and iCalendar take).
pub fn check_instant(t: DateTime<Utc>, field: &str) -> Result<()> {
    use chrono::Datelike;
    if !(1970..=9999).contains(&t.year()) {
        return Err(Error::invalid(
            "invalid_time",
            format!("{field} must be in the years 1970 to 9999"),
        ));
    }
    Ok(())
}

pub fn check_point(lat: f64, lon: f64) -> Result<()> {
    if !(lat.is_finite()
        && lon.is_finite()
        && (-90.0..=90.0).contains(&lat)
        && (-180.0..=180.0).contains(&lon))
    {
        return Err(Error::invalid(
            "invalid_coordinates",
            "lat is -90 to 90 and lon is -180 to 180 (degrees)",
        ));
    }
    Ok(())
}

/// The ids of feature codes; 422 naming the unknown ones and the known ones.
pub async fn feature_ids(state: &AppState, codes: &[String]) -> Result<Vec<i16>> {
    match cal::feature_ids(&state.db, codes).await? {
        Ok(ids) => Ok(ids),
        Err(unknown) => {
            let known: Vec<String> = cal::features(&state.db)
                .await?
                .into_iter()
                .map(|f| f.code)
                .collect();
            Err(Error::invalid(
                "unknown_feature",
                format!(
                    "unknown accessibility feature(s): {}; known: {}",
                    unknown.join(", "),
                    known.join(", ")
                ),
            ))
        }
    }
}

/// Creates a venue managed by an organizer (its members).
#[utoipa::path(post, path = "/venues", tag = "calendar", request_body = VenueRequest,
    responses((status = 201, body = Venue), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn create_venue(
    State(state): State<AppState>,
    Auth(me): Auth,
    Json(body): Json<VenueRequest>,
) -> Result<(StatusCode, Json<Venue>)> {
    let organizer_id = body.organizer_id.ok_or_else(|| {
        Error::invalid(
            "invalid_field",
            "organizer_id: which organizer manages the venue",
        )
    })?;
    require_member(&state, &me, organizer_id).await?;
    let (fields, ids) = venue_fields(&state, body).await?;
    let mut tx = state.db.begin().await?;
    let venue_id = cal::save_venue(&mut tx, None, organizer_id, &fields, &ids).await?;
    let venue = cal::venue_by_id(&mut *tx, venue_id)
        .await?
        .ok_or(Error::NotFound("venue"))?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(venue)))
}

#[utoipa::path(get, path = "/venues/{venue_id}", tag = "calendar", params(("venue_id" = Uuid, Path)),
    responses((status = 200, body = Venue), (status = 404, body = ErrorBody)))]
async fn get_venue(
    State(state): State<AppState>,
    Path(venue_id): Path<Uuid>,
) -> Result<Json<Venue>> {
    cal::venue_by_id(&state.db, venue_id)
        .await?
        .map(Json)
        .ok_or(Error::NotFound("venue"))
}

/// The venue whose organizer the caller is a member of.
async fn managed_venue(state: &AppState, me: &Identity, venue_id: Uuid) -> Result<Venue> {
    let venue = cal::venue_by_id(&state.db, venue_id)
        .await?
        .ok_or(Error::NotFound("venue"))?;
    require_member(state, me, venue.organizer_id).await?;
    Ok(venue)
}

/// Replaces a venue's fields and features (the organizer's members).
#[utoipa::path(put, path = "/venues/{venue_id}", tag = "calendar", params(("venue_id" = Uuid, Path)),
    request_body = VenueRequest,
    responses((status = 200, body = Venue), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn update_venue(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(venue_id): Path<Uuid>,
    Json(body): Json<VenueRequest>,
) -> Result<Json<Venue>> {
    let venue = managed_venue(&state, &me, venue_id).await?;
    if body.organizer_id.is_some_and(|o| o != venue.organizer_id) {
        return Err(Error::invalid(
            "invalid_field",
            "a venue's organizer does not change",
        ));
    }
    let (fields, ids) = venue_fields(&state, body).await?;
    let mut tx = state.db.begin().await?;
    cal::save_venue(&mut tx, Some(venue_id), venue.organizer_id, &fields, &ids).await?;
    let venue = cal::venue_by_id(&mut *tx, venue_id)
        .await?
        .ok_or(Error::NotFound("venue"))?;
    tx.commit().await?;
    Ok(Json(venue))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VenueSeats {
    pub imported: usize,
}

/// Imports the venue's seat map: CSV `section,row,seat,x,y`, all or nothing. Scenes at the
/// venue without a seat map of their own locate phones by it.
#[utoipa::path(put, path = "/venues/{venue_id}/seats", tag = "calendar", params(("venue_id" = Uuid, Path)),
    request_body(content = String, content_type = "text/csv"),
    responses((status = 200, body = VenueSeats), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = SeatMapErrors)),
    security(("bearer" = [])))]
async fn put_venue_seats(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(venue_id): Path<Uuid>,
    body: axum::body::Body,
) -> Result<Response> {
    managed_venue(&state, &me, venue_id).await?;
    let limit = super::locate::MAX_SEAT_MAP_BYTES;
    let body = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| Error::PayloadTooLarge {
            limit: limit as u64,
        })?;
    // a venue has no extent of its own: its seats are in the units of the scenes held there
    let seats = match crate::locate::seat::parse(&body, 1e6, 1e6) {
        Ok(seats) if !seats.is_empty() => seats,
        Ok(_) => {
            return Err(Error::invalid(
                "invalid_seat_map",
                "the seat map has no seats",
            ))
        }
        Err(lines) => {
            let body = SeatMapErrors {
                error: "invalid_seat_map",
                message: format!("{} line(s) are wrong; nothing was imported", lines.len()),
                lines,
            };
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, axum::Json(body)).into_response());
        }
    };
    let mut tx = state.db.begin().await?;
    store::locate::replace_seats(&mut tx, store::locate::SeatMap::Venue(venue_id), &seats).await?;
    tx.commit().await?;
    Ok(Json(VenueSeats {
        imported: seats.len(),
    })
    .into_response())
}

// ---------------------------------------------------------------- schedule

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    /// The organizer putting the show on (the caller must be a member); none: no organizer.
    pub organizer_id: Option<Uuid>,
    pub venue_id: Uuid,
    pub starts_at: DateTime<Utc>,
    pub ends_at: Option<DateTime<Utc>>,
    /// How many may register (default: the venue's capacity); at most the venue's capacity.
    pub capacity: Option<i32>,
}

/// The scene's calendar entry (a draft's only to its operators).
#[utoipa::path(get, path = "/scenes/{scene_id}/schedule", tag = "calendar", params(("scene_id" = Uuid, Path)),
    responses((status = 200, body = Schedule), (status = 404, body = ErrorBody)))]
async fn get_schedule(
    State(state): State<AppState>,
    MaybeAuth(who): MaybeAuth,
    Path(scene_id): Path<Uuid>,
) -> Result<Json<Schedule>> {
    visible_scene(&state, who.as_ref(), scene_id).await?;
    cal::schedule_of(&state.db, scene_id)
        .await?
        .map(Json)
        .ok_or(Error::NotFound("scene"))
}

/// Whether the caller manages the scene's calendar entry: the members of its organizer when it
/// has one, else its operators.
async fn may_manage(
    conn: &mut sqlx::PgConnection,
    me: &Identity,
    schedule: &Schedule,
) -> Result<bool> {
    if me.is_admin() {
        return Ok(true);
    }
    Ok(match schedule.organizer_id {
        Some(o) => cal::member_role(conn, o, me.user_id).await?.is_some(),
        None => me.may(Permission::Operator, schedule.scene_id),
    })
}

/// Puts the scene on the calendar: organizer, venue, times, capacity.
#[utoipa::path(put, path = "/scenes/{scene_id}/schedule", tag = "calendar", params(("scene_id" = Uuid, Path)),
    request_body = ScheduleRequest,
    responses((status = 200, body = Schedule), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn put_schedule(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(scene_id): Path<Uuid>,
    Json(body): Json<ScheduleRequest>,
) -> Result<Json<Schedule>> {
    check_instant(body.starts_at, "starts_at")?;
    if let Some(end) = body.ends_at {
        check_instant(end, "ends_at")?;
        if end <= body.starts_at {
            return Err(Error::invalid(
                "invalid_times",
                "ends_at must be after starts_at",
            ));
        }
    }
    // every check on the scene as it is under its locks, and on the venue held still (`for
    // share`: a rename cannot slip past the scene's search text); all on the command's own
    // connection
    let mut command = state.commands.begin(scene_id).await?;
    let tx = command.tx();
    let current = cal::schedule_of(&mut **tx, scene_id)
        .await?
        .ok_or(Error::NotFound("scene"))?;
    if !may_manage(tx, &me, &current).await? {
        return Err(Error::forbidden(
            "only the scene's organizer's members (or, without one, its operators) schedule it",
        ));
    }
    if let Some(o) = body.organizer_id {
        require_member_in(tx, &me, o).await?;
    }
    let venue = cal::share_venue(tx, body.venue_id)
        .await?
        .ok_or_else(|| Error::invalid("unknown_venue", "there is no such venue"))?;
    if !me.is_admin()
        && cal::member_role(&mut **tx, venue.organizer_id, me.user_id)
            .await?
            .is_none()
    {
        return Err(Error::forbidden(
            "only the members of the venue's organizer put shows on its calendar",
        ));
    }
    let capacity = body.capacity.unwrap_or(venue.capacity);
    if capacity <= 0 || capacity > venue.capacity {
        return Err(Error::invalid(
            "invalid_capacity",
            format!("capacity is 1 to the venue's {}", venue.capacity),
        ));
    }
    if capacity < current.registered {
        return Err(Error::Conflict(format!(
            "{} people have registered already; the capacity cannot go below that",
            current.registered
        )));
    }
    let wanted = Schedule {
        scene_id,
        organizer_id: body.organizer_id,
        venue_id: Some(venue.venue_id),
        starts_at: Some(body.starts_at),
        ends_at: body.ends_at,
        capacity: Some(capacity),
        registered: current.registered,
    };
    let saved = cal::set_schedule(tx, &wanted)
        .await?
        .ok_or(Error::NotFound("scene"))?;
    let event = SceneEvent::SceneScheduled {
        organizer_id: saved.organizer_id,
        venue_id: venue.venue_id,
        starts_at: body.starts_at,
        ends_at: body.ends_at,
        capacity,
    };
    command.commit(Some(me.user_id), vec![event]).await?;
    Ok(Json(saved))
}

// ---------------------------------------------------------------- the calendar

#[derive(Debug, Deserialize, IntoParams)]
pub struct CalendarQuery {
    pub venue_id: Option<Uuid>,
    pub organizer_id: Option<Uuid>,
    /// Shows starting at or after this instant (RFC 3339; default: now).
    pub from: Option<DateTime<Utc>>,
    /// ... and before this one.
    pub to: Option<DateTime<Utc>>,
    pub page: Option<i64>,
    pub per_page: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CalendarPage {
    pub items: Vec<Listing>,
    pub page: i64,
    pub per_page: i64,
    pub has_more: bool,
}

pub fn check_window(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Result<()> {
    if let Some(from) = from {
        check_instant(from, "from")?;
    }
    if let Some(to) = to {
        check_instant(to, "to")?;
    }
    if let (Some(from), Some(to)) = (from, to) {
        if to <= from {
            return Err(Error::invalid(
                "invalid_window",
                "the time window ends before it starts: `to` must be after `from`",
            ));
        }
    }
    Ok(())
}

/// Upcoming shows, soonest first, by venue, organizer and time window.
#[utoipa::path(get, path = "/calendar", tag = "calendar", params(CalendarQuery),
    responses((status = 200, body = CalendarPage), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn list_calendar(
    State(state): State<AppState>,
    Query(q): Query<CalendarQuery>,
) -> Result<Json<CalendarPage>> {
    check_window(q.from, q.to)?;
    let (limit, offset, page, per_page) = Paging {
        page: q.page,
        per_page: q.per_page,
    }
    .resolve()?;
    let filter = CalendarFilter {
        venue_id: q.venue_id,
        organizer_id: q.organizer_id,
        from: Some(q.from.unwrap_or_else(Utc::now)),
        to: q.to,
    };
    let mut items = cal::calendar(&state.db, &filter, limit + 1, offset).await?;
    let has_more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    Ok(Json(CalendarPage {
        items,
        page,
        per_page,
        has_more,
    }))
}

/// Shows of a venue or organizer from a month ago on, as an iCalendar file. Feeds are
/// anonymous and polled by every subscriber's calendar app: each is built once per catalog
/// version (and at most every `ICS_MAX_AGE`), then served from the cache (`X-Cache: hit`).
async fn ics(
    state: &AppState,
    key: crate::search::FeedKey,
    filter: CalendarFilter,
    title: &str,
) -> Result<Response> {
    let version = cal::catalog_version(&state.db).await?;
    let (body, hit) = match state.ics_cache.get(&key, version) {
        Some(body) => (body, true),
        None => {
            let filter = CalendarFilter {
                from: Some(Utc::now() - chrono::Duration::days(31)),
                ..filter
            };
            let shows = cal::calendar(&state.db, &filter, 5000, 0).await?;
            let body = bytes::Bytes::from(crate::ics::calendar(title, &shows, Utc::now()));
            state.ics_cache.put(key, version, body.clone());
            (body, false)
        }
    };
    Ok((
        [
            (header::CONTENT_TYPE, "text/calendar; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
            (
                header::HeaderName::from_static("x-cache"),
                if hit { "hit" } else { "miss" },
            ),
        ],
        body,
    )
        .into_response())
}

/// The venue's shows as iCalendar (`.ics`), to subscribe to.
#[utoipa::path(get, path = "/venues/{venue_id}/calendar.ics", tag = "calendar", params(("venue_id" = Uuid, Path)),
    responses((status = 200, content_type = "text/calendar", body = String), (status = 404, body = ErrorBody)))]
async fn venue_ics(State(state): State<AppState>, Path(venue_id): Path<Uuid>) -> Result<Response> {
    let venue = cal::venue_by_id(&state.db, venue_id)
        .await?
        .ok_or(Error::NotFound("venue"))?;
    let filter = CalendarFilter {
        venue_id: Some(venue_id),
        ..CalendarFilter::default()
    };
    let key = crate::search::FeedKey::Venue(venue_id);
    ics(&state, key, filter, &venue.name).await
}

/// The organizer's shows as iCalendar (`.ics`), to subscribe to.
#[utoipa::path(get, path = "/organizers/{organizer_id}/calendar.ics", tag = "calendar",
    params(("organizer_id" = Uuid, Path)),
    responses((status = 200, content_type = "text/calendar", body = String), (status = 404, body = ErrorBody)))]
async fn organizer_ics(
    State(state): State<AppState>,
    Path(organizer_id): Path<Uuid>,
) -> Result<Response> {
    let organizer = cal::organizer_by_id(&state.db, organizer_id)
        .await?
        .ok_or(Error::NotFound("organizer"))?;
    let filter = CalendarFilter {
        organizer_id: Some(organizer_id),
        ..CalendarFilter::default()
    };
    let key = crate::search::FeedKey::Organizer(organizer_id);
    ics(&state, key, filter, &organizer.name).await
}

// ---------------------------------------------------------------- registrations

#[derive(Debug, Serialize, ToSchema)]
pub struct Registration {
    pub scene_id: Uuid,
    pub user_id: Uuid,
    /// Registrations for the show now, and how many it takes.
    pub registered: i32,
    pub capacity: Option<i32>,
}

/// Registers the caller (an account) for an upcoming show. 409 when it is full.
#[utoipa::path(post, path = "/scenes/{scene_id}/registrations", tag = "calendar", params(("scene_id" = Uuid, Path)),
    responses((status = 201, body = Registration), (status = 200, body = Registration, description = "already registered"),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
async fn register(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(scene_id): Path<Uuid>,
) -> Result<(StatusCode, Json<Registration>)> {
    account(&me)?;
    visible_scene(&state, Some(&me), scene_id).await?;
    let status = match cal::register(&state.db, scene_id, me.user_id).await {
        Ok(Registered::Now) => StatusCode::CREATED,
        Ok(Registered::Already) => StatusCode::OK,
        Ok(Registered::Full) => return Err(Error::Conflict("the show is full".into())),
        Ok(Registered::NotOpen) => return Err(Error::Conflict(
            "this show takes no registrations (it has started, ended, or is not on the calendar)"
                .into(),
        )),
        // the user was deleted meanwhile, or the scene
        Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
            return Err(Error::NotFound("scene"))
        }
        Err(e) => return Err(e.into()),
    };
    let schedule = cal::schedule_of(&state.db, scene_id)
        .await?
        .ok_or(Error::NotFound("scene"))?;
    Ok((
        status,
        Json(Registration {
            scene_id,
            user_id: me.user_id,
            registered: schedule.registered,
            capacity: schedule.capacity,
        }),
    ))
}

/// Cancels the caller's registration.
#[utoipa::path(delete, path = "/scenes/{scene_id}/registrations/me", tag = "calendar",
    params(("scene_id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn cancel_registration(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(scene_id): Path<Uuid>,
) -> Result<StatusCode> {
    if !cal::cancel(&state.db, scene_id, me.user_id).await? {
        return Err(Error::NotFound("registration"));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Who registered (the organizer's members, or the scene's operators without one).
#[utoipa::path(get, path = "/scenes/{scene_id}/registrations", tag = "calendar", params(("scene_id" = Uuid, Path)),
    responses((status = 200, body = Vec<Registrant>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn list_registrations(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(scene_id): Path<Uuid>,
) -> Result<Json<Vec<Registrant>>> {
    let schedule = cal::schedule_of(&state.db, scene_id)
        .await?
        .ok_or(Error::NotFound("scene"))?;
    if !may_manage(&mut *state.db.acquire().await?, &me, &schedule).await? {
        return Err(Error::forbidden(
            "registrations are for the scene's organizer's members (or its operators)",
        ));
    }
    Ok(Json(cal::registrations(&state.db, scene_id).await?))
}
