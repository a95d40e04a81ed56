//! Phones over real WebSockets: join, resume, kick, bad messages, and shows played to them.

use secrecy::ExposeSecret;
use std::time::Duration;

use c3s::clock;
use futures::SinkExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::helpers::{spawn_app, spawn_app_with, TestApp};
use crate::images;
use crate::phone::{colour_at, ended, next_json, open, refused_code, Ended, Phone};

const RED: [u8; 3] = [255, 0, 0];
const GREEN: [u8; 3] = [0, 255, 0];
const BLUE: [u8; 3] = [0, 0, 255];
const WHITE: [u8; 3] = [255, 255, 255];
const IDLE: [u8; 3] = [0x10, 0x20, 0x30];

/// An open 2 × 1 scene whose show (looping or not) has two 2 × 1 frames of `frame_ms`:
/// A = red | green, B = blue | white. Returns (operator token, scene).
pub(crate) async fn two_frame_scene(app: &TestApp, looped: bool, frame_ms: u32) -> (String, Uuid) {
    let (op, _) = app.register("oper").await;
    let (status, scene) = app
        .call(
            Method::POST,
            "/api/scenes",
            Some(&op),
            Some(json!({
            "name": "Realtime", "width": 2.0, "height": 1.0, "idle_color": "#102030"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let scene: Uuid = scene["scene_id"].as_str().unwrap().parse().unwrap();
    app.open_scene(&op, scene).await;
    for colours in [[RED, GREEN], [BLUE, WHITE]] {
        let (status, body) = app
            .upload(
                &op,
                scene,
                "image/png",
                images::png_of(2, 1, &colours),
                &format!("?duration_ms={frame_ms}"),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    app.build_show(&op, scene, looped).await;
    (op, scene)
}

pub(crate) async fn command(app: &TestApp, op: &str, scene: Uuid, body: Value) -> Value {
    let (status, resp) = app
        .call(
            Method::POST,
            &format!("/api/scenes/{scene}/playback"),
            Some(op),
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}: {resp}");
    resp
}

/// Reads chunks until those of the newest version seen cover up to `until_ms` (server time).
async fn chunks_until(phone: &mut Phone, until_ms: i64) -> Vec<c3s::dataplane::chunk::Chunk> {
    chunks_of_version_until(phone, 0, until_ms).await
}

/// Reads chunks until one of at least `version` reaches `until_ms`.
async fn chunks_of_version_until(
    phone: &mut Phone,
    version: i64,
    until_ms: i64,
) -> Vec<c3s::dataplane::chunk::Chunk> {
    let mut chunks = Vec::new();
    loop {
        let c = phone.next_chunk(Duration::from_secs(10)).await;
        let done =
            i64::from(c.version) >= version && c.start_ms + i64::from(c.length_ms) >= until_ms;
        chunks.push(c);
        if done {
            return chunks;
        }
    }
}

#[tokio::test]
async fn join_resume_and_kick() {
    let app = spawn_app().await;
    let (op, scene) = two_frame_scene(&app, true, 100).await;
    let phone = Phone::join(&app, scene, None).await;
    let token = phone
        .token()
        .expect("a new phone gets a device token")
        .to_owned();
    let pixel = phone.pixel_id();
    assert!(phone.welcome["position"].is_null());
    assert_eq!(phone.welcome["scene"]["idle_color"], "#102030");
    drop(phone);

    app.place(&op, scene, pixel, 1.5, 0.5).await;
    let mut again = Phone::join(&app, scene, Some(&token)).await;
    assert_eq!(
        again.pixel_id(),
        pixel,
        "the same token resumes the same pixel"
    );
    assert!(again.token().is_none(), "no new token for a known phone");
    assert_eq!(again.welcome["position"], json!({"x": 1.5, "y": 0.5}));

    // presence sees it
    let (_, presence) = app
        .call(
            Method::GET,
            &format!("/api/scenes/{scene}/presence"),
            Some(&op),
            None,
        )
        .await;
    assert_eq!(presence["connected"], 1, "{presence}");
    assert_eq!(presence["located"], 1);

    let (status, _) = app
        .call(
            Method::POST,
            &format!("/api/scenes/{scene}/pixels/{pixel}/kick"),
            Some(&op),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        again.ended(Duration::from_secs(5)).await,
        Ended::Closed(4003, "removed from the scene".into())
    );
    assert_eq!(refused_code(&app, scene, Some(&token)).await, 4003);
}

#[tokio::test]
async fn bad_messages_get_close_reasons() {
    let app = spawn_app().await;
    let (op, scene) = two_frame_scene(&app, true, 100).await;
    let cases: Vec<(Message, u16)> = vec![
        (Message::text("{not json"), 4000),
        (
            Message::text(json!({"type": "sync", "t0": 1}).to_string()),
            4001,
        ),
        (
            Message::text(json!({"type": "hello", "protocol": 99}).to_string()),
            4002,
        ),
        (Message::binary(vec![1u8, 2, 3]), 4000),
        (Message::text("x".repeat(10_000)), 1009),
    ];
    for (msg, code) in cases {
        let mut socket = open(&app, scene).await;
        let _ = socket.send(msg.clone()).await;
        match ended(&mut socket, Duration::from_secs(5)).await {
            Ended::Closed(got, reason) => {
                assert_eq!(got, code, "{msg:?}: {reason}");
                assert!(!reason.is_empty());
            }
            Ended::Dropped => panic!("{msg:?}: dropped without a reason"),
        }
    }
    // after a good hello: malformed, binary and repeated hello
    for (msg, code) in [
        (Message::text("[]"), 4000),
        (Message::binary(vec![0u8; 4]), 4000),
        (
            Message::text(json!({"type": "hello", "protocol": 1}).to_string()),
            4000,
        ),
        (Message::text(json!({"type": "sync"}).to_string()), 4000),
    ] {
        let mut phone = Phone::join(&app, scene, None).await;
        phone.socket.send(msg.clone()).await.unwrap();
        assert!(
            matches!(phone.ended(Duration::from_secs(5)).await, Ended::Closed(c, _) if c == code),
            "{msg:?}"
        );
    }
    // a draft or unknown scene cannot be joined
    let draft = app.create_scene(&op, "Draft").await;
    for id in [draft, Uuid::new_v4()] {
        assert_eq!(refused_code(&app, id, None).await, 4004);
    }
    // the server is still fine
    let phone = Phone::join(&app, scene, None).await;
    assert_eq!(phone.welcome["type"], "welcome");
}

#[tokio::test]
async fn clock_sync_replies_stamp_server_time() {
    let app = spawn_app().await;
    let (_, scene) = two_frame_scene(&app, true, 100).await;
    let mut phone = Phone::join(&app, scene, None).await;
    let before = clock::now_us();
    phone
        .socket
        .send(Message::text(
            json!({"type": "sync", "t0": 123.25}).to_string(),
        ))
        .await
        .unwrap();
    let reply = next_json(&mut phone.socket).await;
    let after = clock::now_us();
    assert_eq!(reply["type"], "sync");
    assert_eq!(reply["t0"], 123.25);
    let (t1, t2) = (reply["t1"].as_i64().unwrap(), reply["t2"].as_i64().unwrap());
    assert!(
        before <= t1 && t1 <= t2 && t2 <= after,
        "{before} {t1} {t2} {after}"
    );
    phone
        .socket
        .send(Message::text(
            json!({"type": "sync_report", "offset_ms": 0.1, "error_ms": 0.4}).to_string(),
        ))
        .await
        .unwrap();
    // the server keeps the reported quality: the operator sees the phone synced
    let (op, _) = app.register("watcher").await;
    let _ = op;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, p) = app
            .call(
                Method::GET,
                &format!("/api/scenes/{scene}/presence"),
                Some(&app.admin_token),
                None,
            )
            .await;
        if p["synced"] == 1 {
            assert_eq!(p["sync_error_histogram"][0]["count"], 1, "{p}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "sync report not seen: {p}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two phones at either end of the scene receive exactly the frames' colours at exactly the
/// show's instants, ahead of time.
#[tokio::test]
async fn a_show_plays_the_right_colours_at_the_right_instants() {
    let app = spawn_app().await;
    let (op, scene) = two_frame_scene(&app, true, 100).await;
    let mut left = Phone::join(&app, scene, None).await;
    let mut right = Phone::join(&app, scene, None).await;
    app.place(&op, scene, left.pixel_id(), 0.5, 0.5).await;
    app.place(&op, scene, right.pixel_id(), 1.5, 0.5).await;

    let state = command(
        &app,
        &op,
        scene,
        json!({"command": "play", "start_in_ms": 1000}),
    )
    .await;
    let t0 = state["timeline"]["current"]["anchor_ms"].as_i64().unwrap();
    let version = state["timeline"]["version"].as_u64().unwrap() as u32;

    for (phone, a, b) in [(&mut left, RED, BLUE), (&mut right, GREEN, WHITE)] {
        let mut chunks = Vec::new();
        loop {
            let c = phone.next_chunk(Duration::from_secs(10)).await;
            let arrived = clock::now_ms();
            // every colour of the show reaches the phone before its instant (this test shares
            // the server's clock)
            for (at, _) in c.entries.iter().filter(|(at, _)| *at >= t0) {
                assert!(
                    arrived <= *at,
                    "a colour for {at} arrived late, at {arrived}"
                );
            }
            let done = c.version == version && c.start_ms + i64::from(c.length_ms) >= t0 + 450;
            chunks.push(c);
            if done {
                break;
            }
        }
        let played: Vec<_> = chunks.iter().filter(|c| c.version == version).collect();
        assert!(!played.is_empty());
        let chunks: Vec<_> = played.into_iter().cloned().collect();
        assert_eq!(
            colour_at(&chunks, t0 - 1),
            Some(IDLE),
            "idle before the start"
        );
        for (t, expected) in [
            (t0, a),
            (t0 + 99, a),
            (t0 + 100, b),
            (t0 + 199, b),
            (t0 + 200, a),
            (t0 + 399, b),
        ] {
            assert_eq!(colour_at(&chunks, t), Some(expected), "at t0 + {}", t - t0);
        }
        // changes are at exactly the frame boundaries
        let changes: Vec<i64> = chunks
            .iter()
            .flat_map(|c| c.entries.iter().skip(1).map(|(at, _)| at - t0))
            .filter(|d| (0..400).contains(d))
            .collect();
        assert!(changes.iter().all(|d| d % 100 == 0), "{changes:?}");
    }
}

#[tokio::test]
async fn pause_seek_and_stop_make_new_versions() {
    let app = spawn_app().await;
    let (op, scene) = two_frame_scene(&app, true, 100).await;
    let mut phone = Phone::join(&app, scene, None).await;
    app.place(&op, scene, phone.pixel_id(), 0.5, 0.5).await;
    let play = command(
        &app,
        &op,
        scene,
        json!({"command": "play", "start_in_ms": 1000}),
    )
    .await;
    let v1 = play["timeline"]["version"].as_i64().unwrap();
    let t0 = play["timeline"]["current"]["anchor_ms"].as_i64().unwrap();

    // pause 150 ms into the show: frame B held
    let pause_at = t0 + 150;
    let wait = pause_at - 300 - clock::now_ms();
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
    let in_ms = pause_at - clock::now_ms();
    let paused = command(
        &app,
        &op,
        scene,
        json!({"command": "pause", "in_ms": in_ms}),
    )
    .await;
    let v2 = paused["timeline"]["version"].as_i64().unwrap();
    assert_eq!(v2, v1 + 1);
    let at = paused["timeline"]["current"]["effective_ms"]
        .as_i64()
        .unwrap();
    let chunks = chunks_of_version_until(&mut phone, v2, at + 1000).await;
    assert_eq!(colour_at(&chunks, at + 900), Some(BLUE), "held on frame B");

    let sought = command(
        &app,
        &op,
        scene,
        json!({"command": "seek", "position_ms": 30, "in_ms": 300}),
    )
    .await;
    let v3 = sought["timeline"]["version"].as_i64().unwrap();
    let at3 = sought["timeline"]["current"]["effective_ms"]
        .as_i64()
        .unwrap();
    let chunks = chunks_of_version_until(&mut phone, v3, at3 + 600).await;
    assert_eq!(
        colour_at(&chunks, at3 + 500),
        Some(RED),
        "paused, now on frame A"
    );

    let stopped = command(&app, &op, scene, json!({"command": "stop", "in_ms": 200})).await;
    let at4 = stopped["timeline"]["current"]["effective_ms"]
        .as_i64()
        .unwrap();
    // the stop's catch-up ends in idle, and no chunk of it says otherwise after the stop
    let chunks = chunks_of_version_until(&mut phone, v3 + 1, at4).await;
    let last = chunks.last().unwrap();
    assert_eq!(i64::from(last.version), v3 + 1);
    assert_eq!(last.entries.last().unwrap().1, IDLE);
    assert!(last.entries.last().unwrap().0 <= at4);

    // bad commands
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/api/scenes/{scene}/playback"),
            Some(&op),
            Some(json!({"command": "play", "start_in_ms": 10})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/api/scenes/{scene}/playback"),
            Some(&op),
            Some(json!({"command": "resume"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/api/scenes/{scene}/playback"),
            Some(&op),
            Some(json!({"command": "seek", "position_ms": 5000})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (stranger, _) = app.register("stranger").await;
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/api/scenes/{scene}/playback"),
            Some(&stranger),
            Some(json!({"command": "stop"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

/// A server restarted mid-show resumes at the right frame at the right instant.
#[tokio::test]
async fn a_restarted_server_resumes_the_show() {
    let app = spawn_app().await;
    let (op, scene) = two_frame_scene(&app, true, 100).await;
    let phone = Phone::join(&app, scene, None).await;
    let token = phone.token().unwrap().to_owned();
    app.place(&op, scene, phone.pixel_id(), 1.5, 0.5).await;
    let play = command(
        &app,
        &op,
        scene,
        json!({"command": "play", "start_in_ms": 1000}),
    )
    .await;
    let t0 = play["timeline"]["current"]["anchor_ms"].as_i64().unwrap();
    drop(phone);
    // restart once the show is under way
    tokio::time::sleep(Duration::from_millis(
        (t0 + 300 - clock::now_ms()).max(0) as u64
    ))
    .await;

    // a second server on the same databases, the first one stopped
    let config = app.config.clone();
    drop(app);
    let restarted = spawn_app_with(config.mongodb_url.expose_secret().to_owned(), |c| {
        c.database_url = config.database_url.clone();
        c.mongodb_database = config.mongodb_database.clone();
    })
    .await;
    let mut phone = Phone::join(&restarted, scene, Some(&token)).await;
    let now = clock::now_ms();
    let chunks = chunks_until(&mut phone, now + 1000).await;
    // position = now - t0; frames alternate every 100 ms: GREEN on even hundreds, WHITE on odd
    for probe in [now + 250, now + 550, now + 850] {
        let expected = if ((probe - t0) / 100) % 2 == 0 {
            GREEN
        } else {
            WHITE
        };
        assert_eq!(
            colour_at(&chunks, probe),
            Some(expected),
            "at {} ms into the show",
            probe - t0
        );
    }
}

/// A phone that stops reading is dropped with a reason; the others keep getting their chunks.
///
/// (On several threads, with a queue of 4: on the test's one thread, which the server shares,
/// and a queue of 2, the *fast* phone's socket was closed too in 2 of 4 full runs on a busy
/// machine, most likely its 20 ms of queue overflowing; the slow phone, which never reads,
/// overflows any queue.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_phone_is_dropped_without_delaying_others() {
    let app = spawn_app_with(crate::helpers::shared_mongodb_url(), |c| {
        c.tick_ms = 10;
        c.lookahead_ms = 40;
        c.ws_queue_capacity = 4;
        c.socket_send_buffer = 4096;
        c.min_frame_ms = 1;
    })
    .await;
    let (op, scene) = two_frame_scene(&app, true, 100).await;
    // a show that changes colour every millisecond makes big chunks
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!(
                "/api/scenes/{scene}/frames/{}",
                first_frame(&app, &op, scene).await
            ),
            Some(&op),
            Some(json!({"duration_ms": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.build_show(&op, scene, true).await;

    // the slow phone: a tiny receive buffer, and it never reads
    let url = crate::phone::ws_url(&app, scene);
    let addr: std::net::SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (mut slow, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
    slow.send(Message::text(
        json!({"type": "hello", "protocol": 1}).to_string(),
    ))
    .await
    .unwrap();
    let welcome = next_json(&mut slow).await;
    let slow_pixel: Uuid = welcome["pixel_id"].as_str().unwrap().parse().unwrap();

    let mut fast = Phone::join(&app, scene, None).await;
    app.place(&op, scene, slow_pixel, 0.5, 0.5).await;
    app.place(&op, scene, fast.pixel_id(), 1.5, 0.5).await;
    command(
        &app,
        &op,
        scene,
        json!({"command": "play", "start_in_ms": 1000}),
    )
    .await;

    // the fast phone keeps receiving, never waiting long, until the slow one is gone (it is
    // read on its own task: a presence call between its chunks must not make it the slow one
    // on a busy machine)
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        let mut last = tokio::time::Instant::now();
        let mut worst = Duration::ZERO;
        loop {
            tokio::select! {
                _ = &mut stopped => return (fast, worst),
                _ = fast.next_chunk(Duration::from_secs(2)) => {
                    worst = worst.max(last.elapsed());
                    last = tokio::time::Instant::now();
                }
            }
        }
    });
    let started = tokio::time::Instant::now();
    loop {
        let (_, presence) = app
            .call(
                Method::GET,
                &format!("/api/scenes/{scene}/presence"),
                Some(&op),
                None,
            )
            .await;
        if presence["connected"] == 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "the slow phone was never dropped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(()).unwrap();
    let (_fast, gap) = reader.await.expect("the fast phone kept receiving");
    assert!(
        gap < Duration::from_millis(1000),
        "the fast phone waited {gap:?}"
    );
    // the slow phone, reading at last, finds the reason (or a reset connection)
    match ended(&mut slow, Duration::from_secs(20)).await {
        Ended::Closed(code, _) => assert!(code == 4008 || code == 1001, "closed with {code}"),
        Ended::Dropped => {}
    }
}

async fn first_frame(app: &TestApp, op: &str, scene: Uuid) -> String {
    let (_, frames) = app
        .call(
            Method::GET,
            &format!("/api/scenes/{scene}/frames"),
            Some(op),
            None,
        )
        .await;
    frames[0]["frame_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn ending_a_scene_closes_its_phones_and_shows_keep_their_frames() {
    let app = spawn_app().await;
    let (op, scene) = two_frame_scene(&app, true, 100).await;
    // a frame the show uses cannot be deleted from under it
    let frame = first_frame(&app, &op, scene).await;
    let (status, body) = app
        .call(
            Method::DELETE,
            &format!("/api/scenes/{scene}/frames/{frame}"),
            Some(&op),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    let mut phone = Phone::join(&app, scene, None).await;
    let pixel = phone.pixel_id();
    let (status, body) = app
        .call(Method::POST, &format!("/api/scenes/{scene}/pixels/positions"), Some(&op),
            Some(json!({"positions": [{"pixel_id": pixel, "x": 1, "y": 0.5}, {"pixel_id": pixel, "x": 1.5, "y": 0.5}]})))
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a pixel listed twice: {body}"
    );
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/api/scenes/{scene}"),
            Some(&op),
            Some(json!({"status": "ended"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        phone.ended(Duration::from_secs(5)).await,
        Ended::Closed(4010, "the scene has ended".into())
    );
    assert_eq!(
        refused_code(&app, scene, None).await,
        4010,
        "an ended scene says so to a phone that comes back"
    );
}
