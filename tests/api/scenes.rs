use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn scene_lifecycle() {
    let app = spawn_app().await;
    let (op, op_id) = app.register("oper").await;
    let (status, scene) = app
        .call(
            Method::POST,
            "/api/scenes",
            Some(&op),
            Some(json!({
                "name": "Cup final", "description": "north stand", "venue": "Arena",
                "width": 120.5, "height": 40, "idle_color": "#102030",
                "location_methods": ["seat", "qr", "seat"]
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{scene}");
    assert_eq!(scene["status"], "draft");
    assert_eq!(scene["owner_id"], op_id.to_string());
    assert_eq!(scene["idle_color"], "#102030");
    assert_eq!(scene["location_methods"], json!(["qr", "seat"]));
    let id = scene["scene_id"].as_str().unwrap().to_owned();
    let path = format!("/api/scenes/{id}");

    // a draft is hidden from everyone but its operators and admins
    assert_eq!(
        app.call(Method::GET, &path, None, None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.call(Method::GET, &path, Some(&op), None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        app.call(Method::GET, &path, Some(&app.admin_token), None)
            .await
            .0,
        StatusCode::OK
    );

    let (status, body) = app
        .call(
            Method::PATCH,
            &path,
            Some(&op),
            Some(json!({"status": "open", "name": "Cup final!"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "open");
    assert_eq!(body["name"], "Cup final!");
    assert_eq!(body["description"], "north stand", "untouched fields stay");
    let (status, body) = app.call(Method::GET, &path, None, None).await;
    assert_eq!(status, StatusCode::OK, "an open scene is public");
    assert_eq!(body["name"], "Cup final!");

    // invalid updates are refused and change nothing
    for (update, expected) in [
        (json!({"width": -1}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"name": ""}), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({"idle_color": "red"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"status": "paused"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({"owner_id": op_id}), StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let (status, body) = app
            .call(Method::PATCH, &path, Some(&op), Some(update.clone()))
            .await;
        assert_eq!(status, expected, "{update}: {body}");
    }
    let (_, after) = app.call(Method::GET, &path, None, None).await;
    assert_eq!(after["width"], 120.5);

    // life cycle: ended is final
    let (status, _) = app
        .call(
            Method::PATCH,
            &path,
            Some(&op),
            Some(json!({"status": "ended"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app
        .call(
            Method::PATCH,
            &path,
            Some(&op),
            Some(json!({"status": "live"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // someone else's scene
    let (intruder, _) = app.register("intruder").await;
    assert_eq!(
        app.call(
            Method::PATCH,
            &path,
            Some(&intruder),
            Some(json!({"name": "x"}))
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.call(Method::DELETE, &path, Some(&intruder), None)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.call(Method::DELETE, &path, None, None).await.0,
        StatusCode::UNAUTHORIZED
    );

    assert_eq!(
        app.call(Method::DELETE, &path, Some(&op), None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.call(Method::GET, &path, Some(&op), None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.call(Method::DELETE, &path, Some(&op), None).await.0,
        StatusCode::NOT_FOUND
    );
    let unknown = format!("/api/scenes/{}", uuid::Uuid::new_v4());
    assert_eq!(
        app.call(Method::PATCH, &unknown, Some(&op), Some(json!({})))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn listing_pages_and_hides_drafts() {
    let app = spawn_app().await;
    let (op, _) = app.register("oper").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let id = app.create_scene(&op, &format!("scene {i}")).await;
        if i < 3 {
            app.open_scene(&op, id).await;
        }
        ids.push(id);
    }
    let (status, page) = app
        .call(Method::GET, "/api/scenes?per_page=2&page=1", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        page["total"], 3,
        "anonymous callers see only non-draft scenes: {page}"
    );
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert_eq!(page["items"][0]["name"], "scene 2", "newest first");
    let (_, page2) = app
        .call(Method::GET, "/api/scenes?per_page=2&page=2", None, None)
        .await;
    assert_eq!(page2["items"].as_array().unwrap().len(), 1);
    assert_eq!(page2["items"][0]["name"], "scene 0");

    let (_, mine) = app.call(Method::GET, "/api/scenes", Some(&op), None).await;
    assert_eq!(mine["total"], 5, "an operator sees its drafts");
    let (other, _) = app.register("other").await;
    let (_, theirs) = app
        .call(Method::GET, "/api/scenes", Some(&other), None)
        .await;
    assert_eq!(theirs["total"], 3);
    assert_eq!(
        app.call(Method::GET, "/api/scenes?per_page=500", None, None)
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn join_kick_and_no_rejoin() {
    let app = spawn_app().await;
    let (op, _) = app.register("oper").await;
    let scene = app.create_scene(&op, "Stand").await;
    let join = format!("/api/scenes/{scene}/join");
    let (phone, phone_user) = app.guest().await;

    // a draft cannot be joined (nor even seen)
    assert_eq!(
        app.call(Method::POST, &join, Some(&phone), None).await.0,
        StatusCode::NOT_FOUND
    );
    app.open_scene(&op, scene).await;
    assert_eq!(
        app.call(Method::POST, &join, None, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, pixel) = app.call(Method::POST, &join, Some(&phone), None).await;
    assert_eq!(status, StatusCode::OK, "{pixel}");
    assert_eq!(pixel["status"], "joined");
    assert!(pixel["x"].is_null());
    let pixel_id = pixel["pixel_id"].as_str().unwrap().to_owned();
    let (_, again) = app.call(Method::POST, &join, Some(&phone), None).await;
    assert_eq!(
        again["pixel_id"],
        pixel_id.as_str(),
        "joining again resumes the same pixel"
    );
    let (_, me) = app
        .call(Method::GET, "/api/auth/me", Some(&phone), None)
        .await;
    assert_eq!(
        me["grants"],
        json!([{"permission": "pixel", "scene_id": scene}])
    );

    let (_, pixels) = app
        .call(
            Method::GET,
            &format!("/api/scenes/{scene}/pixels"),
            Some(&op),
            None,
        )
        .await;
    assert_eq!(pixels["total"], 1);
    assert_eq!(pixels["items"][0]["user_id"], phone_user.to_string());

    let kick = format!("/api/scenes/{scene}/pixels/{pixel_id}/kick");
    let (other_phone, _) = app.guest().await;
    assert_eq!(
        app.call(Method::POST, &kick, Some(&other_phone), None)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    // a moderator with only the kick right may kick
    let (moderator, moderator_id) = app.register("moderator").await;
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/api/users/{moderator_id}/permissions"),
            Some(&op),
            Some(json!({"permission": "kick", "scene_id": scene})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, kicked) = app.call(Method::POST, &kick, Some(&moderator), None).await;
    assert_eq!(status, StatusCode::OK, "{kicked}");
    assert_eq!(kicked["status"], "kicked");

    let (status, body) = app.call(Method::POST, &join, Some(&phone), None).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a kicked phone cannot rejoin: {body}"
    );
    let (_, me) = app
        .call(Method::GET, "/api/auth/me", Some(&phone), None)
        .await;
    assert_eq!(me["grants"], json!([]), "its pixel grant is gone");
    let (_, kicked_list) = app
        .call(
            Method::GET,
            &format!("/api/scenes/{scene}/pixels?status=kicked"),
            Some(&op),
            None,
        )
        .await;
    assert_eq!(kicked_list["total"], 1);
    let unknown_pixel = format!("/api/scenes/{scene}/pixels/{}/kick", uuid::Uuid::new_v4());
    assert_eq!(
        app.call(Method::POST, &unknown_pixel, Some(&op), None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}
