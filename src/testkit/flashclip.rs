//! Clips of a crowd flashing its codes, drawn here and encoded with FFmpeg, for the flash
//! tests and `benches/flash.rs`: what an observer's camera would record, with what makes it
//! hard: each phone's own clock error and 60 Hz refresh, dim phones, a rolling shutter, a
//! 1/60 s exposure that straddles slot edges, a hand-held camera's shake, optics blur, sensor
//! noise, phones hidden for a while or never flashing, stray blinking lights and an LED wall,
//! and a lossy codec.

use std::f64::consts::TAU;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use rand::{Rng, SeedableRng};

/// One phone in the picture.
#[derive(Debug, Clone)]
pub struct Phone {
    /// Its screen's centre in the video when the camera is at rest, in video pixels
    /// (continuous: pixel (0, 0) covers [0, 1) × [0, 1)).
    pub x: f64,
    pub y: f64,
    /// Its screen's size, in video pixels.
    pub w: f64,
    pub h: f64,
    /// What it shows in each slot (true: lit); none for a phone that never flashes (its
    /// screen shows something steady).
    pub slots: Option<Vec<bool>>,
    /// Its screen's brightness when lit, 0 to 1.
    pub brightness: f32,
    /// Its clock's error: it shows each slot this much late (negative: early).
    pub clock_error_s: f64,
    /// Its display's refresh phase within 1/60 s: a slot appears on the refresh nearest its
    /// instant.
    pub refresh_phase_s: f64,
    /// Clip time during which something stands in front of it.
    pub hidden: Option<(f64, f64)>,
}

/// A light in the shot that blinks but is no phone (a stage light, an LED wall's tile).
#[derive(Debug, Clone)]
pub struct Light {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
    /// Blinks per second and phase (0 to 1).
    pub hz: f64,
    pub phase: f64,
    pub brightness: f32,
}

/// What the camera films.
#[derive(Debug, Clone)]
pub struct Shot {
    pub width: usize,
    pub height: usize,
    pub fps: f64,
    pub seconds: f64,
    /// Clip time at which the session's first slot begins.
    pub session_start_s: f64,
    pub symbol_s: f64,
    /// Each frame's exposure, and the delay from the first row's to the last row's.
    pub exposure_s: f64,
    pub rolling_shutter_s: f64,
    /// The hand-held camera's shake, at most this many pixels each way.
    pub shake_px: f64,
    /// Sensor noise (standard deviation, grey levels) and the stands' brightness.
    pub noise: f64,
    pub ambient: f64,
    pub phones: Vec<Phone>,
    pub lights: Vec<Light>,
    /// An LED wall: a rectangle of moving stripes (x, y, w, h), or none.
    pub led_wall: Option<(f64, f64, f64, f64)>,
    pub seed: u64,
}

impl Shot {
    /// The camera's shake at clip time `t`, in video pixels: a few slow sines, as a hand
    /// holding a phone trembles.
    pub fn shake_at(&self, t: f64) -> (f64, f64) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed ^ 0x5eed);
        let mut one = || {
            let (f1, f2) = (rng.gen_range(0.7..1.6), rng.gen_range(2.0..4.0));
            let (p1, p2) = (rng.gen_range(0.0..6.3), rng.gen_range(0.0..6.3));
            move |t: f64| 0.7 * (f1 * TAU * t + p1).sin() + 0.3 * (f2 * TAU * t + p2).sin()
        };
        let (fx, fy) = (one(), one());
        (self.shake_px * fx(t), self.shake_px * fy(t))
    }

    /// Where a phone's screen centre is in the frame at clip time `t`.
    pub fn position_at(&self, phone: &Phone, t: f64) -> (f64, f64) {
        let (sx, sy) = self.shake_at(t);
        (phone.x + sx, phone.y + sy)
    }

    pub fn frames(&self) -> usize {
        (self.seconds * self.fps).round() as usize
    }

    /// The stands behind the crowd: rows of seats and people, a little larger than the
    /// frame so the shake has something to move in.
    fn stands(&self, margin: usize) -> (Vec<u8>, usize) {
        let (w, h) = (self.width + 2 * margin, self.height + 2 * margin);
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed ^ 0x57a);
        let mut img: Vec<f32> = (0..w * h)
            .map(|i| {
                let y = i / w;
                // rows of seats, brighter and darker
                let row = ((y / 9) % 2) as f64 * 10.0;
                (self.ambient + row) as f32
            })
            .collect();
        // people and railings: blotches of every size
        for _ in 0..(w * h / 300) {
            let (bw, bh) = (rng.gen_range(2..14), rng.gen_range(2..18));
            let (x0, y0) = (rng.gen_range(0..w - bw), rng.gen_range(0..h - bh));
            let shade = rng.gen_range(-18.0..22.0f32);
            for y in y0..y0 + bh {
                for v in &mut img[y * w + x0..y * w + x0 + bw] {
                    *v += shade;
                }
            }
        }
        (
            img.into_iter().map(|v| v.clamp(0.0, 255.0) as u8).collect(),
            w,
        )
    }

    /// Whether a phone is lit at clip time `t`.
    fn lit(&self, phone: &Phone, t: f64) -> Option<bool> {
        let slots = phone.slots.as_ref()?;
        // the display shows a change on its refresh nearest the instant
        let refresh = 1.0 / 60.0;
        let shown = |instant: f64| {
            ((instant - phone.refresh_phase_s) / refresh).round() * refresh + phone.refresh_phase_s
        };
        let k = ((t - self.session_start_s - phone.clock_error_s) / self.symbol_s).floor();
        // the slot on screen at t: the last one whose (quantised) start has passed
        for slot in [k + 1.0, k, k - 1.0] {
            if slot < 0.0 {
                continue;
            }
            let start = shown(self.session_start_s + phone.clock_error_s + slot * self.symbol_s);
            if start <= t {
                return Some(slots.get(slot as usize).copied().unwrap_or(false));
            }
        }
        Some(false)
    }

    /// Renders every frame, one after another, to `out` (grey, one byte a pixel).
    pub fn render(&self, mut out: impl FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()> {
        let margin = (self.shake_px.ceil() as usize) + 2;
        let (stands, sw) = self.stands(margin);
        let (w, h) = (self.width, self.height);
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed ^ 0xf1a5);
        let mut frame = vec![0f32; w * h];
        let mut blurred = vec![0f32; w * h];
        let mut bytes = vec![0u8; w * h];
        let steps = 8; // the exposure, sampled
        for f in 0..self.frames() {
            let t = f as f64 / self.fps;
            let (sx, sy) = self.shake_at(t);
            let (ix, iy) = (sx.round() as isize, sy.round() as isize);
            for y in 0..h {
                let src_y = (y as isize + margin as isize - iy) as usize;
                let src = &stands[src_y * sw..(src_y + 1) * sw];
                let from = (margin as isize - ix) as usize;
                for (d, &s) in frame[y * w..(y + 1) * w]
                    .iter_mut()
                    .zip(&src[from..from + w])
                {
                    *d = f32::from(s);
                }
            }
            // a row's exposure starts later the lower it is (the rolling shutter)
            let exposure_start = |y: f64| t + self.rolling_shutter_s * y / h as f64;
            for phone in &self.phones {
                if phone.hidden.is_some_and(|(a, b)| t >= a && t < b) {
                    continue;
                }
                let (cx, cy) = (phone.x + sx, phone.y + sy);
                let start = exposure_start(cy);
                let share = match phone.slots {
                    None => 0.35,
                    Some(_) => {
                        (0..steps)
                            .filter(|&k| {
                                let at = start + self.exposure_s * (k as f64 + 0.5) / steps as f64;
                                self.lit(phone, at).unwrap_or(false)
                            })
                            .count() as f32
                            / steps as f32
                    }
                };
                let dark = 10.0f32;
                let value = dark + share * phone.brightness * (250.0 - dark);
                paint(&mut frame, w, h, cx, cy, phone.w, phone.h, value);
            }
            for light in &self.lights {
                let on = ((exposure_start(light.y) * light.hz + light.phase).fract()) < 0.5;
                if on {
                    paint(
                        &mut frame,
                        w,
                        h,
                        light.x + sx,
                        light.y + sy,
                        light.w,
                        light.h,
                        40.0 + light.brightness * 210.0,
                    );
                }
            }
            if let Some((x0, y0, lw, lh)) = self.led_wall {
                let (x0, y0) = ((x0 + sx).max(0.0) as usize, (y0 + sy).max(0.0) as usize);
                for y in y0..(y0 + lh as usize).min(h) {
                    for x in x0..(x0 + lw as usize).min(w) {
                        // bars that scroll and pulse
                        let phase = (x as f64 / 7.0 + t * 9.0 + (y as f64 / 23.0).sin()).sin();
                        frame[y * w + x] = (120.0 + 110.0 * phase) as f32;
                    }
                }
            }
            // optics: a 3 × 3 binomial blur; then the sensor's noise
            for y in 0..h {
                let (up, down) = (y.saturating_sub(1), (y + 1).min(h - 1));
                for x in 0..w {
                    let (l, r) = (x.saturating_sub(1), (x + 1).min(w - 1));
                    let col = |yy: usize| {
                        frame[yy * w + l] * 0.25
                            + frame[yy * w + x] * 0.5
                            + frame[yy * w + r] * 0.25
                    };
                    blurred[y * w + x] = col(up) * 0.25 + col(y) * 0.5 + col(down) * 0.25;
                }
            }
            let noise = self.noise as f32;
            for (b, v) in bytes.iter_mut().zip(&blurred) {
                let n: f32 = rng.gen::<f32>() + rng.gen::<f32>() + rng.gen::<f32>() - 1.5;
                *b = (v + n * noise * 2.0).clamp(0.0, 255.0) as u8;
            }
            out(&bytes)?;
        }
        Ok(())
    }

    /// Renders the clip and encodes it with FFmpeg's `codec` (e.g. `["-c:v", "libx264",
    /// "-crf", "23", "-preset", "veryfast"]`) into `path`.
    pub fn encode(&self, path: &Path, codec: &[&str]) -> anyhow::Result<()> {
        let mut ffmpeg = Command::new("ffmpeg")
            .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y"])
            .args(["-f", "rawvideo", "-pix_fmt", "gray"])
            .args(["-s", &format!("{}x{}", self.width, self.height)])
            .args(["-r", &self.fps.to_string()])
            .args(["-i", "pipe:0"])
            .args(codec)
            .args(["-pix_fmt", "yuv420p"])
            .arg(path)
            .stdin(Stdio::piped())
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!("starting ffmpeg (install it: apt-get install ffmpeg): {e}")
            })?;
        let mut stdin = ffmpeg.stdin.take().expect("piped");
        self.render(|frame| stdin.write_all(frame))?;
        drop(stdin);
        let status = ffmpeg.wait()?;
        anyhow::ensure!(status.success(), "ffmpeg could not encode the clip");
        Ok(())
    }
}

/// Paints a `w` × `h` rectangle of `value` centred at (cx, cy), each pixel by how much of
/// it the rectangle covers.
#[allow(clippy::too_many_arguments)]
fn paint(frame: &mut [f32], fw: usize, fh: usize, cx: f64, cy: f64, w: f64, h: f64, value: f32) {
    let (x0, x1, y0, y1) = (cx - w / 2.0, cx + w / 2.0, cy - h / 2.0, cy + h / 2.0);
    if x1 <= 0.0 || y1 <= 0.0 || x0 >= fw as f64 || y0 >= fh as f64 {
        return;
    }
    for y in (y0.floor().max(0.0) as usize)..(y1.ceil() as usize).min(fh) {
        let cover_y = ((y as f64 + 1.0).min(y1) - (y as f64).max(y0)).max(0.0);
        for x in (x0.floor().max(0.0) as usize)..(x1.ceil() as usize).min(fw) {
            let cover_x = ((x as f64 + 1.0).min(x1) - (x as f64).max(x0)).max(0.0);
            let a = (cover_x * cover_y) as f32;
            let p = &mut frame[y * fw + x];
            *p = *p * (1.0 - a) + value * a;
        }
    }
}

/// How a crowd is filmed: the camera, the crowd's screens, and what else is in the shot.
#[derive(Debug, Clone)]
pub struct Filming {
    pub width: usize,
    pub height: usize,
    pub fps: f64,
    pub symbol_s: f64,
    /// Film from this long before the session to this long after.
    pub margin_s: f64,
    /// The scene's size (the crowd fills it), in scene units.
    pub scene_w: f64,
    pub scene_h: f64,
    /// Screens at the far (top) edge and the near (bottom) edge, (w, h) in video pixels.
    pub far_screen: (f64, f64),
    pub near_screen: (f64, f64),
    /// The phones' clocks: most are off by a normal error of this standard deviation, the
    /// `late_share` of them by five times that.
    pub clock_error_s: f64,
    pub late_share: f64,
    /// Shares of the phones that never flash, and that are hidden for half the clip.
    pub never_share: f64,
    pub hidden_share: f64,
    pub shake_px: f64,
    pub noise: f64,
    pub lights: usize,
    pub led_wall: bool,
    pub seed: u64,
}

/// The camera: scene corners → video (the far side, at the top, is narrower), as reference
/// points an observer would mark (`px, py` in the video, `x, y` in the scene).
pub fn camera(f: &Filming) -> [crate::locate::homography::RefPoint; 4] {
    let (w, h) = (f.width as f64, f.height as f64);
    let point = |px: f64, py: f64, x: f64, y: f64| crate::locate::homography::RefPoint {
        px: px * w,
        py: py * h,
        x,
        y,
    };
    [
        point(0.14, 0.06, 0.0, 0.0),
        point(0.86, 0.06, f.scene_w, 0.0),
        point(0.97, 0.95, f.scene_w, f.scene_h),
        point(0.03, 0.95, 0.0, f.scene_h),
    ]
}

/// A crowd at scene `places`, each phone showing `slots` (none: never flashing), filmed as
/// `f` says. Returns the shot (the session starts `margin_s` into it).
pub fn crowd(f: &Filming, places: &[(f64, f64)], slots: &[Option<Vec<bool>>]) -> Shot {
    use crate::locate::homography::{Homography, RefPoint};
    let mut rng = rand::rngs::StdRng::seed_from_u64(f.seed);
    let to_video = Homography::fit(&camera(f).map(|r| RefPoint {
        px: r.x,
        py: r.y,
        x: r.px,
        y: r.py,
    }))
    .expect("a camera");
    let seconds = 2.0 * f.margin_s + crate::locate::flash::code::SLOTS as f64 * f.symbol_s;
    let normal = |rng: &mut rand::rngs::StdRng| -> f64 {
        // a sum of uniforms: near enough a normal
        (0..6).map(|_| rng.gen_range(-1.0..1.0)).sum::<f64>() / 2.0f64.sqrt()
    };
    let phones = places
        .iter()
        .zip(slots)
        .map(|(&(x, y), slots)| {
            let (vx, vy) = to_video.map(x, y).expect("inside the camera");
            let depth = (vy / f.height as f64).clamp(0.0, 1.0);
            let lerp = |a: f64, b: f64| a + (b - a) * depth;
            let late = rng.gen_bool(f.late_share);
            let error = normal(&mut rng) * f.clock_error_s * if late { 5.0 } else { 1.0 };
            let never = rng.gen_bool(f.never_share);
            let hidden = rng.gen_bool(f.hidden_share).then(|| {
                if rng.gen_bool(0.5) {
                    (0.0, seconds / 2.0)
                } else {
                    (seconds / 2.0, seconds + 1.0)
                }
            });
            Phone {
                x: vx,
                y: vy,
                w: lerp(f.far_screen.0, f.near_screen.0),
                h: lerp(f.far_screen.1, f.near_screen.1),
                slots: if never { None } else { slots.clone() },
                brightness: rng.gen_range(0.3..1.0),
                clock_error_s: error,
                refresh_phase_s: rng.gen_range(0.0..1.0 / 60.0),
                hidden,
            }
        })
        .collect();
    let lights = (0..f.lights)
        .map(|_| Light {
            x: rng.gen_range(0.0..f.width as f64),
            y: rng.gen_range(0.0..f.height as f64),
            w: rng.gen_range(3.0..12.0),
            h: rng.gen_range(3.0..12.0),
            hz: rng.gen_range(0.7..12.0),
            phase: rng.gen_range(0.0..1.0),
            brightness: rng.gen_range(0.5..1.0),
        })
        .collect();
    Shot {
        width: f.width,
        height: f.height,
        fps: f.fps,
        seconds,
        session_start_s: f.margin_s,
        symbol_s: f.symbol_s,
        exposure_s: 1.0 / 60.0,
        rolling_shutter_s: 0.02,
        shake_px: f.shake_px,
        noise: f.noise,
        ambient: 45.0,
        phones,
        lights,
        led_wall: f.led_wall.then_some({
            (
                f.width as f64 * 0.02,
                f.height as f64 * 0.01,
                f.width as f64 * 0.1,
                f.height as f64 * 0.04,
            )
        }),
        seed: f.seed,
    }
}

/// Scene places for `n` phones on a jittered grid filling a `w` × `h` scene (a 5 % border
/// kept), and the grid's spacing.
pub fn layout(n: usize, w: f64, h: f64, seed: u64) -> (Vec<(f64, f64)>, f64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (iw, ih) = (w * 0.9, h * 0.9);
    let cols = ((n as f64 * iw / ih).sqrt()).ceil() as usize;
    let rows = n.div_ceil(cols);
    let (cw, ch) = (iw / cols as f64, ih / rows as f64);
    let places = (0..n)
        .map(|i| {
            let (c, r) = (i % cols, i / cols);
            (
                w * 0.05 + (c as f64 + 0.5 + rng.gen_range(-0.2..0.2)) * cw,
                h * 0.05 + (r as f64 + 0.5 + rng.gen_range(-0.2..0.2)) * ch,
            )
        })
        .collect();
    (places, cw.min(ch))
}
