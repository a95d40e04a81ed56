//! A phone's report of a sound session (`sound` after `listen`, docs/protocol.md): checked
//! against the session, solved (`locate::sound`), and placed through the placement path.

use std::sync::Arc;

use dashmap::DashMap;
use uuid::Uuid;

use super::{placed_or_reason, scene_may_write, TOO_MANY_ATTEMPTS};
use crate::app::AppState;
use crate::clock;
use crate::dataplane::hub::Conn;
use crate::dataplane::protocol::HeardBeacon;
use crate::http::sound::{Window, SLOTS};
use crate::locate::sound::{self, Arrival, Beacon, Limits};
use crate::locate::Observation;
use crate::scene::{LocationMethod, Scene};
use crate::store::{self, sound::SoundSession};

/// The sessions this node's phones reported in, read from the database once each.
#[derive(Default)]
pub struct SessionCache {
    sessions: DashMap<Uuid, Arc<SoundSession>>,
}

/// Sessions kept at most; past it, those whose reports are over are forgotten.
const CACHED_SESSIONS: usize = 64;

impl SessionCache {
    async fn get(
        &self,
        state: &AppState,
        session_id: Uuid,
    ) -> Result<Option<Arc<SoundSession>>, sqlx::Error> {
        if let Some(s) = self.sessions.get(&session_id) {
            return Ok(Some(s.clone()));
        }
        let Some(session) = store::sound::session(&state.db, session_id).await? else {
            return Ok(None);
        };
        let session = Arc::new(session);
        if self.sessions.len() >= CACHED_SESSIONS {
            let now = clock::now_us();
            let ttl = state.config.sound_report_ttl_s;
            self.sessions
                .retain(|_, s| Window::of(s, ttl).reports_until_us > now);
        }
        self.sessions.insert(session_id, session.clone());
        Ok(Some(session))
    }
}

/// A report may come this long before the recording's end on the server's clock (the phone's
/// clock is synced to a few ms; this is plenty).
const EARLY_SLACK_US: i64 = 1_000_000;

/// How sure a position by sound is: from 0.9 for a fit that explains the delays exactly down
/// to 0.6 at the residual limit (refused beyond it).
fn confidence(residual_ms: f64, limit_ms: f64) -> f32 {
    (0.9 - 0.3 * (residual_ms / limit_ms).clamp(0.0, 1.0)) as f32
}

/// Places the phone from what it heard in a sound session; the reason when it cannot.
pub async fn locate_by_sound(
    state: &AppState,
    scene: &Scene,
    conn: &Conn,
    session_id: Uuid,
    heard: &[HeardBeacon],
) -> Option<String> {
    if !scene.location_methods.contains(&LocationMethod::Sound) {
        return Some("this scene does not locate phones by sound".into());
    }
    if heard.len() > SLOTS {
        return Some(format!("a session has at most {SLOTS} beacons"));
    }
    let session = match state.sound_sessions.get(state, session_id).await {
        Ok(Some(s)) if s.scene_id == scene.scene_id => s,
        Ok(_) => return Some("there is no such sound session in this scene".into()),
        Err(e) => {
            tracing::warn!(error = ?e, "sound session lookup failed");
            return Some("positions cannot be taken right now; try again".into());
        }
    };
    let window = Window::of(&session, state.config.sound_report_ttl_s);
    let now = clock::now_us();
    if now < window.record_until_us - EARLY_SLACK_US {
        return Some("the session is still under way: report once it has ended".into());
    }
    if now > window.reports_until_us {
        return Some("the session is over: its reports are no longer taken".into());
    }
    // the scene's allowance is asked before the one report is taken: a phone told to wait
    // may report again
    if !scene_may_write(state, scene.scene_id) {
        return Some(TOO_MANY_ATTEMPTS.into());
    }
    match store::sound::take_report(&state.db, session_id, conn.pixel_id).await {
        Ok(true) => {}
        Ok(false) => {
            return Some(
                "this phone was not told to listen in that session, or has reported already".into(),
            )
        }
        Err(e) => {
            tracing::warn!(error = ?e, "sound report not taken");
            return Some("positions cannot be taken right now; try again".into());
        }
    }
    let refused = solve_and_place(state, scene, conn, &session, heard).await;
    if let Err(e) =
        store::sound::record_outcome(&state.db, session_id, conn.pixel_id, refused.is_none()).await
    {
        tracing::warn!(error = ?e, "sound outcome not recorded");
    }
    refused
}

async fn solve_and_place(
    state: &AppState,
    scene: &Scene,
    conn: &Conn,
    session: &SoundSession,
    heard: &[HeardBeacon],
) -> Option<String> {
    let beacons: Vec<Beacon> = session
        .beacons
        .iter()
        .map(|b| Beacon {
            index: b.slot,
            x_m: b.x_m,
            y_m: b.y_m,
        })
        .collect();
    let arrivals: Vec<Arrival> = heard
        .iter()
        .map(|h| Arrival {
            beacon: h.slot,
            delay_ms: h.delay_ms,
        })
        .collect();
    let limits = Limits {
        max_residual_ms: state.config.sound_max_residual_ms,
        max_uncertainty_m: state.config.sound_max_uncertainty_m,
    };
    // a delay is within one period and a half either way: the phone folds its recording by
    // the period, and may shift every delay by one
    let max_delay_ms = f64::from(session.period_us) / 1000.0 * 1.5;
    let m = session.metres_per_unit;
    let scene_area = sound::Area {
        x0: 0.0,
        y0: 0.0,
        x1: scene.width * m,
        y1: scene.height * m,
    };
    let fit = match sound::solve(
        &beacons,
        &arrivals,
        session.speed_m_s,
        max_delay_ms,
        Some(scene_area),
        &limits,
    ) {
        Ok(fit) => fit,
        Err(refusal) => return Some(refusal.to_string()),
    };
    let (x, y) = (
        fit.x_m / session.metres_per_unit,
        fit.y_m / session.metres_per_unit,
    );
    if !scene.contains(x, y) {
        return Some("the position heard is outside the scene".into());
    }
    let obs = Observation {
        x,
        y,
        method: LocationMethod::Sound,
        confidence: confidence(fit.residual_ms, limits.max_residual_ms),
    };
    placed_or_reason(
        conn,
        state
            .placements
            .place(scene.scene_id, conn.pixel_id, obs, None)
            .await,
    )
}
