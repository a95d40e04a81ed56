use reqwest::{Method, StatusCode};

use crate::helpers::{spawn_app_with, Secantus};
use crate::images;

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
