//! The scene event log's events (DESIGN.md, "Many nodes").
//!
//! Every command that changes a scene appends one of these to the scene's stream in
//! PostgreSQL (`store::events`), in the same transaction as its effect on the tables. Nodes
//! follow the log to keep their hubs in step (`live`); named views consume it (`views`). The
//! show and its timeline are folded from the log ([`fold_show`]), never read from anywhere else,
//! so a node that starts, or restarts after a crash, plays from exactly what was commanded.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::playback::{Command, Show, Timeline};
use crate::scene::{LocationMethod, Scene};

/// What happened to a scene. Stored as `event` (the variant, snake case) and `data` (its
/// fields); the event types are registered in the `event_type` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
pub enum SceneEvent {
    SceneCreated {
        scene: Scene,
    },
    /// Fields or status changed (the scene as it is after the change; `ended` included).
    SceneUpdated {
        scene: Scene,
    },
    SceneDeleted {},
    /// A show was built from frames: a new version, stopped.
    ShowBuilt {
        show: Show,
        timeline: Timeline,
    },
    /// A playback command and the timeline it made.
    Playback {
        command: Command,
        timeline: Timeline,
    },
    /// One phone placed (by itself, or by one observation of it).
    PixelLocated(Located),
    /// Several phones placed by one observer's one command (a photo's codes, a bulk
    /// placement): one event, as it was one decision; a photo of 1 000 phones appends one row
    /// to the log, not 1 000.
    PixelsLocated {
        pixels: Vec<Located>,
    },
    PixelKicked {
        pixel_id: Uuid,
    },
    /// Frames uploaded (an animation is several), in their new places.
    FramesAdded {
        frames: Vec<FrameRef>,
    },
    FrameUpdated {
        frame_id: Uuid,
        duration_ms: i32,
    },
    FrameDeleted {
        frame_id: Uuid,
    },
    FramesReordered {
        frame_ids: Vec<Uuid>,
    },
    SeatsReplaced {
        seats: usize,
    },
    GeoReferenceSet {
        points: Vec<crate::locate::gps::GeoPoint>,
        accuracy_m: f64,
    },
    /// Put on the calendar: who puts it on, where, when, how many may register.
    SceneScheduled {
        organizer_id: Option<Uuid>,
        venue_id: Uuid,
        starts_at: chrono::DateTime<chrono::Utc>,
        ends_at: Option<chrono::DateTime<chrono::Utc>>,
        capacity: i32,
    },
}

/// Where a phone was placed, and how.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Located {
    pub pixel_id: Uuid,
    pub x: f64,
    pub y: f64,
    pub method: LocationMethod,
    pub confidence: f32,
}

/// A frame as an event names it (its bytes are in GridFS under `gridfs_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameRef {
    pub frame_id: Uuid,
    pub position: i32,
    pub duration_ms: i32,
    pub gridfs_id: String,
}

impl SceneEvent {
    /// The event's registered type name and its data, as stored.
    pub fn to_parts(&self) -> (String, serde_json::Value) {
        let mut value = serde_json::to_value(self).expect("events serialise");
        let data = value
            .get_mut("data")
            .map(serde_json::Value::take)
            .unwrap_or_else(|| serde_json::json!({}));
        let name = value["event"].as_str().unwrap_or_default().to_owned();
        (name, data)
    }

    /// The event from its stored parts; an error for a type this node does not know (written
    /// by a newer node during a rolling upgrade), which callers skip.
    pub fn from_parts(event: &str, data: &serde_json::Value) -> serde_json::Result<SceneEvent> {
        serde_json::from_value(serde_json::json!({ "event": event, "data": data }))
    }
}

/// One event as stored.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Position in the whole log; increases along each scene's stream.
    pub seq: i64,
    pub event_id: Uuid,
    pub previous_id: Option<Uuid>,
    pub scene_id: Uuid,
    pub event: String,
    pub data: serde_json::Value,
    pub actor_id: Option<Uuid>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl StoredEvent {
    pub fn decode(&self) -> serde_json::Result<SceneEvent> {
        SceneEvent::from_parts(&self.event, &self.data)
    }
}

/// The show and timeline a scene's events add up to: the last `show_built` and the playback
/// commands after it, in order. None before the first show.
pub fn fold_show<'a>(events: impl IntoIterator<Item = &'a SceneEvent>) -> Option<(Show, Timeline)> {
    let mut state: Option<(Show, Timeline)> = None;
    for event in events {
        match event {
            SceneEvent::ShowBuilt { show, timeline } => state = Some((show.clone(), *timeline)),
            SceneEvent::Playback { timeline, .. } => {
                if let Some((_, current)) = &mut state {
                    *current = *timeline;
                }
            }
            _ => {}
        }
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::playback::ShowFrame;

    fn show() -> Show {
        Show {
            frames: vec![ShowFrame {
                frame_id: Uuid::new_v4(),
                sha256: "ab".into(),
                gridfs_id: "0123456789abcdef01234567".into(),
                duration_ms: 100,
                width: 2,
                height: 2,
                clip: None,
            }],
            looped: true,
        }
    }

    #[test]
    fn events_round_trip_through_their_stored_parts() {
        let timeline = Timeline::NEW
            .apply(
                Command::Play {
                    start_at_ms: 5,
                    from_ms: 0,
                },
                &show(),
            )
            .unwrap();
        let events = [
            SceneEvent::ShowBuilt {
                show: show(),
                timeline: Timeline::NEW,
            },
            SceneEvent::Playback {
                command: Command::Pause { at_ms: 9 },
                timeline,
            },
            SceneEvent::PixelKicked {
                pixel_id: Uuid::new_v4(),
            },
            SceneEvent::SceneDeleted {},
        ];
        for e in &events {
            let (name, data) = e.to_parts();
            assert!(data.is_object(), "{name}: {data}");
            assert_eq!(&SceneEvent::from_parts(&name, &data).unwrap(), e);
        }
        assert_eq!(events[1].to_parts().0, "playback");
        assert_eq!(events[1].to_parts().1["command"]["command"], "pause");
        assert!(SceneEvent::from_parts("from_the_future", &serde_json::json!({})).is_err());
    }

    #[test]
    fn the_show_is_the_last_build_and_the_commands_after_it() {
        let s = show();
        let play = |v: i64| Timeline {
            version: v,
            ..Timeline::NEW
        };
        let events = [
            SceneEvent::Playback {
                command: Command::Stop { at_ms: 0 },
                timeline: play(9), // before any show: ignored
            },
            SceneEvent::ShowBuilt {
                show: s.clone(),
                timeline: play(1),
            },
            SceneEvent::Playback {
                command: Command::Stop { at_ms: 0 },
                timeline: play(2),
            },
            SceneEvent::PixelKicked {
                pixel_id: Uuid::new_v4(),
            },
        ];
        assert_eq!(fold_show(&events), Some((s, play(2))));
        assert_eq!(fold_show(&events[..1]), None);
    }
}
