//! `c3s-load --clip FILE` (`scripts/bench video`): the show is one video clip. Uploads it
//! three times (each timed: the upload and the server's probe; the median is the figure, the
//! first, into an empty store, is reported apart), builds the show of the last, times until
//! its first second is decoded on the server (the raster of the clip's 30th show frame
//! answers), samples the server's frame cache while the crowd watches, and afterwards checks
//! every colour the recorded phones got against FFmpeg's own decode of the clip, resampled to
//! the show's grid as the server says it does (`scale=W:H:flags=area`, RGB).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use c3s::dataplane::chunk::Chunk;
use c3s::dataplane::grid::Grid;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::Operator;

/// What the clip's show is, for the colour check.
pub struct ClipShow {
    pub figures: Value,
    pub grid: Grid,
    pub first: u32,
    pub frames: u32,
    pub fps: u32,
    pub total_ms: i64,
}

/// Times one upload of the clip to `scene` (the upload and the server's probe): the frame
/// made of it, and the seconds it took.
async fn upload(op: &Operator, scene: Uuid, clip: &Path) -> anyhow::Result<(Value, f64)> {
    let bytes = std::fs::metadata(clip)?.len();
    let file = tokio::fs::File::open(clip).await?;
    let body =
        reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20));
    let started = Instant::now();
    let resp = op
        .client
        .post(format!("{}/api/scenes/{scene}/clips?name=bench", op.base))
        .bearer_auth(&op.token)
        .header("content-type", "video/mp4")
        .header("content-length", bytes)
        .body(body)
        .send()
        .await?;
    let status = resp.status();
    let frame: Value = resp.json().await.unwrap_or(Value::Null);
    let seconds = started.elapsed().as_secs_f64();
    if !status.is_success() {
        bail!("clip upload: {status} {frame}");
    }
    Ok((frame, seconds))
}

/// Uploads of the clip timed: the first two into a scene of their own (the first is also the
/// store's first file ever, and is reported apart), the last into the show's.
const UPLOADS: usize = 3;

/// Uploads the clip to `scene`, builds the show of it (looping), waits for its first second.
pub async fn set_up(op: &Operator, scene: Uuid, clip: &Path) -> anyhow::Result<ClipShow> {
    let bytes = std::fs::metadata(clip)?.len();
    let aside: Value = op
        .call(
            reqwest::Method::POST,
            "/scenes",
            Some(json!({"name": "uploads", "width": 100.0, "height": 100.0})),
        )
        .await?;
    let aside: Uuid = aside["scene_id"].as_str().context("scene id")?.parse()?;
    let mut times = Vec::with_capacity(UPLOADS);
    for _ in 1..UPLOADS {
        times.push(upload(op, aside, clip).await?.1);
    }
    let (frame, upload_s) = upload(op, scene, clip).await?;
    times.push(upload_s);
    let mb_per_s = |s: f64| round3(bytes as f64 / 1e6 / s.max(1e-6));
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median_s = sorted[sorted.len() / 2];
    let uploaded = Instant::now();
    let show = op
        .call(
            reqwest::Method::PUT,
            &format!("/scenes/{scene}/show"),
            Some(json!({"loop": true})),
        )
        .await?;
    let f = &show["show"]["frames"][0];
    let clip_play = &f["clip"];
    let first = clip_play["first"].as_u64().context("clip.first")? as u32;
    let frames = clip_play["frames"].as_u64().context("clip.frames")? as u32;
    let fps = clip_play["fps"].as_u64().context("clip.fps")? as u32;
    let grid = Grid {
        w: show["grid"]["w"].as_u64().context("grid")? as u32,
        h: show["grid"]["h"].as_u64().context("grid")? as u32,
    };
    // the first second is ready when its last frame is (the decoder goes in order)
    let frame_id = f["frame_id"].as_str().context("frame id")?;
    let last_of_second = first + fps.min(frames) - 1;
    let raster = op
        .client
        .get(format!(
            "{}/api/scenes/{scene}/show/frames/{frame_id}/raster?index={last_of_second}",
            op.base
        ))
        .bearer_auth(&op.token)
        .send()
        .await?;
    if !raster.status().is_success() {
        bail!("the clip's first second: {}", raster.status());
    }
    let first_second_s = uploaded.elapsed().as_secs_f64();
    Ok(ClipShow {
        figures: json!({
            "clip_bytes": bytes,
            "clip_width": frame["width"],
            "clip_height": frame["height"],
            "clip_duration_ms": frame["clip"]["video_duration_ms"],
            "uploads_s": times.iter().map(|&t| round3(t)).collect::<Vec<_>>(),
            "upload_s": round3(median_s),
            "upload_mb_per_s": mb_per_s(median_s),
            "first_upload_mb_per_s": mb_per_s(times[0]),
            "first_second_ready_s": round3(first_second_s),
            "grid": format!("{}x{}", grid.w, grid.h),
        }),
        grid,
        first,
        frames,
        fps,
        total_ms: i64::from(f["duration_ms"].as_u64().context("duration")? as u32),
    })
}

/// The largest value a Prometheus gauge had in the server's `/metrics` (none when absent).
pub async fn gauge(metrics_url: &str, name: &str) -> Option<f64> {
    let text = reqwest::get(metrics_url).await.ok()?.text().await.ok()?;
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .reduce(f64::max)
}

/// One recorded phone: its place (scene units of a 100 × 100 scene) and its chunks.
pub struct Recorded {
    pub x: f64,
    pub y: f64,
    pub chunks: Vec<Chunk>,
}

/// Checks every colour the recorded phones got while the clip played (entries of the newest
/// show version at or after `anchor_ms`) against FFmpeg's decode of `clip` on the grid.
pub fn check_colours(
    clip: &Path,
    show: &ClipShow,
    anchor_ms: i64,
    phones: &[Recorded],
) -> anyhow::Result<Value> {
    let grid = show.grid;
    // wanted[source frame] = [(phone, its colour there)]
    let mut wanted: BTreeMap<u32, Vec<(usize, [u8; 3])>> = BTreeMap::new();
    let mut cells = HashMap::new();
    for (p, phone) in phones.iter().enumerate() {
        let cell = grid.cell_of(phone.x as f32, phone.y as f32, 100.0, 100.0) as usize;
        cells.insert(p, cell);
        let Some(version) = phone.chunks.iter().map(|c| c.version).max() else {
            continue;
        };
        for c in phone.chunks.iter().filter(|c| c.version == version) {
            for &(at, rgb) in c.entries.iter().filter(|(at, _)| *at >= anchor_ms) {
                let within = (at - anchor_ms).rem_euclid(show.total_ms.max(1));
                let k = (within * i64::from(show.fps) / 1000).min(i64::from(show.frames) - 1);
                wanted
                    .entry(show.first + k as u32)
                    .or_default()
                    .push((p, rgb));
            }
        }
    }
    let checks: usize = wanted.values().map(Vec::len).sum();
    if checks == 0 {
        bail!("the recorded phones got no colour of the clip");
    }
    let mut ffmpeg = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-i"])
        .arg(clip)
        .args([
            "-vf",
            &format!("scale={}:{}:flags=area,format=rgb24", grid.w, grid.h),
        ])
        .args(["-fps_mode", "passthrough", "-f", "rawvideo", "pipe:1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("running ffmpeg for the reference decode")?;
    let mut out = ffmpeg.stdout.take().context("piped")?;
    let mut frame = vec![0u8; grid.cells() * 3];
    let mut mismatches = 0usize;
    let mut first_mismatch = Value::Null;
    let last = *wanted.keys().last().expect("some");
    let mut n = 0u32;
    while n <= last {
        out.read_exact(&mut frame)
            .with_context(|| format!("reference frame {n}"))?;
        if let Some(list) = wanted.get(&n) {
            for &(p, rgb) in list {
                let c = cells[&p] * 3;
                let want = [frame[c], frame[c + 1], frame[c + 2]];
                if want != rgb {
                    mismatches += 1;
                    if first_mismatch.is_null() {
                        first_mismatch = json!({"frame": n, "phone": p, "got": rgb, "want": want});
                    }
                }
            }
        }
        n += 1;
    }
    let _ = ffmpeg.kill();
    let _ = ffmpeg.wait();
    Ok(json!({
        "colour_checks": checks,
        "colour_phones": phones.len(),
        "colour_frames": wanted.len(),
        "colour_mismatches": mismatches,
        "first_mismatch": first_mismatch,
    }))
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
