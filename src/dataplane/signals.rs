//! Signals to single phones (DESIGN.md, "Many nodes"): "flash so the observer finds you",
//! "show your QR code". A signal names its scene and which of its phones it is for; every node
//! delivers it to the phones it holds (`nodes` carries it between nodes), so it reaches a
//! phone on whichever node the load balancer put it.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use std::sync::Arc;

use super::hub::{Conn, Hub};
use super::protocol::ServerMsg;
use crate::clock;
use crate::locate::qr;

/// A signal, as it travels between nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "signal", rename_all = "snake_case")]
pub enum Signal {
    /// Flash until `until_us` (server time), so an observer can find the phone.
    Identify { pixel_id: Uuid, until_us: i64 },
    /// Show your QR code (every phone, or the unlocated ones only).
    ShowQr { unlocated_only: bool },
    /// Flash your code of this flash session (every phone, or the unlocated ones only). The
    /// codes are issued by each node for its own phones (`nodes`), so this is not for
    /// [`deliver`].
    Flash {
        session_id: Uuid,
        starts_at_us: i64,
        symbol_us: i64,
        unlocated_only: bool,
    },
    /// Listen in this sound session (every phone, or the unlocated ones only). Each node
    /// records whom it told (`nodes`), so this is not for [`deliver`] either.
    Listen {
        session_id: Uuid,
        starts_at_us: i64,
        period_us: i32,
        slot_us: i32,
        repeats: i16,
        slots: Vec<u8>,
        record_from_us: i64,
        record_until_us: i64,
        unlocated_only: bool,
    },
}

/// How long a phone's QR token stays valid: long enough for an observer's photo session.
pub const QR_TOKEN_TTL_S: i64 = 15 * 60;

/// The `qr` message for a phone: its signed token, as modules to draw.
pub fn qr_message(secret: &[u8], scene_id: Uuid, pixel_id: Uuid) -> String {
    let expires_s = clock::now_us() / 1_000_000 + QR_TOKEN_TTL_S;
    let token = qr::sign(secret, scene_id, pixel_id, expires_s);
    let (side, modules) = qr::render(&token);
    ServerMsg::Qr {
        side,
        modules,
        expires_us: expires_s * 1_000_000,
    }
    .to_json()
}

/// This node's phones of a scene (or its unlocated ones), cloned out of the hub's lock.
pub fn phones(hub: &Hub, scene_id: Uuid, unlocated_only: bool) -> Vec<Arc<Conn>> {
    let mut conns = Vec::new();
    if let Some(scene) = hub.scene(scene_id) {
        scene.for_each_conn(|conn| {
            if !(unlocated_only && conn.position().is_some()) {
                conns.push(conn.clone());
            }
        });
    }
    conns
}

/// The `flash` message for a phone with code word `code` of a session.
pub fn flash_message(session_id: Uuid, starts_at_us: i64, symbol_us: i64, code: u64) -> String {
    let slots = crate::locate::flash::code::slots_text(code);
    ServerMsg::Flash {
        session_id,
        starts_at_us,
        symbol_us,
        slots: &slots,
    }
    .to_json()
}

/// Delivers a signal to this node's phones of the scene; returns how many it reached. QR
/// codes are signed and rendered per phone: call this off the async threads.
pub fn deliver(hub: &Hub, scene_id: Uuid, signal: &Signal, secret: &[u8]) -> usize {
    let Some(scene) = hub.scene(scene_id) else {
        return 0;
    };
    match signal {
        Signal::Identify { pixel_id, until_us } => scene.conn_of_pixel(*pixel_id).map_or(0, |c| {
            let msg = ServerMsg::Identify {
                until_us: *until_us,
            };
            usize::from(c.offer_text(msg.to_json()))
        }),
        // the phones are listed under the hub's lock; their codes are rendered outside it
        Signal::ShowQr { unlocated_only } => phones(hub, scene_id, *unlocated_only)
            .iter()
            .filter(|conn| {
                let msg = qr_message(secret, scene_id, conn.pixel_id);
                conn.offer_text(msg)
            })
            .count(),
        Signal::Flash { .. } | Signal::Listen { .. } => {
            let _ = scene;
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::hub::SceneSnapshot;

    #[test]
    fn signals_reach_only_the_phones_they_name() {
        let hub = Hub::default();
        let scene_id = Uuid::new_v4();
        let scene =
            hub.scene_or_insert(scene_id, || (SceneSnapshot::idle(10.0, 10.0, [0, 0, 0]), 0));
        let (placed, _placed_rx) = hub.connect(&scene, Uuid::new_v4(), Some((1.0, 1.0)), 8);
        let (waiting, _waiting_rx) = hub.connect(&scene, Uuid::new_v4(), None, 8);
        let sent = |conn: &Conn, what: &str| {
            let texts = conn.take_control();
            texts.len() == 1 && texts[0].contains(what)
        };
        let secret = b"secret";

        let identify = Signal::Identify {
            pixel_id: waiting.pixel_id,
            until_us: 5,
        };
        assert_eq!(deliver(&hub, scene_id, &identify, secret), 1);
        assert!(sent(&waiting, "identify"));
        assert!(placed.take_control().is_empty());

        let unlocated = Signal::ShowQr {
            unlocated_only: true,
        };
        assert_eq!(deliver(&hub, scene_id, &unlocated, secret), 1);
        assert!(sent(&waiting, "\"qr\""));
        assert!(placed.take_control().is_empty());
        let everyone = Signal::ShowQr {
            unlocated_only: false,
        };
        assert_eq!(deliver(&hub, scene_id, &everyone, secret), 2);
        assert_eq!(deliver(&hub, Uuid::new_v4(), &everyone, secret), 0);

        let json = serde_json::to_string(&identify).unwrap();
        assert!(json.contains("\"signal\":\"identify\""), "{json}");
        assert_eq!(serde_json::from_str::<Signal>(&json).unwrap(), identify);
    }
}
