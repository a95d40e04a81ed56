use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    let (status, body) = app.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    let (status, body) = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["postgres"], "ok");
    assert_eq!(body["gridfs"], "ok");
}

/// The document is generated from the router: every route we serve is in it.
#[tokio::test]
async fn openapi_lists_every_route() {
    let app = spawn_app().await;
    let (status, doc) = app.call(Method::GET, "/api/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().expect("paths");
    let expected = [
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/api/auth/register", "post"),
        ("/api/auth/login", "post"),
        ("/api/auth/logout", "post"),
        ("/api/auth/guest", "post"),
        ("/api/auth/me", "get"),
        ("/api/users/{user_id}/permissions", "get"),
        ("/api/users/{user_id}/permissions", "post"),
        ("/api/users/{user_id}/permissions/{permission}", "delete"),
        ("/api/scenes", "get"),
        ("/api/scenes", "post"),
        ("/api/scenes/{scene_id}", "get"),
        ("/api/scenes/{scene_id}", "patch"),
        ("/api/scenes/{scene_id}", "delete"),
        ("/api/scenes/{scene_id}/join", "post"),
        ("/api/scenes/{scene_id}/pixels", "get"),
        ("/api/scenes/{scene_id}/pixels/{pixel_id}/kick", "post"),
        ("/api/scenes/{scene_id}/frames", "get"),
        ("/api/scenes/{scene_id}/frames", "post"),
        ("/api/scenes/{scene_id}/frames/order", "put"),
        ("/api/scenes/{scene_id}/frames/{frame_id}", "patch"),
        ("/api/scenes/{scene_id}/frames/{frame_id}", "delete"),
        ("/api/scenes/{scene_id}/frames/{frame_id}/image", "get"),
        ("/api/scenes/{scene_id}/show", "get"),
        ("/api/scenes/{scene_id}/show", "put"),
        ("/api/scenes/{scene_id}/playback", "post"),
        ("/api/scenes/{scene_id}/presence", "get"),
        ("/api/scenes/{scene_id}/live", "get"),
        (
            "/api/scenes/{scene_id}/show/frames/{frame_id}/raster",
            "get",
        ),
        ("/api/clock", "get"),
        ("/api/scenes/{scene_id}/flash-sessions", "post"),
        ("/api/scenes/{scene_id}/flash-sessions/{session_id}", "get"),
        ("/api/scenes/{scene_id}/videos", "post"),
        ("/api/scenes/{scene_id}/clips", "post"),
        ("/api/scenes/{scene_id}/frames/{frame_id}/poster", "get"),
        ("/api/scenes/{scene_id}/pixels/{pixel_id}/position", "put"),
        ("/api/scenes/{scene_id}/pixels/positions", "post"),
        ("/api/scenes/{scene_id}/geo-reference", "put"),
        ("/api/scenes/{scene_id}/seats", "put"),
        ("/api/scenes/{scene_id}/pixels/{pixel_id}/identify", "post"),
        ("/api/scenes/{scene_id}/photos", "post"),
        ("/api/scenes/{scene_id}/qr-codes", "post"),
        ("/api/scenes/{scene_id}/join-code", "get"),
        ("/api/scenes/{scene_id}/events", "get"),
        ("/api/scenes/{scene_id}/summary", "get"),
        ("/api/organizers", "post"),
        ("/api/organizers/{organizer_id}", "get"),
        ("/api/organizers/{organizer_id}/members", "get"),
        ("/api/organizers/{organizer_id}/members", "post"),
        ("/api/organizers/{organizer_id}/members/{user_id}", "delete"),
        ("/api/organizers/{organizer_id}/calendar.ics", "get"),
        ("/api/accessibility-features", "get"),
        ("/api/venues", "post"),
        ("/api/venues/{venue_id}", "get"),
        ("/api/venues/{venue_id}", "put"),
        ("/api/venues/{venue_id}/seats", "put"),
        ("/api/venues/{venue_id}/calendar.ics", "get"),
        ("/api/scenes/{scene_id}/schedule", "get"),
        ("/api/scenes/{scene_id}/schedule", "put"),
        ("/api/scenes/{scene_id}/registrations", "get"),
        ("/api/scenes/{scene_id}/registrations", "post"),
        ("/api/scenes/{scene_id}/registrations/me", "delete"),
        ("/api/calendar", "get"),
        ("/api/search", "get"),
        ("/ws/scenes/{scene_id}", "get"),
        ("/ws/clock", "get"),
        ("/api/scenes/{scene_id}/sound", "get"),
        ("/api/scenes/{scene_id}/sound", "put"),
        ("/api/scenes/{scene_id}/beacons", "post"),
        ("/api/scenes/{scene_id}/beacons/{beacon_id}", "patch"),
        ("/api/scenes/{scene_id}/beacons/{beacon_id}", "delete"),
        ("/api/beacons/{beacon_id}/schedule", "get"),
        ("/api/scenes/{scene_id}/sound-sessions", "post"),
        ("/api/scenes/{scene_id}/sound-sessions/{session_id}", "get"),
    ];
    for (path, method) in expected {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from the OpenAPI document"
        );
    }
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(
        documented,
        expected.len(),
        "undocumented or untested route: {paths:?}"
    );
}

fn assert_error_shape(body: &Value, code: &str) {
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn every_failure_is_json() {
    let app = spawn_app().await;
    let (status, body) = app.call(Method::GET, "/api/nope", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error_shape(&body, "not_found");

    let (status, body) = app
        .call(Method::GET, "/no/such/page.html", None, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error_shape(&body, "not_found");

    let (status, body) = app.call(Method::DELETE, "/api/scenes", None, None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_error_shape(&body, "method_not_allowed");

    let resp = app
        .client
        .post(app.url("/api/auth/login"))
        .header("content-type", "application/json")
        .body("{\"login\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_error_shape(&resp.json().await.unwrap(), "bad_json");

    let resp = app
        .client
        .post(app.url("/api/auth/login"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_error_shape(&resp.json().await.unwrap(), "unsupported_media_type");

    let (status, body) = app
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(serde_json::json!({"login": 5})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_error_shape(&body, "invalid_json");

    let (status, body) = app
        .call(Method::GET, "/api/scenes/not-a-uuid", None, None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error_shape(&body, "bad_path");

    let (status, body) = app
        .call(Method::GET, "/api/scenes?page=0", None, None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error_shape(&body, "bad_paging");
}

#[tokio::test]
async fn serves_the_web_client() {
    let app = spawn_app().await;
    let resp = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let html = resp.text().await.unwrap();
    assert!(html.contains("C3S"), "{html}");
}
