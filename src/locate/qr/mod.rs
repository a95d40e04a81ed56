//! QR locating: a phone shows a QR code of a short signed token; an observer photographs the
//! crowd; every code found in the photo is verified and mapped into the scene.
//!
//! The token is 26 bytes, so the code is version 2 (25 × 25 modules) at error-correction level
//! M, with big modules for a given code size:
//! `pixel_id (16) | expiry, minutes since 2025-01-01 (3, big-endian) | HMAC-SHA256 (7)`.
//! The HMAC covers the scene id too, so a token is bound to its pixel *and* its scene: one from
//! another scene fails the check exactly like a forged one.

use hmac::{Hmac, Mac};
use image::GrayImage;
use sha2::Sha256;
use uuid::Uuid;

pub const TOKEN_BYTES: usize = 26;
const MAC_BYTES: usize = 7;
/// 2025-01-01T00:00:00Z, the epoch of token expiry minutes.
const EPOCH_S: i64 = 1_735_689_600;

/// The HMAC of a token's fields (and its scene, which the token does not carry).
fn keyed(secret: &[u8], scene_id: Uuid, pixel_id: Uuid, expiry: [u8; 3]) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    m.update(scene_id.as_bytes());
    m.update(pixel_id.as_bytes());
    m.update(&expiry);
    m
}

/// A signed token for `pixel_id` in `scene_id`, valid until `expires_s` (Unix seconds).
pub fn sign(secret: &[u8], scene_id: Uuid, pixel_id: Uuid, expires_s: i64) -> [u8; TOKEN_BYTES] {
    let minutes = ((expires_s - EPOCH_S).max(0) / 60).min(0xff_ffff) as u32;
    let expiry = [(minutes >> 16) as u8, (minutes >> 8) as u8, minutes as u8];
    let mut token = [0u8; TOKEN_BYTES];
    token[..16].copy_from_slice(pixel_id.as_bytes());
    token[16..19].copy_from_slice(&expiry);
    let mac = keyed(secret, scene_id, pixel_id, expiry)
        .finalize()
        .into_bytes();
    token[19..].copy_from_slice(&mac[..MAC_BYTES]);
    token
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenError {
    /// Not a token of ours: wrong length, or a signature that does not match (forged, or
    /// from another scene).
    Forged,
    Expired,
}

/// Checks a token read from a photo of `scene_id`; returns its pixel.
pub fn verify(secret: &[u8], scene_id: Uuid, token: &[u8], now_s: i64) -> Result<Uuid, TokenError> {
    let token: &[u8; TOKEN_BYTES] = token.try_into().map_err(|_| TokenError::Forged)?;
    let pixel_id = Uuid::from_bytes(token[..16].try_into().expect("16 bytes"));
    let expiry: [u8; 3] = token[16..19].try_into().expect("3 bytes");
    // the crate's own check of a truncated tag, in constant time
    keyed(secret, scene_id, pixel_id, expiry)
        .verify_truncated_left(&token[19..])
        .map_err(|_| TokenError::Forged)?;
    let minutes = (u32::from(expiry[0]) << 16) | (u32::from(expiry[1]) << 8) | u32::from(expiry[2]);
    if EPOCH_S + i64::from(minutes) * 60 < now_s {
        return Err(TokenError::Expired);
    }
    Ok(pixel_id)
}

/// The QR code of a token: its side in modules and the modules row by row ('1' dark).
pub fn render(token: &[u8; TOKEN_BYTES]) -> (usize, String) {
    // byte mode, explicitly: the crate's automatic segmentation sometimes picks a mix of modes
    // that needs version 3 (9 tokens in 20 000), which the finder scan does not expect
    let mut bits = qrcode::bits::Bits::new(qrcode::Version::Normal(2));
    bits.push_byte_data(token)
        .and_then(|()| bits.push_terminator(qrcode::EcLevel::M))
        .expect("26 bytes fit version 2-M");
    let code =
        qrcode::QrCode::with_bits(bits, qrcode::EcLevel::M).expect("26 bytes fit version 2-M");
    modules(&code)
}

/// A code as the protocol sends it: its side in modules and the modules row by row ('1' dark).
pub fn modules(code: &qrcode::QrCode) -> (usize, String) {
    let modules = code
        .to_colors()
        .into_iter()
        .map(|c| if c == qrcode::Color::Dark { '1' } else { '0' })
        .collect();
    (code.width(), modules)
}

/// A code found in a photo: its payload and its outline in photo pixels
/// (top-left, top-right, bottom-right, bottom-left of the code).
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub payload: Vec<u8>,
    pub outline: [(f64, f64); 4],
}

impl Found {
    pub fn centre(&self) -> (f64, f64) {
        let (sx, sy) = self
            .outline
            .iter()
            .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
        (sx / 4.0, sy / 4.0)
    }
}

mod clean;
mod photo;
mod scan;

pub use photo::{decode_gray, PhotoError};

/// Tiles rqrr's own detector looks at: big enough to hold a code, small enough that its cost
/// (which grows fast with the number of candidate finder patterns in view) stays low; they
/// overlap by more than the largest code expected, so every code lies whole inside some tile.
pub const TILE_PX: u32 = 1024;
pub const TILE_OVERLAP_PX: u32 = 320;

/// The QR detectors behind [`detect`]; `benches/qr.rs` measures them on the same photos.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoder {
    /// C3S's own finder-pattern scan (`scan.rs`), with rqrr decoding the sampled modules.
    Scan,
    /// rqrr's own detector (quirc's algorithm), on overlapping tiles: the design's first choice.
    Rqrr,
}

impl Decoder {
    /// The one the server uses, chosen by `benches/qr.rs` (figures in the README).
    pub const SERVER: Decoder = Decoder::Scan;
}

/// Finds every QR code in a photo with the server's decoder.
pub fn detect(photo: &GrayImage, threads: usize) -> Vec<Found> {
    detect_with(photo, threads, Decoder::SERVER)
}

/// Finds every QR code in a photo on `threads` threads, each code once.
pub fn detect_with(photo: &GrayImage, threads: usize, decoder: Decoder) -> Vec<Found> {
    match decoder {
        Decoder::Scan => scan::detect(photo, threads),
        Decoder::Rqrr => detect_tiled_rqrr(photo, threads),
    }
}

/// rqrr's detector on overlapping tiles, tiles decoded on `threads` threads, codes seen in two
/// tiles kept once.
fn detect_tiled_rqrr(photo: &GrayImage, threads: usize) -> Vec<Found> {
    let (w, h) = photo.dimensions();
    let step = TILE_PX - TILE_OVERLAP_PX;
    let starts = |len: u32| {
        let mut v: Vec<u32> = (0..len.saturating_sub(TILE_OVERLAP_PX).max(1))
            .step_by(step as usize)
            .collect();
        if let Some(&last) = v.last() {
            if last + TILE_PX < len {
                v.push(len - TILE_PX);
            }
        }
        v
    };
    let tiles: Vec<(u32, u32)> = starts(h)
        .into_iter()
        .flat_map(|y| starts(w).into_iter().map(move |x| (x, y)))
        .collect();
    let threads = threads.clamp(1, 16);
    let per_thread = tiles.len().div_ceil(threads).max(1);
    let mut found: Vec<Found> = std::thread::scope(|scope| {
        let handles: Vec<_> = tiles
            .chunks(per_thread)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .flat_map(|&(x, y)| {
                            // rqrr asserts on some degenerate geometry: a tile that trips it
                            // yields nothing rather than failing the whole photo
                            let tile = std::panic::AssertUnwindSafe(|| detect_tile(photo, x, y));
                            std::panic::catch_unwind(tile).unwrap_or_default()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut seen = std::collections::HashSet::new();
    found.retain(|f| seen.insert(f.payload.clone()));
    found
}

fn detect_tile(photo: &GrayImage, x0: u32, y0: u32) -> Vec<Found> {
    let (w, h) = photo.dimensions();
    let tw = TILE_PX.min(w - x0) as usize;
    let th = TILE_PX.min(h - y0) as usize;
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(tw, th, |x, y| {
        photo.get_pixel(x0 + x as u32, y0 + y as u32).0[0]
    });
    img.detect_grids()
        .into_iter()
        .filter_map(|grid| {
            let mut payload = Vec::new();
            grid.decode_to(&mut payload).ok()?;
            let b = grid.bounds;
            let p = |i: usize| {
                (
                    f64::from(b[i].x) + f64::from(x0),
                    f64::from(b[i].y) + f64::from(y0),
                )
            };
            Some(Found {
                payload,
                outline: [p(0), p(1), p(2), p(3)],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test secret";

    #[test]
    fn tokens_verify_and_refuse_forgery_other_scenes_and_expiry() {
        let (scene, other, pixel) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let now = 1_800_000_000;
        let t = sign(SECRET, scene, pixel, now + 600);
        assert_eq!(verify(SECRET, scene, &t, now), Ok(pixel));
        assert_eq!(verify(SECRET, other, &t, now), Err(TokenError::Forged));
        assert_eq!(
            verify(b"other secret", scene, &t, now),
            Err(TokenError::Forged)
        );
        let mut forged = t;
        forged[3] ^= 1;
        assert_eq!(verify(SECRET, scene, &forged, now), Err(TokenError::Forged));
        assert_eq!(
            verify(SECRET, scene, &t[..20], now),
            Err(TokenError::Forged)
        );
        assert_eq!(
            verify(SECRET, scene, &t, now + 3600),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn every_token_is_a_version_2_code() {
        for _ in 0..20_000 {
            let t = sign(SECRET, Uuid::new_v4(), Uuid::new_v4(), 1_800_000_000);
            assert_eq!(render(&t).0, 25);
        }
    }

    #[test]
    fn the_code_is_version_2_and_reads_back() {
        let t = sign(SECRET, Uuid::new_v4(), Uuid::new_v4(), 1_800_000_000);
        let (side, modules) = render(&t);
        assert_eq!(side, 25, "version 2");
        // draw it at 4 px per module with a quiet zone and read it back
        let (img, size) = draw_square(side, &modules, 4);
        let found = detect(&img, 2);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].payload, t);
        let (cx, cy) = found[0].centre();
        assert!(
            (cx - f64::from(size) / 2.0).abs() < 3.0 && (cy - f64::from(size) / 2.0).abs() < 3.0
        );
    }

    /// A code drawn square, `px` pixels per module, with a quiet zone of 4 modules; and the
    /// image's side.
    fn draw_square(side: usize, modules: &str, px: u32) -> (GrayImage, u32) {
        let size = (side as u32 + 8) * px;
        let img = GrayImage::from_fn(size, size, |x, y| {
            let (mx, my) = ((x / px) as i64 - 4, (y / px) as i64 - 4);
            let dark = (0..side as i64).contains(&mx)
                && (0..side as i64).contains(&my)
                && modules.as_bytes()[(my as usize) * side + mx as usize] == b'1';
            image::Luma([if dark { 0 } else { 255 }])
        });
        (img, size)
    }

    /// The outline is in the documented convention of photo coordinates: pixel corners, from
    /// the photo's top-left corner (a pixel's centre is at +0.5), as the observer page
    /// measures a click.
    #[test]
    fn the_outline_names_pixel_corners() {
        let t = sign(SECRET, Uuid::new_v4(), Uuid::new_v4(), 1_800_000_000);
        let (side, modules) = render(&t);
        for px in [4u32, 6, 10] {
            let (img, _) = draw_square(side, &modules, px);
            let (near, far) = (f64::from(4 * px), f64::from((4 + side as u32) * px));
            let found = detect(&img, 2);
            let expected = [(near, near), (far, near), (far, far), (near, far)];
            for ((x, y), (ex, ey)) in found[0].outline.iter().zip(expected) {
                assert!(
                    (x - ex).abs() <= 0.25 && (y - ey).abs() <= 0.25,
                    "{px} px/module: {:?}",
                    found[0].outline
                );
            }
        }
    }

    /// Draws a code centred at (cx, cy), `px` pixels per module, turned by `angle`, with a
    /// two-module light margin.
    fn draw_turned(
        img: &mut GrayImage,
        token: &[u8; TOKEN_BYTES],
        cx: f64,
        cy: f64,
        px: f64,
        angle: f64,
    ) {
        let (side, modules) = render(token);
        let s = side as f64;
        let (sin, cos) = angle.sin_cos();
        let reach = (s / 2.0 + 2.0) * px * 1.5;
        for y in (cy - reach) as u32..(cy + reach) as u32 {
            for x in (cx - reach) as u32..(cx + reach) as u32 {
                let (dx, dy) = (f64::from(x) + 0.5 - cx, f64::from(y) + 0.5 - cy);
                let u = (cos * dx + sin * dy) / px + s / 2.0;
                let v = (-sin * dx + cos * dy) / px + s / 2.0;
                if u < -2.0 || v < -2.0 || u >= s + 2.0 || v >= s + 2.0 {
                    continue;
                }
                let inside = u >= 0.0 && v >= 0.0 && u < s && v < s;
                let dark = inside && modules.as_bytes()[v as usize * side + u as usize] == b'1';
                img.put_pixel(x, y, image::Luma([if dark { 40 } else { 220 }]));
            }
        }
    }

    #[test]
    fn tiny_and_hostile_photos_find_nothing_quickly() {
        for (w, h) in [(1, 1), (1, 5000), (5000, 1), (24, 24), (30, 2)] {
            assert!(detect(&GrayImage::new(w, h), 2).is_empty(), "{w}×{h}");
        }
        // a sheet of nothing but finder patterns, 5 px per module, packed edge to edge
        let finder = |x: u32, y: u32| {
            let (mx, my) = ((x / 5) % 8, (y / 5) % 8);
            let ring = mx.max(my).min(6 - mx.min(6)).min(6 - my.min(6));
            mx < 7 && my < 7 && ring != 1
        };
        let sheet = GrayImage::from_fn(1600, 1600, |x, y| {
            image::Luma([if finder(x, y) { 20 } else { 230 }])
        });
        let started = std::time::Instant::now();
        assert!(detect(&sheet, 2).is_empty());
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn close_ups_with_big_modules_are_read_too() {
        for px in [9.0, 14.0, 30.0] {
            let mut img = GrayImage::from_pixel(1200, 1200, image::Luma([120]));
            let t = sign(SECRET, Uuid::new_v4(), Uuid::new_v4(), 1_800_000_000);
            draw_turned(&mut img, &t, 600.0, 600.0, px, 0.1);
            let found = detect(&img, 2);
            assert_eq!(found.len(), 1, "{px} px per module");
            let (x, y) = found[0].centre();
            assert!(
                (x - 600.0).abs() < px && (y - 600.0).abs() < px,
                "{px}: centre {x},{y}"
            );
        }
    }

    #[test]
    fn turned_small_codes_on_a_busy_background_are_all_found_where_they_are() {
        let mut img = GrayImage::from_fn(900, 600, |x, y| {
            image::Luma([(90 + (x / 7 + y / 5) % 40) as u8])
        });
        let mut truth = Vec::new();
        for (i, angle) in [-0.6f64, -0.3, 0.0, 0.2, 0.45, std::f64::consts::FRAC_PI_4]
            .into_iter()
            .enumerate()
        {
            let t = sign(SECRET, Uuid::new_v4(), Uuid::new_v4(), 1_800_000_000);
            let (cx, cy) = (
                150.0 + 300.0 * (i % 3) as f64,
                150.0 + 300.0 * (i / 3) as f64,
            );
            draw_turned(&mut img, &t, cx, cy, 3.0 + i as f64 * 0.3, angle);
            truth.push((t, cx, cy));
        }
        // a 3 × 3 box blur, as a slightly soft camera gives
        let src = img.clone();
        for y in 1..599 {
            for x in 1..899 {
                let s: u32 = (0..9)
                    .map(|k| u32::from(src.get_pixel(x + k % 3 - 1, y + k / 3 - 1).0[0]))
                    .sum();
                img.put_pixel(x, y, image::Luma([(s / 9) as u8]));
            }
        }
        let found = detect(&img, 2);
        assert_eq!(found.len(), truth.len(), "{found:?}");
        for (t, cx, cy) in truth {
            let f = found
                .iter()
                .find(|f| f.payload == t)
                .expect("every code is read");
            let (x, y) = f.centre();
            assert!(
                (x - cx).abs() < 2.0 && (y - cy).abs() < 2.0,
                "centre {x},{y} vs {cx},{cy}"
            );
        }
    }
}
