//! The hostile crowd: each attack of the hostile-crowd issue, run against the real server
//! (bounded, loopback), with the answer it must get: a clear 4xx or 429, never a 500, a hang
//! or harm to what is stored.

use std::time::Duration;

use c3s::app::App;
use chrono::Utc;
use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use c3s::testkit::shared_mongodb_url;

use crate::helpers::{spawn_app, spawn_app_with, TestApp};
use crate::phone::{ended, next_json, open, ws_url, Ended, Phone};

async fn status_of(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> (StatusCode, Value) {
    app.call(method, path, token, Some(body)).await
}

#[tokio::test]
async fn text_with_control_characters_is_refused_at_the_edge_never_with_a_500() {
    let app = spawn_app().await;
    let (op, _) = app.register("oper").await;
    let scene = app.create_scene(&op, "Pitch").await;
    let nul = "a\u{0}b";
    let cases = [
        (
            Method::POST,
            "/api/auth/register".to_owned(),
            None,
            json!({"login": "newbie", "password": "a long password", "display_name": nul}),
        ),
        (
            Method::POST,
            "/api/auth/register".to_owned(),
            None,
            json!({"login": nul, "password": "a long password"}),
        ),
        (
            Method::POST,
            "/api/auth/guest".to_owned(),
            None,
            json!({"display_name": "\u{1b}[31mred"}),
        ),
        (
            Method::POST,
            "/api/scenes".to_owned(),
            Some(op.as_str()),
            json!({"name": nul, "width": 1, "height": 1}),
        ),
        (
            Method::POST,
            "/api/scenes".to_owned(),
            Some(op.as_str()),
            json!({"name": "ok", "description": nul, "width": 1, "height": 1}),
        ),
        (
            Method::POST,
            "/api/scenes".to_owned(),
            Some(op.as_str()),
            json!({"name": "ok", "venue": "\u{202E}evil", "width": 1, "height": 1}),
        ),
        (
            Method::PATCH,
            format!("/api/scenes/{scene}"),
            Some(op.as_str()),
            json!({"name": "two\nlines"}),
        ),
        (
            Method::POST,
            "/api/organizers".to_owned(),
            Some(op.as_str()),
            json!({"name": nul}),
        ),
    ];
    for (method, path, token, body) in cases {
        let (status, reply) = status_of(&app, method.clone(), &path, token, body.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{method} {path} {body}: {reply}"
        );
        assert!(
            reply["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("invalid_")),
            "{reply}"
        );
    }
    // a login no account can have is a failed login, not a database error
    let (status, _) = status_of(
        &app,
        Method::POST,
        "/api/auth/login",
        None,
        json!({"login": nul, "password": "x"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // a frame's name in the query
    let png = crate::images::png(4, 4);
    let (status, reply) = app
        .upload(&op, scene, "image/png", png, "?name=a%00b")
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{reply}");
    // nothing of it was stored
    let (scenes,): (i64,) = sqlx::query_as("select count(*) from scene")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(scenes, 1);
    assert_eq!(app.storage_counts().await, (0, 0));
}

#[tokio::test]
async fn an_operator_the_owner_added_cannot_take_the_scene_from_its_owner() {
    let app = spawn_app().await;
    let (owner, owner_id) = app.register("owner").await;
    let (co, co_id) = app.register("helper").await;
    let scene = app.create_scene(&owner, "Final").await;
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/api/users/{co_id}/permissions"),
            Some(&owner),
            Some(json!({"permission": "operator", "scene_id": scene})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let revoke = format!("/api/users/{owner_id}/permissions/operator?scene_id={scene}");
    let (status, body) = app.call(Method::DELETE, &revoke, Some(&co), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = app
        .call(
            Method::DELETE,
            &format!("/api/scenes/{scene}"),
            Some(&co),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // the co-operator still runs the show, and the owner can still do everything
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/api/scenes/{scene}"),
            Some(&co),
            Some(json!({"description": "tonight"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let revoke_co = format!("/api/users/{co_id}/permissions/operator?scene_id={scene}");
    assert_eq!(
        app.call(Method::DELETE, &revoke_co, Some(&owner), None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.call(
            Method::DELETE,
            &format!("/api/scenes/{scene}"),
            Some(&owner),
            None
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn the_bootstrap_admin_never_takes_over_an_account_registered_first() {
    let app = spawn_app().await;
    let (_, squatter) = app.register("boss").await;
    let mut config = app.config.clone();
    config.bootstrap_admin = Some("boss:another password".to_owned().into());
    let refused = App::build(config.clone())
        .await
        .err()
        .expect("the start is refused");
    assert!(
        format!("{refused:#}").contains("another password"),
        "{refused:#}"
    );
    let grants: (i64,) = sqlx::query_as(
        "select count(*) from user_permission join permission using (permission_id)
         where user_id = $1 and code = 'admin'",
    )
    .bind(squatter)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(grants.0, 0, "the squatter was not made admin");
    // with the account's own password it is the same person: granted
    config.bootstrap_admin = Some("boss:a long password".to_owned().into());
    let _node = App::build(config).await.expect("the same password starts");
    let me = app
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"login": "boss", "password": "a long password"})),
        )
        .await;
    let token = me.1["token"].as_str().unwrap();
    let (_, me) = app
        .call(Method::GET, "/api/auth/me", Some(token), None)
        .await;
    assert!(
        me["grants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["permission"] == "admin"),
        "{me}"
    );
}

#[tokio::test]
async fn a_crowd_of_logins_is_queued_then_told_to_retry_never_failed() {
    let app = spawn_app_with(shared_mongodb_url(), |c| {
        c.password_workers = 1;
        c.password_queue = 2;
    })
    .await;
    let logins = (0..40).map(|i| {
        let req = app
            .client
            .post(app.url("/api/auth/login"))
            .json(&json!({"login": format!("nobody{i}"), "password": "a long password"}));
        async move { req.send().await.unwrap() }
    });
    let answers = futures::future::join_all(logins).await;
    let mut refused = 0;
    for answer in &answers {
        match answer.status() {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::TOO_MANY_REQUESTS => {
                refused += 1;
                let retry: u64 = answer.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(retry >= 1);
            }
            other => panic!("a login answered {other}"),
        }
    }
    assert!(
        refused > 0,
        "40 logins at once against 1 worker and 2 places must overflow"
    );
    let (status, _) = app
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"login": "admin", "password": crate::helpers::ADMIN_PASSWORD})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "the queue drains");
}

#[tokio::test]
async fn logins_per_address_are_limited_and_forwarded_addresses_count_only_from_trusted_proxies() {
    let login = |app: &TestApp, forwarded_for: &str| {
        app.client
            .post(app.url("/api/auth/login"))
            .header("x-forwarded-for", forwarded_for)
            .json(&json!({"login": "nobody", "password": "a long password"}))
            .send()
    };
    let direct = spawn_app_with(shared_mongodb_url(), |c| c.logins_per_min = 2).await;
    // spawn_app_with logs the admin in: that was the first of the two
    assert_eq!(
        login(&direct, "10.0.0.1").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let third = login(&direct, "10.0.0.2").await.unwrap();
    assert_eq!(
        third.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "a client's own header is not believed"
    );
    assert!(third.headers().contains_key("retry-after"));
    let body: Value = third.json().await.unwrap();
    assert_eq!(body["error"], "too_many_requests");

    let proxied = spawn_app_with(shared_mongodb_url(), |c| {
        c.logins_per_min = 2;
        c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    for _ in 0..2 {
        assert_eq!(
            login(&proxied, "10.0.0.1").await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        login(&proxied, "10.0.0.1").await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // another client behind the same proxy has its own allowance
    assert_eq!(
        login(&proxied, "192.0.2.7, 10.0.0.2")
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn searches_written_differently_share_one_cache_entry() {
    let app = spawn_app().await;
    let search = |query: &str| {
        app.client
            .get(app.url(&format!("/api/search?{query}")))
            .send()
    };
    let first = search("q=Final%20%20Night&from=2030-01-01T00:00:00.000000001Z")
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["x-cache"], "miss");
    for query in [
        "q=final%20night&from=2030-01-01T00:00:00.000000002Z",
        "q=%20FINAL%20NIGHT%20&from=2030-01-01T00:00:00.9Z",
    ] {
        let again = search(query).await.unwrap();
        assert_eq!(again.headers()["x-cache"], "hit", "{query}");
    }
}

async fn seat_scene(app: &TestApp) -> (String, Uuid) {
    let (op, _) = app.register("oper").await;
    let scene = app.create_scene_sized(&op, "Stand", 100.0, 60.0).await;
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/api/scenes/{scene}"),
            Some(&op),
            Some(json!({"location_methods": ["seat", "observer"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    app.open_scene(&op, scene).await;
    let resp = app
        .client
        .put(app.url(&format!("/api/scenes/{scene}/seats")))
        .bearer_auth(&op)
        .header("content-type", "text/csv")
        .body("A,1,1,10,5\nA,1,2,11,5\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    (op, scene)
}

async fn seat_reply(phone: &mut Phone, seat: &str) -> Value {
    let msg = json!({"type": "seat", "section": "A", "row": "1", "seat": seat});
    crate::locating::say(phone, msg).await
}

#[tokio::test]
async fn a_phone_repeating_its_seat_writes_one_event_and_is_slowed_not_closed() {
    let app = spawn_app().await;
    let (_, scene) = seat_scene(&app).await;
    let mut phone = Phone::join(&app, scene, None).await;
    let (mut located, mut slowed) = (0, 0);
    for _ in 0..30 {
        let reply = seat_reply(&mut phone, "1").await;
        match reply["type"].as_str().unwrap() {
            "located" => located += 1,
            _ => {
                assert!(
                    reply["reason"]
                        .as_str()
                        .unwrap()
                        .contains("too many attempts"),
                    "{reply}"
                );
                slowed += 1;
            }
        }
    }
    assert!(
        located >= 1 && slowed >= 20,
        "located {located}, slowed {slowed}"
    );
    let (events,): (i64,) = sqlx::query_as(
        "select count(*) from scene_event where scene_id = $1 and event = 'pixel_located'",
    )
    .bind(scene)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(events, 1, "the same seat again is not news");
    let (observations,): (i64,) = sqlx::query_as(
        "select count(*) from observation o join pixel p using (pixel_id) where p.scene_id = $1",
    )
    .bind(scene)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(observations, 1);
    // still connected
    phone
        .socket
        .send(Message::text(
            json!({"type": "sync", "t0": 1.5}).to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(next_json(&mut phone.socket).await["type"], "sync");
}

#[tokio::test]
async fn a_claimed_seat_is_not_taken_by_a_second_phone() {
    let app = spawn_app().await;
    let (_, scene) = seat_scene(&app).await;
    let mut first = Phone::join(&app, scene, None).await;
    let mut second = Phone::join(&app, scene, None).await;
    assert_eq!(seat_reply(&mut first, "1").await["type"], "located");
    let reply = seat_reply(&mut second, "1").await;
    assert_eq!(reply["type"], "locate_refused", "{reply}");
    assert!(
        reply["reason"].as_str().unwrap().contains("already taken"),
        "{reply}"
    );
    assert_eq!(seat_reply(&mut second, "2").await["type"], "located");
    // the first phone may say its own seat again
    assert_eq!(seat_reply(&mut first, "1").await["type"], "located");
}

/// An organizer of `token`'s and a venue of it called Arena: their ids.
async fn organizer_and_venue(app: &TestApp, token: &str, capacity: u32) -> (String, String) {
    let (_, body) = app
        .call(
            Method::POST,
            "/api/organizers",
            Some(token),
            Some(json!({"name": "Club"})),
        )
        .await;
    let organizer = body["organizer_id"].as_str().unwrap().to_owned();
    let (status, body) = app
        .call(
            Method::POST,
            "/api/venues",
            Some(token),
            Some(json!({"organizer_id": organizer, "name": "Arena", "lat": 55.0, "lon": 37.0, "capacity": capacity})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (organizer, body["venue_id"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn schedules_with_a_pool_of_two_never_wait_on_themselves_and_phones_still_join() {
    let app = spawn_app_with(shared_mongodb_url(), |c| {
        c.db_max_connections = 2;
        c.db_phone_connections = 1;
        c.store_timeout_ms = 10_000;
    })
    .await;
    let (op, _) = app.register("oper").await;
    let (organizer, venue) = organizer_and_venue(&app, &op, 1000).await;
    let scene = app.create_scene(&op, "Night").await;
    app.open_scene(&op, scene).await;
    let starts = Utc::now() + chrono::Duration::hours(3);
    let puts = (0..48).map(|i| {
        let body = json!({"organizer_id": organizer, "venue_id": venue, "starts_at": starts + chrono::Duration::minutes(i), "capacity": 100 + i});
        let req = app.client.put(app.url(&format!("/api/scenes/{scene}/schedule"))).bearer_auth(&op).json(&body);
        async move { req.send().await.unwrap().status() }
    });
    let (statuses, phone) = tokio::join!(
        futures::future::join_all(puts),
        Phone::join(&app, scene, None)
    );
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(phone.welcome["type"], "welcome");
}

#[tokio::test]
async fn close_reasons_fit_a_close_frame_and_a_phone_that_closes_is_answered() {
    let app = spawn_app().await;
    let (op, _) = app.register("oper").await;
    let scene = app.create_scene(&op, "Pitch").await;
    app.open_scene(&op, scene).await;

    let mut socket = open(&app, scene).await;
    socket
        .send(Message::text(
            json!({"type": "hello", "protocol": 4_000_000_000u32}).to_string(),
        ))
        .await
        .unwrap();
    let Ended::Closed(code, reason) = ended(&mut socket, Duration::from_secs(5)).await else {
        panic!("no close frame");
    };
    assert!(
        (4000..5000).contains(&code) && reason.len() <= 123,
        "{code} {reason}"
    );

    let mut phone = Phone::join(&app, scene, None).await;
    let unknown = json!({"type": "x".repeat(3000)}).to_string();
    phone.socket.send(Message::text(unknown)).await.unwrap();
    match phone.ended(Duration::from_secs(5)).await {
        Ended::Closed(code, reason) => {
            assert_eq!(code, c3s::dataplane::protocol::close::BAD_MESSAGE);
            assert!(reason.len() <= 123 && !reason.contains("xxx"), "{reason}");
        }
        Ended::Dropped => panic!("the close frame did not reach the client"),
    }

    let mut phone = Phone::join(&app, scene, None).await;
    phone.socket.close(None).await.unwrap();
    assert!(
        matches!(phone.ended(Duration::from_secs(5)).await, Ended::Closed(..)),
        "the phone's close is answered"
    );
}

#[tokio::test]
async fn a_sync_request_s_t0_is_echoed_exactly() {
    let app = spawn_app().await;
    let (op, _) = app.register("oper").await;
    let scene = app.create_scene(&op, "Pitch").await;
    app.open_scene(&op, scene).await;
    let mut phone = Phone::join(&app, scene, None).await;
    // fewer than the 40 messages a phone may send at once
    let mut x = 0.1f64;
    for i in 0..30 {
        x = (x * 1.618_033_988_749_895 + 0.000_123 * f64::from(i)) % 1.0e7;
        let msg = format!(r#"{{"type":"sync","t0":{x}}}"#);
        phone.socket.send(Message::text(msg)).await.unwrap();
        let reply = next_json(&mut phone.socket).await;
        assert_eq!(
            reply["t0"].as_f64().unwrap().to_bits(),
            x.to_bits(),
            "{x} came back as {}",
            reply["t0"]
        );
    }
}

#[tokio::test]
async fn silent_sockets_from_one_address_are_bounded() {
    let app = spawn_app_with(shared_mongodb_url(), |c| c.pending_sockets_per_address = 3).await;
    let (op, _) = app.register("oper").await;
    let scene = app.create_scene(&op, "Pitch").await;
    app.open_scene(&op, scene).await;
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(open(&app, scene).await);
    }
    match tokio_tungstenite::connect_async(ws_url(&app, scene)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS)
        }
        other => panic!(
            "a fourth silent socket was not refused: {:?}",
            other.map(|_| ())
        ),
    }
    // one says hello: its place is free again
    let hello = json!({"type": "hello", "protocol": 1}).to_string();
    silent[0].send(Message::text(hello)).await.unwrap();
    assert_eq!(next_json(&mut silent[0]).await["type"], "welcome");
    let _again = Phone::join(&app, scene, None).await;
}

#[tokio::test]
async fn a_burst_of_scene_edits_never_drops_a_phone() {
    let app = spawn_app().await;
    let (op, _) = app.register("oper").await;
    let scene = app.create_scene(&op, "Pitch").await;
    app.open_scene(&op, scene).await;
    let mut phone = Phone::join(&app, scene, None).await;
    for i in 0..60 {
        let (status, _) = app
            .call(
                Method::PATCH,
                &format!("/api/scenes/{scene}"),
                Some(&op),
                Some(json!({"name": format!("edit {i}")})),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    // the phone hears the last edit, and is still there
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let msg = tokio::time::timeout_at(deadline, phone.socket.next())
            .await
            .expect("the last edit in time");
        match msg.expect("open").expect("read") {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v["type"] == "scene" && v["scene"]["name"] == "edit 59" {
                    break;
                }
            }
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => {}
        }
    }
}

/// A GIF whose logical screen and first frame are `side` × `side` of one colour, followed by
/// `tiny` one-pixel frames: a few kB per million pixels, written by hand (8-bit LZW codes with
/// a clear code every 100 pixels, so every code is one literal byte).
fn gif_bomb(side: u16, tiny: usize) -> Vec<u8> {
    let mut gif = b"GIF89a".to_vec();
    gif.extend(side.to_le_bytes());
    gif.extend(side.to_le_bytes());
    gif.extend([0xF6, 0, 0]); // a global table of 128 colours
    gif.extend(std::iter::repeat_n(0u8, 128 * 3));
    let frame = |gif: &mut Vec<u8>, w: u16, h: u16| {
        gif.extend([0x21, 0xF9, 4, 0, 5, 0, 0, 0]); // 50 ms
        gif.push(0x2C);
        gif.extend([0, 0, 0, 0]);
        gif.extend(w.to_le_bytes());
        gif.extend(h.to_le_bytes());
        gif.push(0);
        gif.push(7); // LZW minimum code size: codes of 8 bits
        let mut codes = Vec::new();
        for i in 0..usize::from(w) * usize::from(h) {
            if i % 100 == 0 {
                codes.push(128); // clear
            }
            codes.push(0);
        }
        codes.push(129); // end
        for block in codes.chunks(255) {
            gif.push(block.len() as u8);
            gif.extend(block);
        }
        gif.push(0);
    };
    frame(&mut gif, side, side);
    for _ in 0..tiny {
        frame(&mut gif, 1, 1);
    }
    gif.push(0x3B);
    gif
}

#[tokio::test]
async fn an_animation_is_bounded_in_the_pixels_of_all_its_frames() {
    let app = spawn_app_with(shared_mongodb_url(), |c| c.max_animation_pixels = 3_000_000).await;
    let (op, _) = app.register("oper").await;
    let scene = app.create_scene(&op, "Pitch").await;
    // 20 frames of a 1000 × 1000 canvas: 20 million pixels, in a 1 MB file
    let (status, body) = app
        .upload(&op, scene, "image/gif", gif_bomb(1000, 19), "")
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"], "animation_too_large");
    assert_eq!(app.storage_counts().await, (0, 0), "nothing stored");
    // two frames of it fit
    let (status, body) = app
        .upload(&op, scene, "image/gif", gif_bomb(1000, 1), "")
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_trickling_upload_is_cut_off_and_frees_its_slot_for_another_operator() {
    let app = spawn_app_with(shared_mongodb_url(), |c| {
        c.upload_concurrency = 1;
        c.min_body_bytes_per_s = 10_000;
        c.body_rate_grace_ms = 1000;
    })
    .await;
    let (op, _) = app.register("oper").await;
    let scene = app.create_scene(&op, "Pitch").await;
    // 100 bytes a second of a PNG that would be 1 MB
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let trickle =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let slow = app
        .client
        .post(app.url(&format!("/api/scenes/{scene}/frames")))
        .bearer_auth(&op)
        .header("content-type", "image/png")
        .body(reqwest::Body::wrap_stream(trickle))
        .send();
    let feed = async move {
        for _ in 0..50 {
            if tx.send(Ok(vec![0u8; 100])).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    let other = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.upload(&op, scene, "image/png", crate::images::png(8, 8), "")
            .await
    };
    let (slow, _, (status, body)) = tokio::join!(
        async { tokio::time::timeout(Duration::from_secs(20), slow).await },
        async { tokio::time::timeout(Duration::from_secs(20), feed).await },
        other
    );
    assert_eq!(
        status,
        StatusCode::CREATED,
        "the other upload went through: {body}"
    );
    let slow = slow
        .expect("the trickle was cut off within 20 s")
        .expect("an answer");
    assert_eq!(slow.status(), StatusCode::REQUEST_TIMEOUT);
}

#[tokio::test]
async fn anonymous_calendar_feeds_are_built_once_per_change() {
    let app = spawn_app().await;
    let (op, _) = app.register("oper").await;
    let (organizer, venue) = organizer_and_venue(&app, &op, 10).await;
    let feed = || {
        app.client
            .get(app.url(&format!("/api/venues/{venue}/calendar.ics")))
            .send()
    };
    let cache = |r: &reqwest::Response| r.headers()["x-cache"].to_str().unwrap().to_owned();
    assert_eq!(cache(&feed().await.unwrap()), "miss");
    for _ in 0..20 {
        assert_eq!(cache(&feed().await.unwrap()), "hit");
    }
    let (status, _) = app
        .call(
            Method::PUT,
            &format!("/api/venues/{venue}"),
            Some(&op),
            Some(json!({"organizer_id": organizer, "name": "Arena Two", "lat": 55.0, "lon": 37.0, "capacity": 10})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let changed = feed().await.unwrap();
    assert_eq!(cache(&changed), "miss", "a change is seen at once");
    assert!(changed.text().await.unwrap().contains("Arena Two"));
}

/// Every status the shared layers can answer is in each operation's OpenAPI entry.
#[tokio::test]
async fn every_operation_lists_the_statuses_the_shared_layers_answer() {
    let app = spawn_app().await;
    let doc: Value = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/api/") {
            continue;
        }
        for (method, op) in item.as_object().unwrap() {
            let listed = |status: &str| op["responses"].get(status).is_some();
            let needs = [
                (
                    "400",
                    op.get("parameters").is_some() || op.get("requestBody").is_some(),
                ),
                ("401", op.get("security").is_some()),
                ("415", op.get("requestBody").is_some()),
                ("503", true),
            ];
            for (status, needed) in needs {
                assert!(
                    !needed || listed(status),
                    "{method} {path} does not list {status}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 50, "{checked} operations");
}

#[tokio::test]
async fn a_scene_s_phones_write_to_its_log_within_a_budget() {
    let app = spawn_app_with(shared_mongodb_url(), |c| c.scene_phone_writes_per_s = 1).await;
    let (op, _) = app.register("oper").await;
    let scene = app.create_scene_sized(&op, "Stand", 100.0, 60.0).await;
    app.call(
        Method::PATCH,
        &format!("/api/scenes/{scene}"),
        Some(&op),
        Some(json!({"location_methods": ["seat"]})),
    )
    .await;
    app.open_scene(&op, scene).await;
    let csv: String = (1..=12).map(|s| format!("A,1,{s},{s},5\n")).collect();
    let resp = app
        .client
        .put(app.url(&format!("/api/scenes/{scene}/seats")))
        .bearer_auth(&op)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let started = std::time::Instant::now();
    let (mut located, mut refused) = (0, 0);
    for s in 1..=12 {
        let mut phone = Phone::join(&app, scene, None).await;
        match seat_reply(&mut phone, &s.to_string()).await["type"].as_str() {
            Some("located") => located += 1,
            _ => refused += 1,
        }
    }
    // a burst of ten seconds' worth, then one a second
    let refilled = started.elapsed().as_secs_f64().ceil() as i32;
    assert!(
        located >= 10 && located <= 10 + refilled,
        "{located} located in {refilled} s"
    );
    if refilled < 2 {
        assert!(refused > 0, "past the burst, seats are refused");
    }
}

/// A show playing to a few phones goes on unharmed while the attacks run against the same
/// server: every colour arrives before its instant, and no phone is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_show_plays_on_unharmed_while_the_attacks_run() {
    let app = spawn_app_with(shared_mongodb_url(), |c| {
        c.password_workers = 1;
        c.password_queue = 4;
        c.logins_per_min = 30;
        c.searches_per_min = 100;
        c.pending_sockets_per_address = 40;
        c.min_body_bytes_per_s = 10_000;
        c.body_rate_grace_ms = 1000;
    })
    .await;
    let (op, scene) = crate::realtime::two_frame_scene(&app, true, 100).await;
    let mut phones = Vec::new();
    for i in 0..3 {
        let phone = Phone::join(&app, scene, None).await;
        app.place(&op, scene, phone.pixel_id(), 0.5 + f64::from(i % 2), 0.5)
            .await;
        phones.push(phone);
    }
    let state = crate::realtime::command(
        &app,
        &op,
        scene,
        json!({"command": "play", "start_in_ms": 1000}),
    )
    .await;
    let t0 = state["timeline"]["current"]["anchor_ms"].as_i64().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    // each phone reads everything, and says how many colours came late and how it ended
    let watchers: Vec<_> = phones
        .into_iter()
        .map(|mut phone| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut late, mut chunks) = (0, 0);
                loop {
                    let msg = tokio::select! {
                        _ = stop.cancelled() => return (late, chunks, None),
                        msg = phone.socket.next() => msg,
                    };
                    match msg {
                        Some(Ok(Message::Binary(bytes))) => {
                            let arrived = c3s::clock::now_ms();
                            let c = c3s::dataplane::chunk::decode(&bytes).unwrap();
                            chunks += 1;
                            late += c
                                .entries
                                .iter()
                                .filter(|(at, _)| *at >= t0 && *at < arrived)
                                .count();
                        }
                        Some(Ok(Message::Close(frame))) => {
                            return (late, chunks, Some(format!("{frame:?}")))
                        }
                        Some(Ok(_)) => {}
                        other => return (late, chunks, Some(format!("{other:?}"))),
                    }
                }
            })
        })
        .collect();

    let (attacker, _) = app.register("mallory").await;
    // the attacks start once the show plays
    let until_play = (t0 + 100 - c3s::clock::now_ms()).max(0) as u64;
    tokio::time::sleep(Duration::from_millis(until_play)).await;
    let nul = async {
        for _ in 0..20 {
            let (status, _) = app
                .call(
                    Method::POST,
                    "/api/scenes",
                    Some(&attacker),
                    Some(json!({"name": "a\u{0}b", "width": 1, "height": 1})),
                )
                .await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        }
    };
    let logins = async {
        let all = (0..100).map(|i| {
            app.client
                .post(app.url("/api/auth/login"))
                .json(&json!({"login": format!("nobody{i}"), "password": "a long password"}))
                .send()
        });
        for answer in futures::future::join_all(all).await {
            let status = answer.unwrap().status();
            assert!(
                status == StatusCode::UNAUTHORIZED || status == StatusCode::TOO_MANY_REQUESTS,
                "{status}"
            );
        }
    };
    let searches = async {
        let all = (0..300).map(|i| {
            app.client
                .get(app.url(&format!(
                    "/api/search?from=2030-01-01T00:00:00.{:09}Z",
                    i + 1
                )))
                .send()
        });
        for answer in futures::future::join_all(all).await {
            let status = answer.unwrap().status();
            assert!(
                status == StatusCode::OK || status == StatusCode::TOO_MANY_REQUESTS,
                "{status}"
            );
        }
    };
    let silent = async {
        let mut sockets = Vec::new();
        for _ in 0..60 {
            if let Ok((socket, _)) = tokio_tungstenite::connect_async(ws_url(&app, scene)).await {
                sockets.push(socket);
            }
        }
        assert_eq!(
            sockets.len(),
            40,
            "the silent sockets past the bound are refused"
        );
    };
    let malformed = async {
        for _ in 0..10 {
            let mut phone = Phone::join(&app, scene, None).await;
            phone
                .socket
                .send(Message::text(json!({"type": "x".repeat(3000)}).to_string()))
                .await
                .unwrap();
            assert!(matches!(
                phone.ended(Duration::from_secs(5)).await,
                Ended::Closed(4000, _)
            ));
        }
    };
    let trickle = async {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
        let body =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
        let feed = async move {
            for _ in 0..20 {
                if tx.send(Ok(vec![0u8; 100])).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        };
        let upload = app
            .client
            .post(app.url(&format!("/api/scenes/{scene}/frames")))
            .bearer_auth(&op)
            .header("content-type", "image/png")
            .body(reqwest::Body::wrap_stream(body))
            .send();
        let (answer, _) = tokio::join!(upload, feed);
        assert_eq!(answer.unwrap().status(), StatusCode::REQUEST_TIMEOUT);
    };
    tokio::join!(nul, logins, searches, silent, trickle);
    // (after the silent sockets are gone: these phones say hello through the same bound)
    malformed.await;
    // the show must have been playing through the attacks
    let ran_until = c3s::clock::now_ms();
    assert!(
        ran_until > t0 + 1000,
        "the attacks ran while the show played"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    for watcher in watchers {
        let (late, chunks, ended) = watcher.await.unwrap();
        assert_eq!(ended, None, "a phone of the show was closed");
        assert!(chunks > 3, "{chunks} chunks");
        assert_eq!(late, 0, "colours arrived late");
    }
}
