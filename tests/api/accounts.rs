use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn register_login_logout() {
    let app = spawn_app().await;
    let (token, user_id) = app.register("Alice").await;

    let (status, me) = app
        .call(Method::GET, "/api/auth/me", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["user"]["login"], "alice", "logins are lower-cased");
    assert_eq!(me["user"]["user_id"], user_id.to_string());

    // the password is stored as an argon2id hash, never as itself
    let hash: String =
        sqlx::query_scalar("select password_hash from app_user where login = 'alice'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains("a long password"));
    // and tokens are stored hashed
    let stored: i64 = sqlx::query_scalar("select count(*) from session where token_hash = $1")
        .bind(token.as_bytes())
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stored, 0);

    let (status, body) = app
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"login": "alice", "password": "a long password"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second = body["token"].as_str().unwrap().to_owned();

    let (status, _) = app
        .call(Method::POST, "/api/auth/logout", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = app
        .call(Method::GET, "/api/auth/me", Some(&token), None)
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a logged-out token is dead"
    );
    assert_eq!(body["error"], "unauthorized");
    let (status, _) = app
        .call(Method::POST, "/api/auth/logout", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .call(Method::GET, "/api/auth/me", Some(&second), None)
        .await;
    assert_eq!(status, StatusCode::OK, "other sessions live on");
}

#[tokio::test]
async fn bad_credentials_and_duplicates() {
    let app = spawn_app().await;
    app.register("bob").await;
    let (status, body) = app
        .call(
            Method::POST,
            "/api/auth/register",
            None,
            Some(json!({"login": "BOB", "password": "another password"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    for (login, password) in [("bob", "wrong password"), ("nobody", "a long password")] {
        let (status, body) = app
            .call(
                Method::POST,
                "/api/auth/login",
                None,
                Some(json!({"login": login, "password": password})),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    let (status, body) = app
        .call(
            Method::POST,
            "/api/auth/register",
            None,
            Some(json!({"login": "carol", "password": "short"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"], "weak_password");
    let (status, body) = app
        .call(
            Method::POST,
            "/api/auth/register",
            None,
            Some(json!({"login": "no spaces", "password": "a long password"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"], "invalid_login");

    let (status, _) = app.call(Method::GET, "/api/auth/me", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .call(Method::GET, "/api/auth/me", Some("forged-token"), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn expired_sessions_are_refused() {
    let app = spawn_app().await;
    let (token, _) = app.register("dora").await;
    sqlx::query("update session set created_at = now() - interval '2 days', expires_at = now() - interval '1 second'")
        .execute(&app.db)
        .await
        .unwrap();
    let (status, _) = app
        .call(Method::GET, "/api/auth/me", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn guests_have_device_tokens_and_no_password() {
    let app = spawn_app().await;
    let (token, user_id) = app.guest().await;
    let (status, me) = app
        .call(Method::GET, "/api/auth/me", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(me["user"]["login"].is_null());
    let kind: String = sqlx::query_scalar("select kind from session where user_id = $1")
        .bind(user_id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(kind, "device");
    let (status, body) = app
        .call(
            Method::POST,
            "/api/scenes",
            Some(&token),
            Some(json!({"name": "x", "width": 1, "height": 1})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a guest cannot create scenes: {body}"
    );
}

/// Who may grant what: admin anything; an operator observer/kick/operator in its own scene.
#[tokio::test]
async fn permission_matrix() {
    let app = spawn_app().await;
    let (op, _) = app.register("operator").await;
    let (other_op, _) = app.register("other-op").await;
    let (_, watcher) = app.register("watcher").await;
    let (plain, plain_id) = app.register("plain").await;
    let scene = app.create_scene(&op, "Final").await;
    let others = app.create_scene(&other_op, "Other").await;
    let grant =
        |perm: &str, scene: Option<uuid::Uuid>| json!({"permission": perm, "scene_id": scene});
    let path = format!("/api/users/{watcher}/permissions");

    // (caller, grant, expected status)
    let cases = [
        (&op, grant("observer", Some(scene)), StatusCode::CREATED),
        (&op, grant("kick", Some(scene)), StatusCode::CREATED),
        (&op, grant("observer", Some(others)), StatusCode::FORBIDDEN),
        (&op, grant("admin", None), StatusCode::FORBIDDEN),
        (&op, grant("observer", None), StatusCode::FORBIDDEN),
        (
            &plain,
            grant("observer", Some(scene)),
            StatusCode::FORBIDDEN,
        ),
        (
            &app.admin_token,
            grant("observer", Some(others)),
            StatusCode::CREATED,
        ),
        (
            &app.admin_token,
            grant("admin", Some(scene)),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            &app.admin_token,
            grant("pixel", None),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            &app.admin_token,
            grant("observer", Some(uuid::Uuid::new_v4())),
            StatusCode::NOT_FOUND,
        ),
    ];
    for (caller, body, expected) in cases {
        let (status, resp) = app
            .call(Method::POST, &path, Some(caller), Some(body.clone()))
            .await;
        assert_eq!(status, expected, "granting {body}: {resp}");
    }
    let (status, grants) = app
        .call(Method::GET, &path, Some(&app.admin_token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(grants.as_array().unwrap().len(), 3, "{grants}");
    let (status, _) = app.call(Method::GET, &path, Some(&plain), None).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "only the user or an admin reads grants"
    );

    // the observer grant works: watcher can now list the scene's pixels, plain cannot
    let (watcher_token, _) = {
        let (status, body) = app
            .call(
                Method::POST,
                "/api/auth/login",
                None,
                Some(json!({"login": "watcher", "password": "a long password"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        (body["token"].as_str().unwrap().to_owned(), ())
    };
    let pixels = format!("/api/scenes/{scene}/pixels");
    assert_eq!(
        app.call(Method::GET, &pixels, Some(&watcher_token), None)
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        app.call(Method::GET, &pixels, Some(&plain), None).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.call(Method::GET, &pixels, None, None).await.0,
        StatusCode::UNAUTHORIZED
    );

    // an observer may not manage the scene
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/api/scenes/{scene}"),
            Some(&watcher_token),
            Some(json!({"name": "mine now"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // revoke: the operator takes its grant back; then the observer is refused again
    let revoke = format!("/api/users/{watcher}/permissions/observer?scene_id={scene}");
    assert_eq!(
        app.call(Method::DELETE, &revoke, Some(&plain), None)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.call(Method::DELETE, &revoke, Some(&op), None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.call(Method::DELETE, &revoke, Some(&op), None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.call(Method::GET, &pixels, Some(&watcher_token), None)
            .await
            .0,
        StatusCode::OK,
        "still allowed: watcher holds kick in the scene"
    );
    let revoke_kick = format!("/api/users/{watcher}/permissions/kick?scene_id={scene}");
    assert_eq!(
        app.call(Method::DELETE, &revoke_kick, Some(&op), None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.call(Method::GET, &pixels, Some(&watcher_token), None)
            .await
            .0,
        StatusCode::FORBIDDEN
    );

    // admin makes plain an admin; then plain may manage any scene
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/api/users/{plain_id}/permissions"),
            Some(&app.admin_token),
            Some(grant("admin", None)),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/api/scenes/{others}"),
            Some(&plain),
            Some(json!({"venue": "Arena"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}
