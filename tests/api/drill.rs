//! The replication drill: a private PostgreSQL primary with a synchronous streaming replica
//! (never the machine's PostgreSQL), C3S on the primary through a movable address, a crash of
//! the primary mid-show, the replica promoted and the address moved: the same server process
//! carries on, and no acknowledged write is lost.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use c3s::testkit::{PrivatePg, Switch};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{shared_mongodb_url, spawn_app_with};
use crate::images;

#[tokio::test]
async fn a_promoted_replica_takes_over_without_losing_a_committed_write() {
    let primary = PrivatePg::start_primary().expect("a private primary");
    let replica = PrivatePg::replica_of(&primary).expect("a streaming replica");
    let at = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let address = Switch::start(at(primary.port())).await.unwrap();
    let app = spawn_app_with(shared_mongodb_url(), |c| {
        c.database_url = format!("postgres://postgres@127.0.0.1:{}/postgres", address.port).into();
    })
    .await;

    let (op, _) = app.register("oper").await;
    let scene = app.create_scene(&op, "Drill").await;
    app.open_scene(&op, scene).await;
    let mut uploaded = Vec::new();
    for colour in [[255, 0, 0], [0, 255, 0]] {
        let png = images::png_of(2, 2, &[colour; 4]);
        let (status, body) = app
            .upload(&op, scene, "image/png", png.clone(), "?duration_ms=200")
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        uploaded.push((body[0]["frame_id"].as_str().unwrap().to_owned(), png));
    }
    app.build_show(&op, scene, true).await;
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/api/scenes/{scene}/playback"),
            Some(&op),
            Some(json!({"command": "play", "start_in_ms": 1000})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // an operator keeps seeking; every acknowledged command is remembered with its instant
    let acked: Arc<Mutex<Vec<(Instant, i64)>>> = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let writer = {
        let (client, url, op, acked, stop) = (
            app.client.clone(),
            app.url(&format!("/api/scenes/{scene}/playback")),
            op.clone(),
            acked.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.is_cancelled() {
                i += 1;
                let sent = client
                    .post(&url)
                    .bearer_auth(&op)
                    .json(&json!({"command": "seek", "position_ms": (i * 10) % 400, "in_ms": 200}))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                if let Ok(resp) = sent {
                    if resp.status() == StatusCode::OK {
                        let body: serde_json::Value = resp.json().await.unwrap_or_default();
                        if let Some(v) = body["timeline"]["version"].as_i64() {
                            acked.lock().unwrap().push((Instant::now(), v));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;

    // the primary dies; the replica is promoted and the address moved to it
    let failed_at = Instant::now();
    let before = acked.lock().unwrap().len();
    primary.crash().expect("crash the primary");
    replica.promote().expect("promote the replica");
    address.point_at(at(replica.port()));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let after = acked
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| *t > failed_at)
            .count();
        if after >= 10 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no write succeeded after the failover"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    writer.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(before >= 5, "writes before the failover: {before}");
    let gap = acked
        .windows(2)
        .map(|w| w[1].0.duration_since(w[0].0))
        .max()
        .unwrap_or_default();
    let first_after = acked.iter().find(|(t, _)| *t > failed_at).unwrap().0;
    eprintln!(
        "failover: {} writes acknowledged; the first after the crash came {} ms after it; longest gap between acknowledged writes {} ms",
        acked.len(),
        first_after.duration_since(failed_at).as_millis(),
        gap.as_millis()
    );

    // every acknowledged command is in the promoted replica's log, once
    let (status, page) = app
        .call(
            Method::GET,
            &format!("/api/scenes/{scene}/events?limit=1000"),
            Some(&op),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let logged: Vec<i64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "playback")
        .map(|e| e["data"]["timeline"]["version"].as_i64().unwrap())
        .collect();
    let distinct: BTreeSet<i64> = logged.iter().copied().collect();
    assert_eq!(distinct.len(), logged.len(), "no version twice");
    for (_, v) in &acked {
        assert!(
            distinct.contains(v),
            "acknowledged version {v} lost in the failover"
        );
    }
    // the scene and its frames, bytes and all
    for (frame, png) in &uploaded {
        let resp = app
            .client
            .get(app.url(&format!("/api/scenes/{scene}/frames/{frame}/image")))
            .bearer_auth(&op)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(&resp.bytes().await.unwrap()[..], &png[..]);
    }
    let in_recovery: bool = sqlx::query_scalar("select pg_is_in_recovery()")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(!in_recovery, "the server writes to the promoted replica");
}
