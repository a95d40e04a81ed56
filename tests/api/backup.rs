//! Backup and restore of a whole deployment through the real `c3s` binary: the restored
//! deployment serves the same scenes, pixels, shows, log and byte-identical frames.

use secrecy::ExposeSecret;
use std::process::Command;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{fresh_database, spawn_app, spawn_app_with, TestApp};
use crate::images;
use crate::phone::Phone;

/// Runs `c3s ARGS` against the stores of `database_url` / `mongodb_database`.
fn c3s(
    app: &TestApp,
    database_url: &str,
    mongodb_database: &str,
    args: &[&str],
) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_c3s"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("MONGODB_URL", app.config.mongodb_url.expose_secret())
        .env("C3S_MONGODB_DATABASE", mongodb_database)
        .env("C3S_METRICS_LISTEN", "none")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run c3s");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn get(app: &TestApp, token: &str, path: &str) -> Value {
    let (status, body) = app.call(Method::GET, path, Some(token), None).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

async fn image(app: &TestApp, token: &str, scene: Uuid, frame: &str) -> Vec<u8> {
    let resp = app
        .client
        .get(app.url(&format!("/api/scenes/{scene}/frames/{frame}/image")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn a_backup_restored_into_empty_stores_serves_the_same_deployment() {
    let app = spawn_app().await;
    let (op, _) = app.register("oper").await;
    let scene = app.create_scene(&op, "Kept").await;
    app.open_scene(&op, scene).await;
    for colour in [[255, 0, 0], [0, 0, 255]] {
        let (status, body) = app
            .upload(
                &op,
                scene,
                "image/png",
                images::png_of(3, 1, &[colour; 3]),
                "?duration_ms=250",
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body) = app
        .upload(
            &op,
            scene,
            "image/png",
            images::png(640, 480),
            "?duration_ms=100",
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    app.build_show(&op, scene, true).await;
    let phone = Phone::join(&app, scene, None).await;
    app.place(&op, scene, phone.pixel_id(), 2.0, 3.0).await;
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/api/scenes/{scene}/playback"),
            Some(&op),
            Some(json!({"command": "play"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let dir = std::env::temp_dir().join(format!("c3s-backup-{}", Uuid::new_v4().simple()));
    let dir_arg = dir.to_str().unwrap();
    let (ok, out, err) = c3s(
        &app,
        app.config.database_url.expose_secret(),
        &app.config.mongodb_database,
        &["backup", dir_arg],
    );
    assert!(ok, "backup failed: {err}");
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["frames"], 3, "{out}");
    let (ok, _, err) = c3s(
        &app,
        app.config.database_url.expose_secret(),
        &app.config.mongodb_database,
        &["backup", dir_arg],
    );
    assert!(!ok && err.contains("already holds a backup"), "{err}");

    // restore into a fresh database and a fresh GridFS database
    let target_db = fresh_database().await.unwrap();
    let target_mongo = format!("c3s_restored_{}", Uuid::new_v4().simple());
    let (ok, _, err) = c3s(&app, &target_db, &target_mongo, &["restore", dir_arg]);
    assert!(ok, "restore failed: {err}");
    let (ok, _, err) = c3s(&app, &target_db, &target_mongo, &["restore", dir_arg]);
    assert!(
        !ok && err.contains("not empty"),
        "a second restore must refuse: {err}"
    );
    let (ok, _, err) = c3s(
        &app,
        &target_db,
        &target_mongo,
        &["restore", dir_arg, "--force"],
    );
    assert!(ok, "forced restore failed: {err}");

    let restored = spawn_app_with(app.config.mongodb_url.expose_secret().to_owned(), |c| {
        c.database_url = target_db.clone().into();
        c.mongodb_database = target_mongo.clone();
    })
    .await;
    // the same token works: sessions are part of the deployment
    for path in [
        format!("/api/scenes/{scene}"),
        format!("/api/scenes/{scene}/frames"),
        format!("/api/scenes/{scene}/show"),
        format!("/api/scenes/{scene}/pixels"),
        format!("/api/scenes/{scene}/events?limit=1000"),
    ] {
        let mut before = get(&app, &op, &path).await;
        let mut after = get(&restored, &op, &path).await;
        for v in [&mut before, &mut after] {
            // answers that carry the time of answering
            if let Some(o) = v.as_object_mut() {
                o.remove("server_time_us");
                o.remove("position_ms");
            }
        }
        assert_eq!(before, after, "{path} differs after the restore");
    }
    let frames = get(&app, &op, &format!("/api/scenes/{scene}/frames")).await;
    for f in frames.as_array().unwrap() {
        let id = f["frame_id"].as_str().unwrap();
        assert_eq!(
            image(&app, &op, scene, id).await,
            image(&restored, &op, scene, id).await,
            "frame {id} bytes differ"
        );
    }
    drop(phone);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A forced restore checks the whole backup before it touches anything, and refuses while a
/// node of the target deployment runs.
#[tokio::test]
async fn a_forced_restore_verifies_first_and_never_runs_under_a_live_node() {
    let app = spawn_app().await;
    let (op, _) = app.register("keeper").await;
    let scene = app.create_scene(&op, "Kept").await;
    let (status, _) = app
        .upload(&op, scene, "image/png", images::png(8, 8), "")
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let dir = std::env::temp_dir().join(format!("c3s-backup-{}", Uuid::new_v4().simple()));
    let dir_arg = dir.to_str().unwrap();
    let (db, mongo) = (
        app.config.database_url.expose_secret().to_owned(),
        app.config.mongodb_database.clone(),
    );
    let (ok, _, err) = c3s(&app, &db, &mongo, &["backup", dir_arg]);
    assert!(ok, "backup failed: {err}");

    // the deployment's node is running: refused, and everything is still there
    let (ok, _, err) = c3s(&app, &db, &mongo, &["restore", dir_arg, "--force"]);
    assert!(!ok && err.contains("running"), "{err}");
    assert_eq!(app.storage_counts().await, (1, 1));

    // into another deployment (no node), with a damaged frame file: refused before anything
    let target_db = fresh_database().await.unwrap();
    let target_mongo = format!("c3s_restored_{}", Uuid::new_v4().simple());
    let (ok, _, err) = c3s(&app, &target_db, &target_mongo, &["restore", dir_arg]);
    assert!(ok, "restore failed: {err}");
    let frame = std::fs::read_dir(dir.join("frames"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&frame).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&frame, &bytes).unwrap();
    let (ok, _, err) = c3s(
        &app,
        &target_db,
        &target_mongo,
        &["restore", dir_arg, "--force"],
    );
    assert!(!ok && err.contains("damaged"), "{err}");
    let mut target = <sqlx::PgConnection as sqlx::Connection>::connect(&target_db)
        .await
        .unwrap();
    let (scenes,): (i64,) = sqlx::query_as("select count(*) from scene")
        .fetch_one(&mut target)
        .await
        .unwrap();
    assert_eq!(scenes, 1, "the first restore is untouched");
}
