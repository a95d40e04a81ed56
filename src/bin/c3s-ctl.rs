//! `c3s-ctl`: the operator's command line. It speaks the public HTTP API with a token, so it
//! works against any C3S server, local or remote.
//!
//! ```text
//! c3s-ctl --server https://c3s.example login --login alice        # password from C3S_PASSWORD or stdin
//! export C3S_TOKEN=...                                             # the token login printed
//! c3s-ctl scene create --name "Final" --width 100 --height 50 --open
//! c3s-ctl frames upload --scene ID ./frames --duration-ms 500      # every image, in name order
//! c3s-ctl show build --scene ID --loop
//! c3s-ctl playback --scene ID play --start-in-ms 5000
//! c3s-ctl watch --scene ID                                         # live counts, until Ctrl-C
//! ```

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

#[derive(Parser)]
#[command(
    name = "c3s-ctl",
    version,
    about = "Run C3S shows from the command line"
)]
struct Cli {
    /// The server's address.
    #[arg(
        long,
        env = "C3S_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    server: String,
    /// A bearer token (from `login`).
    #[arg(long, env = "C3S_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Logs in and prints a token (password from C3S_PASSWORD, else the first line of stdin).
    Login {
        #[arg(long)]
        login: String,
    },
    /// Scenes.
    Scene {
        #[command(subcommand)]
        command: SceneCmd,
    },
    /// Frames.
    Frames {
        #[command(subcommand)]
        command: FramesCmd,
    },
    /// The show.
    Show {
        #[command(subcommand)]
        command: ShowCmd,
    },
    /// Play, pause, resume, seek or stop the show.
    Playback {
        #[arg(long)]
        scene: Uuid,
        #[command(subcommand)]
        command: PlaybackCmd,
    },
    /// Prints the scene's live counts every second (or `--count` times).
    Watch {
        #[arg(long)]
        scene: Uuid,
        #[arg(long, default_value_t = 1000)]
        every_ms: u64,
        /// Stop after this many lines (default: until interrupted).
        #[arg(long)]
        count: Option<u64>,
    },
    /// Solves phones' sound arrivals with the server's solver, offline: a JSON line per phone
    /// on stdin (`{"id", "beacons": [{"index", "x", "y"}] in metres, "speed_m_s",
    /// "arrivals": [{"beacon", "delay_ms"}], "area": [x0, y0, x1, y1]}`, the area optional), a
    /// JSON line per phone on stdout (for
    /// `scripts/bench sound`).
    SoundSolve {
        /// The residual limit (ms), as `C3S_SOUND_MAX_RESIDUAL_MS`.
        #[arg(long, default_value_t = 1.0)]
        max_residual_ms: f64,
        /// The uncertainty limit (m), as `C3S_SOUND_MAX_UNCERTAINTY_M`.
        #[arg(long, default_value_t = 0.75)]
        max_uncertainty_m: f64,
    },
}

#[derive(Subcommand)]
enum SceneCmd {
    /// Creates a scene and prints it.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 100.0)]
        width: f64,
        #[arg(long, default_value_t = 50.0)]
        height: f64,
        /// Open it for phones at once.
        #[arg(long)]
        open: bool,
    },
    /// Prints a scene.
    Get { scene: Uuid },
}

#[derive(Subcommand)]
enum FramesCmd {
    /// Uploads every image in a folder (PNG, JPEG, GIF, WebP), in file-name order.
    Upload {
        #[arg(long)]
        scene: Uuid,
        dir: PathBuf,
        /// How long each frame shows (animations keep their own delays when left out).
        #[arg(long)]
        duration_ms: Option<u32>,
    },
}

#[derive(Subcommand)]
enum ShowCmd {
    /// Builds the show from all the scene's frames, in order.
    Build {
        #[arg(long)]
        scene: Uuid,
        #[arg(long = "loop")]
        looped: bool,
    },
}

#[derive(Subcommand)]
enum PlaybackCmd {
    Play {
        #[arg(long)]
        start_in_ms: Option<i64>,
    },
    Pause,
    Resume,
    Stop,
    Seek {
        position_ms: i64,
    },
}

struct Api {
    base: String,
    token: Option<String>,
    client: reqwest::Client,
}

impl Api {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        answer(req.send().await.context("reaching the server")?).await
    }

    fn token(&self) -> anyhow::Result<&str> {
        self.token
            .as_deref()
            .context("no token: run `c3s-ctl login` and set C3S_TOKEN (or pass --token)")
    }
}

/// The JSON of a reply, or the server's error as a sentence.
async fn answer(resp: reqwest::Response) -> anyhow::Result<Value> {
    let status = resp.status();
    let body: Value = if status == StatusCode::NO_CONTENT {
        Value::Null
    } else {
        resp.json().await.unwrap_or(Value::Null)
    };
    if !status.is_success() {
        bail!(
            "{status}: {} ({})",
            body["message"].as_str().unwrap_or("no message"),
            body["error"].as_str().unwrap_or("error")
        );
    }
    Ok(body)
}

fn content_type(path: &Path) -> Option<&'static str> {
    match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
        "png" => Some("image/png"),
        "jpg" | "jpeg" => Some("image/jpeg"),
        "gif" => Some("image/gif"),
        "webp" => Some("image/webp"),
        _ => None,
    }
}

async fn upload(
    api: &Api,
    scene: Uuid,
    dir: &Path,
    duration_ms: Option<u32>,
) -> anyhow::Result<()> {
    let mut files: Vec<(PathBuf, &str, u64)> = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if let Some(kind) = content_type(&path) {
            let size = std::fs::metadata(&path)?.len();
            files.push((path, kind, size));
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    if files.is_empty() {
        bail!("{} has no PNG, JPEG, GIF or WebP files", dir.display());
    }
    let total: u64 = files.iter().map(|f| f.2).sum();
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {msg}")
            .expect("a valid template"),
    );
    let mut uploaded = 0;
    for (path, kind, _) in &files {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("frame");
        bar.set_message(name.to_owned());
        // the bytes stream from the file, and the bar moves as they leave
        let file = tokio::fs::File::open(path).await?;
        let counted = bar.clone();
        let stream = tokio_util::io::ReaderStream::new(file).map(move |chunk| {
            if let Ok(bytes) = &chunk {
                counted.inc(bytes.len() as u64);
            }
            chunk
        });
        let mut url = format!(
            "{}/api/scenes/{scene}/frames?name={}",
            api.base,
            urlencode(name)
        );
        if let Some(d) = duration_ms {
            url.push_str(&format!("&duration_ms={d}"));
        }
        let resp = api
            .client
            .post(url)
            .bearer_auth(api.token()?)
            .header("content-type", *kind)
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .context("reaching the server")?;
        let frames = answer(resp)
            .await
            .with_context(|| format!("uploading {name}"))?;
        uploaded += frames.as_array().map_or(0, Vec::len);
    }
    bar.finish_with_message("done");
    println!(
        "{}",
        json!({"scene_id": scene, "files": files.len(), "frames": uploaded, "bytes": total})
    );
    Ok(())
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let api = Api {
        base: cli.server.trim_end_matches('/').to_owned(),
        token: cli.token,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(600))
            .build()?,
    };
    match cli.command {
        Cmd::SoundSolve {
            max_residual_ms,
            max_uncertainty_m,
        } => sound_solve(c3s::locate::sound::Limits {
            max_residual_ms,
            max_uncertainty_m,
        })?,
        Cmd::Login { login } => {
            let password = match std::env::var("C3S_PASSWORD") {
                Ok(p) => p,
                Err(_) => {
                    eprint!("password for {login}: ");
                    std::io::stderr().flush()?;
                    let mut line = String::new();
                    std::io::stdin().lock().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            let session = api
                .call(
                    Method::POST,
                    "/api/auth/login",
                    Some(json!({"login": login, "password": password})),
                )
                .await?;
            println!("{}", session["token"].as_str().unwrap_or_default());
        }
        Cmd::Scene { command } => {
            api.token()?;
            let scene = match command {
                SceneCmd::Create {
                    name,
                    width,
                    height,
                    open,
                } => {
                    let scene = api
                        .call(
                            Method::POST,
                            "/api/scenes",
                            Some(json!({"name": name, "width": width, "height": height})),
                        )
                        .await?;
                    if open {
                        let id = scene["scene_id"].as_str().unwrap_or_default();
                        api.call(
                            Method::PATCH,
                            &format!("/api/scenes/{id}"),
                            Some(json!({"status": "open"})),
                        )
                        .await?
                    } else {
                        scene
                    }
                }
                SceneCmd::Get { scene } => {
                    api.call(Method::GET, &format!("/api/scenes/{scene}"), None)
                        .await?
                }
            };
            println!("{scene}");
        }
        Cmd::Frames {
            command:
                FramesCmd::Upload {
                    scene,
                    dir,
                    duration_ms,
                },
        } => upload(&api, scene, &dir, duration_ms).await?,
        Cmd::Show {
            command: ShowCmd::Build { scene, looped },
        } => {
            api.token()?;
            let show = api
                .call(
                    Method::PUT,
                    &format!("/api/scenes/{scene}/show"),
                    Some(json!({"loop": looped})),
                )
                .await?;
            println!(
                "{}",
                json!({"scene_id": scene, "frames": show["show"]["frames"].as_array().map_or(0, Vec::len),
                       "total_ms": show["total_ms"], "version": show["timeline"]["version"]})
            );
        }
        Cmd::Playback { scene, command } => {
            api.token()?;
            let body = match command {
                PlaybackCmd::Play { start_in_ms } => {
                    json!({"command": "play", "start_in_ms": start_in_ms})
                }
                PlaybackCmd::Pause => json!({"command": "pause"}),
                PlaybackCmd::Resume => json!({"command": "resume"}),
                PlaybackCmd::Stop => json!({"command": "stop"}),
                PlaybackCmd::Seek { position_ms } => {
                    json!({"command": "seek", "position_ms": position_ms})
                }
            };
            let state = api
                .call(
                    Method::POST,
                    &format!("/api/scenes/{scene}/playback"),
                    Some(body),
                )
                .await?;
            println!(
                "{}",
                json!({"scene_id": scene, "version": state["timeline"]["version"],
                       "current": state["timeline"]["current"]})
            );
        }
        Cmd::Watch {
            scene,
            every_ms,
            count,
        } => {
            api.token()?;
            let mut every = tokio::time::interval(Duration::from_millis(every_ms.max(100)));
            let mut printed = 0;
            while count.is_none_or(|c| printed < c) {
                every.tick().await;
                let p = api
                    .call(Method::GET, &format!("/api/scenes/{scene}/presence"), None)
                    .await?;
                println!(
                    "{}",
                    json!({"at": chrono::Utc::now(), "nodes": p["nodes"], "connected": p["connected"],
                           "located": p["located"], "synced": p["synced"]})
                );
                printed += 1;
            }
        }
    }
    Ok(())
}

/// `c3s-ctl sound-solve`: one JSON line in, one out, per phone.
fn sound_solve(limits: c3s::locate::sound::Limits) -> anyhow::Result<()> {
    use c3s::locate::sound::{solve, Arrival, Beacon};
    #[derive(serde::Deserialize)]
    struct In {
        id: Value,
        beacons: Vec<InBeacon>,
        speed_m_s: f64,
        arrivals: Vec<InArrival>,
        /// Where the phone may be, `[x0, y0, x1, y1]` in metres (default: around the beacons).
        #[serde(default)]
        area: Option<[f64; 4]>,
    }
    #[derive(serde::Deserialize)]
    struct InBeacon {
        index: u8,
        x: f64,
        y: f64,
    }
    #[derive(serde::Deserialize)]
    struct InArrival {
        beacon: u8,
        delay_ms: f64,
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let phone: In = serde_json::from_str(&line).context("a line is not a phone's arrivals")?;
        let beacons: Vec<Beacon> = phone
            .beacons
            .iter()
            .map(|b| Beacon {
                index: b.index,
                x_m: b.x,
                y_m: b.y,
            })
            .collect();
        let arrivals: Vec<Arrival> = phone
            .arrivals
            .iter()
            .map(|a| Arrival {
                beacon: a.beacon,
                delay_ms: a.delay_ms,
            })
            .collect();
        let area = phone
            .area
            .map(|[x0, y0, x1, y1]| c3s::locate::sound::Area { x0, y0, x1, y1 });
        let answer = match solve(&beacons, &arrivals, phone.speed_m_s, 7200.0, area, &limits) {
            Ok(fit) => json!({
                "id": phone.id, "placed": true, "x": fit.x_m, "y": fit.y_m,
                "residual_ms": fit.residual_ms, "uncertainty_m": fit.uncertainty_m,
                "beacons_used": fit.beacons_used,
            }),
            Err(refusal) => json!({"id": phone.id, "placed": false, "reason": refusal.to_string()}),
        };
        writeln!(out, "{answer}")?;
        out.flush()?;
    }
    Ok(())
}
