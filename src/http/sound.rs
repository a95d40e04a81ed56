//! Locating by sound over HTTP (`locate::sound`, docs/sound.md): an operator sets a scene's
//! scale and beacons; each beacon's page asks for the schedule it plays; an observer or operator
//! starts a sound session, and every phone of the scene, on every node, is told to listen.
//! The phones report over their sockets (`ws`).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::extract::{Auth, Json, Path};
use super::locate::check_inside;
use super::scenes::scene_with_right;
use crate::app::AppState;
use crate::auth::{self, Permission};
use crate::clock;
use crate::dataplane::signals::Signal;
use crate::error::{Error, ErrorBody, Result};
use crate::locate::sound::{speed_of_sound, MIN_BEACONS};
use crate::scene::{LocationMethod, Scene};
use crate::store::{self, sound::*};
use crate::text::Rule;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_sound, put_sound))
        .routes(routes!(add_beacon))
        .routes(routes!(update_beacon, delete_beacon))
        .routes(routes!(beacon_schedule))
        .routes(routes!(start_sound_session))
        .routes(routes!(get_sound_session))
}

/// A slot of a session's period: one beacon's chirp and its echoes, wherever in a 100 m venue
/// it is heard (docs/sound.md, "Schedule").
pub const SLOT_US: i32 = 600_000;
/// Eight slots, one per beacon slot; the same for every scene, so a slot always means the same
/// instant in the period.
pub const SLOTS: usize = 8;
pub const PERIOD_US: i32 = SLOT_US * SLOTS as i32;
const DEFAULT_REPEATS: i16 = 3;
const MAX_REPEATS: i16 = 10;
/// The phones record from this long before the first period to this long after the last.
pub const RECORD_LEAD_US: i64 = 200_000;
pub const RECORD_TAIL_US: i64 = 700_000;
const DEFAULT_START_IN_MS: i64 = 3000;
const MIN_START_IN_MS: i64 = 1000;
const MAX_START_IN_MS: i64 = 60_000;

/// A scene's sound setup: its scale, the air's temperature, and its beacons.
#[derive(Debug, Serialize, ToSchema)]
pub struct SoundInfo {
    /// Metres per scene unit (none until set: no session can start before).
    pub metres_per_unit: Option<f64>,
    pub temperature_c: f64,
    /// The speed of sound at that temperature, m/s.
    pub speed_m_s: f64,
    pub beacons: Vec<BeaconInfo>,
    /// Whether a session can start: the scale is set, and at least four beacons.
    pub ready: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BeaconInfo {
    pub beacon_id: Uuid,
    /// Which chirp it plays, and when in the period (0 to 7).
    pub slot: i16,
    pub name: String,
    /// Where its loudspeaker is, in scene units.
    pub x: f64,
    pub y: f64,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl From<BeaconRow> for BeaconInfo {
    fn from(b: BeaconRow) -> Self {
        BeaconInfo {
            beacon_id: b.beacon_id,
            slot: b.slot,
            name: b.name,
            x: b.x,
            y: b.y,
            created_at: b.created_at,
        }
    }
}

/// A beacon just added: with the key its page needs (shown only now).
#[derive(Debug, Serialize, ToSchema)]
pub struct NewBeaconInfo {
    #[serde(flatten)]
    pub beacon: BeaconInfo,
    pub key: String,
    /// The beacon page for this beacon: open it on the device that feeds its loudspeaker.
    pub page: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SoundSetupRequest {
    /// Metres per scene unit, above 0 and at most 1000.
    pub metres_per_unit: f64,
    /// The air's temperature at the venue, −40 to 60 °C (default 20).
    pub temperature_c: Option<f64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBeacon {
    pub name: String,
    pub x: f64,
    pub y: f64,
    /// The slot (0 to 7; default: the lowest free one).
    pub slot: Option<i16>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BeaconUpdate {
    pub name: Option<String>,
    pub x: Option<f64>,
    pub y: Option<f64>,
}

const BEACON_NAME: Rule = Rule::name("name", 100);

fn needs_sound(scene: &Scene) -> Result<()> {
    if scene.location_methods.contains(&LocationMethod::Sound) {
        Ok(())
    } else {
        Err(Error::Conflict(
            "this scene does not locate phones by sound".into(),
        ))
    }
}

async fn sound_info(state: &AppState, scene_id: Uuid) -> Result<SoundInfo> {
    let setup = store::sound::setup(&state.db, scene_id).await?;
    let beacons: Vec<BeaconInfo> = store::sound::beacons(&state.db, scene_id)
        .await?
        .into_iter()
        .map(BeaconInfo::from)
        .collect();
    let temperature_c = setup.map_or(20.0, |s| s.temperature_c);
    Ok(SoundInfo {
        metres_per_unit: setup.map(|s| s.metres_per_unit),
        temperature_c,
        speed_m_s: speed_of_sound(temperature_c),
        ready: setup.is_some() && beacons.len() >= MIN_BEACONS,
        beacons,
    })
}

/// The scene's sound setup and beacons.
#[utoipa::path(get, path = "/scenes/{scene_id}/sound", tag = "locating",
    params(("scene_id" = Uuid, Path)),
    responses((status = 200, body = SoundInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn get_sound(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(scene_id): Path<Uuid>,
) -> Result<Json<SoundInfo>> {
    scene_with_right(&state, &me, scene_id, Permission::Observer).await?;
    Ok(Json(sound_info(&state, scene_id).await?))
}

/// Sets the scene's scale (metres per scene unit) and the air's temperature.
#[utoipa::path(put, path = "/scenes/{scene_id}/sound", tag = "locating",
    params(("scene_id" = Uuid, Path)), request_body = SoundSetupRequest,
    responses((status = 200, body = SoundInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the scene does not locate by sound"),
        (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn put_sound(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(scene_id): Path<Uuid>,
    Json(req): Json<SoundSetupRequest>,
) -> Result<Json<SoundInfo>> {
    let scene = scene_with_right(&state, &me, scene_id, Permission::Operator).await?;
    needs_sound(&scene)?;
    let m = req.metres_per_unit;
    if !(m.is_finite() && m > 0.0 && m <= 1000.0) {
        return Err(Error::invalid(
            "invalid_scale",
            "metres_per_unit is above 0 and at most 1000",
        ));
    }
    let t = req.temperature_c.unwrap_or(20.0);
    if !(t.is_finite() && (-40.0..=60.0).contains(&t)) {
        return Err(Error::invalid(
            "invalid_temperature",
            "temperature_c is −40 to 60",
        ));
    }
    let setup = SoundSetup {
        metres_per_unit: m,
        temperature_c: t,
    };
    store::sound::put_setup(&state.db, scene_id, setup).await?;
    Ok(Json(sound_info(&state, scene_id).await?))
}

/// Adds a beacon: a loudspeaker at a known place of the scene, fed by a device that opens the
/// answer's `page`. At most eight per scene.
#[utoipa::path(post, path = "/scenes/{scene_id}/beacons", tag = "locating",
    params(("scene_id" = Uuid, Path)), request_body = NewBeacon,
    responses((status = 201, body = NewBeaconInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the scene does not locate by sound, the slot is taken, or all eight are"),
        (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn add_beacon(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(scene_id): Path<Uuid>,
    Json(req): Json<NewBeacon>,
) -> Result<(StatusCode, Json<NewBeaconInfo>)> {
    let scene = scene_with_right(&state, &me, scene_id, Permission::Operator).await?;
    needs_sound(&scene)?;
    let name = BEACON_NAME.clean(&req.name)?;
    check_inside(&scene, req.x, req.y)?;
    if let Some(slot) = req.slot {
        if !(0..SLOTS as i16).contains(&slot) {
            return Err(Error::invalid("invalid_slot", "slot is 0 to 7"));
        }
    }
    let (key, key_sha256) = auth::new_token();
    let Some(beacon) = store::sound::insert_beacon(
        &state.db,
        scene_id,
        req.slot,
        &name,
        (req.x, req.y),
        &key_sha256,
    )
    .await?
    else {
        return Err(Error::Conflict(match req.slot {
            Some(slot) => format!("slot {slot} has a beacon already"),
            None => "the scene has eight beacons already".into(),
        }));
    };
    let page = format!("/beacon.html?beacon={}&key={key}", beacon.beacon_id);
    Ok((
        StatusCode::CREATED,
        Json(NewBeaconInfo {
            beacon: beacon.into(),
            key,
            page,
        }),
    ))
}

async fn scene_beacon(state: &AppState, scene_id: Uuid, beacon_id: Uuid) -> Result<BeaconRow> {
    match store::sound::beacon(&state.db, beacon_id).await? {
        Some(b) if b.scene_id == scene_id => Ok(b),
        _ => Err(Error::NotFound("beacon")),
    }
}

/// Renames or moves a beacon.
#[utoipa::path(patch, path = "/scenes/{scene_id}/beacons/{beacon_id}", tag = "locating",
    params(("scene_id" = Uuid, Path), ("beacon_id" = Uuid, Path)), request_body = BeaconUpdate,
    responses((status = 200, body = BeaconInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn update_beacon(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path((scene_id, beacon_id)): Path<(Uuid, Uuid)>,
    Json(req): Json<BeaconUpdate>,
) -> Result<Json<BeaconInfo>> {
    let scene = scene_with_right(&state, &me, scene_id, Permission::Operator).await?;
    let current = scene_beacon(&state, scene_id, beacon_id).await?;
    let name = req
        .name
        .as_deref()
        .map(|n| BEACON_NAME.clean(n))
        .transpose()?;
    check_inside(
        &scene,
        req.x.unwrap_or(current.x),
        req.y.unwrap_or(current.y),
    )?;
    let updated = store::sound::update_beacon(&state.db, beacon_id, name.as_deref(), req.x, req.y)
        .await?
        .ok_or(Error::NotFound("beacon"))?;
    Ok(Json(updated.into()))
}

/// Removes a beacon (sessions already started keep it).
#[utoipa::path(delete, path = "/scenes/{scene_id}/beacons/{beacon_id}", tag = "locating",
    params(("scene_id" = Uuid, Path), ("beacon_id" = Uuid, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn delete_beacon(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path((scene_id, beacon_id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode> {
    scene_with_right(&state, &me, scene_id, Permission::Operator).await?;
    scene_beacon(&state, scene_id, beacon_id).await?;
    store::sound::delete_beacon(&state.db, beacon_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct BeaconKey {
    /// The key given when the beacon was added.
    pub key: String,
}

/// A session's schedule, as beacons and phones need it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Schedule {
    pub session_id: Uuid,
    /// Server time of the start of the first period, µs since the Unix epoch. Slot `s` of
    /// period `r` starts at `starts_at_us + r · period_us + s · slot_us`: the instant its
    /// beacon's chirp leaves the loudspeaker.
    pub starts_at_us: i64,
    pub period_us: i32,
    pub slot_us: i32,
    pub repeats: i16,
}

impl From<&SoundSession> for Schedule {
    fn from(s: &SoundSession) -> Self {
        Schedule {
            session_id: s.sound_session_id,
            starts_at_us: s.starts_at_us,
            period_us: s.period_us,
            slot_us: s.slot_us,
            repeats: s.repeats,
        }
    }
}

/// What a beacon page plays: its slot, and the sessions not over yet.
#[derive(Debug, Serialize, ToSchema)]
pub struct BeaconSchedule {
    pub beacon_id: Uuid,
    pub scene_id: Uuid,
    pub name: String,
    pub slot: i16,
    pub sessions: Vec<Schedule>,
    /// Server time of this answer.
    pub server_time_us: i64,
}

/// A beacon page's schedule (asked every second or so; the key is the page's only
/// credential).
#[utoipa::path(get, path = "/beacons/{beacon_id}/schedule", tag = "locating",
    params(("beacon_id" = Uuid, Path), BeaconKey),
    responses((status = 200, body = BeaconSchedule), (status = 404, body = ErrorBody, description = "no such beacon, or not its key")))]
async fn beacon_schedule(
    State(state): State<AppState>,
    Path(beacon_id): Path<Uuid>,
    Query(query): Query<BeaconKey>,
) -> Result<Json<BeaconSchedule>> {
    let key_sha256 = auth::hash_token(&query.key);
    let beacon = store::sound::beacon_by_key(&state.db, beacon_id, &key_sha256)
        .await?
        .ok_or(Error::NotFound("beacon"))?;
    let now = clock::now_us();
    let sessions = store::sound::coming_sessions(&state.db, beacon.scene_id, now)
        .await?
        .iter()
        .filter(|s| s.beacons.iter().any(|b| i16::from(b.slot) == beacon.slot))
        .map(Schedule::from)
        .collect();
    Ok(Json(BeaconSchedule {
        beacon_id,
        scene_id: beacon.scene_id,
        name: beacon.name,
        slot: beacon.slot,
        sessions,
        server_time_us: now,
    }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SoundSessionRequest {
    /// Only phones not located yet (default: every connected phone).
    #[serde(default)]
    pub unlocated_only: bool,
    /// How many periods the beacons chirp (1 to 10, default 3): more is more robust in noise.
    pub repeats: Option<i16>,
    /// How long from now the session starts, in ms (default 3000, 1000 to 60000).
    pub start_in_ms: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SoundSessionInfo {
    pub session_id: Uuid,
    pub scene_id: Uuid,
    #[serde(flatten)]
    pub schedule: Schedule,
    /// The slots of the beacons that chirp, and where they are (metres).
    pub beacons: Vec<SessionBeacon>,
    /// The phones record from `record_from_us` to `record_until_us`, and report after it
    /// until `reports_until_us`.
    pub record_from_us: i64,
    pub record_until_us: i64,
    pub reports_until_us: i64,
    /// Phones told to listen, on every node.
    pub phones: i32,
    /// Phones that reported, were placed, were refused (so far).
    pub reported: i64,
    pub placed: i64,
    pub refused: i64,
    pub speed_m_s: f64,
    pub unlocated_only: bool,
    pub server_time_us: i64,
}

async fn session_info(state: &AppState, s: &SoundSession) -> Result<SoundSessionInfo> {
    let (reported, placed, refused) = store::sound::tally(&state.db, s.sound_session_id).await?;
    let window = Window::of(s, state.config.sound_report_ttl_s);
    Ok(SoundSessionInfo {
        session_id: s.sound_session_id,
        scene_id: s.scene_id,
        schedule: Schedule::from(s),
        beacons: s.beacons.0.clone(),
        record_from_us: window.record_from_us,
        record_until_us: window.record_until_us,
        reports_until_us: window.reports_until_us,
        phones: s.phones,
        reported,
        placed,
        refused,
        speed_m_s: s.speed_m_s,
        unlocated_only: s.unlocated_only,
        server_time_us: clock::now_us(),
    })
}

/// When a session's phones record, and until when they may report.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub record_from_us: i64,
    pub record_until_us: i64,
    pub reports_until_us: i64,
}

impl Window {
    pub fn of(s: &SoundSession, ttl_s: u64) -> Window {
        let record_until_us = s.ends_at_us() + RECORD_TAIL_US;
        Window {
            record_from_us: s.starts_at_us - RECORD_LEAD_US,
            record_until_us,
            reports_until_us: record_until_us + ttl_s as i64 * 1_000_000,
        }
    }
}

/// Starts a sound session: every connected phone of the scene (or every unlocated one), on
/// every node, records its microphone over the session's window while the beacons chirp,
/// then reports what it heard (docs/protocol.md, `listen` and `sound`).
#[utoipa::path(post, path = "/scenes/{scene_id}/sound-sessions", tag = "locating",
    params(("scene_id" = Uuid, Path)), request_body = SoundSessionRequest,
    responses((status = 201, body = SoundSessionInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the scene does not locate by sound, or has no scale or fewer than four beacons"),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
async fn start_sound_session(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(scene_id): Path<Uuid>,
    Json(req): Json<SoundSessionRequest>,
) -> Result<(StatusCode, Json<SoundSessionInfo>)> {
    let scene = scene_with_right(&state, &me, scene_id, Permission::Observer).await?;
    needs_sound(&scene)?;
    state.rate_limits.uploads.check(&me.user_id)?;
    let repeats = req.repeats.unwrap_or(DEFAULT_REPEATS);
    if !(1..=MAX_REPEATS).contains(&repeats) {
        return Err(Error::invalid(
            "invalid_repeats",
            format!("repeats is 1 to {MAX_REPEATS}"),
        ));
    }
    let lead = req.start_in_ms.unwrap_or(DEFAULT_START_IN_MS);
    if !(MIN_START_IN_MS..=MAX_START_IN_MS).contains(&lead) {
        return Err(Error::invalid(
            "invalid_lead",
            format!("start_in_ms is {MIN_START_IN_MS} to {MAX_START_IN_MS}"),
        ));
    }
    let Some(setup) = store::sound::setup(&state.db, scene_id).await? else {
        return Err(Error::Conflict(
            "set the scene's scale first (PUT .../sound, metres_per_unit)".into(),
        ));
    };
    let beacons: Vec<SessionBeacon> = store::sound::beacons(&state.db, scene_id)
        .await?
        .iter()
        .map(|b| SessionBeacon {
            slot: b.slot as u8,
            x_m: b.x * setup.metres_per_unit,
            y_m: b.y * setup.metres_per_unit,
        })
        .collect();
    if beacons.len() < MIN_BEACONS {
        return Err(Error::Conflict(format!(
            "the scene has {} beacon(s); locating by sound needs at least {MIN_BEACONS}",
            beacons.len()
        )));
    }
    let session = store::sound::insert_session(
        &state.db,
        &NewSession {
            scene_id,
            created_by: me.user_id,
            unlocated_only: req.unlocated_only,
            starts_at_us: clock::now_us() + lead * 1000,
            period_us: PERIOD_US,
            slot_us: SLOT_US,
            repeats,
            beacons: &beacons,
            metres_per_unit: setup.metres_per_unit,
            speed_m_s: speed_of_sound(setup.temperature_c),
        },
    )
    .await?;
    let window = Window::of(&session, state.config.sound_report_ttl_s);
    let signal = Signal::Listen {
        session_id: session.sound_session_id,
        starts_at_us: session.starts_at_us,
        period_us: session.period_us,
        slot_us: session.slot_us,
        repeats: session.repeats,
        slots: beacons.iter().map(|b| b.slot).collect(),
        record_from_us: window.record_from_us,
        record_until_us: window.record_until_us,
        unlocated_only: req.unlocated_only,
    };
    let phones = state.signals.send(scene_id, signal).await?;
    tracing::info!(%scene_id, session_id = %session.sound_session_id, phones, "sound session");
    let session = SoundSession {
        phones: phones as i32,
        ..session
    };
    Ok((
        StatusCode::CREATED,
        Json(session_info(&state, &session).await?),
    ))
}

/// A sound session: its schedule, and how many phones reported and were placed.
#[utoipa::path(get, path = "/scenes/{scene_id}/sound-sessions/{session_id}", tag = "locating",
    params(("scene_id" = Uuid, Path), ("session_id" = Uuid, Path)),
    responses((status = 200, body = SoundSessionInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn get_sound_session(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path((scene_id, session_id)): Path<(Uuid, Uuid)>,
) -> Result<Json<SoundSessionInfo>> {
    scene_with_right(&state, &me, scene_id, Permission::Observer).await?;
    let session = store::sound::session(&state.db, session_id)
        .await?
        .filter(|s| s.scene_id == scene_id)
        .ok_or(Error::NotFound("sound session"))?;
    Ok(Json(session_info(&state, &session).await?))
}
