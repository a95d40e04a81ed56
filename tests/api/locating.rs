//! Locating methods end to end: seat maps, GPS, observer taps (with contradictions), identify.

use futures::SinkExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::helpers::{spawn_app, TestApp};
use crate::phone::{next_json, Phone};

/// An open 100 × 60 scene; returns (operator token, scene).
async fn scene(app: &TestApp) -> (String, Uuid) {
    let (op, _) = app.register("oper").await;
    let (status, body) = app
        .call(
            Method::POST,
            "/api/scenes",
            Some(&op),
            Some(json!({"name": "Pitch", "width": 100.0, "height": 60.0})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id: Uuid = body["scene_id"].as_str().unwrap().parse().unwrap();
    app.open_scene(&op, id).await;
    (op, id)
}

async fn put_csv(app: &TestApp, token: &str, scene: Uuid, csv: &str) -> (StatusCode, Value) {
    let resp = app
        .client
        .put(app.url(&format!("/api/scenes/{scene}/seats")))
        .bearer_auth(token)
        .header("content-type", "text/csv")
        .body(csv.to_owned())
        .send()
        .await
        .unwrap();
    (resp.status(), resp.json().await.unwrap_or(Value::Null))
}

async fn say(phone: &mut Phone, msg: Value) -> Value {
    phone
        .socket
        .send(Message::text(msg.to_string()))
        .await
        .unwrap();
    loop {
        let v = next_json(&mut phone.socket).await;
        if v["type"] == "located" || v["type"] == "locate_refused" {
            return v;
        }
    }
}

#[tokio::test]
async fn seats_import_all_or_nothing_and_phones_locate_by_seat() {
    let app = spawn_app().await;
    let (op, scene) = scene(&app).await;
    let (status, body) = put_csv(
        &app,
        &op,
        scene,
        "section,row,seat,x,y\nA,1,1,10,5\nA,1,2,xx,5\nA,1,1,3,3\n",
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"], "invalid_seat_map");
    let lines: Vec<u64> = body["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [3, 4]);
    let count: i64 = sqlx::query_scalar("select count(*) from seat")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count, 0, "nothing imported");

    let (status, body) = put_csv(&app, &op, scene, "A,1,1,10,5\nA,1,2,11,5\nb,7,14,50,30\n").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["imported"], 3);
    let (stranger, _) = app.register("stranger").await;
    assert_eq!(
        put_csv(&app, &stranger, scene, "A,1,1,1,1").await.0,
        StatusCode::FORBIDDEN
    );

    let mut phone = Phone::join(&app, scene, None).await;
    let reply = say(
        &mut phone,
        json!({"type": "seat", "section": " B ", "row": "7", "seat": "14"}),
    )
    .await;
    assert_eq!(reply, json!({"type": "located", "x": 50.0, "y": 30.0}));
    let reply = say(
        &mut phone,
        json!({"type": "seat", "section": "Z", "row": "1", "seat": "1"}),
    )
    .await;
    assert_eq!(reply["type"], "locate_refused");
    assert_eq!(reply["method"], "seat");
    let method: i16 =
        sqlx::query_scalar("select location_method_id from pixel where pixel_id = $1")
            .bind(phone.pixel_id())
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(method, 4, "located by seat");
}

#[tokio::test]
async fn gps_with_a_geo_reference() {
    let app = spawn_app().await;
    let (op, scene) = scene(&app).await;
    let (lat0, lon0) = (55.7158f64, 37.5537f64);
    let dlat = |m: f64| m / 111_195.0;
    let dlon = |m: f64| m / (111_195.0 * lat0.to_radians().cos());
    let corners = json!([
        {"lat": lat0, "lon": lon0, "x": 0, "y": 0},
        {"lat": lat0, "lon": lon0 + dlon(100.0), "x": 100, "y": 0},
        {"lat": lat0 - dlat(60.0), "lon": lon0, "x": 0, "y": 60},
        {"lat": lat0 - dlat(60.0), "lon": lon0 + dlon(100.0), "x": 100, "y": 60}
    ]);
    let path = format!("/api/scenes/{scene}/geo-reference");
    for bad in [
        json!({"points": corners.as_array().unwrap()[..2], "accuracy_m": 10}),
        json!({"points": [{"lat": 1, "lon": 1, "x": 0, "y": 0}, {"lat": 1, "lon": 1.001, "x": 1, "y": 0}, {"lat": 1, "lon": 1.002, "x": 2, "y": 0}], "accuracy_m": 10}),
        json!({"points": corners, "accuracy_m": -1}),
    ] {
        let (status, body) = app.call(Method::PUT, &path, Some(&op), Some(bad)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }
    let mut phone = Phone::join(&app, scene, None).await;
    let reply = say(
        &mut phone,
        json!({"type": "gps", "lat": lat0, "lon": lon0, "accuracy_m": 5}),
    )
    .await;
    assert_eq!(
        reply["type"], "locate_refused",
        "not geo-referenced yet: {reply}"
    );

    let (status, fit) = app
        .call(
            Method::PUT,
            &path,
            Some(&op),
            Some(json!({"points": corners, "accuracy_m": 10})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{fit}");
    assert!(fit["residual"].as_f64().unwrap() < 0.1);

    let at = |x: f64, y: f64| (lat0 - dlat(y), lon0 + dlon(x));
    let (lat, lon) = at(25.0, 40.0);
    let reply = say(
        &mut phone,
        json!({"type": "gps", "lat": lat, "lon": lon, "accuracy_m": 30}),
    )
    .await;
    assert_eq!(reply["type"], "locate_refused", "too inaccurate: {reply}");
    assert!(reply["reason"].as_str().unwrap().contains("10 m"));
    let (lat_out, lon_out) = at(150.0, 40.0);
    let reply = say(
        &mut phone,
        json!({"type": "gps", "lat": lat_out, "lon": lon_out, "accuracy_m": 3}),
    )
    .await;
    assert_eq!(reply["type"], "locate_refused", "outside: {reply}");
    let reply = say(
        &mut phone,
        json!({"type": "gps", "lat": lat, "lon": lon, "accuracy_m": 3}),
    )
    .await;
    assert_eq!(reply["type"], "located", "{reply}");
    assert!((reply["x"].as_f64().unwrap() - 25.0).abs() < 0.1, "{reply}");
    assert!((reply["y"].as_f64().unwrap() - 40.0).abs() < 0.1, "{reply}");
}

#[tokio::test]
async fn observer_taps_flag_contradictions_and_identify_reaches_the_phone() {
    let app = spawn_app().await;
    let (op, scene) = scene(&app).await;
    let (observer, observer_id) = app.register("observer").await;
    let mut phone = Phone::join(&app, scene, None).await;
    let pixel = phone.pixel_id();
    let tap = format!("/api/scenes/{scene}/pixels/{pixel}/position");

    assert_eq!(
        app.call(
            Method::PUT,
            &tap,
            Some(&observer),
            Some(json!({"x": 1, "y": 1}))
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/api/users/{observer_id}/permissions"),
            Some(&op),
            Some(json!({"permission": "observer", "scene_id": scene})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let (status, body) = app
        .call(
            Method::PUT,
            &tap,
            Some(&observer),
            Some(json!({"x": 10, "y": 10})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["placed"], true);
    assert!(body["contradiction"].is_null());
    assert_eq!(
        next_json(&mut phone.socket).await,
        json!({"type": "located", "x": 10.0, "y": 10.0})
    );
    let (_, body) = app
        .call(
            Method::PUT,
            &tap,
            Some(&observer),
            Some(json!({"x": 11, "y": 10})),
        )
        .await;
    assert!(
        body["contradiction"].is_null(),
        "1 unit away agrees: {body}"
    );
    let (_, body) = app
        .call(
            Method::PUT,
            &tap,
            Some(&observer),
            Some(json!({"x": 80, "y": 50})),
        )
        .await;
    assert_eq!(
        body["placed"], true,
        "the newest confident observation wins"
    );
    assert_eq!(body["contradiction"]["previous_x"], 11.0, "{body}");
    assert_eq!(body["pixel"]["x"], 80.0);
    let flagged: i64 =
        sqlx::query_scalar("select count(*) from observation where contradiction is not null")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(flagged, 1);
    let (status, body) = app
        .call(
            Method::PUT,
            &tap,
            Some(&observer),
            Some(json!({"x": 101, "y": 10})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    let identify = format!("/api/scenes/{scene}/pixels/{pixel}/identify");
    assert_eq!(
        app.call(Method::POST, &identify, Some(&observer), None)
            .await
            .0,
        StatusCode::ACCEPTED
    );
    loop {
        let msg = next_json(&mut phone.socket).await;
        if msg["type"] == "identify" {
            assert!(msg["until_us"].as_i64().unwrap() > c3s::clock::now_us());
            break;
        }
    }
    drop(phone);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        app.call(Method::POST, &identify, Some(&observer), None)
            .await
            .0,
        StatusCode::CONFLICT
    );
}
