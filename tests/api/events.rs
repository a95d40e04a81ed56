//! The scene event log in PostgreSQL: optimistic concurrency under concurrent appends, an
//! append-only table, views that apply each event exactly once and get it again after a
//! crash, and the HTTP commands that append to it.

use std::collections::HashMap;
use std::time::Duration;

use c3s::events::{SceneEvent, StoredEvent};
use c3s::playback::Command;
use c3s::store::events::{self as log, AppendError};
use c3s::views::{Consumer, Projection};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::helpers::{spawn_app, TestApp};
use crate::images;

fn kicked() -> SceneEvent {
    SceneEvent::PixelKicked {
        pixel_id: Uuid::new_v4(),
    }
}

/// Checks a scene's stream is one chain: each event's previous is the one before it.
async fn assert_chained(db: &PgPool, scene: Uuid) -> Vec<StoredEvent> {
    let events = log::load_events(db, scene).await.unwrap();
    let mut previous = None;
    for e in &events {
        assert_eq!(e.previous_id, previous, "event {} breaks the chain", e.seq);
        previous = Some(e.event_id);
    }
    events
}

#[tokio::test]
async fn concurrent_appends_have_exactly_one_winner_per_expected_previous() {
    let app = spawn_app().await;
    let scene = Uuid::new_v4();
    let mut expected = None;
    for round in 0..20 {
        let tasks: Vec<_> = (0..12)
            .map(|_| {
                let db = app.db.clone();
                tokio::spawn(async move {
                    let mut conn = db.acquire().await.unwrap();
                    log::append(&mut conn, scene, expected, &[kicked()], None).await
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                Ok(heads) => winners.push(heads[0]),
                Err(AppendError::Conflict) => {}
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: one winner");
        expected = Some(winners[0].event_id);
    }
    let events = assert_chained(&app.db, scene).await;
    assert_eq!(events.len(), 20, "no lost or duplicated event");

    // an expected previous event that is not the head, or not of this scene, loses too
    let mut conn = app.db.acquire().await.unwrap();
    let stale = events[3].event_id;
    assert!(matches!(
        log::append(&mut conn, scene, Some(stale), &[kicked()], None).await,
        Err(AppendError::Conflict)
    ));
    assert!(matches!(
        log::append(&mut conn, Uuid::new_v4(), expected, &[kicked()], None).await,
        Err(AppendError::Conflict)
    ));
    assert!(matches!(
        log::append(&mut conn, scene, None, &[kicked()], None).await,
        Err(AppendError::Conflict)
    ));
}

#[tokio::test]
async fn the_servers_appends_under_the_scene_lock_all_land_in_one_chain() {
    let app = spawn_app().await;
    let scene = Uuid::new_v4();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let db = app.db.clone();
            tokio::spawn(async move {
                for _ in 0..25 {
                    let mut tx = db.begin().await.unwrap();
                    log::append_at_head(&mut tx, scene, &[kicked(), kicked()], None)
                        .await
                        .unwrap();
                    tx.commit().await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let events = assert_chained(&app.db, scene).await;
    assert_eq!(events.len(), 8 * 25 * 2);
    let ids: std::collections::HashSet<_> = events.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), events.len(), "no duplicates");
}

#[tokio::test]
async fn the_log_is_append_only_and_takes_registered_types_only() {
    let app = spawn_app().await;
    let scene = Uuid::new_v4();
    let mut conn = app.db.acquire().await.unwrap();
    log::append(&mut conn, scene, None, &[kicked()], None)
        .await
        .unwrap();
    for sql in [
        "update scene_event set data = '{}'",
        "delete from scene_event",
        "truncate scene_event",
    ] {
        let err = sqlx::query(sql).execute(&app.db).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    let err = sqlx::query(
        "insert into scene_event (event_id, event, scene_id, data)
         values (gen_random_uuid(), 'made_up', gen_random_uuid(), '{}')",
    )
    .execute(&app.db)
    .await
    .unwrap_err();
    assert!(err.to_string().contains("foreign key"), "{err}");
    assert_eq!(log::load_events(&app.db, scene).await.unwrap().len(), 1);
}

/// A view that records every event it is given, to count deliveries.
struct Recorder;

impl Projection for Recorder {
    const VIEW: &'static str = "test_recorder";

    async fn apply(&self, conn: &mut PgConnection, event: &StoredEvent) -> Result<(), sqlx::Error> {
        sqlx::query("insert into test_seen (seq, scene_id) values ($1, $2)")
            .bind(event.seq)
            .bind(event.scene_id)
            .execute(conn)
            .await?;
        Ok(())
    }
}

async fn seen_counts(db: &PgPool) -> HashMap<i64, i64> {
    let rows: Vec<(i64, i64)> = sqlx::query_as("select seq, count(*) from test_seen group by seq")
        .fetch_all(db)
        .await
        .unwrap();
    rows.into_iter().collect()
}

#[tokio::test]
async fn two_view_instances_apply_every_event_exactly_once_and_a_crash_is_redelivered() {
    let app = spawn_app().await;
    sqlx::query("create table test_seen (seq bigint not null, scene_id uuid not null)")
        .execute(&app.db)
        .await
        .unwrap();
    log::register_view(&app.db, Recorder::VIEW, 400, true)
        .await
        .unwrap();
    let scenes: Vec<Uuid> = (0..10).map(|_| Uuid::new_v4()).collect();
    // appends keep coming while both instances consume
    let writer = {
        let db = app.db.clone();
        let scenes = scenes.clone();
        tokio::spawn(async move {
            for _ in 0..15 {
                for &scene in &scenes {
                    let mut tx = db.begin().await.unwrap();
                    log::append_at_head(&mut tx, scene, &[kicked(), kicked()], None)
                        .await
                        .unwrap();
                    tx.commit().await.unwrap();
                }
            }
        })
    };
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            let db = app.db.clone();
            tokio::spawn(async move {
                let consumer = Consumer::new(Recorder);
                let mut applied = 0;
                let mut idle = 0;
                while idle < 20 {
                    match consumer.process_next(&db).await.unwrap() {
                        0 => {
                            idle += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        n => {
                            applied += n;
                            idle = 0;
                        }
                    }
                }
                applied
            })
        })
        .collect();
    writer.await.unwrap();
    let mut applied = Vec::new();
    for c in consumers {
        applied.push(c.await.unwrap());
    }
    let counts = seen_counts(&app.db).await;
    assert_eq!(counts.len(), 10 * 15 * 2, "every event applied");
    assert!(counts.values().all(|&n| n == 1), "none applied twice");
    assert_eq!(applied.iter().sum::<usize>(), 300);
    assert!(
        applied.iter().all(|&n| n > 0),
        "both instances took part: {applied:?}"
    );

    // an instance claims events and dies before acknowledging them
    let scene = scenes[0];
    let mut tx = app.db.begin().await.unwrap();
    log::append_at_head(&mut tx, scene, &[kicked(), kicked(), kicked()], None)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let crashed = log::claim(&app.db, Recorder::VIEW, Uuid::new_v4(), 100)
        .await
        .unwrap()
        .expect("the new events are claimed");
    assert_eq!(crashed.events.len(), 3);
    let survivor = Consumer::new(Recorder);
    assert_eq!(
        survivor.process_next(&app.db).await.unwrap(),
        0,
        "leased to the crashed instance"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        survivor.process_next(&app.db).await.unwrap(),
        3,
        "redelivered after the lease"
    );
    // the crashed instance wakes up and tries to acknowledge: refused, so it rolls back
    let mut conn = app.db.acquire().await.unwrap();
    let last = crashed.events.last().unwrap().seq;
    assert!(!log::ack(&mut conn, &crashed, last).await.unwrap());
    let counts = seen_counts(&app.db).await;
    assert_eq!(counts.len(), 303);
    assert!(counts.values().all(|&n| n == 1));
}

/// An open scene with one frame and a built show; returns the operator's token and the scene.
async fn scene_with_show(app: &TestApp) -> (String, Uuid) {
    let (op, _) = app.register("oper").await;
    let scene = app.create_scene(&op, "Logged").await;
    app.open_scene(&op, scene).await;
    let (status, body) = app
        .upload(
            &op,
            scene,
            "image/png",
            images::png(4, 4),
            "?duration_ms=500",
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    app.build_show(&op, scene, true).await;
    (op, scene)
}

#[tokio::test]
async fn commands_go_through_the_log_and_a_stale_one_loses_with_the_current_state() {
    let app = spawn_app().await;
    let (op, scene) = scene_with_show(&app).await;
    let play = format!("/api/scenes/{scene}/playback?expected_version=1");
    let (status, body) = app
        .call(
            Method::POST,
            &play,
            Some(&op),
            Some(json!({"command": "play"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["timeline"]["version"], 2);

    // two operators saw version 2 and both press pause: one wins
    let pause = format!("/api/scenes/{scene}/playback?expected_version=2");
    let (a, b) = tokio::join!(
        app.call(
            Method::POST,
            &pause,
            Some(&op),
            Some(json!({"command": "pause", "in_ms": 4000}))
        ),
        app.call(
            Method::POST,
            &pause,
            Some(&op),
            Some(json!({"command": "seek", "position_ms": 100, "in_ms": 4000}))
        ),
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::CONFLICT],
        "{a:?} {b:?}"
    );
    let loser = if a.0 == StatusCode::CONFLICT {
        &a.1
    } else {
        &b.1
    };
    assert_eq!(loser["error"], "conflict");
    assert_eq!(loser["current"]["timeline"]["version"], 3, "{loser}");

    // without an expectation a command applies to whatever the state is
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/api/scenes/{scene}/playback"),
            Some(&op),
            Some(json!({"command": "stop"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, page) = app
        .call(
            Method::GET,
            &format!("/api/scenes/{scene}/events"),
            Some(&op),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let kinds: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "scene_created",
            "scene_updated",
            "frames_added",
            "show_built",
            "playback",
            "playback",
            "playback"
        ]
    );
    let commands: Vec<Command> = page["items"].as_array().unwrap()[4..]
        .iter()
        .map(|e| serde_json::from_value(e["data"]["command"].clone()).unwrap())
        .collect();
    assert!(matches!(commands[0], Command::Play { .. }));
    assert!(matches!(commands[2], Command::Stop { .. }));

    // the show as folded from the log is the one the API reports
    let (show, timeline) = log::show_state(&app.db, scene).await.unwrap().unwrap();
    let (_, stored) = app
        .call(
            Method::GET,
            &format!("/api/scenes/{scene}/show"),
            Some(&op),
            None,
        )
        .await;
    assert_eq!(stored["timeline"], serde_json::to_value(timeline).unwrap());
    assert_eq!(stored["show"], serde_json::to_value(show).unwrap());

    // the summary view catches up on its own (woken by the notification)
    let summary = app.summary_when(&op, scene, |s| s["events"] == 7).await;
    assert_eq!(summary["playback_commands"], 3);
    assert_eq!(summary["show_version"], 4);

    let (status, body) = app
        .call(
            Method::GET,
            &format!("/api/scenes/{scene}/events?limit=0"),
            Some(&op),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let stranger = app.register("stranger").await.0;
    let (status, _) = app
        .call(
            Method::GET,
            &format!("/api/scenes/{scene}/events"),
            Some(&stranger),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

/// A crowd placed at once: every placement answered and logged once, in one chain, written
/// in shared transactions (a scene's log has one head, so one commit each would queue them).
#[tokio::test]
async fn a_burst_of_placements_is_logged_whole_in_batches() {
    let app = spawn_app().await;
    let (op, _) = app.register("oper").await;
    let scene = app.create_scene(&op, "Rush").await;
    app.open_scene(&op, scene).await;
    let mut pixels = Vec::new();
    for _ in 0..120 {
        let (guest, _) = app.guest().await;
        let (status, pixel) = app
            .call(
                Method::POST,
                &format!("/api/scenes/{scene}/join"),
                Some(&guest),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{pixel}");
        pixels.push(pixel["pixel_id"].as_str().unwrap().to_owned());
    }
    let (app, op) = (&app, &op);
    let calls = pixels.iter().enumerate().map(|(i, pixel)| async move {
        app.call(
            Method::PUT,
            &format!("/api/scenes/{scene}/pixels/{pixel}/position"),
            Some(op),
            Some(json!({"x": (i % 100) as f64, "y": (i / 100) as f64})),
        )
        .await
    });
    for (status, body) in futures::future::join_all(calls).await {
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["placed"], true, "{body}");
    }
    let events = assert_chained(&app.db, scene).await;
    let located: Vec<&StoredEvent> = events
        .iter()
        .filter(|e| e.event == "pixel_located")
        .collect();
    assert_eq!(located.len(), 120);
    let distinct: std::collections::HashSet<&str> = located
        .iter()
        .map(|e| e.data["pixel_id"].as_str().unwrap())
        .collect();
    assert_eq!(distinct.len(), 120, "each phone once");
    let transactions: i64 = sqlx::query_scalar(
        "select count(distinct xmin::text) from scene_event
         where scene_id = $1 and event = 'pixel_located'",
    )
    .bind(scene)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(
        transactions < 120,
        "written in shared transactions: {transactions}"
    );
    eprintln!("120 concurrent placements were written in {transactions} transactions");
}
