//! Crowd photos for the QR benches (`benches/qr.rs`, `benches/photo.rs`): phones showing their
//! version-2 codes at known scene positions on a jittered layout, under a tilted camera, each
//! code rotated and lit differently, then blurred and noisy.

use std::collections::HashMap;

use c3s::locate::homography::{Homography, RefPoint};
use c3s::locate::qr;
use image::GrayImage;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

/// The scene: 100 × 75 units.
pub const SCENE_W: f64 = 100.0;
pub const SCENE_H: f64 = 75.0;
/// Light border drawn around each code, in modules (phones show a white margin).
pub const QUIET_MODULES: f64 = 2.0;

/// The camera: scene corners → photo (the far side, at the top, is narrower), inset so every
/// phone's code lies whole inside the photo.
pub fn camera(w: u32, h: u32) -> [RefPoint; 4] {
    let (w, h) = (f64::from(w), f64::from(h));
    let corner = |px, py, x, y| RefPoint {
        px: px * w,
        py: py * h,
        x,
        y,
    };
    [
        corner(0.08, 0.03, 0.0, 0.0),
        corner(0.92, 0.03, SCENE_W, 0.0),
        corner(0.97, 0.97, SCENE_W, SCENE_H),
        corner(0.03, 0.97, 0.0, SCENE_H),
    ]
}

pub struct Placed {
    pub pixel: Uuid,
    pub x: f64,
    pub y: f64,
}

/// Draws one code centred at (cx, cy), `px` photo pixels per module, rotated by `angle`,
/// with its dark and light levels.
#[allow(clippy::too_many_arguments)]
pub fn draw(
    img: &mut GrayImage,
    side: usize,
    modules: &[u8],
    cx: f64,
    cy: f64,
    px: f64,
    angle: f64,
    dark: u8,
    light: u8,
) {
    let half = (side as f64 / 2.0 + QUIET_MODULES) * px;
    let reach = half * std::f64::consts::SQRT_2;
    let (sin, cos) = angle.sin_cos();
    let (x0, x1) = (
        (cx - reach).max(0.0) as u32,
        ((cx + reach) as u32).min(img.width() - 1),
    );
    let (y0, y1) = (
        (cy - reach).max(0.0) as u32,
        ((cy + reach) as u32).min(img.height() - 1),
    );
    for y in y0..=y1 {
        for x in x0..=x1 {
            let (dx, dy) = (f64::from(x) + 0.5 - cx, f64::from(y) + 0.5 - cy);
            // into the code's own frame, in modules from its top-left module
            let u = (cos * dx + sin * dy) / px + side as f64 / 2.0;
            let v = (-sin * dx + cos * dy) / px + side as f64 / 2.0;
            if u < -QUIET_MODULES
                || v < -QUIET_MODULES
                || u >= side as f64 + QUIET_MODULES
                || v >= side as f64 + QUIET_MODULES
            {
                continue;
            }
            let inside = u >= 0.0 && v >= 0.0 && u < side as f64 && v < side as f64;
            let is_dark = inside && modules[v as usize * side + u as usize] == b'1';
            img.put_pixel(x, y, image::Luma([if is_dark { dark } else { light }]));
        }
    }
}

/// A 3 × 3 box blur and Gaussian-ish noise (sum of uniforms), in place.
pub fn degrade(img: &mut GrayImage, rng: &mut impl Rng, noise: f64) {
    let src = img.clone();
    for y in 1..img.height() - 1 {
        for x in 1..img.width() - 1 {
            let mut s = 0u32;
            for dy in 0..3 {
                for dx in 0..3 {
                    s += u32::from(src.get_pixel(x + dx - 1, y + dy - 1).0[0]);
                }
            }
            let n: f64 = (0..3).map(|_| rng.gen_range(-1.0..1.0)).sum::<f64>() * noise;
            img.put_pixel(
                x,
                y,
                image::Luma([(f64::from(s) / 9.0 + n).clamp(0.0, 255.0) as u8]),
            );
        }
    }
}

/// A generated photo and its truth.
pub struct Crowd {
    pub img: GrayImage,
    /// where each phone's code is drawn in the photo
    pub drawn: Vec<(f64, f64)>,
    pub placed: Vec<Placed>,
    /// token bytes → index in `placed`
    pub by_payload: HashMap<Vec<u8>, usize>,
}

/// Generates a crowd photo of `n` phones at `px` pixels per module (at the photo's middle
/// depth); none when the codes cannot fit without overlapping.
pub fn crowd(
    (w, h): (u32, u32),
    pixels: &[Uuid],
    px: f64,
    secret: &[u8],
    scene_id: Uuid,
    seed: u64,
) -> Option<Crowd> {
    let n = pixels.len();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let to_photo = Homography::fit(&camera(w, h).map(|r| RefPoint {
        px: r.x,
        py: r.y,
        x: r.px,
        y: r.py,
    }))
    .unwrap();
    // a jittered grid over the scene
    let cols = ((n as f64 * SCENE_W / SCENE_H).sqrt()).ceil() as usize;
    let rows = n.div_ceil(cols);
    let (cw, ch) = (SCENE_W / cols as f64, SCENE_H / rows as f64);
    // the code's footprint must fit its cell at the far side (where cells are smallest)
    let far_cell_px = cw * (0.84 * f64::from(w) / SCENE_W);
    let footprint = (25.0 + 2.0 * QUIET_MODULES) * px * 1.15; // rotation and perspective margin
    if footprint > far_cell_px.min(ch * 0.94 * f64::from(h) / SCENE_H * 0.9) {
        return None;
    }
    let mut img = GrayImage::from_fn(w, h, |x, y| {
        image::Luma([(90 + (x / 7 + y / 5) % 40) as u8])
    });
    let mut placed = Vec::with_capacity(n);
    let mut drawn = Vec::with_capacity(n);
    let mut by_payload = HashMap::new();
    for (i, &pixel) in pixels.iter().enumerate() {
        let (c, r) = (i % cols, i / cols);
        let x = (c as f64 + 0.5 + rng.gen_range(-0.15..0.15)) * cw;
        let y = (r as f64 + 0.5 + rng.gen_range(-0.15..0.15)) * ch;
        let token = qr::sign(secret, scene_id, pixel, 2_000_000_000);
        let (side, modules) = qr::render(&token);
        let (pxc, pyc) = to_photo.map(x, y).unwrap();
        // perspective: modules shrink towards the far (top) side, about ±10 %
        let depth_scale = 0.9 + 0.2 * pyc / f64::from(h);
        let angle = rng.gen_range(-0.35..0.35);
        let light = rng.gen_range(180..250);
        let dark = rng.gen_range(10..70);
        draw(
            &mut img,
            side,
            modules.as_bytes(),
            pxc,
            pyc,
            px * depth_scale,
            angle,
            dark,
            light,
        );
        by_payload.insert(token.to_vec(), placed.len());
        placed.push(Placed { pixel, x, y });
        drawn.push((pxc, pyc));
    }
    degrade(&mut img, &mut rng, 6.0);
    Some(Crowd {
        img,
        drawn,
        placed,
        by_payload,
    })
}
