//! Flash locating (DESIGN.md, "Scene coordinates and locating"): every phone of a scene gets
//! its own code word of a *flash session* and shows it full-screen, slot by slot, on the
//! synced clock, in lock-step with all the others, while an observer films the crowd for a few
//! seconds. The server reads each blob's code from the clip and maps the blob's centre through
//! the observer's reference points, as for a photo. A QR code needs ~87 px of photo per phone;
//! a flashing screen needs a few, so one 4K clip locates tens of thousands.
//!
//! - [`code`]: what a phone shows (guard, Barker-7 preamble, nine 3-of-6 groups), and reading
//!   a code word back from brightnesses;
//! - [`video`]: the clip's grey frames from FFmpeg, bounded;
//! - [`analyze`]: blobs, the symbol clock, each blob's code word and centre.
//!
//! docs/flash.md explains the design and its figures.

pub mod analyze;
pub mod code;
pub mod video;

/// A session's slots last this long by default: two frames of a 30 fps camera, so every slot
/// has at least one frame whose exposure lies wholly within it.
pub const DEFAULT_SYMBOL_US: i64 = 66_667;
/// Slots may last from this (two frames at 60 fps) ...
pub const MIN_SYMBOL_US: i64 = 33_333;
/// ... to this (two frames at 10 fps).
pub const MAX_SYMBOL_US: i64 = 200_000;
/// How much a flash read is trusted.
pub const FLASH_CONFIDENCE: f32 = 0.95;

/// A session's timing: when it starts (server time, µs) and how long a slot lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub starts_at_us: i64,
    pub symbol_us: i64,
}

impl Timing {
    /// When its last slot ends.
    pub fn ends_at_us(&self) -> i64 {
        self.starts_at_us + self.symbol_us * code::SLOTS as i64
    }

    pub fn symbol_s(&self) -> f64 {
        self.symbol_us as f64 / 1e6
    }
}
