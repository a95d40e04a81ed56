//! The scene event log: append throughput, and how long a command on one node takes to reach
//! another node's hub and a phone on that node.
//!
//! `scripts/bench log` (or `cargo bench --bench log` with the environment of `scripts/test`).
//! Two nodes (two `App`s, each with its own pool, listener, hub and scheduler) share one
//! PostgreSQL database, as separate processes would; the phone is a real WebSocket client on
//! node B; commands are HTTP calls to node A. Prints one JSON line per measurement and a final
//! summary line.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use c3s::app::{App, AppState};
use c3s::config::Config;
use c3s::events::SceneEvent;
use c3s::store::events as log;
use c3s::testkit::{fresh_database, shared_mongodb_url};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const WRITERS: usize = 8;
const EVENTS_PER_WRITER: usize = 400;
const BATCHES: usize = 20;
const BATCH: usize = 500;
const COMMANDS: usize = 200;
/// Phones placed at once on one scene, and requests in flight at a time.
const RUSH: usize = 2000;
const RUSH_CONCURRENCY: usize = 128;

fn kicked() -> SceneEvent {
    SceneEvent::PixelKicked {
        pixel_id: Uuid::new_v4(),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    (sorted[i] * 100.0).round() / 100.0
}

fn summary(mut ms: Vec<f64>) -> Value {
    ms.sort_by(f64::total_cmp);
    json!({"p50_ms": percentile(&ms, 0.5), "p99_ms": percentile(&ms, 0.99), "max_ms": percentile(&ms, 1.0), "n": ms.len()})
}

/// Events per second with `WRITERS` tasks appending one event per transaction, each to its own
/// scene (`shared` false) or all to one scene.
async fn append_rate(db: &sqlx::PgPool, shared: bool) -> anyhow::Result<f64> {
    let one = Uuid::new_v4();
    let started = Instant::now();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|_| {
            let db = db.clone();
            let scene = if shared { one } else { Uuid::new_v4() };
            tokio::spawn(async move {
                for _ in 0..EVENTS_PER_WRITER {
                    let mut tx = db.begin().await?;
                    log::append_at_head(&mut tx, scene, &[kicked()], None).await?;
                    tx.commit().await?;
                }
                Ok::<_, sqlx::Error>(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok((WRITERS * EVENTS_PER_WRITER) as f64 / started.elapsed().as_secs_f64())
}

async fn node(config: &Config) -> anyhow::Result<(String, AppState, CancellationToken)> {
    let app = App::build(config.clone()).await?;
    let base = format!("http://{}", app.local_addr());
    let state = app.state().clone();
    let stop = CancellationToken::new();
    tokio::spawn(app.run(stop.clone()));
    Ok((base, state, stop))
}

fn png() -> Vec<u8> {
    let img = image::RgbImage::from_fn(2, 1, |x, _| image::Rgb([x as u8 * 255, 0, 0]));
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
        .expect("png");
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = Config::for_tests(
        fresh_database().await?,
        shared_mongodb_url(),
        format!("c3s_bench_{}", Uuid::new_v4().simple()),
    );
    config.bootstrap_admin = Some("benchadmin:bench-password".into());
    let (base_a, state_a, stop_a) = node(&config).await?;
    let (base_b, state_b, stop_b) = node(&config).await?;
    let db = state_a.db.clone();

    // append throughput
    let parallel = append_rate(&db, false).await?;
    println!(
        "{}",
        json!({"bench": "log", "case": "append, 8 writers, 8 scenes, 1 event per transaction", "events_per_s": parallel.round()})
    );
    let contended = append_rate(&db, true).await?;
    println!(
        "{}",
        json!({"bench": "log", "case": "append, 8 writers, 1 scene, 1 event per transaction", "events_per_s": contended.round()})
    );
    let scene = Uuid::new_v4();
    let started = Instant::now();
    for _ in 0..BATCHES {
        let mut tx = db.begin().await?;
        let batch: Vec<SceneEvent> = (0..BATCH).map(|_| kicked()).collect();
        log::append_at_head(&mut tx, scene, &batch, None).await?;
        tx.commit().await?;
    }
    let batched = (BATCHES * BATCH) as f64 / started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"bench": "log", "case": "append, 1 writer, 500 events per transaction", "events_per_s": batched.round()})
    );

    // a scene with a show, a phone on node B
    let client = reqwest::Client::new();
    let login: Value = client
        .post(format!("{base_a}/api/auth/login"))
        .json(&json!({"login": "benchadmin", "password": "bench-password"}))
        .send()
        .await?
        .json()
        .await?;
    let token = login["token"].as_str().unwrap_or_default().to_owned();
    let call = |method: reqwest::Method, path: String, body: Option<Value>| {
        let mut req = client
            .request(method, format!("{base_a}{path}"))
            .bearer_auth(&token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send()
    };
    let scene: Value = call(
        reqwest::Method::POST,
        "/api/scenes".into(),
        Some(json!({"name": "bench", "width": 2.0, "height": 1.0})),
    )
    .await?
    .json()
    .await?;
    let scene_id: Uuid = scene["scene_id"].as_str().unwrap_or_default().parse()?;
    call(
        reqwest::Method::PATCH,
        format!("/api/scenes/{scene_id}"),
        Some(json!({"status": "open"})),
    )
    .await?
    .error_for_status()?;
    client
        .post(format!(
            "{base_a}/api/scenes/{scene_id}/frames?duration_ms=100"
        ))
        .bearer_auth(&token)
        .header("content-type", "image/png")
        .body(png())
        .send()
        .await?
        .error_for_status()?;
    call(
        reqwest::Method::PUT,
        format!("/api/scenes/{scene_id}/show"),
        Some(json!({"loop": true})),
    )
    .await?
    .error_for_status()?;

    let ws = format!(
        "{}/ws/scenes/{scene_id}",
        base_b.replace("http://", "ws://")
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(ws).await?;
    socket
        .send(Message::text(
            json!({"type": "hello", "protocol": 1}).to_string(),
        ))
        .await?;
    let first_seen: Arc<Mutex<HashMap<u32, Instant>>> = Arc::default();
    let pixel: Uuid = loop {
        if let Some(Ok(Message::Text(t))) = socket.next().await {
            let v: Value = serde_json::from_str(t.as_str())?;
            if v["type"] == "welcome" {
                break v["pixel_id"].as_str().unwrap_or_default().parse()?;
            }
        }
    };
    let reader = {
        let seen = first_seen.clone();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = socket.next().await {
                if let Message::Binary(bytes) = msg {
                    if let Ok(chunk) = c3s::dataplane::chunk::decode(&bytes) {
                        let now = Instant::now();
                        seen.lock()
                            .expect("seen")
                            .entry(chunk.version)
                            .or_insert(now);
                    }
                }
            }
        })
    };
    call(
        reqwest::Method::PUT,
        format!("/api/scenes/{scene_id}/pixels/{pixel}/position"),
        Some(json!({"x": 1.5, "y": 0.5})),
    )
    .await?
    .error_for_status()?;
    call(
        reqwest::Method::POST,
        format!("/api/scenes/{scene_id}/playback"),
        Some(json!({"command": "play", "start_in_ms": 1000})),
    )
    .await?
    .error_for_status()?;
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // a rush of placements on one scene (a stadium typing in its seats): placements per second
    let mut rush_pixels = Vec::with_capacity(RUSH);
    for _ in 0..RUSH {
        let guest: Value = client
            .post(format!("{base_a}/api/auth/guest"))
            .send()
            .await?
            .json()
            .await?;
        let pixel: Value = client
            .post(format!("{base_a}/api/scenes/{scene_id}/join"))
            .bearer_auth(guest["token"].as_str().unwrap_or_default())
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        rush_pixels.push(pixel["pixel_id"].as_str().unwrap_or_default().to_owned());
    }
    let started = Instant::now();
    let placed: Vec<anyhow::Result<()>> = futures::stream::iter(rush_pixels.iter().enumerate())
        .map(|(i, pixel)| {
            let request = call(
                reqwest::Method::PUT,
                format!("/api/scenes/{scene_id}/pixels/{pixel}/position"),
                Some(json!({"x": (i % 200) as f64 / 100.0, "y": 0.5})),
            );
            async move {
                request.await?.error_for_status()?;
                Ok(())
            }
        })
        .buffer_unordered(RUSH_CONCURRENCY)
        .collect()
        .await;
    for p in placed {
        p?;
    }
    let rush = RUSH as f64 / started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"bench": "log", "case": "placements on one scene over HTTP, 2000 phones, 128 at a time", "placements_per_s": rush.round()})
    );

    // commands on A: how long until B's hub has them, and a phone on B their first chunk
    let (mut to_hub, mut to_phone, mut round_trip) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..COMMANDS {
        let sent = Instant::now();
        let answer: Value = call(
            reqwest::Method::POST,
            format!("/api/scenes/{scene_id}/playback"),
            Some(json!({"command": "seek", "position_ms": (i * 7) % 100, "in_ms": 500})),
        )
        .await?
        .error_for_status()?
        .json()
        .await?;
        round_trip.push(sent.elapsed().as_secs_f64() * 1000.0);
        let version = answer["timeline"]["version"].as_i64().unwrap_or_default();
        let hub = state_b
            .hub
            .scene(scene_id)
            .ok_or_else(|| anyhow::anyhow!("B has no hub"))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while hub.snapshot().timeline.version < version {
            anyhow::ensure!(Instant::now() < deadline, "B never applied {version}");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        to_hub.push(sent.elapsed().as_secs_f64() * 1000.0);
        let deadline = Instant::now() + Duration::from_secs(5);
        let reached = loop {
            if let Some(at) = first_seen.lock().expect("seen").get(&(version as u32)) {
                break *at;
            }
            anyhow::ensure!(Instant::now() < deadline, "no chunk of {version} on B");
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        to_phone.push(reached.duration_since(sent).as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reader.abort();
    let (hub, phone, rtt) = (summary(to_hub), summary(to_phone), summary(round_trip));
    println!(
        "{}",
        json!({"bench": "log", "case": "command on node A, HTTP round trip", "latency": rtt})
    );
    println!(
        "{}",
        json!({"bench": "log", "case": "command sent to node A until applied in node B's hub", "latency": hub})
    );
    println!(
        "{}",
        json!({"bench": "log", "case": "command sent to node A until a phone on node B has its first chunk", "latency": phone})
    );
    println!(
        "{}",
        json!({
            "bench": "log",
            "append_events_per_s": {"parallel_scenes": parallel.round(), "one_scene": contended.round(), "batched_500": batched.round()},
            "placements_per_s_one_scene": rush.round(),
            "a_to_b_hub_ms": {"p50": hub["p50_ms"], "p99": hub["p99_ms"]},
            "a_to_b_phone_ms": {"p50": phone["p50_ms"], "p99": phone["p99_ms"]},
            "commands": COMMANDS,
        })
    );
    stop_a.cancel();
    stop_b.cancel();
    Ok(())
}
