//! Scenes and pixels as the API speaks of them: types, field validation and the status
//! life cycle. No storage here.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::text::{Rule, TextError};

/// Why a scene's fields or status change are refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SceneError {
    /// A field's value is not allowed (`code` names the rule: `invalid_name`, ...).
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// Not allowed from the scene's state (a status that cannot follow the current one).
    #[error("{0}")]
    Conflict(String),
}

impl From<TextError> for SceneError {
    fn from(e: TextError) -> Self {
        SceneError::invalid("invalid_text", e.to_string())
    }
}

impl SceneError {
    fn invalid(code: &'static str, message: impl Into<String>) -> SceneError {
        SceneError::Invalid {
            code,
            message: message.into(),
        }
    }
}

/// Where a scene is in its life. `ended` is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SceneStatus {
    /// Being prepared; only its operators and admins see it.
    Draft,
    /// Phones may join.
    Open,
    /// A show is running.
    Live,
    Ended,
}

impl SceneStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SceneStatus::Draft => "draft",
            SceneStatus::Open => "open",
            SceneStatus::Live => "live",
            SceneStatus::Ended => "ended",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Draft, Self::Open, Self::Live, Self::Ended]
            .into_iter()
            .find(|st| st.as_str() == s)
    }

    /// Draft → open ⇄ live → ended; any unended scene may end; nothing leaves `ended`.
    pub fn can_become(self, next: SceneStatus) -> bool {
        use SceneStatus::*;
        self == next
            || matches!(
                (self, next),
                (Draft, Open)
                    | (Open, Draft)
                    | (Open, Live)
                    | (Live, Open)
                    | (Draft | Open | Live, Ended)
            )
    }
}

/// How a pixel was (or can be) located.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LocationMethod {
    Qr,
    Gps,
    Observer,
    Seat,
    /// Codes every phone flashes in lock-step, read from an observer's clip.
    Flash,
    /// Beacons' chirps heard by the phone (docs/sound.md).
    Sound,
}

impl LocationMethod {
    /// A new scene's methods unless it names its own. Flash locating is chosen per scene:
    /// it makes every phone flicker (docs/flash.md, photosensitivity); sound too: it asks
    /// every phone for its microphone, and needs beacons set up.
    pub const DEFAULT: [LocationMethod; 4] = [Self::Qr, Self::Gps, Self::Observer, Self::Seat];

    pub const ALL: [LocationMethod; 6] = [
        Self::Qr,
        Self::Gps,
        Self::Observer,
        Self::Seat,
        Self::Flash,
        Self::Sound,
    ];

    /// The `location_method.location_method_id` seeded by the first migration.
    pub fn id(self) -> i16 {
        match self {
            Self::Qr => 1,
            Self::Gps => 2,
            Self::Observer => 3,
            Self::Seat => 4,
            Self::Flash => 5,
            Self::Sound => 6,
        }
    }

    pub fn from_id(id: i16) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.id() == id)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Scene {
    pub scene_id: Uuid,
    pub owner_id: Uuid,
    pub name: String,
    pub description: String,
    pub venue: String,
    /// Extent in scene units (any unit the operator likes: metres, seats ...).
    pub width: f64,
    pub height: f64,
    pub status: SceneStatus,
    /// Colour an unlocated phone shows, `#rrggbb`.
    pub idle_color: String,
    pub location_methods: Vec<LocationMethod>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Scene {
    /// Whether the point (scene units) is inside the scene rectangle, edges included.
    pub fn contains(&self, x: f64, y: f64) -> bool {
        (0.0..=self.width).contains(&x) && (0.0..=self.height).contains(&y)
    }
}

/// Body of `POST /api/scenes`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewScene {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub venue: String,
    pub width: f64,
    pub height: f64,
    /// `#rrggbb`; black when left out.
    #[serde(default)]
    pub idle_color: Option<String>,
    /// Allowed locating methods; all of them when left out.
    #[serde(default)]
    pub location_methods: Option<Vec<LocationMethod>>,
}

/// Body of `PATCH /api/scenes/{scene_id}`: every field optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SceneUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub venue: Option<String>,
    pub width: Option<f64>,
    pub height: Option<f64>,
    pub status: Option<SceneStatus>,
    pub idle_color: Option<String>,
    pub location_methods: Option<Vec<LocationMethod>>,
}

/// A scene's fields after validation, ready to store.
#[derive(Debug, Clone)]
pub struct SceneFields {
    pub name: String,
    pub description: String,
    pub venue: String,
    pub width: f64,
    pub height: f64,
    pub status: SceneStatus,
    pub idle_color: i32,
    pub location_methods: Vec<LocationMethod>,
}

impl NewScene {
    pub fn validate(self) -> Result<SceneFields, SceneError> {
        let fields = SceneFields {
            name: self.name,
            description: self.description,
            venue: self.venue,
            width: self.width,
            height: self.height,
            status: SceneStatus::Draft,
            idle_color: match &self.idle_color {
                Some(c) => parse_color(c)?,
                None => 0,
            },
            location_methods: self
                .location_methods
                .unwrap_or_else(|| LocationMethod::DEFAULT.to_vec()),
        };
        fields.check()
    }
}

impl SceneFields {
    /// Applies an update on top of the stored fields and checks the result as a whole.
    pub fn apply(mut self, update: SceneUpdate) -> Result<SceneFields, SceneError> {
        if let Some(name) = update.name {
            self.name = name;
        }
        if let Some(d) = update.description {
            self.description = d;
        }
        if let Some(v) = update.venue {
            self.venue = v;
        }
        if let Some(w) = update.width {
            self.width = w;
        }
        if let Some(h) = update.height {
            self.height = h;
        }
        if let Some(c) = update.idle_color {
            self.idle_color = parse_color(&c)?;
        }
        if let Some(m) = update.location_methods {
            self.location_methods = m;
        }
        if let Some(next) = update.status {
            if !self.status.can_become(next) {
                return Err(SceneError::Conflict(format!(
                    "a {} scene cannot become {}",
                    self.status.as_str(),
                    next.as_str()
                )));
            }
            self.status = next;
        }
        self.check()
    }

    fn check(mut self) -> Result<SceneFields, SceneError> {
        self.name = Rule::name("name", 200).clean(&self.name)?;
        self.description = Rule::prose("description", 5000).clean(&self.description)?;
        self.venue = Rule::line("venue", 500).clean(&self.venue)?;
        for (what, v) in [("width", self.width), ("height", self.height)] {
            if !(v.is_finite() && v > 0.0 && v <= 1e6) {
                return Err(SceneError::invalid(
                    "invalid_size",
                    format!("{what} must be a number above 0 and at most 1000000"),
                ));
            }
        }
        self.location_methods.sort_by_key(|m| m.id());
        self.location_methods.dedup();
        Ok(self)
    }
}

/// `#rrggbb` (or `rrggbb`) to 0xRRGGBB.
pub fn parse_color(s: &str) -> Result<i32, SceneError> {
    let hex = s.strip_prefix('#').unwrap_or(s);
    if hex.len() == 6 {
        if let Ok(v) = i32::from_str_radix(hex, 16) {
            return Ok(v);
        }
    }
    Err(SceneError::invalid(
        "invalid_color",
        format!("'{s}' is not a colour; write it as #rrggbb"),
    ))
}

pub fn format_color(v: i32) -> String {
    format!("#{:06x}", v & 0xff_ffff)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PixelStatus {
    Joined,
    Located,
    Kicked,
}

impl PixelStatus {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "joined" => Some(Self::Joined),
            "located" => Some(Self::Located),
            "kicked" => Some(Self::Kicked),
            _ => None,
        }
    }
}

/// A phone in a scene.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Pixel {
    pub pixel_id: Uuid,
    pub scene_id: Uuid,
    pub user_id: Uuid,
    /// Position in scene units; none until located.
    pub x: Option<f64>,
    pub y: Option<f64>,
    pub method: Option<LocationMethod>,
    pub confidence: Option<f32>,
    pub status: PixelStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> SceneFields {
        NewScene {
            name: " Final ".into(),
            description: String::new(),
            venue: String::new(),
            width: 100.0,
            height: 50.0,
            idle_color: Some("#102030".into()),
            location_methods: None,
        }
        .validate()
        .unwrap()
    }

    #[test]
    fn new_scene_defaults_and_trims() {
        let f = fields();
        assert_eq!(f.name, "Final");
        assert_eq!(f.status, SceneStatus::Draft);
        assert_eq!(f.idle_color, 0x102030);
        assert_eq!(f.location_methods.len(), 4);
    }

    #[test]
    fn bad_sizes_and_colours_are_refused() {
        let bad = SceneUpdate {
            width: Some(f64::NAN),
            ..Default::default()
        };
        assert!(fields().apply(bad).is_err());
        assert!(parse_color("#12345").is_err());
        assert!(parse_color("#gggggg").is_err());
        assert_eq!(format_color(parse_color("ABCDEF").unwrap()), "#abcdef");
    }

    #[test]
    fn status_life_cycle() {
        use SceneStatus::*;
        assert!(Draft.can_become(Open));
        assert!(Live.can_become(Ended));
        assert!(!Ended.can_become(Open));
        assert!(!Draft.can_become(Live));
        let ended = fields()
            .apply(SceneUpdate {
                status: Some(Ended),
                ..Default::default()
            })
            .unwrap();
        assert!(ended
            .apply(SceneUpdate {
                status: Some(Open),
                ..Default::default()
            })
            .is_err());
    }
}
