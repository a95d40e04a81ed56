//! Metrics: Prometheus text on a listener of their own, parsed as Prometheus would, moving
//! when phones join and requests are served.

use std::time::{Duration, Instant};

use prometheus_parse::{Scrape, Value};
use reqwest::{Method, StatusCode};

use crate::helpers::{spawn_app, TestApp};
use crate::phone::Phone;

async fn scrape(app: &TestApp) -> Scrape {
    let base = app.metrics_base.as_ref().expect("a metrics listener");
    let text = app
        .client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text format")
}

/// The value of a counter or gauge with the given labels (0 when absent).
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            _ => 0.0,
        })
        .sum()
}

#[tokio::test]
async fn metrics_are_served_apart_and_move_when_phones_join() {
    let app = spawn_app().await;
    let (status, _) = app.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "never on the public port");

    let before = scrape(&app).await;
    let joins_before = value(&before, "c3s_joins_total", &[]);
    let (op, _) = app.register("oper").await;
    let scene = app.create_scene(&op, "Counted").await;
    app.open_scene(&op, scene).await;
    let a = Phone::join(&app, scene, None).await;
    let _b = Phone::join(&app, scene, None).await;
    let chunks_before = value(&before, "c3s_messages_out_total", &[("kind", "chunk")]);
    app.place(&op, scene, a.pixel_id(), 1.0, 1.0).await;

    let scene_label = scene.to_string();
    let deadline = Instant::now() + Duration::from_secs(15);
    let after = loop {
        let s = scrape(&app).await;
        let counted = value(&s, "c3s_phones_connected", &[("scene", &scene_label)]) == 2.0
            && value(&s, "c3s_phones_located", &[("scene", &scene_label)]) == 1.0
            && value(&s, "c3s_messages_out_total", &[("kind", "chunk")]) > chunks_before;
        if counted {
            break s;
        }
        assert!(Instant::now() < deadline, "the phones were not counted");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(value(&after, "c3s_joins_total", &[]) >= joins_before + 2.0);
    assert!(value(&after, "c3s_db_pool_connections", &[("state", "open")]) >= 1.0);
    // request latency by route template, as a histogram
    let routed = after.samples.iter().any(|s| {
        s.metric == "c3s_http_request_duration_seconds"
            && s.labels.get("route") == Some("/api/scenes/:scene_id")
            && s.labels.get("method") == Some("PATCH")
            && matches!(s.value, Value::Histogram(_))
    });
    let seen: Vec<String> = after
        .samples
        .iter()
        .filter(|s| {
            s.metric.starts_with("c3s_http")
                && s.labels
                    .get("route")
                    .is_some_and(|r| r.contains("scene_id"))
        })
        .map(|s| format!("{} {:?} {:?}", s.metric, s.labels, s.value))
        .collect();
    assert!(
        routed,
        "no histogram for PATCH /api/scenes/:scene_id: {seen:?}"
    );
    let ticks = after.samples.iter().any(|s| {
        s.metric == "c3s_scheduler_tick_seconds" && matches!(s.value, Value::Histogram(_))
    });
    assert!(ticks, "no scheduler tick histogram");
}
