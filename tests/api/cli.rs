//! The operator CLI (`c3s-ctl`, the real binary) end to end against the real server.

use tokio::process::Command;

use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{spawn_app, TestApp, ADMIN_LOGIN, ADMIN_PASSWORD};
use crate::images;
use crate::phone::Phone;

/// Runs `c3s-ctl ARGS` against `app` with `token`: (success, stdout, stderr). Awaited, not
/// blocked on: the server under test runs on this test's runtime.
async fn ctl(app: &TestApp, token: Option<&str>, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_c3s-ctl"));
    cmd.arg("--server").arg(&app.base).args(args);
    cmd.env_remove("C3S_TOKEN")
        .env("C3S_PASSWORD", ADMIN_PASSWORD);
    if let Some(t) = token {
        cmd.env("C3S_TOKEN", t);
    }
    let out = cmd.output().await.expect("run c3s-ctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_line(out: &str) -> Value {
    serde_json::from_str(out.lines().last().expect("a line")).expect("JSON")
}

#[tokio::test]
async fn an_operator_runs_a_show_from_the_command_line() {
    let app = spawn_app().await;
    let (ok, out, err) = ctl(&app, None, &["login", "--login", ADMIN_LOGIN]).await;
    assert!(ok, "{err}");
    let token = out.trim().to_owned();
    assert!(!token.is_empty());

    let (ok, out, err) = ctl(
        &app,
        Some(&token),
        &[
            "scene",
            "create",
            "--name",
            "From the shell",
            "--width",
            "3",
            "--height",
            "1",
            "--open",
        ],
    )
    .await;
    assert!(ok, "{err}");
    let scene = json_line(&out);
    assert_eq!(scene["status"], "open");
    let id = scene["scene_id"].as_str().unwrap().to_owned();

    let dir = std::env::temp_dir().join(format!("c3s-frames-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, colour) in [
        ("02-green.png", [0, 255, 0]),
        ("01-red.png", [255, 0, 0]),
        ("03-blue.png", [0, 0, 255]),
    ] {
        std::fs::write(dir.join(name), images::png_of(3, 1, &[colour; 3])).unwrap();
    }
    std::fs::write(dir.join("notes.txt"), "not a frame").unwrap();
    let (ok, out, err) = ctl(
        &app,
        Some(&token),
        &[
            "frames",
            "upload",
            "--scene",
            &id,
            dir.to_str().unwrap(),
            "--duration-ms",
            "200",
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(json_line(&out)["frames"], 3, "{out}");
    let (_, frames) = app
        .call(
            reqwest::Method::GET,
            &format!("/api/scenes/{id}/frames"),
            Some(&token),
            None,
        )
        .await;
    let names: Vec<&str> = frames
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["original_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["01-red.png", "02-green.png", "03-blue.png"],
        "in name order"
    );

    let (ok, out, err) = ctl(
        &app,
        Some(&token),
        &["show", "build", "--scene", &id, "--loop"],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(json_line(&out)["frames"], 3);
    let (ok, out, err) = ctl(
        &app,
        Some(&token),
        &["playback", "--scene", &id, "play", "--start-in-ms", "1000"],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(json_line(&out)["current"]["mode"], "playing");

    let _phone = Phone::join(&app, id.parse().unwrap(), None).await;
    let (ok, out, err) = ctl(
        &app,
        Some(&token),
        &["watch", "--scene", &id, "--count", "2", "--every-ms", "200"],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 2);
    assert_eq!(json_line(&out)["connected"], 1, "{out}");

    // mistakes are sentences, not panics
    let (ok, _, err) = ctl(&app, None, &["show", "build", "--scene", &id]).await;
    assert!(!ok && err.contains("no token"), "{err}");
    let (ok, _, err) = ctl(
        &app,
        Some(&token),
        &["scene", "get", &Uuid::new_v4().to_string()],
    )
    .await;
    assert!(
        !ok && err.contains("404") && err.contains("scene not found"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
