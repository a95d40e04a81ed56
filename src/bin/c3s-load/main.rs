//! `c3s-load`: a load generator that measures the truth. It starts a C3S server (a fresh
//! database on the PostgreSQL and MongoDB it is given), plays a show to N simulated phones
//! speaking the real protocol from many 127.0.0.x addresses, and prints one JSON line.
//!
//! Run it with `scripts/load --phones 10000` (which brings up throw-away stores). Bounded:
//! every phase has a deadline, and it ends the server it started.

mod netem;
mod phone;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
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
use phone::{PhoneReport, PhoneSpec};

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
    /// Simulated phones.
    #[arg(long, default_value_t = 1000)]
    phones: usize,
    /// Seconds of show to measure.
    #[arg(long, default_value_t = 20)]
    duration_s: u64,
    /// Frames per second of the show.
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Source addresses to spread connections over (127.0.0.1, 127.0.0.2, ...), past the
    /// ephemeral-port limit of one address.
    #[arg(long, default_value_t = 16)]
    sources: u8,
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
    /// The server binary to start.
    #[arg(long, default_value = "target/release/c3s")]
    server_bin: PathBuf,
    /// Frame resolution (square).
    #[arg(long, default_value_t = 64)]
    frame_px: u32,
    /// Extra server settings, `NAME=value`, repeatable (e.g. C3S_TICK_MS=250).
    #[arg(long = "server-env")]
    server_env: Vec<String>,
    /// A command run (by `sh -c`) once the show plays, with `C3S_SERVER` (the server's base
    /// URL), `C3S_SCENE` and `C3S_PID` (the server's) in its environment: an attack on the
    /// server while the phones watch. The measured show lasts until it ends, and at least
    /// `--duration-s`; its last line (JSON) goes into the report as `attack`.
    #[arg(long)]
    attack: Option<String>,
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

async fn start_server(args: &Args) -> anyhow::Result<Server> {
    let database_url = c3s::testkit::fresh_database().await?;
    let mongodb_url = c3s::testkit::shared_mongodb_url();
    let port = free_port()?;
    let mut cmd = Command::new(&args.server_bin);
    cmd.env("DATABASE_URL", database_url)
        .env("MONGODB_URL", mongodb_url)
        .env(
            "C3S_MONGODB_DATABASE",
            format!("c3s_load_{}", Uuid::new_v4().simple()),
        )
        .env("C3S_LISTEN", format!("127.0.0.1:{port}"))
        .env("C3S_BOOTSTRAP_ADMIN", format!("{ADMIN}:{ADMIN_PASSWORD}"))
        .env("C3S_DB_MAX_CONNECTIONS", "8")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for kv in &args.server_env {
        let (k, v) = kv
            .split_once('=')
            .context("--server-env takes NAME=value")?;
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", args.server_bin.display()))?;
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
        addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
    };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(r) = client.get(format!("{}/readyz", server.base)).send().await {
            if r.status().is_success() {
                return Ok(server);
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Mode::Relay(r)) = cli.mode {
        return netem::serve(
            r.listen,
            r.to,
            leg(r.up_delay_ms, r.up_jitter_ms),
            leg(r.down_delay_ms, r.down_jitter_ms),
            r.seed,
            Duration::from_secs(r.lifetime_s),
        )
        .await;
    }
    let args = cli.run;
    let server = start_server(&args).await?;
    let pid = server.child.id();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let session: Value = client
        .post(format!("{}/api/auth/login", server.base))
        .json(&json!({"login": ADMIN, "password": ADMIN_PASSWORD}))
        .send()
        .await?
        .json()
        .await?;
    let op = Operator {
        client,
        base: server.base.clone(),
        token: session["token"].as_str().context("admin token")?.to_owned(),
    };
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
    build_show(&op, scene_id, args.fps, args.frame_px).await?;
    let (cpu_before, rss_before_kb, _) = proc_usage(pid)?;

    // phones connect at the given rate
    let down = Leg {
        delay: Duration::from_millis(args.delay_ms),
        jitter: Duration::from_millis(args.jitter_ms),
    };
    let up = Leg {
        delay: Duration::from_millis(args.up_delay_ms.unwrap_or(args.delay_ms)),
        jitter: Duration::from_millis(args.up_jitter_ms.unwrap_or(args.jitter_ms)),
    };
    let stop = CancellationToken::new();
    let (joined_tx, mut joined_rx) = mpsc::unbounded_channel();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.phones);
    let pace = Duration::from_secs_f64(1.0 / f64::from(args.connect_rate.max(1)));
    let mut rng = rand::thread_rng();
    for index in 0..args.phones {
        let spec = PhoneSpec {
            index,
            server: server.addr,
            source: IpAddr::V4(Ipv4Addr::new(
                127,
                0,
                0,
                1 + (index % usize::from(args.sources.max(1))) as u8,
            )),
            scene_id,
            up,
            down,
            clock_skew_ms: rng.gen_range(-5000.0..5000.0),
            sync_samples: args.sync_samples,
        };
        tasks.push(tokio::spawn(phone::run(
            spec,
            joined_tx.clone(),
            stop.clone(),
        )));
        let due = started + pace * (index as u32 + 1);
        tokio::time::sleep_until(due.into()).await;
    }
    drop(joined_tx);
    let mut pixels = Vec::with_capacity(args.phones);
    let connect_deadline = Instant::now() + CONNECT_TIMEOUT;
    while pixels.len() < args.phones {
        match tokio::time::timeout_at(connect_deadline.into(), joined_rx.recv()).await {
            Ok(Some(p)) => pixels.push(p),
            Ok(None) | Err(_) => break, // failed phones report why at the end
        }
    }
    let join_s = started.elapsed().as_secs_f64();
    let connected = pixels.len();

    // locate everyone (as an observer placing them), then play
    let mut rng = rand::thread_rng();
    for batch in pixels.chunks(10_000) {
        let positions: Vec<Value> = batch
            .iter()
            .map(|(_, pixel)| json!({"pixel_id": pixel, "x": rng.gen_range(0.0..100.0), "y": rng.gen_range(0.0..100.0)}))
            .collect();
        op.call(
            reqwest::Method::POST,
            &format!("/scenes/{scene_id}/pixels/positions"),
            Some(json!({"positions": positions})),
        )
        .await?;
    }
    let (_, rss_connected_kb, _) = proc_usage(pid)?;
    op.call(
        reqwest::Method::POST,
        &format!("/scenes/{scene_id}/playback"),
        Some(json!({"command": "play", "start_in_ms": PLAY_LEAD_MS})),
    )
    .await?;
    let presence = op
        .call(
            reqwest::Method::GET,
            &format!("/scenes/{scene_id}/presence"),
            None,
        )
        .await?;
    let show_started = Instant::now();
    let attack = match &args.attack {
        None => Value::Null,
        Some(command) => {
            tokio::time::sleep(Duration::from_millis(PLAY_LEAD_MS as u64)).await;
            run_attack(command, &server.base, scene_id, pid).await
        }
    };
    let until = Duration::from_millis(PLAY_LEAD_MS as u64) + Duration::from_secs(args.duration_s);
    tokio::time::sleep(until.saturating_sub(show_started.elapsed())).await;
    let measured_s = show_started.elapsed().as_secs_f64() - PLAY_LEAD_MS as f64 / 1000.0;
    let (cpu_after, rss_end_kb, rss_peak_kb) = proc_usage(pid)?;
    stop.cancel();

    let mut reports: Vec<PhoneReport> = Vec::with_capacity(tasks.len());
    for t in tasks {
        reports.push(t.await.unwrap_or_default());
    }
    drop(server);

    let mut errs: Vec<f64> = reports.iter().filter_map(|r| r.sync_err_ms).collect();
    errs.sort_by(f64::total_cmp);
    let mut signed: Vec<f64> = reports
        .iter()
        .filter_map(|r| r.sync_signed_err_ms)
        .collect();
    signed.sort_by(f64::total_cmp);
    let chunks: u64 = reports.iter().map(|r| r.chunks).sum();
    let stream: u64 = reports.iter().map(|r| r.stream_chunks).sum();
    let late: u64 = reports.iter().map(|r| r.late_chunks).sum();
    let bytes: u64 = reports.iter().map(|r| r.bytes).sum();
    let dropped = reports.iter().filter(|r| r.close.is_some()).count();
    let failed: Vec<&str> = reports
        .iter()
        .filter_map(|r| r.error.as_deref())
        .take(3)
        .collect();
    let min_lead = reports.iter().filter_map(|r| r.min_lead_ms).min();
    let phones_f = args.phones.max(1) as f64;
    let line = json!({
        "bench": "load",
        "phones": args.phones,
        "connected": connected,
        "located_seen_by_server": presence["located"],
        "join_per_s": round3(connected as f64 / join_s),
        "chunks": chunks,
        "stream_chunks": stream,
        "late_chunks": late,
        "late_chunk_ratio": if stream > 0 { late as f64 / stream as f64 } else { f64::NAN },
        "min_chunk_lead_ms": min_lead,
        "bytes_per_phone_per_s": round3(bytes as f64 / phones_f / measured_s.max(1.0)),
        "sync_err_p50_ms": round3(percentile(&errs, 0.5)),
        "sync_err_p99_ms": round3(percentile(&errs, 0.99)),
        "sync_err_max_ms": round3(errs.last().copied().unwrap_or(f64::NAN)),
        "display_spread_ms": round3(signed.last().copied().unwrap_or(0.0) - signed.first().copied().unwrap_or(0.0)),
        "server_cpu_s": round3(cpu_after - cpu_before),
        "server_rss_mb": round3(rss_end_kb as f64 / 1024.0),
        "server_peak_rss_mb": round3(rss_peak_kb as f64 / 1024.0),
        "rss_per_phone_kb": round3((rss_connected_kb.saturating_sub(rss_before_kb)) as f64 / phones_f),
        "dropped": dropped,
        "join_retries": reports.iter().map(|r| u64::from(r.join_retries)).sum::<u64>(),
        "errors": failed,
        "fps": args.fps,
        "duration_s": args.duration_s,
        "delay_ms": args.delay_ms,
        "jitter_ms": args.jitter_ms,
        "up_delay_ms": up.delay.as_millis() as u64,
        "up_jitter_ms": up.jitter.as_millis() as u64,
        "sync_samples": args.sync_samples,
        "measured_s": round3(measured_s),
        "attack": attack,
    });
    println!("{line}");
    Ok(())
}
