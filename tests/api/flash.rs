//! Flash locating end to end: phones joined over real sockets get their code words of a
//! session, a clip of them flashing is drawn (`c3s::testkit::flashclip`) and encoded with the
//! real FFmpeg, and the clip sent through the API places each phone where it stands and no
//! other; another session's codes, made-up codes, expired sessions and bad files get their
//! error; phones on two nodes are located from one clip.

use std::time::Duration;

use c3s::locate::flash::code;
use c3s::testkit::flashclip::{self, Filming};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{node_config, spawn_app, spawn_app_with, until_nodes, Node, TestApp};
use crate::phone::{next_json, Phone};

const SCENE_W: f64 = 100.0;
const SCENE_H: f64 = 60.0;

/// An open 100 × 60 scene that locates by flashing (and QR photos); (operator token, scene).
async fn flash_scene(app: &TestApp) -> (String, Uuid) {
    let (op, _) = app.register("observer").await;
    let (status, body) = app
        .call(
            Method::POST,
            "/api/scenes",
            Some(&op),
            Some(json!({"name": "Flash", "width": SCENE_W, "height": SCENE_H,
                "location_methods": ["flash", "qr"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let scene: Uuid = body["scene_id"].as_str().unwrap().parse().unwrap();
    app.open_scene(&op, scene).await;
    (op, scene)
}

async fn start_session(
    app: &TestApp,
    token: &str,
    scene: Uuid,
    body: Value,
) -> (StatusCode, Value) {
    app.call(
        Method::POST,
        &format!("/api/scenes/{scene}/flash-sessions"),
        Some(token),
        Some(body),
    )
    .await
}

/// Each phone's `flash` message of `session` (other messages skipped).
async fn flash_messages(phones: &mut [Phone], session: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for phone in phones.iter_mut() {
        loop {
            let msg = next_json(&mut phone.socket).await;
            if msg["type"] == "flash" && msg["session_id"] == session {
                out.push(msg);
                break;
            }
        }
    }
    out
}

fn slots_of(msg: &Value) -> Vec<bool> {
    msg["slots"]
        .as_str()
        .unwrap()
        .chars()
        .map(|c| c == '1')
        .collect()
}

/// Waits until a session's last slot has passed.
async fn until_over(session: &Value) {
    let ends = session["ends_at_us"].as_i64().unwrap();
    let wait = ends - c3s::clock::now_us() + 200_000;
    if wait > 0 {
        tokio::time::sleep(Duration::from_micros(wait as u64)).await;
    }
}

fn filming(symbol_s: f64, seed: u64) -> Filming {
    Filming {
        width: 1280,
        height: 720,
        fps: 30.0,
        symbol_s,
        margin_s: 0.6,
        scene_w: SCENE_W,
        scene_h: SCENE_H,
        far_screen: (3.0, 4.5),
        near_screen: (5.0, 7.5),
        clock_error_s: 0.002,
        late_share: 0.03,
        never_share: 0.0,
        hidden_share: 0.0,
        shake_px: 2.0,
        noise: 2.0,
        lights: 6,
        led_wall: false,
        seed,
    }
}

/// Draws and encodes (H.264, CRF 23) the shot into a temporary file.
fn encode(shot: &flashclip::Shot) -> tempfile_path::TempPath {
    let path = tempfile_path::TempPath::new("mp4");
    shot.encode(
        &path.0,
        &["-c:v", "libx264", "-crf", "23", "-preset", "veryfast"],
    )
    .expect("the clip encodes");
    path
}

mod tempfile_path {
    /// A file in the temporary directory, removed when dropped.
    pub struct TempPath(pub std::path::PathBuf);

    impl TempPath {
        pub fn new(ext: &str) -> TempPath {
            TempPath(std::env::temp_dir().join(format!("c3s-test-{}.{ext}", uuid::Uuid::new_v4())))
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// The reference points of the still at `still_s` (the camera shakes: its features move).
fn points_at(f: &Filming, shot: &flashclip::Shot, still_s: f64) -> String {
    let t = (still_s * f.fps).round() / f.fps;
    let (sx, sy) = shot.shake_at(t);
    let points: Vec<Value> = flashclip::camera(f)
        .iter()
        .map(|r| json!({"px": r.px + sx, "py": r.py + sy, "x": r.x, "y": r.y}))
        .collect();
    serde_json::to_string(&points).unwrap()
}

async fn send_clip(
    app: &TestApp,
    token: &str,
    scene: Uuid,
    session: &str,
    points: &str,
    still_s: Option<f64>,
    bytes: Vec<u8>,
) -> (StatusCode, Value) {
    let mut form = reqwest::multipart::Form::new()
        .text("session_id", session.to_owned())
        .text("points", points.to_owned());
    if let Some(s) = still_s {
        form = form.text("still_at_s", s.to_string());
    }
    form = form.part(
        "video",
        reqwest::multipart::Part::bytes(bytes)
            .file_name("crowd.mp4")
            .mime_str("video/mp4")
            .unwrap(),
    );
    let resp = app
        .client
        .post(app.url(&format!("/api/scenes/{scene}/videos")))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .expect("clip sent");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The scene's located pixels: id → (x, y).
/// A clip's answer in a line: its counts, and how many detections had each status (the whole
/// answer lists every blob: thousands of lines).
fn summary(result: &Value) -> String {
    let mut statuses = std::collections::BTreeMap::<String, usize>::new();
    for d in result["detections"].as_array().into_iter().flatten() {
        *statuses
            .entry(d["status"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    format!(
        "located {}, recorded {}, rejected {}, unreadable {} of {} blobs; statuses {statuses:?}",
        result["located"],
        result["recorded"],
        result["rejected"],
        result["unreadable"],
        result["blobs"]
    )
}

async fn located(
    app: &TestApp,
    token: &str,
    scene: Uuid,
) -> std::collections::HashMap<String, (f64, f64)> {
    let mut out = std::collections::HashMap::new();
    for page in 1..=10 {
        let (status, body) = app
            .call(
                Method::GET,
                &format!("/api/scenes/{scene}/pixels?status=located&per_page=200&page={page}"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let items = body["items"].as_array().unwrap();
        for p in items {
            out.insert(
                p["pixel_id"].as_str().unwrap().to_owned(),
                (p["x"].as_f64().unwrap(), p["y"].as_f64().unwrap()),
            );
        }
        if items.len() < 200 {
            break;
        }
    }
    out
}

#[tokio::test]
async fn a_crowd_flashing_its_codes_is_placed_from_one_clip() {
    let app = spawn_app().await;
    let (op, scene) = flash_scene(&app).await;
    const N: usize = 150;
    let mut phones = Vec::with_capacity(N);
    for _ in 0..N {
        phones.push(Phone::join(&app, scene, None).await);
    }
    // a first session whose codes some decoys will flash in the second one's clip
    let (status, decoy) = start_session(&app, &op, scene, json!({"start_in_ms": 1000})).await;
    assert_eq!(status, StatusCode::CREATED, "{decoy}");
    let decoy_codes = flash_messages(&mut phones, decoy["session_id"].as_str().unwrap()).await;
    let (status, session) = start_session(&app, &op, scene, json!({"start_in_ms": 1500})).await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    assert_eq!(session["phones"], N, "every phone got a code: {session}");
    let session_id = session["session_id"].as_str().unwrap().to_owned();
    let codes = flash_messages(&mut phones, &session_id).await;
    // every phone its own code, shaped as docs/flash.md says
    let distinct: std::collections::HashSet<&str> =
        codes.iter().map(|m| m["slots"].as_str().unwrap()).collect();
    assert_eq!(distinct.len(), N);
    for m in &codes {
        let s = m["slots"].as_str().unwrap();
        assert_eq!(s.len(), code::SLOTS);
        assert!(s.starts_with("01110010") && s.ends_with('0'), "{s}");
        assert_eq!(m["starts_at_us"], session["starts_at_us"]);
    }

    // the phones stay connected while the clip is drawn and read (answering pings), and
    // each waits to be told where it is
    let pixel_ids: Vec<Uuid> = phones.iter().map(Phone::pixel_id).collect();
    let told: Vec<_> = phones
        .into_iter()
        .map(|mut phone| {
            tokio::spawn(async move {
                use futures::StreamExt;
                let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
                while let Ok(Some(Ok(msg))) =
                    tokio::time::timeout_at(deadline, phone.socket.next()).await
                {
                    if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
                        let msg: Value = serde_json::from_str(t.as_str()).unwrap();
                        if msg["type"] == "located" {
                            return true;
                        }
                    }
                }
                false
            })
        })
        .collect();
    let symbol_s = session["symbol_us"].as_f64().unwrap() / 1e6;
    let f = filming(symbol_s, 11);
    let (places, spacing) = flashclip::layout(N, SCENE_W, SCENE_H, 5);
    let mut all_places = places.clone();
    let mut all_slots: Vec<Option<Vec<bool>>> = codes.iter().map(|m| Some(slots_of(m))).collect();
    // decoys at the scene's edge: three phones' codes of the other session, and a made-up one
    for (i, decoy) in decoy_codes.iter().take(3).enumerate() {
        all_places.push((20.0 + 30.0 * i as f64, SCENE_H - 1.0));
        all_slots.push(Some(slots_of(decoy)));
    }
    all_places.push((95.0, SCENE_H - 1.0));
    all_slots.push(Some(code::slots(123_456_789).to_vec()));
    let shot = flashclip::crowd(&f, &all_places, &all_slots);
    let clip = encode(&shot);
    until_over(&session).await;

    let still_s = f.margin_s + code::SLOTS as f64 * symbol_s / 2.0;
    let points = points_at(&f, &shot, still_s);
    let bytes = std::fs::read(&clip.0).unwrap();
    let (status, result) =
        send_clip(&app, &op, scene, &session_id, &points, Some(still_s), bytes).await;
    assert_eq!(status, StatusCode::OK, "{result}");
    eprintln!(
        "{N} phones: {} located, {} rejected, {} unreadable of {} blobs; decode {:.2} s, analysis {:.2} s",
        result["located"], result["rejected"], result["unreadable"], result["blobs"],
        result["seconds"]["decode_s"].as_f64().unwrap(), result["seconds"]["analyze_s"].as_f64().unwrap()
    );
    assert_eq!(
        result["located"],
        N,
        "every phone is placed: {}",
        summary(&result)
    );
    let unknown = result["detections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["status"] == "unknown_code")
        .count();
    assert_eq!(
        unknown, 4,
        "the other session's codes and the made-up one place nobody"
    );

    // each where it stands, within a quarter of the spacing; nobody else placed
    let now = located(&app, &op, scene).await;
    assert_eq!(now.len(), N);
    for (pixel, &(x, y)) in pixel_ids.iter().zip(&places) {
        let (px, py) = now[&pixel.to_string()];
        let error = ((px - x).powi(2) + (py - y).powi(2)).sqrt();
        assert!(
            error < spacing / 4.0,
            "{pixel}: at ({px:.2}, {py:.2}), stands at ({x:.2}, {y:.2})"
        );
    }
    // and each phone is told where it is
    for t in told {
        assert!(t.await.unwrap(), "a phone was told where it is");
    }
}

#[tokio::test]
async fn bad_clips_and_sessions_get_their_error_and_place_nobody() {
    let app = spawn_app_with(crate::helpers::shared_mongodb_url(), |c| {
        c.max_video_bytes = 4 << 20;
        c.max_video_seconds = 8.0;
    })
    .await;
    let (op, scene) = flash_scene(&app).await;
    let _phone = Phone::join(&app, scene, None).await;
    let (status, session) = start_session(&app, &op, scene, json!({"start_in_ms": 1000})).await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let id = session["session_id"].as_str().unwrap().to_owned();
    let good_points = r#"[{"px":0,"py":0,"x":0,"y":0},{"px":100,"py":0,"x":100,"y":0},{"px":100,"py":60,"x":100,"y":60},{"px":0,"py":60,"x":0,"y":60}]"#;
    let tiny = testsrc("160x120", 2.0);

    // a session still running
    let (status, body) = send_clip(&app, &op, scene, &id, good_points, None, tiny.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    until_over(&session).await;

    // sessions that are not (any more) this scene's
    let (status, _) = send_clip(
        &app,
        &op,
        scene,
        &Uuid::new_v4().to_string(),
        good_points,
        None,
        tiny.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (op2, other) = {
        let (status, body) = app
            .call(
                Method::POST,
                "/api/scenes",
                Some(&op),
                Some(json!({"name": "Other", "width": 10, "height": 10, "location_methods": ["flash"]})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (
            op.clone(),
            body["scene_id"].as_str().unwrap().parse::<Uuid>().unwrap(),
        )
    };
    let (status, body) = send_clip(&app, &op2, other, &id, good_points, None, tiny.clone()).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "another scene's session: {body}"
    );
    let old: Uuid = sqlx::query_scalar(
        "insert into flash_session (scene_id, unlocated_only, starts_at_us, symbol_us, slots)
         values ($1, false, $2, 66667, 63) returning flash_session_id",
    )
    .bind(scene)
    .bind(c3s::clock::now_us() - 3 * 3600 * 1_000_000)
    .fetch_one(&app.db)
    .await
    .unwrap();
    let (status, body) = send_clip(
        &app,
        &op,
        scene,
        &old.to_string(),
        good_points,
        None,
        tiny.clone(),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::GONE, Some("gone")),
        "{body}"
    );

    // reference points
    let (status, body) = send_clip(
        &app,
        &op,
        scene,
        &id,
        r#"[{"px":0,"py":0,"x":0,"y":0}]"#,
        None,
        tiny.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let collinear = r#"[{"px":0,"py":0,"x":0,"y":0},{"px":1,"py":1,"x":1,"y":1},{"px":2,"py":2,"x":2,"y":2},{"px":3,"py":3,"x":3,"y":3}]"#;
    let (status, body) = send_clip(&app, &op, scene, &id, collinear, None, tiny.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // files that are not clips of the session
    for (what, bytes, want, code) in [
        (
            "text",
            b"not a video at all".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "noise",
            (0..200_000u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "too long",
            testsrc("160x120", 12.0),
            StatusCode::UNPROCESSABLE_ENTITY,
            "video_too_long",
        ),
        (
            "too large",
            testsrc("4400x2400", 0.2),
            StatusCode::UNPROCESSABLE_ENTITY,
            "video_too_large",
        ),
        (
            "too many bytes",
            vec![7u8; 5 << 20],
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "no phones",
            lavfi("color=c=0x404040:size=320x240:rate=10:duration=6"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_phones_in_clip",
        ),
        (
            "something else",
            testsrc("320x240", 6.0),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_session_in_clip",
        ),
        (
            "too short",
            tiny.clone(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "clip_too_short",
        ),
    ] {
        let (status, body) = send_clip(&app, &op, scene, &id, good_points, None, bytes).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (want, Some(code)),
            "{what}: {body}"
        );
    }
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/api/scenes/{scene}/videos"),
            Some(&op),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "not a form: {body}");

    // a scene that does not locate by flashing has no sessions
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/api/scenes/{scene}"),
            Some(&op),
            Some(json!({"location_methods": ["seat"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = start_session(&app, &op, scene, json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = start_session(&app, &op, other, json!({"symbol_ms": 5})).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a slot of 5 ms: {body}"
    );

    let observed: i64 = sqlx::query_scalar("select count(*) from observation")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(observed, 0, "nothing was placed");
}

/// A test pattern clip made by FFmpeg, as MP4 bytes.
fn testsrc(size: &str, seconds: f64) -> Vec<u8> {
    lavfi(&format!("testsrc=size={size}:rate=10:duration={seconds}"))
}

/// A clip of an FFmpeg source filter, as MP4 bytes.
fn lavfi(source: &str) -> Vec<u8> {
    let path = tempfile_path::TempPath::new("mp4");
    let status = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg(source)
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ])
        .arg(&path.0)
        .status()
        .expect("ffmpeg runs");
    assert!(status.success());
    std::fs::read(&path.0).unwrap()
}

#[tokio::test]
async fn phones_on_two_nodes_flash_one_session_and_one_clip_places_them_all() {
    let config = node_config().await;
    let a = Node::start(&config).await;
    let b = Node::start(&config).await;
    let (op, scene) = flash_scene(&a.app).await;
    let mut phones = Vec::new();
    for i in 0..40 {
        let node = if i % 2 == 0 { &a } else { &b };
        phones.push(Phone::join(&node.app, scene, None).await);
    }
    // every node is up and has said so (heartbeats every 2 s)
    until_nodes(&a.app, 2).await;
    let (status, session) = start_session(&a.app, &op, scene, json!({"start_in_ms": 1500})).await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    assert_eq!(
        session["phones"], 40,
        "phones on both nodes got codes: {session}"
    );
    let id = session["session_id"].as_str().unwrap().to_owned();
    let codes = flash_messages(&mut phones, &id).await;
    let distinct: std::collections::HashSet<&str> =
        codes.iter().map(|m| m["slots"].as_str().unwrap()).collect();
    assert_eq!(
        distinct.len(),
        40,
        "one session's codes are distinct over the nodes"
    );

    until_over(&session).await;

    // a second session, filmed as a phone's camera may send it: VP8 in WebM, one frame in
    // seven dropped (the frames left keep their own times); both sessions are flashed before
    // either clip is made or read (the test's phones answer no pings meanwhile, and encoding
    // in a debug build on a busy machine takes a while)
    let (status, second) = start_session(&a.app, &op, scene, json!({"start_in_ms": 1500})).await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    let second_id = second["session_id"].as_str().unwrap().to_owned();
    let second_codes = flash_messages(&mut phones, &second_id).await;
    until_over(&second).await;

    let symbol_s = session["symbol_us"].as_f64().unwrap() / 1e6;
    let f = filming(symbol_s, 21);
    let (places, spacing) = flashclip::layout(40, SCENE_W, SCENE_H, 8);
    let slots: Vec<Option<Vec<bool>>> = codes.iter().map(|m| Some(slots_of(m))).collect();
    let shot = flashclip::crowd(&f, &places, &slots);
    let clip = encode(&shot);
    let still_s = f.margin_s + code::SLOTS as f64 * symbol_s / 2.0;
    let points = points_at(&f, &shot, still_s);
    let second_f = filming(symbol_s, 22);
    let second_slots: Vec<Option<Vec<bool>>> =
        second_codes.iter().map(|m| Some(slots_of(m))).collect();
    let second_shot = flashclip::crowd(&second_f, &places, &second_slots);
    let second_clip = tempfile_path::TempPath::new("webm");
    second_shot
        .encode(
            &second_clip.0,
            &[
                "-vf",
                "select='not(eq(mod(n\\,7)\\,3))'",
                "-fps_mode",
                "passthrough",
                "-c:v",
                "libvpx",
                "-b:v",
                "6M",
                "-deadline",
                "realtime",
                "-cpu-used",
                "8",
            ],
        )
        .expect("the clip encodes");
    let second_points = points_at(&second_f, &second_shot, still_s);

    // the first clip goes to node B: every phone placed where it stands
    let (status, result) = send_clip(
        &b.app,
        &op,
        scene,
        &id,
        &points,
        Some(still_s),
        std::fs::read(&clip.0).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert_eq!(result["located"], 40, "{}", summary(&result));
    let now = located(&a.app, &op, scene).await;
    for (phone, &(x, y)) in phones.iter().zip(&places) {
        let (px, py) = now[&phone.pixel_id().to_string()];
        assert!(((px - x).powi(2) + (py - y).powi(2)).sqrt() < spacing / 4.0);
    }

    // the second to node A: dropped frames and VP8 may leave some phones unclear, but none
    // is placed anywhere but where it stands
    let (status, result) = send_clip(
        &a.app,
        &op,
        scene,
        &second_id,
        &second_points,
        Some(still_s),
        std::fs::read(&second_clip.0).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{result}");
    let place_of: std::collections::HashMap<String, (f64, f64)> = phones
        .iter()
        .zip(&places)
        .map(|(phone, &p)| (phone.pixel_id().to_string(), p))
        .collect();
    for d in result["detections"].as_array().unwrap() {
        if d["status"] != "located" {
            continue;
        }
        let (x, y) = place_of[d["pixel_id"].as_str().unwrap()];
        let (sx, sy) = (
            d["scene"][0].as_f64().unwrap(),
            d["scene"][1].as_f64().unwrap(),
        );
        let off = ((sx - x).powi(2) + (sy - y).powi(2)).sqrt();
        assert!(
            off < spacing / 4.0,
            "placed {off} from where it stands: {d}"
        );
    }
    // (measured: 35 to 39 of the 40; the rest unclear, none misplaced)
    assert!(
        result["located"].as_u64().unwrap() >= 30,
        "{}",
        summary(&result)
    );
}
