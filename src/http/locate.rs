//! Locating over HTTP: the scene's geo-reference and seat map (operators), observer taps and
//! "identify" (observers).

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::extract::{Auth, Json, Path};
use super::scenes::scene_with_right;
use crate::app::AppState;
use crate::auth::Permission;
use crate::clock;
use crate::commands::placements::{Placement, Refused};
use crate::dataplane::signals::Signal;
use crate::error::{Error, ErrorBody, Result};
use crate::events::SceneEvent;
use crate::locate::gps::{GeoError, GeoPoint, GeoReference};
use crate::locate::seat::{self, LineError};
use crate::locate::Observation;
use crate::scene::{LocationMethod, Scene};
use crate::store;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(put_geo_reference))
        .routes(routes!(put_seats))
        .routes(routes!(place_pixel))
        .routes(routes!(identify_pixel))
        .routes(routes!(ask_for_qr_codes))
        .routes(routes!(place_pixels))
        // photos are streamed with their own limit (`max_upload_bytes`), not the JSON one
        .merge(
            OpenApiRouter::new()
                .routes(routes!(upload_photo))
                .layer(DefaultBodyLimit::disable()),
        )
}

/// Largest seat-map upload.
pub const MAX_SEAT_MAP_BYTES: usize = 16 * 1024 * 1024;
/// How long an identified phone flashes.
const IDENTIFY_MS: i64 = 5000;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GeoReferenceRequest {
    /// Three or more (lat, lon) ↔ scene points; more points are fitted by least squares.
    pub points: Vec<GeoPoint>,
    /// Phones reporting a worse accuracy (metres) are refused.
    pub accuracy_m: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GeoReferenceFit {
    /// Largest distance (scene units) between a reference point and where the fit puts it.
    pub residual: f64,
    pub units_per_metre: f64,
}

fn geo_error(e: GeoError) -> Error {
    Error::invalid("invalid_geo_reference", e.to_string())
}

/// Geo-references the scene for GPS locating.
#[utoipa::path(put, path = "/scenes/{scene_id}/geo-reference", tag = "locating", params(("scene_id" = Uuid, Path)),
    request_body = GeoReferenceRequest,
    responses((status = 200, body = GeoReferenceFit), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn put_geo_reference(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(scene_id): Path<Uuid>,
    Json(body): Json<GeoReferenceRequest>,
) -> Result<Json<GeoReferenceFit>> {
    scene_with_right(&state, &me, scene_id, Permission::Operator).await?;
    if !(body.accuracy_m.is_finite() && body.accuracy_m > 0.0) {
        return Err(Error::invalid(
            "invalid_accuracy",
            "accuracy_m must be a positive number of metres",
        ));
    }
    let fit = GeoReference::fit(&body.points).map_err(geo_error)?;
    let mut command = state.commands.begin(scene_id).await?;
    store::locate::set_geo_reference(&mut **command.tx(), scene_id, &body.points, body.accuracy_m)
        .await?;
    let set = SceneEvent::GeoReferenceSet {
        points: body.points.clone(),
        accuracy_m: body.accuracy_m,
    };
    command.commit(Some(me.user_id), vec![set]).await?;
    Ok(Json(GeoReferenceFit {
        residual: fit.residual,
        units_per_metre: fit.units_per_metre(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SeatImport {
    pub imported: usize,
}

/// The answer to a seat map with errors: every bad line, and nothing imported.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeatMapErrors {
    pub error: &'static str,
    pub message: String,
    pub lines: Vec<LineError>,
}

/// Imports the scene's seat map: CSV lines `section,row,seat,x,y` (a header line is allowed).
/// All or nothing: any bad line refuses the whole map, listing every bad line.
#[utoipa::path(put, path = "/scenes/{scene_id}/seats", tag = "locating", params(("scene_id" = Uuid, Path)),
    request_body(content = String, content_type = "text/csv"),
    responses((status = 200, body = SeatImport), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = SeatMapErrors),
        (status = 429, body = ErrorBody, description = "too many uploads by this account; see `Retry-After`")),
    security(("bearer" = [])))]
async fn put_seats(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(scene_id): Path<Uuid>,
    body: axum::body::Body,
) -> Result<Response> {
    let scene = scene_with_right(&state, &me, scene_id, Permission::Operator).await?;
    state.rate_limits.uploads.check(&me.user_id)?;
    let bytes = axum::body::to_bytes(body, MAX_SEAT_MAP_BYTES)
        .await
        .map_err(|e| {
            if super::body::is_too_slow(&e) {
                Error::TooSlow(e.to_string())
            } else {
                Error::PayloadTooLarge {
                    limit: MAX_SEAT_MAP_BYTES as u64,
                }
            }
        })?;
    let seats = match seat::parse(&bytes, scene.width, scene.height) {
        Ok(seats) => seats,
        Err(lines) => {
            let body = SeatMapErrors {
                error: "invalid_seat_map",
                message: format!("{} line(s) are wrong; nothing was imported", lines.len()),
                lines,
            };
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, axum::Json(body)).into_response());
        }
    };
    if seats.is_empty() {
        return Err(Error::invalid(
            "invalid_seat_map",
            "the seat map has no seats",
        ));
    }
    let mut command = state.commands.begin(scene_id).await?;
    store::locate::replace_seats(
        command.tx(),
        store::locate::SeatMap::Scene(scene_id),
        &seats,
    )
    .await?;
    let replaced = SceneEvent::SeatsReplaced { seats: seats.len() };
    command.commit(Some(me.user_id), vec![replaced]).await?;
    Ok(Json(SeatImport {
        imported: seats.len(),
    })
    .into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Tap {
    pub x: f64,
    pub y: f64,
}

pub fn check_inside(scene: &Scene, x: f64, y: f64) -> Result<()> {
    if scene.contains(x, y) {
        Ok(())
    } else {
        Err(Error::invalid(
            "outside_scene",
            format!(
                "({x}, {y}) is outside the scene (0..{} × 0..{})",
                scene.width, scene.height
            ),
        ))
    }
}

/// An observer taps a phone onto the scene map (an observation with full confidence).
#[utoipa::path(put, path = "/scenes/{scene_id}/pixels/{pixel_id}/position", tag = "locating",
    params(("scene_id" = Uuid, Path), ("pixel_id" = Uuid, Path)), request_body = Tap,
    responses((status = 200, body = Placement), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn place_pixel(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path((scene_id, pixel_id)): Path<(Uuid, Uuid)>,
    Json(body): Json<Tap>,
) -> Result<Json<Placement>> {
    let scene = scene_with_right(&state, &me, scene_id, Permission::Observer).await?;
    check_inside(&scene, body.x, body.y)?;
    let obs = Observation {
        x: body.x,
        y: body.y,
        method: LocationMethod::Observer,
        confidence: 1.0,
    };
    let placed = state
        .placements
        .place(scene.scene_id, pixel_id, obs, Some(me.user_id))
        .await?;
    Ok(Json(placed.map_err(refused)?))
}

/// Makes a phone flash for a few seconds so the observer can find it in the stands.
#[utoipa::path(post, path = "/scenes/{scene_id}/pixels/{pixel_id}/identify", tag = "locating",
    params(("scene_id" = Uuid, Path), ("pixel_id" = Uuid, Path)),
    responses((status = 202), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
async fn identify_pixel(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path((scene_id, pixel_id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode> {
    scene_with_right(&state, &me, scene_id, Permission::Observer).await?;
    let until_us = clock::now_us() + IDENTIFY_MS * 1000;
    let signal = Signal::Identify { pixel_id, until_us };
    if state.signals.send(scene_id, signal).await? == 0 {
        return Err(Error::Conflict("that phone is not connected".into()));
    }
    Ok(StatusCode::ACCEPTED)
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QrRequest {
    /// Only phones not located yet (default: every connected phone).
    #[serde(default)]
    pub unlocated_only: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QrAsked {
    /// Phones that were sent their code.
    pub asked: usize,
}

/// Asks the connected phones of a scene to show their QR codes, before an observer
/// photographs the crowd. Each phone gets a `qr` message on its socket.
#[utoipa::path(post, path = "/scenes/{scene_id}/qr-codes", tag = "locating",
    params(("scene_id" = Uuid, Path)), request_body = QrRequest,
    responses((status = 200, body = QrAsked), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
async fn ask_for_qr_codes(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(scene_id): Path<Uuid>,
    Json(req): Json<QrRequest>,
) -> Result<Json<QrAsked>> {
    let scene = scene_with_right(&state, &me, scene_id, Permission::Observer).await?;
    if !scene.location_methods.contains(&LocationMethod::Qr) {
        return Err(Error::Conflict(
            "this scene does not locate phones by QR code".into(),
        ));
    }
    let signal = Signal::ShowQr {
        unlocated_only: req.unlocated_only,
    };
    let asked = state.signals.send(scene_id, signal).await?;
    Ok(Json(QrAsked { asked }))
}

/// The answer to a placement a phone could not have.
fn refused(r: Refused) -> Error {
    match r {
        Refused::UnknownPixel => Error::NotFound("pixel"),
        Refused::Kicked | Refused::WithTheRest => Error::Conflict(r.to_string()),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlacedPixel {
    pub pixel_id: Uuid,
    pub x: f64,
    pub y: f64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlacePixels {
    pub positions: Vec<PlacedPixel>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Placed {
    pub placed: usize,
}

/// Most pixels one bulk placement takes.
const MAX_BULK_PLACEMENTS: usize = 50_000;

/// An observer places many phones at once (all or nothing; each is recorded as an
/// observation, without contradiction checks).
#[utoipa::path(post, path = "/scenes/{scene_id}/pixels/positions", tag = "locating",
    params(("scene_id" = Uuid, Path)), request_body = PlacePixels,
    responses((status = 200, body = Placed), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn place_pixels(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(scene_id): Path<Uuid>,
    Json(body): Json<PlacePixels>,
) -> Result<Json<Placed>> {
    let scene = scene_with_right(&state, &me, scene_id, Permission::Observer).await?;
    if body.positions.len() > MAX_BULK_PLACEMENTS {
        return Err(Error::invalid(
            "too_many",
            format!("at most {MAX_BULK_PLACEMENTS} positions at once"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for p in &body.positions {
        check_inside(&scene, p.x, p.y)?;
        if !seen.insert(p.pixel_id) {
            return Err(Error::invalid(
                "duplicate_pixel",
                format!("pixel {} is listed twice", p.pixel_id),
            ));
        }
    }
    let items: Vec<(Uuid, Observation)> = body
        .positions
        .iter()
        .map(|p| {
            let obs = Observation {
                x: p.x,
                y: p.y,
                method: LocationMethod::Observer,
                confidence: 1.0,
            };
            (p.pixel_id, obs)
        })
        .collect();
    let answers = state
        .placements
        .place_group(scene_id, items, Some(me.user_id), true)
        .await?;
    if answers.iter().any(Result::is_err) {
        return Err(Error::invalid(
            "unknown_pixel",
            "some pixels are not in this scene, or were removed from it; nothing was placed",
        ));
    }
    Ok(Json(Placed {
        placed: answers.len(),
    }))
}

/// Largest photo, in pixels (a 50-megapixel camera's).
const MAX_PHOTO_PIXELS: u64 = 60_000_000;
/// How much a QR code seen in a photo is trusted.
const QR_CONFIDENCE: f32 = 0.95;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DetectionStatus {
    /// The phone was placed at `scene`.
    Located,
    /// Read and verified, but not confident enough / already there (recorded only).
    Recorded,
    /// Not a token of this scene (forged, damaged, or another scene's).
    Forged,
    Expired,
    /// A valid token of a pixel no longer in the scene (or removed from it).
    UnknownPixel,
    /// The code maps outside the scene rectangle (check the reference points).
    OutsideScene,
    /// The same phone's code seen twice in the photo (a reflection, a code shown on another
    /// screen): neither is placed.
    Duplicate,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Detection {
    /// The code's corners in the photo, pixels: top-left, top-right, bottom-right, bottom-left.
    pub outline: [[f64; 2]; 4],
    /// Where its centre maps in the scene.
    pub scene: Option<[f64; 2]>,
    pub pixel_id: Option<Uuid>,
    pub status: DetectionStatus,
    pub contradiction: Option<crate::locate::Contradiction>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PhotoResult {
    pub width: u32,
    pub height: u32,
    pub detections: Vec<Detection>,
    pub located: usize,
    /// Forged, expired, other-scene and twice-seen codes.
    pub rejected: usize,
}

async fn read_photo_form(
    mut form: axum::extract::Multipart,
    limit: u64,
) -> Result<(Vec<u8>, Vec<crate::locate::homography::RefPoint>)> {
    let bad = |m: String| Error::bad_request("bad_form", m);
    let (mut photo, mut points) = (None, None);
    while let Some(mut field) = form.next_field().await.map_err(|e| bad(e.body_text()))? {
        match field.name() {
            Some("photo") => {
                let mut bytes = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(|e| bad(e.body_text()))? {
                    if (bytes.len() + chunk.len()) as u64 > limit {
                        return Err(Error::PayloadTooLarge { limit });
                    }
                    bytes.extend_from_slice(&chunk);
                }
                photo = Some(bytes);
            }
            Some("points") => {
                let text = super::extract::form_text(field).await?;
                points = Some(serde_json::from_str(&text).map_err(|e| {
                    Error::invalid(
                        "invalid_reference_points",
                        format!("points must be [{{px, py, x, y}}, ...]: {e}"),
                    )
                })?);
            }
            _ => {}
        }
    }
    match (photo, points) {
        (Some(photo), Some(points)) => Ok((photo, points)),
        _ => Err(bad(
            "send a multipart form with a `photo` file and `points` JSON".into(),
        )),
    }
}

impl From<crate::locate::qr::PhotoError> for Error {
    fn from(e: crate::locate::qr::PhotoError) -> Self {
        use crate::locate::qr::PhotoError;
        let message = e.to_string();
        match e {
            PhotoError::NotAPhoto => Error::UnsupportedMediaType(message),
            PhotoError::TooManyPixels { .. } => Error::invalid("too_many_pixels", message),
            PhotoError::Undecodable(_) => Error::invalid("invalid_image", message),
        }
    }
}

/// An observer's crowd photo: every QR code in it is read, verified, mapped into the scene
/// through the reference points' homography, and recorded as an observation.
#[utoipa::path(post, path = "/scenes/{scene_id}/photos", tag = "locating", params(("scene_id" = Uuid, Path)),
    request_body(content_type = "multipart/form-data",
        description = "`photo`: a JPEG or PNG; `points`: JSON `[{px, py, x, y}, ...]`, at least 4: `px, py` in photo pixels measured from the photo's top-left corner (0, 0) to its bottom-right corner (width, height), so a pixel's centre is at +0.5 (as the observer page measures a click); `x, y` in scene units"),
    responses((status = 200, body = PhotoResult), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody, description = "too many uploads by this account; see `Retry-After`")),
    security(("bearer" = [])))]
async fn upload_photo(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(scene_id): Path<Uuid>,
    form: std::result::Result<
        axum::extract::Multipart,
        axum::extract::multipart::MultipartRejection,
    >,
) -> Result<Json<PhotoResult>> {
    let form = form.map_err(|e| Error::bad_request("bad_form", e.body_text()))?;
    use crate::locate::homography::Homography;
    use crate::locate::qr;
    let scene = scene_with_right(&state, &me, scene_id, Permission::Observer).await?;
    state.rate_limits.uploads.check(&me.user_id)?;
    let _permit = state
        .upload_slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| Error::Internal(e.into()))?;
    let started = std::time::Instant::now();
    let (photo, points) = read_photo_form(form, state.config.max_upload_bytes).await?;
    let read_ms = started.elapsed().as_millis() as u64;
    let homography = Homography::fit(&points)
        .map_err(|e| Error::invalid("invalid_reference_points", e.to_string()))?;
    let memory = super::frames::decode_memory(&state, &photo).await?;
    let (width, height, found) = tokio::task::spawn_blocking(move || {
        // the slot and the memory are held by the work itself: a request that times out
        // does not free them while its scan still runs
        let _held = (_permit, memory);
        let gray = qr::decode_gray(&photo, MAX_PHOTO_PIXELS)?;
        let (w, h) = gray.dimensions();
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok::<_, Error>((w, h, qr::detect(&gray, threads)))
    })
    .await
    .map_err(|e| Error::Internal(e.into()))??;

    let scanned_ms = started.elapsed().as_millis() as u64;
    let now_s = clock::now_us() / 1_000_000;
    let mut result = PhotoResult {
        width,
        height,
        detections: Vec::new(),
        located: 0,
        rejected: 0,
    };
    // every verified code inside the scene is placed in one group, through the one
    // placement path: one batch, whatever the crowd
    let mut to_place: Vec<(usize, Uuid, Observation)> = Vec::new();
    for f in found {
        let outline = f.outline.map(|(x, y)| [x, y]);
        let (cx, cy) = f.centre();
        let scene_pos = homography.map(cx, cy);
        let mut d = Detection {
            outline,
            scene: scene_pos.map(|(x, y)| [x, y]),
            pixel_id: None,
            status: DetectionStatus::Forged,
            contradiction: None,
        };
        match qr::verify(&state.secret, scene_id, &f.payload, now_s) {
            Err(qr::TokenError::Forged) => result.rejected += 1,
            Err(qr::TokenError::Expired) => {
                d.status = DetectionStatus::Expired;
                result.rejected += 1;
            }
            Ok(pixel_id) => {
                d.pixel_id = Some(pixel_id);
                d.status = match scene_pos.filter(|&(x, y)| scene.contains(x, y)) {
                    None => DetectionStatus::OutsideScene,
                    Some((x, y)) => {
                        let obs = Observation {
                            x,
                            y,
                            method: LocationMethod::Qr,
                            confidence: QR_CONFIDENCE,
                        };
                        to_place.push((result.detections.len(), pixel_id, obs));
                        DetectionStatus::Recorded
                    }
                };
            }
        }
        result.detections.push(d);
    }
    // a phone seen twice places neither (one of the two is not where it stands)
    let mut seen: std::collections::HashMap<Uuid, usize> = std::collections::HashMap::new();
    for (_, pixel, _) in &to_place {
        *seen.entry(*pixel).or_default() += 1;
    }
    to_place.retain(|&(i, pixel, _)| {
        let once = seen[&pixel] == 1;
        if !once {
            result.detections[i].status = DetectionStatus::Duplicate;
            result.rejected += 1;
        }
        once
    });
    let items = to_place.iter().map(|&(_, p, obs)| (p, obs)).collect();
    let answers = state
        .placements
        .place_group(scene_id, items, Some(me.user_id), false)
        .await?;
    for ((i, _, _), answer) in to_place.into_iter().zip(answers) {
        let d = &mut result.detections[i];
        d.status = match answer {
            Ok(p) if p.placed => {
                result.located += 1;
                d.contradiction = p.contradiction;
                DetectionStatus::Located
            }
            Ok(_) => DetectionStatus::Recorded,
            Err(_) => DetectionStatus::UnknownPixel,
        };
    }
    if result.rejected > 0 {
        tracing::warn!(%scene_id, rejected = result.rejected, observer = %me.user_id, "photo had forged or expired codes");
    }
    tracing::debug!(%scene_id, codes = result.detections.len(), read_ms, scanned_ms,
        placed_ms = started.elapsed().as_millis() as u64, "photo read");
    Ok(Json(result))
}
