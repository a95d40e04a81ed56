//! QR detection at crowd scale, against zxing-cpp on the same images.
//!
//! `scripts/bench qr` (needs no database; it installs zxing-cpp into `.venv`). For each case it
//! generates a 12-megapixel crowd photo: N phones showing their version-2 codes at known scene
//! positions, under a tilted camera (perspective), each code rotated and lit differently, then
//! blurred and noisy. It runs C3S's detector (`locate::qr::detect_with`, on all cores), rqrr's
//! own detector on overlapping tiles (the design's first choice, for comparison) and zxing-cpp
//! (tiled, via scripts/zxing_detect.py), and prints one JSON line per case with recall, false
//! positives, mean position error (scene units) and wall time of each.

use std::collections::HashMap;
use std::process::Command;
use std::time::Instant;

use c3s::locate::homography::Homography;
use c3s::locate::qr;
use image::GrayImage;
use uuid::Uuid;

/// The photo sizes tried, smallest first (width, height): 12 MP is the goal's; a case whose
/// codes cannot fit in it without overlapping also runs on the next size up, and says so.
const SIZES: [(u32, u32); 3] = [(4000, 3000), (5657, 4243), (8000, 6000)];
#[path = "support/crowd.rs"]
mod crowd;

use crowd::{camera, Crowd, Placed, SCENE_H, SCENE_W};

fn main() {
    let secret = b"bench secret";
    let scene_id = Uuid::new_v4();
    let dir = std::env::temp_dir().join(format!("c3s-qr-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let python = format!("{}/.venv/bin/python", env!("CARGO_MANIFEST_DIR"));
    let script = format!("{}/scripts/zxing_detect.py", env!("CARGO_MANIFEST_DIR"));
    // rqrr's own detector takes minutes on the dense photos; C3S_QR_BENCH_RQRR=0 leaves it out
    let with_rqrr = std::env::var("C3S_QR_BENCH_RQRR").map_or(true, |v| v != "0");
    // C3S_QR_BENCH_MISSES=DIR saves a crop of every code C3S's detector missed
    let misses_dir = std::env::var("C3S_QR_BENCH_MISSES").ok();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    // each detector runs this many times per photo; the median time is reported
    let runs: usize = std::env::var("C3S_QR_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    // C3S_QR_BENCH_ONLY=500x3 runs one case
    let only = std::env::var("C3S_QR_BENCH_ONLY").ok();
    for &n in &[100usize, 500, 1000] {
        for &px in &[2.0f64, 3.0, 4.0] {
            if only.as_ref().is_some_and(|o| *o != format!("{n}x{px}")) {
                continue;
            }
            let seed = n as u64 * 10 + px as u64;
            let pixels: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
            let mut sized = SIZES.iter().map(|&size| {
                (
                    size,
                    crowd::crowd(size, &pixels, px, secret, scene_id, seed),
                )
            });
            let Some(((w, h), crowd)) = sized.find(|(_, c)| c.is_some()) else {
                continue;
            };
            let Crowd {
                img,
                drawn,
                placed,
                by_payload,
            } = crowd.expect("found a size that fits");
            let megapixels = (f64::from(w) * f64::from(h) / 1e6).round();
            if megapixels > 12.0 {
                println!(
                    "{}",
                    serde_json::json!({"bench": "qr", "phones": n, "px_per_module": px, "megapixels": megapixels, "skipped": "the codes do not fit in 12 MP without overlapping; measured on a larger photo instead"})
                );
            }
            let from_photo = Homography::fit(&camera(w, h)).unwrap();
            let spacing = SCENE_W / ((n as f64 * SCENE_W / SCENE_H).sqrt()).ceil();
            let score = |found: &[(Vec<u8>, f64, f64)]| {
                let mut hits = std::collections::HashSet::new();
                let (mut false_pos, mut err_sum) = (0usize, 0.0f64);
                for (payload, cx, cy) in found {
                    match (
                        qr::verify(secret, scene_id, payload, 0),
                        by_payload.get(payload),
                    ) {
                        (Ok(pixel), Some(&i)) if placed[i].pixel == pixel => {
                            if hits.insert(i) {
                                let (x, y) =
                                    from_photo.map(*cx, *cy).unwrap_or((f64::NAN, f64::NAN));
                                err_sum +=
                                    ((x - placed[i].x).powi(2) + (y - placed[i].y).powi(2)).sqrt();
                            }
                        }
                        _ => false_pos += 1,
                    }
                }
                let recall = hits.len() as f64 / n as f64;
                let mean_err = if hits.is_empty() {
                    f64::NAN
                } else {
                    err_sum / hits.len() as f64
                };
                (recall, false_pos, mean_err)
            };

            let run = |decoder: qr::Decoder| {
                // rqrr spends minutes on a dense photo it cannot read (364 s for 1000 codes at
                // 2 px/module when measured): skip that one case so the bench stays bounded
                if decoder == qr::Decoder::Rqrr && !with_rqrr {
                    return serde_json::json!({"skipped": "C3S_QR_BENCH_RQRR=0"});
                }
                if decoder == qr::Decoder::Rqrr && megapixels > 12.0 {
                    return serde_json::json!({"skipped": "run on 12 MP photos only (minutes each)"});
                }
                if decoder == qr::Decoder::Rqrr && px < 3.0 {
                    return serde_json::json!({"skipped": "minutes per photo at 2 px per module (364 s for 1000 codes when measured), recall 0"});
                }
                // the median of `runs` runs (the same photo; the result is the same each time)
                let mut times = Vec::new();
                let mut found = Vec::new();
                // rqrr's detector is slow enough that one run says it
                let runs = if decoder == qr::Decoder::Rqrr {
                    1
                } else {
                    runs
                };
                for _ in 0..runs {
                    let started = Instant::now();
                    found = qr::detect_with(&img, threads, decoder)
                        .into_iter()
                        .map(|f| {
                            let (cx, cy) = f.centre();
                            (f.payload, cx, cy)
                        })
                        .collect();
                    times.push(started.elapsed().as_secs_f64());
                }
                times.sort_by(f64::total_cmp);
                let secs = times[times.len() / 2];
                let (recall, fp, err) = score(&found);
                if let (Some(dir), qr::Decoder::Scan) = (&misses_dir, decoder) {
                    save_misses(dir, &img, &drawn, &placed, &by_payload, &found, n, px);
                }
                serde_json::json!({"recall": recall, "false_positives": fp, "mean_error": (err * 1000.0).round() / 1000.0, "seconds": (secs * 1000.0).round() / 1000.0, "threads": threads})
            };
            let scan = run(qr::Decoder::Scan);
            let rqrr = run(qr::Decoder::Rqrr);

            let raw = dir.join("photo.grey");
            std::fs::write(&raw, img.as_raw()).unwrap();
            let zx = Command::new(&python)
                .arg(&script)
                .arg(&raw)
                .args([
                    w.to_string(),
                    h.to_string(),
                    qr::TILE_PX.to_string(),
                    qr::TILE_OVERLAP_PX.to_string(),
                    runs.to_string(),
                ])
                .output();
            let zxing = match zx {
                Ok(out) if out.status.success() => {
                    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                    let found: Vec<_> = v["codes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|c| {
                            (
                                hex::decode(c["hex"].as_str().unwrap()).unwrap(),
                                c["cx"].as_f64().unwrap(),
                                c["cy"].as_f64().unwrap(),
                            )
                        })
                        .collect();
                    let (r, f, e) = score(&found);
                    serde_json::json!({"recall": r, "false_positives": f, "mean_error": (e * 1000.0).round() / 1000.0, "seconds": (v["seconds"].as_f64().unwrap() * 1000.0).round() / 1000.0})
                }
                Ok(out) => {
                    serde_json::json!({"error": String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or_default()})
                }
                Err(e) => serde_json::json!({"error": e.to_string()}),
            };
            println!(
                "{}",
                serde_json::json!({
                    "bench": "qr", "phones": n, "px_per_module": px, "megapixels": megapixels,
                    "phone_spacing": (spacing * 100.0).round() / 100.0,
                    "c3s": scan,
                    "rqrr_tiled": rqrr,
                    "zxing_cpp": zxing,
                })
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Saves a crop of the photo around every code the detector did not report.
#[allow(clippy::too_many_arguments)]
fn save_misses(
    dir: &str,
    img: &GrayImage,
    drawn: &[(f64, f64)],
    placed: &[Placed],
    by_payload: &HashMap<Vec<u8>, usize>,
    found: &[(Vec<u8>, f64, f64)],
    n: usize,
    px: f64,
) {
    let hit: std::collections::HashSet<usize> = found
        .iter()
        .filter_map(|(p, _, _)| by_payload.get(p).copied())
        .collect();
    let half = (40.0 * px) as u32;
    for i in (0..placed.len()).filter(|i| !hit.contains(i)) {
        let (cx, cy) = drawn[i];
        let x0 = (cx as u32).saturating_sub(half);
        let y0 = (cy as u32).saturating_sub(half);
        let crop = image::imageops::crop_imm(
            img,
            x0,
            y0,
            (2 * half).min(img.width() - x0),
            (2 * half).min(img.height() - y0),
        )
        .to_image();
        let path = format!("{dir}/miss-{n}-{px}-{i}-at-{}-{}.png", cx as u32, cy as u32);
        crop.save(&path).unwrap();
    }
}
