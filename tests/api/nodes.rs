//! Several nodes: real `c3s` processes sharing one PostgreSQL database and one GridFS store.
//! A command on any node reaches phones on every node; phones on different nodes show the
//! same colours at the same instants; a node killed with SIGKILL loses nobody's pixel, and
//! comes back playing the show from the log.

use std::time::{Duration, Instant};

use c3s::clock;
use c3s::dataplane::chunk::Chunk;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{node_config, Node, TestApp};
use crate::phone::{colour_at, next_json, Ended, Phone};
pub(crate) use crate::realtime::command;

const GREEN: [u8; 3] = [0, 255, 0];
const WHITE: [u8; 3] = [255, 255, 255];
const FRAME_MS: i64 = 200;

/// An open 2 × 1 scene looping frames red | green and blue | white, 200 ms each, built.
pub(crate) async fn looping_scene(app: &TestApp) -> (String, Uuid) {
    crate::realtime::two_frame_scene(app, true, FRAME_MS as u32).await
}

/// The colour of the right-hand cell at instant `t` under a playing timeline (from a command's
/// answer): green on frame 0, white on frame 1.
pub(crate) fn expected(timeline: &Value, t: i64) -> [u8; 3] {
    let current = &timeline["current"];
    let position =
        current["base_ms"].as_i64().unwrap() + (t - current["anchor_ms"].as_i64().unwrap());
    if (position / FRAME_MS) % 2 == 0 {
        GREEN
    } else {
        WHITE
    }
}

/// Reads chunks until one of at least `version` reaches `until_ms`; returns them all and
/// when the first chunk of that version arrived.
pub(crate) async fn chunks_until(
    phone: &mut Phone,
    version: i64,
    until_ms: i64,
) -> (Vec<Chunk>, Instant) {
    let mut chunks = Vec::new();
    let mut first = None;
    loop {
        let c = phone.next_chunk(Duration::from_secs(10)).await;
        let current = i64::from(c.version) >= version;
        if current && first.is_none() {
            first = Some(Instant::now());
        }
        let done = current && c.start_ms + i64::from(c.length_ms) >= until_ms;
        chunks.push(c);
        if done {
            return (chunks, first.expect("set"));
        }
    }
}

/// Asserts the chunks give the expected colour every 20 ms of `[from, to)`.
pub(crate) fn assert_plays(who: &str, chunks: &[Chunk], timeline: &Value, from: i64, to: i64) {
    let current = &timeline["current"];
    let (anchor, base) = (
        current["anchor_ms"].as_i64().unwrap(),
        current["base_ms"].as_i64().unwrap(),
    );
    // before its effective instant the timeline's previous state applies
    let from = from.max(current["effective_ms"].as_i64().unwrap());
    assert!(to - from >= 300, "{who}: too little left to check");
    for t in (from..to).step_by(20) {
        // probe away from the instants where the frame changes
        let within = (base + t - anchor).rem_euclid(FRAME_MS);
        if !(5..FRAME_MS - 5).contains(&within) {
            continue;
        }
        if colour_at(chunks, t) != Some(expected(timeline, t)) {
            let covering: Vec<_> = chunks
                .iter()
                .filter(|c| c.start_ms <= t && t < c.start_ms + i64::from(c.length_ms))
                .collect();
            panic!(
                "{who} at {t} ({} ms after {from}): {:?}, expected {:?}; timeline {timeline}; chunks covering it: {covering:?}",
                t - from,
                colour_at(chunks, t),
                expected(timeline, t)
            );
        }
    }
}

#[tokio::test]
async fn two_nodes_play_in_step_and_a_killed_node_loses_nobody() {
    let config = node_config().await;
    let mut a = Node::start(&config).await;
    let b = Node::start(&config).await;
    let (op, scene) = looping_scene(&a.app).await;

    let mut on_a = Phone::join(&a.app, scene, None).await;
    let mut on_b = Phone::join(&b.app, scene, None).await;
    let token_a = on_a.token().unwrap().to_owned();
    // both placed by a call to node A: the phone on B hears of it through the log
    for phone in [&on_a, &on_b] {
        a.app.place(&op, scene, phone.pixel_id(), 1.5, 0.5).await;
    }
    let located = next_json(&mut on_b.socket).await;
    assert_eq!(located["type"], "located", "{located}");

    // either node tells the operator about the phones on both
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, presence) = b
            .app
            .call(
                Method::GET,
                &format!("/api/scenes/{scene}/presence"),
                Some(&op),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{presence}");
        if presence["connected"] == 2 && presence["nodes"] == 2 {
            assert_eq!(presence["located"], 2, "{presence}");
            break;
        }
        assert!(Instant::now() < deadline, "presence: {presence}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // play on A: both phones get the same colours for the same instants
    let asked = Instant::now();
    let play = command(
        &a.app,
        &op,
        scene,
        json!({"command": "play", "start_in_ms": 1000}),
    )
    .await;
    let version = play["timeline"]["version"].as_i64().unwrap();
    let t0 = play["timeline"]["current"]["anchor_ms"].as_i64().unwrap();
    let ((chunks_a, _), (chunks_b, reached_b)) = tokio::join!(
        chunks_until(&mut on_a, version, t0 + 1200),
        chunks_until(&mut on_b, version, t0 + 1200)
    );
    eprintln!(
        "play on node A reached a phone on node B {} ms after it was sent",
        reached_b.duration_since(asked).as_millis()
    );
    assert_plays("phone on A", &chunks_a, &play["timeline"], t0, t0 + 1200);
    assert_plays("phone on B", &chunks_b, &play["timeline"], t0, t0 + 1200);
    // to the millisecond, whichever node sends them
    for t in t0 - 300..t0 + 1200 {
        assert_eq!(
            colour_at(&chunks_a, t),
            colour_at(&chunks_b, t),
            "at {t}: the phones on A and B differ"
        );
    }

    // seek on B once the show runs: the phone on A follows
    tokio::time::sleep(Duration::from_millis(
        (t0 + 100 - clock::now_ms()).max(0) as u64
    ))
    .await;
    let asked = Instant::now();
    let seek = command(
        &b.app,
        &op,
        scene,
        json!({"command": "seek", "position_ms": FRAME_MS + 50, "in_ms": 300}),
    )
    .await;
    let version = seek["timeline"]["version"].as_i64().unwrap();
    let at = seek["timeline"]["current"]["effective_ms"]
        .as_i64()
        .unwrap();
    let (chunks_a, reached_a) = chunks_until(&mut on_a, version, at + 1000).await;
    let held_until = chunks_a
        .iter()
        .map(|c| c.start_ms + i64::from(c.length_ms))
        .max()
        .unwrap_or_default();
    eprintln!(
        "seek on node B reached a phone on node A {} ms after it was sent",
        reached_a.duration_since(asked).as_millis()
    );
    assert_plays(
        "phone on A after seek",
        &chunks_a,
        &seek["timeline"],
        at,
        at + 1000,
    );

    // node A dies mid-show; its phone comes back through node B, same pixel, same place
    let pixel_a = on_a.pixel_id();
    let killed_at = clock::now_ms();
    a.kill();
    drop(on_a);
    let mut again = Phone::join(&b.app, scene, Some(&token_a)).await;
    let first = again.next_chunk(Duration::from_secs(5)).await;
    eprintln!(
        "node A killed: its phone held colours for {} ms more, and had new ones from node B {} ms after the kill",
        held_until - killed_at,
        clock::now_ms() - killed_at
    );
    assert_eq!(again.pixel_id(), pixel_a, "the same pixel");
    assert_eq!(again.welcome["position"], json!({"x": 1.5, "y": 0.5}));
    let now = clock::now_ms();
    let (mut chunks, _) = chunks_until(&mut again, version, now + 1000).await;
    chunks.push(first);
    assert_plays(
        "moved phone on B",
        &chunks,
        &seek["timeline"],
        now + 100,
        now + 1000,
    );

    // node A restarts and plays the show from the log at the right frame
    let a = Node::start(&config).await;
    let mut back = Phone::join(&a.app, scene, Some(&token_a)).await;
    assert_eq!(back.pixel_id(), pixel_a);
    let now = clock::now_ms();
    let (chunks, _) = chunks_until(&mut back, version, now + 1000).await;
    assert_plays(
        "phone on restarted A",
        &chunks,
        &seek["timeline"],
        now + 100,
        now + 1000,
    );

    // the log holds every command once, in order, whichever node took it
    let (status, page) = b
        .app
        .call(
            Method::GET,
            &format!("/api/scenes/{scene}/events"),
            Some(&op),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let playback: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "playback")
        .map(|e| e["data"]["command"]["command"].as_str().unwrap())
        .collect();
    assert_eq!(playback, ["play", "seek"]);

    // a kick through node A closes the phone on node B; the end of the scene too
    let (status, body) = a
        .app
        .call(
            Method::POST,
            &format!("/api/scenes/{scene}/pixels/{}/kick", on_b.pixel_id()),
            Some(&op),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        on_b.ended(Duration::from_secs(5)).await,
        Ended::Closed(4003, "removed from the scene".into())
    );
    let (status, body) = a
        .app
        .call(
            Method::PATCH,
            &format!("/api/scenes/{scene}"),
            Some(&op),
            Some(json!({"status": "ended"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        again.ended(Duration::from_secs(5)).await,
        Ended::Closed(4010, "the scene has ended".into())
    );
}

#[tokio::test]
async fn signals_to_phones_reach_them_on_whichever_node_holds_them() {
    let config = node_config().await;
    let a = Node::start(&config).await;
    let b = Node::start(&config).await;
    let (op, scene) = looping_scene(&a.app).await;
    let mut on_a = Phone::join(&a.app, scene, None).await;
    let mut on_b = Phone::join(&b.app, scene, None).await;
    a.app.place(&op, scene, on_a.pixel_id(), 0.5, 0.5).await;
    assert_eq!(next_json(&mut on_a.socket).await["type"], "located");
    // every node is up and has said so (heartbeats every 2 s)
    crate::helpers::until_nodes(&a.app, 2).await;

    // identify through A reaches the phone on B
    let identify = |pixel: Uuid| format!("/api/scenes/{scene}/pixels/{pixel}/identify");
    let (status, body) = a
        .app
        .call(Method::POST, &identify(on_b.pixel_id()), Some(&op), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let msg = next_json(&mut on_b.socket).await;
    assert_eq!(msg["type"], "identify", "{msg}");

    // the unlocated phone is on B: asked through A, it shows its code and is counted
    let qr = format!("/api/scenes/{scene}/qr-codes");
    let (status, body) = a
        .app
        .call(
            Method::POST,
            &qr,
            Some(&op),
            Some(json!({"unlocated_only": true})),
        )
        .await;
    assert_eq!(
        (status, body["asked"].as_u64()),
        (StatusCode::OK, Some(1)),
        "{body}"
    );
    assert_eq!(next_json(&mut on_b.socket).await["type"], "qr");
    let (status, body) = b
        .app
        .call(Method::POST, &qr, Some(&op), Some(json!({})))
        .await;
    assert_eq!(
        (status, body["asked"].as_u64()),
        (StatusCode::OK, Some(2)),
        "{body}"
    );
    assert_eq!(next_json(&mut on_a.socket).await["type"], "qr");
    assert_eq!(next_json(&mut on_b.socket).await["type"], "qr");

    // a phone connected nowhere cannot be identified, whichever node is asked
    let gone = on_b.pixel_id();
    drop(on_b);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for node in [&a, &b] {
        let (status, body) = node
            .app
            .call(Method::POST, &identify(gone), Some(&op), None)
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
    }
}
