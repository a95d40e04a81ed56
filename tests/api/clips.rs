//! Clips: a video made by the test with FFmpeg's `testsrc` uploads, round-trips byte-identical,
//! plays to phones over sockets with the colours of FFmpeg's own decode of each frame at the
//! right instants, seeks into its middle, is trimmed and deleted with its GridFS file; bad
//! files get their error and leave storage unchanged.

use std::path::{Path, PathBuf};
use std::time::Duration;

use c3s::dataplane::grid::Grid;
use c3s::playback::{Show, ShowFrame};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{spawn_app, spawn_app_with, TestApp};
use crate::phone::{colour_at, Phone};
use crate::realtime::command;

const W: u32 = 640;
const H: u32 = 480;
const FPS: u32 = 30;
const SECONDS: u32 = 4;

/// A directory of the test's own, removed at its end.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!("c3s-clips-test-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn ffmpeg(args: &[&str]) {
    let status = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success(), "ffmpeg {args:?}");
}

/// A `testsrc` clip (every frame differs: a counter and a moving gradient), H.264 in MP4.
fn test_clip(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let src = format!("testsrc=size={W}x{H}:rate={FPS}:duration={SECONDS}");
    let mut args = vec!["-f", "lavfi", "-i", &src];
    args.extend_from_slice(&["-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "12"]);
    args.extend_from_slice(extra);
    let out = path.to_str().unwrap().to_owned();
    args.push(&out);
    ffmpeg(&args);
    path
}

/// FFmpeg's own decode of every frame of `clip`, resampled to `grid` the way the server says
/// clips are (area averaging, then RGB).
fn reference_frames(clip: &Path, grid: Grid) -> Vec<Vec<u8>> {
    let out = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-i"])
        .arg(clip)
        .args([
            "-vf",
            &format!("scale={}:{}:flags=area,format=rgb24", grid.w, grid.h),
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "pipe:1",
        ])
        .output()
        .expect("ffmpeg runs");
    assert!(out.status.success());
    let frame = grid.cells() * 3;
    assert_eq!(out.stdout.len() % frame, 0);
    out.stdout.chunks(frame).map(<[u8]>::to_vec).collect()
}

async fn upload_clip(
    app: &TestApp,
    token: &str,
    scene: Uuid,
    bytes: Vec<u8>,
    content_type: &str,
) -> (StatusCode, Value) {
    let path = format!("/api/scenes/{scene}/clips?name=clip");
    app.post_bytes(token, &path, content_type, bytes).await
}

/// A scene of the clip's shape (one scene unit a pixel of the clip).
async fn clip_scene(app: &TestApp, op: &str) -> Uuid {
    let (status, scene) = app
        .call(
            Method::POST,
            "/api/scenes",
            Some(op),
            Some(json!({"name": "Clips", "width": W as f64, "height": H as f64, "idle_color": "#000000"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{scene}");
    let scene: Uuid = scene["scene_id"].as_str().unwrap().parse().unwrap();
    app.open_scene(op, scene).await;
    scene
}

fn grid_of_clip() -> Grid {
    Grid::for_show(&Show {
        frames: vec![ShowFrame {
            frame_id: Uuid::nil(),
            sha256: String::new(),
            gridfs_id: String::new(),
            duration_ms: 1,
            width: W,
            height: H,
            clip: None,
        }],
        looped: false,
    })
}

/// The chunks of `version` a phone gets until they cover `until_ms`.
async fn chunks_until(
    phone: &mut Phone,
    version: u32,
    until_ms: i64,
) -> Vec<c3s::dataplane::chunk::Chunk> {
    let mut chunks = Vec::new();
    loop {
        let c = phone.next_chunk(Duration::from_secs(20)).await;
        let done = c.version == version && c.start_ms + i64::from(c.length_ms) >= until_ms;
        if c.version == version {
            chunks.push(c);
        }
        if done {
            return chunks;
        }
    }
}

#[tokio::test]
async fn a_clip_uploads_round_trips_plays_frame_exact_seeks_and_is_deleted() {
    let dir = Scratch::new();
    let clip = test_clip(dir.path(), "testsrc.mp4", &[]);
    let bytes = std::fs::read(&clip).unwrap();
    let app = spawn_app().await;
    let (op, _) = app.register("oper").await;
    let scene = clip_scene(&app, &op).await;
    let before = app.storage_counts().await;

    let (status, frame) = upload_clip(&app, &op, scene, bytes.clone(), "video/mp4").await;
    assert_eq!(status, StatusCode::CREATED, "{frame}");
    assert_eq!(frame["content_type"], "video/mp4");
    assert_eq!(frame["width"], W);
    assert_eq!(frame["height"], H);
    assert_eq!(frame["duration_ms"], SECONDS * 1000);
    assert_eq!(frame["clip"]["start_ms"], 0);
    assert_eq!(frame["clip"]["end_ms"], SECONDS * 1000);
    assert_eq!(frame["clip"]["fps"], FPS);
    assert_eq!(frame["clip"]["video_duration_ms"], SECONDS * 1000);
    let frame_id = frame["frame_id"].as_str().unwrap().to_owned();
    assert_eq!(app.storage_counts().await, (before.0 + 1, before.1 + 1));

    // the original, byte-identical; the poster is a PNG
    let original = app
        .client
        .get(app.url(&format!("/api/scenes/{scene}/frames/{frame_id}/image")))
        .bearer_auth(&op)
        .send()
        .await
        .unwrap();
    assert_eq!(original.status(), StatusCode::OK);
    assert_eq!(original.headers()["content-type"], "video/mp4");
    assert!(
        original.bytes().await.unwrap() == bytes,
        "the clip round-trips byte-identical"
    );
    let poster = app
        .client
        .get(app.url(&format!("/api/scenes/{scene}/frames/{frame_id}/poster")))
        .bearer_auth(&op)
        .send()
        .await
        .unwrap();
    assert_eq!(poster.status(), StatusCode::OK);
    let poster = image::load_from_memory(&poster.bytes().await.unwrap()).unwrap();
    assert_eq!(poster.width(), 320);

    // phones at cells across the picture
    let grid = grid_of_clip();
    let reference = reference_frames(&clip, grid);
    assert_eq!(reference.len(), (SECONDS * FPS) as usize);
    let places = [(10.5, 10.5), (320.5, 240.5), (600.5, 400.5), (100.5, 450.5)];
    let mut phones = Vec::new();
    for &(x, y) in &places {
        let phone = Phone::join(&app, scene, None).await;
        app.place(&op, scene, phone.pixel_id(), x, y).await;
        phones.push(phone);
    }
    app.build_show(&op, scene, false).await;
    // as an operator would, wait until the clip's first 1.5 s are decoded (the preview's
    // raster of its 45th frame answers) before pressing play: in a debug build on a busy
    // machine the first frames can take longer than the play's lead
    let ready = app
        .client
        .get(app.url(&format!(
            "/api/scenes/{scene}/show/frames/{frame_id}/raster?index=45"
        )))
        .bearer_auth(&op)
        .send()
        .await
        .unwrap();
    assert_eq!(
        ready.status(),
        StatusCode::OK,
        "the clip's first frames are decoded"
    );
    let play = command(
        &app,
        &op,
        scene,
        json!({"command": "play", "start_in_ms": 3000}),
    )
    .await;
    let t0 = play["timeline"]["current"]["anchor_ms"].as_i64().unwrap();
    let version = play["timeline"]["version"].as_u64().unwrap() as u32;

    // every show frame's colour, at its first and last millisecond and its middle; `origin`
    // is the instant the show's position 0 is (or would be) at
    let check = |chunks: &[c3s::dataplane::chunk::Chunk],
                 cell: usize,
                 frames: std::ops::Range<u32>,
                 origin: i64| {
        let fps = i64::from(FPS);
        for k in frames {
            let begin = origin + (i64::from(k) * 1000 + fps - 1) / fps;
            let end = origin + (i64::from(k + 1) * 1000 + fps - 1) / fps - 1;
            let want = &reference[k as usize][cell * 3..cell * 3 + 3];
            for t in [begin, (begin + end) / 2, end] {
                assert_eq!(
                    colour_at(chunks, t).map(|c| c.to_vec()),
                    Some(want.to_vec()),
                    "cell {cell}, show frame {k}, at {} ms into the show; the chunks (from, ms): {:?}",
                    t - origin,
                    chunks.iter().map(|c| (c.start_ms - origin, c.length_ms)).collect::<Vec<_>>()
                );
            }
        }
    };
    for (phone, &(x, y)) in phones.iter_mut().zip(&places) {
        let cell = grid.cell_of(x as f32, y as f32, W as f32, H as f32) as usize;
        let chunks = chunks_until(phone, version, t0 + 2000).await;
        check(&chunks, cell, 0..60, t0);
    }

    // a seek into the middle lands on the right video frame (2500 ms is show frame 75)
    let seek = command(
        &app,
        &op,
        scene,
        json!({"command": "seek", "position_ms": 2500, "in_ms": 3000}),
    )
    .await;
    let t1 = seek["timeline"]["current"]["anchor_ms"].as_i64().unwrap();
    let version = seek["timeline"]["version"].as_u64().unwrap() as u32;
    for (phone, &(x, y)) in phones.iter_mut().zip(&places) {
        let cell = grid.cell_of(x as f32, y as f32, W as f32, H as f32) as usize;
        let chunks = chunks_until(phone, version, t1 + 1000).await;
        check(&chunks, cell, 75..100, t1 - 2500);
    }
    drop(phones);

    // trimmed: it plays from 1 s to 3 s, 2 s in the show
    let (status, trimmed) = app
        .call(
            Method::PATCH,
            &format!("/api/scenes/{scene}/frames/{frame_id}"),
            Some(&op),
            Some(json!({"clip": {"start_ms": 1000, "end_ms": 3000}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{trimmed}");
    assert_eq!(trimmed["duration_ms"], 2000);
    assert_eq!(trimmed["clip"]["start_ms"], 1000);
    for bad in [
        json!({"clip": {"start_ms": 3000, "end_ms": 1000}}),
        json!({"clip": {"end_ms": 99000}}),
        json!({"duration_ms": 500}),
    ] {
        let (status, body) = app
            .call(
                Method::PATCH,
                &format!("/api/scenes/{scene}/frames/{frame_id}"),
                Some(&op),
                Some(bad.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert!(body["error"].is_string());
    }

    // deleted with its GridFS file, once the show no longer uses it
    let (status, still) = app
        .upload(
            &op,
            scene,
            "image/png",
            crate::images::png_of(2, 1, &[[1, 2, 3], [4, 5, 6]]),
            "",
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{still}");
    let (status, body) = app
        .call(
            Method::PUT,
            &format!("/api/scenes/{scene}/show"),
            Some(&op),
            Some(json!({"loop": false, "frame_ids": [still[0]["frame_id"]]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let before = (before.0 + 1, before.1 + 1);
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/api/scenes/{scene}/frames/{frame_id}"),
            Some(&op),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.storage_counts().await != before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the clip's file is not deleted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn bad_files_get_their_error_and_leave_storage_unchanged() {
    let dir = Scratch::new();
    let clip = std::fs::read(test_clip(dir.path(), "good.mp4", &[])).unwrap();
    let audio = dir.path().join("audio.m4a");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:duration=1",
        "-c:a",
        "aac",
        audio.to_str().unwrap(),
    ]);
    let audio = std::fs::read(audio).unwrap();
    let png = crate::images::png_of(2, 1, &[[1, 2, 3], [4, 5, 6]]);
    let mut noise = vec![0u8; 100_000];
    for (i, b) in noise.iter_mut().enumerate() {
        *b = (i * 7919 % 251) as u8;
    }
    let app = spawn_app_with(c3s::testkit::shared_mongodb_url(), |c| {
        c.max_clip_seconds = 3.0;
    })
    .await;
    let (op, _) = app.register("oper").await;
    let scene = clip_scene(&app, &op).await;
    let before = app.storage_counts().await;
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "too long",
            clip.clone(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "video_too_long",
        ),
        (
            "truncated",
            clip[..clip.len() / 3].to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_video",
        ),
        (
            "audio only",
            audio,
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_video_stream",
        ),
        (
            "an image",
            png,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "noise",
            noise,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "empty",
            Vec::new(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "empty_body",
        ),
    ];
    for (what, bytes, want, code) in cases {
        let (status, body) = upload_clip(&app, &op, scene, bytes, "video/mp4").await;
        assert_eq!(status, want, "{what}: {body}");
        assert_eq!(body["error"], code, "{what}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {body}"
        );
        assert_eq!(
            app.storage_counts().await,
            before,
            "{what} left something stored"
        );
    }
    // a clip that declares a length over the byte limit is refused before it is read
    let (status, body) = upload_clip(&app, &op, scene, vec![0u8; 16], "video/mp4").await;
    assert!(status.is_client_error(), "{body}");
}

#[tokio::test]
async fn rotation_metadata_turns_the_clip_upright() {
    let dir = Scratch::new();
    let clip = test_clip(dir.path(), "upright.mp4", &[]);
    // a phone's portrait clip: its frames stored landscape, with a display rotation
    let rotated = dir.path().join("rotated.mp4");
    ffmpeg(&[
        "-i",
        clip.to_str().unwrap(),
        "-c",
        "copy",
        "-metadata:s:v:0",
        "rotate=90",
        rotated.to_str().unwrap(),
    ]);
    let app = spawn_app().await;
    let (op, _) = app.register("oper").await;
    let scene = clip_scene(&app, &op).await;
    let (status, frame) = upload_clip(
        &app,
        &op,
        scene,
        std::fs::read(rotated).unwrap(),
        "video/mp4",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{frame}");
    // shown as the phone that filmed it held it
    assert_eq!(
        (frame["width"].as_u64(), frame["height"].as_u64()),
        (Some(u64::from(H)), Some(u64::from(W)))
    );
}
