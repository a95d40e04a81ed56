//! Playback as a pure function (DESIGN.md, "Playback is a pure function").
//!
//! A [`Show`] is an ordered list of frames with durations and a loop flag. A [`Playback`] says
//! what the show is doing from an instant on: stopped, playing from a position since an anchor
//! instant, or paused at a position. A [`Timeline`] is the current playback and the one before
//! it, so that a command that takes effect in the future leaves the present alone. From these,
//! which frame shows at any server instant is computed, never stored: several nodes, or a
//! restarted node, compute the same answer from the same persisted values.
//!
//! Instants are server time in whole milliseconds; positions are milliseconds into the show.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// One frame of a show, as snapshotted when the show was built (editing frames later does not
/// change a show that is playing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ShowFrame {
    pub frame_id: Uuid,
    /// Hex SHA-256 of the image bytes: the frame cache's key.
    pub sha256: String,
    pub gridfs_id: String,
    pub duration_ms: u32,
    pub width: u32,
    pub height: u32,
    /// For a clip: which of its frames play (`duration_ms` is then what they last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip: Option<ClipPlay>,
}

/// The stretch of a clip a show plays. Its show frames are the video sampled at `fps`: show
/// frame `k` (from `first`) is the video at `k / fps` s and lasts from `ceil((k - first) ×
/// 1000 / fps)` to `ceil((k - first + 1) × 1000 / fps)` ms into the entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ClipPlay {
    /// The first show frame played (the clip's start × fps).
    pub first: u32,
    /// How many play.
    pub frames: u32,
    pub fps: u32,
    /// The presentation time the video starts at, in µs (0 for most files).
    pub video_start_us: i64,
}

impl ClipPlay {
    /// What `frames` show frames at `fps` last, in ms.
    pub fn duration_ms(frames: u32, fps: u32) -> u32 {
        (u64::from(frames) * 1000 / u64::from(fps.max(1))) as u32
    }

    /// The show frame at `offset_ms` into the entry, and where (ms into the entry) the next
    /// one begins.
    pub fn frame_at(&self, offset_ms: i64) -> (u32, i64) {
        let fps = i64::from(self.fps.max(1));
        let k = (offset_ms.max(0) * fps / 1000).min(i64::from(self.frames.max(1)) - 1);
        (
            (self.first as i64 + k) as u32,
            ((k + 1) * 1000 + fps - 1) / fps,
        )
    }

    /// The frame cache's sub-key of show frame `index`: the rate and the index, so the same
    /// file played at two rates is kept apart.
    pub fn cache_sub(&self, index: u32) -> u32 {
        (self.fps << 24) | (index & 0x00ff_ffff)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Show {
    pub frames: Vec<ShowFrame>,
    /// Start again from the first frame after the last.
    #[serde(rename = "loop")]
    pub looped: bool,
}

impl Show {
    pub fn total_ms(&self) -> i64 {
        self.frames.iter().map(|f| i64::from(f.duration_ms)).sum()
    }

    /// The frame showing at `position` ms into the show, and the position where it ends.
    /// Loops wrap; past the end of a non-looping show there is none.
    pub fn frame_at(&self, position: i64) -> Option<(usize, i64)> {
        let total = self.total_ms();
        if total <= 0 || position < 0 {
            return None;
        }
        let (lap_start, within) = if self.looped {
            (
                position - position.rem_euclid(total),
                position.rem_euclid(total),
            )
        } else if position >= total {
            return None;
        } else {
            (0, position)
        };
        let mut end = 0i64;
        for (i, f) in self.frames.iter().enumerate() {
            end += i64::from(f.duration_ms);
            if within < end {
                return Some((i, lap_start + end));
            }
        }
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Stopped,
    Playing,
    Paused,
}

/// What the show does from `effective_ms` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Playback {
    pub mode: Mode,
    /// Playing: the instant at which the position is `base_ms`.
    pub anchor_ms: i64,
    /// Playing: the position at `anchor_ms`; paused: the held position.
    pub base_ms: i64,
    /// The instant this playback takes over from the previous one.
    pub effective_ms: i64,
}

impl Playback {
    pub const STOPPED: Playback = Playback {
        mode: Mode::Stopped,
        anchor_ms: 0,
        base_ms: 0,
        effective_ms: 0,
    };

    /// Position in the show at instant `t`; none when stopped or not yet started.
    pub fn position_at(&self, t: i64) -> Option<i64> {
        match self.mode {
            Mode::Stopped => None,
            Mode::Paused => Some(self.base_ms),
            Mode::Playing if t < self.anchor_ms => None,
            Mode::Playing => Some(self.base_ms + (t - self.anchor_ms)),
        }
    }
}

/// The current playback and the one it replaces until its effective instant. `version` grows
/// with every command; phones drop chunks of older versions.
///
/// One level of history is kept: a command issued before the previous one took effect
/// replaces it outright (the older state is forgotten for the instants in between).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Timeline {
    pub version: i64,
    pub current: Playback,
    pub previous: Playback,
}

/// An operator's command, with instants already resolved to server time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    Play { start_at_ms: i64, from_ms: i64 },
    Pause { at_ms: i64 },
    Resume { at_ms: i64 },
    Seek { position_ms: i64, at_ms: i64 },
    Stop { at_ms: i64 },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlaybackError {
    #[error("the show has no frames")]
    EmptyShow,
    #[error("nothing is playing at that instant")]
    NotPlaying,
    #[error("the show is not paused at that instant")]
    NotPaused,
    #[error("position {0} ms is outside the show (0 to {1} ms)")]
    OutOfRange(i64, i64),
}

/// The colour source of one stretch of a window: from `start_ms`, frame `frame` of the show
/// (or the scene's idle colour when none); for a clip, its show frame `sub` (0 for a still).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub start_ms: i64,
    pub frame: Option<u32>,
    pub sub: u32,
}

impl Timeline {
    pub const NEW: Timeline = Timeline {
        version: 0,
        current: Playback::STOPPED,
        previous: Playback::STOPPED,
    };

    pub fn state_at(&self, t: i64) -> &Playback {
        if t >= self.current.effective_ms {
            &self.current
        } else {
            &self.previous
        }
    }

    /// The timeline after `command`, one version on.
    pub fn apply(&self, command: Command, show: &Show) -> Result<Timeline, PlaybackError> {
        let total = show.total_ms();
        if total == 0 && !matches!(command, Command::Stop { .. }) {
            return Err(PlaybackError::EmptyShow);
        }
        let in_range = |p: i64| {
            if (0..total).contains(&p) {
                Ok(p)
            } else {
                Err(PlaybackError::OutOfRange(p, total))
            }
        };
        let next = match command {
            Command::Play {
                start_at_ms,
                from_ms,
            } => Playback {
                mode: Mode::Playing,
                anchor_ms: start_at_ms,
                base_ms: in_range(from_ms)?,
                effective_ms: start_at_ms,
            },
            Command::Pause { at_ms } => {
                let state = self.state_at(at_ms);
                if state.mode != Mode::Playing {
                    return Err(PlaybackError::NotPlaying);
                }
                let position = state.position_at(at_ms).ok_or(PlaybackError::NotPlaying)?;
                if show.frame_at(position).is_none() {
                    return Err(PlaybackError::NotPlaying); // a show that has ended
                }
                Playback {
                    mode: Mode::Paused,
                    anchor_ms: at_ms,
                    base_ms: wrap(position, show),
                    effective_ms: at_ms,
                }
            }
            Command::Resume { at_ms } => {
                let state = self.state_at(at_ms);
                if state.mode != Mode::Paused {
                    return Err(PlaybackError::NotPaused);
                }
                Playback {
                    mode: Mode::Playing,
                    anchor_ms: at_ms,
                    base_ms: state.base_ms,
                    effective_ms: at_ms,
                }
            }
            Command::Seek { position_ms, at_ms } => {
                let state = self.state_at(at_ms);
                let position = in_range(position_ms)?;
                match state.mode {
                    Mode::Stopped => return Err(PlaybackError::NotPlaying),
                    mode => Playback {
                        mode,
                        anchor_ms: at_ms,
                        base_ms: position,
                        effective_ms: at_ms,
                    },
                }
            }
            Command::Stop { at_ms } => Playback {
                effective_ms: at_ms,
                ..Playback::STOPPED
            },
        };
        Ok(Timeline {
            version: self.version + 1,
            current: next,
            previous: self.current,
        })
    }

    /// Fills `out` with the segments covering `[from_ms, to_ms)`, in order, starting with one
    /// at `from_ms`. Allocates nothing once `out` has grown to a window's worth.
    pub fn segments(&self, show: &Show, from_ms: i64, to_ms: i64, out: &mut Vec<Segment>) {
        out.clear();
        let mut t = from_ms;
        while t < to_ms {
            let state = self.state_at(t);
            // where this playback state stops applying
            let state_end = if t < self.current.effective_ms {
                self.current.effective_ms
            } else {
                i64::MAX
            };
            // a clip's entry changes show frame within it: the sub-frame, and where it ends
            let within = |i: usize, pos: i64, end_pos: i64| -> (u32, i64) {
                let f = &show.frames[i];
                match &f.clip {
                    None => (0, end_pos),
                    Some(clip) => {
                        let entry_start = end_pos - i64::from(f.duration_ms);
                        let (sub, next) = clip.frame_at(pos - entry_start);
                        (sub, (entry_start + next).min(end_pos))
                    }
                }
            };
            let (frame, sub, next) = match (state.mode, state.position_at(t)) {
                (Mode::Playing, None) => (None, 0, state.anchor_ms),
                (Mode::Playing, Some(pos)) => match show.frame_at(pos) {
                    Some((i, end_pos)) => {
                        let (sub, end_pos) = within(i, pos, end_pos);
                        (Some(i as u32), sub, t + (end_pos - pos))
                    }
                    None => (None, 0, i64::MAX),
                },
                (Mode::Paused, Some(pos)) => match show.frame_at(pos) {
                    Some((i, end_pos)) => (Some(i as u32), within(i, pos, end_pos).0, i64::MAX),
                    None => (None, 0, i64::MAX),
                },
                _ => (None, 0, i64::MAX),
            };
            if out.last().is_none_or(|s| (s.frame, s.sub) != (frame, sub)) {
                out.push(Segment {
                    start_ms: t,
                    frame,
                    sub,
                });
            }
            t = next.min(state_end).min(to_ms).max(t + 1);
        }
    }
}

/// A position of a looping show folded into its first lap.
fn wrap(position: i64, show: &Show) -> i64 {
    let total = show.total_ms();
    if show.looped && total > 0 {
        position.rem_euclid(total)
    } else {
        position.min(total.saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(durations: &[u32], looped: bool) -> Show {
        Show {
            frames: durations
                .iter()
                .map(|&d| ShowFrame {
                    frame_id: Uuid::new_v4(),
                    sha256: String::new(),
                    gridfs_id: String::new(),
                    duration_ms: d,
                    width: 4,
                    height: 4,
                    clip: None,
                })
                .collect(),
            looped,
        }
    }

    /// A timeline playing `s` from its start at instant `at`.
    fn played_at(s: &Show, at: i64) -> Timeline {
        Timeline::NEW
            .apply(
                Command::Play {
                    start_at_ms: at,
                    from_ms: 0,
                },
                s,
            )
            .unwrap()
    }

    fn segs(tl: &Timeline, show: &Show, a: i64, b: i64) -> Vec<(i64, Option<u32>)> {
        let mut out = Vec::new();
        tl.segments(show, a, b, &mut out);
        out.into_iter().map(|s| (s.start_ms, s.frame)).collect()
    }

    #[test]
    fn a_clip_entry_steps_through_its_frames_at_its_rate() {
        let mut s = show(&[100], false);
        let clip = ClipPlay {
            first: 30,
            frames: 10,
            fps: 30,
            video_start_us: 0,
        };
        s.frames.push(ShowFrame {
            duration_ms: ClipPlay::duration_ms(10, 30),
            clip: Some(clip),
            ..s.frames[0].clone()
        });
        assert_eq!(s.total_ms(), 433);
        let tl = played_at(&s, 1000);
        let mut out = Vec::new();
        tl.segments(&s, 1000, 1500, &mut out);
        let got: Vec<_> = out
            .iter()
            .map(|g| (g.start_ms - 1000, g.frame, g.sub))
            .collect();
        let mut want = vec![(0, Some(0), 0)];
        for (k, at) in [0, 34, 67, 100, 134, 167, 200, 234, 267, 300]
            .into_iter()
            .enumerate()
        {
            want.push((100 + at, Some(1), 30 + k as u32));
        }
        want.push((433, None, 0));
        assert_eq!(got, want);
        // paused inside the clip: its show frame there
        let paused = tl.apply(Command::Pause { at_ms: 1100 + 150 }, &s).unwrap();
        tl.segments(&s, 1300, 1400, &mut out);
        paused.segments(&s, 1300, 1400, &mut out);
        assert_eq!((out[0].frame, out[0].sub), (Some(1), 34));
    }

    #[test]
    fn frames_by_position_with_and_without_loop() {
        let s = show(&[100, 50, 200], false);
        assert_eq!(s.frame_at(0), Some((0, 100)));
        assert_eq!(s.frame_at(99), Some((0, 100)));
        assert_eq!(s.frame_at(100), Some((1, 150)));
        assert_eq!(s.frame_at(349), Some((2, 350)));
        assert_eq!(s.frame_at(350), None);
        let l = show(&[100, 50, 200], true);
        assert_eq!(l.frame_at(350), Some((0, 450)));
        assert_eq!(l.frame_at(1050 + 120), Some((1, 1050 + 150)));
    }

    #[test]
    fn play_then_segments_follow_durations() {
        let s = show(&[100, 50, 200], false);
        let tl = played_at(&s, 1000);
        assert_eq!(tl.version, 1);
        assert_eq!(
            segs(&tl, &s, 900, 1500),
            [
                (900, None),
                (1000, Some(0)),
                (1100, Some(1)),
                (1150, Some(2)),
                (1350, None)
            ]
        );
        // a window that starts mid-frame begins with that frame
        assert_eq!(segs(&tl, &s, 1120, 1130), [(1120, Some(1))]);
    }

    #[test]
    fn pause_holds_the_frame_and_resume_continues() {
        let s = show(&[100, 100, 100], true);
        let playing = played_at(&s, 0);
        let paused = playing.apply(Command::Pause { at_ms: 150 }, &s).unwrap();
        assert_eq!(paused.current.base_ms, 150);
        // before the pause instant the old playback still applies
        assert_eq!(segs(&paused, &s, 50, 1000), [(50, Some(0)), (100, Some(1))]);
        let resumed = paused.apply(Command::Resume { at_ms: 2000 }, &s).unwrap();
        assert_eq!(
            segs(&resumed, &s, 1990, 2100),
            [(1990, Some(1)), (2050, Some(2))]
        );
        assert_eq!(resumed.version, 3);
        assert_eq!(
            resumed.apply(Command::Resume { at_ms: 2100 }, &s),
            Err(PlaybackError::NotPaused)
        );
    }

    #[test]
    fn seek_and_stop() {
        let s = show(&[100, 100, 100], false);
        let tl = played_at(&s, 0);
        let sought = tl
            .apply(
                Command::Seek {
                    position_ms: 250,
                    at_ms: 40,
                },
                &s,
            )
            .unwrap();
        assert_eq!(
            segs(&sought, &s, 0, 200),
            [(0, Some(0)), (40, Some(2)), (90, None)]
        );
        assert_eq!(
            tl.apply(
                Command::Seek {
                    position_ms: 300,
                    at_ms: 40
                },
                &s
            ),
            Err(PlaybackError::OutOfRange(300, 300))
        );
        let stopped = sought.apply(Command::Stop { at_ms: 60 }, &s).unwrap();
        assert_eq!(segs(&stopped, &s, 40, 200), [(40, Some(2)), (60, None)]);
        assert_eq!(
            stopped.apply(Command::Pause { at_ms: 100 }, &s),
            Err(PlaybackError::NotPlaying)
        );
        assert_eq!(
            Timeline::NEW.apply(
                Command::Play {
                    start_at_ms: 0,
                    from_ms: 0
                },
                &show(&[], false)
            ),
            Err(PlaybackError::EmptyShow)
        );
    }

    #[test]
    fn loops_run_forever_in_a_bounded_number_of_segments() {
        let s = show(&[33, 33, 34], true);
        let tl = played_at(&s, 0);
        let got = segs(&tl, &s, 1_000_000, 1_000_500);
        assert!(got.len() >= 15 && got.len() <= 17, "{got:?}");
        assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
