//! Locating by sound through the real server: beacons and the scene's scale are set and
//! checked, a session tells every phone on two nodes to listen, each phone's report of the
//! delays it heard (made from its true place, with an offset of its own) places it there, and
//! every bad report is refused without placing anyone.

use std::time::Duration;

use futures::SinkExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::helpers::{node_config, spawn_app, until_nodes, Node, TestApp};
use crate::phone::{next_json, Phone};

const W: f64 = 100.0;
const H: f64 = 60.0;
/// The speed of sound at 20 °C, as the server works it out.
const C: f64 = 343.21;

async fn sound_scene(app: &TestApp, login: &str, methods: Value) -> (String, Uuid) {
    let (op, _) = app.register(login).await;
    let (status, body) = app
        .call(
            Method::POST,
            "/api/scenes",
            Some(&op),
            Some(json!({"name": "Sound", "width": W, "height": H, "location_methods": methods})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let scene: Uuid = body["scene_id"].as_str().unwrap().parse().unwrap();
    app.open_scene(&op, scene).await;
    (op, scene)
}

async fn add_beacon(app: &TestApp, op: &str, scene: Uuid, x: f64, y: f64) -> (StatusCode, Value) {
    app.call(
        Method::POST,
        &format!("/api/scenes/{scene}/beacons"),
        Some(op),
        Some(json!({"name": format!("speaker at {x},{y}"), "x": x, "y": y})),
    )
    .await
}

async fn start(app: &TestApp, op: &str, scene: Uuid) -> (StatusCode, Value) {
    app.call(
        Method::POST,
        &format!("/api/scenes/{scene}/sound-sessions"),
        Some(op),
        Some(json!({"start_in_ms": 1000, "repeats": 1})),
    )
    .await
}

const BEACONS: [(f64, f64); 6] = [
    (0.0, 0.0),
    (W, 0.0),
    (W, H),
    (0.0, H),
    (W / 2.0, 0.0),
    (W / 2.0, H),
];

#[tokio::test]
async fn beacons_and_the_scale_are_checked_before_a_session_starts() {
    let app = spawn_app().await;
    let (op, plain) = sound_scene(&app, "plain-op", json!(["qr"])).await;
    let (status, body) = app
        .call(
            Method::PUT,
            &format!("/api/scenes/{plain}/sound"),
            Some(&op),
            Some(json!({"metres_per_unit": 1.0})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "not a sound scene: {body}");
    let (status, _) = start(&app, &op, plain).await;
    assert_eq!(status, StatusCode::CONFLICT);

    let (op, scene) = sound_scene(&app, "sound-op", json!(["sound"])).await;
    let (status, body) = start(&app, &op, scene).await;
    assert_eq!(status, StatusCode::CONFLICT, "no scale yet: {body}");
    for bad in [
        json!({"metres_per_unit": 0}),
        json!({"metres_per_unit": 2000}),
        json!({"metres_per_unit": 1, "temperature_c": 99}),
    ] {
        let (status, body) = app
            .call(
                Method::PUT,
                &format!("/api/scenes/{scene}/sound"),
                Some(&op),
                Some(bad),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(
            body["error"].is_string() && body["message"].is_string(),
            "{body}"
        );
    }
    let (status, body) = app
        .call(
            Method::PUT,
            &format!("/api/scenes/{scene}/sound"),
            Some(&op),
            Some(json!({"metres_per_unit": 0.5, "temperature_c": 20})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ready"], false);
    assert!(
        (body["speed_m_s"].as_f64().unwrap() - C).abs() < 0.05,
        "{body}"
    );

    let (status, body) = add_beacon(&app, &op, scene, W + 1.0, 0.0).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "outside the scene: {body}"
    );
    let mut beacons = Vec::new();
    for &(x, y) in &BEACONS[..3] {
        let (status, body) = add_beacon(&app, &op, scene, x, y).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert!(body["key"].as_str().unwrap().len() > 20);
        beacons.push(body);
    }
    let (status, body) = start(&app, &op, scene).await;
    assert_eq!(status, StatusCode::CONFLICT, "three beacons: {body}");
    assert!(
        body["message"].as_str().unwrap().contains("at least 4"),
        "{body}"
    );
    // slots are taken lowest first; a taken one is refused
    let slots: Vec<i64> = beacons
        .iter()
        .map(|b| b["slot"].as_i64().unwrap())
        .collect();
    assert_eq!(slots, [0, 1, 2]);
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/api/scenes/{scene}/beacons"),
            Some(&op),
            Some(json!({"name": "again", "x": 1, "y": 1, "slot": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    for i in 3..8 {
        let (status, body) = add_beacon(&app, &op, scene, i as f64 * 10.0, 30.0).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body) = add_beacon(&app, &op, scene, 5.0, 5.0).await;
    assert_eq!(status, StatusCode::CONFLICT, "a ninth beacon: {body}");

    // moved, renamed, removed; a stranger may not
    let id = beacons[0]["beacon_id"].as_str().unwrap();
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/api/scenes/{scene}/beacons/{id}"),
            Some(&op),
            Some(json!({"name": "north", "x": 2.5})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["name"].as_str(), body["x"].as_f64()),
        (Some("north"), Some(2.5))
    );
    let (stranger, _) = app.register("stranger").await;
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/api/scenes/{scene}/beacons/{id}"),
            Some(&stranger),
            None,
        )
        .await;
    assert!(
        matches!(status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND),
        "{status}"
    );

    // the beacon page's schedule wants the beacon's own key
    let key = beacons[1]["key"].as_str().unwrap();
    let b1 = beacons[1]["beacon_id"].as_str().unwrap();
    let (status, _) = app
        .call(
            Method::GET,
            &format!("/api/beacons/{b1}/schedule?key=wrong"),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, session) = start(&app, &op, scene).await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    assert_eq!(session["beacons"].as_array().unwrap().len(), 8);
    assert_eq!(
        session["beacons"][0]["x_m"], 1.25,
        "scene units times the scale: {session}"
    );
    let (status, schedule) = app
        .call(
            Method::GET,
            &format!("/api/beacons/{b1}/schedule?key={key}"),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{schedule}");
    assert_eq!(schedule["slot"], 1);
    assert_eq!(schedule["sessions"][0]["session_id"], session["session_id"]);
    assert_eq!(
        schedule["sessions"][0]["starts_at_us"],
        session["starts_at_us"]
    );

    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/api/scenes/{scene}/beacons/{id}"),
            Some(&op),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, info) = app
        .call(
            Method::GET,
            &format!("/api/scenes/{scene}/sound"),
            Some(&op),
            None,
        )
        .await;
    assert_eq!(info["beacons"].as_array().unwrap().len(), 7);
}

/// The delays a phone at (x, y) hears, with its own common offset, in the report's shape.
fn heard(x: f64, y: f64, offset_ms: f64, slots: &[usize]) -> Value {
    json!(slots
        .iter()
        .map(|&s| {
            let (bx, by) = BEACONS[s];
            json!({"slot": s, "delay_ms": (x - bx).hypot(y - by) / C * 1000.0 + offset_ms})
        })
        .collect::<Vec<_>>())
}

async fn send(phone: &mut Phone, msg: Value) {
    phone
        .socket
        .send(Message::text(msg.to_string()))
        .await
        .unwrap();
}

/// The phone's answer to a report: `located` or `locate_refused` (other messages skipped).
async fn answer(phone: &mut Phone) -> Value {
    loop {
        let msg = next_json(&mut phone.socket).await;
        if msg["type"] == "located" || msg["type"] == "locate_refused" {
            return msg;
        }
    }
}

async fn listen_message(phone: &mut Phone, session: &str) -> Value {
    loop {
        let msg = next_json(&mut phone.socket).await;
        if msg["type"] == "listen" && msg["session_id"] == session {
            return msg;
        }
    }
}

#[tokio::test]
async fn phones_on_two_nodes_are_placed_where_they_heard_the_beacons() {
    let config = node_config().await;
    let a = Node::start(&config).await;
    let b = Node::start(&config).await;
    let (op, scene) = sound_scene(&a.app, "sound-op", json!(["sound", "observer"])).await;
    let (status, _) = a
        .app
        .call(
            Method::PUT,
            &format!("/api/scenes/{scene}/sound"),
            Some(&op),
            Some(json!({"metres_per_unit": 1.0})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    for &(x, y) in &BEACONS {
        let (status, body) = add_beacon(&a.app, &op, scene, x, y).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let places = [(12.0, 9.0), (71.5, 40.25), (50.0, 30.0), (90.0, 5.0)];
    let mut phones = Vec::new();
    for i in 0..places.len() {
        let node = if i % 2 == 0 { &a } else { &b };
        phones.push(Phone::join(&node.app, scene, None).await);
    }
    until_nodes(&a.app, 2).await;
    let (status, session) = start(&a.app, &op, scene).await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    assert_eq!(
        session["phones"], 4,
        "phones on both nodes were told: {session}"
    );
    let id = session["session_id"].as_str().unwrap().to_owned();
    for phone in phones.iter_mut() {
        let msg = listen_message(phone, &id).await;
        assert_eq!(msg["slots"], json!([0, 1, 2, 3, 4, 5]), "{msg}");
        assert_eq!(msg["starts_at_us"], session["starts_at_us"]);
    }

    // a report while the beacons still chirp is early
    send(
        &mut phones[0],
        json!({"type": "sound", "session_id": id,
        "arrivals": heard(12.0, 9.0, 20.0, &[0, 1, 2, 3, 4, 5])}),
    )
    .await;
    let early = answer(&mut phones[0]).await;
    assert_eq!(early["type"], "locate_refused", "{early}");
    assert!(
        early["reason"].as_str().unwrap().contains("under way"),
        "{early}"
    );
    let until_us = session["record_until_us"].as_i64().unwrap();
    let now_us = chrono::Utc::now().timestamp_micros();
    tokio::time::sleep(Duration::from_micros((until_us - now_us).max(0) as u64)).await;

    // each phone with an offset of its own (its microphone, its capture start): placed at its
    // place; the fourth hears one beacon's echo instead of it, and is placed all the same
    for (i, (phone, &(x, y))) in phones.iter_mut().zip(&places).enumerate() {
        let mut arrivals = heard(x, y, 5.0 + 17.0 * i as f64, &[0, 1, 2, 3, 4, 5]);
        if i == 3 {
            let late = arrivals[2]["delay_ms"].as_f64().unwrap() + 31.0;
            arrivals[2]["delay_ms"] = json!(late);
        }
        send(
            phone,
            json!({"type": "sound", "session_id": id, "arrivals": arrivals}),
        )
        .await;
        let placed = answer(phone).await;
        assert_eq!(placed["type"], "located", "phone {i}: {placed}");
        let (px, py) = (placed["x"].as_f64().unwrap(), placed["y"].as_f64().unwrap());
        assert!(
            (px - x).hypot(py - y) < 0.01,
            "phone {i} at ({px}, {py}), truly ({x}, {y})"
        );
    }
    // once per phone and session
    send(
        &mut phones[0],
        json!({"type": "sound", "session_id": id,
        "arrivals": heard(12.0, 9.0, 20.0, &[0, 1, 2, 3, 4, 5])}),
    )
    .await;
    let twice = answer(&mut phones[0]).await;
    assert_eq!(twice["type"], "locate_refused", "{twice}");
    assert!(
        twice["reason"]
            .as_str()
            .unwrap()
            .contains("reported already"),
        "{twice}"
    );

    let (_, tally) = a
        .app
        .call(
            Method::GET,
            &format!("/api/scenes/{scene}/sound-sessions/{id}"),
            Some(&op),
            None,
        )
        .await;
    assert_eq!(
        (tally["reported"].as_i64(), tally["placed"].as_i64()),
        (Some(4), Some(4)),
        "{tally}"
    );
}

#[tokio::test]
async fn bad_reports_are_refused_and_place_nobody() {
    let app = spawn_app().await;
    let (op, scene) = sound_scene(&app, "sound-op", json!(["sound", "observer"])).await;
    app.call(
        Method::PUT,
        &format!("/api/scenes/{scene}/sound"),
        Some(&op),
        Some(json!({"metres_per_unit": 1.0})),
    )
    .await;
    for &(x, y) in &BEACONS {
        add_beacon(&app, &op, scene, x, y).await;
    }
    let mut phones = Vec::new();
    for _ in 0..6 {
        phones.push(Phone::join(&app, scene, None).await);
    }
    let (status, session) = start(&app, &op, scene).await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let id = session["session_id"].as_str().unwrap().to_owned();
    for phone in phones.iter_mut() {
        listen_message(phone, &id).await;
    }
    // a phone that joined after the session started was not told to listen
    let mut late = Phone::join(&app, scene, None).await;
    let until_us = session["record_until_us"].as_i64().unwrap();
    let now_us = chrono::Utc::now().timestamp_micros();
    tokio::time::sleep(Duration::from_micros((until_us - now_us).max(0) as u64)).await;

    let six = heard(30.0, 20.0, 10.0, &[0, 1, 2, 3, 4, 5]);
    let mut far = six.clone();
    far[1]["delay_ms"] = json!(1e6);
    let mut stranger = six.clone();
    stranger[1]["slot"] = json!(7);
    let mut wild = six.clone();
    for (k, shift) in [40.0, -30.0, 15.0, 60.0, -20.0].iter().enumerate() {
        let d = wild[k + 1]["delay_ms"].as_f64().unwrap() + shift;
        wild[k + 1]["delay_ms"] = json!(d);
    }
    let cases = [
        (
            json!({"type": "sound", "session_id": Uuid::new_v4(), "arrivals": six}),
            "no such sound session",
        ),
        (
            json!({"type": "sound", "session_id": id, "arrivals": heard(30.0, 20.0, 10.0, &[0, 1, 2])}),
            "at least 4",
        ),
        (
            json!({"type": "sound", "session_id": id, "arrivals": far}),
            "not a finite number",
        ),
        (
            json!({"type": "sound", "session_id": id, "arrivals": stranger}),
            "not a beacon of the session",
        ),
        (
            json!({"type": "sound", "session_id": id, "arrivals": wild}),
            "do not fit one position",
        ),
    ];
    for (phone, (msg, why)) in phones.iter_mut().zip(cases) {
        send(phone, msg).await;
        let refused = answer(phone).await;
        assert_eq!(refused["type"], "locate_refused", "{refused}");
        assert_eq!(refused["method"], "sound");
        assert!(
            refused["reason"].as_str().unwrap().contains(why),
            "{why}: {refused}"
        );
    }
    send(
        &mut late,
        json!({"type": "sound", "session_id": id, "arrivals": six}),
    )
    .await;
    let refused = answer(&mut late).await;
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("not told to listen"),
        "{refused}"
    );

    // a delay that is no number at all ends the socket with a reason, as any bad message does
    send(
        &mut phones[5],
        json!({"type": "sound", "session_id": id,
        "arrivals": [{"slot": 0, "delay_ms": "soon"}]}),
    )
    .await;
    match crate::phone::ended(&mut phones[5].socket, Duration::from_secs(5)).await {
        crate::phone::Ended::Closed(code, reason) => {
            assert_eq!(code, 4000, "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let placed: i64 = sqlx::query_scalar(
        "select count(*) from pixel where scene_id = $1 and location_method_id is not null",
    )
    .bind(scene)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(placed, 0, "nobody was placed");
}
