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
    let id = app.create_scene_sized(&op, "Pitch", 100.0, 60.0).await;
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

pub(crate) async fn say(phone: &mut Phone, msg: Value) -> Value {
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

/// Draws a QR code (side × side modules, '1' dark) into `img` with its top-left module at
/// (x0, y0), `px` pixels per module, with a white quiet zone.
fn draw_code(img: &mut image::GrayImage, side: usize, modules: &str, x0: u32, y0: u32, px: u32) {
    let quiet = 4 * px;
    for y in y0 - quiet..y0 + side as u32 * px + quiet {
        for x in x0 - quiet..x0 + side as u32 * px + quiet {
            img.put_pixel(x, y, image::Luma([235]));
        }
    }
    for my in 0..side {
        for mx in 0..side {
            if modules.as_bytes()[my * side + mx] == b'1' {
                for dy in 0..px {
                    for dx in 0..px {
                        img.put_pixel(
                            x0 + mx as u32 * px + dx,
                            y0 + my as u32 * px + dy,
                            image::Luma([20]),
                        );
                    }
                }
            }
        }
    }
}

async fn qr_of(phone: &mut Phone) -> (usize, String) {
    phone
        .socket
        .send(Message::text(json!({"type": "show_qr"}).to_string()))
        .await
        .unwrap();
    loop {
        let v = next_json(&mut phone.socket).await;
        if v["type"] == "qr" {
            assert!(v["expires_us"].as_i64().unwrap() > c3s::clock::now_us());
            return (
                v["side"].as_u64().unwrap() as usize,
                v["modules"].as_str().unwrap().to_owned(),
            );
        }
    }
}

/// A 1600 × 960 photo framing the whole 100 × 60 scene: its PNG, and its corners as the
/// reference points.
fn photo_of_the_scene(photo: &image::GrayImage) -> (Vec<u8>, Value) {
    assert_eq!(photo.dimensions(), (1600, 960));
    let mut png = Vec::new();
    photo
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let points = json!([
        {"px": 0, "py": 0, "x": 0, "y": 0}, {"px": 1600, "py": 0, "x": 100, "y": 0},
        {"px": 1600, "py": 960, "x": 100, "y": 60}, {"px": 0, "py": 960, "x": 0, "y": 60}
    ]);
    (png, points)
}

async fn post_photo(
    app: &TestApp,
    token: &str,
    scene: Uuid,
    photo: Vec<u8>,
    points: Value,
) -> (StatusCode, Value) {
    let form = reqwest::multipart::Form::new()
        .part(
            "photo",
            reqwest::multipart::Part::bytes(photo).file_name("crowd.png"),
        )
        .text("points", points.to_string());
    let resp = app
        .client
        .post(app.url(&format!("/api/scenes/{scene}/photos")))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    (resp.status(), resp.json().await.unwrap_or(Value::Null))
}

/// Phones show their codes; an observer's photo locates every one of them, and refuses a
/// forged code and one from another scene.
#[tokio::test]
async fn qr_codes_in_a_photo_locate_phones() {
    let app = spawn_app().await;
    let (op, scene) = scene(&app).await;
    let other_scene = app.create_scene_sized(&op, "Other", 10.0, 10.0).await;
    app.open_scene(&op, other_scene).await;
    // the photo shows the scene 1:1 at 16 px per scene unit: (px, py) = (16 x, 16 y)
    let (w, h) = (1600u32, 960u32);
    let mut photo = image::GrayImage::from_pixel(w, h, image::Luma([128]));
    let spots = [
        (10.0, 10.0),
        (40.0, 12.0),
        (70.0, 15.0),
        (20.0, 40.0),
        (55.0, 45.0),
        (85.0, 50.0),
    ];
    let mut phones = Vec::new();
    for &(x, y) in &spots {
        let mut phone = Phone::join(&app, scene, None).await;
        let (side, modules) = qr_of(&mut phone).await;
        assert_eq!(side, 25, "version 2 codes");
        let px = 4;
        let half = side as u32 * px / 2;
        draw_code(
            &mut photo,
            side,
            &modules,
            (x * 16.0) as u32 - half,
            (y * 16.0) as u32 - half,
            px,
        );
        phones.push(phone);
    }
    // a code from another scene, and a forged one
    let mut stranger = Phone::join(&app, other_scene, None).await;
    let (side, modules) = qr_of(&mut stranger).await;
    draw_code(&mut photo, side, &modules, 200, 800, 4);
    let forged = c3s::locate::qr::sign(
        b"not the server's secret",
        scene,
        phones[0].pixel_id(),
        2_000_000_000,
    );
    let (side, modules) = c3s::locate::qr::render(&forged);
    draw_code(&mut photo, side, &modules, 1200, 100, 4);
    // and one signed with the server's own secret that expired a minute ago
    let secret = c3s::store::locate::server_secret(&app.db).await.unwrap();
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let expired = c3s::locate::qr::sign(&secret, scene, phones[1].pixel_id(), now_s - 120);
    let (side, modules) = c3s::locate::qr::render(&expired);
    draw_code(&mut photo, side, &modules, 1200, 500, 4);

    let (png, points) = photo_of_the_scene(&photo);
    let (observer, observer_id) = app.register("observer").await;
    let (status, _) = post_photo(&app, &observer, scene, png.clone(), points.clone()).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "an observer needs the observer permission"
    );
    app.call(
        Method::POST,
        &format!("/api/users/{observer_id}/permissions"),
        Some(&op),
        Some(json!({"permission": "observer", "scene_id": scene})),
    )
    .await;

    let (status, result) = post_photo(&app, &observer, scene, png.clone(), points.clone()).await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert_eq!(result["located"], 6, "{result}");
    assert_eq!(
        result["rejected"], 3,
        "forged, other scene, expired: {result}"
    );
    assert_eq!(result["detections"].as_array().unwrap().len(), 9);
    let statuses: Vec<&str> = result["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == "expired").count(),
        1,
        "{result}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == "forged").count(),
        2,
        "{result}"
    );
    for (phone, &(x, y)) in phones.iter_mut().zip(&spots) {
        let d = result["detections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["pixel_id"] == phone.pixel_id().to_string())
            .expect("every phone detected");
        assert_eq!(d["status"], "located");
        let (sx, sy) = (
            d["scene"][0].as_f64().unwrap(),
            d["scene"][1].as_f64().unwrap(),
        );
        assert!(
            (sx - x).abs() < 0.5 && (sy - y).abs() < 0.5,
            "({sx}, {sy}) for ({x}, {y})"
        );
        let located = loop {
            let v = next_json(&mut phone.socket).await;
            if v["type"] == "located" {
                break v;
            }
        };
        assert!((located["x"].as_f64().unwrap() - x).abs() < 0.5);
    }
    // the photo was one command: one event in the log for its six phones, which the
    // scene's summary counts as six placements
    let events: Vec<(String, Value)> = sqlx::query_as(
        "select event, data from scene_event where scene_id = $1 and event like 'pixel%located'",
    )
    .bind(scene)
    .fetch_all(&app.db)
    .await
    .unwrap()
    .into_iter()
    .map(|(event, data): (String, sqlx::types::Json<Value>)| (event, data.0))
    .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, "pixels_located");
    assert_eq!(events[0].1["pixels"].as_array().map(Vec::len), Some(6));
    app.summary_when(&op, scene, |s| s["located"] == 6).await;

    // bad photos and points
    let few = json!([{"px": 0, "py": 0, "x": 0, "y": 0}, {"px": 1, "py": 0, "x": 1, "y": 0}, {"px": 1, "py": 1, "x": 1, "y": 1}]);
    let line = json!([{"px": 0, "py": 0, "x": 0, "y": 0}, {"px": 100, "py": 0, "x": 10, "y": 0},
        {"px": 200, "py": 0, "x": 20, "y": 0}, {"px": 0, "py": 100, "x": 0, "y": 10}]);
    for (what, bytes, pts, expected) in [
        (
            "not an image",
            b"hello".to_vec(),
            points.clone(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "three points",
            png.clone(),
            few,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "collinear points",
            png.clone(),
            line,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "too many pixels",
            crate::images::png_bomb(),
            points.clone(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "points not JSON",
            png.clone(),
            json!("nope"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let (status, body) = post_photo(&app, &observer, scene, bytes, pts).await;
        assert_eq!(status, expected, "{what}: {body}");
        assert!(body["error"].is_string(), "{what}: {body}");
    }
    let resp = app
        .client
        .post(app.url(&format!("/api/scenes/{scene}/photos")))
        .bearer_auth(&observer)
        .body("not a form")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "bad_form");
}

/// An observer asks the crowd for their codes: every connected phone (or only the unlocated
/// ones) gets a `qr` message; a stranger may not ask.
#[tokio::test]
async fn observers_ask_phones_to_show_their_codes() {
    let app = spawn_app().await;
    let (op, scene) = scene(&app).await;
    let mut located = Phone::join(&app, scene, None).await;
    let mut waiting = Phone::join(&app, scene, None).await;
    let (status, _) = app
        .call(
            Method::PUT,
            &format!("/api/scenes/{scene}/pixels/{}/position", located.pixel_id()),
            Some(&op),
            Some(json!({"x": 5, "y": 5})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let located_msg = next_json(&mut located.socket).await;
    assert_eq!(located_msg["type"], "located");

    let path = format!("/api/scenes/{scene}/qr-codes");
    let (stranger, _) = app.register("stranger").await;
    let (status, _) = app
        .call(Method::POST, &path, Some(&stranger), Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, body) = app
        .call(
            Method::POST,
            &path,
            Some(&op),
            Some(json!({"unlocated_only": true})),
        )
        .await;
    assert_eq!((status, body["asked"].as_u64()), (StatusCode::OK, Some(1)));
    let msg = next_json(&mut waiting.socket).await;
    assert_eq!(msg["type"], "qr");
    assert_eq!(msg["side"], 25);
    assert!(
        tokio::time::timeout(
            std::time::Duration::from_millis(500),
            next_json(&mut located.socket)
        )
        .await
        .is_err(),
        "the located phone was not asked"
    );

    let (status, body) = app
        .call(Method::POST, &path, Some(&op), Some(json!({})))
        .await;
    assert_eq!((status, body["asked"].as_u64()), (StatusCode::OK, Some(2)));
    for phone in [&mut located, &mut waiting] {
        assert_eq!(next_json(&mut phone.socket).await["type"], "qr");
    }

    // a scene that does not locate by QR code does not put codes on its phones' screens
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/api/scenes/{scene}"),
            Some(&op),
            Some(json!({"location_methods": ["observer", "seat"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app
        .call(Method::POST, &path, Some(&op), Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

/// The join code names the phone page by a short address, and that address serves it.
#[tokio::test]
async fn the_join_code_leads_to_the_phone_page() {
    let app = spawn_app().await;
    let (_op, scene) = scene(&app).await;
    let (status, code) = app
        .call(
            Method::GET,
            &format!("/api/scenes/{scene}/join-code"),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{code}");
    let path = code["path"].as_str().unwrap();
    assert_eq!(path.len(), "/s/".len() + 22);
    assert!(code["url"].as_str().unwrap().ends_with(path));
    let side = code["side"].as_u64().unwrap() as usize;
    assert_eq!(code["modules"].as_str().unwrap().len(), side * side);
    let page = app.client.get(app.url(path)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("phone.js"));
}

/// The operator allows seat entry after phones joined: they are told (`scene`), and a seat
/// typed afterwards is taken (the session checks the scene as it is now, not as at join).
#[tokio::test]
async fn phones_hear_scene_changes_and_new_locating_methods_apply_at_once() {
    let app = spawn_app().await;
    let (op, scene) = scene(&app).await;
    let path = format!("/api/scenes/{scene}");
    let (status, _) = app
        .call(
            Method::PATCH,
            &path,
            Some(&op),
            Some(json!({"location_methods": ["observer"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        put_csv(&app, &op, scene, "A,1,1,10,5\n").await.0,
        StatusCode::OK
    );
    let mut phone = Phone::join(&app, scene, None).await;
    let refused = say(
        &mut phone,
        json!({"type": "seat", "section": "A", "row": "1", "seat": "1"}),
    )
    .await;
    assert_eq!(refused["type"], "locate_refused", "{refused}");

    let (status, _) = app
        .call(
            Method::PATCH,
            &path,
            Some(&op),
            Some(json!({"name": "Renamed", "location_methods": ["observer", "seat"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let told = loop {
        let v = next_json(&mut phone.socket).await;
        if v["type"] == "scene" {
            break v;
        }
    };
    assert_eq!(told["scene"]["name"], "Renamed");
    assert!(told["scene"]["updated_at"].is_string(), "{told}");
    assert_eq!(
        told["scene"]["location_methods"],
        json!(["observer", "seat"])
    );
    let located = say(
        &mut phone,
        json!({"type": "seat", "section": "A", "row": "1", "seat": "1"}),
    )
    .await;
    assert_eq!(located["type"], "located", "{located}");
    assert_eq!(located["x"], 10.0);
}

#[tokio::test]
async fn bulk_placements_record_every_observation_and_are_all_or_nothing() {
    let app = spawn_app().await;
    let (op, scene) = scene(&app).await;
    let mut a = Phone::join(&app, scene, None).await;
    let b = Phone::join(&app, scene, None).await;
    let observations = || async {
        sqlx::query_as::<_, (Uuid, f64, Option<f64>)>(
            "select pixel_id, x, contradiction from observation where scene_id = $1 order by observation_id",
        )
        .bind(scene)
        .fetch_all(&app.db)
        .await
        .unwrap()
    };
    let bulk = format!("/api/scenes/{scene}/pixels/positions");
    let (status, body) = app
        .call(
            Method::POST,
            &bulk,
            Some(&op),
            Some(json!({"positions": [
                {"pixel_id": a.pixel_id(), "x": 10, "y": 10},
                {"pixel_id": b.pixel_id(), "x": 20, "y": 10}]})),
        )
        .await;
    assert_eq!(
        (status, body["placed"].as_u64()),
        (StatusCode::OK, Some(2)),
        "{body}"
    );
    assert_eq!(next_json(&mut a.socket).await["type"], "located");
    let seen = observations().await;
    assert_eq!(seen.len(), 2, "each placement is recorded: {seen:?}");
    assert!(seen.iter().all(|(_, _, c)| c.is_none()));

    // far from where it was: placed, and the disagreement recorded with it
    let (status, body) = app
        .call(
            Method::POST,
            &bulk,
            Some(&op),
            Some(json!({"positions": [{"pixel_id": a.pixel_id(), "x": 90, "y": 50}]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seen = observations().await;
    assert_eq!(seen.len(), 3);
    assert!(seen[2].2.is_some_and(|d| d > 50.0), "{seen:?}");

    // one unknown phone: nothing placed, nothing recorded
    let (status, body) = app
        .call(
            Method::POST,
            &bulk,
            Some(&op),
            Some(json!({"positions": [
                {"pixel_id": b.pixel_id(), "x": 30, "y": 30},
                {"pixel_id": Uuid::new_v4(), "x": 40, "y": 30}]})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(observations().await.len(), 3);
    let (_, pixels) = app
        .call(
            Method::GET,
            &format!("/api/scenes/{scene}/pixels"),
            Some(&op),
            None,
        )
        .await;
    let b_now = pixels["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pixel_id"] == b.pixel_id().to_string())
        .unwrap()
        .clone();
    assert_eq!(b_now["x"], 20.0, "{b_now}");
}

#[tokio::test]
async fn a_code_seen_twice_in_a_photo_places_nobody() {
    let app = spawn_app().await;
    let (op, scene) = scene(&app).await;
    let mut twice = Phone::join(&app, scene, None).await;
    let mut once = Phone::join(&app, scene, None).await;
    let (w, h) = (1600u32, 960u32);
    let mut photo = image::GrayImage::from_pixel(w, h, image::Luma([128]));
    let (side, modules) = qr_of(&mut twice).await;
    // the phone's code, and its reflection in a window across the stand
    draw_code(&mut photo, side, &modules, 150, 150, 4);
    draw_code(&mut photo, side, &modules, 1100, 600, 4);
    let (side, modules) = qr_of(&mut once).await;
    draw_code(&mut photo, side, &modules, 700, 300, 4);
    let (png, points) = photo_of_the_scene(&photo);
    let (status, result) = post_photo(&app, &op, scene, png, points).await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert_eq!(result["located"], 1, "{result}");
    let statuses: Vec<&str> = result["detections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["pixel_id"] == twice.pixel_id().to_string())
        .map(|d| d["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["duplicate", "duplicate"], "{result}");
}
