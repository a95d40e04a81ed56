//! `c3s-load`: a load generator that measures the truth. It starts a C3S server (a fresh
//! database on the PostgreSQL and MongoDB it is given), plays a show to N simulated phones
//! speaking the real protocol from many 127.0.0.x addresses, and prints one JSON line.
//!
//! Run it with `scripts/load --phones 10000` (which brings up throw-away stores). Bounded:
//! every phase has a deadline, and it ends the server it started.

mod netem;
mod phone;
mod video;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use image::{ImageFormat, Rgb, RgbImage};
use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use netem::Leg;
use phone::{Counters, PhoneReport, PhoneSpec};

#[derive(Parser, Debug)]
#[command(
    name = "c3s-load",
    about = "Plays a show to simulated phones and measures it",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    #[command(flatten)]
    run: Args,
}

#[derive(clap::Subcommand, Debug)]
enum Mode {
    /// Only the delay relay: listens, relays every connection to `--to` with each direction
    /// delayed on its own, prints `{"listen": ADDR}`; `stall MS` on standard input stalls it.
    Relay(RelayArgs),
    /// Starts server nodes on one fresh database with one scene playing its show in a loop;
    /// prints `{"nodes": [{"addr", "pid"}], "scene_id", "token"}` and keeps them until
    /// standard input closes (`scripts/load-many`).
    Nodes(NodesArgs),
    /// Phones on one node of the scene `nodes` set up: they join, are placed, watch the show;
    /// prints one JSON line of figures.
    Phones(PhonesArgs),
}

#[derive(clap::Args, Debug)]
struct RelayArgs {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where to relay to.
    #[arg(long)]
    to: SocketAddr,
    /// Phone → server delay and jitter (ms; the jitter is uniform in [0, jitter)).
    #[arg(long, default_value_t = 0.0)]
    up_delay_ms: f64,
    #[arg(long, default_value_t = 0.0)]
    up_jitter_ms: f64,
    /// Server → phone delay and jitter (ms).
    #[arg(long, default_value_t = 0.0)]
    down_delay_ms: f64,
    #[arg(long, default_value_t = 0.0)]
    down_jitter_ms: f64,
    /// Seeds the jitter (connection i: seed + i).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Ends after this long even if standard input stays open.
    #[arg(long, default_value_t = 3600)]
    lifetime_s: u64,
}

fn leg(delay_ms: f64, jitter_ms: f64) -> Leg {
    Leg {
        delay: Duration::from_secs_f64(delay_ms.max(0.0) / 1000.0),
        jitter: Duration::from_secs_f64(jitter_ms.max(0.0) / 1000.0),
    }
}

#[derive(clap::Args, Debug)]
struct Args {
    #[command(flatten)]
    show: ShowArgs,
    #[command(flatten)]
    phones: PhoneArgs,
    /// A command run (by `sh -c`) once the phones watch the show, with `C3S_SERVER` (the
    /// server's base URL), `C3S_SCENE` and `C3S_PID` (the server's) in its environment: an
    /// attack on the server while the phones watch. The measured show lasts until it ends,
    /// and at least `--duration-s`; its last line (JSON) goes into the report as `attack`.
    #[arg(long)]
    attack: Option<String>,
}

/// The nodes and the show they play.
#[derive(clap::Args, Debug)]
struct ShowArgs {
    /// Frames per second of the show.
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// The server binary to start.
    #[arg(long, default_value = "target/release/c3s")]
    server_bin: PathBuf,
    /// Frame resolution (square).
    #[arg(long, default_value_t = 64)]
    frame_px: u32,
    /// Extra server settings, `NAME=value`, repeatable (e.g. C3S_TICK_MS=250).
    #[arg(long = "server-env")]
    server_env: Vec<String>,
    /// The show is this video clip instead of generated frames (`scripts/bench video`):
    /// its upload, its first second and the frame cache are measured, and the colours the
    /// recorded phones got are checked against FFmpeg's decode.
    #[arg(long)]
    clip: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct NodesArgs {
    /// Server nodes, all on one database, all serving the one scene.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    #[command(flatten)]
    show: ShowArgs,
    /// Ends the nodes after this long even if standard input stays open.
    #[arg(long, default_value_t = 3600)]
    lifetime_s: u64,
}

/// One generator's phones, on one node.
#[derive(clap::Args, Debug)]
struct PhoneArgs {
    /// With `--clip`: this many phones keep every chunk they get, for the colour check.
    #[arg(long, default_value_t = 16)]
    record_phones: usize,
    /// Simulated phones.
    #[arg(long, default_value_t = 1000)]
    phones: usize,
    /// Seconds of show to measure (after every phone joined and was placed).
    #[arg(long, default_value_t = 20)]
    duration_s: u64,
    /// Source addresses to spread connections over (127.B.0.1, 127.B.0.2, ...), past the
    /// ephemeral-port limit of one address and the per-address limits a crowd behind one
    /// address would meet.
    #[arg(long, default_value_t = 250)]
    sources: u16,
    /// B in the source addresses: generators on one machine each take their own block.
    #[arg(long, default_value_t = 0)]
    source_block: u8,
    /// New connections per second.
    #[arg(long, default_value_t = 2000)]
    connect_rate: u32,
    /// Server → phone delay and jitter (ms), emulated in user space.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Phone → server delay and jitter (ms); default: the same as the other way.
    #[arg(long)]
    up_delay_ms: Option<u64>,
    #[arg(long)]
    up_jitter_ms: Option<u64>,
    /// Clock-sync exchanges each phone makes (the least delayed one is trusted).
    #[arg(long, default_value_t = 8)]
    sync_samples: usize,
    /// Each phone makes its clock-sync exchanges at a random moment this many seconds after
    /// its welcome at most, as a crowd's phones would, rather than all in the join storm.
    #[arg(long, default_value_t = 10.0)]
    sync_spread_s: f64,
    /// Seconds between placing the phones and measuring (windows reach their settled length
    /// 10 s after the show version took over).
    #[arg(long, default_value_t = 10)]
    settle_s: u64,
    /// Also print a line of figures every this many seconds of the measured show (a soak).
    #[arg(long)]
    report_every_s: Option<u64>,
}

/// Where `c3s-load phones` finds the scene `c3s-load nodes` set up.
#[derive(clap::Args, Debug)]
struct TargetArgs {
    /// The node's address (host:port).
    #[arg(long)]
    server: SocketAddr,
    /// The node's process id (its CPU and memory are read from /proc).
    #[arg(long)]
    server_pid: u32,
    #[arg(long)]
    scene: Uuid,
    /// An operator's bearer token (the phones are placed through the API).
    #[arg(long)]
    token: String,
}

#[derive(clap::Args, Debug)]
struct PhonesArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    phones: PhoneArgs,
}

/// Longest an `--attack` command may run.
const ATTACK_TIMEOUT: Duration = Duration::from_secs(600);

const ADMIN: &str = "loadadmin";
const ADMIN_PASSWORD: &str = "load-admin-password";
/// Bounds on each phase, so the run always ends.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(300);
const PLAY_LEAD_MS: i64 = 3000;

/// Runs the attack command to its end (or `ATTACK_TIMEOUT`); its last output line as JSON
/// (or as text), with its exit status.
async fn run_attack(command: &str, base: &str, scene_id: Uuid, pid: u32) -> Value {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("C3S_SERVER", base)
        .env("C3S_SCENE", scene_id.to_string())
        .env("C3S_PID", pid.to_string())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(child) => child,
        Err(e) => return json!({"error": format!("the attack did not start: {e}")}),
    };
    match tokio::time::timeout(ATTACK_TIMEOUT, child.wait_with_output()).await {
        Err(_) => json!({"error": "the attack ran past its timeout"}),
        Ok(Err(e)) => json!({"error": format!("the attack failed: {e}")}),
        Ok(Ok(out)) => {
            let text = String::from_utf8_lossy(&out.stdout);
            let last = text.lines().last().unwrap_or("");
            json!({
                "exit": out.status.code(),
                "report": serde_json::from_str::<Value>(last).unwrap_or_else(|_| json!(last)),
            })
        }
    }
}

/// The server process; killed (by its PID) when dropped.
struct Server {
    child: Child,
    base: String,
    addr: SocketAddr,
    /// Its Prometheus endpoint, when it has one (a clip show's frame cache is sampled).
    metrics: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (cpu seconds, current RSS kB, peak RSS kB) of a process, from /proc.
fn proc_usage(pid: u32) -> anyhow::Result<(f64, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_comm = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // fields after ")" start at field 3 (state); utime is field 14, stime 15
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // clock ticks are 100 per second on Linux
    Ok((ticks / 100.0, kb("VmRSS:"), kb("VmHWM:")))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts `n` nodes on one fresh database (and one GridFS database): one deployment.
async fn start_nodes(show: &ShowArgs, n: usize) -> anyhow::Result<Vec<Server>> {
    let database_url = c3s::testkit::fresh_database().await?;
    let mongodb_url = c3s::testkit::shared_mongodb_url();
    let mongodb_database = format!("c3s_load_{}", Uuid::new_v4().simple());
    let mut servers = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        let port = free_port()?;
        let mut cmd = Command::new(&show.server_bin);
        cmd.env("DATABASE_URL", &database_url)
            .env("MONGODB_URL", &mongodb_url)
            .env("C3S_MONGODB_DATABASE", &mongodb_database)
            .env("C3S_LISTEN", format!("127.0.0.1:{port}"))
            .env("C3S_BOOTSTRAP_ADMIN", format!("{ADMIN}:{ADMIN_PASSWORD}"))
            .env("C3S_DB_MAX_CONNECTIONS", "8")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let metrics = match show.clip {
            Some(_) => {
                let port = free_port()?;
                cmd.env("C3S_METRICS_LISTEN", format!("127.0.0.1:{port}"));
                Some(format!("http://127.0.0.1:{port}/metrics"))
            }
            None => None,
        };
        for kv in &show.server_env {
            let (k, v) = kv
                .split_once('=')
                .context("--server-env takes NAME=value")?;
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", show.server_bin.display()))?;
        servers.push(Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            metrics,
        });
        // the first node migrates the database; the others start on it
        wait_ready(servers.last().expect("just pushed")).await?;
    }
    Ok(servers)
}

async fn wait_ready(server: &Server) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(r) = client.get(format!("{}/readyz", server.base)).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("the server did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Operator {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Operator {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .client
            .request(method, format!("{}/api{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{path}: {status} {value}");
        }
        Ok(value)
    }
}

/// A show of one second at `fps`: a bar sweeping across a gradient, so neighbouring phones
/// differ and every frame changes most colours.
async fn build_show(op: &Operator, scene: Uuid, fps: u32, px: u32) -> anyhow::Result<()> {
    let frames = fps.max(1);
    for i in 0..frames {
        let img = RgbImage::from_fn(px, px, |x, y| {
            let bar = (x + i * px / frames) % px < px / 8;
            if bar {
                Rgb([255, 255, 255])
            } else {
                Rgb([
                    (x * 255 / px) as u8,
                    (y * 255 / px) as u8,
                    (i * 255 / frames) as u8,
                ])
            }
        });
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), ImageFormat::Png)?;
        // durations that add up to exactly one second
        let duration = (1000 * (i + 1) / frames) - (1000 * i / frames);
        let resp = op
            .client
            .post(format!(
                "{}/api/scenes/{scene}/frames?duration_ms={duration}",
                op.base
            ))
            .bearer_auth(&op.token)
            .header("content-type", "image/png")
            .body(png)
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("frame upload: {}", resp.text().await?);
        }
    }
    op.call(
        reqwest::Method::PUT,
        &format!("/scenes/{scene}/show"),
        Some(json!({"loop": true})),
    )
    .await?;
    Ok(())
}

/// Logs in as the load's admin on `base`.
async fn operator(base: &str) -> anyhow::Result<Operator> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let session: Value = client
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"login": ADMIN, "password": ADMIN_PASSWORD}))
        .send()
        .await?
        .json()
        .await?;
    Ok(Operator {
        client,
        base: base.to_owned(),
        token: session["token"].as_str().context("admin token")?.to_owned(),
    })
}

/// One open scene with its show playing in a loop (from `PLAY_LEAD_MS` from now): the
/// crowd joins a show already on, as a stadium's does.
async fn set_up_scene(op: &Operator, show: &ShowArgs) -> anyhow::Result<Uuid> {
    Ok(set_up_show(op, show).await?.0)
}

/// What [`set_up_show`] made of a clip: the show, and the instant it started playing.
struct ClipRun {
    show: video::ClipShow,
    anchor_ms: i64,
    path: PathBuf,
    metrics: Option<String>,
}

/// [`set_up_scene`], and for a clip show what the colour check needs.
async fn set_up_show(op: &Operator, show: &ShowArgs) -> anyhow::Result<(Uuid, Option<ClipRun>)> {
    let scene: Value = op
        .call(
            reqwest::Method::POST,
            "/scenes",
            Some(json!({"name": "load", "width": 100.0, "height": 100.0})),
        )
        .await?;
    let scene_id: Uuid = scene["scene_id"].as_str().context("scene id")?.parse()?;
    op.call(
        reqwest::Method::PATCH,
        &format!("/scenes/{scene_id}"),
        Some(json!({"status": "open"})),
    )
    .await?;
    let clip = match &show.clip {
        Some(path) => Some(video::set_up(op, scene_id, path).await?),
        None => {
            build_show(op, scene_id, show.fps, show.frame_px).await?;
            None
        }
    };
    let played = op
        .call(
            reqwest::Method::POST,
            &format!("/scenes/{scene_id}/playback"),
            Some(json!({"command": "play", "start_in_ms": PLAY_LEAD_MS})),
        )
        .await?;
    let clip = clip.map(|c| ClipRun {
        show: c,
        anchor_ms: played["timeline"]["current"]["anchor_ms"]
            .as_i64()
            .unwrap_or_default(),
        path: show.clip.clone().unwrap_or_default(),
        metrics: None,
    });
    Ok((scene_id, clip))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// (user + system CPU seconds, RSS kB) of this process.
fn own_usage() -> (f64, u64) {
    proc_usage(std::process::id()).map_or((0.0, 0), |(cpu, rss, _)| (cpu, rss))
}

/// The node the phones go to.
struct Target {
    addr: SocketAddr,
    pid: u32,
    scene_id: Uuid,
}

/// Connects the phones, places them, measures `duration_s` of show (and the attack, if
/// any); the JSON line of figures.
async fn run_phones(
    target: &Target,
    op: &Operator,
    args: &PhoneArgs,
    attack: Option<&str>,
    clip: Option<&ClipRun>,
) -> anyhow::Result<Value> {
    // a clip show: this many phones keep what they got, for the colour check
    let record = if clip.is_some() {
        args.record_phones
    } else {
        0
    };
    let mut places: std::collections::HashMap<usize, (f64, f64)> = Default::default();
    let pid = target.pid;
    let scene_id = target.scene_id;
    let (cpu_before, rss_before_kb, _) = proc_usage(pid)?;
    let (own_cpu_before, _) = own_usage();
    let down = Leg {
        delay: Duration::from_millis(args.delay_ms),
        jitter: Duration::from_millis(args.jitter_ms),
    };
    let up = Leg {
        delay: Duration::from_millis(args.up_delay_ms.unwrap_or(args.delay_ms)),
        jitter: Duration::from_millis(args.up_jitter_ms.unwrap_or(args.jitter_ms)),
    };
    let stop = CancellationToken::new();
    let counters = Arc::new(Counters::default());
    let (joined_tx, mut joined_rx) = mpsc::unbounded_channel();
    let started = Instant::now();
    let mut pixels = Vec::with_capacity(args.phones);
    let connect_deadline = started + CONNECT_TIMEOUT;
    let pace = Duration::from_secs_f64(1.0 / f64::from(args.connect_rate.max(1)));
    let sources = usize::from(args.sources.max(1));
    let mut rng = rand::thread_rng();
    // phones connect at the given rate; their welcomes are counted as they come
    let tasks: Vec<_> = {
        let mut tasks = Vec::with_capacity(args.phones);
        for index in 0..args.phones {
            let k = index % sources;
            let spec = PhoneSpec {
                index,
                server: target.addr,
                source: IpAddr::V4(Ipv4Addr::new(
                    127,
                    1 + args.source_block,
                    (k / 250) as u8,
                    1 + (k % 250) as u8,
                )),
                scene_id,
                up,
                down,
                clock_skew_ms: rng.gen_range(-5000.0..5000.0),
                sync_samples: args.sync_samples,
                sync_delay: Duration::from_secs_f64(
                    rng.gen_range(0.0..args.sync_spread_s.max(1e-3)),
                ),
                record: index < record,
            };
            tasks.push(tokio::spawn(phone::run(
                spec,
                joined_tx.clone(),
                counters.clone(),
                stop.clone(),
            )));
            while let Ok(p) = joined_rx.try_recv() {
                pixels.push(p);
            }
            let due = started + pace * (index as u32 + 1);
            tokio::time::sleep_until(due.into()).await;
        }
        tasks
    };
    drop(joined_tx);
    while pixels.len() < args.phones {
        match tokio::time::timeout_at(connect_deadline.into(), joined_rx.recv()).await {
            Ok(Some(p)) => pixels.push(p),
            Ok(None) | Err(_) => break, // failed phones report why at the end
        }
    }
    let join_s = started.elapsed().as_secs_f64();
    let connected = pixels.len();
    let (cpu_joined, rss_joined_kb, _) = proc_usage(pid)?;

    // locate everyone (as an observer placing them)
    for batch in pixels.chunks(10_000) {
        let positions: Vec<Value> = batch
            .iter()
            .map(|&(index, pixel)| {
                let (x, y) = (rng.gen_range(0.0..100.0), rng.gen_range(0.0..100.0));
                if index < record {
                    places.insert(index, (x, y));
                }
                json!({"pixel_id": pixel, "x": x, "y": y})
            })
            .collect();
        op.call(
            reqwest::Method::POST,
            &format!("/scenes/{scene_id}/pixels/positions"),
            Some(json!({"positions": positions})),
        )
        .await?;
    }
    let presence = op
        .call(
            reqwest::Method::GET,
            &format!("/scenes/{scene_id}/presence"),
            None,
        )
        .await?;
    // the placements' catch-ups, and the show's windows at their settled length (the
    // server's `SETTLE_MS` after the show took over, which may be as late as now)
    tokio::time::sleep(Duration::from_millis(PLAY_LEAD_MS as u64)).await;
    tokio::time::sleep(Duration::from_secs(args.settle_s)).await;

    // the measured show
    let show_started = Instant::now();
    let (cpu_show, _, _) = proc_usage(pid)?;
    let (own_cpu_show, _) = own_usage();
    let counted_before = counters.read();
    let attack_run = async {
        match attack {
            None => Value::Null,
            Some(command) => run_attack(command, &op.base, scene_id, pid).await,
        }
    };
    let per_phone_s =
        |cpu: f64, secs: f64| round3(cpu * 1e6 / (connected.max(1) as f64 * secs.max(1e-3)));
    let minutes = async {
        let Some(every) = args.report_every_s.filter(|&s| s > 0) else {
            return std::future::pending().await;
        };
        let mut last = (counted_before, cpu_show, show_started);
        for i in 1.. {
            tokio::time::sleep_until((show_started + Duration::from_secs(every * i)).into()).await;
            let Ok((cpu, rss_kb, _)) = proc_usage(pid) else {
                return;
            };
            let now = counters.read();
            let d = now - last.0;
            println!(
                "{}",
                json!({
                    "bench": "soak", "at_s": every * i, "phones": connected,
                    "server_rss_mb": round3(rss_kb as f64 / 1024.0),
                    "dropped_total": now.dropped - counted_before.dropped,
                    "late_chunks": d.late_chunks, "stream_chunks": d.stream_chunks,
                    "late_total": now.late_chunks - counted_before.late_chunks,
                    "server_cpu_us_per_phone_s": per_phone_s(cpu - last.1, last.2.elapsed().as_secs_f64()),
                })
            );
            last = (now, cpu, Instant::now());
        }
    };
    let until = Duration::from_secs(args.duration_s);
    // a clip show: the server's frame cache, sampled every second
    let cache_peak = async {
        let Some(url) = clip.and_then(|c| c.metrics.clone()) else {
            return std::future::pending().await;
        };
        let mut peak = 0.0f64;
        let mut budget = 0.0f64;
        let mut decoders = 0.0f64;
        loop {
            if let Some(b) = video::gauge(&url, "c3s_frame_cache_bytes").await {
                peak = peak.max(b);
            }
            budget = video::gauge(&url, "c3s_frame_cache_budget_bytes")
                .await
                .unwrap_or(budget);
            decoders = decoders.max(video::gauge(&url, "c3s_clip_decoders").await.unwrap_or(0.0));
            CACHE_PEAK
                .lock()
                .expect("peak lock")
                .replace((peak, budget, decoders));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    let attack = tokio::select! {
        // the attack and the duration both run out (the minutes never do)
        (attack, ()) = async { tokio::join!(attack_run, tokio::time::sleep(until)) } => attack,
        () = minutes => Value::Null,
        () = cache_peak => Value::Null,
    };
    let measured_s = show_started.elapsed().as_secs_f64();
    let (cpu_after, rss_end_kb, rss_peak_kb) = proc_usage(pid)?;
    let (own_cpu_after, own_rss_kb) = own_usage();
    let counted = counters.read() - counted_before;
    stop.cancel();

    let mut reports: Vec<PhoneReport> = Vec::with_capacity(tasks.len());
    for t in tasks {
        reports.push(t.await.unwrap_or_default());
    }
    let clip_figures = match clip {
        None => Value::Null,
        Some(c) => {
            let recorded: Vec<video::Recorded> = reports
                .iter_mut()
                .enumerate()
                .filter_map(|(i, r)| {
                    let &(x, y) = places.get(&i)?;
                    Some(video::Recorded {
                        x,
                        y,
                        chunks: std::mem::take(&mut r.recorded),
                    })
                })
                .collect();
            let mut figures = c.show.figures.clone();
            let colours = video::check_colours(&c.path, &c.show, c.anchor_ms, &recorded)?;
            for (k, v) in colours.as_object().into_iter().flatten() {
                figures[k] = v.clone();
            }
            if let Some((peak, budget, decoders)) = *CACHE_PEAK.lock().expect("peak lock") {
                figures["frame_cache_peak_mb"] = json!(round3(peak / 1048576.0));
                figures["frame_cache_budget_mb"] = json!(round3(budget / 1048576.0));
                figures["clip_decoders_max"] = json!(decoders);
            }
            figures
        }
    };
    let mut errs: Vec<f64> = reports.iter().filter_map(|r| r.sync_err_ms).collect();
    errs.sort_by(f64::total_cmp);
    let mut signed: Vec<f64> = reports
        .iter()
        .filter_map(|r| r.sync_signed_err_ms)
        .collect();
    signed.sort_by(f64::total_cmp);
    let failed: Vec<&str> = reports
        .iter()
        .filter_map(|r| r.error.as_deref())
        .take(3)
        .collect();
    let min_lead = reports.iter().filter_map(|r| r.min_lead_ms).min();
    let phones_f = args.phones.max(1) as f64;
    Ok(json!({
        "bench": "load",
        "phones": args.phones,
        "connected": connected,
        "located_seen_by_server": presence["located"],
        "join_s": round3(join_s),
        "join_per_s": round3(connected as f64 / join_s),
        "queued_joins": reports.iter().filter(|r| r.queued).count(),
        "join_retries": reports.iter().map(|r| u64::from(r.join_retries)).sum::<u64>(),
        "chunks": counted.chunks,
        "stream_chunks": counted.stream_chunks,
        "late_chunks": counted.late_chunks,
        "late_chunk_ratio": if counted.stream_chunks > 0 { counted.late_chunks as f64 / counted.stream_chunks as f64 } else { f64::NAN },
        "min_chunk_lead_ms": min_lead,
        "bytes_per_phone_per_s": round3(counted.bytes as f64 / phones_f / measured_s.max(1.0)),
        "sync_err_p50_ms": round3(percentile(&errs, 0.5)),
        "sync_err_p99_ms": round3(percentile(&errs, 0.99)),
        "sync_err_max_ms": round3(errs.last().copied().unwrap_or(f64::NAN)),
        "display_spread_ms": round3(signed.last().copied().unwrap_or(0.0) - signed.first().copied().unwrap_or(0.0)),
        "server_cpu_s": round3(cpu_after - cpu_before),
        "server_join_cpu_s": round3(cpu_joined - cpu_before),
        "server_show_cpu_s": round3(cpu_after - cpu_show),
        "server_cpu_us_per_phone_s": per_phone_s(cpu_after - cpu_show, measured_s),
        "generator_cpu_s": round3(own_cpu_after - own_cpu_before),
        "generator_show_cpu_us_per_phone_s": per_phone_s(own_cpu_after - own_cpu_show, measured_s),
        "generator_rss_mb": round3(own_rss_kb as f64 / 1024.0),
        "server_rss_mb": round3(rss_end_kb as f64 / 1024.0),
        "server_peak_rss_mb": round3(rss_peak_kb as f64 / 1024.0),
        "rss_per_phone_kb": round3((rss_joined_kb.saturating_sub(rss_before_kb)) as f64 / phones_f),
        "dropped": counted.dropped,
        "errors": failed,
        "duration_s": args.duration_s,
        "delay_ms": args.delay_ms,
        "jitter_ms": args.jitter_ms,
        "up_delay_ms": up.delay.as_millis() as u64,
        "up_jitter_ms": up.jitter.as_millis() as u64,
        "sync_samples": args.sync_samples,
        "measured_s": round3(measured_s),
        "attack": attack,
        "clip": clip_figures,
    }))
}

/// The frame cache's peak bytes, its budget and the most clip decoders seen (clip shows).
static CACHE_PEAK: std::sync::Mutex<Option<(f64, f64, f64)>> = std::sync::Mutex::new(None);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.mode {
        Some(Mode::Relay(r)) => {
            netem::serve(
                r.listen,
                r.to,
                leg(r.up_delay_ms, r.up_jitter_ms),
                leg(r.down_delay_ms, r.down_jitter_ms),
                r.seed,
                Duration::from_secs(r.lifetime_s),
            )
            .await
        }
        Some(Mode::Nodes(n)) => serve_nodes(n).await,
        Some(Mode::Phones(p)) => {
            let t = &p.target;
            let op = Operator {
                client: reqwest::Client::builder()
                    .timeout(Duration::from_secs(120))
                    .build()?,
                base: format!("http://{}", t.server),
                token: t.token.clone(),
            };
            let target = Target {
                addr: t.server,
                pid: t.server_pid,
                scene_id: t.scene,
            };
            let mut line = run_phones(&target, &op, &p.phones, None, None).await?;
            line["node_pid"] = json!(t.server_pid);
            println!("{line}");
            Ok(())
        }
        None => {
            let args = cli.run;
            let servers = start_nodes(&args.show, 1).await?;
            let server = &servers[0];
            let op = operator(&server.base).await?;
            let (scene_id, mut clip) = set_up_show(&op, &args.show).await?;
            if let Some(c) = &mut clip {
                c.metrics = server.metrics.clone();
            }
            let target = Target {
                addr: server.addr,
                pid: server.child.id(),
                scene_id,
            };
            let mut line = run_phones(
                &target,
                &op,
                &args.phones,
                args.attack.as_deref(),
                clip.as_ref(),
            )
            .await?;
            line["fps"] = json!(args.show.fps);
            drop(servers);
            println!("{line}");
            Ok(())
        }
    }
}

/// `c3s-load nodes`: the nodes and the scene, until standard input closes.
async fn serve_nodes(n: NodesArgs) -> anyhow::Result<()> {
    let servers = start_nodes(&n.show, n.nodes).await?;
    let op = operator(&servers[0].base).await?;
    let scene_id = set_up_scene(&op, &n.show).await?;
    let nodes: Vec<Value> = servers
        .iter()
        .map(|s| json!({"addr": s.addr.to_string(), "pid": s.child.id()}))
        .collect();
    println!(
        "{}",
        json!({"nodes": nodes, "scene_id": scene_id, "token": op.token})
    );
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let mut line = String::new();
    let until_eof = async {
        use tokio::io::AsyncBufReadExt;
        while stdin.read_line(&mut line).await.is_ok_and(|n| n > 0) {
            line.clear();
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(n.lifetime_s), until_eof).await;
    drop(servers);
    Ok(())
}
