use image::ImageFormat;
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::{spawn_app, TestApp};
use crate::images;

async fn download(
    app: &TestApp,
    token: &str,
    scene: uuid::Uuid,
    frame: &Value,
) -> (StatusCode, String, Vec<u8>) {
    let resp = app
        .client
        .get(app.url(&format!(
            "/api/scenes/{scene}/frames/{}/image",
            frame["frame_id"].as_str().unwrap()
        )))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, ct, resp.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn every_format_round_trips_byte_identical() {
    let app = spawn_app().await;
    let (op, _) = app.register("oper").await;
    let scene = app.create_scene(&op, "Formats").await;
    let img = images::gradient(40, 30);
    let cases = [
        ("image/png", images::encode(&img, ImageFormat::Png)),
        ("image/jpeg", images::encode(&img, ImageFormat::Jpeg)),
        ("image/gif", images::encode(&img, ImageFormat::Gif)),
        ("image/webp", images::encode(&img, ImageFormat::WebP)),
    ];
    for (i, (content_type, bytes)) in cases.into_iter().enumerate() {
        let (status, body) = app
            .upload(
                &op,
                scene,
                content_type,
                bytes.clone(),
                "?duration_ms=250&name=pic",
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{content_type}: {body}");
        let frame = &body[0];
        assert_eq!(body.as_array().unwrap().len(), 1);
        assert_eq!(frame["content_type"], content_type);
        assert_eq!(frame["position"], i);
        assert_eq!(
            (frame["width"].as_u64(), frame["height"].as_u64()),
            (Some(40), Some(30))
        );
        assert_eq!(frame["duration_ms"], 250);
        assert_eq!(frame["byte_size"], bytes.len());
        assert_eq!(frame["sha256"], hex::encode(Sha256::digest(&bytes)));
        let (status, ct, got) = download(&app, &op, scene, frame).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ct, content_type);
        assert!(got == bytes, "{content_type} came back different");
        // and the bytes really are in GridFS under the id the row names
        let oid = frame["gridfs_id"].as_str().unwrap().parse().unwrap();
        assert!(app.frames.get(oid).await.unwrap() == bytes);
    }
    assert_eq!(app.storage_counts().await, (4, 4));
}

#[tokio::test]
async fn animated_gif_becomes_frames_with_its_delays() {
    let app = spawn_app().await;
    let (op, _) = app.register("oper").await;
    let scene = app.create_scene(&op, "Anim").await;
    let (status, body) = app
        .upload(
            &op,
            scene,
            "image/gif",
            images::animated_gif(&[100, 250, 40]),
            "",
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let frames = body.as_array().unwrap();
    let durations: Vec<_> = frames
        .iter()
        .map(|f| f["duration_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(durations, [100, 250, 40]);
    let expected_colours = [[255, 0, 0], [0, 255, 0], [0, 0, 255]];
    for (frame, colour) in frames.iter().zip(expected_colours) {
        assert_eq!(frame["content_type"], "image/png");
        let (_, _, bytes) = download(&app, &op, scene, frame).await;
        let img = image::load_from_memory(&bytes).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (6, 4));
        assert_eq!(img.get_pixel(3, 2).0, colour);
    }
}

#[tokio::test]
async fn reorder_duration_and_delete() {
    let app = spawn_app().await;
    let (op, _) = app.register("oper").await;
    let scene = app.create_scene(&op, "Order").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let (_, body) = app
            .upload(&op, scene, "image/png", images::png(4 + i, 4), "")
            .await;
        assert_eq!(
            body[0]["duration_ms"], 1000,
            "still frames default to a second"
        );
        ids.push(body[0]["frame_id"].as_str().unwrap().to_owned());
    }
    let frames_path = format!("/api/scenes/{scene}/frames");
    let (status, body) = app
        .call(
            Method::PUT,
            &format!("{frames_path}/order"),
            Some(&op),
            Some(json!({"frame_ids": [ids[2], ids[0], ids[1]]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let order: Vec<_> = body
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["frame_id"].as_str().unwrap())
        .collect();
    assert_eq!(order, [&ids[2], &ids[0], &ids[1]]);

    for bad in [
        json!([ids[0], ids[1]]),
        json!([ids[0], ids[0], ids[1]]),
        json!([ids[0], ids[1], uuid::Uuid::new_v4()]),
    ] {
        let (status, _) = app
            .call(
                Method::PUT,
                &format!("{frames_path}/order"),
                Some(&op),
                Some(json!({"frame_ids": bad})),
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{bad}");
    }

    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("{frames_path}/{}", ids[0]),
            Some(&op),
            Some(json!({"duration_ms": 40})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["duration_ms"], 40);
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("{frames_path}/{}", ids[0]),
            Some(&op),
            Some(json!({"duration_ms": 0})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let (_, listed) = app.call(Method::GET, &frames_path, Some(&op), None).await;
    let victim = listed[0].clone();
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("{frames_path}/{}", ids[2]),
            Some(&op),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, listed) = app.call(Method::GET, &frames_path, Some(&op), None).await;
    let positions: Vec<_> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, [0, 1], "the gap closes");
    assert_eq!(
        app.storage_counts().await,
        (2, 2),
        "the GridFS file went with the row"
    );
    let oid = victim["gridfs_id"].as_str().unwrap().parse().unwrap();
    assert!(app.frames.get(oid).await.is_err());
    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("{frames_path}/{}", ids[2]),
            Some(&op),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // deleting the scene deletes the remaining bytes too
    assert_eq!(
        app.call(
            Method::DELETE,
            &format!("/api/scenes/{scene}"),
            Some(&op),
            None
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.storage_counts().await, (0, 0));
}

/// Each refused upload gets its own 4xx and leaves both stores as they were.
#[tokio::test]
async fn refused_uploads_leave_storage_unchanged() {
    let app = spawn_app().await;
    let (op, _) = app.register("oper").await;
    let scene = app.create_scene(&op, "Refusals").await;
    let (status, _) = app
        .upload(&op, scene, "image/png", images::png(8, 8), "")
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let before = app.storage_counts().await;
    assert_eq!(before, (1, 1));

    let mut truncated = images::png(300, 200);
    truncated.truncate(truncated.len() * 2 / 3);
    let oversize = vec![0u8; app.config.max_upload_bytes as usize + 1];
    let (stranger, _) = app.register("stranger").await;
    let other_scene = app.create_scene(&stranger, "Theirs").await;
    let unknown = uuid::Uuid::new_v4();
    // (what, scene, content type, body, query, status, error code)
    type Case<'a> = (
        &'a str,
        uuid::Uuid,
        &'a str,
        Vec<u8>,
        &'a str,
        StatusCode,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "oversize",
            scene,
            "image/png",
            oversize,
            "",
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "bomb",
            scene,
            "image/png",
            images::png_bomb(),
            "",
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_many_pixels",
        ),
        (
            "truncated",
            scene,
            "image/png",
            truncated,
            "",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_image",
        ),
        (
            "text",
            scene,
            "image/png",
            b"certainly not a picture".to_vec(),
            "",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "mislabelled",
            scene,
            "image/jpeg",
            images::png(8, 8),
            "",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "empty",
            scene,
            "image/png",
            Vec::new(),
            "",
            StatusCode::UNPROCESSABLE_ENTITY,
            "empty_body",
        ),
        (
            "bad duration",
            scene,
            "image/png",
            images::png(8, 8),
            "?duration_ms=0",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_duration",
        ),
        (
            "bad query",
            scene,
            "image/png",
            images::png(8, 8),
            "?duration_ms=soon",
            StatusCode::BAD_REQUEST,
            "bad_query",
        ),
        (
            "unknown scene",
            unknown,
            "image/png",
            images::png(8, 8),
            "",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "someone else's scene",
            other_scene,
            "image/png",
            images::png(8, 8),
            "",
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
    ];
    for (what, scene_id, ct, bytes, query, expected, code) in cases {
        let (status, body) = app.upload(&op, scene_id, ct, bytes, query).await;
        assert_eq!(status, expected, "{what}: {body}");
        assert_eq!(body["error"], code, "{what}: {body}");
        assert_eq!(app.storage_counts().await, before, "{what} changed storage");
    }
    // too many pixels by the server's own limit, in a real (not crafted) image
    let app2 =
        crate::helpers::spawn_app_with(app.config.mongodb_url.expose_secret().to_owned(), |c| {
            c.max_frame_pixels = 100
        })
        .await;
    let (op2, _) = app2.register("oper").await;
    let scene2 = app2.create_scene(&op2, "Tiny").await;
    let (status, body) = app2
        .upload(&op2, scene2, "image/png", images::png(11, 10), "")
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(app2.storage_counts().await, (0, 0));

    // without a token, nothing is read
    let resp = app
        .client
        .post(app.url(&format!("/api/scenes/{scene}/frames")))
        .body(images::png(2, 2))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // others cannot list or download
    let (status, _) = app
        .call(
            Method::GET,
            &format!("/api/scenes/{scene}/frames"),
            Some(&stranger),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

/// Bytes that lost their row (a crash between the two writes) are swept; referenced ones stay.
#[tokio::test]
async fn orphaned_bytes_are_swept_and_referenced_ones_kept() {
    let app = spawn_app().await;
    let (op, _) = app.register("oper").await;
    let scene = app.create_scene(&op, "Sweep").await;
    let (status, _) = app
        .upload(&op, scene, "image/png", images::png(8, 8), "")
        .await;
    assert_eq!(status, StatusCode::CREATED);
    app.frames
        .put("orphan", mongodb::bson::doc! {}, b"left behind")
        .await
        .unwrap();
    assert_eq!(app.storage_counts().await, (1, 2));
    let young =
        c3s::store::sweep_orphan_frames(&app.db, &app.frames, std::time::Duration::from_secs(3600))
            .await
            .unwrap();
    assert_eq!(young, 0, "a fresh file may be an upload in flight");
    let swept = c3s::store::sweep_orphan_frames(&app.db, &app.frames, std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(swept, 1);
    assert_eq!(app.storage_counts().await, (1, 1));
}
