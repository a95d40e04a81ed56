//! Flash locating over HTTP (`locate::flash`): an observer starts a flash session (every
//! phone of the scene, on every node, gets its own code word to flash), films the crowd, and
//! sends the clip with reference points; every blob read is placed through the placement path.

use std::collections::HashMap;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::extract::{Auth, Json, Path};
use super::scenes::scene_with_right;
use crate::app::AppState;
use crate::auth::Permission;
use crate::clock;
use crate::dataplane::signals::Signal;
use crate::error::{Error, ErrorBody, Result};
use crate::locate::flash::analyze::{self, AnalysisError, Unread};
use crate::locate::flash::video::{self, VideoError};
use crate::locate::flash::{
    code, Timing, DEFAULT_SYMBOL_US, FLASH_CONFIDENCE, MAX_SYMBOL_US, MIN_SYMBOL_US,
};
use crate::locate::homography::{Homography, RefPoint};
use crate::locate::Observation;
use crate::scene::{LocationMethod, Scene};
use crate::store::{self, flash::FlashSession};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_flash_session))
        .routes(routes!(get_flash_session))
        // clips are streamed to disk with their own limit (`max_video_bytes`)
        .merge(
            OpenApiRouter::new()
                .routes(routes!(upload_video))
                .layer(DefaultBodyLimit::disable()),
        )
}

/// A session starts this long after it is asked for by default: every node issues its
/// phones' codes, and the observer starts filming.
const DEFAULT_START_IN_MS: i64 = 3000;
const MIN_START_IN_MS: i64 = 1000;
const MAX_START_IN_MS: i64 = 60_000;
/// Film from this long before the first slot to this long after the last.
const FILM_MARGIN_US: i64 = 500_000;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlashRequest {
    /// Only phones not located yet (default: every connected phone).
    #[serde(default)]
    pub unlocated_only: bool,
    /// A slot's length in ms: two frames of the camera (default 66.667, for 30 fps; 33.333
    /// for 60 fps), 33.333 to 200.
    pub symbol_ms: Option<f64>,
    /// How long from now the session starts, in ms (default 3000, 1000 to 60000).
    pub start_in_ms: Option<i64>,
}

/// A flash session: when the phones flash, and how.
#[derive(Debug, Serialize, ToSchema)]
pub struct FlashSessionInfo {
    pub session_id: Uuid,
    pub scene_id: Uuid,
    /// Server time of the first slot, µs since the Unix epoch.
    pub starts_at_us: i64,
    pub symbol_us: i64,
    pub slots: usize,
    /// When the last slot ends.
    pub ends_at_us: i64,
    /// Film from this instant until `film_until_us` (the session with a margin each side).
    pub film_from_us: i64,
    pub film_until_us: i64,
    /// The clip is taken until this instant.
    pub expires_at_us: i64,
    /// Phones issued a code word, on every node.
    pub phones: i32,
    pub unlocated_only: bool,
    /// Server time of this answer.
    pub server_time_us: i64,
}

fn info(s: &FlashSession, ttl_minutes: i64) -> FlashSessionInfo {
    let timing = s.timing();
    FlashSessionInfo {
        session_id: s.flash_session_id,
        scene_id: s.scene_id,
        starts_at_us: timing.starts_at_us,
        symbol_us: timing.symbol_us,
        slots: code::SLOTS,
        ends_at_us: timing.ends_at_us(),
        film_from_us: timing.starts_at_us - FILM_MARGIN_US,
        film_until_us: timing.ends_at_us() + FILM_MARGIN_US,
        expires_at_us: timing.ends_at_us() + ttl_minutes * 60_000_000,
        phones: s.phones,
        unlocated_only: s.unlocated_only,
        server_time_us: clock::now_us(),
    }
}

fn needs_flash(scene: &Scene) -> Result<()> {
    if scene.location_methods.contains(&LocationMethod::Flash) {
        Ok(())
    } else {
        Err(Error::Conflict(
            "this scene does not locate phones by flashing codes".into(),
        ))
    }
}

/// Starts a flash session: every connected phone of the scene (or every unlocated one), on
/// every node, is given its own code word and flashes it from `starts_at_us`. Film the crowd
/// from `film_from_us` to `film_until_us`, then send the clip (`POST .../videos`).
#[utoipa::path(post, path = "/scenes/{scene_id}/flash-sessions", tag = "locating",
    params(("scene_id" = Uuid, Path)), request_body = FlashRequest,
    responses((status = 201, body = FlashSessionInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn start_flash_session(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(scene_id): Path<Uuid>,
    Json(req): Json<FlashRequest>,
) -> Result<(StatusCode, Json<FlashSessionInfo>)> {
    let scene = scene_with_right(&state, &me, scene_id, Permission::Observer).await?;
    needs_flash(&scene)?;
    state.rate_limits.uploads.check(&me.user_id)?;
    let symbol_us = match req.symbol_ms {
        None => DEFAULT_SYMBOL_US,
        Some(ms) if ms.is_finite() => (ms * 1000.0).round() as i64,
        Some(_) => 0,
    };
    if !(MIN_SYMBOL_US..=MAX_SYMBOL_US).contains(&symbol_us) {
        return Err(Error::invalid(
            "invalid_symbol",
            "symbol_ms is 33.333 to 200: two frames of the camera that films",
        ));
    }
    let lead = req.start_in_ms.unwrap_or(DEFAULT_START_IN_MS);
    if !(MIN_START_IN_MS..=MAX_START_IN_MS).contains(&lead) {
        return Err(Error::invalid(
            "invalid_lead",
            format!("start_in_ms is {MIN_START_IN_MS} to {MAX_START_IN_MS}"),
        ));
    }
    let timing = Timing {
        starts_at_us: clock::now_us() + lead * 1000,
        symbol_us,
    };
    let session =
        store::flash::insert_session(&state.db, scene_id, me.user_id, req.unlocated_only, timing)
            .await?;
    let signal = Signal::Flash {
        session_id: session.flash_session_id,
        starts_at_us: timing.starts_at_us,
        symbol_us,
        unlocated_only: req.unlocated_only,
    };
    let phones = state.signals.send(scene_id, signal).await?;
    tracing::info!(%scene_id, session_id = %session.flash_session_id, phones, "flash session");
    let session = FlashSession {
        phones: phones as i32,
        ..session
    };
    Ok((
        StatusCode::CREATED,
        Json(info(&session, state.config.flash_session_ttl_minutes)),
    ))
}

/// A flash session (its phones counted over every node).
#[utoipa::path(get, path = "/scenes/{scene_id}/flash-sessions/{session_id}", tag = "locating",
    params(("scene_id" = Uuid, Path), ("session_id" = Uuid, Path)),
    responses((status = 200, body = FlashSessionInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn get_flash_session(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path((scene_id, session_id)): Path<(Uuid, Uuid)>,
) -> Result<Json<FlashSessionInfo>> {
    scene_with_right(&state, &me, scene_id, Permission::Observer).await?;
    let session = store::flash::session(&state.db, session_id)
        .await?
        .filter(|s| s.scene_id == scene_id)
        .ok_or(Error::NotFound("flash session"))?;
    Ok(Json(info(&session, state.config.flash_session_ttl_minutes)))
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BlobStatus {
    /// The phone was placed at `scene`.
    Located,
    /// Read and placed in the record, but not confident enough to move the phone.
    Recorded,
    /// Read, but not a code this session gave a phone of this scene (forged, or another
    /// session's or scene's): nobody is placed.
    UnknownCode,
    /// Two blobs read the same code (a reflection, or a misread): neither is placed.
    Duplicate,
    /// Its centre maps outside the scene (check the reference points).
    OutsideScene,
    /// A code of a phone no longer in the scene (or removed from it).
    UnknownPixel,
    /// It does not show the session's preamble: a light, another screen.
    NoPreamble,
    /// It shows the preamble, but its code is not clear: hidden part of the time, too dim or
    /// too small.
    Unclear,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BlobDetection {
    /// The blob's centre in the still the reference points were marked on, video pixels.
    pub x: f64,
    pub y: f64,
    /// Where it maps in the scene.
    pub scene: Option<[f64; 2]>,
    pub pixel_id: Option<Uuid>,
    pub status: BlobStatus,
    /// How clear its code was (the smallest group gap, as a share of its contrast).
    pub margin: Option<f32>,
    pub contradiction: Option<crate::locate::Contradiction>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VideoTimings {
    pub decode_s: f64,
    pub analyze_s: f64,
    pub place_s: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VideoResult {
    pub session_id: Uuid,
    pub width: u32,
    pub height: u32,
    pub frames: usize,
    /// Where the session starts in the clip, seconds from its first frame.
    pub session_start_s: f64,
    pub blobs: usize,
    pub located: usize,
    pub recorded: usize,
    /// Read but placed nobody (unknown codes, duplicates, outside the scene).
    pub rejected: usize,
    pub unreadable: usize,
    pub detections: Vec<BlobDetection>,
    pub seconds: VideoTimings,
}

/// Deletes the clip's temporary file however the request ends.
struct TempFile(std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What the form brought: the clip on disk, and the other fields.
struct VideoForm {
    file: TempFile,
    bytes: u64,
    points: Vec<RefPoint>,
    session_id: Uuid,
    still_at_s: Option<f64>,
}

/// The flash session `id` of the scene, if a clip of it may be sent now.
async fn usable_session(state: &AppState, scene_id: Uuid, id: Uuid) -> Result<FlashSession> {
    let session = store::flash::session(&state.db, id)
        .await?
        .filter(|s| s.scene_id == scene_id)
        .ok_or(Error::NotFound("flash session"))?;
    let now = clock::now_us();
    let ends = session.timing().ends_at_us();
    if now < ends {
        return Err(Error::Conflict(format!(
            "the session has not ended yet (in {:.1} s); send the clip after it",
            (ends - now) as f64 / 1e6
        )));
    }
    if now > ends + state.config.flash_session_ttl_minutes * 60_000_000 {
        return Err(Error::Gone(
            "that flash session ended too long ago; start a new one".into(),
        ));
    }
    Ok(session)
}

async fn read_video_form(
    state: &AppState,
    scene_id: Uuid,
    mut form: axum::extract::Multipart,
) -> Result<VideoForm> {
    let limit = state.config.max_video_bytes;
    use tokio::io::AsyncWriteExt;
    let bad = |m: String| Error::bad_request("bad_form", m);
    let (mut file, mut points, mut session_id, mut still_at_s) = (None, None, None, None);
    while let Some(mut field) = form.next_field().await.map_err(|e| bad(e.body_text()))? {
        match field.name() {
            Some("video") => {
                let path = std::env::temp_dir().join(format!("c3s-clip-{}", Uuid::new_v4()));
                let guard = TempFile(path.clone());
                // readable by this server only
                let mut out = tokio::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .await
                    .map_err(|e| Error::Internal(e.into()))?;
                let mut written = 0u64;
                while let Some(chunk) = field.chunk().await.map_err(|e| bad(e.body_text()))? {
                    written += chunk.len() as u64;
                    if written > limit {
                        return Err(Error::PayloadTooLarge { limit });
                    }
                    out.write_all(&chunk)
                        .await
                        .map_err(|e| Error::Internal(e.into()))?;
                }
                out.flush().await.map_err(|e| Error::Internal(e.into()))?;
                file = Some((guard, written));
            }
            Some("points") => {
                let text = super::extract::form_text(field).await?;
                points = Some(serde_json::from_str::<Vec<RefPoint>>(&text).map_err(|_| {
                    Error::invalid(
                        "invalid_reference_points",
                        "points must be [{px, py, x, y}, ...]",
                    )
                })?);
            }
            Some("session_id") => {
                let text = super::extract::form_text(field).await?;
                let id = text.trim().parse::<Uuid>().map_err(|_| {
                    Error::invalid("invalid_session", "session_id is not a flash session's id")
                })?;
                // a session that cannot be used is refused before the clip is read
                usable_session(state, scene_id, id).await?;
                session_id = Some(id);
            }
            Some("still_at_s") => {
                let text = super::extract::form_text(field).await?;
                still_at_s = Some(
                    text.trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|v| v.is_finite() && *v >= 0.0)
                        .ok_or_else(|| {
                            Error::invalid(
                                "invalid_still",
                                "still_at_s is a time in the clip, in seconds",
                            )
                        })?,
                );
            }
            _ => {}
        }
    }
    match (file, points, session_id) {
        (Some((file, bytes)), Some(points), Some(session_id)) => Ok(VideoForm {
            file,
            bytes,
            points,
            session_id,
            still_at_s,
        }),
        _ => Err(bad(
            "send a multipart form with `session_id`, `points` JSON and a `video` file".into(),
        )),
    }
}

impl From<VideoError> for Error {
    fn from(e: VideoError) -> Self {
        let message = e.to_string();
        match e {
            VideoError::NotAVideo | VideoError::NoVideoStream => {
                Error::UnsupportedMediaType(message)
            }
            VideoError::TooLong { .. } => Error::invalid("video_too_long", message),
            VideoError::TooLarge { .. } => Error::invalid("video_too_large", message),
            VideoError::TooMuchData { .. } => Error::invalid("video_too_long", message),
            VideoError::TimedOut(_) => Error::invalid("video_too_slow", message),
            VideoError::Undecodable => Error::invalid("invalid_video", message),
            VideoError::NoDecoder => Error::Unavailable("the video decoder"),
        }
    }
}

impl From<AnalysisError> for Error {
    fn from(e: AnalysisError) -> Self {
        let message = e.to_string();
        match e {
            AnalysisError::TooShort { .. } => Error::invalid("clip_too_short", message),
            AnalysisError::NoBlobs => Error::invalid("no_phones_in_clip", message),
            AnalysisError::NoSession { .. } => Error::invalid("no_session_in_clip", message),
        }
    }
}

/// An observer's clip of a flash session: every phone in it is read, checked against the
/// session's code words, mapped into the scene through the reference points' homography
/// (marked on the frame at `still_at_s`, default the session's middle), and placed.
#[utoipa::path(post, path = "/scenes/{scene_id}/videos", tag = "locating", params(("scene_id" = Uuid, Path)),
    request_body(content_type = "multipart/form-data",
        description = "`session_id`: the flash session; `points`: JSON `[{px, py, x, y}, ...]`, at least 4, in video pixels of the still (from its top-left corner (0, 0) to its bottom-right corner (width, height): a pixel's centre is at +0.5); `still_at_s` (optional): the clip time of that still; `video`: the clip (MP4, MOV, WebM, ...). Send `session_id` and `points` before `video`."),
    responses((status = 200, body = VideoResult), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 410, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "too many uploads by this account; see `Retry-After`"), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn upload_video(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(scene_id): Path<Uuid>,
    form: std::result::Result<
        axum::extract::Multipart,
        axum::extract::multipart::MultipartRejection,
    >,
) -> Result<Json<VideoResult>> {
    let form = form.map_err(|e| Error::bad_request("bad_form", e.body_text()))?;
    let scene = scene_with_right(&state, &me, scene_id, Permission::Observer).await?;
    needs_flash(&scene)?;
    // an upload slot while the clip arrives (it goes to disk, not memory); then the clip
    // waits for a video slot without holding it
    let upload = state
        .upload_slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| Error::Internal(e.into()))?;
    let form = read_video_form(&state, scene_id, form).await?;
    drop(upload);
    let session = usable_session(&state, scene_id, form.session_id).await?;
    let homography = Homography::fit(&form.points)
        .map_err(|e| Error::invalid("invalid_reference_points", e.to_string()))?;
    let timing = session.timing();
    let limits = state.config.video_limits();
    let permit = state
        .video_slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| Error::Internal(e.into()))?;
    tracing::info!(%scene_id, bytes = form.bytes, session_id = %session.flash_session_id, "reading a clip");
    let path = form.file.0.clone();
    let still_at_s = form.still_at_s;
    let (probe, frames, analysis, decode_s, analyze_s) = tokio::task::spawn_blocking(move || {
        // the slot is held by the work itself: a request that gives up does not free it
        let _permit = permit;
        let started = Instant::now();
        let probe = video::probe(&path, &limits)?;
        let clip = video::decode(&path, &probe, &limits)?;
        let decode_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        // by default the still is the session's middle, in the clip the analysis finds
        let still = still_at_s.unwrap_or(f64::NAN);
        let analysis = analyze::analyze(&clip, timing.symbol_s(), still, limits.threads)?;
        Ok::<_, Error>((
            probe,
            clip.frames(),
            analysis,
            decode_s,
            started.elapsed().as_secs_f64(),
        ))
    })
    .await
    .map_err(|e| Error::Internal(e.into()))??;
    drop(form);

    // which phone each code word names, for this session only
    let read: Vec<u64> = analysis
        .blobs
        .iter()
        .filter_map(|b| b.read.as_ref().ok().map(|r| r.code))
        .collect();
    let owners = store::flash::pixels_of(&state.db, session.flash_session_id, &read).await?;
    let mut times_read: HashMap<u64, usize> = HashMap::new();
    for c in &read {
        *times_read.entry(*c).or_default() += 1;
    }
    let started = Instant::now();
    let mut detections = Vec::with_capacity(analysis.blobs.len());
    let mut to_place: Vec<(usize, Uuid, Observation)> = Vec::new();
    for blob in &analysis.blobs {
        let mapped = homography.map(blob.x, blob.y);
        let mut d = BlobDetection {
            x: blob.x,
            y: blob.y,
            scene: mapped.map(|(x, y)| [x, y]),
            pixel_id: None,
            status: BlobStatus::Unclear,
            margin: None,
            contradiction: None,
        };
        d.status = match &blob.read {
            Err(Unread::NoPreamble) => BlobStatus::NoPreamble,
            Err(Unread::Unclear) => BlobStatus::Unclear,
            Ok(r) => {
                d.margin = Some(r.margin);
                match owners.get(&r.code) {
                    None => BlobStatus::UnknownCode,
                    Some(_) if times_read[&r.code] > 1 => BlobStatus::Duplicate,
                    Some(&pixel_id) => {
                        d.pixel_id = Some(pixel_id);
                        match mapped.filter(|&(x, y)| scene.contains(x, y)) {
                            None => BlobStatus::OutsideScene,
                            Some((x, y)) => {
                                let obs = Observation {
                                    x,
                                    y,
                                    method: LocationMethod::Flash,
                                    confidence: FLASH_CONFIDENCE,
                                };
                                to_place.push((detections.len(), pixel_id, obs));
                                BlobStatus::Recorded
                            }
                        }
                    }
                }
            }
        };
        detections.push(d);
    }
    let items = to_place.iter().map(|&(_, p, obs)| (p, obs)).collect();
    let answers = state
        .placements
        .place_group(scene_id, items, Some(me.user_id), false)
        .await?;
    for ((i, _, _), answer) in to_place.into_iter().zip(answers) {
        let d = &mut detections[i];
        d.status = match answer {
            Ok(p) if p.placed => {
                d.contradiction = p.contradiction;
                BlobStatus::Located
            }
            Ok(_) => BlobStatus::Recorded,
            Err(_) => BlobStatus::UnknownPixel,
        };
    }
    let count = |s: &[BlobStatus]| detections.iter().filter(|d| s.contains(&d.status)).count();
    let result = VideoResult {
        session_id: session.flash_session_id,
        width: probe.width,
        height: probe.height,
        frames,
        session_start_s: analysis.session_start_s,
        blobs: detections.len(),
        located: count(&[BlobStatus::Located]),
        recorded: count(&[BlobStatus::Recorded]),
        rejected: count(&[
            BlobStatus::UnknownCode,
            BlobStatus::Duplicate,
            BlobStatus::OutsideScene,
            BlobStatus::UnknownPixel,
        ]),
        unreadable: count(&[BlobStatus::NoPreamble, BlobStatus::Unclear]),
        seconds: VideoTimings {
            decode_s,
            analyze_s,
            place_s: started.elapsed().as_secs_f64(),
        },
        detections,
    };
    tracing::info!(%scene_id, located = result.located, blobs = result.blobs, unreadable = result.unreadable,
        rejected = result.rejected, decode_s, analyze_s, "clip read");
    Ok(Json(result))
}
