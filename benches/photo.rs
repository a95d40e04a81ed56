//! A crowd photo through the API: `POST /api/scenes/{id}/photos` with every code of 1 000
//! joined phones in it, from the upload to the answer (decode, QR scan, one batch of
//! placements through the placement path, the log, the answer).
//!
//! `scripts/bench photo` (a throw-away PostgreSQL and SecantusDB). The phones are joined
//! through the API; their codes are signed with the server's secret, drawn into a photo
//! (`benches/support/crowd.rs`, as `benches/qr.rs` draws them) and sent as JPEG and as PNG.
//! Besides the round trip it measures, in this process, the decode and the scan alone, so the
//! rest (placing, answering) shows. One JSON line per case.

use std::time::Instant;

use c3s::app::App;
use c3s::config::Config;
use c3s::locate::qr;
use c3s::testkit::{fresh_database, shared_mongodb_url};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[path = "support/crowd.rs"]
#[allow(dead_code)] // the QR bench uses the rest of it
mod crowd;

const PHONES: usize = 1000;
/// 1 000 codes at 3 px per module do not fit in 12 MP (`benches/qr.rs`): 24 MP.
const PHOTO: (u32, u32) = (5657, 4243);
const PX_PER_MODULE: f64 = 3.0;
const RUNS: usize = 5;
const ADMIN: (&str, &str) = ("admin", "bench-admin-password");

async fn call(
    client: &reqwest::Client,
    base: &str,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Value {
    let mut req = client.request(method, format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::var("RUST_LOG").is_ok() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let mut config = Config::for_tests(
        fresh_database().await?,
        shared_mongodb_url(),
        format!("c3s_bench_{}", Uuid::new_v4().simple()),
    );
    config.bootstrap_admin = Some(format!("{}:{}", ADMIN.0, ADMIN.1).into());
    config.max_upload_bytes = 256 << 20;
    let app = App::build(config).await?;
    let base = format!("http://{}", app.local_addr());
    let db = app.state().db.clone();
    let stop = CancellationToken::new();
    tokio::spawn(app.run(stop.clone()));
    let client = reqwest::Client::new();
    use reqwest::Method;
    let login = call(
        &client,
        &base,
        Method::POST,
        "/api/auth/login",
        None,
        Some(json!({"login": ADMIN.0, "password": ADMIN.1})),
    )
    .await;
    let op = login["token"].as_str().unwrap().to_owned();
    let scene = call(
        &client,
        &base,
        Method::POST,
        "/api/scenes",
        Some(&op),
        Some(json!({"name": "Photo bench", "width": crowd::SCENE_W, "height": crowd::SCENE_H})),
    )
    .await;
    let scene_id: Uuid = scene["scene_id"].as_str().unwrap().parse()?;
    call(
        &client,
        &base,
        Method::PATCH,
        &format!("/api/scenes/{scene_id}"),
        Some(&op),
        Some(json!({"status": "open"})),
    )
    .await;

    // the crowd joins (a guest identity each, then the scene), 32 at a time
    let joined = Instant::now();
    let pixels: Vec<Uuid> = futures::stream::iter(0..PHONES)
        .map(|_| {
            let (client, base) = (client.clone(), base.clone());
            async move {
                let guest = call(&client, &base, Method::POST, "/api/auth/guest", None, None).await;
                let token = guest["token"].as_str().unwrap().to_owned();
                let pixel = call(
                    &client,
                    &base,
                    Method::POST,
                    &format!("/api/scenes/{scene_id}/join"),
                    Some(&token),
                    None,
                )
                .await;
                pixel["pixel_id"].as_str().unwrap().parse::<Uuid>().unwrap()
            }
        })
        .buffered(32)
        .collect()
        .await;
    eprintln!(
        "{PHONES} phones joined in {:.1} s",
        joined.elapsed().as_secs_f64()
    );

    let secret = c3s::store::locate::server_secret(&db).await?;
    let photo =
        crowd::crowd(PHOTO, &pixels, PX_PER_MODULE, &secret, scene_id, 7).expect("the codes fit");
    let (w, h) = PHOTO;
    let points: Vec<Value> = crowd::camera(w, h)
        .iter()
        .map(|r| json!({"px": r.px, "py": r.py, "x": r.x, "y": r.y}))
        .collect();
    let points = serde_json::to_string(&points)?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());

    for (format, mime) in [("jpeg", "image/jpeg"), ("png", "image/png")] {
        let mut bytes = Vec::new();
        let encoded = match format {
            "jpeg" => image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 92)
                .encode_image(&photo.img),
            _ => photo.img.write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            ),
        };
        encoded?;
        // what the server does before placing anything, measured here alone
        let started = Instant::now();
        let decoded = qr::decode_gray(&bytes, u64::MAX)?;
        let decode_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let found = qr::detect(&decoded, threads).len();
        let scan_s = started.elapsed().as_secs_f64();

        let mut times = Vec::new();
        let mut located = 0;
        for _ in 0..RUNS {
            let form = reqwest::multipart::Form::new()
                .part(
                    "photo",
                    reqwest::multipart::Part::bytes(bytes.clone())
                        .file_name(format!("crowd.{format}"))
                        .mime_str(mime)?,
                )
                .text("points", points.clone());
            let started = Instant::now();
            let resp = client
                .post(format!("{base}/api/scenes/{scene_id}/photos"))
                .bearer_auth(&op)
                .multipart(form)
                .send()
                .await?;
            let status = resp.status();
            let body: Value = resp.json().await?;
            times.push(started.elapsed().as_secs_f64());
            assert!(status.is_success(), "{status} {body}");
            located = body["located"].as_u64().unwrap_or(0);
        }
        times.sort_by(f64::total_cmp);
        let round_trip = times[times.len() / 2];
        println!(
            "{}",
            json!({
                "bench": "photo", "format": format, "phones": PHONES, "megapixels": (f64::from(w) * f64::from(h) / 1e6).round(),
                "photo_mb": (bytes.len() as f64 / 1e6 * 10.0).round() / 10.0,
                "found_here": found, "located": located,
                "round_trip_s": (round_trip * 1000.0).round() / 1000.0,
                "decode_s": (decode_s * 1000.0).round() / 1000.0,
                "scan_s": (scan_s * 1000.0).round() / 1000.0,
                "upload_place_and_answer_s": ((round_trip - decode_s - scan_s) * 1000.0).round() / 1000.0,
                "runs": RUNS,
            })
        );
    }
    stop.cancel();
    Ok(())
}
