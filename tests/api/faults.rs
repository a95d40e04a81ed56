//! Faults: a store gone or restarted under a running node.

use std::time::{Duration, Instant};

use c3s::clock;
use c3s::dataplane::chunk::Chunk;
use c3s::testkit::PrivatePg;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::helpers::{shared_mongodb_url, spawn_app_with, Secantus};
use crate::images;
use crate::nodes::{assert_plays, chunks_until, command, looping_scene};
use crate::phone::Phone;

/// With the GridFS store gone, an upload gets 503 quickly and PostgreSQL is left untouched;
/// the rest of the API keeps working.
#[tokio::test]
async fn gridfs_down_gives_503_and_writes_nothing() {
    let store = Secantus::start().expect("start a private SecantusDB");
    let app = spawn_app_with(store.url.clone(), |c| c.store_timeout_ms = 1000).await;
    let (op, _) = app.register("oper").await;
    let scene = app.create_scene(&op, "Fragile").await;
    let (status, _) = app
        .upload(&op, scene, "image/png", images::png(8, 8), "")
        .await;
    assert_eq!(status, StatusCode::CREATED);

    drop(store); // ends the process we started, by its PID

    let started = std::time::Instant::now();
    let (status, body) = app
        .upload(&op, scene, "image/png", images::png(9, 9), "")
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "unavailable");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "refused, not hung"
    );
    let rows: i64 = sqlx::query_scalar("select count(*) from frame")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(rows, 1, "no row without bytes");

    let (status, body) = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["gridfs"], "unavailable");
    assert_eq!(body["postgres"], "ok");
    let (status, _) = app
        .call(
            Method::GET,
            &format!("/api/scenes/{scene}"),
            Some(&op),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "the control plane still answers");
}

/// Reads a phone's chunks in the background until one of a version above `past_version`
/// has arrived (or 20 s); returns each with when it arrived.
fn record(mut phone: Phone, past_version: i64) -> JoinHandle<Vec<(Instant, Chunk)>> {
    tokio::spawn(async move {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(Some(Ok(msg))) = tokio::time::timeout(left, phone.socket.next()).await else {
                break;
            };
            if let Message::Binary(bytes) = msg {
                let chunk = c3s::dataplane::chunk::decode(&bytes).expect("a well-formed chunk");
                let newer = i64::from(chunk.version) > past_version;
                got.push((Instant::now(), chunk));
                if newer {
                    break;
                }
            }
        }
        got
    })
}

/// The longest wait between two chunks.
fn longest_gap(got: &[(Instant, Chunk)]) -> Duration {
    got.windows(2)
        .map(|w| w[1].0.duration_since(w[0].0))
        .max()
        .unwrap_or_default()
}

/// A located phone on a scene whose show has started playing (its frames cached):
/// (operator, scene, phone, the play's answer, the chunks it has had).
async fn playing(app: &crate::helpers::TestApp) -> (String, Uuid, Phone, Value, Vec<Chunk>) {
    let (op, scene) = looping_scene(app).await;
    let mut phone = Phone::join(app, scene, None).await;
    app.place(&op, scene, phone.pixel_id(), 1.5, 0.5).await;
    let play = command(
        app,
        &op,
        scene,
        json!({"command": "play", "start_in_ms": 1000}),
    )
    .await;
    let version = play["timeline"]["version"].as_i64().unwrap();
    let t0 = play["timeline"]["current"]["anchor_ms"].as_i64().unwrap();
    let (chunks, _) = chunks_until(&mut phone, version, t0 + 300).await;
    // under way
    tokio::time::sleep(Duration::from_millis(
        (t0 + 300 - clock::now_ms()).max(0) as u64
    ))
    .await;
    (op, scene, phone, play, chunks)
}

/// PostgreSQL (a private cluster) restarted mid-show: phones keep playing from what the node
/// holds, and the node takes commands again once the database is back, without a restart.
#[tokio::test]
async fn postgres_restarted_mid_show_phones_keep_playing_and_the_node_recovers() {
    let pg = PrivatePg::start().expect("a private PostgreSQL");
    let app = spawn_app_with(shared_mongodb_url(), |c| c.database_url = pg.url().into()).await;
    let (op, scene, phone, play, mut chunks) = playing(&app).await;
    let version = play["timeline"]["version"].as_i64().unwrap();
    let recorder = record(phone, version);

    let down_at = clock::now_ms();
    pg.stop().expect("stop PostgreSQL");
    let (status, body) = app
        .call(
            Method::GET,
            &format!("/api/scenes/{scene}/show"),
            Some(&op),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "unavailable");
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg.start_again().expect("start PostgreSQL again");
    let up_at = clock::now_ms();

    let deadline = Instant::now() + Duration::from_secs(30);
    let pause = loop {
        let (status, body) = app
            .call(
                Method::POST,
                &format!("/api/scenes/{scene}/playback"),
                Some(&op),
                Some(json!({"command": "pause", "in_ms": 800})),
            )
            .await;
        if status == StatusCode::OK {
            break body;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(Instant::now() < deadline, "no recovery: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "PostgreSQL down for {} ms; commands taken again {} ms after it was back",
        up_at - down_at,
        clock::now_ms() - up_at
    );
    let got = recorder.await.unwrap();
    chunks.extend(got.iter().map(|(_, c)| c.clone()));
    assert_plays("phone", &chunks, &play["timeline"], down_at, up_at + 500);
    assert!(
        got.last().is_some_and(
            |(_, c)| i64::from(c.version) >= pause["timeline"]["version"].as_i64().unwrap()
        ),
        "the pause reached the phone"
    );
    eprintln!(
        "longest wait between chunks while PostgreSQL restarted: {} ms",
        longest_gap(&got).as_millis()
    );
    let (status, _) = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK);
}

/// The GridFS store gone mid-show: the frames already cached keep playing; uploads get 503.
#[tokio::test]
async fn gridfs_down_mid_show_keeps_cached_frames_playing() {
    let store = Secantus::start().expect("start a private SecantusDB");
    let app = spawn_app_with(store.url.clone(), |c| c.store_timeout_ms = 1000).await;
    let (op, scene, phone, play, mut chunks) = playing(&app).await;
    let down_at = clock::now_ms();
    drop(store); // ends the process we started, by its PID
    let (status, body) = app
        .upload(&op, scene, "image/png", images::png(9, 9), "")
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    // keep listening for 3 s of show after the store went
    let version = play["timeline"]["version"].as_i64().unwrap();
    let recorder = record(phone, version);
    tokio::time::sleep(Duration::from_millis(
        (down_at + 3000 - clock::now_ms()).max(0) as u64,
    ))
    .await;
    command(&app, &op, scene, json!({"command": "stop"})).await;
    let got = recorder.await.unwrap();
    chunks.extend(got.iter().map(|(_, c)| c.clone()));
    assert_plays("phone", &chunks, &play["timeline"], down_at, down_at + 3000);
    eprintln!(
        "longest wait between chunks with GridFS down: {} ms",
        longest_gap(&got).as_millis()
    );
}
