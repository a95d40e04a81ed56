//! Frame upload and download throughput through the real server, PostgreSQL and GridFS.
//!
//! `scripts/bench upload` (or `cargo bench --bench upload` with the environment of
//! `scripts/test`). Uploads an incompressible 20 MB PNG several times and prints one JSON line:
//! `{"bench":"upload","bytes":..,"runs":..,"upload_mb_s_p50":..,"download_mb_s_p50":..}`.

use std::io::Cursor;
use std::time::{Duration, Instant};

use c3s::app::App;
use c3s::config::Config;
use c3s::testkit::{fresh_database, shared_mongodb_url};
use image::{ImageFormat, RgbImage};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const RUNS: usize = 5;

/// Noise does not compress: 2600 × 2600 RGB is about 20 MB as PNG.
fn noise_png() -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let img = RgbImage::from_fn(2600, 2600, |_, _| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let b = state.to_le_bytes();
        image::Rgb([b[0], b[1], b[2]])
    });
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
        .unwrap();
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = Config::for_tests(
        fresh_database().await?,
        shared_mongodb_url(),
        format!("c3s_bench_{}", uuid::Uuid::new_v4().simple()),
    );
    config.bootstrap_admin = Some("benchadmin:bench-password".into());
    let app = App::build(config).await?;
    let base = format!("http://{}", app.local_addr());
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run(shutdown.clone()));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()?;

    let session: Value = client
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"login": "benchadmin", "password": "bench-password"}))
        .send()
        .await?
        .json()
        .await?;
    let token = session["token"].as_str().unwrap().to_owned();
    let scene: Value = client
        .post(format!("{base}/api/scenes"))
        .bearer_auth(&token)
        .json(&json!({"name": "bench", "width": 100, "height": 100}))
        .send()
        .await?
        .json()
        .await?;
    let scene_id = scene["scene_id"].as_str().unwrap().to_owned();

    let png = noise_png();
    let (mut up, mut down) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let started = Instant::now();
        let resp = client
            .post(format!("{base}/api/scenes/{scene_id}/frames"))
            .bearer_auth(&token)
            .header("content-type", "image/png")
            .body(png.clone())
            .send()
            .await?;
        anyhow::ensure!(
            resp.status() == 201,
            "upload failed: {}",
            resp.text().await?
        );
        let frames: Value = resp.json().await?;
        up.push(png.len() as f64 / 1e6 / started.elapsed().as_secs_f64());

        let frame_id = frames[0]["frame_id"].as_str().unwrap();
        let started = Instant::now();
        let bytes = client
            .get(format!(
                "{base}/api/scenes/{scene_id}/frames/{frame_id}/image"
            ))
            .bearer_auth(&token)
            .send()
            .await?
            .bytes()
            .await?;
        anyhow::ensure!(bytes.len() == png.len(), "download size differs");
        down.push(bytes.len() as f64 / 1e6 / started.elapsed().as_secs_f64());
    }
    shutdown.cancel();
    println!(
        "{}",
        json!({
            "bench": "upload",
            "bytes": png.len(),
            "runs": RUNS,
            "upload_mb_s_p50": (median(up.clone()) * 10.0).round() / 10.0,
            "upload_mb_s_min": (up.iter().cloned().fold(f64::MAX, f64::min) * 10.0).round() / 10.0,
            "download_mb_s_p50": (median(down) * 10.0).round() / 10.0,
        })
    );
    Ok(())
}
