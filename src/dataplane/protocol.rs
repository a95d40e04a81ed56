//! The phone ↔ server protocol: messages as typed enums, and every close code with its
//! reason. `docs/protocol.md` describes the same; the JSON shape is
//! `{"type": "<snake_case name>", ...fields}`. Close reasons are fixed strings, never the
//! client's own text.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::scene::LocationMethod;

/// The protocol version this server speaks; a phone says which it speaks in `hello`.
pub const PROTOCOL_VERSION: u32 = 1;

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMsg {
    /// First message: the protocol version, and the device token from an earlier visit.
    Hello {
        protocol: u32,
        #[serde(default)]
        token: Option<String>,
    },
    /// Clock sync request: `t0` is the phone's clock, in ms.
    Sync { t0: f64 },
    /// The phone's current estimate: server clock minus its clock, and the error bound.
    SyncReport { offset_ms: f64, error_ms: f64 },
    /// The user typed their seat.
    Seat {
        section: String,
        row: String,
        seat: String,
    },
    /// The browser's position (Geolocation API): degrees, and its accuracy in metres.
    Gps { lat: f64, lon: f64, accuracy_m: f64 },
    /// The observer asks for this phone's QR code.
    ShowQr,
    /// What the phone heard in a sound session (after `listen`): for each beacon slot it
    /// heard, the delay from the chirp's emission to its arrival, in ms on the synced clock.
    Sound {
        session_id: Uuid,
        arrivals: Vec<HeardBeacon>,
    },
}

/// One beacon a phone heard.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeardBeacon {
    pub slot: u8,
    pub delay_ms: f64,
}

/// What a phone is told about its scene.
#[derive(Debug, Serialize)]
pub struct ScenePublic {
    pub scene_id: Uuid,
    pub name: String,
    pub width: f64,
    pub height: f64,
    pub idle_color: String,
    pub status: String,
    pub location_methods: Vec<LocationMethod>,
    /// When the scene last changed: of two descriptions, the later one holds.
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

impl From<&crate::scene::Scene> for ScenePublic {
    fn from(scene: &crate::scene::Scene) -> Self {
        ScenePublic {
            scene_id: scene.scene_id,
            name: scene.name.clone(),
            width: scene.width,
            height: scene.height,
            idle_color: scene.idle_color.clone(),
            status: scene.status.as_str().into(),
            location_methods: scene.location_methods.clone(),
            updated_at: scene.updated_at,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Position {
    pub x: f64,
    pub y: f64,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg<'a> {
    Welcome {
        protocol: u32,
        /// A new device token when the phone had none (or a dead one): keep it for next time.
        #[serde(skip_serializing_if = "Option::is_none")]
        token: Option<&'a str>,
        user_id: Uuid,
        pixel_id: Uuid,
        scene: &'a ScenePublic,
        position: Option<Position>,
        /// Server time when this was sent, µs since the Unix epoch.
        server_time_us: i64,
        tick_ms: i64,
        lookahead_ms: i64,
    },
    /// The phone's join is waiting its turn (a crowd is arriving): keep the socket open, the
    /// welcome follows. `ahead`: about how many phones wait with it.
    Queued { ahead: usize },
    /// The scene changed (name, size, idle colour, status, locating methods): the same
    /// fields as in `welcome`.
    Scene { scene: &'a ScenePublic },
    /// Clock sync reply: `t0` echoed, `t1` received and `t2` sent, server µs.
    Sync { t0: f64, t1: i64, t2: i64 },
    /// The phone was placed (or moved) in the scene.
    Located { x: f64, y: f64 },
    /// A seat or GPS position was not accepted, and why.
    LocateRefused {
        method: LocationMethod,
        reason: String,
    },
    /// Flash until this server instant (µs), so an observer can find the phone.
    Identify { until_us: i64 },
    /// Flash this phone's code for an observer's camera: from `starts_at_us` (server time),
    /// slot i for `symbol_us` each, '1' full white, '0' black, on the refresh nearest each
    /// slot's instant and nothing else on screen; then back to what it showed.
    Flash {
        session_id: Uuid,
        starts_at_us: i64,
        symbol_us: i64,
        slots: &'a str,
    },
    /// Record the microphone from `record_from_us` to `record_until_us` (server time) and
    /// find the chirps of the beacons in `slots`: slot s of period r is emitted at
    /// `starts_at_us + r · period_us + s · slot_us`. Then send `sound`.
    Listen {
        session_id: Uuid,
        starts_at_us: i64,
        period_us: i32,
        slot_us: i32,
        repeats: i16,
        slots: &'a [u8],
        record_from_us: i64,
        record_until_us: i64,
    },
    /// The phone's QR code: `side` × `side` modules, row by row, '1' dark; draw it with a
    /// quiet zone of 4 modules. Valid until `expires_us`.
    Qr {
        side: usize,
        modules: String,
        expires_us: i64,
    },
}

impl ServerMsg<'_> {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server messages serialise")
    }
}

/// The `type` of a server message's JSON (serde writes the tag first): what a phone's waiting
/// control messages are coalesced by.
pub fn kind_of(json: &str) -> &str {
    json.strip_prefix(r#"{"type":""#)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("")
}

/// Every close code the server uses (docs/protocol.md, "Close codes").
pub mod close {
    pub const BYE: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const TOO_BIG: u16 = 1009;
    pub const BAD_MESSAGE: u16 = 4000;
    pub const HELLO_EXPECTED: u16 = 4001;
    pub const UNSUPPORTED_PROTOCOL: u16 = 4002;
    pub const KICKED: u16 = 4003;
    pub const NOT_JOINABLE: u16 = 4004;
    pub const UNAVAILABLE: u16 = 4005;
    pub const LAGGING: u16 = 4008;
    pub const REPLACED: u16 = 4009;
    pub const SCENE_ENDED: u16 = 4010;
    pub const HEARTBEAT_TIMEOUT: u16 = 4011;
    pub const TOO_MANY_MESSAGES: u16 = 4029;
}

/// Why the data plane closes a phone's socket (the session itself has a few more reasons:
/// see [`close`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CloseReason {
    None = 0,
    Lagging = 1,
    Kicked = 2,
    SceneEnded = 3,
    Replaced = 4,
    ShuttingDown = 5,
}

impl CloseReason {
    pub fn from_u8(v: u8) -> CloseReason {
        match v {
            1 => CloseReason::Lagging,
            2 => CloseReason::Kicked,
            3 => CloseReason::SceneEnded,
            4 => CloseReason::Replaced,
            5 => CloseReason::ShuttingDown,
            _ => CloseReason::None,
        }
    }

    /// (close code, reason) as documented in docs/protocol.md.
    pub fn close_frame(self) -> (u16, &'static str) {
        match self {
            CloseReason::Lagging => (close::LAGGING, "too slow: the phone fell behind the show"),
            CloseReason::Kicked => (close::KICKED, "removed from the scene"),
            CloseReason::SceneEnded => (close::SCENE_ENDED, "the scene has ended"),
            CloseReason::Replaced => (close::REPLACED, "this phone connected again elsewhere"),
            CloseReason::ShuttingDown => (close::GOING_AWAY, "server shutting down"),
            CloseReason::None => (close::BYE, "bye"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_parse_and_unknown_ones_do_not() {
        let m: ClientMsg = serde_json::from_str(r#"{"type":"sync","t0":12.5}"#).unwrap();
        assert!(matches!(m, ClientMsg::Sync { t0 } if t0 == 12.5));
        let m: ClientMsg = serde_json::from_str(r#"{"type":"hello","protocol":1}"#).unwrap();
        assert!(matches!(
            m,
            ClientMsg::Hello {
                protocol: 1,
                token: None
            }
        ));
        assert!(serde_json::from_str::<ClientMsg>(r#"{"type":"dance"}"#).is_err());
        assert!(serde_json::from_str::<ClientMsg>(r#"{"type":"sync","t0":1,"x":2}"#).is_err());
    }

    #[test]
    fn server_messages_are_tagged() {
        let json = ServerMsg::Sync {
            t0: 1.5,
            t1: 2,
            t2: 3,
        }
        .to_json();
        assert_eq!(json, r#"{"type":"sync","t0":1.5,"t1":2,"t2":3}"#);
    }
}
