//! Organizers, venues, the calendar (JSON and iCalendar), registrations, search and its cache,
//! and CORS, against the real server and PostgreSQL.

use chrono::{Duration, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use c3s::store::calendar::{explain_search, Search};

use crate::helpers::{shared_mongodb_url, spawn_app, spawn_app_with, TestApp};

/// Helsinki railway station and Tampere's, about 160 km apart.
const HELSINKI: (f64, f64) = (60.1719, 24.9414);
const TAMPERE: (f64, f64) = (61.4981, 23.7734);

async fn ok(app: &TestApp, method: Method, path: &str, token: &str, body: Option<Value>) -> Value {
    let (status, body) = app.call(method.clone(), path, Some(token), body).await;
    assert!(status.is_success(), "{method} {path}: {status} {body}");
    body
}

async fn organizer(app: &TestApp, token: &str, name: &str) -> Uuid {
    let body = ok(
        app,
        Method::POST,
        "/api/organizers",
        token,
        Some(json!({"name": name})),
    )
    .await;
    body["organizer_id"].as_str().unwrap().parse().unwrap()
}

async fn venue(
    app: &TestApp,
    token: &str,
    organizer: Uuid,
    name: &str,
    (lat, lon): (f64, f64),
    features: &[&str],
) -> Uuid {
    let body = ok(
        app,
        Method::POST,
        "/api/venues",
        token,
        Some(
            json!({"organizer_id": organizer, "name": name, "address": "Main street 1",
            "lat": lat, "lon": lon, "capacity": 1000, "features": features,
            "details": {"doors_open": "18:00"}}),
        ),
    )
    .await;
    body["venue_id"].as_str().unwrap().parse().unwrap()
}

/// An open scene put on the calendar at `venue`, `in_hours` from now.
async fn show(
    app: &TestApp,
    token: &str,
    name: &str,
    organizer: Option<Uuid>,
    venue: Uuid,
    in_hours: i64,
    capacity: i32,
) -> Uuid {
    let scene = app.create_scene(token, name).await;
    app.open_scene(token, scene).await;
    let starts = Utc::now() + Duration::hours(in_hours);
    ok(
        app,
        Method::PUT,
        &format!("/api/scenes/{scene}/schedule"),
        token,
        Some(
            json!({"organizer_id": organizer, "venue_id": venue, "starts_at": starts,
            "ends_at": starts + Duration::hours(2), "capacity": capacity}),
        ),
    )
    .await;
    scene
}

fn names(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn organizers_venues_the_calendar_and_who_may_manage_what() {
    let app = spawn_app().await;
    let (owner, _) = app.register("owner").await;
    let (helper, _) = app.register("helper").await;
    let (outsider, _) = app.register("outsider").await;
    let club = organizer(&app, &owner, "Rock Club").await;
    let arena = venue(
        &app,
        &owner,
        club,
        "Arena",
        HELSINKI,
        &["step_free", "hearing_loop"],
    )
    .await;
    let got = ok(
        &app,
        Method::GET,
        &format!("/api/venues/{arena}"),
        &owner,
        None,
    )
    .await;
    assert_eq!(got["features"], json!(["hearing_loop", "step_free"]));
    assert_eq!(got["details"]["doors_open"], "18:00");

    // an outsider manages none of it
    let (status, _) = app
        .call(
            Method::POST,
            "/api/venues",
            Some(&outsider),
            Some(json!({"organizer_id": club, "name": "Mine", "lat": 1.0, "lon": 1.0, "capacity": 5})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app
        .call(
            Method::GET,
            &format!("/api/organizers/{club}/members"),
            Some(&outsider),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // ... not even its own scene under the club
    let own = app.create_scene(&outsider, "Gatecrash").await;
    let (status, body) = app
        .call(
            Method::PUT,
            &format!("/api/scenes/{own}/schedule"),
            Some(&outsider),
            Some(json!({"organizer_id": club, "venue_id": arena, "starts_at": Utc::now() + Duration::days(1)})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // ... nor put it on the club's venue's calendar without the club
    let (status, body) = app
        .call(
            Method::PUT,
            &format!("/api/scenes/{own}/schedule"),
            Some(&outsider),
            Some(json!({"venue_id": arena, "starts_at": Utc::now() + Duration::days(1)})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    let night = show(&app, &owner, "Night of Fire", Some(club), arena, 48, 100).await;
    let (status, _) = app
        .call(
            Method::GET,
            &format!("/api/scenes/{night}/registrations"),
            Some(&outsider),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app
        .call(
            Method::PUT,
            &format!("/api/scenes/{night}/schedule"),
            Some(&helper),
            Some(json!({"organizer_id": club, "venue_id": arena, "starts_at": Utc::now() + Duration::days(3)})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "not a member yet");

    // a member added by the owner manages the club's venue and shows
    ok(
        &app,
        Method::POST,
        &format!("/api/organizers/{club}/members"),
        &owner,
        Some(json!({"login": "helper"})),
    )
    .await;
    ok(
        &app,
        Method::PUT,
        &format!("/api/venues/{arena}"),
        &helper,
        Some(
            json!({"name": "Big Arena", "address": "Main street 1", "lat": HELSINKI.0,
            "lon": HELSINKI.1, "capacity": 1200, "features": ["step_free"]}),
        ),
    )
    .await;
    let starts = Utc::now() + Duration::hours(72);
    let schedule = ok(
        &app,
        Method::PUT,
        &format!("/api/scenes/{night}/schedule"),
        &helper,
        Some(json!({"organizer_id": club, "venue_id": arena, "starts_at": starts})),
    )
    .await;
    assert_eq!(
        schedule["capacity"], 1200,
        "the venue's capacity by default"
    );
    let (status, body) = app
        .call(
            Method::PUT,
            &format!("/api/scenes/{night}/schedule"),
            Some(&helper),
            Some(
                json!({"organizer_id": club, "venue_id": arena, "starts_at": starts,
                "ends_at": starts - Duration::hours(1)}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"], "invalid_times");

    // the calendar: by venue, by organizer, by window; drafts are not on it
    let other = venue(&app, &owner, club, "Hall", TAMPERE, &[]).await;
    show(&app, &owner, "Hall Party", Some(club), other, 24, 50).await;
    let draft = app.create_scene(&owner, "Secret").await;
    ok(
        &app,
        Method::PUT,
        &format!("/api/scenes/{draft}/schedule"),
        &owner,
        Some(json!({"organizer_id": club, "venue_id": other, "starts_at": Utc::now() + Duration::hours(30)})),
    )
    .await;
    // a draft's calendar entry is its operators' business
    let (status, _) = app
        .call(
            Method::GET,
            &format!("/api/scenes/{draft}/schedule"),
            Some(&outsider),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/api/scenes/{draft}/registrations"),
            Some(&outsider),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let by_club = ok(
        &app,
        Method::GET,
        &format!("/api/calendar?organizer_id={club}"),
        &outsider,
        None,
    )
    .await;
    assert_eq!(
        names(&by_club),
        ["Hall Party", "Night of Fire"],
        "soonest first"
    );
    let by_venue = ok(
        &app,
        Method::GET,
        &format!("/api/calendar?venue_id={arena}"),
        &outsider,
        None,
    )
    .await;
    assert_eq!(names(&by_venue), ["Night of Fire"]);
    assert_eq!(by_venue["items"][0]["venue_name"], "Big Arena");
    let to = (Utc::now() + Duration::hours(36)).to_rfc3339();
    let (status, window) = app
        .call(
            Method::GET,
            &format!("/api/calendar?organizer_id={club}&to={}", urlencode(&to)),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{window}");
    assert_eq!(names(&window), ["Hall Party"]);

    // iCalendar
    let resp = app
        .client
        .get(app.url(&format!("/api/venues/{arena}/calendar.ics")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/calendar"));
    let ics = resp.text().await.unwrap();
    assert!(ics.starts_with("BEGIN:VCALENDAR\r\n"), "{ics}");
    assert!(ics.contains(&format!("UID:{night}@c3s\r\n")), "{ics}");
    assert!(ics.contains("SUMMARY:Night of Fire\r\n"), "{ics}");
    assert!(
        ics.contains(&format!("DTSTART:{}\r\n", starts.format("%Y%m%dT%H%M%SZ"))),
        "{ics}"
    );
    assert!(
        ics.contains("LOCATION:Big Arena\\, Main street 1\r\n"),
        "{ics}"
    );
    assert!(ics.trim_end().ends_with("END:VCALENDAR"));
    let club_ics = app
        .client
        .get(app.url(&format!("/api/organizers/{club}/calendar.ics")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(club_ics.matches("BEGIN:VEVENT").count(), 2, "{club_ics}");

    // the log has the scheduling
    let (_, log) = app
        .call(
            Method::GET,
            &format!("/api/scenes/{night}/events"),
            Some(&owner),
            None,
        )
        .await;
    assert!(log["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["event"] == "scene_scheduled"));
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn the_last_seats_go_to_exactly_as_many_as_fit() {
    let app = spawn_app().await;
    let (owner, _) = app.register("owner").await;
    let club = organizer(&app, &owner, "Club").await;
    let hall = venue(&app, &owner, club, "Hall", HELSINKI, &[]).await;
    let scene = show(&app, &owner, "Tiny gig", Some(club), hall, 24, 5).await;
    let mut fans = Vec::new();
    for i in 0..30 {
        fans.push(app.register(&format!("fan{i}")).await.0);
    }
    let app_ref = &app;
    let attempts = fans.iter().map(|fan| async move {
        app_ref
            .call(
                Method::POST,
                &format!("/api/scenes/{scene}/registrations"),
                Some(fan),
                None,
            )
            .await
    });
    let results = futures::future::join_all(attempts).await;
    let won = results
        .iter()
        .filter(|r| r.0 == StatusCode::CREATED)
        .count();
    let full = results
        .iter()
        .filter(|r| r.0 == StatusCode::CONFLICT && r.1["message"] == "the show is full")
        .count();
    assert_eq!((won, full), (5, 25), "{results:?}");
    let registered: i32 = sqlx::query_scalar("select registered from scene where scene_id = $1")
        .bind(scene)
        .fetch_one(&app.db)
        .await
        .unwrap();
    let rows: i64 = sqlx::query_scalar("select count(*) from registration where scene_id = $1")
        .bind(scene)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!((registered, rows), (5, 5));
    let list = ok(
        &app,
        Method::GET,
        &format!("/api/scenes/{scene}/registrations"),
        &owner,
        None,
    )
    .await;
    assert_eq!(list.as_array().unwrap().len(), 5);

    // one cancels: one more fits; registering twice is not two seats
    let winner = fans
        .iter()
        .zip(&results)
        .find(|(_, r)| r.0 == StatusCode::CREATED)
        .unwrap()
        .0;
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/api/scenes/{scene}/registrations/me"),
            Some(winner),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let loser = fans
        .iter()
        .zip(&results)
        .find(|(_, r)| r.0 == StatusCode::CONFLICT)
        .unwrap()
        .0;
    let path = format!("/api/scenes/{scene}/registrations");
    let (status, body) = app.call(Method::POST, &path, Some(loser), None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["registered"], 5);
    let (status, _) = app.call(Method::POST, &path, Some(loser), None).await;
    assert_eq!(status, StatusCode::OK, "already registered");
    // the database itself refuses a sixth
    let err = sqlx::query("update scene set registered = 6 where scene_id = $1")
        .bind(scene)
        .execute(&app.db)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("scene_capacity_kept"), "{err}");

    // guests and shows past do not take registrations
    let (guest, _) = app.guest().await;
    let (status, _) = app.call(Method::POST, &path, Some(&guest), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let past = app.create_scene(&owner, "Yesterday").await;
    app.open_scene(&owner, past).await;
    ok(
        &app,
        Method::PUT,
        &format!("/api/scenes/{past}/schedule"),
        &owner,
        Some(json!({"venue_id": hall, "starts_at": Utc::now() - Duration::hours(20)})),
    )
    .await;
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/api/scenes/{past}/registrations"),
            Some(loser),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
}

/// A search through the HTTP API: (status, X-Cache, body).
async fn search(app: &TestApp, query: &str) -> (StatusCode, String, Value) {
    let resp = app
        .client
        .get(app.url(&format!("/api/search?{query}")))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let cache = resp
        .headers()
        .get("x-cache")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, cache, resp.json().await.unwrap())
}

#[tokio::test]
async fn search_combines_text_distance_time_and_needs_and_is_never_stale() {
    let app = spawn_app().await;
    let (owner, _) = app.register("owner").await;
    let club = organizer(&app, &owner, "Club").await;
    let arena = venue(
        &app,
        &owner,
        club,
        "Harbour Arena",
        HELSINKI,
        &["step_free", "quiet_zone"],
    )
    .await;
    let hall = venue(&app, &owner, club, "Lake Hall", TAMPERE, &["step_free"]).await;
    let fireworks = show(&app, &owner, "Fireworks Finale", Some(club), arena, 24, 100).await;
    show(&app, &owner, "Quiet Strings", Some(club), arena, 48, 100).await;
    show(
        &app,
        &owner,
        "Fireworks by the Lake",
        Some(club),
        hall,
        30,
        100,
    )
    .await;

    // text, ranked
    let (status, cache, page) = search(&app, "q=fireworks").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(cache, "miss");
    let mut found = names(&page);
    found.sort();
    assert_eq!(found, ["Fireworks Finale", "Fireworks by the Lake"]);
    assert!(page["items"][0]["rank"].as_f64().unwrap() > 0.0);
    let (_, cache, again) = search(&app, "q=fireworks").await;
    assert_eq!((cache.as_str(), &again), ("hit", &page));
    // venue text counts too
    assert_eq!(names(&search(&app, "q=harbour").await.2).len(), 2);
    // distance: within 50 km of Helsinki
    let near = format!("lat={}&lon={}&radius_km=50", HELSINKI.0, HELSINKI.1);
    let page = search(&app, &format!("q=fireworks&{near}")).await.2;
    assert_eq!(names(&page), ["Fireworks Finale"]);
    let page = search(
        &app,
        &format!("lat={}&lon={}&radius_km=300", TAMPERE.0, TAMPERE.1),
    )
    .await
    .2;
    assert_eq!(names(&page)[0], "Fireworks by the Lake", "nearest first");
    assert!(page["items"][0]["distance_km"].as_f64().unwrap() < 1.0);
    // time window
    let to = urlencode(&(Utc::now() + Duration::hours(36)).to_rfc3339());
    let mut found = names(&search(&app, &format!("to={to}")).await.2);
    found.sort();
    assert_eq!(found, ["Fireworks Finale", "Fireworks by the Lake"]);
    // needs: a quiet zone is only at the arena
    let page = search(&app, "features=quiet_zone,step_free").await.2;
    assert_eq!(names(&page), ["Fireworks Finale", "Quiet Strings"]);
    // everything at once
    let page = search(
        &app,
        &format!("q=fireworks&{near}&to={to}&features=quiet_zone"),
    )
    .await
    .2;
    assert_eq!(names(&page), ["Fireworks Finale"]);
    // paging
    let page = search(&app, "per_page=2").await.2;
    assert_eq!((names(&page).len(), &page["has_more"]), (2, &json!(true)));

    // every kind of change shows in the next search: the scene ...
    assert_eq!(search(&app, "q=fireworks").await.1, "hit");
    ok(
        &app,
        Method::PATCH,
        &format!("/api/scenes/{fireworks}"),
        &owner,
        Some(json!({"name": "Grand Finale"})),
    )
    .await;
    let (_, cache, page) = search(&app, "q=fireworks").await;
    assert_eq!(
        (cache.as_str(), names(&page)),
        ("miss", vec!["Fireworks by the Lake".to_owned()])
    );
    // ... the venue ...
    assert_eq!(names(&search(&app, "features=quiet_zone").await.2).len(), 2);
    ok(
        &app,
        Method::PUT,
        &format!("/api/venues/{arena}"),
        &owner,
        Some(
            json!({"name": "Harbour Arena", "lat": HELSINKI.0, "lon": HELSINKI.1,
            "capacity": 1000, "features": ["step_free"]}),
        ),
    )
    .await;
    assert_eq!(names(&search(&app, "features=quiet_zone").await.2).len(), 0);
    ok(
        &app,
        Method::PUT,
        &format!("/api/venues/{hall}"),
        &owner,
        Some(json!({"name": "Lake Hall Annex", "lat": TAMPERE.0, "lon": TAMPERE.1, "capacity": 1000})),
    )
    .await;
    assert_eq!(
        names(&search(&app, "q=annex").await.2),
        ["Fireworks by the Lake"]
    );
    // ... and the schedule
    let page = search(&app, &format!("to={to}")).await.2;
    assert!(names(&page).contains(&"Grand Finale".to_owned()));
    ok(
        &app,
        Method::PUT,
        &format!("/api/scenes/{fireworks}/schedule"),
        &owner,
        Some(json!({"organizer_id": club, "venue_id": arena, "starts_at": Utc::now() + Duration::hours(60)})),
    )
    .await;
    let page = search(&app, &format!("to={to}")).await.2;
    assert!(!names(&page).contains(&"Grand Finale".to_owned()), "{page}");
}

#[tokio::test]
async fn bad_search_and_venue_input_gets_a_clear_error() {
    let app = spawn_app().await;
    for (query, code) in [
        ("lat=91&lon=0", "invalid_coordinates"),
        ("lat=60", "invalid_coordinates"),
        ("radius_km=5", "invalid_coordinates"),
        ("lat=60&lon=24&radius_km=0", "invalid_radius"),
        ("lat=60&lon=24&radius_km=NaN", "invalid_radius"),
        (
            "from=2030-01-02T00:00:00Z&to=2030-01-01T00:00:00Z",
            "invalid_window",
        ),
        ("features=step_free,jetpack_dock", "unknown_feature"),
    ] {
        let (status, _, body) = search(&app, query).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
        assert_eq!(body["error"], code, "{query}: {body}");
    }
    let (_, _, body) = search(&app, "features=jetpack_dock").await;
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("jetpack_dock") && message.contains("hearing_loop"),
        "{message}"
    );
    let (status, _, body) = search(&app, &format!("q={}", "x".repeat(201))).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("invalid_text"))
    );
    let (status, _, body) = search(&app, "from=yesterday").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _, body) = search(&app, "from=-5000-01-01T00:00:00Z").await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("invalid_time")),
        "{body}"
    );
    let (status, _, body) = search(&app, "q=a%00b").await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("invalid_text")),
        "{body}"
    );
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/api/scenes/{}/registrations", Uuid::new_v4()),
            Some(&app.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    let (owner, _) = app.register("owner").await;
    let club = organizer(&app, &owner, "Club").await;
    for (venue, code) in [
        (
            json!({"organizer_id": club, "name": "X", "lat": 0, "lon": 200, "capacity": 1}),
            "invalid_coordinates",
        ),
        (
            json!({"organizer_id": club, "name": "X", "lat": 0, "lon": 0, "capacity": 0}),
            "invalid_capacity",
        ),
        (
            json!({"organizer_id": club, "name": "X", "lat": 0, "lon": 0, "capacity": 1, "features": ["moat"]}),
            "unknown_feature",
        ),
        (
            json!({"organizer_id": club, "name": " ", "lat": 0, "lon": 0, "capacity": 1}),
            "invalid_text",
        ),
        (
            json!({"organizer_id": club, "name": "A\u{0}B", "lat": 0, "lon": 0, "capacity": 1}),
            "invalid_text",
        ),
    ] {
        let (status, body) = app
            .call(
                Method::POST,
                "/api/venues",
                Some(&owner),
                Some(venue.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{venue}: {body}");
        assert_eq!(body["error"], code, "{venue}: {body}");
    }
}

#[tokio::test]
async fn cors_lets_only_the_configured_origins_in() {
    let app = spawn_app_with(shared_mongodb_url(), |c| {
        c.cors_origins = vec!["https://club.example".into()];
    })
    .await;
    let preflight = |origin: &'static str| {
        app.client
            .request(Method::OPTIONS, app.url("/api/search"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .send()
    };
    let allowed = preflight("https://club.example").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://club.example"
    );
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(refused
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    let get = app
        .client
        .get(app.url("/api/calendar"))
        .header("origin", "https://club.example")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), StatusCode::OK);
    assert_eq!(
        get.headers()["access-control-allow-origin"],
        "https://club.example"
    );
}

/// Every node of a plan that reads a table by a sequential scan, with the table's name.
fn seq_scans(plan: &Value, out: &mut Vec<String>) {
    if plan["Node Type"] == "Seq Scan" {
        out.push(
            plan["Relation Name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    for child in plan["Plans"].as_array().into_iter().flatten() {
        seq_scans(child, out);
    }
}

#[tokio::test]
async fn search_plans_use_the_indexes_on_100k_scenes() {
    let app = spawn_app().await;
    let owner = app.register("owner").await.1;
    // 1000 venues and 100 000 scheduled scenes, made in SQL
    sqlx::query("insert into organizer (organizer_id, name) values ('00000000-0000-0000-0000-000000000001', 'Bulk')")
        .execute(&app.db)
        .await
        .unwrap();
    sqlx::query(
        "insert into venue (organizer_id, name, address, lat, lon, capacity)
         select '00000000-0000-0000-0000-000000000001', 'Venue ' || i, 'Street ' || i,
                -60 + (i % 120), -170 + (i * 7 % 340), 5000
         from generate_series(1, 1000) i",
    )
    .execute(&app.db)
    .await
    .unwrap();
    sqlx::query(
        "insert into venue_feature (venue_id, feature_id)
         select venue_id, 1 + (abs(hashtext(venue_id::text)) % 9) from venue",
    )
    .execute(&app.db)
    .await
    .unwrap();
    sqlx::query(
        "insert into scene (owner_id, name, description, width, height, status, venue_id, starts_at)
         select $1, 'show ' || i || ' word' || (i % 997), 'about word' || (i % 1009), 10, 10, 'open',
                v.venue_id, now() + make_interval(hours => i % 8760)
         from generate_series(1, 100000) i
         join (select venue_id, (row_number() over (order by venue_id) - 1)::int as n from venue) v
           on v.n = i % 1000",
    )
    .bind(owner)
    .execute(&app.db)
    .await
    .unwrap();
    sqlx::query("analyze").execute(&app.db).await.unwrap();

    let base = Search {
        text: None,
        near: None,
        from: Some(Utc::now()),
        to: None,
        features: Vec::new(),
        limit: 20,
        offset: 0,
    };
    // the planner picks the most selective path: the words, the time window, or the venues
    // near the point; each case names the indexes it may use
    let cases: [(&str, Search, &[&str]); 3] = [
        (
            "text",
            Search {
                text: Some("word17".into()),
                ..base.clone()
            },
            &["scene_search_idx"],
        ),
        (
            "time window",
            Search {
                to: Some(Utc::now() + Duration::days(2)),
                ..base.clone()
            },
            &["scene_starts_idx"],
        ),
        (
            "text, distance, window and needs",
            Search {
                text: Some("word17".into()),
                near: Some((
                    10.0f64.to_bits(),
                    20.0f64.to_bits(),
                    3_000_000.0f64.to_bits(),
                )),
                to: Some(Utc::now() + Duration::days(200)),
                features: vec![1],
                ..base.clone()
            },
            &["scene_search_idx", "scene_venue_starts_idx"],
        ),
    ];
    for (what, search, indexes) in cases {
        let plan = explain_search(&app.db, &search).await.unwrap();
        let text = plan.to_string();
        assert!(
            indexes
                .iter()
                .any(|i| text.contains(&format!("\"Index Name\":\"{i}\""))),
            "{what}: none of {indexes:?} used: {text}"
        );
        let mut scans = Vec::new();
        seq_scans(&plan[0]["Plan"], &mut scans);
        assert!(
            !scans.contains(&"scene".to_owned()),
            "{what}: scene read whole: {text}"
        );
    }
}

#[tokio::test]
async fn a_scene_without_seats_of_its_own_locates_by_its_venues() {
    let app = spawn_app().await;
    let (owner, _) = app.register("owner").await;
    let club = organizer(&app, &owner, "Club").await;
    let arena = venue(&app, &owner, club, "Arena", HELSINKI, &[]).await;
    let resp = app
        .client
        .put(app.url(&format!("/api/venues/{arena}/seats")))
        .bearer_auth(&owner)
        .header("content-type", "text/csv")
        .body("section,row,seat,x,y\nA,1,1,10,5\nA,1,2,11,5\nB,9,9,500,5\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let scene = show(&app, &owner, "Seated", Some(club), arena, 24, 100).await;
    ok(
        &app,
        Method::PATCH,
        &format!("/api/scenes/{scene}"),
        &owner,
        Some(json!({"location_methods": ["seat"]})),
    )
    .await;
    let mut phone = crate::phone::Phone::join(&app, scene, None).await;
    let reply = crate::locating::say(
        &mut phone,
        json!({"type": "seat", "section": "a", "row": "1", "seat": "2"}),
    )
    .await;
    assert_eq!(reply, json!({"type": "located", "x": 11.0, "y": 5.0}));
    // the venue's seat 500 units along is outside this 100 × 50 scene
    let reply = crate::locating::say(
        &mut phone,
        json!({"type": "seat", "section": "B", "row": "9", "seat": "9"}),
    )
    .await;
    assert_eq!(reply["type"], "locate_refused", "{reply}");
}
