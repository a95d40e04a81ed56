//! What the operator's and observer's pages are pushed: presence, phones placed and removed,
//! show versions and scene changes, over server-sent events, from whichever node the change
//! was made on; and a frame's colours on the show's grid, as the phones get them.

use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{node_config, spawn_app, Node, TestApp};
use crate::phone::Phone;
use crate::realtime::two_frame_scene;

/// A page's stream of a scene: its events as (name, data), in order.
struct Stream {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffered: String,
}

impl Stream {
    async fn open(app: &TestApp, token: &str, scene: Uuid) -> Stream {
        let resp = app
            .client
            .get(app.url(&format!("/api/scenes/{scene}/live")))
            .bearer_auth(token)
            .send()
            .await
            .expect("stream opened");
        assert_eq!(resp.status(), StatusCode::OK);
        let kind = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(kind.starts_with("text/event-stream"), "{kind}");
        Stream {
            body: Box::pin(resp.bytes_stream()),
            buffered: String::new(),
        }
    }

    /// The next event, within 10 s.
    async fn next(&mut self) -> (String, Value) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(end) = self.buffered.find("\n\n") {
                let block: String = self.buffered.drain(..end + 2).collect();
                let (mut name, mut data) = (String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if name.is_empty() {
                    continue; // a keep-alive comment
                }
                return (name, serde_json::from_str(&data).expect("JSON data"));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.body.next())
                .await
                .expect("an event within 10 s")
                .expect("the stream goes on")
                .expect("the stream reads");
            self.buffered.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Events until one named `name` that `pick` accepts.
    async fn until(&mut self, name: &str, pick: impl Fn(&Value) -> bool) -> Value {
        loop {
            let (got, data) = self.next().await;
            if got == name && pick(&data) {
                return data;
            }
        }
    }
}

#[tokio::test]
async fn the_pages_are_pushed_what_happens_to_the_scene() {
    let app = spawn_app().await;
    let (op, scene) = two_frame_scene(&app, true, 200).await;
    let (stranger, _) = app.register("stranger").await;
    let resp = app
        .client
        .get(app.url(&format!("/api/scenes/{scene}/live")))
        .bearer_auth(&stranger)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    let mut page = Stream::open(&app, &op, scene).await;
    // the show as it is, at once
    let show = page.until("show", |_| true).await;
    assert_eq!(show["timeline"]["version"], 1, "{show}");
    assert_eq!(show["grid"], json!({"w": 2, "h": 1}));

    // a phone joins: the counts move; it is placed: its place comes
    let phone = Phone::join(&app, scene, None).await;
    page.until("presence", |p| p["connected"] == 1).await;
    app.place(&op, scene, phone.pixel_id(), 1.5, 0.5).await;
    let placed = page.until("pixel", |_| true).await;
    assert_eq!(placed["pixel_id"], phone.pixel_id().to_string());
    assert_eq!(
        (placed["x"].as_f64(), placed["status"].as_str()),
        (Some(1.5), Some("located"))
    );
    page.until("presence", |p| p["located"] == 1).await;

    // a playback command is a new show version
    let play = crate::realtime::command(&app, &op, scene, json!({"command": "play"})).await;
    let pushed = page.until("show", |_| true).await;
    assert_eq!(pushed["timeline"], play["timeline"]);

    // the preview's colours: each frame on the show's grid, as the phones get them
    let frame = &show["show"]["frames"][1];
    let resp = app
        .client
        .get(app.url(&format!(
            "/api/scenes/{scene}/show/frames/{}/raster",
            frame["frame_id"].as_str().unwrap()
        )))
        .bearer_auth(&op)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-grid-width"], "2");
    assert_eq!(resp.headers()["x-grid-height"], "1");
    let rgb = resp.bytes().await.unwrap();
    assert_eq!(&rgb[..], &[0, 0, 255, 255, 255, 255], "blue | white");
    let (status, _) = app
        .call(
            Method::GET,
            &format!("/api/scenes/{scene}/show/frames/{}/raster", Uuid::new_v4()),
            Some(&op),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // the scene changes, a phone is removed, the scene ends
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/api/scenes/{scene}"),
            Some(&op),
            Some(json!({"name": "Renamed"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page.until("scene", |_| true).await["name"], "Renamed");
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/api/scenes/{scene}/pixels/{}/kick", phone.pixel_id()),
            Some(&op),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let kicked = page.until("pixel", |p| p["status"] == "kicked").await;
    assert_eq!(kicked["pixel_id"], phone.pixel_id().to_string());
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/api/scenes/{scene}"),
            Some(&op),
            Some(json!({"status": "ended"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    page.until("ended", |_| true).await;

    let (status, clock) = app.call(Method::GET, "/api/clock", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!((clock["server_time_us"].as_i64().unwrap() - c3s::clock::now_us()).abs() < 5_000_000);
}

#[tokio::test]
async fn a_page_on_one_node_hears_of_phones_placed_on_another() {
    let config = node_config().await;
    let a = Node::start(&config).await;
    let b = Node::start(&config).await;
    let (op, scene) = two_frame_scene(&a.app, false, 200).await;
    // the page is served by B, which has no phone of the scene
    let mut page = Stream::open(&b.app, &op, scene).await;
    let phone = Phone::join(&a.app, scene, None).await;
    a.app.place(&op, scene, phone.pixel_id(), 0.5, 0.5).await;
    let placed = page.until("pixel", |_| true).await;
    assert_eq!(placed["pixel_id"], phone.pixel_id().to_string());
    // and of the phone itself, from A's presence report
    page.until("presence", |p| p["connected"] == 1 && p["nodes"] == 1)
        .await;
}
