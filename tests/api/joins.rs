//! A crowd joining at once: joins are queued and written in batches, never refused for want
//! of database connections, and every phone, new or returning, keeps its own identity.

use std::collections::HashSet;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::helpers::{spawn_app_with, TestApp};
use crate::phone::ws_url;

/// What one phone of a storm saw.
#[derive(Debug)]
struct Joined {
    user_id: Uuid,
    pixel_id: Uuid,
    token: Option<String>,
    /// It was told `queued` before its welcome.
    queued: bool,
}

/// Starts a phone: it says hello (with `token`), reports on `said` once it has, and ends
/// with its welcome (or how it was refused).
fn start_phone(
    app: &TestApp,
    scene_id: Uuid,
    token: Option<String>,
    said: mpsc::UnboundedSender<()>,
) -> tokio::task::JoinHandle<Result<Joined, String>> {
    let url = ws_url(app, scene_id);
    tokio::spawn(async move {
        let (mut socket, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        let hello = json!({"type": "hello", "protocol": 1, "token": token});
        socket.send(Message::text(hello.to_string())).await.unwrap();
        let _ = said.send(());
        let mut queued = false;
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(60), socket.next())
                .await
                .map_err(|_| "no welcome within 60 s".to_owned())?;
            match msg {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    match v["type"].as_str() {
                        Some("queued") => {
                            assert!(v["ahead"].is_u64(), "{v}");
                            queued = true;
                        }
                        Some("welcome") => {
                            return Ok(Joined {
                                user_id: v["user_id"].as_str().unwrap().parse().unwrap(),
                                pixel_id: v["pixel_id"].as_str().unwrap().parse().unwrap(),
                                token: v["token"].as_str().map(str::to_owned),
                                queued,
                            })
                        }
                        _ => return Err(format!("unexpected before welcome: {v}")),
                    }
                }
                Some(Ok(Message::Close(f))) => return Err(format!("refused: {f:?}")),
                Some(Ok(_)) => {}
                other => return Err(format!("socket ended: {other:?}")),
            }
        }
    })
}

/// Runs `phones` (a token each, or none) at once while the `session` table is locked, so
/// every join waits behind the lock: the joins pile up in the queue, and the phones are told
/// they are queued. The lock is released 2 s after the last hello.
async fn storm(app: &TestApp, scene_id: Uuid, phones: Vec<Option<String>>) -> Vec<Joined> {
    let mut lock = app.db.begin().await.unwrap();
    sqlx::query("lock table session in exclusive mode")
        .execute(&mut *lock)
        .await
        .unwrap();
    let (said, mut heard) = mpsc::unbounded_channel();
    let count = phones.len();
    let tasks: Vec<_> = phones
        .into_iter()
        .map(|token| start_phone(app, scene_id, token, said.clone()))
        .collect();
    for _ in 0..count {
        tokio::time::timeout(Duration::from_secs(30), heard.recv())
            .await
            .expect("every phone says hello")
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    lock.commit().await.unwrap();
    let mut joined = Vec::new();
    for task in tasks {
        joined.push(task.await.unwrap().expect("the phone joined"));
    }
    joined
}

async fn open_scene(app: &TestApp) -> Uuid {
    let scene_id = app.create_scene(&app.admin_token, "crowd").await;
    app.open_scene(&app.admin_token, scene_id).await;
    scene_id
}

/// 300 phones joining at once against one phone connection, with the database stalled for
/// two seconds: every one is queued (and told so), none is refused, each gets its own
/// identity and pixel.
#[tokio::test]
async fn a_join_storm_against_a_small_pool_is_queued_not_refused() {
    let app = spawn_app_with(c3s::testkit::shared_mongodb_url(), |c| {
        c.db_phone_connections = 1;
        c.join_batch = 64;
    })
    .await;
    let scene_id = open_scene(&app).await;
    let joined = storm(&app, scene_id, vec![None; 300]).await;
    assert_eq!(joined.len(), 300);
    assert!(
        joined.iter().all(|j| j.queued),
        "every phone waited 2 s and was told it is queued"
    );
    assert!(joined.iter().all(|j| j.token.is_some()));
    let users: HashSet<Uuid> = joined.iter().map(|j| j.user_id).collect();
    let pixels: HashSet<Uuid> = joined.iter().map(|j| j.pixel_id).collect();
    assert_eq!(
        (users.len(), pixels.len()),
        (300, 300),
        "one identity and pixel each"
    );
    let stored: i64 = sqlx::query_scalar(
        "select count(*) from pixel p join user_permission up
           on up.user_id = p.user_id and up.scene_id = p.scene_id and up.permission_id = 1
         where p.scene_id = $1",
    )
    .bind(scene_id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(stored, 300, "every pixel stored with its grant");
}

/// New and returning phones in one batch: a returning phone resumes its identity and pixel
/// (and gets no new token), a new one gets its own, a dead token makes a new identity, and
/// one phone joining twice at once gets its one pixel twice.
#[tokio::test]
async fn batched_joins_of_new_and_returning_phones_each_keep_their_own_identity() {
    let app = spawn_app_with(c3s::testkit::shared_mongodb_url(), |c| {
        c.db_phone_connections = 1;
    })
    .await;
    let scene_id = open_scene(&app).await;
    let first = storm(&app, scene_id, vec![None; 40]).await;

    let mut phones: Vec<Option<String>> = first.iter().map(|j| j.token.clone()).collect();
    phones.extend(std::iter::repeat_n(None, 40));
    phones.push(Some("not-a-token-anybody-was-given".into()));
    phones.push(first[0].token.clone()); // the first phone, in a second tab
    let second = storm(&app, scene_id, phones).await;

    for (before, now) in first.iter().zip(&second) {
        assert_eq!(now.user_id, before.user_id, "a returning phone is itself");
        assert_eq!(now.pixel_id, before.pixel_id, "and keeps its pixel");
        assert!(now.token.is_none(), "and needs no new token");
    }
    let twin = &second[81];
    assert_eq!(
        (twin.user_id, twin.pixel_id),
        (first[0].user_id, first[0].pixel_id)
    );
    let fresh = &second[40..81];
    assert!(
        fresh.iter().all(|j| j.token.is_some()),
        "new phones get tokens"
    );
    let mut users: HashSet<Uuid> = first.iter().map(|j| j.user_id).collect();
    let mut pixels: HashSet<Uuid> = first.iter().map(|j| j.pixel_id).collect();
    for j in fresh {
        assert!(users.insert(j.user_id), "a new phone's identity is its own");
        assert!(pixels.insert(j.pixel_id), "and so is its pixel");
    }
    let stored: i64 = sqlx::query_scalar("select count(*) from pixel where scene_id = $1")
        .bind(scene_id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stored, 81);
}
